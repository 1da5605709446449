"""Replicas, proven: three real `crm-esp-sync run` processes share one PostgreSQL or MariaDB
database. Every connection runs once per cron tick and never twice at once, and the leases of a
replica killed with SIGKILL mid-run are taken over once they expire.

The schedule is the fastest cron allows (every minute, no jitter) and the lease the shortest the
settings accept (10 s); the sandbox answers every API call 0.3 s late, so a first sync lasts long
enough to be caught holding its lease. The test takes about two minutes per database.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from sync import db, registry
from sync.config import CrmSource, Secret
from sync.crm import create_reference_schema
from sync.crypto import Vault, generate_key
from sync.models import Connection, SyncRun
from sync.ops.status import connection_statuses
from sync.sample import seed_crm
from sync.sandbox import PostacellSandbox, serve_in_thread
from sync.sandbox.faults import FaultPlan
from tests.conftest import ENV, Servers

TENANTS = ("north", "south", "east", "west")
REPLICAS = ("replica-1", "replica-2", "replica-3")
LEASE_SECONDS = 10
#: A generous bound on every wait (the proof itself needs two cron ticks).
TIMEOUT_SECONDS = 240
#: Runs that never did any work: the lease was someone else's, or the tick was run already.
NO_WORK = ("blocked", "skipped")


@pytest.fixture(params=("postgresql", "mariadb"))
def replica_db_url(request: pytest.FixtureRequest, server_urls: Servers) -> Iterator[str]:
    admin_url = server_urls.url(request.param)
    if admin_url is None:
        pytest.skip(f"{request.param}: {ENV[request.param]} is not set and Docker does not answer (testcontainers)")
    with db.scratch_database(admin_url, prefix="rep") as url:
        yield url


def _runs(engine: sa.Engine) -> list[SyncRun]:
    with db.session_factory(engine)() as session:
        return list(session.scalars(sa.select(SyncRun).order_by(SyncRun.started_at, SyncRun.id)))


def _leases(engine: sa.Engine) -> dict[int, str]:
    with engine.connect() as conn:
        return {cid: owner for cid, owner in conn.execute(
            sa.select(Connection.id, Connection.lease_owner).where(Connection.lease_owner.is_not(None)))}


def _wait(what: str, condition: Callable[[], bool], processes: dict[str, subprocess.Popen[str]],
          deadline: float) -> None:
    while not condition():
        for name, process in processes.items():
            assert process.poll() is None or process.returncode == -signal.SIGKILL, f"{name} exited"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _tick(moment: dt.datetime) -> dt.datetime:
    return moment.replace(second=0, microsecond=0)


def test_three_replicas_run_each_connection_once_per_tick_and_take_over_a_killed_ones_leases(
        replica_db_url: str, tmp_path: Path) -> None:
    """Three real daemon processes on one database. It takes 1–2 minutes because the schedule is
    cron, whose finest unit is a minute: it waits for the next whole-minute tick (A), kills the
    replica holding a lease there, and waits for the tick after (B), where the survivors must take
    the expired lease over. Faking the clock would not test the scheduler the daemon really runs."""
    engine = db.create_engine(replica_db_url)
    db.upgrade(engine)
    create_reference_schema(engine, CrmSource())
    seed_crm(engine, CrmSource(), TENANTS, 30, seed=7)
    key = generate_key()
    accounts = {f"{tenant}-api": f"{tenant}-pw-2026" for tenant in TENANTS}
    sandbox = PostacellSandbox(accounts, faults=FaultPlan(latency_s=0.3), job_polls_until_done=2)
    processes: dict[str, subprocess.Popen[str]] = {}
    logs = {name: tmp_path / f"{name}.log" for name in REPLICAS}
    try:
        with serve_in_thread(sandbox.app) as url:
            with db.transaction(db.session_factory(engine)) as session:
                for tenant in TENANTS:
                    registry.add_tenant(session, tenant)
                    registry.add_connection(session, Vault((Secret(key),)), tenant, "postacell",
                                            {"username": f"{tenant}-api", "password": accounts[f"{tenant}-api"]},
                                            base_url=f"{url}/api/v1/", schedule="* * * * *",
                                            settings={"rate_per_s": 0})
            base_env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_ESP_SYNC_")} | {
                "CRM_ESP_SYNC_DATABASE_URL": replica_db_url, "CRM_ESP_SYNC_MASTER_KEY": key,
                "CRM_ESP_SYNC_LOG_FORMAT": "json", "CRM_ESP_SYNC_LEASE_SECONDS": str(LEASE_SECONDS),
                "CRM_ESP_SYNC_JITTER_SECONDS": "0", "CRM_ESP_SYNC_TIMEZONE": "UTC",
                "CRM_ESP_SYNC_WORKERS": str(len(TENANTS))}
            for name in REPLICAS:
                with logs[name].open("w") as log_file:
                    processes[name] = subprocess.Popen(
                        [sys.executable, "-m", "sync", "run"], env=base_env | {"CRM_ESP_SYNC_WORKER_ID": name},
                        stdout=log_file, stderr=log_file, text=True)
            deadline = time.monotonic() + TIMEOUT_SECONDS
            _wait("three schedulers", lambda: all(
                '"scheduler.started"' in logs[n].read_text() for n in REPLICAS), processes, deadline)
            started = dt.datetime.now(dt.UTC)
            tick_a = _tick(started) + dt.timedelta(minutes=1 if started.second < 58 else 2)
            tick_b = tick_a + dt.timedelta(minutes=1)
            print(f"\nthree replicas scheduled; ticks at {tick_a:%H:%M:%S} and {tick_b:%H:%M:%S}")

            # Tick A: kill the replica that holds a lease while its first sync is under way.
            _wait("a lease in tick A", lambda: dt.datetime.now(dt.UTC) >= tick_a and bool(_leases(engine)),
                  processes, deadline)
            victim = next(iter(_leases(engine).values())).split("/")[0]
            processes[victim].send_signal(signal.SIGKILL)
            processes[victim].wait()
            killed_at = dt.datetime.now(dt.UTC)
            held = {cid for cid, owner in _leases(engine).items() if owner.startswith(f"{victim}/")}
            assert held, f"{victim} released its lease just before the kill; no takeover to prove"
            survivors = [n for n in REPLICAS if n != victim]

            # Tick B: the survivors take the dead replica's expired leases over, and every connection runs.
            def tick_b_done() -> bool:
                runs = _runs(engine)
                crashed = {r.connection_id for r in runs if r.status == "crashed" and r.worker == victim}
                done = {r.connection_id for r in runs if r.started_at >= tick_b and r.finished_at is not None
                        and r.status not in NO_WORK}
                return held <= crashed and len(done) == len(TENANTS)

            _wait("tick B's runs and the takeover", tick_b_done, processes, deadline)
            for name in survivors:
                processes[name].send_signal(signal.SIGTERM)
            for name in survivors:
                processes[name].wait(timeout=120)
                assert processes[name].returncode == 0, logs[name].read_text()[-3000:]
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()

    runs = _runs(engine)
    with db.session_factory(engine)() as session:        # the other replicas' blocked rows are not the news
        health = {c["tenant"]: c["health"] for c in connection_statuses(session)["connections"]}
    engine.dispose()
    assert set(health.values()) <= {"ok", "new_rejects"}, health
    assert not [r for r in runs if r.status == "running"], "a run was left running"
    # The killed replica's rows left `running` are closed as `crashed` by whoever takes the lease next:
    # those of the connections whose lease it held did the work; the others were contenders killed
    # before they could record that they found the lease taken.
    contenders = [r for r in runs if r.status == "crashed" and r.connection_id not in held]
    worked: dict[tuple[int | None, dt.datetime], list[SyncRun]] = defaultdict(list)
    for run in runs:
        if run.status not in NO_WORK and run not in contenders:
            worked[(run.connection_id, _tick(run.started_at))].append(run)
    by_connection: dict[int | None, list[SyncRun]] = defaultdict(list)
    for (connection_id, tick), tick_runs in sorted(worked.items(), key=lambda item: (item[0][0] or 0, item[0][1])):
        assert len(tick_runs) == 1, (f"connection {connection_id} ran {len(tick_runs)} times in the tick of "
                                     f"{tick:%H:%M}: {[(r.worker, r.status) for r in tick_runs]}")
        by_connection[connection_id] += tick_runs
    connection_ids = {cid for cid, _ in worked}
    for tick in (tick_a, tick_b):
        assert {cid for cid, t in worked if t == tick} == connection_ids, f"a connection did not run at {tick:%H:%M}"
    for connection_id, ordered in by_connection.items():
        for earlier, later in itertools.pairwise(ordered):
            # A crashed run ended when its worker was killed (its row was closed later, by the taker).
            end = killed_at if earlier.status == "crashed" else earlier.finished_at
            assert end is not None and end <= later.started_at, \
                f"connection {connection_id}: runs {earlier.run_uid} and {later.run_uid} overlap"
    assert all(r.worker == victim for r in runs if r.status == "crashed")
    takeovers = {r.connection_id: r for r in runs if r.status == "crashed" and r.connection_id in held}
    assert set(takeovers) == held
    for connection_id in held:
        taker = worked[(connection_id, tick_b)][0]
        assert taker.worker in survivors and taker.status in ("succeeded", "succeeded_with_rejects", "partial")
        closed_at = takeovers[connection_id].finished_at
        assert closed_at is not None
        print(f"connection {connection_id}: {victim} killed at {killed_at:%H:%M:%S.%f}, lease expired "
              f"{LEASE_SECONDS} s later at most, taken over by {taker.worker} at the next tick after "
              f"{(closed_at - killed_at).total_seconds():.1f} s")
    blocked = sum(r.status == "blocked" for r in runs)
    print(f"{len(runs)} run rows: {sum(len(v) for v in worked.values())} did the work, {blocked} found the lease "
          f"taken (blocked), {len(contenders)} were killed before trying it; "
          f"{math.ceil((runs[-1].started_at - runs[0].started_at).total_seconds())} s of runs")
