"""The daemon: APScheduler 3.x runs every enabled connection on its cron schedule.

The layer is thin on purpose: a job calls :func:`run_connection_job`, the same plain function
the tests call. Jobs are ``max_instances=1`` and ``coalesce=True`` (a sync that is still running
or several missed fire times give ONE run), with an explicit ``misfire_grace_time``. The
connection lease still guards against a second process or replica. Connections added,
disabled or rescheduled with the CLI are picked up every ``refresh_seconds`` without a restart.

Each connection's cron fires ``jitter_offset`` seconds late (fixed per connection, below
``jitter_seconds``), so hundreds of connections on one schedule do not start in the same second.
The scheduler's own loop ticks at least every ``TICK_SECONDS`` (or half the systemd watchdog
interval): each tick pings the watchdog (``WATCHDOG=1``) and says what it is doing (``STATUS=``),
so a loop that is stuck stops the pings and systemd restarts the service.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import sqlalchemy as sa
import structlog
from apscheduler.events import (  # type: ignore[import-untyped]
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_SUBMITTED,
    EVENT_SCHEDULER_STARTED,
)
from apscheduler.executors.pool import ThreadPoolExecutor  # type: ignore[import-untyped]
from apscheduler.schedulers.base import BaseScheduler  # type: ignore[import-untyped]
from apscheduler.schedulers.blocking import BlockingScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.base import BaseTrigger  # type: ignore[import-untyped]
from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]

from sync import db
from sync.config import Settings
from sync.daemon_state import DaemonState
from sync.engine.connection_sync import RunOptions
from sync.engine.runner import RunResult, run_connection
from sync.errors import ConfigurationError
from sync.models import Connection

log = structlog.get_logger(__name__)
JOB_PREFIX = "connection-"
#: The scheduler's loop wakes up at least this often (without a watchdog) to tick.
TICK_SECONDS = 15.0


#: Job id -> the fire time it was submitted for (TickExecutor); read by the job itself.
_SCHEDULED_FOR: dict[str, dt.datetime] = {}
_SCHEDULED_LOCK = threading.Lock()


class TickExecutor(ThreadPoolExecutor):  # type: ignore[misc]
    """The thread pool, telling each connection job which tick (fire time) it runs for.

    Every replica computes the same fire times (the same cron, timezone and jitter offset), so the
    tick names one scheduled run across replicas: the first to take the lease records it and the
    others skip it, even one that wakes after the winner's run is over (a busy thread pool, a
    paused VM). ``max_instances=1`` means a job is never submitted again while it runs, so its
    entry stays its own until it reads it. (``_do_submit_job`` is where APScheduler 3.x hands a
    job and its run times to the pool; a test covers it.)"""

    def _do_submit_job(self, job: Any, run_times: list[dt.datetime]) -> None:
        if job.id.startswith(JOB_PREFIX) and run_times:
            with _SCHEDULED_LOCK:
                _SCHEDULED_FOR[job.id] = max(run_times)
        super()._do_submit_job(job, run_times)


def run_connection_job(settings: Settings, engine: sa.Engine, crm_engine: sa.Engine, connection_id: int) -> RunResult:
    """What a scheduled job does: one run of one connection, in this worker thread."""
    with _SCHEDULED_LOCK:
        tick = _SCHEDULED_FOR.pop(f"{JOB_PREFIX}{connection_id}", None)
    # (a scheduled run prints nothing: it keeps counts, not every member's name)
    options = RunOptions(tick=tick, itemize=False)
    return asyncio.run(run_connection(settings, engine, crm_engine, connection_id, options))


def cron_trigger(expression: str, timezone: str) -> Any:
    try:
        return CronTrigger.from_crontab(expression, timezone=timezone)
    except (ValueError, KeyError) as exc:
        raise ConfigurationError(f"schedule {expression!r} (timezone {timezone}) is not valid: {exc}") from None


def jitter_offset(connection_id: int, window_seconds: int) -> int:
    """A connection's fixed delay in [0, window) seconds: the same on every replica and restart
    (derived from its id, not from a random generator), spread evenly over the window."""
    if window_seconds <= 0:
        return 0
    digest = hashlib.sha256(f"{JOB_PREFIX}{connection_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % window_seconds


class OffsetTrigger(BaseTrigger):  # type: ignore[misc]
    """Another trigger's fire times, each ``offset_seconds`` later (in UTC, so DST cannot bend it)."""

    def __init__(self, trigger: Any, offset_seconds: int) -> None:
        self.trigger = trigger
        self.offset = dt.timedelta(seconds=offset_seconds)

    def get_next_fire_time(self, previous_fire_time: dt.datetime | None, now: dt.datetime) -> dt.datetime | None:
        previous = None if previous_fire_time is None else self._shift(previous_fire_time, -self.offset)
        base = self.trigger.get_next_fire_time(previous, self._shift(now, -self.offset))
        return None if base is None else self._shift(base, self.offset)

    @staticmethod
    def _shift(moment: dt.datetime, delta: dt.timedelta) -> dt.datetime:
        return (moment.astimezone(dt.UTC) + delta).astimezone(moment.tzinfo)

    def __str__(self) -> str:
        return f"{self.trigger} + {int(self.offset.total_seconds())}s"

    def __repr__(self) -> str:
        return f"<OffsetTrigger ({self.trigger!r}, offset={int(self.offset.total_seconds())}s)>"


def watchdog_interval() -> float | None:
    """Seconds between systemd watchdog pings (half of ``WatchdogSec=``), or None without one."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(int(usec) / 2_000_000, 0.5)
    except ValueError:
        return None


class TickingScheduler(BlockingScheduler):  # type: ignore[misc]
    """APScheduler's blocking scheduler whose own loop calls ``on_tick`` at least every
    ``tick_seconds``: the tick runs only while the loop really runs (not in a thread of its own)."""

    def __init__(self, *args: Any, tick_seconds: float, on_tick: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tick_seconds = tick_seconds
        self.on_tick = on_tick

    def _process_jobs(self) -> float:
        wait_seconds = super()._process_jobs()
        self.on_tick()
        return self.tick_seconds if wait_seconds is None else min(float(wait_seconds), self.tick_seconds)


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
    state: DaemonState = field(default_factory=DaemonState)
    #: Called with each scheduled run's result (the metrics count them).
    on_result: Callable[[RunResult], None] | None = None

    def __post_init__(self) -> None:
        if self.scheduler is None:
            self.watchdog_seconds = watchdog_interval()
            self.scheduler = TickingScheduler(
                timezone=self.settings.timezone,
                executors={"default": TickExecutor(max_workers=self.settings.workers)},
                tick_seconds=min(TICK_SECONDS, self.watchdog_seconds or TICK_SECONDS), on_tick=self.tick)
        self._scheduler.add_listener(self._job_event, EVENT_JOB_SUBMITTED | EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)

    def tick(self) -> None:
        """One turn of the scheduler's loop: ping the watchdog, say what we are doing."""
        with self.state.lock:
            self.state.last_tick_monotonic = time.monotonic()
            running, finished = len(self.state.running), self.state.finished
        jobs = [job for job in self._scheduler.get_jobs() if job.id.startswith(JOB_PREFIX)]
        upcoming = min((job.next_run_time for job in jobs if job.next_run_time is not None), default=None)
        status = (f"syncing {running} connection(s), {len(jobs)} scheduled, {finished} run(s) finished"
                  + (f", next at {upcoming:%Y-%m-%d %H:%M:%S %Z}" if upcoming else ""))
        sd_notify(f"WATCHDOG=1\nSTATUS={status}")

    def _job_event(self, event: Any) -> None:
        if not event.job_id.startswith((JOB_PREFIX, f"now-{JOB_PREFIX}")):
            return
        with self.state.lock:
            if event.code == EVENT_JOB_SUBMITTED:
                self.state.running.add(event.job_id)
                return
            self.state.running.discard(event.job_id)
            self.state.finished += 1
        result = getattr(event, "retval", None)
        if self.on_result is not None and isinstance(result, RunResult):
            self.on_result(result)

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
            connection_id = int(job_id.removeprefix(JOB_PREFIX))
            trigger = OffsetTrigger(cron_trigger(expression, self.settings.timezone),
                                    jitter_offset(connection_id, self.settings.jitter_seconds))
            job = current.get(job_id)
            if job is not None and str(job.trigger) == str(trigger):
                continue
            if job is not None:
                self._scheduler.reschedule_job(job_id, trigger=trigger)
                changes["rescheduled"] += 1
                continue
            self._scheduler.add_job(
                run_connection_job, trigger, id=job_id, name=f"sync {job_id}",
                args=[self.settings, self.engine, self.crm_engine, connection_id],
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
                     jobs=len(self._scheduler.get_jobs()) - 1, jitter_seconds=self.settings.jitter_seconds,
                     watchdog_seconds=getattr(self, "watchdog_seconds", None))
            sd_notify("READY=1")

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self._scheduler.add_listener(started, EVENT_SCHEDULER_STARTED)
        endpoint = self._start_http_endpoint()
        try:
            self._scheduler.start()
            for thread in stopping:
                thread.join()                        # running syncs have finished and released their leases
        finally:
            if endpoint is not None:
                endpoint.close()
        log.info("scheduler.stopped")

    def _start_http_endpoint(self) -> Any:
        """/healthz and /metrics, if ``HTTP_ADDRESS`` asks for them (off by default)."""
        if not self.settings.http_address:
            return None
        from sync.web import HttpEndpoint, Metrics

        metrics = Metrics(self.engine, self.state)
        self.on_result = metrics.observe
        return HttpEndpoint(self.settings.http_address, self.engine, self.state,
                            lambda: bool(self._scheduler.running), metrics, timezone=self.settings.timezone).start()

    def _stop(self, signal_name: str) -> None:
        log.info("scheduler.stopping", signal=signal_name)
        with self.state.lock:
            running = len(self.state.running)
        sd_notify(f"STOPPING=1\nSTATUS=stopping: letting {running} running sync(s) finish")
        self._scheduler.shutdown(wait=True)          # running syncs finish and release their leases
