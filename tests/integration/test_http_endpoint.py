"""The daemon's opt-in HTTP endpoint: /healthz says whether the loop turns and the database
answers; /metrics reads outcomes, last successes and open rejects from the database."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import sqlalchemy as sa
from prometheus_client.utils import floatToGoString

from sync import db, registry
from sync.config import CrmSource, Secret, Settings
from sync.crm import create_reference_schema
from sync.crypto import Vault, generate_key
from sync.daemon_state import DaemonState
from sync.models import Reject, SyncRun
from sync.sample import seed_crm
from sync.sandbox import PostacellSandbox, serve_in_thread
from sync.web import HttpEndpoint


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:  # noqa: S310  (our own loopback endpoint)
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _connection(engine: sa.Engine, tenant: str, base_url: str = "http://127.0.0.1:9/api/v1/",
                password: str = "pw-123456") -> int:
    with db.transaction(db.session_factory(engine)) as session:
        registry.add_tenant(session, tenant)
        return registry.add_connection(session, Vault((Secret(generate_key()),)), tenant, "postacell",
                                       {"username": f"{tenant}-api", "password": password},
                                       base_url=base_url, settings={"rate_per_s": 0}).id


def test_metrics_and_health_read_every_backend(engine: sa.Engine) -> None:
    """The scrape's queries work on SQLite, PostgreSQL and MariaDB; a stale loop is unhealthy."""
    acme, anadolu = _connection(engine, "acme"), _connection(engine, "anadolu")
    finished = dt.datetime(2026, 11, 30, 23, 45, tzinfo=dt.UTC)
    with engine.begin() as conn:
        for uid, cid, status in (("r1", acme, "partial"), ("r2", acme, "succeeded_with_rejects"),
                                 ("r3", anadolu, "failed"), ("r4", anadolu, "crashed")):
            conn.execute(sa.insert(SyncRun).values(run_uid=uid, connection_id=cid, kind="sync", status=status,
                                                   worker="w", counts={}, timings={}, started_at=finished,
                                                   finished_at=finished))
        conn.execute(sa.insert(Reject).values(connection_id=acme, crm_member_id="M1", crm_list_id="",
                                              reason="invalid e-mail address", provider_code="validation",
                                              attempts=1, first_seen_at=finished, last_seen_at=finished))
    state = DaemonState()
    endpoint = HttpEndpoint("127.0.0.1:0", engine, state, lambda: True).start()
    try:
        code, body = _get(f"{endpoint.url}/healthz")
        assert code == 503 and json.loads(body)["last_tick_age_seconds"] is None     # the loop never ticked
        state.last_tick_monotonic = time.monotonic()
        code, body = _get(f"{endpoint.url}/healthz")
        assert code == 200, body
        assert json.loads(body) == {"status": "ok", "scheduler_running": True, "database": "ok",
                                    "last_tick_age_seconds": json.loads(body)["last_tick_age_seconds"]}
        code, metrics = _get(f"{endpoint.url}/metrics")
        assert code == 200
        assert 'crm_esp_sync_runs_total{provider="postacell",status="partial"} 1.0' in metrics
        assert 'crm_esp_sync_runs_total{provider="postacell",status="failed"} 1.0' in metrics
        assert "crm_esp_sync_lease_takeovers_total 1.0" in metrics
        assert 'crm_esp_sync_open_rejects{provider="postacell",tenant="acme"} 1.0' in metrics
        assert 'crm_esp_sync_open_rejects{provider="postacell",tenant="anadolu"} 0.0' in metrics
        assert (f'crm_esp_sync_last_success_timestamp_seconds{{provider="postacell",tenant="acme"}} '
                f'{floatToGoString(finished.timestamp())}') in metrics
        assert 'tenant="anadolu"' not in metrics.split("crm_esp_sync_last_success_timestamp_seconds")[-1] \
            .split("# HELP")[0]                                            # a failed run is no success
        assert "crm_esp_sync_database_up 1.0" in metrics
        assert _get(f"{endpoint.url}/nothing")[0] == 404
    finally:
        endpoint.close()


def test_health_is_503_when_the_database_does_not_answer(tmp_path: Path) -> None:
    unreachable = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:9/none")   # nothing listens there
    state = DaemonState(last_tick_monotonic=time.monotonic())
    endpoint = HttpEndpoint("127.0.0.1:0", unreachable, state, lambda: True).start()
    try:
        code, body = _get(f"{endpoint.url}/healthz")
        assert code == 503 and json.loads(body)["database"].startswith("error: ")
        code, metrics = _get(f"{endpoint.url}/metrics")
        assert code == 200 and "crm_esp_sync_database_up 0.0" in metrics
    finally:
        endpoint.close()
        unreachable.dispose()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_daemon_serves_health_and_metrics_and_pings_the_watchdog(tmp_path: Path) -> None:
    """`run` with HTTP_ADDRESS and a systemd watchdog: a sync, then /healthz 200, the status page,
    /metrics with the run, WATCHDOG=1 and STATUS= on the notify socket, and SIGTERM still exits 0."""
    database = f"sqlite:///{tmp_path / 'daemon.db'}"
    settings = Settings(database_url=database, master_keys=(Secret(generate_key()),))
    engine = db.create_engine(database)
    db.upgrade(engine)
    create_reference_schema(engine, CrmSource())
    seed_crm(engine, CrmSource(), ["acme"], 30, seed=4)
    sandbox = PostacellSandbox({"acme-api": "pw-123456"})
    port = _free_port()
    notify_path = str(tmp_path / "notify.sock")
    with serve_in_thread(sandbox.app) as url, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(notify_path)
        notify.settimeout(60)
        with db.transaction(db.session_factory(engine)) as session:
            registry.add_tenant(session, "acme")
            registry.add_connection(session, Vault(settings.master_keys), "acme", "postacell",
                                    {"username": "acme-api", "password": "pw-123456"}, base_url=f"{url}/api/v1/",
                                    settings={"rate_per_s": 0})
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_ESP_SYNC_")} | {
            "CRM_ESP_SYNC_DATABASE_URL": database, "CRM_ESP_SYNC_LOG_FORMAT": "json",
            "CRM_ESP_SYNC_MASTER_KEY": settings.master_keys[0].reveal(),
            "CRM_ESP_SYNC_HTTP_ADDRESS": f"127.0.0.1:{port}",
            "NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "2000000"}
        process = subprocess.Popen([sys.executable, "-m", "sync", "run", "--run-now"], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            messages: list[str] = []
            while not any(m.startswith("READY=1") for m in messages):
                messages.append(notify.recv(4096).decode())
            deadline = time.monotonic() + 60
            while True:
                with engine.connect() as conn:
                    if conn.scalar(sa.select(sa.func.count()).select_from(SyncRun)
                                   .where(SyncRun.finished_at.is_not(None))):
                        break
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "no run finished"
                time.sleep(0.3)
            while sum(m.startswith("WATCHDOG=1") for m in messages) < 2:     # pinged every second
                messages.append(notify.recv(4096).decode())
            code, body = _get(f"http://127.0.0.1:{port}/healthz")
            assert code == 200, body
            code, page = _get(f"http://127.0.0.1:{port}/")              # the status page, same server
            assert code == 200 and 'id="nightly-chart"' in page and "<strong>acme</strong>" in page
            deadline = time.monotonic() + 60
            while True:       # the job's result event may come a moment after its row is written
                code, metrics = _get(f"http://127.0.0.1:{port}/metrics")
                if 'crm_esp_sync_process_runs_total{provider="postacell",status="partial"} 1.0' in metrics:
                    break
                assert time.monotonic() < deadline, metrics
                time.sleep(0.3)
            assert 'crm_esp_sync_runs_total{provider="postacell",status="partial"} 1.0' in metrics
            assert 'crm_esp_sync_rows_total{direction="pushed",provider="postacell"}' in metrics
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=60)
            while not any(m.startswith("STOPPING=1") for m in messages):
                messages.append(notify.recv(4096).decode())
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    with engine.connect() as conn:
        counts = conn.scalar(sa.select(SyncRun.counts).where(SyncRun.finished_at.is_not(None)).limit(1))
    engine.dispose()
    assert process.returncode == 0, err
    assert counts["http_requests"] > 0                                   # stored with the run, for `status`
    status_lines = [line for m in messages for line in m.splitlines() if line.startswith("STATUS=")]
    assert any("scheduled" in line for line in status_lines), messages
    assert "pw-123456" not in err
