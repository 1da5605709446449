"""A run of a connection starts paced at the request rate the last run learnt from 429s
(sync/engine/runner.py ``learnt_pace``, sync/http.py ``AdaptiveRate(start=...)``): each run used to
start unpaced and meet the provider's limit again (short runs: 15-18 % of requests refused)."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from sync.engine.runner import LEARNT_RATE_KEPT
from sync.models import SyncRun, utcnow
from tests.integration.providers.conftest import World
from tests.integration.providers.contract_fake import ContactHarness


def _taught(world: World, run_uid: str, rate: float) -> None:
    """As if that run had learnt ``rate`` requests a second from 429s."""
    with world.engine.begin() as conn:
        counts = conn.scalar(sa.select(SyncRun.counts).where(SyncRun.run_uid == run_uid))
        conn.execute(sa.update(SyncRun).where(SyncRun.run_uid == run_uid).values(
            counts={**(counts or {}), "http_rate_per_s": rate, "http_rate_cuts": 2}))


@pytest.mark.parametrize("harness", [ContactHarness], indirect=True, ids=["fake-contact"])
def test_a_run_starts_at_the_rate_the_last_run_of_its_connection_learnt(world: World) -> None:
    first = world.run()
    assert "http_rate_per_s" not in first.counts        # no documented rate, no 429: never paced
    _taught(world, first.run_uid, 4.0)
    member = sorted(world.valid_active_members().values(), key=lambda m: m.id)[0]
    world.update_member(member.id, first_name="Yeni")
    second = world.run()
    assert second.status in ("succeeded", "succeeded_with_rejects"), second.error
    # paced from its first request at 4/s; no 429 and few requests: grown by a small step at most
    assert 4.0 <= second.counts["http_rate_per_s"] < 4.5, second.counts

    _taught(world, second.run_uid, 4.0)
    with world.engine.begin() as conn:     # a rate learnt longer ago than LEARNT_RATE_KEPT is not used
        conn.execute(sa.update(SyncRun).values(finished_at=utcnow() - LEARNT_RATE_KEPT - dt.timedelta(hours=1)))
    third = world.run()
    assert "http_rate_per_s" not in third.counts, third.counts


@pytest.mark.parametrize("harness", [ContactHarness], indirect=True, ids=["fake-contact"])
def test_a_run_starts_tolerating_the_share_of_refusals_the_last_run_found_steady(world: World) -> None:
    """``http_steady_share``: the share of 429s the last run found to come whatever its pace (its
    learnt rate's cut taken back). The next run starts with it (``HttpPolicy.start_steady_share``:
    neither its rate nor its requests in flight are cut for refusals at that share) and hands it on;
    one learnt longer ago than LEARNT_RATE_KEPT is not used."""
    first = world.run()
    assert "http_steady_share" not in first.counts      # no 429: nothing learnt
    with world.engine.begin() as conn:
        conn.execute(sa.update(SyncRun).where(SyncRun.run_uid == first.run_uid).values(
            counts={**first.counts, "http_steady_share": 0.1429}))
    second = world.run()
    assert second.status in ("succeeded", "succeeded_with_rejects"), second.error
    assert second.counts["http_steady_share"] == 0.1429, second.counts

    with world.engine.begin() as conn:
        conn.execute(sa.update(SyncRun).values(finished_at=utcnow() - LEARNT_RATE_KEPT - dt.timedelta(hours=1)))
    third = world.run()
    assert "http_steady_share" not in third.counts, third.counts
