"""Regressions of the issue "Engine correctness", run for every provider on every database.

Each test is one numbered case of the issue, written as the adversary tried it: the provider's
state changes in the middle of a run, the CRM deletes rows for real, the provider forgets a list.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa

from sync.engine.connection_sync import ConnectionSync
from sync.models import ListLink, MemberStatus, Reject, SyncRun
from tests.integration.providers.conftest import World
from tests.integration.providers.test_provider_suite import (
    assert_mirrors_crm,
    assert_removed,
    capabilities,
    is_blocked,
    provider_event,
    remote_list_name,
    require,
)

#: Run outcomes of a run that did its work (rows it rejected are in `rejects`).
COMPLETED = ("succeeded", "succeeded_with_rejects", "partial")


def _open_rejects(world: World, code: str | None = None) -> list[tuple[str, str, str | None]]:
    query = sa.select(Reject.crm_member_id, Reject.crm_list_id, Reject.provider_code).where(
        Reject.resolved_at.is_(None))
    if code is not None:
        query = query.where(Reject.provider_code == code)
    with world.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query)]  # type: ignore[misc]


def test_1_an_unsubscribe_made_during_the_run_is_not_overwritten(world: World,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Members unsubscribe (and one soft-bounces) AFTER the run pulled statuses and before it
    pushes their CRM edits: none of them is turned back to active."""
    world.run()
    crm = world.valid_active_members()
    targets = sorted(crm)[10:30]
    bounced = sorted(crm)[31]
    provider_event(world, "soft_bounce", bounced)       # skips where the provider has no bounces
    for email in [*targets, bounced]:
        world.update_member(crm[email].id, last_name="Değişti")
    fired: list[str] = []
    sync_lists = ConnectionSync.sync_lists

    async def lists_then_unsubscribes(self: ConnectionSync) -> dict[str, str]:
        # After the status pull, before any member write: the recipients act now.
        mapping = await sync_lists(self)
        if not fired:
            fired.append("lists")
            for email in targets:
                world.harness.unsubscribe(email)
            world.harness.soft_bounce(bounced)
        return mapping

    monkeypatch.setattr(ConnectionSync, "sync_lists", lists_then_unsubscribes)
    world.run()
    assert fired
    remote = world.harness.members()
    assert [email for email in targets if remote[email].status != "unsubscribed"] == []
    assert remote[bounced].status == "soft_bounce"
    stored = world.scalar(sa.select(sa.func.count(sa.distinct(MemberStatus.email))).where(
        MemberStatus.email.in_(targets), MemberStatus.status == "unsubscribed"))
    assert stored == len(targets)
    world.update_member(crm[targets[0]].id, first_name="Yine")
    world.run()
    assert world.harness.members()[targets[0]].status == "unsubscribed"


def test_2_our_own_unsubscribe_push_is_an_echo_not_a_suppression(world: World) -> None:
    """İYS RET pushes "unsubscribed"; pulled back it is not the recipient's unsubscribe, so a later
    consent dated before our push (a paper form) still re-subscribes the member."""
    require(capabilities(world).supports_unsubscribe, "supports_unsubscribe is False: a RET cannot be pushed as "
            "an unsubscribe (it is a reject saying what to do in the provider's panel)")
    world.run()
    email = sorted(world.valid_active_members())[3]
    member = world.valid_active_members()[email]
    world.update_member(member.id, consent_status="RET", consent_date=world.now())
    world.run()
    assert world.harness.members()[email].status == "unsubscribed"
    world.run()                                     # pulls our own push back
    assert world.scalar(sa.select(sa.func.count()).select_from(MemberStatus).where(
        MemberStatus.email == email)) == 0
    paper_form = world.now() - dt.timedelta(hours=1)    # signed before our push, entered later
    world.update_member(member.id, consent_status="ONAY", consent_date=paper_form)
    world.run()
    assert world.harness.members()[email].status == "active"


@pytest.mark.every_database
def test_3_turkish_dotted_capital_i_is_the_same_address(world: World) -> None:
    """AYSE.CETİN@GMAİL.COM is ayse.cetin@gmail.com: no delete, no second contact."""
    world.run()
    member = world.valid_active_members()[sorted(world.valid_active_members())[0]]
    world.update_member(member.id, email="ayse.cetin@gmail.com")
    world.run()
    before = world.harness.contact_id("ayse.cetin@gmail.com")
    world.update_member(member.id, email="  AYSE.CETİN@GMAİL.COM ")
    result = world.run()
    assert result.counts.get("members_removed", 0) == 0
    assert world.harness.contact_id("ayse.cetin@gmail.com") == before
    assert not [email for email in world.harness.members() if "\u0307" in email or "İ" in email]


@pytest.mark.every_database
def test_4_two_members_swapping_addresses_converge_in_one_run(world: World) -> None:
    world.run()
    crm = world.valid_active_members()
    first, second = crm[sorted(crm)[1]], crm[sorted(crm)[2]]
    world.update_member(first.id, email="gecici@ornek.com.tr")
    world.update_member(second.id, email=first.email, first_name="İkinci")
    world.update_member(first.id, email=second.email, first_name="Birinci")
    result = world.run()
    assert _open_rejects(world, "validation") == [r for r in _open_rejects(world, "validation")
                                                  if r[0] not in (first.id, second.id)]
    remote = world.harness.members()
    assert remote[second.email.lower()].status == "active"
    assert remote[first.email.lower()].status == "active"
    assert result.counts.get("members_added", 0) + result.counts.get("members_updated", 0) >= 2
    assert_mirrors_crm(world)


def test_4_an_address_released_reaches_the_member_waiting_for_it_in_the_same_run(world: World) -> None:
    """B takes A's address and is refused (one contact per address); when A moves to another
    address, B is planned with A and pushed in that run, although B's row did not change (an
    unchanged refused row otherwise waits for its backoff)."""
    world.run()
    crm = world.valid_active_members()
    holder, waiting = crm[sorted(crm)[5]], crm[sorted(crm)[6]]
    world.update_member(waiting.id, email=holder.email)
    world.run()
    assert [r[0] for r in _open_rejects(world, "validation")].count(waiting.id) == 1
    world.update_member(holder.id, email="yeni.adres@ornek.com.tr")
    world.run()
    assert waiting.id not in [r[0] for r in _open_rejects(world, "validation")]
    remote = world.harness.members()
    assert remote[holder.email.lower()].status == "active" and "yeni.adres@ornek.com.tr" in remote
    assert_mirrors_crm(world)


def test_5_statuses_are_found_without_relying_on_an_undocumented_ordering(world: World) -> None:
    """The first member created (the last one by any update-date order) unsubscribes; a plain
    incremental run finds it, on a server that ignores ``ordering=-update_date``."""
    world.run()
    emails = sorted(world.valid_active_members())
    provider_event(world, "complain", emails[-1])
    world.harness.unsubscribe(emails[0])
    world.run()
    world.run()
    with world.engine.connect() as conn:
        stored = {email: status for email, status in conn.execute(sa.select(MemberStatus.email, MemberStatus.status))}
    assert stored.get(emails[0]) == "unsubscribed"
    assert stored.get(emails[-1]) == "complaint"


def test_7_a_hard_delete_reaches_the_provider_on_the_scheduled_run(world: World) -> None:
    world.run()
    email = sorted(world.valid_active_members())[4]
    member = world.valid_active_members()[email]
    world.hard_delete_member(member.id)
    world.settings = dataclasses.replace(world.settings, vanished_check_seconds=0)
    result = world.run()
    assert_removed(world, email, member.id)
    assert result.counts.get("members_vanished") == 1


def test_8_leaving_the_last_list_is_a_removal(world: World) -> None:
    world.run()
    email = next(e for e, row in sorted(world.valid_active_members().items()) if len(world.lists_of(row.id)) == 1)
    member = world.valid_active_members()[email]
    world.leave_list(member.id, world.lists_of(member.id)[0])
    world.run()
    assert_removed(world, email, member.id)


def test_9_members_of_a_list_that_comes_late_wait_visibly_and_are_pushed_without_a_backfill(world: World) -> None:
    require(capabilities(world).lists == "create", "lists=mapped: a CRM list waits for its mapping, not for its "
            "name (test_contract_fake.py::test_an_unmapped_list_waits_visibly_until_it_is_mapped)")
    world.run()
    world.add_list("L9", "")                        # refused: no name
    members = sorted(world.valid_active_members().values(), key=lambda r: r.id)[:3]
    for row in members:
        world.join(row.id, "L9")
    first = world.run()
    assert first.counts.get("lists_rejected") == 1
    waiting = {r[0] for r in _open_rejects(world, "list_pending") if r[1] == "L9"}
    assert waiting == {row.id for row in members}
    world.update_list("L9", name="Geç Gelen Liste")
    world.run()
    assert _open_rejects(world, "list_pending") == []
    remote = world.harness.members()
    assert all("Geç Gelen Liste" in remote[row.email.lower()].lists for row in members)
    world.update_list("L9", deleted_at=world.now())     # soft delete, then restore
    world.run()
    world.update_list("L9", deleted_at=None)
    world.run()
    remote = world.harness.members()
    assert all("Geç Gelen Liste" in remote[row.email.lower()].lists for row in members)


def test_10_a_list_deleted_in_the_panel_is_repaired_and_its_members_come_back(world: World) -> None:
    require(capabilities(world).lists == "create", "lists != create: the daemon cannot re-create a panel list")
    world.run()
    name = world.list_name("L1")
    world.harness.delete_list_at_provider(name)
    result = world.run()
    assert result.status in COMPLETED, result.error
    assert result.counts.get("lists_missing_at_provider") == 1
    assert_mirrors_crm(world)


def test_10_a_provider_that_lost_its_state_is_refilled_without_mass_rejects(world: World) -> None:
    require(capabilities(world).lists == "create", "lists != create: the engine notices a provider's lost state by "
            "its missing lists (ListPush.all_lists); mapped lists give it no such signal")
    first = world.run()
    world.harness.forget_everything()
    result = world.run()
    assert result.status in COMPLETED and first.status in COMPLETED, result.error
    assert result.counts.get("rejected", 0) == first.counts.get("rejected", 0)
    assert_mirrors_crm(world)


def test_11_a_list_adopted_from_the_panel_is_never_deleted(world: World) -> None:
    require(capabilities(world).lists == "create", "lists != create: no list is adopted by its name")
    world.harness.create_list_at_provider("Panelden Liste")
    world.add_list("L8", "Panelden Liste")
    member = sorted(world.valid_active_members().values(), key=lambda r: r.id)[0]
    world.join(member.id, "L8")
    world.run()
    assert world.scalar(sa.select(ListLink.adopted).where(ListLink.crm_list_id == "L8")) is True
    world.update_list("L8", deleted_at=world.now())
    world.run()
    assert "Panelden Liste" in world.harness.list_names()
    assert "Panelden Liste" not in world.harness.members()[member.email.lower()].lists


@pytest.mark.every_database
def test_11_a_broken_crm_view_stops_the_run_before_anything_is_removed(world: World) -> None:
    """The members view suddenly returns nothing: the run refuses to delete everyone, says how to
    go on, and ``--allow-mass-delete`` then does it."""
    world.run()
    before = set(world.harness.members())
    world.settings = dataclasses.replace(world.settings, vanished_check_seconds=0)
    for member_id in [row.id for row in world.valid_active_members().values()]:
        world.hard_delete_member(member_id)
    world.harness.reset_log()
    refused = world.run()
    assert refused.status == "failed"
    assert refused.error is not None and "--allow-mass-delete" in refused.error and "would remove" in refused.error
    assert world.harness.write_requests() == 0
    assert set(world.harness.members()) == before
    allowed = world.run(allow_mass_delete=True)
    assert allowed.status in COMPLETED, allowed.error
    removal = capabilities(world).member_removal
    if removal == "none":       # nothing can go: each removal is a reject saying what to do
        waiting = {r[0] for r in _open_rejects(world, "removal_unsupported")}
        assert len(waiting) > len(before) * 9 // 10
    else:
        still_active = [m for m in world.harness.members().values() if m.status == "active"]
        assert len(still_active) < len(before) // 10


def test_11_a_broken_lists_view_stops_the_run_too(world: World) -> None:
    world.run()
    lists_before = world.harness.list_names()
    for list_id in ("L1", "L2", "L3"):
        world.update_list(list_id, deleted_at=world.now())
    refused = world.run()
    assert refused.status == "failed" and "lists" in (refused.error or "")
    assert world.harness.list_names() == lists_before


def _widen(world: World, table: str, column: str, length: int) -> None:
    """A CRM whose own columns are wider than the reference schema's (SQLite does not enforce)."""
    dialect = world.engine.dialect.name
    statement = {"postgresql": f"ALTER TABLE {table} ALTER COLUMN {column} TYPE varchar({length})",
                 "mysql": f"ALTER TABLE {table} MODIFY {column} varchar({length}) NOT NULL",
                 "mariadb": f"ALTER TABLE {table} MODIFY {column} varchar({length}) NOT NULL"}.get(dialect)
    if statement:
        with world.engine.begin() as conn:
            conn.execute(sa.text(statement))


@pytest.mark.every_database
def test_15_over_long_values_are_rejects_and_the_rest_goes_on(world: World) -> None:
    for table, column in (("crm_lists", "name"), ("crm_members", "id"), ("crm_list_members", "member_id")):
        _widen(world, table, column, 520 if column == "name" else 250)
    world.add_list("L7", "Ç" * 514)
    long_id = "X" * 200
    t = world.crm.members
    with world.engine.begin() as conn:
        conn.execute(t.insert().values(tenant_id="acme", id=long_id, email="uzun.kimlik@ornek.com.tr",
                                       consent_status="ONAY", updated_at=world.now()))
    world.join(long_id, "L1")
    result = world.run()
    assert result.status == "partial", result.error
    # A mapped list's name never goes to the provider: L7 is refused only where names are sent or L7 is unmapped.
    name_matters = capabilities(world).lists != "mapped" or remote_list_name(world, "L7") is None
    assert result.counts.get("lists_rejected", 0) == (1 if name_matters else 0)
    remote = world.harness.members()
    assert "uzun.kimlik@ornek.com.tr" not in remote
    assert {e for e in world.valid_active_members() if e != "uzun.kimlik@ornek.com.tr"} <= set(remote)
    assert (long_id[:128], "", "too_long") in _open_rejects(world)
    again = world.run()
    assert again.status in COMPLETED, again.error


@pytest.mark.every_database
def test_17_a_deleted_members_reject_is_resolved_and_a_bad_list_is_not_resent(world: World) -> None:
    world.add_list("L6", "")
    world.run()
    rejected = [r[0] for r in _open_rejects(world, "validation") if r[0]]
    assert rejected
    world.update_member(rejected[0], deleted_at=world.now())
    world.harness.reset_log()
    world.run()
    assert rejected[0] not in [r[0] for r in _open_rejects(world)]
    world.harness.reset_log()
    world.run()
    assert world.harness.write_requests() == 0


def test_18_a_list_deleted_and_another_renamed_leave_nothing_for_the_backfill(world: World) -> None:
    world.run()
    world.update_list("L1", name="Yeni Ad")
    world.update_list("L2", deleted_at=world.now())
    world.run()
    assert_mirrors_crm(world)
    world.harness.reset_log()
    result = world.run(backfill=True)
    assert world.harness.write_requests() == 0, result.counts


def test_18_the_dry_run_plan_equals_the_run_that_follows_on_a_mixed_change(world: World) -> None:
    world.run()
    crm = world.valid_active_members()
    emails = sorted(crm)
    world.update_member(crm[emails[0]].id, first_name="Değişen")
    world.update_member(crm[emails[1]].id, deleted_at=world.now())
    world.leave_list(crm[emails[2]].id, world.lists_of(crm[emails[2]].id)[0])
    world.harness.unsubscribe(emails[3])
    world.update_member(crm[emails[3]].id, last_name="Abonelikten Çıktı")
    world.update_list("L1", name="Yeniden Adlandırıldı")
    world.update_list("L2", deleted_at=world.now())
    world.add_list("L9", "Yepyeni Liste")
    world.join(crm[emails[4]].id, "L9")
    world.harness.reset_log()
    dry = world.run(dry_run=True)
    assert world.harness.write_requests() == 0
    plan = dry.plan
    assert plan is not None
    links_before = world.scalar(sa.select(sa.func.count()).select_from(ListLink))
    real = world.run()
    removed = real.counts.get("members_removed", 0)
    if capabilities(world).member_removal == "none":    # a removal the provider cannot do is a reject
        run_id = world.scalar(sa.select(SyncRun.id).where(SyncRun.run_uid == real.run_uid))
        removed += world.scalar(sa.select(sa.func.count()).select_from(Reject).where(
            Reject.run_id == run_id, Reject.provider_code == "removal_unsupported"))
    assert (len(plan.members_add), len(plan.members_update), len(plan.members_remove)) == (
        real.counts.get("members_added", 0), real.counts.get("members_updated", 0), removed), (real.counts, plan)
    if capabilities(world).lists == "create":
        assert (len(plan.lists_create), len(plan.lists_rename), len(plan.lists_delete)) == (
            real.counts.get("lists_created", 0), real.counts.get("lists_renamed", 0),
            real.counts.get("lists_deleted", 0))
    else:       # mapped: nothing is created, renamed or deleted; a list gone from the CRM is only unlinked
        assert (len(plan.lists_create), len(plan.lists_rename), real.counts.get("lists_deleted", 0)) == (0, 0, 0)
        l9_linked = remote_list_name(world, "L9") is not None   # mapped (or, for sender-chosen list ids, always)
        assert world.scalar(sa.select(sa.func.count()).select_from(ListLink)) == links_before - 1 + l9_linked
        assert remote_list_name(world, "L2") in world.harness.list_names()
    assert is_blocked(plan, emails[3]) or capabilities(world).status_pull == "none"   # none: never learnt


def test_the_dry_run_names_exactly_whom_the_real_run_leaves_out(world: World) -> None:
    """Issue 25: a dry run names every member it leaves out with the reason, and the run that
    follows leaves out exactly those, on every provider and reading: a member unsubscribed at the
    provider (re-planned for it, no CRM change), a mistyped address, and a CRM RET of a synced
    member (pushed as an unsubscribe; a provider that cannot unsubscribe refuses it)."""
    world.run()
    crm = world.valid_active_members()
    emails = sorted(crm)
    caps = capabilities(world)
    if caps.status_pull != "none":
        world.harness.unsubscribe(emails[5])
    world.update_member(crm[emails[3]].id, consent_status="RET", consent_date=world.now())
    world.update_member(crm[emails[7]].id, email="kotu adres")
    world.harness.reset_log()
    dry = world.run(dry_run=True)
    assert world.harness.write_requests() == 0
    real = world.run()

    def named(result: Any) -> set[tuple[str, str]]:
        return {(entry.member_id, entry.reason) for entry in result.plan.left_out}

    assert named(dry) == named(real), (dry.plan.left_out, real.plan.left_out)
    assert (crm[emails[7]].id, "rejected") in named(dry)
    if caps.status_pull != "none":
        assert (crm[emails[5]].id, "suppressed") in named(dry)
    assert ((crm[emails[3]].id, "rejected") in named(dry)) == (not caps.supports_unsubscribe)
