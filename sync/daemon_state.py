"""What the daemon's process is doing right now: shared by the scheduler, which writes it, and
the HTTP endpoint (``/healthz``, ``/metrics``), which reads it. Its own module so that neither
of the two imports the other for it."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass
class DaemonState:
    """What the daemon is doing, for ``STATUS=``, ``/healthz`` and ``/metrics`` (thread-safe)."""

    started_monotonic: float = field(default_factory=time.monotonic)
    last_tick_monotonic: float | None = None
    running: set[str] = field(default_factory=set)
    finished: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def tick_age(self) -> float | None:
        with self.lock:
            return None if self.last_tick_monotonic is None else time.monotonic() - self.last_tick_monotonic
