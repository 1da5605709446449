"""The suite every provider passes, run once per provider (HARNESSES) on every database.

The tests branch only on the provider's capabilities (never on its name): where a behaviour does
not apply, the test asserts what the provider does instead, or skips naming the capability.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Collection
from typing import Any

import pytest
import sqlalchemy as sa

from sync.engine.connection_sync import Plan
from sync.models import Campaign, CampaignResult, ListLink, MemberLink, MemberStatus, Reject, SyncRun
from sync.providers.base import Capabilities, MappedLists, Provider, provider_class
from sync.sandbox import FaultPlan
from tests.integration.providers.conftest import World

# --- capability-aware helpers ----------------------------------------------------------------


def provider_of(world: World) -> Provider:
    """The harness's provider, built without a network (for its capabilities and mappings)."""
    built: Provider = provider_class(world.harness.name).create(lambda caps, auth: None, world.harness.credentials,
                                                                world.harness.settings)
    return built


def capabilities(world: World) -> Capabilities:
    return provider_of(world).capabilities


def require(condition: bool, reason: str) -> None:
    """Skip, naming the capability, where a behaviour does not apply to the provider."""
    if not condition:
        pytest.skip(reason)


def remote_list_name(world: World, crm_list: str) -> str | None:
    """The name the CRM list has at the provider: its own name where the daemon makes lists, the
    mapped panel list's where lists are mapped (None: not mapped)."""
    return remote_list_names(world).get(crm_list)


def remote_list_names(world: World) -> dict[str, str]:
    """CRM list id -> the name it has at the provider (see remote_list_name); unmapped lists absent."""
    names = world.list_names()
    provider = provider_of(world)
    if provider.capabilities.lists != "mapped":
        return names
    assert isinstance(provider, MappedLists)
    # Looked up per CRM list: a provider may map a list it does not list (Postatr gives every CRM
    # list an id of its own on lookup, and iterates only the configured ones).
    mapped_lists = provider.mapped_lists()
    return {crm_list: mapped.name or names.get(crm_list, "None")
            for crm_list in names if (mapped := mapped_lists.get(crm_list)) is not None}


class Mirror:
    """What the provider should hold, read from the CRM once (two queries, not two per member)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.remote_names = remote_list_names(world)
        self.lists = world.live_lists_by_member()

    def expected_lists(self, member_id: str) -> set[str]:
        return {self.remote_names[crm_list] for crm_list in self.lists.get(member_id, ())
                if crm_list in self.remote_names}

    def assert_member_lists(self, remote_lists: frozenset[str], member_id: str) -> None:
        expected = self.expected_lists(member_id)
        if removals_stay(self.world):
            assert expected <= remote_lists, member_id
        else:
            assert remote_lists == expected, member_id


def expected_lists(world: World, member_id: str) -> set[str]:
    return Mirror(world).expected_lists(member_id)


def removals_stay(world: World) -> bool:
    """A provider that can remove nothing keeps a member in a list it left (per-list records)."""
    caps = capabilities(world)
    return caps.member_removal == "none" and caps.membership_model == "per_list"


def assert_member_lists(world: World, remote_lists: frozenset[str], member_id: str) -> None:
    Mirror(world).assert_member_lists(remote_lists, member_id)


def open_rejects(world: World, member_id: str) -> list[str]:
    """The member's open rejects' reasons (to say why an assertion on it failed)."""
    with world.engine.connect() as conn:
        return list(conn.execute(sa.select(Reject.reason).where(
            Reject.crm_member_id == member_id, Reject.resolved_at.is_(None))).scalars())


def assert_mirrors_crm(world: World, but: Collection[str] = ()) -> None:
    """Every valid, consenting CRM member (``but`` these) is at the provider exactly once, active,
    in its lists."""
    remote = world.harness.members()
    mirror = Mirror(world)
    for email, row in world.valid_active_members().items():
        if row.id in but:
            continue
        assert email in remote, (email, open_rejects(world, row.id))
        assert remote[email].status == "active", (email, open_rejects(world, row.id))
        mirror.assert_member_lists(remote[email].lists, row.id)


def expected_pushes(world: World) -> int:
    """How many items the first push sends: one per contact, or one per (list, member) record."""
    if capabilities(world).membership_model == "per_list":
        mirror = Mirror(world)
        return sum(len(mirror.expected_lists(row.id)) for row in world.valid_active_members().values())
    return len(world.valid_active_members())


def is_blocked(plan: Plan | None, email: str) -> bool:
    """The plan left this address alone for a suppression (whole contact, or one of its lists)."""
    assert plan is not None
    return any(entry == email or entry.startswith(f"{email} (") for entry in plan.blocked_by_suppression)


def open_rejects_of(world: World, member_id: str, code: str) -> list[str]:
    with world.engine.connect() as conn:
        return list(conn.scalars(sa.select(Reject.reason).where(
            Reject.crm_member_id == member_id, Reject.provider_code == code, Reject.resolved_at.is_(None))))


def assert_removed(world: World, email: str, member_id: str) -> None:
    """The member is gone as far as the provider can remove it (``member_removal``): deleted; out
    of our lists, its card kept; unsubscribed and out of every list; or, where it can do neither,
    still there with an open ``removal_unsupported`` reject telling a person what to do in the
    provider's panel."""
    removal = capabilities(world).member_removal
    remote = world.harness.members()
    if removal == "delete":
        assert email not in remote, email
    elif removal == "unlist":
        # Taken off our lists, the card kept (the tenant's panel lists, its opt-out record); a KVKK
        # erasure deletes it. The harness sees only lists, so a kept card shows none.
        assert email not in remote or not remote[email].lists, (email, remote[email])
    elif removal == "unsubscribe":
        assert email not in remote or (remote[email].status == "unsubscribed" and not remote[email].lists), email
        # A member who only left every list keeps its link as our "unsubscribed" push (so the
        # status pulled back is our echo); a deleted member's link goes.
        with world.engine.connect() as conn:
            kept = conn.execute(sa.select(MemberLink.status_pushed, MemberLink.remote_lists).where(
                MemberLink.crm_member_id == member_id)).all()
        assert all(status == "unsubscribed" and not lists for status, lists in kept), kept
        return
    else:
        reasons = open_rejects_of(world, member_id, "removal_unsupported")
        assert reasons and all("panel" in reason and email in reason for reason in reasons), reasons
        return
    assert world.scalar(sa.select(sa.func.count()).select_from(MemberLink).where(
        MemberLink.crm_member_id == member_id)) == 0


def provider_event(world: World, what: str, email: str) -> None:
    """A recipient's act at the provider (``complain``, ``soft_bounce``); skipped where the
    provider documents no such thing."""
    try:
        getattr(world.harness, what)(email)
    except NotImplementedError as exc:
        pytest.skip(f"the provider has no {what}: {exc}")


def optional(world: World, method: str) -> Any:
    """An optional harness method (harness.py), or a skip naming it."""
    found = getattr(world.harness, method, None)
    require(found is not None, f"the harness has no {method}")
    return found


@pytest.mark.every_database
def test_first_sync_mirrors_lists_and_members(world: World) -> None:
    result = world.run()
    assert result.status == "partial", result.error           # the seeded typo is a reject, not a failure
    assert {remote_list_name(world, f"L{n}") for n in range(1, 4)} <= world.harness.list_names()
    assert_mirrors_crm(world)
    assert result.counts["members_added"] == expected_pushes(world)
    run = world.scalar(sa.select(SyncRun.status).where(SyncRun.run_uid == result.run_uid))
    assert run == "partial"


@pytest.mark.every_database
def test_second_sync_without_crm_change_sends_no_write(world: World) -> None:
    world.run()
    world.harness.reset_log()
    again = world.run()
    assert world.harness.write_requests() == 0
    assert again.counts.get("members_added", 0) == again.counts.get("members_updated", 0) == 0


def test_bulk_job_path_is_used_when_the_provider_has_one(world: World) -> None:
    world.run()
    caps_async = world.run().status  # second run: nothing to do
    assert caps_async in ("succeeded", "succeeded_with_rejects", "partial")
    assert world.harness.used_bulk_import() or not capabilities(world).async_bulk_import


def test_edits_removals_and_deletions_propagate(world: World) -> None:
    world.run()
    crm = world.valid_active_members()
    emails = sorted(crm)
    renamed, leaver, deleted = crm[emails[0]], crm[emails[1]], crm[emails[2]]
    world.update_member(renamed.id, first_name="Şükrü Çağatay")
    extra = "L1" if "L1" not in world.lists_of(leaver.id) else "L2"
    _join(world, leaver.id, extra)
    world.run()
    world.leave_list(leaver.id, extra)
    world.update_member(deleted.id, deleted_at=world.now())
    world.update_list("L1", name="Müşteri Listesi (yeni)")
    world.run()
    caps = capabilities(world)
    remote = world.harness.members()
    assert_removed(world, deleted.email.lower(), deleted.id)
    assert_member_lists(world, remote[leaver.email.lower()].lists, leaver.id)
    if caps.lists == "create" and caps.supports_list_rename:
        assert "Müşteri Listesi (yeni)" in world.harness.list_names()
    else:       # a panel list keeps its panel name
        assert "Müşteri Listesi (yeni)" not in world.harness.list_names()
    assert_mirrors_crm(world)
    l3_name = remote_list_name(world, "L3")
    world.update_list("L3", deleted_at=world.now())
    world.run()
    if caps.lists == "create" and caps.supports_list_delete:
        assert l3_name not in world.harness.list_names()
    else:       # never deleted at the provider, only unlinked
        assert l3_name in world.harness.list_names()
    assert world.scalar(sa.select(sa.func.count()).select_from(ListLink).where(ListLink.crm_list_id == "L3")) == 0


def _join(world: World, member_id: str, list_id: str) -> None:
    t = world.crm.memberships
    with world.engine.begin() as conn:
        exists = conn.scalar(sa.select(sa.func.count()).select_from(t).where(
            t.c.tenant_id == "acme", t.c.member_id == member_id, t.c.list_id == list_id))
        if exists:
            conn.execute(t.update().where(t.c.tenant_id == "acme", t.c.member_id == member_id,
                                          t.c.list_id == list_id).values(deleted_at=None, updated_at=world.now()))
        else:
            conn.execute(t.insert().values(tenant_id="acme", member_id=member_id, list_id=list_id,
                                           updated_at=world.now(), deleted_at=None))


@pytest.mark.every_database
def test_unsubscribe_is_pulled_and_never_overwritten(world: World) -> None:
    """An unsubscribe at the provider is stored, and a CRM edit does not re-subscribe the member."""
    require(capabilities(world).status_pull != "none", "status_pull=none: the provider reports no unsubscribes to pull")
    world.run()
    email = sorted(world.valid_active_members())[5]
    member = world.valid_active_members()[email]
    world.harness.unsubscribe(email)
    world.update_member(member.id, last_name="Yılmaz-Öztürk")
    result = world.run()
    assert world.scalar(sa.select(MemberStatus.status).where(MemberStatus.email == email)) == "unsubscribed"
    assert world.harness.members()[email].status == "unsubscribed"
    assert is_blocked(result.plan, email)
    world.update_member(member.id, first_name="Again")
    world.run()
    assert world.harness.members()[email].status == "unsubscribed"


def test_newer_crm_consent_re_subscribes(world: World) -> None:
    """Only a consent dated after the unsubscribe lets the member be pushed as active again."""
    require(capabilities(world).status_pull != "none", "status_pull=none: the provider reports no unsubscribes to pull")
    world.run()
    email = sorted(world.valid_active_members())[6]
    member = world.valid_active_members()[email]
    world.harness.unsubscribe(email)
    world.run()
    world.update_member(member.id, consent_date=world.now() + dt.timedelta(seconds=5), consent_status="ONAY")
    world.run()
    assert world.harness.members()[email].status == "active"


@pytest.mark.every_database
def test_rejects_are_kept_with_reasons_and_retried(world: World) -> None:
    world.run()
    reject = world.scalar(sa.select(Reject).where(Reject.resolved_at.is_(None)))
    with world.engine.connect() as conn:
        rows = conn.execute(sa.select(Reject.crm_member_id, Reject.reason, Reject.attempts)
                            .where(Reject.resolved_at.is_(None))).all()
    assert reject is not None and rows
    member_id, reason, attempts = rows[0]
    assert "e-mail" in reason and attempts == 1
    world.run()       # the row did not change: it would be refused the same way, so it waits (backoff)
    assert world.scalar(sa.select(Reject.attempts).where(Reject.crm_member_id == member_id)) == 1
    assert world.scalar(sa.select(Reject.resolved_at).where(Reject.crm_member_id == member_id)) is None
    with world.engine.begin() as conn:       # an hour and more later
        conn.execute(sa.update(Reject).where(Reject.crm_member_id == member_id).values(
            last_seen_at=world.now() - dt.timedelta(hours=2)))
    world.run()
    attempts = world.scalar(sa.select(Reject.attempts).where(Reject.crm_member_id == member_id))
    assert attempts == 2                      # retried, still refused, still explained
    world.update_member(member_id, email="duzeltildi.adres@ornek.com.tr")
    world.run()
    assert world.scalar(sa.select(Reject.resolved_at).where(Reject.crm_member_id == member_id)) is not None
    assert "duzeltildi.adres@ornek.com.tr" in world.harness.members()


def test_a_reject_refused_for_months_is_still_retried_daily(world: World) -> None:
    """The backoff is capped at a day for any number of attempts: a reject on its 36th attempt
    (about five weeks of nightly retries) made the backoff overflow and stopped every run."""
    world.run()
    member_id = world.scalar(sa.select(Reject.crm_member_id).where(Reject.resolved_at.is_(None)))
    assert member_id is not None
    for attempts, hours_ago, retried in ((36, 25, True), (10**6, 23, False), (10**6, 25, True)):
        with world.engine.begin() as conn:
            conn.execute(sa.update(Reject).where(Reject.crm_member_id == member_id).values(
                attempts=attempts, last_seen_at=world.now() - dt.timedelta(hours=hours_ago)))
        run = world.run()
        assert run.status in ("succeeded_with_rejects", "partial"), run.status
        now_attempts = world.scalar(sa.select(Reject.attempts).where(Reject.crm_member_id == member_id))
        assert now_attempts == attempts + (1 if retried else 0), (attempts, hours_ago, now_attempts)


#: The words of a reject whose write failed on every attempt, or whose answer was lost, and of a
#: member waiting for a list whose own requests failed so: tried again after its backoff (sync/http.py;
#: the contract fake's client), or once the list is there.
RETRYING = ("may have been applied", "(will retry)", "waits for list")


def test_faults_are_survived_with_nothing_lost(world: World) -> None:
    """5xx, 429 with Retry-After, dropped connections and token expiry: same end state, no duplicate.

    A member whose write failed on all of its attempts is not lost: it is an open reject that says
    it will be tried again, and is, once its backoff is over. Under these faults a create fails all
    of its 6 attempts about once in 60,000 (a 5xx or a dropped answer ends one in about 6); which
    request meets which fault depends on how the requests in flight interleave, so a run may meet it."""
    world.restart_provider(FaultPlan(seed=11, error_rate=0.15, rate_limit_every=9, retry_after_s=0.01,
                                     drop_rate=0.05, token_expire_after=15))
    result = world.run()
    assert result.status in ("succeeded", "succeeded_with_rejects", "partial"), result.error
    with world.engine.connect() as conn:
        retrying = {member_id for member_id, reason in conn.execute(sa.select(Reject.crm_member_id, Reject.reason)
                    .where(Reject.resolved_at.is_(None))) if any(text in reason for text in RETRYING)}
    assert len(retrying) <= 2, retrying     # (a fault the engine does not survive rejects many more)
    assert_mirrors_crm(world, but=retrying)
    world.restart_provider()
    if retrying:                                                    # their backoff is over
        with world.engine.begin() as conn:
            conn.execute(sa.update(Reject).where(Reject.crm_member_id.in_(retrying)).values(
                last_seen_at=world.now() - dt.timedelta(days=2)))
        world.run()
    assert_mirrors_crm(world)
    emails = [m.email for m in world.harness.members().values()]
    assert len(emails) == len(set(emails))
    world.harness.reset_log()
    world.run()
    assert world.harness.write_requests() == 0


@pytest.mark.every_database
def test_a_crash_between_provider_write_and_commit_creates_nothing_twice(world: World) -> None:
    """Links lost (as if the process died after the provider accepted): the rerun adopts, never duplicates."""
    world.run()
    lists_before = world.harness.list_names()
    members_before = set(world.harness.members())
    with world.engine.begin() as conn:
        conn.execute(sa.delete(MemberLink))
        conn.execute(sa.delete(ListLink))
        conn.execute(sa.text("delete from watermarks"))
    result = world.run()
    assert result.status in ("succeeded", "succeeded_with_rejects", "partial"), result.error
    assert world.harness.list_names() == lists_before
    assert set(world.harness.members()) == members_before
    assert_mirrors_crm(world)


def test_campaign_reports_are_pulled_per_recipient(world: World) -> None:
    require(capabilities(world).has_campaign_reports, "has_campaign_reports is False: no campaigns to pull")
    world.run()
    truth = world.harness.send_campaign()
    result = world.run()
    assert result.counts["campaigns_pulled"] >= 1
    with world.engine.connect() as conn:
        rows = {r.email: r for r in conn.execute(sa.select(CampaignResult))}
    assert set(rows) == set(truth)
    for email, rules in truth.items():
        row = rows[email]
        assert (row.opened_at is not None) == ("opened" in rules), email
        assert (row.clicked_at is not None) == ("clicked" in rules), email
        assert (row.bounce_type is not None) == ("bounced" in rules), email
        assert (row.unsubscribed_at is not None) == ("unsubscribed" in rules), email
    assert world.scalar(sa.select(Campaign.results_pulled_at)) is not None


def test_final_campaign_is_not_fetched_again(world: World) -> None:
    require(capabilities(world).has_campaign_reports, "has_campaign_reports is False: no campaigns to pull")
    world.run()
    world.harness.send_campaign()
    world.run()
    with world.engine.begin() as conn:
        conn.execute(sa.update(Campaign).values(final=True))
    world.harness.reset_log()
    world.run()
    assert world.harness.write_requests() == 0   # no report export requested for a final campaign


def test_dry_run_sends_nothing_and_changes_nothing(world: World) -> None:
    """A dry run reads the provider (statuses, lists: its plan must equal the real run's) and
    writes nothing, there or in our tables."""
    result = world.run(dry_run=True)
    assert world.harness.write_requests() == 0
    assert result.plan is not None
    assert len(result.plan.members_add) == expected_pushes(world)
    assert result.plan.invalid
    if capabilities(world).lists == "create":
        assert len(result.plan.lists_create) >= 3
    else:
        assert result.plan.lists_create == []
    assert world.scalar(sa.select(sa.func.count()).select_from(MemberLink)) == 0
    assert world.scalar(sa.select(sa.func.count()).select_from(ListLink)) == 0


@pytest.mark.every_database
def test_backfill_finds_hard_deletes(world: World) -> None:
    """A member deleted from the CRM without a trace is found by the full reconcile and removed."""
    world.run()
    email = sorted(world.valid_active_members())[9]
    member_id = world.valid_active_members()[email].id
    t, ms = world.crm.members, world.crm.memberships
    with world.engine.begin() as conn:
        conn.execute(ms.delete().where(ms.c.member_id == member_id))
        conn.execute(t.delete().where(t.c.id == member_id))
    world.run()
    assert email in world.harness.members()    # incremental cannot see a hard delete
    world.run(backfill=True)
    assert_removed(world, email, member_id)


# --- regressions found in review: each pins one way a guarantee could break -----------------


def test_unsubscribe_after_a_complaint_still_beats_an_older_consent(world: World) -> None:
    """complaint@T1, consent@T2 (re-subscribed), unsubscribe@T3: T3 must win over the consent."""
    world.run()
    email = sorted(world.valid_active_members())[11]
    member = world.valid_active_members()[email]
    provider_event(world, "complain", email)
    world.run()
    # A provider that dates in whole seconds has its complaint dated at the END of that second (an
    # opt-out is never lost to a rounding): the new consent comes in a later second.
    time.sleep(1.01 - time.time() % 1)
    world.update_member(member.id, consent_date=world.now())
    world.run()
    assert world.harness.members()[email].status == "active"
    world.harness.unsubscribe(email)          # later than the consent
    world.run()
    world.update_member(member.id, first_name="Tekrar")
    world.run()
    assert world.harness.members()[email].status == "unsubscribed"


def test_an_email_change_does_not_re_subscribe_an_unsubscribed_member(world: World) -> None:
    require(capabilities(world).status_pull != "none", "status_pull=none: the provider reports no unsubscribes to pull")
    world.run()
    email = sorted(world.valid_active_members())[12]
    member = world.valid_active_members()[email]
    world.harness.unsubscribe(email)
    world.run()
    world.update_member(member.id, email="yeni.adres@ornek.com.tr")
    world.run()
    remote = world.harness.members()
    assert remote.get("yeni.adres@ornek.com.tr") is None or remote["yeni.adres@ornek.com.tr"].status != "active"
    assert remote[email].status == "unsubscribed"     # the provider's own suppression record is kept


@pytest.mark.every_database
def test_two_crm_members_sharing_an_email_become_a_reject_not_a_shared_contact(world: World) -> None:
    world.run()
    emails = sorted(world.valid_active_members())
    first, second = world.valid_active_members()[emails[13]], world.valid_active_members()[emails[14]]
    world.update_member(second.id, email=first.email)
    world.run()
    # The member-wide reject (no list) names the member that holds the address. It is not the
    # member's only open reject where the provider cannot remove: its old address, which it no
    # longer has in the CRM, has one removal_unsupported reject per list (checked just below).
    reason = world.scalar(sa.select(Reject.reason).where(Reject.crm_member_id == second.id, Reject.crm_list_id == "",
                                                         Reject.resolved_at.is_(None)))
    assert reason is not None and first.id in reason
    assert_member_lists(world, world.harness.members()[first.email.lower()].lists, first.id)
    # Refused at its new address, the member no longer receives at its old one, or a reject asks a
    # person to remove it in the panel (gap old-address-of-a-member-left-alone).
    assert_removed(world, second.email.lower(), second.id)


def test_a_deletion_reaches_the_provider_even_when_the_crash_left_only_a_provisional_link(world: World) -> None:
    """A crash after the provider accepted but before our commit leaves a link without remote id;
    a KVKK deletion must still find the contact (by e-mail) and delete it."""
    world.run()
    email = sorted(world.valid_active_members())[15]
    member = world.valid_active_members()[email]
    with world.engine.begin() as conn:
        conn.execute(sa.update(MemberLink).where(MemberLink.crm_member_id == member.id)
                     .values(remote_id=None, payload_hash=""))
    world.update_member(member.id, deleted_at=world.now())
    world.run()
    assert_removed(world, email, member.id)


def test_a_list_deleted_and_recreated_with_the_same_name_gets_its_own_remote_list(world: World) -> None:
    require(capabilities(world).lists == "create", "lists are not created by the daemon (lists != create)")
    world.run()
    t = world.crm.lists
    name = world.list_name("L2")
    world.update_list("L2", deleted_at=world.now())
    with world.engine.begin() as conn:
        conn.execute(t.insert().values(tenant_id="acme", id="L9", name=name, updated_at=world.now(), deleted_at=None))
    members = [row for row in world.valid_active_members().values() if "L2" in world.lists_of(row.id)][:3]
    for row in members:
        _join(world, row.id, "L9")
    world.run()
    assert name in world.harness.list_names()
    for row in members:
        assert name in world.harness.members()[row.email.lower()].lists


# --- issue 22: provider fidelity, held for every harness it applies to --------------------------


def test_an_unsubscribe_seen_again_is_no_news(world: World) -> None:
    """A status pulled again unchanged (undated at some providers: dated when first seen, not at
    every pull) is no news: no status counted, no member re-planned, no write."""
    require(capabilities(world).status_pull != "none", "status_pull=none: the provider reports no unsubscribes")
    world.run()
    email = sorted(world.valid_active_members())[5]
    world.harness.unsubscribe(email)
    world.run()
    world.harness.reset_log()
    third, fourth = world.run(), world.run()
    assert world.harness.write_requests() == 0
    for result in (third, fourth):
        assert result.counts.get("members_updated", 0) == result.counts.get("statuses_pulled", 0) == 0, result.counts


def test_a_first_sync_is_one_write_per_list_and_contact(world: World) -> None:
    """Where one create carries a contact's whole list set, a first sync sends one write per list
    made and one per contact: no follow-up write for members of several lists."""
    caps = capabilities(world)
    require(caps.membership_model == "contact" and not caps.async_bulk_import and caps.lists == "create",
            "not a contact model with per-member creates and lists=create")
    world.harness.reset_log()
    result = world.run()
    assert world.harness.write_requests() == result.counts["lists_created"] + expected_pushes(world), result.counts


def test_a_create_does_not_revive_a_card_unsubscribed_while_in_no_list(world: World) -> None:
    """A member whose address changed is only taken off our lists (its card kept); an unsubscribe
    on that card (in no list: invisible to a status scan by list) survives the member taking the old
    address back (a create for an e-mail that has a card)."""
    require(capabilities(world).member_removal == "unlist", "member_removal != unlist: a left card is deleted")
    world.run()
    email = sorted(world.valid_active_members())[7]
    member = world.valid_active_members()[email]
    world.update_member(member.id, email="gecici.adres@ornek.com.tr")
    world.run()
    assert world.harness.members()[email].lists == frozenset()          # kept, in no list
    world.harness.unsubscribe(email)
    world.run()
    world.update_member(member.id, email=email)
    world.run()
    assert world.harness.members()[email].status == "unsubscribed"
    world.harness.reset_log()
    world.run()
    assert world.harness.members()[email].status == "unsubscribed"


def _members_view_with_a_second_row(world: World, member_id: str, email: str) -> None:
    """A members view that holds ``member_id`` twice, the second row with another address (what a
    join that fans out gives), and the run reading it."""
    t = world.crm.members
    second = sa.select(*[sa.literal(email).label("email") if column.name == "email" else column
                         for column in t.c]).where(t.c.id == member_id)
    query = sa.union_all(sa.select(t), second)
    sql = str(query.compile(world.engine, compile_kwargs={"literal_binds": True}))
    with world.engine.begin() as conn:
        conn.execute(sa.text(f"CREATE VIEW crm_members_twice AS {sql}"))
    world.settings = dataclasses.replace(world.settings, crm=dataclasses.replace(world.settings.crm,
                                                                                  members="crm_members_twice"))


def test_a_member_id_with_two_rows_in_the_view_is_rejected_and_left_alone(world: World) -> None:
    """Issue 24, item 1: a view with two rows for one id made a run delete and create contacts as
    it alternated between them. The member is rejected with the reason, nothing is written for
    it, and the run says so (partial: a new reject)."""
    world.run()
    emails = sorted(world.valid_active_members())
    twice = world.valid_active_members()[emails[7]]
    _members_view_with_a_second_row(world, twice.id, "ikinci.satir@ornek.com.tr")
    world.update_member(twice.id, first_name="Değişti")
    world.harness.reset_log()
    for _ in range(2):
        result = world.run()
        assert result.status in ("partial", "succeeded_with_rejects"), result.error
        assert world.harness.write_requests() == 0
    reasons = open_rejects_of(world, twice.id, "validation")
    assert reasons and "2 rows for this member id" in reasons[0], reasons
    remote = world.harness.members()
    assert "ikinci.satir@ornek.com.tr" not in remote
    assert remote[twice.email.lower()].status == "active"
    assert_member_lists(world, remote[twice.email.lower()].lists, twice.id)


def test_a_member_whose_email_becomes_null_stops_receiving_at_the_old_address(world: World) -> None:
    """Issue 24, item 2: the old address left active in its lists kept receiving mail the CRM no
    longer addresses. It is removed as the provider can remove it, the member is a reject until
    the CRM has an address again, and then it is back in its lists."""
    require(capabilities(world).pushes_members, "the provider takes no members")
    world.run()
    emails = sorted(world.valid_active_members())
    lost = world.valid_active_members()[emails[9]]
    world.update_member(lost.id, email=None)
    result = world.run()
    assert result.status == "partial", result.error
    assert_removed(world, lost.email.lower(), lost.id)
    assert open_rejects_of(world, lost.id, "validation") == ["no e-mail address"]
    world.harness.reset_log()
    world.run()
    assert world.harness.write_requests() == 0          # removed once, not again on every run
    assert open_rejects_of(world, lost.id, "validation") == ["no e-mail address"]
    world.update_member(lost.id, email=lost.email)
    world.run()
    assert_mirrors_crm(world)
    assert open_rejects_of(world, lost.id, "validation") == []
