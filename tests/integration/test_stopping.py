"""SIGTERM and Ctrl-C to a real `crm-esp-sync once`/`backfill` process (issue 24, item 3).

What `timeout`, `systemctl stop`, `docker stop` and Ctrl-C send must not behave like SIGKILL: the
run stops at its next safe point, its row is closed as ``interrupted`` (not left ``running`` to be
closed as ``crashed`` an hour later), its lease is released at once (the next run is not
``blocked``), and the command exits 128 + the signal's number. A second signal stops at once,
with the same bookkeeping. Either way nothing is lost or made twice: the next `once` finishes the
work and a `backfill` after it finds nothing to write.

The sandbox answers every API call 0.2 s late, so the run is caught while it works."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from sync import db, registry
from sync.config import CrmSource, Secret
from sync.crypto import Vault, generate_key
from sync.models import Connection, SyncRun
from sync.sample import seed_crm
from sync.sandbox import PostacellSandbox, serve_in_thread
from sync.sandbox.faults import FaultPlan

ACCOUNT, PASSWORD = "stop-api", "stop-Şifre-2026"
#: A generous bound on every wait; nothing asserts on time.
TIMEOUT_SECONDS = 120


@pytest.fixture
def setup(engine: sa.Engine, db_url: str, tmp_path: Path) -> Iterator[tuple[PostacellSandbox, dict[str, str]]]:
    seed_crm(engine, CrmSource(), ["acme"], 400, seed=11)
    key = generate_key()
    sandbox = PostacellSandbox({ACCOUNT: PASSWORD}, faults=FaultPlan(latency_s=0.2), job_polls_until_done=2)
    with serve_in_thread(sandbox.app) as url:
        with db.transaction(db.session_factory(engine)) as session:
            registry.add_tenant(session, "acme")
            registry.add_connection(session, Vault((Secret(key),)), "acme", "postacell",
                                    {"username": ACCOUNT, "password": PASSWORD},
                                    base_url=f"{url}/api/v1/", settings={"rate_per_s": 0})
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_ESP_SYNC_")} | {
            "CRM_ESP_SYNC_DATABASE_URL": db_url, "CRM_ESP_SYNC_MASTER_KEY": key,
            "CRM_ESP_SYNC_LOG_FORMAT": "json"}
        yield sandbox, env


def _runs(engine: sa.Engine) -> list[SyncRun]:
    with db.session_factory(engine)() as session:
        return list(session.scalars(sa.select(SyncRun).order_by(SyncRun.id)))


def _lease(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return conn.scalar(sa.select(Connection.lease_owner))


def _start(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "sync", command], env=env, stdout=out, stderr=out, text=True)


def _wait_for_writes(sandbox: PostacellSandbox, process: subprocess.Popen[str], log: Path) -> None:
    """Until the run has written to the provider: the signal lands in the middle of the work."""
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while sandbox.write_requests() == 0:
        assert process.poll() is None, f"the run ended before it wrote anything: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, "the run never wrote"
        time.sleep(0.05)


def _finish_and_compare(engine: sa.Engine, sandbox: PostacellSandbox, env: dict[str, str]) -> None:
    """The next `once` finishes the work (not blocked: the lease was released), and a backfill after
    it compares every member with the CRM and finds nothing to write: nothing lost, nothing twice."""
    after = subprocess.run([sys.executable, "-m", "sync", "once"], env=env, capture_output=True, text=True,
                           timeout=TIMEOUT_SECONDS, check=False)
    assert after.returncode in (0, 3), after.stdout + after.stderr
    assert _runs(engine)[-1].status in ("succeeded", "succeeded_with_rejects", "partial")
    emails = [s["email"] for s in sandbox.subscribers(ACCOUNT)]
    assert len(emails) == len(set(emails)) > 300
    sandbox.reset_log()
    compare = subprocess.run([sys.executable, "-m", "sync", "backfill"], env=env, capture_output=True, text=True,
                             timeout=TIMEOUT_SECONDS, check=False)
    assert compare.returncode == 0, compare.stdout + compare.stderr
    assert sandbox.write_requests() == 0


@pytest.mark.parametrize("command", ["once", "backfill"])
def test_sigterm_stops_at_a_safe_point_closes_the_run_and_releases_the_lease(
        engine: sa.Engine, setup: tuple[PostacellSandbox, dict[str, str]], tmp_path: Path, command: str) -> None:
    sandbox, env = setup
    log = tmp_path / "run.log"
    process = _start(command, env, log)
    _wait_for_writes(sandbox, process, log)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=TIMEOUT_SECONDS)
    output = log.read_text()
    assert process.returncode == 128 + signal.SIGTERM, output[-3000:]
    events = [json.loads(line).get("event") for line in output.splitlines() if line.startswith("{")]
    assert "run.stopping" in events and "run.finished" in events
    assert "Traceback" not in output and PASSWORD not in output
    run = _runs(engine)[-1]
    assert run.status == "interrupted" and run.finished_at is not None
    assert run.error is not None and "SIGTERM" in run.error
    assert _lease(engine) is None
    _finish_and_compare(engine, sandbox, env)


def test_a_second_ctrl_c_stops_at_once_and_still_closes_the_run(
        engine: sa.Engine, setup: tuple[PostacellSandbox, dict[str, str]], tmp_path: Path) -> None:
    sandbox, env = setup
    log = tmp_path / "run.log"
    process = _start("once", env, log)
    _wait_for_writes(sandbox, process, log)
    process.send_signal(signal.SIGINT)
    time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=TIMEOUT_SECONDS)
    output = log.read_text()
    assert process.returncode == 128 + signal.SIGINT, output[-3000:]
    assert "Traceback" not in output
    run = _runs(engine)[-1]
    assert run.status == "interrupted" and run.finished_at is not None
    assert run.error == "stopped at once by a second SIGINT"
    assert _lease(engine) is None
    _finish_and_compare(engine, sandbox, env)


#: `once` with a SIGTERM sent to itself just before it prints its report: after its run ended,
#: after the runs' stop handling (the handler stays in place until the report is printed).
_LATE_SIGTERM = """
import os, signal
import sync.cli.runs as runs
report = runs._report
def late(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    report(*args, **kwargs)
runs._report = late
from sync.cli import main
main(["once"])
"""


def test_a_sigterm_after_the_run_still_prints_the_report_and_exits_143(
        engine: sa.Engine, setup: tuple[PostacellSandbox, dict[str, str]]) -> None:
    """A SIGTERM that arrives once the run has ended, while the report is printed (a supervisor's
    stop a moment late), no longer kills the process by the signal's default action with no
    report: the report is printed and the command exits 143. The run did its work and says so."""
    _, env = setup
    done = subprocess.run([sys.executable, "-c", _LATE_SIGTERM], env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_SECONDS, check=False)
    assert done.returncode == 128 + signal.SIGTERM, (done.returncode, done.stdout[-3000:], done.stderr[-3000:])
    run = _runs(engine)[-1]
    assert run.status in ("succeeded", "succeeded_with_rejects", "partial") and run.finished_at is not None
    assert run.status in done.stdout and "postacell" in done.stdout, done.stdout[-3000:]
    assert _lease(engine) is None
