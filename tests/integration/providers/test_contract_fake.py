"""Engine behaviours that need a provider SHAPE, proven through the contract fake on every database:
per-list unsubscribes, complaints, İYS RET across connections, a provider keyed by our id,
unmapped lists, a pull-only provider. Two connections of one tenant where it matters."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

from sync import db, registry
from sync.config import CrmSource, Secret, Settings
from sync.crypto import Vault, generate_key
from sync.models import IysConsent, MemberLink, MemberStatus, Reject
from sync.providers.base import CAPABILITY_PROTOCOLS, check_provider
from sync.sample import seed_crm
from tests.integration.providers.conftest import TENANT, World
from tests.integration.providers.contract_fake import (
    PANEL_LISTS,
    PROVIDER_CLASSES,
    ContactHarness,
    ContractHarness,
    KeyedHarness,
    PerListHarness,
    PullOnlyHarness,
    _Record,
)

Build = Callable[..., list[World]]


@pytest.fixture
def connect(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Build]:
    """``connect(HarnessA, HarnessB, ...)``: one tenant, one connection per shape, one World each."""
    settings = Settings(database_url=str(engine.url), master_keys=(Secret(generate_key()),), lookback_seconds=300,
                        worker_id="test-worker")
    seed_crm(engine, CrmSource(), [TENANT], 120, seed=7)
    with db.transaction(db.session_factory(engine)) as session:
        registry.add_tenant(session, TENANT)

    def build(*classes: type[ContractHarness]) -> list[World]:
        worlds = []
        for cls in classes:
            harness = cls()
            harness.register(monkeypatch)
            harness.start()
            with db.transaction(db.session_factory(engine)) as session:
                connection = registry.add_connection(session, Vault(settings.master_keys), TENANT, harness.name,
                                                     harness.credentials, settings=harness.settings,
                                                     base_url=harness.base_url)
            worlds.append(World(engine, settings, harness, connection.id))  # type: ignore[arg-type]
        return worlds

    yield build


def _fake(world: World) -> ContractHarness:
    assert isinstance(world.harness, ContractHarness)
    return world.harness


def _member_in_lists(world: World, at_least: int) -> tuple[str, str, list[str]]:
    """(email, member id, lists) of the first consenting member in at least this many lists."""
    for email, row in sorted(world.valid_active_members().items()):
        lists = world.lists_of(row.id)
        if len(lists) >= at_least:
            return email, row.id, lists
    raise AssertionError("the seeded CRM has no such member")


def _statuses(world: World, email: str) -> list[tuple[str, str]]:
    with world.engine.connect() as conn:
        return sorted((r.remote_list_id, r.status) for r in conn.execute(sa.select(
            MemberStatus.remote_list_id, MemberStatus.status).where(
            MemberStatus.connection_id == world.connection_id, MemberStatus.email == email)))


def _open_rejects(world: World, code: str) -> list[tuple[str, str]]:
    with world.engine.connect() as conn:
        return sorted((r.crm_member_id, r.crm_list_id) for r in conn.execute(sa.select(
            Reject.crm_member_id, Reject.crm_list_id).where(
            Reject.connection_id == world.connection_id, Reject.provider_code == code, Reject.resolved_at.is_(None))))


def test_each_shape_implements_exactly_the_protocols_it_declares() -> None:
    for cls in PROVIDER_CLASSES.values():
        provider = cls(None, {})  # type: ignore[arg-type]
        check_provider(provider)
        for label, declared, protocol in CAPABILITY_PROTOCOLS:
            assert isinstance(provider, protocol) == declared(provider.capabilities), (cls.__name__, label)


def test_a_pull_only_provider_is_pushed_nothing_and_its_statuses_are_stored(connect: Build) -> None:
    (world,) = connect(PullOnlyHarness)
    email = sorted(world.valid_active_members())[0]
    _fake(world).sandbox.records["x1"] = _Record("x1", email, email, {}, "unsubscribed")
    result = world.run()
    assert result.status == "succeeded", result.error
    assert _fake(world).write_requests() == 0
    assert result.counts.get("members_considered", 0) == 0
    assert _statuses(world, email) == [("", "unsubscribed")]


def test_a_per_list_unsubscribe_blocks_that_list_only(connect: Build) -> None:
    """The member stays, and is updated, in its other lists; at the tenant's other provider it is
    not suppressed; a newer CRM consent re-subscribes it to that list."""
    per_list, contact = connect(PerListHarness, ContactHarness)
    per_list.run()
    contact.run()
    email, member_id, lists = _member_in_lists(per_list, 2)
    left, kept = per_list.list_name(lists[0]), per_list.list_name(lists[1])
    _fake(per_list).unsubscribe_from_list(email, left)
    per_list.update_member(member_id, last_name="Değişti")
    per_list.run()
    contact.run()
    statuses = _fake(per_list).list_statuses(email)
    assert statuses[left] == "unsubscribed" and statuses[kept] == "active"
    kept_record = next(r for r in _fake(per_list).sandbox.of_email(email) if r.list_id == PANEL_LISTS[lists[1]])
    assert kept_record.fields["last_name"] == "Değişti"
    assert _statuses(per_list, email) == [(PANEL_LISTS[lists[0]], "unsubscribed")]
    assert contact.harness.members()[email].status == "active"
    assert _statuses(contact, email) == []
    per_list.update_member(member_id, consent_status="ONAY", consent_date=per_list.now() + dt.timedelta(seconds=5))
    per_list.run()
    assert set(_fake(per_list).list_statuses(email).values()) == {"active"}


def test_a_complaint_blocks_every_list_and_reaches_the_other_provider(connect: Build) -> None:
    per_list, contact = connect(PerListHarness, ContactHarness)
    per_list.run()
    contact.run()
    email, member_id, _ = _member_in_lists(per_list, 2)
    _fake(per_list).complain(email)
    per_list.update_member(member_id, last_name="Şikayetçi")
    result = per_list.run()
    assert email in result.plan.blocked_by_suppression  # type: ignore[union-attr]
    assert set(_fake(per_list).list_statuses(email).values()) == {"complaint"}
    contact.run()                       # no CRM change needed
    assert contact.harness.members()[email].status == "unsubscribed"


def test_an_iys_ret_blocks_the_email_channel_at_the_other_connection_until_a_newer_onay(connect: Build) -> None:
    integrator, other = connect(ContactHarness, KeyedHarness)
    integrator.run()
    other.run()
    email, member_id, _ = _member_in_lists(other, 1)
    _fake(integrator).record_consent(email, "RET", integrator.now())
    integrator.run()
    assert integrator.scalar(sa.select(IysConsent.status).where(IysConsent.recipient == email)) == "RET"
    other.run()
    assert other.harness.members()[email].status == "unsubscribed"
    other.update_member(member_id, first_name="Yine")      # a CRM change without a newer ONAY
    other.run()
    assert other.harness.members()[email].status == "unsubscribed"
    other.update_member(member_id, consent_status="ONAY", consent_date=other.now() + dt.timedelta(seconds=5))
    other.run()
    assert other.harness.members()[email].status == "active"


def test_an_unsubscribe_at_one_connection_reaches_the_other_on_its_next_run(connect: Build) -> None:
    first, second = connect(ContactHarness, KeyedHarness)
    first.run()
    second.run()
    email = sorted(first.valid_active_members())[8]
    first.harness.unsubscribe(email)
    first.run()
    second.harness.reset_log()
    second.run()                        # no CRM change
    assert second.harness.members()[email].status == "unsubscribed"
    assert second.harness.write_requests() == 1


def test_an_address_change_at_a_provider_keyed_by_our_id_is_an_update(connect: Build) -> None:
    (world,) = connect(KeyedHarness)
    world.run()
    email = sorted(world.valid_active_members())[2]
    member = world.valid_active_members()[email]
    before = world.harness.contact_id(email)
    world.update_member(member.id, email="yeni.adres@ornek.com.tr")
    result = world.run()
    assert result.counts.get("members_removed", 0) == 0 and result.counts.get("members_updated") == 1
    assert world.harness.contact_id("yeni.adres@ornek.com.tr") == before
    assert email not in world.harness.members()


def test_a_member_who_left_every_list_at_an_unsubscribing_provider_comes_back_when_rejoining(
        connect: Build) -> None:
    """Our own removal (an unsubscribe, the provider cannot delete), pulled back, is not the
    recipient's unsubscribe: rejoining a list makes the member active again."""
    (world,) = connect(KeyedHarness)
    world.run()
    email, member_id, lists = _member_in_lists(world, 1)
    for crm_list in lists:
        world.leave_list(member_id, crm_list)
    world.run()
    assert world.harness.members()[email].status == "unsubscribed"
    world.run()                         # pulls the unsubscribe back
    world.harness.reset_log()
    again = world.run()                 # nothing more to remove: the removal was done once
    assert world.harness.write_requests() == 0, again.counts
    world.join(member_id, lists[0])
    world.run()
    assert world.harness.members()[email].status == "active"


def test_an_unmapped_list_waits_visibly_until_it_is_mapped(connect: Build) -> None:
    (world,) = connect(PerListHarness)
    world.add_list("L9", "Panelde Yeni")
    members = sorted(world.valid_active_members().values(), key=lambda r: r.id)[:3]
    for row in members:
        world.join(row.id, "L9")
    _fake(world).sandbox.add_list("p909", "Panelde Yeni")
    first = world.run()
    assert first.counts.get("lists_rejected") == 1
    assert _open_rejects(world, "unmapped") == [("", "L9")]
    assert _open_rejects(world, "list_pending") == sorted((row.id, "L9") for row in members)
    with db.transaction(db.session_factory(world.engine)) as session:
        lists = dict(registry.get_connection(session, TENANT, world.harness.name).settings["lists"])
        registry.update_connection(session, TENANT, world.harness.name, settings={
            "lists": {**lists, "L9": {"list_id": "p909", "name": "Panelde Yeni"}}})
    world.run()
    assert _open_rejects(world, "unmapped") == _open_rejects(world, "list_pending") == []
    remote = world.harness.members()
    assert all("Panelde Yeni" in remote[row.email.lower()].lists for row in members)
    assert world.scalar(sa.select(sa.func.count()).select_from(MemberLink).where(MemberLink.crm_list_id == "L9")) == 3
