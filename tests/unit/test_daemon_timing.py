"""The daemon's timing: a fixed per-connection jitter, and watchdog pings from the scheduler's own loop."""

from __future__ import annotations

import datetime as dt
import socket
import threading
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]

from sync.config import load_settings
from sync.errors import ConfigurationError
from sync.scheduler import OffsetTrigger, TickingScheduler, jitter_offset, watchdog_interval

ISTANBUL = ZoneInfo("Europe/Istanbul")


def test_jitter_is_fixed_per_connection_and_spreads_them_over_the_window() -> None:
    offsets = [jitter_offset(connection_id, 300) for connection_id in range(1, 501)]
    assert offsets == [jitter_offset(connection_id, 300) for connection_id in range(1, 501)]   # every replica agrees
    assert all(0 <= offset < 300 for offset in offsets)
    assert len(set(offsets)) > 150                     # 500 connections do not bunch into a few seconds
    assert max(offsets.count(o) for o in set(offsets)) <= 8
    assert jitter_offset(7, 0) == 0                    # JITTER_SECONDS=0 turns it off


def test_offset_trigger_fires_the_cron_times_later_by_the_offset() -> None:
    trigger = OffsetTrigger(CronTrigger.from_crontab("30 2 * * *", timezone=ISTANBUL), 137)
    now = dt.datetime(2026, 12, 1, 1, 0, tzinfo=ISTANBUL)
    first = trigger.get_next_fire_time(None, now)
    assert first == dt.datetime(2026, 12, 1, 2, 32, 17, tzinfo=ISTANBUL)
    second = trigger.get_next_fire_time(first, first)
    assert second == dt.datetime(2026, 12, 2, 2, 32, 17, tzinfo=ISTANBUL)
    # Between the cron time and the delayed fire, the delayed fire of THIS night is still ahead.
    assert trigger.get_next_fire_time(None, dt.datetime(2026, 12, 1, 2, 31, tzinfo=ISTANBUL)) == first
    assert "hour='2'" in str(trigger) and str(trigger).endswith("+ 137s")


def test_jitter_and_http_address_are_settings_checked_at_start() -> None:
    settings = load_settings({"CRM_ESP_SYNC_JITTER_SECONDS": "60", "CRM_ESP_SYNC_HTTP_ADDRESS": "127.0.0.1:9108"})
    assert (settings.jitter_seconds, settings.http_address) == (60, "127.0.0.1:9108")
    assert load_settings({}).jitter_seconds == 300 and load_settings({}).http_address == ""
    with pytest.raises(ConfigurationError, match="jitter_seconds"):
        load_settings({"CRM_ESP_SYNC_JITTER_SECONDS": "-1"})
    with pytest.raises(ConfigurationError, match="http_address"):
        load_settings({"CRM_ESP_SYNC_HTTP_ADDRESS": "localhost:http"})


def test_watchdog_interval_is_half_of_what_systemd_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "120000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() == 60.0
    monkeypatch.setenv("WATCHDOG_PID", "1")            # meant for another process
    assert watchdog_interval() is None


def test_the_scheduler_loop_itself_ticks_and_a_stuck_loop_stops_the_pings(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """on_tick runs in the loop's own thread between job dispatches; while the loop is blocked
    (here: inside a tick), no other tick comes, so systemd's watchdog would fire."""
    ticks: list[str] = []
    release = threading.Event()
    two_ticks = threading.Event()

    def on_tick() -> None:
        ticks.append(threading.current_thread().name)
        if len(ticks) == 2:
            two_ticks.set()
            release.wait(30)                           # the loop is stuck here

    scheduler = TickingScheduler(timezone="UTC", tick_seconds=0.05, on_tick=on_tick)
    loop = threading.Thread(target=scheduler.start, name="scheduler-loop")
    loop.start()
    assert two_ticks.wait(30)
    stuck_at = len(ticks)
    assert not release.wait(0.3)                       # let time pass while the loop is stuck
    assert len(ticks) == stuck_at == 2
    release.set()
    scheduler.shutdown(wait=False)
    loop.join(30)
    assert set(ticks) == {"scheduler-loop"}


def test_the_daemon_tick_pings_the_watchdog_and_says_what_it_does(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlalchemy as sa

    from sync.config import Settings
    from sync.scheduler import SyncDaemon

    path = str(tmp_path / "notify.sock")
    engine = sa.create_engine("sqlite://")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        daemon = SyncDaemon(Settings(), engine, engine)
        daemon.tick()
        message = listener.recv(512).decode()
    engine.dispose()
    lines = message.splitlines()
    assert lines[0] == "WATCHDOG=1"
    assert lines[1].startswith("STATUS=syncing 0 connection(s), 0 scheduled")
    assert daemon.state.tick_age() is not None
