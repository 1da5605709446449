"""The daemon: APScheduler 3.x runs every enabled connection on its cron schedule.

The layer is thin on purpose: a job calls :func:`run_connection_job`, the same plain function
the tests call. Jobs are ``max_instances=1`` and ``coalesce=True`` (a sync that is still running
or several missed fire times give ONE run), with an explicit ``misfire_grace_time``. The
connection lease still guards against a second process or replica. Connections added,
disabled or rescheduled with the CLI are picked up every ``refresh_seconds`` without a restart.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
from dataclasses import dataclass
from types import FrameType
from typing import Any

import sqlalchemy as sa
import structlog
from apscheduler.events import EVENT_SCHEDULER_STARTED  # type: ignore[import-untyped]
from apscheduler.executors.pool import ThreadPoolExecutor  # type: ignore[import-untyped]
from apscheduler.schedulers.base import BaseScheduler  # type: ignore[import-untyped]
from apscheduler.schedulers.blocking import BlockingScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]

from sync import db
from sync.config import Settings
from sync.engine.runner import RunResult, run_connection
from sync.errors import ConfigurationError
from sync.models import Connection

log = structlog.get_logger(__name__)
JOB_PREFIX = "connection-"


def run_connection_job(settings: Settings, engine: sa.Engine, crm_engine: sa.Engine, connection_id: int) -> RunResult:
    """What a scheduled job does: one run of one connection, in this worker thread."""
    return asyncio.run(run_connection(settings, engine, crm_engine, connection_id))


def cron_trigger(expression: str, timezone: str) -> Any:
    try:
        return CronTrigger.from_crontab(expression, timezone=timezone)
    except (ValueError, KeyError) as exc:
        raise ConfigurationError(f"schedule {expression!r} (timezone {timezone}) is not valid: {exc}") from None


def sd_notify(message: str) -> bool:
    """Tell systemd (Type=notify) how we are, if it is listening; a no-op elsewhere."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    target = "\0" + address[1:] if address.startswith("@") else address
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(message.encode("utf-8"), target)
    return True


@dataclass
class SyncDaemon:
    settings: Settings
    engine: sa.Engine
    crm_engine: sa.Engine
    scheduler: BaseScheduler | None = None

    def __post_init__(self) -> None:
        if self.scheduler is None:
            self.scheduler = BlockingScheduler(
                timezone=self.settings.timezone,
                executors={"default": ThreadPoolExecutor(max_workers=self.settings.workers)},
            )

    @property
    def _scheduler(self) -> BaseScheduler:
        assert self.scheduler is not None
        return self.scheduler

    def refresh_jobs(self) -> dict[str, int]:
        """Make the jobs match the enabled connections and their schedules."""
        with db.session_factory(self.engine)() as session:
            wanted = {f"{JOB_PREFIX}{cid}": schedule or self.settings.default_schedule
                      for cid, schedule in session.execute(
                          sa.select(Connection.id, Connection.schedule).where(Connection.enabled.is_(True)))}
        changes = {"added": 0, "rescheduled": 0, "removed": 0}
        current = {job.id: job for job in self._scheduler.get_jobs() if job.id.startswith(JOB_PREFIX)}
        for job_id, expression in wanted.items():
            trigger = cron_trigger(expression, self.settings.timezone)
            job = current.get(job_id)
            if job is not None and str(job.trigger) == str(trigger):
                continue
            if job is not None:
                self._scheduler.reschedule_job(job_id, trigger=trigger)
                changes["rescheduled"] += 1
                continue
            self._scheduler.add_job(
                run_connection_job, trigger, id=job_id, name=f"sync {job_id}",
                args=[self.settings, self.engine, self.crm_engine, int(job_id.removeprefix(JOB_PREFIX))],
                max_instances=1, coalesce=True, misfire_grace_time=self.settings.misfire_grace_seconds)
            changes["added"] += 1
        for job_id in set(current) - set(wanted):
            self._scheduler.remove_job(job_id)
            changes["removed"] += 1
        if any(changes.values()):
            log.info("scheduler.jobs_refreshed", jobs=len(wanted), **changes)
        return changes

    def run_all_now(self) -> None:
        """Fire every connection job once now (besides its schedule)."""
        for job in self._scheduler.get_jobs():
            if job.id.startswith(JOB_PREFIX):
                self._scheduler.add_job(job.func, args=job.args, id=f"now-{job.id}", replace_existing=True,
                                        max_instances=1, misfire_grace_time=None)

    def run_forever(self, run_now: bool = False) -> None:
        """Block until SIGTERM/SIGINT; running syncs finish before exit (their leases are released)."""
        self.refresh_jobs()
        self._scheduler.add_job(self.refresh_jobs, "interval", seconds=self.settings.refresh_seconds,
                                id="refresh-jobs", max_instances=1, coalesce=True)
        if run_now:
            self.run_all_now()

        stopping: list[threading.Thread] = []

        def stop(signum: int, _frame: FrameType | None) -> None:
            # The handler interrupts the main thread anywhere, possibly holding a lock that shutdown()
            # or a log line needs (the scheduler's wake-up event, the log stream): stop from a thread.
            if stopping:
                return
            if not self._scheduler.running:          # a signal before start(): nothing runs yet
                raise SystemExit(0)
            stopping.append(threading.Thread(target=self._stop, args=(signal.Signals(signum).name,),
                                             name="scheduler-stop"))
            stopping[0].start()

        def started(_event: Any) -> None:
            # Said from inside start(), once the scheduler runs: a SIGTERM from here on stops it cleanly.
            log.info("scheduler.started", timezone=self.settings.timezone, workers=self.settings.workers,
                     jobs=len(self._scheduler.get_jobs()) - 1)
            sd_notify("READY=1")

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self._scheduler.add_listener(started, EVENT_SCHEDULER_STARTED)
        self._scheduler.start()
        for thread in stopping:
            thread.join()                            # running syncs have finished and released their leases
        log.info("scheduler.stopped")

    def _stop(self, signal_name: str) -> None:
        log.info("scheduler.stopping", signal=signal_name)
        sd_notify("STOPPING=1")
        self._scheduler.shutdown(wait=True)          # running syncs finish and release their leases
