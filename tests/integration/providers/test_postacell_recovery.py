"""Postacell after a crash in a first sync: unconfirmed contacts are looked up, compared, and written
only where the provider differs (sync/providers/postacell/client.py, ``_recover``).

A first sync commits its links once per push window (50,000 members), so a crash anywhere in a
smaller first sync leaves every link it wrote provisional (no remote id, no hash), whatever the
provider applied. ``crash_after`` builds that state: a first sync whose requests all reached the
sandbox, then every member link put back as the crash left it, and the watermarks gone; or a first
sync stopped for real at its Nth bulk import (its accepted jobs completed, as the service does).
Each test then runs the recovering run against the sandbox through the HTTP transport, as the
shared suite does, and counts its requests.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from sync.models import MemberLink, Watermark
from tests.integration.providers.conftest import World, make_world
from tests.integration.providers.harness import Harness, PostacellHarness
from tests.integration.providers.test_custom_fields import COLUMN, _add_column, _map
from tests.integration.providers.test_provider_suite import assert_mirrors_crm

pytestmark = pytest.mark.parametrize("harness", [PostacellHarness], indirect=True, ids=["postacell"])

ACCOUNT = PostacellHarness.credentials["username"]


class Crash(Exception):
    """The process dies here (raised in a request's path: the run stops as a killed one would)."""


def crash_after(world: World, bulk_imports: int | None = None) -> None:
    """A first sync, and the state its crash leaves: with ``bulk_imports``, the run stops when it
    sends the bulk import after that many (the jobs it had sent are completed, as the service does);
    without, every request reached the provider. Either way, every member link is provisional and
    no watermark was written (the commit after the push never came)."""
    if bulk_imports is None:
        result = world.run()
        assert result.status in ("succeeded_with_rejects", "partial"), result.error
    else:
        sent = 0

        def hook(request: httpx.Request) -> None:
            nonlocal sent
            if request.method == "POST" and request.url.path.endswith("/subscribers/json"):
                if sent == bulk_imports:
                    raise Crash
                sent += 1

        result = world.run(hook=hook)
        assert result.status == "failed", result.status
        sandbox(world).process_pending_jobs()
    with world.engine.begin() as conn:
        conn.execute(sa.update(MemberLink).values(remote_id=None, payload_hash="", remote_lists=[],
                                                  status_pushed=None, source_digest=None))
        conn.execute(sa.delete(Watermark))


def sandbox(world: World) -> Any:
    return world.harness.sandbox  # type: ignore[attr-defined]


def requests(world: World) -> Counter[str]:
    """The run's requests by method and endpoint (subscriber and job ids folded)."""
    shapes: Counter[str] = Counter()
    for method, path, _ in sandbox(world).request_log:
        parts = path.split("/api/v1/", 1)[-1].strip("/").split("/")
        shapes[f"{method} {'/'.join('{id}' if len(p) >= 20 or p.isdigit() else p for p in parts)}"] += 1
    return shapes


def imported(world: World) -> set[str]:
    """The addresses the run sent in bulk imports (a create with several lists may ride in
    one request per list)."""
    return {row["email"] for acc in sandbox(world)._accounts.values() for job in acc.jobs.values()
            for row in job.rows}


def reset(world: World) -> None:
    """Before the measured run: an empty request log, and no bulk job kept from earlier runs."""
    world.harness.reset_log()
    for acc in sandbox(world)._accounts.values():
        acc.jobs.clear()


def remove_at_provider(world: World, email: str) -> None:
    """The contact is gone at the provider (the crash came before its create)."""
    acc = sandbox(world)._accounts[ACCOUNT]
    sub = acc.subscriber_by_email(email)
    acc.changing(sub)
    acc.remove(sub)
    acc.touch(sub)


def links_confirmed(world: World) -> None:
    """Every member link has the provider's id and the hash of what it holds."""
    with world.engine.connect() as conn:
        rows = conn.execute(sa.select(MemberLink.email, MemberLink.remote_id, MemberLink.payload_hash)).all()
    assert rows
    assert [row.email for row in rows if not row.remote_id or not row.payload_hash] == []
    for row in rows:
        assert sandbox(world).find_subscriber(ACCOUNT, row.email)["id"] == row.remote_id, row.email


def test_after_a_fully_applied_first_sync_the_recovering_run_writes_nothing(world: World) -> None:
    crash_after(world)
    held = len(world.harness.members())
    reset(world)
    result = world.run()
    assert result.status in ("succeeded_with_rejects", "partial"), result.error
    assert world.harness.write_requests() == 0, requests(world)
    assert result.counts["members_confirmed"] == held
    assert result.counts.get("members_added", 0) == 0
    assert requests(world)["GET email/subscribers/{id}"] == held        # each one read back once
    links_confirmed(world)
    assert_mirrors_crm(world)
    world.harness.reset_log()
    world.run()
    assert world.harness.write_requests() == 0


def test_after_a_partly_applied_first_sync_only_the_missing_contacts_are_written(world: World) -> None:
    crash_after(world, bulk_imports=2)
    before = world.harness.members()
    held = set(before)
    crm = world.valid_active_members()
    expected = set(crm)
    names = world.list_names()
    missing = expected - held
    # (a create rides in one bulk import per list when that takes fewer requests: the crash may
    # have cut a contact off its later lists)
    incomplete = {email for email in expected & held
                  if not {names[list_id] for list_id in world.lists_of(crm[email].id)} <= before[email].lists}
    assert held and missing, (len(held), len(missing))
    reset(world)
    result = world.run()
    assert result.status in ("succeeded_with_rejects", "partial"), result.error
    shapes = requests(world)
    assert shapes["PATCH email/subscribers/{id}"] == 0, shapes
    assert imported(world) == missing | incomplete        # only what the crash cut off
    assert world.harness.write_requests() == shapes["POST email/subscribers/json"]
    assert result.counts["members_confirmed"] == len((held & expected) - incomplete)
    assert result.counts["members_added"] == len(missing | incomplete)     # created, or completed
    links_confirmed(world)
    assert_mirrors_crm(world)
    world.harness.reset_log()
    world.run()
    assert world.harness.write_requests() == 0


def test_a_contact_unsubscribed_at_the_provider_during_the_recovery_stays_unsubscribed(world: World) -> None:
    """The unsubscribe lands after the run's status pull, right before its lookup: the read-back
    sees it, and nothing is written for that contact (nor for anyone else)."""
    crash_after(world)
    emails = sorted(world.valid_active_members())
    late, early = emails[3], emails[4]
    world.harness.unsubscribe(early)               # between the crash and the recovery

    def hook(request: httpx.Request) -> None:
        lookup = "/counter/list/" in request.url.path or "lists=" in str(request.url)
        if lookup and world.harness.members()[late].status == "active":
            world.harness.unsubscribe(late)

    reset(world)
    result = world.run(hook=hook)
    assert result.status in ("succeeded_with_rejects", "partial"), result.error
    assert world.harness.members()[late].status == "unsubscribed"
    assert world.harness.members()[early].status == "unsubscribed"
    assert world.harness.write_requests() == 0, requests(world)
    world.harness.reset_log()
    world.run()
    assert world.harness.members()[late].status == "unsubscribed"
    assert world.harness.members()[early].status == "unsubscribed"
    assert world.harness.write_requests() == 0


def test_a_contact_changed_in_the_crm_in_between_is_updated_once(world: World) -> None:
    crash_after(world)
    email = sorted(world.valid_active_members())[5]
    member = world.valid_active_members()[email]
    world.update_member(member.id, first_name="Değişti")
    reset(world)
    result = world.run()
    assert result.status in ("succeeded_with_rejects", "partial"), result.error
    assert imported(world) == {email}
    assert world.harness.write_requests() == 1, requests(world)     # one bulk import, with update: true
    assert sandbox(world).find_subscriber(ACCOUNT, email)["first_name"] == "Değişti"
    assert result.counts["members_confirmed"] == len(world.harness.members()) - 1
    links_confirmed(world)
    world.harness.reset_log()
    world.run()
    assert world.harness.write_requests() == 0


def test_a_soft_bounce_and_a_panel_list_the_provider_holds_are_kept(world: World) -> None:
    """What only the provider knows is not ours to overwrite: a soft bounce stays, a list made in
    its panel stays; neither is a difference to write."""
    crash_after(world)
    emails = sorted(world.valid_active_members())
    world.harness.soft_bounce(emails[6])
    panel = sandbox(world).create_list(ACCOUNT, "Panelde yapılan")
    acc = sandbox(world)._accounts[ACCOUNT]
    acc.subscriber_by_email(emails[7]).lists.append(panel)
    acc.touch()
    reset(world)
    result = world.run()
    assert world.harness.write_requests() == 0, requests(world)
    assert result.counts["members_confirmed"] == len(world.harness.members())
    assert sandbox(world).find_subscriber(ACCOUNT, emails[6])["status"] == "soft_bounce"
    assert "Panelde yapılan" in world.harness.members()[emails[7]].lists


def test_a_few_unconfirmed_contacts_are_searched_by_email_not_by_paging_the_lists(engine: sa.Engine,
                                                                                  harness: Harness) -> None:
    """Two provisional links among 400 members: two e-mail searches are cheaper than paging a list
    of a few hundred, and one of the two contacts is missing and created."""
    world = make_world(engine, harness, members=400)
    world.run()
    emails = sorted(world.valid_active_members())
    held, gone = emails[8], emails[9]
    ids = [world.valid_active_members()[email].id for email in (held, gone)]
    with world.engine.begin() as conn:
        conn.execute(sa.update(MemberLink).where(MemberLink.crm_member_id.in_(ids)).values(
            remote_id=None, payload_hash="", remote_lists=[], status_pushed=None, source_digest=None))
    remove_at_provider(world, gone)
    for member_id in ids:
        world.update_member(member_id)                 # so the incremental run reads them again
    reset(world)
    seen: list[str] = []
    result = world.run(hook=lambda request: seen.append(str(request.url)))
    assert result.counts["members_confirmed"] == 1 and result.counts["members_added"] == 1
    assert imported(world) == {gone}
    assert [url for url in seen if "lists=" in url] == []       # no list paged (its counter may be read)
    assert sum("email=" in url for url in seen) >= 2
    assert world.harness.write_requests() == 1
    links_confirmed(world)
    assert_mirrors_crm(world)


def test_a_mapped_custom_field_is_compared_with_the_value_read_back(world: World) -> None:
    field_id = sandbox(world).create_field(ACCOUNT, "Puan", "number")
    rows = sorted(world.valid_active_members().values(), key=lambda r: r.id)[:2]
    _add_column(world, {rows[0].id: "120", rows[1].id: "7"})
    _map(world, "postacell", {COLUMN: {"field": field_id, "type": "number"}})
    crash_after(world)
    reset(world)
    result = world.run()
    assert world.harness.write_requests() == 0, requests(world)
    assert result.counts["members_confirmed"] == len(world.harness.members())
