"""Issue 6, items 12 and 13: leases decided by the database's clock, short and kept alive by a
heartbeat; a run that lost its lease sends nothing more; a blocked `once` fails and says by whom;
a crashed run's row is closed when its connection is taken over. On all three databases."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import structlog.testing

from sync import db, registry
from sync.config import CrmSource, Secret, Settings
from sync.crypto import Vault, generate_key
from sync.engine.connection_sync import RunOptions
from sync.engine.runner import RunResult, run_connection
from sync.engine.state import LeaseKeeper, acquire_lease, db_now
from sync.errors import LeaseHeldError, LeaseLostError
from sync.http import HttpPolicy
from sync.models import Connection, SyncRun
from sync.sample import seed_crm
from sync.sandbox import PostacellSandbox, sandbox_transport
from tests.cli_runner import run_cli

FAST = HttpPolicy(backoff_base_s=0.001, backoff_max_s=0.01, max_attempts=8)
PASSWORD = "pw-Lease-123"
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class LeaseWorld:
    engine: sa.Engine
    settings: Settings
    sandbox: PostacellSandbox
    connection_id: int

    def run(self, transport: httpx.AsyncBaseTransport | None = None, **options: Any) -> RunResult:
        return asyncio.run(run_connection(
            self.settings, self.engine, self.engine, self.connection_id, RunOptions(**options),
            transport_factory=lambda _: transport or sandbox_transport(self.sandbox.app), http_policy=FAST))

    def set_lease(self, owner: str | None, seconds_from_now: float | None) -> None:
        sessions = db.session_factory(self.engine)
        with sessions.begin() as session:
            expires = None if seconds_from_now is None else db_now(session) + dt.timedelta(seconds=seconds_from_now)
            session.execute(sa.update(Connection).where(Connection.id == self.connection_id)
                            .values(lease_owner=owner, lease_expires_at=expires))

    def lease(self) -> tuple[str | None, dt.datetime | None]:
        with db.session_factory(self.engine)() as session:
            row = session.execute(sa.select(Connection.lease_owner, Connection.lease_expires_at)
                                  .where(Connection.id == self.connection_id)).one()
            return row.lease_owner, row.lease_expires_at

    def runs(self) -> dict[str, SyncRun]:
        with db.session_factory(self.engine)() as session:
            return {run.run_uid: run for run in session.scalars(sa.select(SyncRun))}


def make_world(engine: sa.Engine, db_url: str, sandbox: PostacellSandbox | None = None) -> LeaseWorld:
    """A sample CRM of 60 members and one Postacell connection to an in-process sandbox."""
    settings = Settings(database_url=db_url, master_keys=(Secret(generate_key()),), worker_id="test-host:1")
    seed_crm(engine, CrmSource(), ["acme"], 60, seed=7)
    with db.transaction(db.session_factory(engine)) as session:
        registry.add_tenant(session, "acme")
        connection = registry.add_connection(session, Vault(settings.master_keys), "acme", "postacell",
                                             {"username": "acme-api", "password": PASSWORD},
                                             settings={"rate_per_s": 0}, base_url="http://sandbox/api/v1/")
    sandbox = sandbox or PostacellSandbox({"acme-api": PASSWORD}, job_polls_until_done=0)
    return LeaseWorld(engine, settings, sandbox, connection.id)


@pytest.fixture
def world(engine: sa.Engine, db_url: str) -> Iterator[LeaseWorld]:
    yield make_world(engine, db_url)


def _skewed(offset: dt.timedelta) -> Callable[[], dt.datetime]:
    return lambda: dt.datetime.now(dt.UTC) + offset


# --- 12: the database clock decides --------------------------------------------------------------


def test_a_worker_whose_clock_runs_ahead_cannot_take_a_live_lease(world: LeaseWorld,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    sessions = db.session_factory(world.engine)
    with sessions() as session:
        acquire_lease(session, world.connection_id, "worker-a", 60)
    monkeypatch.setattr("sync.engine.state.utcnow", _skewed(dt.timedelta(minutes=10)), raising=False)
    with sessions() as session, pytest.raises(LeaseHeldError, match="worker-a"):
        acquire_lease(session, world.connection_id, "worker-b", 60)
    assert world.lease()[0] == "worker-a"


def test_a_worker_whose_clock_runs_behind_still_gets_a_full_lease(world: LeaseWorld,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    sessions = db.session_factory(world.engine)
    monkeypatch.setattr("sync.engine.state.utcnow", _skewed(dt.timedelta(minutes=-10)), raising=False)
    with sessions() as session:
        acquire_lease(session, world.connection_id, "worker-a", 60)
    monkeypatch.undo()
    with sessions() as session, pytest.raises(LeaseHeldError, match="worker-a"):
        acquire_lease(session, world.connection_id, "worker-b", 60)


# --- 12: a lost lease stops writes and is recorded as such ---------------------------------------


def test_a_run_that_lost_its_lease_stops_before_its_next_provider_write(world: LeaseWorld) -> None:
    """Another worker takes the connection while our run is importing members: not one more write."""
    inner = sandbox_transport(world.sandbox.app)
    after_theft: list[str] = []
    stolen = False

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal stolen
        if stolen and request.method in WRITES:
            after_theft.append(f"{request.method} {request.url.path}")
        response = await inner.handle_async_request(request)
        await response.aread()
        if not stolen and request.method == "POST" and request.url.path.endswith("/subscribers/json"):
            world.set_lease("thief-host:9/deadbeef", 600)     # e.g. our heartbeat stalled past expiry
            stolen = True
        return httpx.Response(response.status_code, headers=response.headers, content=response.content)

    result = world.run(httpx.MockTransport(handler))
    assert stolen
    assert after_theft == []
    assert result.status == "lost_lease", result.error
    assert result.error is not None and "thief-host:9/deadbeef" in result.error
    assert world.runs()[result.run_uid].status == "lost_lease"
    assert world.lease()[0] == "thief-host:9/deadbeef"          # ours to keep: nothing released


def test_the_heartbeat_survives_a_database_error(world: LeaseWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    sessions = db.session_factory(world.engine)
    beats = 0

    async def beat_now(_: float) -> None:
        nonlocal beats
        beats += 1
        await asyncio.sleep(0)

    keeper = LeaseKeeper(sessions, world.connection_id, "slow-run", 60, sleep=beat_now)
    keeper.acquire()
    world.set_lease("slow-run", 5)             # nearly expired: only a renewal keeps it
    real_renew = keeper.renew
    calls = 0

    def flaky_renew() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise sa.exc.OperationalError("UPDATE connections", {}, Exception("server closed the connection"))
        real_renew()

    monkeypatch.setattr(keeper, "renew", flaky_renew)

    async def main() -> None:
        task = asyncio.create_task(keeper.heartbeat())
        while calls < 2:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with structlog.testing.capture_logs() as logs:
        asyncio.run(main())
    assert any(entry["event"] == "lease.renew_failed" and entry["log_level"] == "warning" for entry in logs)
    assert keeper.lost is None
    owner, expires = world.lease()
    with sessions() as session:
        assert owner == "slow-run" and expires is not None
        assert expires > db_now(session) + dt.timedelta(seconds=30)
    asyncio.run(keeper.guard())                # still ours: writes may go on


def test_the_write_guard_stops_a_run_whose_lease_was_taken(world: LeaseWorld) -> None:
    keeper = LeaseKeeper(db.session_factory(world.engine), world.connection_id, "run-a", 60)
    keeper.acquire()
    asyncio.run(keeper.guard())
    world.set_lease("run-b", 60)
    with pytest.raises(LeaseLostError, match="run-b"):
        asyncio.run(keeper.guard())
    assert keeper.lost is not None


def test_the_write_guard_renews_a_lapsed_lease_nobody_took(world: LeaseWorld) -> None:
    """A stalled event loop let our lease lapse, but no one took it: it is still safely ours."""
    keeper = LeaseKeeper(db.session_factory(world.engine), world.connection_id, "run-a", 60)
    keeper.acquire()
    world.set_lease("run-a", -5)
    asyncio.run(keeper.guard())
    owner, expires = world.lease()
    with db.session_factory(world.engine)() as session:
        assert owner == "run-a" and expires is not None and expires > db_now(session) + dt.timedelta(seconds=30)


# --- 13: short lease, blocked `once` fails and names the holder, crashed rows closed ---------------


def test_a_dead_workers_lease_is_short_and_taken_over_and_its_run_closed_as_crashed(world: LeaseWorld) -> None:
    assert Settings().lease_seconds == 60
    with db.session_factory(world.engine).begin() as session:
        session.add(SyncRun(run_uid="0badc0de-0000-4000-8000-000000000001", connection_id=world.connection_id,
                            kind="sync", status="running", worker="dead-host:4"))
        session.add(SyncRun(run_uid="0badc0de-0000-4000-8000-000000000002", connection_id=world.connection_id,
                            kind="sync", status="running", worker="dead-host:3"))    # killed before its lease
    world.set_lease("dead-host:4/0badc0de", -1)      # its heartbeat stopped a lease length ago
    result = world.run()
    assert result.status in ("succeeded", "partial"), result.error
    runs = world.runs()
    for uid in ("0badc0de-0000-4000-8000-000000000001", "0badc0de-0000-4000-8000-000000000002"):
        assert runs[uid].status == "crashed"
        assert runs[uid].finished_at is not None and runs[uid].error
    assert runs[result.run_uid].status == result.status
    assert world.lease() == (None, None)


def test_a_run_blocked_by_a_live_lease_is_blocked_and_names_the_holder_and_expiry(world: LeaseWorld) -> None:
    world.set_lease("other-host:7/0123abcd", 45)
    expires = world.lease()[1]
    assert expires is not None
    result = world.run()
    assert result.status == "blocked"
    assert result.error is not None and "other-host:7/0123abcd" in result.error
    assert expires.strftime("%Y-%m-%d %H:%M:%S") in result.error
    assert world.runs()[result.run_uid].status == "blocked"
    assert world.sandbox.request_log == []
    assert world.lease() == ("other-host:7/0123abcd", expires)


def test_once_blocked_by_a_live_lease_exits_non_zero(world: LeaseWorld, db_url: str,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    world.set_lease("other-host:7/0123abcd", 45)
    env = {"CRM_ESP_SYNC_DATABASE_URL": db_url, "CRM_ESP_SYNC_MASTER_KEY": world.settings.master_keys[0].reveal()}
    result = run_cli(monkeypatch, capsys, env, "once")
    assert result.code != 0
    said = " ".join((result.out + result.err).split())      # rich may wrap the line
    assert "acme/postacell: blocked: connection" in said and "by other-host:7/0123abcd until" in said
