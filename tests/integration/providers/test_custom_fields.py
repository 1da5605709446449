"""Custom fields: an extra column of the CRM's members relation, mapped by the connection to a
provider field, typed, pushed, and refused with a clear reason where it does not fit."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from sync import db, registry
from sync.models import Reject
from tests.integration.providers.conftest import TENANT, World
from tests.integration.providers.harness import PostacellHarness
from tests.integration.providers.harness_euromsg import EuromsgHarness
from tests.integration.providers.harness_postatr import PostatrHarness

COLUMN = "loyalty_points"


# ruff: noqa: S608 - identifiers are this test's constants, values are bound


def _add_column(world: World, values: dict[str, str | None]) -> None:
    members = world.crm.members
    with world.engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE {members.name} ADD COLUMN {COLUMN} VARCHAR(32)"))
        for member_id, value in values.items():
            conn.execute(sa.text(f"UPDATE {members.name} SET {COLUMN} = :v, updated_at = :at "
                                 "WHERE tenant_id = :t AND id = :id"),
                         {"v": value, "at": world.now(), "t": TENANT, "id": member_id})


def _set(world: World, member_id: str, value: str) -> None:
    members = world.crm.members
    with world.engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {members.name} SET {COLUMN} = :v, updated_at = :at "
                             "WHERE tenant_id = :t AND id = :id"),
                     {"v": value, "at": world.now(), "t": TENANT, "id": member_id})


def _map(world: World, provider: str, mapping: dict[str, object]) -> None:
    with db.transaction(db.session_factory(world.engine)) as session:
        registry.update_connection(session, TENANT, provider, settings={"fields": mapping})


def _open_rejects(world: World) -> dict[str, str]:
    with db.session_factory(world.engine)() as session:
        return {r.crm_member_id: r.reason for r in session.scalars(
            sa.select(Reject).where(Reject.connection_id == world.connection_id, Reject.resolved_at.is_(None)))}


@pytest.mark.parametrize("harness", [PostacellHarness], indirect=True, ids=["postacell"])
def test_a_mapped_column_is_pushed_typed_and_a_bad_value_is_a_reject(world: World) -> None:
    account = world.harness.credentials["username"]
    sandbox = world.harness.sandbox  # type: ignore[attr-defined]
    field_id = sandbox.create_field(account, "Puan", "number")
    good = sorted(world.valid_active_members().values(), key=lambda r: r.id)[:3]
    _add_column(world, {good[0].id: "120", good[1].id: "12,5", good[2].id: "çok"})
    _map(world, "postacell", {COLUMN: {"field": field_id, "type": "number"}})

    result = world.run()

    assert result.status == "partial", result.error
    assert sandbox.field_values(account, good[0].email) == {"Puan": "120"}
    assert sandbox.field_values(account, good[1].email) == {"Puan": "12.5"}
    assert _open_rejects(world)[good[2].id] == "field loyalty_points: 'çok' is not a number"
    assert good[2].email.lower() not in world.harness.members()

    _set(world, good[0].id, "130")   # a changed value is a change to push
    _set(world, good[2].id, "7")     # the CRM fixed it: pushed, the reject resolved
    world.harness.reset_log()
    result = world.run()
    assert result.status == "succeeded_with_rejects", result.error   # the sample CRM's mistyped e-mails
    assert sandbox.field_values(account, good[0].email) == {"Puan": "130"}
    assert sandbox.field_values(account, good[2].email) == {"Puan": "7"}
    assert good[2].id not in _open_rejects(world)


@pytest.mark.parametrize("harness", [PostacellHarness], indirect=True, ids=["postacell"])
def test_a_mapped_column_the_crm_does_not_have_stops_the_run_before_anything_is_sent(world: World) -> None:
    _map(world, "postacell", {"loyalty_tier": "f1"})
    world.harness.reset_log()
    result = world.run()
    assert result.status == "failed"
    assert "loyalty_tier" in (result.error or "") and "does not have" in (result.error or "")
    assert world.harness.write_requests() == 0


@pytest.mark.parametrize("harness", [EuromsgHarness], indirect=True, ids=["euromsg"])
def test_a_mapping_on_a_provider_without_custom_fields_is_refused(world: World) -> None:
    _add_column(world, {})
    _map(world, "euromsg", {COLUMN: "points"})
    world.harness.reset_log()
    result = world.run()
    assert result.status == "failed"
    assert "has no custom fields" in (result.error or "")
    assert world.harness.write_requests() == 0


@pytest.mark.parametrize("harness", [PostatrHarness], indirect=True, ids=["postatr"])
def test_a_mapped_column_reaches_postatr_as_my_columns(world: World) -> None:
    good = sorted(world.valid_active_members().values(), key=lambda r: r.id)[:2]
    _add_column(world, {good[0].id: "evet", good[1].id: None})
    _map(world, "postatr", {COLUMN: {"field": "uyekodu", "type": "boolean"}})

    assert world.run().status == "partial"

    account = world.harness.credentials["username"]
    sandbox = world.harness.sandbox  # type: ignore[attr-defined]
    # Phone and city go under the contract's names by default (docs/providers/postatr.md).
    contract = [{"phone": row.phone or "", "city": row.city or ""} for row in good]
    assert sandbox.member(account, good[0].id)["MyColumns"] == {"uyekodu": "1", **contract[0]}
    assert sandbox.member(account, good[1].id)["MyColumns"] == contract[1]   # empty, not required: left out
