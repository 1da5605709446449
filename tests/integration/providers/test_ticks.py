"""A scheduled tick runs once across replicas, even for a replica that wakes after the winner's
run is over (a busy thread pool, a paused VM): the tick is claimed under the lease."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import sqlalchemy as sa
from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]

from sync import db
from sync.models import SyncRun
from sync.scheduler import _SCHEDULED_FOR, JOB_PREFIX, TickExecutor
from tests.integration.providers.conftest import World
from tests.integration.providers.harness import PostacellHarness

TICK = dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize("harness", [PostacellHarness], indirect=True, ids=["postacell"])
def test_a_tick_another_worker_ran_is_skipped_and_the_next_one_runs(world: World) -> None:
    first = world.run(tick=TICK)
    assert first.status in ("partial", "succeeded_with_rejects"), first.error
    world.harness.reset_log()
    late = world.run(tick=TICK)             # a replica waking after the winner's run finished
    assert late.status == "skipped" and late.error is not None and "2026-12-01T02:00:00Z" in late.error
    assert world.harness.requests() == 0, "a skipped tick must not talk to the provider"
    older = world.run(tick=TICK - dt.timedelta(days=1))      # a stale tick (a very late wake) is skipped too
    assert older.status == "skipped"
    following = world.run(tick=TICK + dt.timedelta(days=1))
    assert following.status in ("succeeded", "succeeded_with_rejects"), following.error
    manual = world.run()                    # `once` and `backfill` have no tick: they always run
    assert manual.status in ("succeeded", "succeeded_with_rejects")
    with db.session_factory(world.engine)() as session:
        statuses = list(session.scalars(sa.select(SyncRun.status).order_by(SyncRun.id)))
    assert statuses.count("skipped") == 2


def test_the_executor_tells_each_connection_job_its_fire_time() -> None:
    seen: list[dt.datetime | None] = []
    done = threading.Event()
    job_id = f"{JOB_PREFIX}4242"

    def job() -> None:
        seen.append(_SCHEDULED_FOR.pop(job_id, None))
        done.set()

    scheduler = BackgroundScheduler(executors={"default": TickExecutor(max_workers=1)}, timezone="UTC")
    when = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=1)
    scheduler.add_job(job, "interval", hours=1, next_run_time=when, id=job_id)
    scheduler.start()
    try:
        assert done.wait(timeout=30)
    finally:
        scheduler.shutdown(wait=True)
    assert seen == [when]
    assert job_id not in _SCHEDULED_FOR
