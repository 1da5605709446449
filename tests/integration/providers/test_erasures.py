"""KVKK erasures, audited: a member deleted in the CRM is removed at the provider as far as it can,
and each erasure is a row saying what was sent where, when, with which answer."""

from __future__ import annotations

import dataclasses
import json

import pytest
import sqlalchemy as sa

from sync import db
from sync.emails import email_digest
from sync.models import Erasure, Reject
from tests.cli_runner import run_cli
from tests.integration.providers.conftest import TENANT, World
from tests.integration.providers.contract_fake import NoRemovalHarness
from tests.integration.providers.harness import PostacellHarness


def _erasures(world: World) -> list[Erasure]:
    with db.session_factory(world.engine)() as session:
        return list(session.scalars(sa.select(Erasure).order_by(Erasure.id)))


def _members(world: World, count: int) -> list[sa.Row[tuple[str, str]]]:
    rows = sorted(world.valid_active_members().values(), key=lambda r: r.id)
    return rows[:count]


@pytest.mark.parametrize("harness", [PostacellHarness], indirect=True, ids=["postacell"])
def test_every_erasure_is_recorded_with_what_the_provider_did(world: World, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert world.run().status in ("partial", "succeeded_with_rejects")
    soft, hard = _members(world, 2)
    remote_ids = {m.email.lower(): world.harness.contact_id(m.email) for m in (soft, hard)}
    world.update_member(soft.id, deleted_at=world.now())
    world.hard_delete_member(hard.id)
    world.settings = dataclasses.replace(world.settings, vanished_check_seconds=0)   # look for hard deletes now

    result = world.run()

    assert result.status == "succeeded_with_rejects", result.error
    assert {soft.email.lower(), hard.email.lower()}.isdisjoint(world.harness.members())
    rows = _erasures(world)
    assert sorted((r.crm_member_id, r.action, r.provider) for r in rows) == sorted(
        [(soft.id, "deleted", "postacell"), (hard.id, "deleted", "postacell")])
    by_member = {r.crm_member_id: r for r in rows}
    assert by_member[soft.id].email_sha256 == email_digest(soft.email)
    assert by_member[hard.id].remote_id == remote_ids[hard.email.lower()]
    assert all(r.connection_id == world.connection_id and r.run_id is not None for r in rows)
    # the audit keeps no address in clear
    assert all(soft.email.lower() not in " ".join(str(v) for v in vars(r).values()).lower() for r in rows)

    assert world.run().status == "succeeded_with_rejects"    # nothing more to erase: no new row
    assert len(_erasures(world)) == 2

    env = {"CRM_ESP_SYNC_DATABASE_URL": world.engine.url.render_as_string(hide_password=False),
           "CRM_ESP_SYNC_MASTER_KEY": world.settings.master_keys[0].reveal()}
    shown = run_cli(monkeypatch, capsys, env, "erasure", "report", "--tenant", TENANT, "--json")
    assert shown.code == 0, shown.err
    assert sorted(r["crm_member_id"] for r in json.loads(shown.out)) == sorted([soft.id, hard.id])
    one = run_cli(monkeypatch, capsys, env, "erasure", "report", "--email", soft.email.upper(), "--json")
    assert [r["crm_member_id"] for r in json.loads(one.out)] == [soft.id]
    table = run_cli(monkeypatch, capsys, env, "erasure", "report", "--since", "2000-01-01")
    assert table.code == 0 and "2 erasure(s) of 2 member(s): 2 deleted" in table.out
    bad = run_cli(monkeypatch, capsys, env, "erasure", "report", "--since", "last tuesday")
    assert bad.code == 2 and "Error: --since 'last tuesday': expected a date" in bad.err


@pytest.mark.parametrize("harness", [NoRemovalHarness], indirect=True, ids=["fake-noremoval"])
def test_an_erasure_the_provider_cannot_do_is_recorded_once_and_stays_visible(world: World) -> None:
    world.run()
    (member,) = _members(world, 1)
    world.update_member(member.id, deleted_at=world.now())
    world.run()
    world.run()
    world.run(backfill=True)
    rows = _erasures(world)
    assert len(rows) == 1 and rows[0].action == "not_supported"
    assert "cannot remove members" in rows[0].answer
    with db.session_factory(world.engine)() as session:     # still asking a person to act, runs later
        still_open = session.scalars(sa.select(Reject.crm_member_id).where(
            Reject.connection_id == world.connection_id, Reject.provider_code == "removal_unsupported",
            Reject.resolved_at.is_(None))).all()
    assert member.id in still_open
