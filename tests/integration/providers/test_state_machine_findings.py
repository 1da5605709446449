"""Engine bugs the provider state machine (test_state_machine.py) found, each as the shortest test
that shows it, on the contract fake shape where it lives: the machine's bounded CI examples do not
always reach these states, so each gets a test of its own that fails without its fix.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from sync.emails import normalize_email, valid_email
from sync.engine.connection_sync import RunOptions
from sync.engine.runner import RunResult, run_connection
from sync.models import Erasure, MemberLink, MemberStatus, Reject
from sync.sandbox import FaultPlan
from tests.integration.providers.conftest import FAST, TENANT, World, make_world
from tests.integration.providers.contract_fake import ContactHarness, KeyedHarness, NoRemovalHarness
from tests.integration.providers.harness import HARNESSES, PostacellHarness, harness_id
from tests.integration.providers.harness_euromsg import EuromsgHarness
from tests.integration.providers.harness_postatr import PostatrHarness
from tests.integration.providers.state_machine_oracle import receiving_lists, remote_lists
from tests.integration.providers.test_provider_suite import Mirror, capabilities

#: Run outcomes of a run that did its work.
COMPLETED = ("succeeded", "succeeded_with_rejects", "partial")


class Crash(Exception):
    """The worker dies right after the provider applied a write (its answer never read)."""


class CrashAfterWrite(httpx.AsyncBaseTransport):
    """Passes every request on; after the first write whose body names ``address`` is APPLIED by
    the provider, the worker dies: the answer is lost and nothing after it is committed."""

    def __init__(self, inner: httpx.AsyncBaseTransport, address: str, remote_id: str | None = None) -> None:
        self.inner, self.address = inner, address.encode()
        self.path = f"/{remote_id}" if remote_id else None    # (or whose path names this contact id)
        self.fired = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if not self.fired and request.method != "GET" and (
                self.address in request.content or (self.path and request.url.path.endswith(self.path))):
            self.fired = True
            raise Crash(f"killed after {request.method} {request.url.path} was applied")
        return response


def _run_crashing_after_write(world: World, address: str, remote_id: str | None = None) -> RunResult:
    crash = CrashAfterWrite(world.harness.transport(), address, remote_id)
    result = asyncio.run(run_connection(world.settings, world.engine, world.engine, world.connection_id,
                                        RunOptions(), transport_factory=lambda _: crash, http_policy=FAST))
    assert crash.fired, "no write named the address: the test no longer reaches the state it is about"
    return result


def _two_active(world: World) -> tuple[Any, Any]:
    crm = world.valid_active_members()
    first, second = sorted(crm)[3], sorted(crm)[4]
    return crm[first], crm[second]


@pytest.mark.parametrize("harness", [KeyedHarness], indirect=True, ids=["fake-keyed"])
def test_a_recipients_unsubscribe_is_no_echo_because_another_contact_at_that_address_was_ours(
        world: World) -> None:
    """Found as KNOWN_GAPS "echo-by-address". At a provider keyed by our member id, the contact of a
    member who left every list is kept unsubscribed (our push); the member moves to another address,
    and another member takes the old one: a contact of its own, active. When the recipient
    unsubscribes, the pull must store it: it was taken for the echo of our earlier unsubscribe of the
    OTHER contact, never stored, so the member was never blocked and every later edit was sent again."""
    world.run()
    leaver, newcomer = _two_active(world)
    address = normalize_email(leaver.email)
    for list_id in world.lists_of(leaver.id):                   # removal by unsubscribing its contact
        world.leave_list(leaver.id, list_id)
    assert world.run().status in COMPLETED
    world.update_member(leaver.id, email="baska.adres@ornek.com.tr")
    world.update_member(newcomer.id, email=leaver.email)        # a new contact for the newcomer, active
    assert world.run().status in COMPLETED
    held = world.harness.sandbox.of_email(address)  # type: ignore[attr-defined]
    assert sorted(r.status for r in held) == ["active", "unsubscribed"], [(r.key, r.status) for r in held]

    world.harness.unsubscribe(address)                          # the recipient unsubscribes
    result = world.run()
    assert result.status in COMPLETED, result.error
    stored = world.scalar(sa.select(sa.func.count()).select_from(MemberStatus).where(
        MemberStatus.email == address, MemberStatus.status == "unsubscribed"))
    assert stored == 1, f"the recipient's unsubscribe was dropped as our echo: {result.counts}"

    world.update_member(newcomer.id, first_name="Değişti")     # blocked now: nothing is sent for it
    world.harness.reset_log()
    assert world.run().status in COMPLETED
    assert world.harness.write_requests() == 0
    assert {r.status for r in world.harness.sandbox.of_email(address)} == {"unsubscribed"}  # type: ignore[attr-defined]


@pytest.mark.parametrize("harness", [ContactHarness], indirect=True, ids=["fake-contact"])
def test_a_new_address_created_by_a_run_that_died_is_removed_with_its_member(world: World) -> None:
    """Found as KNOWN_GAPS "new-address-orphaned-by-a-crash". At a provider keyed by e-mail an address
    change removes the old contact and creates the new one; the worker dies right after the create
    is applied. The member is then deleted in the CRM: the next run must remove the NEW contact (the
    link still named the old, already removed address, and the new contact stayed in its lists)."""
    world.run()
    member, _ = _two_active(world)
    new_address = "yeni.adres@ornek.com.tr"
    world.update_member(member.id, email=new_address)
    result = _run_crashing_after_write(world, new_address)
    assert result.status == "failed" and "Crash" in (result.error or ""), (result.status, result.error)
    assert new_address in world.harness.members()               # applied before the worker died
    link = world.scalar(sa.select(MemberLink.email).where(MemberLink.crm_member_id == member.id))
    assert link == new_address, f"the link still names {link!r}"

    world.update_member(member.id, deleted_at=world.now())
    assert world.run().status in COMPLETED
    held = world.harness.members()
    assert new_address not in held and normalize_email(member.email) not in held


@pytest.mark.parametrize("harness", [NoRemovalHarness], indirect=True, ids=["fake-noremoval"])
def test_a_removal_reject_names_the_old_address_and_stays_open_after_an_address_change(world: World) -> None:
    """Found as KNOWN_GAPS "stale-reject-names-another-address" and "removal-reject-resolved-by-the-new-
    address". At a provider that cannot remove, a member's address changes: the old address keeps
    receiving, so a person must remove it in the panel. The reject that asks for it must name the OLD
    address (it named the new one) and stay open when the new address is pushed in the same lists (the
    push at the new address resolved it, and nothing said the old one still receives)."""
    world.run()
    member, _ = _two_active(world)
    old_address = normalize_email(member.email)
    world.update_member(member.id, email="yeni.adres@ornek.com.tr")
    for _ in range(2):                                          # and a run after it changes nothing
        assert world.run().status in COMPLETED
        with world.engine.connect() as conn:
            rows = conn.execute(sa.select(Reject.email, Reject.crm_list_id).where(
                Reject.crm_member_id == member.id, Reject.provider_code == "removal_unsupported",
                Reject.resolved_at.is_(None))).all()
        assert rows and {normalize_email(email or "") for email, _ in rows} == {old_address}, rows
        assert old_address in world.harness.members()           # it does receive there still



@pytest.mark.parametrize("harness", [ContactHarness], indirect=True, ids=["fake-contact"])
def test_a_member_refused_for_an_address_another_member_owns_stops_receiving_at_its_old_one(
        world: World) -> None:
    """Found as KNOWN_GAPS "old-address-of-a-member-left-alone". A member's address changes to one
    another member owns: the member is refused (a validation reject naming the owner), and the CRM
    no longer gives it its old address, so nothing may be sent there any more. The old contact kept
    receiving in the member's lists (the member was left before its links were looked at)."""
    world.run()
    member, owner = _two_active(world)
    old_address = normalize_email(member.email)
    assert old_address in world.harness.members()
    world.update_member(member.id, email=owner.email)
    result = world.run()
    assert result.status in COMPLETED, result.error
    assert old_address not in world.harness.members(), "the old address still receives"
    assert normalize_email(owner.email) in world.harness.members()          # the owner's contact stays
    with world.engine.connect() as conn:
        reasons = conn.scalars(sa.select(Reject.reason).where(
            Reject.crm_member_id == member.id, Reject.resolved_at.is_(None))).all()
    assert any(f"CRM member {owner.id}" in reason for reason in reasons), reasons
    world.harness.reset_log()
    assert world.run().status in COMPLETED
    assert world.harness.write_requests() == 0



def _open_rejects_of(world: World, member_id: str) -> list[tuple[str | None, str]]:
    with world.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.select(Reject.provider_code, Reject.reason).where(
            Reject.connection_id == world.connection_id, Reject.crm_member_id == member_id,
            Reject.resolved_at.is_(None)))]


@pytest.mark.parametrize("harness", [ContactHarness], indirect=True, ids=["fake-contact"])
def test_a_validation_reject_is_resolved_when_the_address_is_fixed_and_nothing_is_pushed(world: World) -> None:
    """Found as KNOWN_GAPS "validation-reject-kept-when-nothing-is-pushed". A member in a list with a
    mistyped address has an open validation reject. The CRM fixes the address, and the member's
    consent is RET: no contact is created for it, and the reject about its address is moot. It stayed
    open (the member was left out before it was settled), saying the address was still wrong."""
    world.run()
    t = world.crm.members
    with world.engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.id, t.c.email).where(t.c.deleted_at.is_(None))).all()
    bad = next(member_id for member_id, email in sorted(rows)
               if not valid_email(normalize_email(email)) and world.lists_of(member_id))
    assert [code for code, _ in _open_rejects_of(world, bad)] == ["validation"]
    world.update_member(bad, email="duzeltildi@ornek.com.tr", consent_status="RET",
                        consent_date=world.now())
    assert world.run().status in COMPLETED
    assert _open_rejects_of(world, bad) == []
    assert "duzeltildi@ornek.com.tr" not in world.harness.members()        # RET: never created


@pytest.mark.parametrize("harness", [ContactHarness], indirect=True, ids=["fake-contact"])
def test_a_member_waiting_for_an_address_gets_it_when_its_holder_without_a_link_is_deleted(world: World) -> None:
    """Found as KNOWN_GAPS "waiting-member-not-planned-when-holder-vanishes". A member is refused
    because another member claims its address; that holder never had a contact (its consent is RET,
    so no link holds the address). When the holder is deleted for real, the waiting member must get
    the address in the next run that looks for hard deletes: only the vanished holder's LINK
    addresses were looked up, so it waited for its reject's backoff (an hour and more)."""
    # (hard deletes looked for on every run; no look-back: the refused member is not re-read as changed)
    world.settings = dataclasses.replace(world.settings, vanished_check_seconds=0, lookback_seconds=0)
    world.run()
    waiting, _ = _two_active(world)
    address = "ortak.adres@ornek.com.tr"
    t = world.crm.members
    with world.engine.begin() as conn:
        conn.execute(t.insert().values(tenant_id=TENANT, id="A001", email=address, first_name="Eski",
                                       last_name="Sahip", consent_status="RET", consent_date=world.now(),
                                       updated_at=world.now()))
    world.join("A001", world.lists_of(waiting.id)[0])
    world.update_member(waiting.id, email=address)
    assert world.run().status in COMPLETED
    assert [reason for _, reason in _open_rejects_of(world, waiting.id)] == [
        "e-mail also belongs to CRM member A001; the provider keeps one contact per e-mail"]
    assert address not in world.harness.members()

    world.hard_delete_member("A001")
    assert world.run().status in COMPLETED
    assert _open_rejects_of(world, waiting.id) == []
    assert address in world.harness.members(), "the waiting member did not get the address"


def _panel_rejects_of(world: World, member_id: str) -> list[tuple[str, str, str, str]]:
    """(list, address, code, reason) of the member's open rejects that ask a person to act in the panel."""
    with world.engine.connect() as conn:
        return [(list_id, normalize_email(email or ""), code, reason) for list_id, email, code, reason in conn.execute(
            sa.select(Reject.crm_list_id, Reject.email, Reject.provider_code, Reject.reason).where(
                Reject.connection_id == world.connection_id, Reject.crm_member_id == member_id,
                Reject.provider_code.in_(("removal_unsupported", "unsubscribe_unsupported")),
                Reject.resolved_at.is_(None)))]


def _postatr_record(world: World, member_id: str) -> dict[str, Any]:
    """The Postatr sandbox's one record of a member (keyed by Memberid, one address in all its lists)."""
    rows = [row for row in world.harness.sandbox.members(world.harness.credentials["username"])  # type: ignore[attr-defined]
            if row["Memberid"] == member_id]
    assert len(rows) == 1, rows
    return rows[0]


def _in_two_lists(world: World) -> Any:
    crm = world.valid_active_members()
    return next(crm[email] for email in sorted(crm) if len(world.lists_of(crm[email].id)) >= 2)


def _two_addresses_left(world: World) -> tuple[Any, str, str]:
    """A member in two lists changes its address, then loses it: at a provider keyed by e-mail that
    cannot remove, both addresses stay in its lists. The member and its first and second address."""
    world.run()
    member = _in_two_lists(world)
    first = normalize_email(member.email)
    second = "yeni.adres@ornek.com.tr"
    world.update_member(member.id, email=second)
    assert world.run().status in COMPLETED
    world.update_member(member.id, email=None)
    assert world.run().status in COMPLETED
    return member, first, second


@pytest.mark.parametrize("harness", [PostatrHarness], indirect=True, ids=["postatr"])
def test_a_removal_reject_follows_a_record_keyed_by_member_id_to_its_new_address(world: World) -> None:
    """Found as KNOWN_GAPS "stale-reject-names-another-address". Postatr keeps one record per
    Memberid, with ONE address in every list it is in, and can neither remove nor unsubscribe. A
    member leaves one of its lists (an open removal_unsupported reject: "remove <old> in the panel"),
    then its address changes: the update under its other list moves the whole record, so the list it
    left now holds the NEW address. The reject went on naming the old one, which no record has any
    more (the person is sent after the wrong address), and so did every retry of that removal."""
    world.run()
    member = _in_two_lists(world)
    old_address, new_address = normalize_email(member.email), "yeni.adres@ornek.com.tr"
    left, kept = world.lists_of(member.id)[:2]
    world.leave_list(member.id, left)
    assert world.run().status in COMPLETED
    assert [(list_id, email) for list_id, email, _, _ in _panel_rejects_of(world, member.id)] == [
        (left, old_address)]
    world.update_member(member.id, email=new_address)
    for _ in range(2):                      # and a run after it, which tries that removal again
        assert world.run().status in COMPLETED
        record = _postatr_record(world, member.id)
        assert normalize_email(record["Email"]) == new_address and len(record["lists"]) >= 2, record
        rejects = _panel_rejects_of(world, member.id)
        assert [(list_id, email) for list_id, email, _, _ in rejects] == [(left, new_address)], rejects
        assert new_address in rejects[0][3] and old_address not in rejects[0][3], rejects
    assert old_address not in world.harness.members()
    assert kept in world.lists_of(member.id)


@pytest.mark.parametrize("harness", [PostatrHarness], indirect=True, ids=["postatr"])
def test_a_removal_reject_of_a_record_keyed_by_member_id_is_resolved_when_the_record_is_pushed_again(
        world: World) -> None:
    """Found as KNOWN_GAPS "removal-reject-resolved-by-the-new-address" (its other side). At Postatr
    a member is refused for an address another member owns: its record keeps the old address, which
    the CRM no longer gives it, so each of its lists gets a removal_unsupported reject naming the old
    address. Then the member gets an address of its own: the update moves its record (one per
    Memberid) there, in the lists it wants. Nothing is left to remove, but the rejects stayed open,
    asking a person to remove an address no record holds (only a push at the SAME address resolved
    a panel action: right where a new address is a new record, wrong where the record moves)."""
    world.run()
    member = _in_two_lists(world)
    owner = next(row for email, row in sorted(world.valid_active_members().items()) if row.id != member.id)
    old_address, new_address = normalize_email(member.email), "kendi.adresi@ornek.com.tr"
    world.update_member(member.id, email=owner.email)
    assert world.run().status in COMPLETED
    assert {email for _, email, _, _ in _panel_rejects_of(world, member.id)} == {old_address}
    assert normalize_email(_postatr_record(world, member.id)["Email"]) == old_address
    world.update_member(member.id, email=new_address)
    assert world.run().status in COMPLETED
    assert normalize_email(_postatr_record(world, member.id)["Email"]) == new_address
    assert _panel_rejects_of(world, member.id) == []
    assert _open_rejects_of(world, member.id) == []
    assert old_address not in world.harness.members()
    world.harness.reset_log()
    assert world.run().status in COMPLETED
    assert world.harness.write_requests() == 0


@pytest.mark.parametrize("harness", [PostatrHarness], indirect=True, ids=["postatr"])
def test_a_refused_unsubscribe_of_a_record_keyed_by_member_id_names_the_address_it_holds(world: World) -> None:
    """Found as KNOWN_GAPS "stale-reject-names-another-address" (the change refused). At Postatr a
    member's consent becomes RET and its address changes in one CRM edit: the update would carry the
    new address unsubscribed, and Postatr cannot unsubscribe, so nothing is written and the record
    still holds the OLD address, active. The unsubscribe_unsupported reject must name that address
    (it named the new one, which Postatr does not have)."""
    world.run()
    member = _in_two_lists(world)
    old_address, new_address = normalize_email(member.email), "ret.adres@ornek.com.tr"
    world.update_member(member.id, email=new_address, consent_status="RET", consent_date=world.now())
    assert world.run().status in COMPLETED
    assert normalize_email(_postatr_record(world, member.id)["Email"]) == old_address
    rejects = _panel_rejects_of(world, member.id)
    assert rejects and {(email, code) for _, email, code, _ in rejects} == {
        (old_address, "unsubscribe_unsupported")}, rejects
    assert all(old_address in reason and new_address not in reason for *_, reason in rejects), rejects


@pytest.mark.parametrize("harness", [ContactHarness], indirect=True, ids=["fake-contact"])
def test_a_held_by_reject_is_resolved_when_the_member_leaves_every_list_without_an_address(world: World) -> None:
    """Found by the state machine (make fuzz FUZZ_SEED=20261206 FUZZ_EXAMPLES=25 FUZZ_STEPS=40
    FUZZ_ARGS='-k postatr'), after "validation-reject-kept-when-nothing-is-pushed" was fixed. A member
    is refused for an address another member owns (a reject naming the owner; its old contact is
    removed). Then it leaves every list and its address is emptied in the CRM: it needs no address
    and holds nothing at the provider, so the reject is moot. It stayed open, naming an owner of an
    address the member no longer claims (the member was left before it was settled)."""
    world.run()
    member, owner = _two_active(world)
    world.update_member(member.id, email=owner.email)
    assert world.run().status in COMPLETED
    assert [reason for _, reason in _open_rejects_of(world, member.id)] == [
        f"e-mail also belongs to CRM member {owner.id}; the provider keeps one contact per e-mail"]
    assert world.scalar(sa.select(sa.func.count()).select_from(MemberLink).where(
        MemberLink.crm_member_id == member.id)) == 0            # its old contact was removed
    for list_id in world.lists_of(member.id):
        world.leave_list(member.id, list_id)
    world.update_member(member.id, email=None)
    assert world.run().status in COMPLETED
    assert _open_rejects_of(world, member.id) == []
    assert normalize_email(owner.email) in world.harness.members()          # the owner keeps its contact


@pytest.mark.parametrize("harness", [ContactHarness, KeyedHarness, EuromsgHarness, PostacellHarness], indirect=True,
                         ids=["fake-contact", "fake-keyed", "euromsg", "postacell"])
@pytest.mark.parametrize("lost", ["list-deleted-in-the-panel", "provider-restarted-empty"])
def test_a_list_re_created_by_a_run_that_died_is_refilled_by_the_next_run(world: World, lost: str) -> None:
    """Found as KNOWN_GAPS "refill-lost-in-a-crash". A list is deleted in the provider's panel (or the
    provider loses everything); a run re-creates it and dies before its members are pushed. The next
    run must push them into it: the re-plan of a re-created list's members lived only in the run that
    made it, and the links' hashes were unchanged, so no later run sent them."""
    world.run()
    names = world.list_names()
    list_id = sorted(names)[0]
    members = [m for m in world.valid_active_members().values() if list_id in world.lists_of(m.id)]
    assert members, "the test needs members in the list"
    addresses = {normalize_email(m.email) for m in members}
    if lost == "list-deleted-in-the-panel":
        world.harness.delete_list_at_provider(names[list_id])
    else:
        world.harness.forget_everything()

    def die_before_a_member_write(request: httpx.Request) -> None:
        # the first write once the list is back at the provider: its members' first push
        if request.method != "GET" and names[list_id] in world.harness.list_names():
            raise Crash(f"killed before {request.method} {request.url.path}")

    result = world.run(hook=die_before_a_member_write)
    assert result.status == "failed" and "Crash" in (result.error or ""), (result.status, result.error)
    assert names[list_id] in world.harness.list_names(), "the run died before it re-created the list"

    result = world.run()
    assert result.status in COMPLETED, result.error
    held = {normalize_email(email): member for email, member in world.harness.members().items()}
    missing = sorted(a for a in addresses if a not in held or names[list_id] not in held[a].lists)
    assert not missing, f"{len(missing)} of {len(addresses)} never pushed into the re-created list: {missing[:3]}"
    world.harness.reset_log()
    assert world.run().status in COMPLETED
    assert world.harness.write_requests() == 0


@pytest.mark.parametrize("harness", [ContactHarness, EuromsgHarness, PostacellHarness], indirect=True,
                         ids=["fake-contact", "euromsg", "postacell"])
def test_an_erasure_after_the_provider_restarted_empty_never_deletes_another_contact(
        engine: sa.Engine, harness: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by the state machine with windows of 3 (Euromsg), shrunk to: first sync of 10 members,
    erase one, change another's address, the provider restarts empty, backfill. The provider hands
    out its contact ids again from the start; the erased member, planned in a later window, was
    deleted by the id its link kept from before, which by then was another member's new contact:
    that member was silently gone from every list. A link whose list went missing at the provider is
    found again by its address, never written or deleted by its old id."""
    from sync.engine import context

    made = context.RunContext.__post_init__

    def small_windows(self: Any, plan_salt: str) -> None:
        made(self, plan_salt)
        self.caps = dataclasses.replace(self.caps, max_batch=3, push_window=None)

    monkeypatch.setattr(context.RunContext, "__post_init__", small_windows)
    world = make_world(engine, harness, members=10)
    world.run()
    crm = {row.id: row for row in world.valid_active_members().values()}
    world.update_member("M000006", deleted_at=world.now())
    world.update_member("M000008", email="deniz.kaya@ornek.com.tr")
    world.harness.forget_everything()
    result = world.run(backfill=True)
    assert result.status in COMPLETED, result.error
    held = {normalize_email(email) for email in world.harness.members()}
    assert normalize_email(crm["M000006"].email) not in held
    missing = sorted(m for m in crm if m not in ("M000006", "M000008") and normalize_email(crm[m].email) not in held)
    assert not missing, f"members deleted with the erased one's old id: {missing}"


@pytest.mark.parametrize("harness", [h for h in HARNESSES if harness_id(h).startswith(("fake-contact", "euromsg",
                                                                                      "postacell"))],
                         indirect=True, ids=harness_id)
def test_a_member_whose_list_went_missing_leaves_another_list_in_the_same_run(world: World) -> None:
    """Found by make fuzz FUZZ_SEED=20261206 FUZZ_EXAMPLES=15 FUZZ_STEPS=40 -k fake-contact (after the
    fix that finds such a member by its address): a list is deleted in the panel, and a member in it
    leaves another list in the CRM. Pushed as a contact to find again, it was re-added to the
    re-created list but kept in the list it left (a found contact's lists were merged with ours,
    those it leaves included), while its link said it had left."""
    world.run()
    names = world.list_names()
    members = world.valid_active_members().values()
    member = next(m for m in sorted(members, key=lambda m: m.id) if len(world.lists_of(m.id)) >= 2)
    deleted, left = sorted(world.lists_of(member.id))[:2]
    world.harness.delete_list_at_provider(names[deleted])
    world.leave_list(member.id, left)
    result = world.run()
    assert result.status in COMPLETED, result.error
    remote = {normalize_email(email): row for email, row in world.harness.members().items()}
    held = remote[normalize_email(member.email)]
    assert names[deleted] in held.lists, f"not back in the re-created list: {sorted(held.lists)}"
    assert names[left] not in held.lists, f"still in the list it left: {sorted(held.lists)}"
    world.harness.reset_log()
    assert world.run().status in COMPLETED
    assert world.harness.write_requests() == 0


@pytest.mark.parametrize("harness", [ContactHarness, KeyedHarness, EuromsgHarness, PostacellHarness], indirect=True,
                         ids=["fake-contact", "fake-keyed", "euromsg", "postacell"])
@pytest.mark.parametrize("leaver_sorts", ["first", "second"])
def test_an_address_goes_to_the_member_in_a_list_when_its_holder_leaves_every_list(
        world: World, leaver_sorts: str) -> None:
    """Found by make fuzz FUZZ_SEED=20261206 FUZZ_EXAMPLES=15 FUZZ_STEPS=40 -k fake-contact-sqlite (the
    no-change check): a member leaves every list in the run in which another member, in a list, takes
    its address. The holder was preferred as the address's owner although it is in no list: the
    member in a list got "e-mail also belongs to" and the next run (the holder's link gone) gave it
    the address: one write in a run with no change. Had the holder's id sorted first, the member in a
    list would never have received. An address is owned by a claimant in a list first; a claimant in
    no list needs no address (no reject), its contact is removed as for leaving every list."""
    world.run()
    first, second = _two_active(world)
    leaver, taker = (first, second) if leaver_sorts == "first" else (second, first)
    address = normalize_email(leaver.email)
    for list_id in world.lists_of(leaver.id):
        world.leave_list(leaver.id, list_id)
    world.update_member(taker.id, email=leaver.email)
    result = world.run()
    assert result.status in COMPLETED, result.error
    assert _open_rejects_of(world, taker.id) == []
    assert _open_rejects_of(world, leaver.id) == []
    names = world.list_names()
    remote = {normalize_email(email): row for email, row in world.harness.members().items()}
    assert address in remote, "the member in a list does not receive at its new address"
    assert {names[list_id] for list_id in world.lists_of(taker.id)} <= set(remote[address].lists)
    world.harness.reset_log()
    assert world.run().status in COMPLETED
    assert world.harness.write_requests() == 0


@pytest.mark.parametrize("harness", [h for h in HARNESSES if harness_id(h).startswith(
    ("fake-contact", "fake-perlist", "euromsg", "postacell", "mailmasterplus"))], indirect=True, ids=harness_id)
def test_a_member_with_a_newer_consent_receives_at_an_address_we_unsubscribed_for_another_member(
        world: World) -> None:
    """Found as KNOWN_GAPS "echo-by-address" (make fuzz FUZZ_SEED=20261207 FUZZ_EXAMPLES=12 FUZZ_STEPS=40
    -k 'mailmasterplus-typed-sqlite or mailmasterplus-negative-sqlite'). A member's consent becomes RET:
    its record is pushed "unsubscribed". The members swap addresses, and the one that now has that
    address consents (ONAY) after that push. The provider's "unsubscribed" there is our own, made for
    the other member: the new owner must receive. It was left suppressed ("found while pushing"), as
    if the recipient had unsubscribed."""
    world.run()
    refuser, taker = _two_active(world)
    address = normalize_email(refuser.email)
    world.update_member(refuser.id, consent_status="RET", consent_date=world.now())
    assert world.run().status in COMPLETED
    world.update_member(refuser.id, email=taker.email)
    world.update_member(taker.id, email=refuser.email, consent_status="ONAY", consent_date=world.now())
    result = world.run()
    assert result.status in COMPLETED, result.error
    names = world.list_names()
    remote = {normalize_email(email): row for email, row in world.harness.members().items()}
    assert address in remote and remote[address].status == "active", remote.get(address)
    assert {names[list_id] for list_id in world.lists_of(taker.id)} <= set(remote[address].lists)
    world.harness.reset_log()
    assert world.run().status in COMPLETED
    assert world.harness.write_requests() == 0



@pytest.mark.parametrize("harness", [h for h in HARNESSES if harness_id(h).startswith(
    ("fake-contact", "fake-keyed", "euromsg", "postacell"))], indirect=True, ids=harness_id)
@pytest.mark.parametrize("change", ["new-address", "new-list"])
def test_lists_a_push_that_died_added_are_taken_off_when_the_member_moves_on(world: World, change: str) -> None:
    """Found by make fuzz FUZZ_SEED=20261208 FUZZ_EXAMPLES=15 FUZZ_STEPS=40 -k euromsg-sqlite (swaps along
    a chain, runs that crashed): a push put a member in a list and the run died before its answer was
    committed. Its link did not name that list (a provisional link names none; a confirmed one its
    lists before the push). The member then took another address: its removal at the old one took
    off only the lists the link named, and the old address kept receiving in the others (Euromsg
    keeps a card's other lists as the panel's). A link names every list a push adds, before the
    provider sees the push."""
    world.run()
    names = world.list_names()
    member = next(m for m in sorted(world.valid_active_members().values(), key=lambda m: m.id)
                  if set(names) - set(world.lists_of(m.id)))
    joined = sorted(set(names) - set(world.lists_of(member.id)))[0]
    remote_id = None
    if change == "new-address":
        address = "yeni.adres@ornek.com.tr"
        world.update_member(member.id, email=address)
    else:        # (a write to the contact's id names no address)
        address = normalize_email(member.email)
        world.join(member.id, joined)
        with world.engine.connect() as conn:
            remote_id = conn.scalar(sa.select(MemberLink.remote_id).where(MemberLink.crm_member_id == member.id))
    result = _run_crashing_after_write(world, address, remote_id)
    assert result.status == "failed", (result.status, result.error)
    world.update_member(member.id, email="baska.adres@ornek.com.tr")
    result = world.run()
    assert result.status in COMPLETED, result.error
    remote = {normalize_email(email): row for email, row in world.harness.members().items()}
    left = remote.get(address)
    assert left is None or not left.lists or left.status != "active", \
        f"<{address}>, an address the member no longer has, receives in {sorted(left.lists)}"
    world.harness.reset_log()
    assert world.run().status in COMPLETED
    assert world.harness.write_requests() == 0


@pytest.mark.parametrize("harness", [h for h in HARNESSES if harness_id(h).startswith(("euromsg", "postacell"))],
                         indirect=True, ids=harness_id)
def test_a_refusal_unsubscribes_a_soft_bounced_contact(world: World) -> None:
    """Found by make fuzz FUZZ_SEED=20261209 FUZZ_EXAMPLES=15 FUZZ_STEPS=40 -k postacell-sqlite: mail to a
    member's address soft-bounced (the provider marked the contact), then the member refused (RET).
    Postacell's client kept the soft bounce as an opt-out the service already holds, so the contact
    stayed soft_bounce and kept receiving. A soft bounce is a delivery that failed for now, not an
    opt-out: the refusal unsubscribes it (a hard bounce or a complaint stays as it is)."""
    world.run()
    member, _ = _two_active(world)
    address = normalize_email(member.email)
    world.harness.soft_bounce(member.email)
    assert world.run().status in COMPLETED
    world.update_member(member.id, consent_status="RET", consent_date=world.now())
    result = world.run()
    assert result.status in COMPLETED, result.error
    remote = {normalize_email(email): row for email, row in world.harness.members().items()}
    assert remote[address].status == "unsubscribed", remote[address]
    world.harness.reset_log()
    assert world.run().status in COMPLETED
    assert world.harness.write_requests() == 0



def _address_handed_to_the_second(world: World) -> tuple[Any, Any, str]:
    """After a sync, the first of two members (in different lists) loses its address and the
    second takes it, each in a run of its own: (first, second, the address)."""
    world.run()
    first, second = _pair_in_different_lists(world)
    address = first.email
    world.update_member(first.id, email=None)
    assert world.run().status in COMPLETED
    world.update_member(second.id, email=address)
    assert world.run().status in COMPLETED
    return first, second, address


def _pair_in_different_lists(world: World) -> tuple[Any, Any]:
    """Two active members (the first by id first) where the second is in a list the first is not."""
    crm = sorted(world.valid_active_members().values(), key=lambda m: m.id)
    return next((a, b) for a in crm for b in crm
                if a.id < b.id and set(world.lists_of(b.id)) - set(world.lists_of(a.id)))


def _receiving_at(world: World, address: str) -> set[str]:
    """The list names ``address`` receives in, from every record the provider holds of it (a provider
    keyed by our member id may hold two of one address)."""
    return receiving_lists(remote_lists(world.harness, capabilities(world)), normalize_email(address))


@pytest.mark.parametrize("harness", [ContactHarness, KeyedHarness, EuromsgHarness, PostacellHarness], indirect=True,
                         ids=["fake-contact", "fake-keyed", "euromsg", "postacell"])
def test_a_member_refused_for_an_address_stops_receiving_there_in_its_own_record(world: World) -> None:
    """Found by make fuzz FUZZ_SEED=20261208 FUZZ_EXAMPLES=15 FUZZ_STEPS=40 -k fake-keyed-sqlite (the
    mirror: "<ozlem.gunes2@firma.net> receives in ['Kampanya Özel'], where its owner (M000003) must
    receive in ['Bülten Aboneleri']"). A member loses its address (its contact removed: at a provider
    that removes by unsubscribing, kept unsubscribed); a second member takes that address and
    receives there; then the first gets it back. At a provider keyed by our member id both records
    hold the address, and the first (by id) owns it: the second is refused, but its OWN record there
    kept receiving in its lists (only records at another address than the refused one were removed,
    right where one contact per address is the owner's, wrong where each member has its own)."""
    first, second, address = _address_handed_to_the_second(world)
    names = world.list_names()
    assert {names[x] for x in world.lists_of(second.id)} <= _receiving_at(world, address)
    world.update_member(first.id, email=address)
    result = world.run()
    assert result.status in COMPLETED, result.error
    refused = {member.id: reason for member in (first, second)
               for _, reason in _open_rejects_of(world, member.id) if "e-mail also belongs to" in reason}
    assert len(refused) == 1, refused
    owner = first if second.id in refused else second
    assert f"CRM member {owner.id}" in next(iter(refused.values())), refused
    assert _receiving_at(world, address) == {names[x] for x in world.lists_of(owner.id)}
    world.harness.reset_log()
    assert world.run().status in COMPLETED
    assert world.harness.write_requests() == 0


@pytest.mark.parametrize("harness", [ContactHarness, KeyedHarness, EuromsgHarness, PostacellHarness], indirect=True,
                         ids=["fake-contact", "fake-keyed", "euromsg", "postacell"])
def test_a_member_refused_for_the_address_of_a_member_never_pushed_stays_refused_when_re_read_alone(
        world: World) -> None:
    """Found by make fuzz FUZZ_SEED=20261208 FUZZ_EXAMPLES=15 FUZZ_STEPS=40 -k fake-keyed-sqlite (the
    no-change check: "a run right after the backfill, without a CRM change, sent 2 writes"). A member
    takes the address of a member whose consent is RET (in a list, never pushed: no link holds the
    address), and a backfill plans them together: the RET member owns it (first by id), the other is
    refused, naming it. The run after it re-reads the refused member alone (its look-back window),
    and nothing loaded the member its reject names: it was taken for the owner and pushed (2 writes),
    to be refused again by the next backfill, and so on."""
    world.run()
    t = world.crm.members
    with world.engine.connect() as conn:
        refusers = sorted(conn.scalars(sa.select(t.c.id).where(t.c.tenant_id == TENANT, t.c.consent_status == "RET",
                                                              t.c.deleted_at.is_(None))))
    holder = next(member_id for member_id in refusers if world.lists_of(member_id)
                  and valid_email(normalize_email(world.member(member_id).email)))
    address = normalize_email(world.member(holder).email)
    taker = next(m for m in sorted(world.valid_active_members().values(), key=lambda m: m.id) if m.id > holder)
    world.update_member(taker.id, email=address)
    result = world.run(backfill=True)
    assert result.status in COMPLETED, result.error
    assert [reason for _, reason in _open_rejects_of(world, taker.id)] == [
        f"e-mail also belongs to CRM member {holder}; the provider keeps one contact per e-mail"]
    assert _receiving_at(world, address) == set()                   # its owner's consent is RET
    world.harness.reset_log()
    result = world.run()
    assert result.status in COMPLETED, result.error
    assert world.harness.write_requests() == 0, result.counts
    assert _receiving_at(world, address) == set()


class CrashAfterRemoval(httpx.AsyncBaseTransport):
    """Passes every request on; after the first removal by unsubscribing is APPLIED by the
    provider, the worker dies: the answer is lost and nothing after it is committed."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner, self.fired = inner, False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if not self.fired and request.method == "POST" and request.url.path.endswith("/unsubscribe"):
            self.fired = True
            raise Crash(f"killed after {request.method} {request.url.path} was applied")
        return response


@pytest.mark.parametrize("harness", [KeyedHarness], indirect=True, ids=["fake-keyed"])
def test_our_own_unsubscribe_whose_answer_was_lost_is_no_recipients_unsubscribe(world: World) -> None:
    """Found by make fuzz FUZZ_SEED=20261208 FUZZ_EXAMPLES=15 FUZZ_STEPS=40 FUZZ_NO_SHRINK=1 -k
    fake-keyed-sqlite (the mirror: "<ayse.cetin@gmail.com> receives in ['Yurt Dışı Genel Müdürler'],
    where its owner (M000006) must receive in []"). At a provider keyed by our member id that removes
    by unsubscribing, two members each have a record at one address; the owner gets it back and the
    other's record is unsubscribed, and the worker dies once that is applied (its answer lost). The
    next run pulls that "unsubscribed": it is our own, but the link still said "active" (it was
    marked only once the answer was recorded), so it was stored as the recipient's unsubscribe: the
    owner was blocked by it (its own record left as it was, receiving or not) until a newer consent."""
    first, second, address = _address_handed_to_the_second(world)
    world.update_member(first.id, email=address)                # the first (by id) owns it again
    crash = CrashAfterRemoval(world.harness.transport())
    result = asyncio.run(run_connection(world.settings, world.engine, world.engine, world.connection_id,
                                        RunOptions(), transport_factory=lambda _: crash, http_policy=FAST))
    assert crash.fired and result.status == "failed" and "Crash" in (result.error or ""), (result.status,
                                                                                          result.error)
    result = world.run()
    assert result.status in COMPLETED, result.error
    stored = world.scalar(sa.select(sa.func.count()).select_from(MemberStatus).where(
        MemberStatus.email == normalize_email(address)))
    assert stored == 0, f"our own unsubscribe was stored as the recipient's: {result.counts}"
    names = world.list_names()
    assert _receiving_at(world, address) == {names[x] for x in world.lists_of(first.id)}
    assert [reason for _, reason in _open_rejects_of(world, second.id)] == [
        f"e-mail also belongs to CRM member {first.id}; the provider keeps one contact per e-mail"]
    world.harness.reset_log()
    assert world.run().status in COMPLETED
    assert world.harness.write_requests() == 0


@pytest.mark.parametrize("bounced", [False, True], ids=["no-status", "soft-bounced"])
@pytest.mark.parametrize("harness", [KeyedHarness], indirect=True, ids=["fake-keyed"])
def test_an_erased_members_record_we_unsubscribed_blocks_no_one_who_takes_its_address(
        world: World, bounced: bool) -> None:
    """Found by make fuzz FUZZ_SEED=20261210 (and 20261209) FUZZ_EXAMPLES=15 FUZZ_STEPS=40
    FUZZ_NO_SHRINK=1 -k fake-keyed-sqlite ("<baris.ozkan9@firma.net> receives in [...], where its
    owner (M000001) must receive in []"). At a provider keyed by our member id that removes by
    unsubscribing, a member deleted in the CRM (a KVKK erasure) has its record unsubscribed and its
    link deleted; another member takes the address, with a record of its own. The erased record's
    "unsubscribed" pulled back is our own (the ``erasures`` audit names the record), but no link
    recorded the push any more, so it was stored as the recipient's and blocked the new owner. Where
    the address had a soft bounce stored, an "unsubscribed" over it skipped the echo check
    altogether, so even a link's echo was stored."""
    world.run()
    erased, taker = _two_active(world)
    address = normalize_email(erased.email)
    if bounced:
        world.harness.soft_bounce(address)
        assert world.run().status in COMPLETED
        assert world.scalar(sa.select(MemberStatus.status).where(MemberStatus.email == address)) == "soft_bounce"
    world.update_member(erased.id, deleted_at=world.now())
    world.update_member(taker.id, email=erased.email)
    assert world.run().status in COMPLETED
    result = world.run()                        # the erased record's "unsubscribed" is pulled now
    assert result.status in COMPLETED, result.error
    blocking = world.scalar(sa.select(sa.func.count()).select_from(MemberStatus).where(
        MemberStatus.email == address, MemberStatus.status == "unsubscribed"))
    assert blocking == 0, f"our erasure's unsubscribe was stored as the recipient's: {result.counts}"
    names = world.list_names()
    assert _receiving_at(world, address) == {names[x] for x in world.lists_of(taker.id)}
    world.harness.reset_log()
    assert world.run().status in COMPLETED
    assert world.harness.write_requests() == 0


@pytest.mark.parametrize("harness", [KeyedHarness], indirect=True, ids=["fake-keyed"])
def test_our_unsubscribe_over_a_soft_bounce_is_an_echo_and_a_rejoin_makes_the_contact_active(
        world: World) -> None:
    """The soft-bounce side of the finding above, where the link is kept: a member with a soft bounce
    stored leaves every list (its record unsubscribed, its link marked so); the "unsubscribed" pulled
    back was stored over the soft bounce as the recipient's, and the member who joined a list again
    stayed unsubscribed (no newer consent)."""
    world.run()
    member, _ = _two_active(world)
    address = normalize_email(member.email)
    world.harness.soft_bounce(address)
    assert world.run().status in COMPLETED
    lists = world.lists_of(member.id)
    for list_id in lists:
        world.leave_list(member.id, list_id)
    assert world.run().status in COMPLETED
    assert world.run().status in COMPLETED      # the pull sees our unsubscribe
    assert world.scalar(sa.select(MemberStatus.status).where(MemberStatus.email == address)) == "soft_bounce"
    world.join(member.id, lists[0])
    assert world.run().status in COMPLETED
    assert _receiving_at(world, address) == {world.list_names()[lists[0]]}


@pytest.mark.parametrize("edit", ["rename", "RET"])
@pytest.mark.parametrize("harness", [NoRemovalHarness], indirect=True, ids=["fake-noremoval"])
def test_an_update_of_the_new_record_leaves_the_old_address_removal_open(world: World, edit: str) -> None:
    """Found by make fuzz FUZZ_SEED=20261206 FUZZ_EXAMPLES=25 FUZZ_STEPS=40 -k fake-noremoval-sqlite
    with STATE_MACHINE_KNOWN_GAPS=removal-reject-resolved-by-the-new-address ("<zeynep.kilic0@...>
    receives in ['Bülten Aboneleri'], where its owner (M000004) must receive in [], and no open reject
    says a person must act"). At a provider keyed by e-mail that cannot remove, a member's new
    address is a new record and the old one keeps receiving, with a removal_unsupported reject
    naming it. The link follows the new record, so the next update of that record (a rename, an
    unsubscribe for a RET) was taken for "the record the reject was asked on holds what this push
    wrote" (right only where one record moves with its member) and resolved the old address's
    reject: the old address went on receiving with nothing asking a person to act."""
    world.run()
    member = _in_two_lists(world)
    old_address = normalize_email(member.email)
    world.update_member(member.id, email="yeni.adres@ornek.com.tr")
    assert world.run().status in COMPLETED
    asked = sorted(_panel_rejects_of(world, member.id))
    assert {email for _, email, _, _ in asked} == {old_address}
    if edit == "rename":
        world.update_member(member.id, first_name="Değişti")
    else:
        world.update_member(member.id, consent_status="RET", consent_date=world.now())
    world.harness.reset_log()
    result = world.run()
    assert result.status in COMPLETED, result.error
    assert world.harness.write_requests() > 0, "the edit pushed nothing: the test no longer reaches its state"
    assert sorted(_panel_rejects_of(world, member.id)) == asked
    assert _receiving_at(world, old_address), "the old address no longer receives: nothing to ask of a person"


def _moved_by_a_run_that_died(world: World) -> tuple[Any, str, str]:
    """(a provider keyed by our member id) A member in two lists gets a new address; the worker dies
    once the update that moves its record there is applied, before its answer is recorded."""
    world.run()
    member = _in_two_lists(world)
    old_address, new_address = normalize_email(member.email), "tasindi.adres@ornek.com.tr"
    world.update_member(member.id, email=new_address)
    result = _run_crashing_after_write(world, new_address)
    assert result.status == "failed" and "Crash" in (result.error or ""), (result.status, result.error)
    return member, old_address, new_address


@pytest.mark.parametrize("harness", [PostatrHarness], indirect=True, ids=["postatr"])
def test_a_removal_after_a_move_that_died_unconfirmed_names_the_address_the_record_may_hold(world: World) -> None:
    """Found by make fuzz FUZZ_SEED=20261206 FUZZ_EXAMPLES=25 FUZZ_STEPS=40 -k postatr-sqlite with
    STATE_MACHINE_KNOWN_GAPS=removal-reject-resolved-by-the-new-address ("<fatma.demir1@...> receives
    in [...], where its owner (M000008) must receive in [...], and no open reject says a person must
    act"). Postatr keeps one record per Memberid: an address change moves it. The worker dies once
    that update is applied, before its answer is recorded, so the links still name the old address.
    The member then loses its address: Postatr cannot remove, so each list gets a reject asking a
    person to remove the record in the panel, and it named the old address only, where the record
    holds the new one. Now the links name the move before the push leaves, and the rejects name both."""
    member, old_address, new_address = _moved_by_a_run_that_died(world)
    assert normalize_email(_postatr_record(world, member.id)["Email"]) == new_address
    world.update_member(member.id, email=None)
    assert world.run().status in COMPLETED
    asked = _panel_rejects_of(world, member.id)
    assert len(asked) == len(world.lists_of(member.id)) >= 2, asked
    for _, email, code, reason in asked:
        assert code == "removal_unsupported" and email == old_address and new_address in reason, reason

    world.update_member(member.id, email="son.adres@ornek.com.tr")   # an address again: the record moves
    assert world.run().status in COMPLETED
    assert normalize_email(_postatr_record(world, member.id)["Email"]) == "son.adres@ornek.com.tr"
    assert _panel_rejects_of(world, member.id) == []
    assert world.scalar(sa.select(sa.func.count()).select_from(MemberLink).where(
        MemberLink.crm_member_id == member.id, MemberLink.unconfirmed_emails.is_not(None))) == 0
    world.harness.reset_log()
    assert world.run().status in COMPLETED
    assert world.harness.write_requests() == 0


@pytest.mark.parametrize("harness", [PostatrHarness, KeyedHarness], indirect=True, ids=["postatr", "fake-keyed"])
def test_a_member_back_at_its_old_address_after_a_move_that_died_unconfirmed_is_moved_back(world: World) -> None:
    """Found while fixing the test above. At a provider keyed by our member id an address change
    moves the member's one record; the worker dies once the update is applied, before its answer is
    recorded. The CRM then gives the member its old address back: the link named that address with
    its hash and source digest, so neither the next run nor a backfill pushed anything, and the
    record stayed at the address the CRM no longer has. A link whose move is unconfirmed is now
    out of step until the answer is recorded."""
    member, old_address, new_address = _moved_by_a_run_that_died(world)
    assert _receiving_at(world, new_address), "the move was not applied: the test no longer reaches its state"
    world.update_member(member.id, email=member.email)
    assert world.run().status in COMPLETED
    assert _receiving_at(world, old_address) == Mirror(world).expected_lists(member.id)
    assert _receiving_at(world, new_address) == set()
    world.harness.reset_log()
    assert world.run(backfill=True).status in COMPLETED
    assert world.harness.write_requests() == 0


def _backoff_over(world: World) -> None:
    """Every open reject's backoff is over: the next run tries them all again."""
    with world.engine.begin() as conn:
        conn.execute(sa.update(Reject).where(Reject.connection_id == world.connection_id).values(
            last_seen_at=world.now() - dt.timedelta(days=2)))


@pytest.mark.parametrize("harness", [KeyedHarness], indirect=True, ids=["fake-keyed"])
def test_an_erasure_whose_answer_was_lost_stays_an_open_reject_until_it_is_done(world: World) -> None:
    """Found by make fuzz FUZZ_SEED=20261206 FUZZ_EXAMPLES=25 FUZZ_STEPS=40 -k fake-keyed-sqlite with
    STATE_MACHINE_KNOWN_GAPS=own-unsubscribe-with-a-lost-answer-is-no-echo ("a run right after the run
    losing 50% of its write answers ... sent 3 writes"). A member deleted in the CRM is erased; every
    answer to the erasure is lost (applied or not, nobody knows), so it becomes a reject that says it
    will be tried again. The same transaction resolved it at once among the deleted member's "moot"
    rejects (autoflush had given the new row an id): the run looked complete, and the next run,
    unasked, sent the erasure again (where the window wrote more than the reject: here the provider
    restarted empty and everyone is pushed again, as in the example the machine found)."""
    world.settings = dataclasses.replace(world.settings, vanished_check_seconds=0)   # as the machine has it
    world.run()
    member, _ = _two_active(world)
    world.hard_delete_member(member.id)
    world.harness.forget_everything()   # (the provider restarted empty: the window pushes everyone again)
    world.restart_provider(FaultPlan(seed=1, apply_then_drop_rate=0.5))
    try:
        lost = world.run()
    finally:
        world.restart_provider()
    assert lost.counts.get("members_updated") or lost.counts.get("members_added"), lost.counts
    erasure = world.scalar(sa.select(Erasure.action).where(Erasure.crm_member_id == member.id))
    assert erasure == "failed", f"the erasure's answer came back: the test no longer reaches its state ({erasure})"
    open_now = _open_rejects_of(world, member.id)
    assert open_now and all("will retry" in reason for _, reason in open_now), open_now
    _backoff_over(world)
    assert world.run().status in COMPLETED
    assert _open_rejects_of(world, member.id) == []
    assert _receiving_at(world, member.email) == set()
    world.harness.reset_log()
    assert world.run().status in COMPLETED
    assert world.harness.write_requests() == 0


@pytest.mark.parametrize("harness", [KeyedHarness], indirect=True, ids=["fake-keyed"])
def test_a_removal_whose_answer_was_lost_says_so_over_the_members_validation_reject(world: World) -> None:
    """Found by make fuzz FUZZ_SEED=20261206 FUZZ_EXAMPLES=25 FUZZ_STEPS=40 -k fake-keyed-sqlite with
    STATE_MACHINE_KNOWN_GAPS=own-unsubscribe-with-a-lost-answer-is-no-echo ("a run right after the run
    losing 25% of its write answers ... sent 1 writes"). A member loses its address (no longer one),
    so its record is removed (here: unsubscribed), and the answer is lost. The removal's reject ("may
    have been applied ... will retry") and the member's validation reject share one key, and the
    validation reject, recorded after it, replaced it: the run said nothing was left to do, and the
    next one, unasked, sent the removal again. Now the answer-lost reject stands for that run; the
    next run does the removal, and the validation reject comes back."""
    world.run()
    member, _ = _two_active(world)
    world.update_member(member.id, email="gecersiz.adres")
    world.restart_provider(FaultPlan(seed=1, apply_then_drop_rate=1.0))
    try:
        lost = world.run()
    finally:
        world.restart_provider()
    assert lost.status not in COMPLETED[:1], lost.counts
    reasons = [reason for _, reason in _open_rejects_of(world, member.id)]
    assert len(reasons) == 1 and "may have been applied" in reasons[0], reasons
    _backoff_over(world)
    assert world.run().status in COMPLETED
    assert _open_rejects_of(world, member.id) == [("validation", "invalid e-mail address")]
    world.harness.reset_log()
    assert world.run().status in COMPLETED
    assert world.harness.write_requests() == 0


@pytest.mark.parametrize("back", ["first", "second"])
@pytest.mark.parametrize("harness", [NoRemovalHarness], indirect=True, ids=["fake-noremoval"])
def test_a_removal_reject_names_every_address_its_member_left_in_the_list(world: World, back: str) -> None:
    """Found as KNOWN_GAPS "two-addresses-left-in-one-list" (make fuzz FUZZ_SEED=20261206
    FUZZ_EXAMPLES=25 FUZZ_STEPS=40 -k fake-noremoval-sqlite). At a provider keyed by e-mail that
    cannot remove, a member's address changes (the old address stays, a person must remove it),
    then its address is lost: the later address stays too. Rejects are one per member and list, and
    the later removal's reject replaced the earlier one: the first address went on receiving with
    nothing asking a person to act. The reject names both; once the member holds one of them again,
    only the other."""
    member, first, second = _two_addresses_left(world)
    asked = _panel_rejects_of(world, member.id)
    assert asked and {code for _, _, code, _ in asked} == {"removal_unsupported"}
    for address in (first, second):
        assert _receiving_at(world, address), f"{address} no longer receives: nothing to ask of a person"
        for list_id in world.lists_of(member.id):
            assert any(listed == list_id and address in reason for listed, _, _, reason in asked), (address, asked)
    assert world.run().status in COMPLETED                     # a run after it asks the same
    assert sorted(_panel_rejects_of(world, member.id)) == sorted(asked)
    # The member holds one of them again (and is pushed there: a new first name): only the other is asked.
    held, other = (first, second) if back == "first" else (second, first)
    world.update_member(member.id, email=held, first_name="Geri Döndü")
    world.harness.reset_log()
    assert world.run().status in COMPLETED
    assert world.harness.write_requests() > 0, "nothing pushed: the test no longer reaches its state"
    asked = _panel_rejects_of(world, member.id)
    assert asked and all(email == other and held not in reason for _, email, _, reason in asked), asked


@pytest.mark.parametrize("back", ["first", "second"])
@pytest.mark.parametrize("harness", [NoRemovalHarness], indirect=True, ids=["fake-noremoval"])
def test_a_removal_reject_stops_naming_an_address_its_member_holds_again_with_nothing_to_push(
        world: World, back: str) -> None:
    """Noticed while fixing "two-addresses-left-in-one-list" (the test above). As there, a member
    at a provider keyed by e-mail that cannot remove leaves two addresses in its lists, then holds
    one of them again, now with nothing to push there (the address's record holds the member's
    fields already: no write). The removal reject went on naming the address the member holds,
    asking a person to remove a live member from its own lists; it names only the other one."""
    member, first, second = _two_addresses_left(world)
    held, other = (first, second) if back == "first" else (second, first)
    world.update_member(member.id, email=held)
    assert world.run().status in COMPLETED
    asked = _panel_rejects_of(world, member.id)
    assert asked and all(email == other and held not in reason for _, email, _, reason in asked), asked
    assert _receiving_at(world, held), f"{held}, the member's address, no longer receives"
    world.harness.reset_log()
    assert world.run().status in COMPLETED
    assert world.harness.write_requests() == 0
    assert sorted(_panel_rejects_of(world, member.id)) == sorted(asked)


class RemovalRefused:
    """A hook (``World.run``) under which the first write naming ``address`` (a removal: a run sends
    its removals before its upserts), and every repeat of it, fails on the way out, never applied:
    the removal ends as a retriable reject. ``remote_ids``: paths ending in one of these name it too."""

    def __init__(self, address: str, remote_ids: set[str]) -> None:
        self.address, self.paths = address.encode(), tuple(f"/{r}" for r in remote_ids)
        self.refused: tuple[str, str, bytes] | None = None
        self.times = 0

    def __call__(self, request: httpx.Request) -> None:
        seen = (request.method, request.url.path, request.content)
        if self.refused is None and request.method != "GET" and (
                self.address in request.content or request.url.path.endswith(self.paths)):
            self.refused = seen
        if seen == self.refused:
            self.times += 1
            raise httpx.ConnectError("refused by the test", request=request)


def _leaving_for_a_taker(world: World) -> tuple[Any, Any, str]:
    """After a first sync: one member leaves its lists, another joins them (neither run yet); the
    two, and the leaver's address."""
    world.run()
    leaver, taker = _two_active(world)
    for list_id in world.lists_of(leaver.id):
        world.join(taker.id, list_id)
        world.leave_list(leaver.id, list_id)
    return leaver, taker, normalize_email(leaver.email)


def _retried_and_handed_over(world: World, leaver: Any, taker: Any, address: str, *, exactly: bool = False) -> None:
    """The leaver's refused removal tried again (its backoff over, no faults): handed over, not
    sent; the taker receives at the address in its lists (in exactly those: ``exactly``), nothing
    is left open, and the run after it writes nothing."""
    _backoff_over(world)
    result = world.run()
    assert result.status in COMPLETED, result.error
    names = world.list_names()
    remote = {normalize_email(email): row for email, row in world.harness.members().items()}
    assert address in remote, f"the new holder's record was removed: {result.counts}"
    wanted = {names[list_id] for list_id in world.lists_of(taker.id)}
    held = set(remote[address].lists)
    assert (held == wanted if exactly else wanted <= held), (remote[address], wanted, result.counts)
    assert remote[address].status == "active"
    assert result.counts.get("members_handed_over") == 1, result.counts
    assert _open_rejects_of(world, leaver.id) == []
    assert _open_rejects_of(world, taker.id) == []
    world.harness.reset_log()
    assert world.run().status in COMPLETED
    assert world.harness.write_requests() == 0


@pytest.mark.parametrize("harness", [h for h in HARNESSES if harness_id(h).startswith(
    ("fake-contact", "fake-perlist", "euromsg", "postacell", "mailmasterplus"))], indirect=True, ids=harness_id)
def test_a_removal_retried_after_another_member_took_the_record_over_is_not_sent(world: World) -> None:
    """Found by make fuzz FUZZ_SEED=20261207 FUZZ_EXAMPLES=20 FUZZ_STEPS=40 -k mailmasterplus. A member
    leaves its lists for a new address and its removal from them fails (a retriable reject), while
    another member takes its address in those lists: its push finds the record there and takes it over.
    The removal's retry, planned in a later run without the new holder, deleted the record (or took
    it out of the lists) that is the new holder's now: a live member stopped receiving, and nothing
    said so. Both are planned together now, and the removal is handed over: no request."""
    leaver, taker, address = _leaving_for_a_taker(world)
    with world.engine.connect() as conn:
        remote_ids = {r for r in conn.scalars(sa.select(MemberLink.remote_id).where(
            MemberLink.crm_member_id == leaver.id)) if r}
    world.update_member(leaver.id, email="yeni.adres@ornek.com.tr")
    world.update_member(taker.id, email=leaver.email)
    refused = RemovalRefused(address, remote_ids)
    result = world.run(hook=refused)
    assert result.status in COMPLETED, result.error
    assert refused.times > 1, "no removal of the old address was refused: the test no longer reaches its state"
    assert any("will retry" in reason for _, reason in _open_rejects_of(world, leaver.id)), \
        _open_rejects_of(world, leaver.id)

    _retried_and_handed_over(world, leaver, taker, address)


@pytest.mark.parametrize("harness", [h for h in HARNESSES if harness_id(h).startswith(("postacell", "fake-contact"))],
                         indirect=True, ids=harness_id)
def test_a_whole_contact_removal_retried_after_the_owner_took_the_contact_leaves_the_owner_in_its_lists(
        world: World) -> None:
    """Where a removal deletes the whole contact (Postacell): a member in two lists leaves them for
    a new address, its removal fails (a retriable reject), and another member takes its old address
    in ONE of those lists: its push finds the contact and takes it over (the leaver's other list
    still on it). The removal's retry deleted the contact, the new holder's now: it stopped
    receiving, and nothing re-created it until its CRM row changed. Now the removal is handed over
    and the holder's contact is written again with its own lists: the list neither wants goes."""
    world.run()
    leaver, taker = _two_active(world)
    live = sorted(world.live_lists_by_member().get(leaver.id, []))
    for list_id in sorted(world.list_names()):
        if len(live) >= 2:
            break
        if list_id not in live:     # (a deleted list joins no one: it is not counted)
            world.join(leaver.id, list_id)
            live = sorted(world.live_lists_by_member().get(leaver.id, []))
    assert len(live) >= 2, live
    shared, other = live[0], live[1]
    world.join(taker.id, shared)
    if other in world.lists_of(taker.id):
        world.leave_list(taker.id, other)
    result = world.run()
    assert result.status in COMPLETED, result.error
    address = normalize_email(leaver.email)
    with world.engine.connect() as conn:
        remote_ids = {r for r in conn.scalars(sa.select(MemberLink.remote_id).where(
            MemberLink.crm_member_id == leaver.id)) if r}
    for list_id in live:
        world.leave_list(leaver.id, list_id)
    world.update_member(leaver.id, email="yeni.adres@ornek.com.tr")
    world.update_member(taker.id, email=leaver.email)
    refused = RemovalRefused(address, remote_ids)
    result = world.run(hook=refused)
    assert result.status in COMPLETED, result.error
    assert refused.times > 1, "no removal of the old address was refused: the test no longer reaches its state"

    _retried_and_handed_over(world, leaver, taker, address, exactly=True)


@pytest.mark.parametrize("harness", [NoRemovalHarness], indirect=True, ids=["fake-noremoval"])
def test_an_erasure_handed_over_to_the_addresss_new_holder_is_audited_with_that_member(world: World) -> None:
    """A member deleted in the CRM (a KVKK erasure) while another member takes its address in its
    lists: the record is the new holder's, so the removal is not asked for; the erasure audit
    says so and names the member the record belongs to now (not an address: the audit keeps none)."""
    world.run()
    leaver, taker = _two_active(world)
    for list_id in world.lists_of(leaver.id):
        world.join(taker.id, list_id)
    world.update_member(leaver.id, deleted_at=world.now())
    world.update_member(taker.id, email=leaver.email)
    result = world.run()
    assert result.status in COMPLETED, result.error
    assert result.counts.get("members_handed_over"), result.counts
    with world.engine.connect() as conn:
        rows = conn.execute(sa.select(Erasure.action, Erasure.answer).where(
            Erasure.crm_member_id == leaver.id)).all()
    assert rows and {action for action, _ in rows} == {"handed_over"}, rows
    assert all(taker.id in answer and normalize_email(leaver.email) not in answer.lower() for _, answer in rows), rows
    assert _open_rejects_of(world, leaver.id) == []


@pytest.mark.parametrize("harness", [NoRemovalHarness], indirect=True, ids=["fake-noremoval"])
def test_no_panel_removal_is_asked_for_an_address_another_member_takes_in_that_list(world: World) -> None:
    """At a provider that cannot remove, a member leaves its lists for a new address while another
    member takes its old address in those lists. The record there is the new holder's (its push
    writes to it): a reject asking a person to remove that address from the list would take the new
    holder out of it. The removal is handed over: no reject for it, the new holder receives there."""
    leaver, taker, address = _leaving_for_a_taker(world)
    world.update_member(leaver.id, email="yeni.adres@ornek.com.tr")
    world.update_member(taker.id, email=leaver.email)
    result = world.run()
    assert result.status in COMPLETED, result.error
    assert result.counts.get("members_handed_over") == 1, result.counts
    assert _open_rejects_of(world, leaver.id) == []
    asked = [reason for _, reason in _open_rejects_of(world, taker.id)]
    assert asked and all(address not in reason for reason in asked), asked   # (its own old address only)
    names = world.list_names()
    remote = {normalize_email(email): row for email, row in world.harness.members().items()}
    assert {names[list_id] for list_id in world.lists_of(taker.id)} <= set(remote[address].lists)
    world.harness.reset_log()
    assert world.run().status in COMPLETED
    assert world.harness.write_requests() == 0


@pytest.mark.parametrize("harness", [NoRemovalHarness], indirect=True, ids=["fake-noremoval"])
def test_a_refused_push_keeps_the_panel_removal_of_the_address_its_member_left_in_that_list(world: World) -> None:
    """Found by make fuzz FUZZ_SEED=20261208 FUZZ_EXAMPLES=20 FUZZ_STEPS=40 -k fake-noremoval. At a
    provider that cannot remove, a member's address changes: an open reject asks a person to remove
    the old address from the list. A later push of the member in that list is refused (a retriable
    error): the refusal replaced that reject (one per member and list), and the old address kept
    receiving with nothing asking for its removal. The removal reject stays, telling the refusal
    inside it until a push under its key succeeds."""
    world.run()
    member, _ = _two_active(world)
    old_address = normalize_email(member.email)
    new_address = "yeni.adres@ornek.com.tr"
    world.update_member(member.id, email=new_address)
    assert world.run().status in COMPLETED

    def asks_removal() -> list[str]:
        return [reason for code, reason in _open_rejects_of(world, member.id)
                if code == "removal_unsupported" and old_address in reason]

    assert asks_removal()
    world.update_member(member.id, first_name="Değişti")

    def refuse(request: httpx.Request) -> None:
        if request.method != "GET" and new_address.encode() in request.content:
            raise httpx.ConnectError("refused by the test", request=request)

    assert world.run(hook=refuse).status in COMPLETED
    asked = asks_removal()
    assert asked and all("will retry" in reason for reason in asked), _open_rejects_of(world, member.id)
    assert old_address in world.harness.members()

    with world.engine.begin() as conn:                          # the backoff is over
        conn.execute(sa.update(Reject).where(Reject.connection_id == world.connection_id).values(
            last_seen_at=world.now() - dt.timedelta(days=2)))
    assert world.run().status in COMPLETED
    asked = asks_removal()
    assert asked and not any("meanwhile" in reason or "will retry" in reason for reason in asked), asked
    assert new_address in world.harness.members()


@pytest.mark.parametrize("harness", [h for h in HARNESSES if harness_id(h) in ("postacell", "euromsg")],
                         indirect=True, ids=harness_id)
def test_a_soft_bounce_does_not_re_date_a_complaint_the_crm_consent_came_after(world: World) -> None:
    """Found by make fuzz FUZZ_SEED=20261209 FUZZ_EXAMPLES=20 FUZZ_STEPS=40 -k postacell (and euromsg),
    shrunk to these steps. A recipient complains; the CRM records a newer consent (ONAY, now): the
    member is made active again. A later soft bounce (information only) moved the stored complaint's
    time to its own, so the complaint looked newer than the consent: the member was blocked by it,
    and the contact kept receiving with nothing stored that allowed it."""
    world.run()
    member, _ = _two_active(world)
    address = normalize_email(member.email)
    world.harness.complain(address)
    world.update_member(member.id, consent_status="ONAY", consent_date=world.now() + dt.timedelta(seconds=1))
    assert world.run(backfill=True).status in COMPLETED

    def stored() -> list[tuple[str, Any]]:
        with world.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.select(MemberStatus.status, MemberStatus.occurred_at).where(
                MemberStatus.email == address))]

    before = stored()
    assert [status for status, _ in before] == ["complaint"], before
    world.harness.soft_bounce(address)
    assert world.run(backfill=True).status in COMPLETED
    assert stored() == before, "the soft bounce re-dated the stored complaint"
    assert world.harness.members()[address].status != "unsubscribed"
    world.harness.reset_log()
    assert world.run().status in COMPLETED
    assert world.harness.write_requests() == 0
