"""Stopping a one-shot run (``once``, ``backfill``) when asked: SIGTERM (``timeout``,
``systemctl stop``, ``docker stop``) or Ctrl-C.

The first signal asks the run to stop at its next safe point: between two phases, or after the
push window in flight has been committed. What is done stays committed, the run row is closed as
``interrupted``, the lease is released, and the command exits 128 + the signal's number (143 for
SIGTERM, 130 for Ctrl-C). A second signal stops at once: the run's task is cancelled wherever it
waits, which is as safe as a crash (a request whose answer was not recorded yet is repeated or
found by the next run), and the run row is still closed and the lease released.

The daemon (``run``) has its own handling: it lets running syncs finish (sync/scheduler.py).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import structlog

from sync.errors import StopRequested

log = structlog.get_logger(__name__)


class Stop:
    """One process's stop request (thread-safe; signal handlers run in the main thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.signal: signal.Signals | None = None
        self._now: Callable[[], object] | None = None

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def request(self, signum: signal.Signals) -> None:
        """Ask for a stop; asked again, stop now (cancel the run's task)."""
        with self._lock:
            again, self.signal = self.signal is not None, self.signal or signum
            now = self._now
        if again and now is not None:
            log.warning("run.stopping_now", signal=signum.name)
            now()
        elif not again:
            log.warning("run.stopping", signal=signum.name, detail="at the next safe point; send it again "
                        "to stop at once")

    def check(self) -> None:
        """At a safe point: raise StopRequested if a stop was asked for."""
        if self.signal is not None:
            raise StopRequested(f"stopped by {self.signal.name} at a safe point")

    def set_cancel(self, cancel: Callable[[], object] | None) -> None:
        """What a second signal calls to stop at once (thread-safe), or None."""
        with self._lock:
            self._now = cancel

    def exit_status(self) -> int | None:
        """128 + the signal's number once a stop was asked for (the shell's convention), else None."""
        return None if self.signal is None else 128 + int(self.signal)

    def reset(self) -> None:
        with self._lock:
            self.signal, self._now = None, None


#: This process's stop request: set by the signal handlers of ``once``/``backfill``, checked by
#: the runner and the engine at their safe points.
STOP = Stop()


@contextmanager
def stop_on_signals(signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[Stop]:
    """Turn ``signals`` into stop requests while inside (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield STOP
        return
    STOP.reset()

    def handler(signum: int, _frame: FrameType | None) -> None:
        STOP.request(signal.Signals(signum))

    previous: dict[signal.Signals, Any] = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield STOP
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
