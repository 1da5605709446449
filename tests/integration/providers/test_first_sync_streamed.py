"""A first sync holds nothing a member through the run (issue 26, first-sync memory): with no
watermark every CRM member has changed, so the members phase streams them page by page as a
backfill does, instead of reading every id with its change time into a list first. A later run
reads the changes since its watermark. A run that names nobody (``RunOptions(itemize=False)``:
the daemon's, a plain ``once``'s) does the same work as one that names every member."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from sync.crm import CrmReader
from tests.integration.providers.conftest import TENANT, World
from tests.integration.providers.test_provider_suite import assert_mirrors_crm, expected_pushes

COMPLETED = ("succeeded", "succeeded_with_rejects", "partial")


@pytest.fixture
def change_reads(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The ``since`` of every call of CrmReader.changed_member_ids."""
    calls: list[Any] = []
    read = CrmReader.changed_member_ids

    def counted(self: CrmReader, since: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(since)
        return read(self, since, *args, **kwargs)

    monkeypatch.setattr(CrmReader, "changed_member_ids", counted)
    return calls


def test_a_first_sync_streams_every_member_and_the_next_reads_its_changes(world: World,
                                                                         change_reads: list[Any]) -> None:
    members = world.crm.members
    crm_members = world.scalar(sa.select(sa.func.count()).select_from(members).where(members.c.tenant_id == TENANT))
    first = world.run(itemize=False)
    assert first.status in COMPLETED, first.error
    assert change_reads == []       # streamed, not read into a list
    assert first.counts["members_considered"] == crm_members
    assert_mirrors_crm(world)
    member = sorted(world.valid_active_members().values(), key=lambda row: row.id)[3]
    world.update_member(member.id, last_name="Değişti")
    world.harness.reset_log()
    second = world.run(itemize=False)
    assert second.status in COMPLETED, second.error
    assert len(change_reads) == 1 and change_reads[0] is not None
    assert 1 <= second.counts["members_considered"] < crm_members
    assert second.counts.get("members_updated", 0) + second.counts.get("members_added", 0) >= 1
    assert_mirrors_crm(world)
    world.harness.reset_log()
    world.run(itemize=False)
    assert world.harness.write_requests() == 0


def test_a_run_that_names_nobody_does_the_same_work(world: World) -> None:
    """The first sync names nobody and keeps its counts; the dry run before it (always named) and
    a named run after a change name exactly what was and is done."""
    dry = world.run(dry_run=True, itemize=False)
    assert dry.plan is not None and len(dry.plan.members_add) == expected_pushes(world)
    quiet = world.run(itemize=False)
    assert quiet.status in COMPLETED, quiet.error
    assert quiet.plan is not None
    assert (quiet.plan.members_add, quiet.plan.members_update, quiet.plan.members_remove,
            quiet.plan.left_out) == ([], [], [], [])
    assert_mirrors_crm(world)
    member = sorted(world.valid_active_members().values(), key=lambda row: row.id)[5]
    world.update_member(member.id, first_name="Yeniden")
    named = world.run()
    assert named.plan is not None
    assert set(named.plan.members_update + named.plan.members_add) == {member.email.lower()}
