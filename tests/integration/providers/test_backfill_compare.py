"""The backfill compares each member's CRM state with the one its links were last synced from
(``member_links.source_digest``) and plans only the members that differ: every provider, every
database. The tests try to make it skip a member it must not skip."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from sync.models import Connection, MemberLink, Reject
from tests.integration.providers.conftest import TENANT, World
from tests.integration.providers.test_provider_suite import assert_member_lists, assert_removed

MEMBERS = 120     # the world's sample CRM

#: Backfill/late-commit SQL differs per database: every harness on every database (tests/README.md).
pytestmark = pytest.mark.every_database


def _linked(world: World) -> set[str]:
    with world.engine.connect() as conn:
        return set(conn.scalars(sa.select(MemberLink.crm_member_id).distinct()))


def _silently(world: World, table: Any, where: Any, **values: Any) -> None:
    """A change the CRM makes without moving updated_at (an import script, a manual UPDATE): the
    incremental run cannot see it, the backfill must."""
    with world.engine.begin() as conn:
        conn.execute(table.update().where(table.c.tenant_id == TENANT, where).values(**values))


def _open_rejects(world: World) -> set[str]:
    with world.engine.connect() as conn:
        return set(conn.scalars(sa.select(Reject.crm_member_id).where(Reject.resolved_at.is_(None))))


def test_a_backfill_of_an_unchanged_crm_plans_only_members_without_a_synced_state(world: World) -> None:
    world.run()
    linked = _linked(world)
    world.harness.reset_log()
    result = world.run(backfill=True)
    assert world.harness.write_requests() == 0, result.counts
    # Every linked member is skipped; what is planned is what has no link (refused, invalid:
    # their open rejects are tried again) - never a member whose links hold its CRM state.
    assert result.counts["members_skipped_unchanged"] >= len(linked)
    assert result.counts["members_considered"] + result.counts["members_skipped_unchanged"] == MEMBERS
    assert result.counts["members_considered"] <= MEMBERS - len(linked)
    again = world.run(backfill=True)
    assert again.counts["members_considered"] == result.counts["members_considered"]


def test_changes_made_without_moving_updated_at_are_found_and_pushed_by_the_backfill(world: World) -> None:
    world.run()
    crm = world.valid_active_members()
    renamed, left, deleted = (crm[email] for email in sorted(crm)[3:6])
    m, ms = world.crm.members, world.crm.memberships
    _silently(world, m, m.c.id == renamed.id, last_name="Sessizce")
    _silently(world, ms, ms.c.member_id == left.id, deleted_at=world.now())
    _silently(world, m, m.c.id == deleted.id, deleted_at=world.now())
    with world.engine.connect() as conn:
        hashes = dict(conn.execute(sa.select(MemberLink.id, MemberLink.payload_hash).where(
            MemberLink.crm_member_id == renamed.id)).all())
    world.harness.reset_log()
    world.run()
    assert world.harness.write_requests() == 0        # the incremental run cannot see them
    result = world.run(backfill=True)
    assert result.counts["members_considered"] >= 3, result.counts
    with world.engine.connect() as conn:
        after = dict(conn.execute(sa.select(MemberLink.id, MemberLink.payload_hash).where(
            MemberLink.crm_member_id == renamed.id)).all())
    assert after and all(after[link_id] != digest for link_id, digest in hashes.items() if link_id in after), after
    assert_removed(world, left.email.lower(), left.id)
    assert_removed(world, deleted.email.lower(), deleted.id)
    world.harness.reset_log()
    world.run(backfill=True)
    assert world.harness.write_requests() == 0


def test_a_silent_change_to_one_list_of_a_member_is_found(world: World) -> None:
    """Per-list records or one contact with lists: a membership's own change counts."""
    world.run()
    crm = world.valid_active_members()
    member = next(row for email, row in sorted(crm.items()) if len(world.lists_of(row.id)) >= 2)
    first = world.lists_of(member.id)[0]
    ms = world.crm.memberships
    _silently(world, ms, (ms.c.member_id == member.id) & (ms.c.list_id == first), deleted_at=world.now())
    world.run(backfill=True)
    remote = world.harness.members()[member.email.lower()]
    assert_member_lists(world, remote.lists, member.id)


def test_replan_all_plans_every_member_and_a_settings_change_does_too(world: World) -> None:
    world.run()
    world.harness.reset_log()
    every = world.run(backfill=True, replan_all=True)
    assert every.counts["members_considered"] == MEMBERS
    assert world.harness.write_requests() == 0
    # A setting shapes a plan as much as a CRM row does (a field mapping, say): all are planned once.
    with world.engine.begin() as conn:
        settings = dict(conn.scalar(sa.select(Connection.settings).where(Connection.id == world.connection_id)))
        settings["max_delete_members"] = 4321
        conn.execute(sa.update(Connection).where(Connection.id == world.connection_id).values(settings=settings))
    changed = world.run(backfill=True)
    assert changed.counts["members_considered"] == MEMBERS
    assert world.run(backfill=True).counts["members_considered"] < MEMBERS - len(_linked(world)) + 1


def test_a_refused_member_is_planned_again_by_every_backfill(world: World) -> None:
    """An open reject (here the provider's, from an invalid address made valid-looking later, or
    our validation) is tried by the backfill whatever its backoff: a member with a reject never
    has its CRM state recorded as synced."""
    world.run()
    rejected = _open_rejects(world) - {""}
    assert rejected
    result = world.run(backfill=True)
    assert result.counts["members_considered"] >= len(rejected)
    with world.engine.connect() as conn:
        recorded = set(conn.scalars(sa.select(MemberLink.crm_member_id).where(
            MemberLink.source_digest.is_not(None))))
    assert not recorded & rejected


def test_an_unsubscribe_at_the_provider_stands_through_backfills_and_a_silent_crm_change(world: World) -> None:
    """The member the unsubscribe re-plans is recorded as synced with it; a CRM change made
    silently afterwards is planned by the backfill, and the unsubscribe still stands."""
    world.run()
    email = sorted(world.valid_active_members())[7]
    member = world.valid_active_members()[email]
    world.harness.unsubscribe(email)
    world.run()
    world.run(backfill=True)
    assert world.harness.members()[email].status == "unsubscribed"
    m = world.crm.members
    _silently(world, m, m.c.id == member.id, city="Eskişehir")
    result = world.run(backfill=True)
    assert result.counts["members_considered"] >= 1, result.counts
    assert world.harness.members()[email].status == "unsubscribed"
