"""The daemon: jobs follow the connections; a job is a real sync; SIGTERM stops it cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]

from sync import db, registry
from sync.config import CrmSource, Secret, Settings
from sync.crm import create_reference_schema
from sync.crypto import Vault, generate_key
from sync.models import SyncRun
from sync.sample import seed_crm
from sync.sandbox import PostacellSandbox, serve_in_thread
from sync.scheduler import SyncDaemon, run_connection_job, sd_notify


def _settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, master_keys=(Secret(generate_key()),), default_schedule="30 2 * * *")


def _connect(engine: sa.Engine, settings: Settings, tenant: str, base_url: str = "http://127.0.0.1:9/api/v1/",
             schedule: str | None = None, password: str = "pw-123456") -> int:
    with db.transaction(db.session_factory(engine)) as session:
        registry.add_tenant(session, tenant)
        return registry.add_connection(session, Vault(settings.master_keys), tenant, "postacell",
                                       {"username": f"{tenant}-api", "password": password}, base_url=base_url,
                                       schedule=schedule, settings={"rate_per_s": 0}).id


def test_jobs_follow_the_enabled_connections_and_their_schedules(engine: sa.Engine, db_url: str) -> None:
    settings = _settings(db_url)
    first = _connect(engine, settings, "acme")
    second = _connect(engine, settings, "anadolu", schedule="0 */6 * * *")
    scheduler = BackgroundScheduler(timezone=settings.timezone)
    scheduler.start(paused=True)       # jobs live in the job store, nothing fires
    daemon = SyncDaemon(settings, engine, engine, scheduler=scheduler)
    assert daemon.refresh_jobs() == {"added": 2, "rescheduled": 0, "removed": 0}
    jobs = {job.id: job for job in daemon.scheduler.get_jobs()}
    assert set(jobs) == {f"connection-{first}", f"connection-{second}"}
    job = jobs[f"connection-{first}"]
    assert (job.max_instances, job.coalesce, job.misfire_grace_time) == (1, True, settings.misfire_grace_seconds)
    assert "hour='2'" in str(job.trigger) and "minute='30'" in str(job.trigger)
    assert "hour='*/6'" in str(jobs[f"connection-{second}"].trigger)
    assert daemon.refresh_jobs() == {"added": 0, "rescheduled": 0, "removed": 0}   # idempotent
    with db.transaction(db.session_factory(engine)) as session:
        registry.update_connection(session, "acme", "postacell", schedule="15 3 * * 1")
        registry.update_connection(session, "anadolu", "postacell", enabled=False)
    assert daemon.refresh_jobs() == {"added": 0, "rescheduled": 1, "removed": 1}
    assert "day_of_week='1'" in str(daemon.scheduler.get_job(f"connection-{first}").trigger)
    scheduler.shutdown(wait=False)


def test_a_scheduled_job_is_a_real_sync(engine: sa.Engine, db_url: str) -> None:
    settings = _settings(db_url)
    seed_crm(engine, CrmSource(), ["acme"], 40, seed=2)
    sandbox = PostacellSandbox({"acme-api": "pw-123456"})
    with serve_in_thread(sandbox.app) as url:
        connection_id = _connect(engine, settings, "acme", base_url=f"{url}/api/v1/")
        result = run_connection_job(settings, engine, engine, connection_id)
    assert result.status in ("succeeded", "partial"), result.error
    assert len(sandbox.subscribers("acme-api")) == result.counts["members_added"] > 30


def test_sd_notify_speaks_to_systemd_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert sd_notify("READY=1")
        assert listener.recv(64) == b"READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not sd_notify("READY=1")


def test_daemon_process_syncs_then_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    """`crm-esp-sync run --run-now` as systemd would run it: a sync happens, SIGTERM exits 0."""
    database = f"sqlite:///{tmp_path / 'daemon.db'}"
    settings = _settings(database)
    engine = db.create_engine(database)
    db.upgrade(engine)
    create_reference_schema(engine, CrmSource())
    seed_crm(engine, CrmSource(), ["acme"], 30, seed=4)
    sandbox = PostacellSandbox({"acme-api": "pw-123456"})
    with serve_in_thread(sandbox.app) as url:
        _connect(engine, settings, "acme", base_url=f"{url}/api/v1/")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_ESP_SYNC_")} | {
            "CRM_ESP_SYNC_DATABASE_URL": database, "CRM_ESP_SYNC_LOG_FORMAT": "json",
            "CRM_ESP_SYNC_MASTER_KEY": settings.master_keys[0].reveal()}
        process = subprocess.Popen([sys.executable, "-m", "sync", "run", "--run-now"], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while True:
                with engine.connect() as conn:
                    if conn.scalar(sa.select(sa.func.count()).select_from(SyncRun)
                                   .where(SyncRun.finished_at.is_not(None))):
                        break
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "no run finished"
                time.sleep(0.3)
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
    events = [json.loads(line)["event"] for line in err.splitlines() if line.startswith("{")]
    assert process.returncode == 0, err
    assert "scheduler.started" in events and "run.finished" in events and events[-1] == "scheduler.stopped"
    assert "pw-123456" not in err
    engine.dispose()
