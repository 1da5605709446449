"""A provider's distance and its rate limit, in front of any sandbox: ``Throttle`` wraps a sandbox's
ASGI app, delays each answer by a fixed latency and refuses the requests above a rate with 429 and a
``Retry-After``, as a provider's API gateway does.

It sits outside the sandbox's own front door (``SandboxApp``), so it sees every request the client
sends, token calls included (a gateway's rate limit counts them all), and a refused request never
reaches the sandbox (its ``request_log`` holds only what was let through). Faults of a ``FaultPlan``
are the sandbox's business and come on top.

The rate is a sliding window, as Django REST framework's throttles and most gateways count: at most
``ceil(rate_per_s * window_s)`` requests admitted in any ``window_s`` seconds. A request above it is
answered 429 with ``Retry-After`` in whole seconds (RFC 9110's delay-seconds, at least 1), the time
until the oldest admitted request of the window leaves it. Admission is decided when the request
arrives; both answers, the 429 and the sandbox's, come back after the latency.

The clock and the sleep are injected, so tests count and read headers without waiting.
"""

from __future__ import annotations

import asyncio
import importlib
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from sync.sandbox.faults import Fault

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
#: The 429 a provider answers, given its Retry-After in whole seconds.
Refusal = Callable[[int], ASGIApp]


def plain_refusal(retry_after_s: int) -> ASGIApp:
    """A gateway's 429: text, with ``Retry-After``."""
    return Response("Too Many Requests", 429, headers={"Retry-After": str(retry_after_s)},
                    media_type="text/plain")


def refusal_of(sandbox: object) -> Refusal:
    """The 429 of ``sandbox``'s provider (its module's ``_fault_response``, the shape its rate-limit
    faults take: DRF's JSON detail for Postacell, Euromsg's envelope, ...), else ``plain_refusal``."""
    fault_response = getattr(importlib.import_module(type(sandbox).__module__), "_fault_response", None)
    if fault_response is None:
        return plain_refusal

    def refusal(retry_after_s: int) -> ASGIApp:
        return fault_response(Fault("rate_limit", 429, float(retry_after_s)))  # type: ignore[no-any-return]

    return refusal


@dataclass
class ThrottleStats:
    """What the throttle saw: requests received, admitted to the sandbox, refused with 429."""

    received: int = 0
    admitted: int = 0
    refused: int = 0
    delayed_s: float = 0.0      # latency added in all, seconds

    def reset(self) -> None:
        self.received = self.admitted = self.refused = 0
        self.delayed_s = 0.0


class Throttle:
    """ASGI middleware: ``latency_s`` before every answer, at most ``rate_per_s`` requests a second
    (sliding window of ``window_s``; None or 0: no limit). HTTP only; other scopes pass through."""

    def __init__(self, app: ASGIApp, *, latency_s: float = 0.0, rate_per_s: float | None = None,
                 window_s: float = 1.0, refusal: Refusal = plain_refusal, clock: Clock = time.monotonic,
                 sleep: Sleep = asyncio.sleep) -> None:
        if latency_s < 0:
            raise ValueError("latency_s must not be negative")
        if rate_per_s is not None and rate_per_s < 0:
            raise ValueError("rate_per_s must not be negative (0 or None: no limit)")
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self.app = app
        self.latency_s = latency_s
        self.rate_per_s = rate_per_s or None
        self.window_s = window_s
        #: Requests admitted in any window: 10/s over 1 s is 10; 0.5/s over 1 s is 1.
        self.allowed = max(1, math.ceil(self.rate_per_s * window_s)) if self.rate_per_s else 0
        self.stats = ThrottleStats()
        self._refusal = refusal
        self._clock = clock
        self._sleep = sleep
        self._admitted_at: deque[float] = deque()

    def admit(self) -> int:
        """Count one request arriving now: 0 when admitted, else the Retry-After in whole seconds."""
        self.stats.received += 1
        if self.rate_per_s:
            now = self._clock()
            while self._admitted_at and self._admitted_at[0] <= now - self.window_s:
                self._admitted_at.popleft()
            if len(self._admitted_at) >= self.allowed:
                self.stats.refused += 1
                wait = self._admitted_at[0] + self.window_s - now
                return max(1, math.ceil(wait))
            self._admitted_at.append(now)
        self.stats.admitted += 1
        return 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        retry_after = self.admit()
        if self.latency_s:
            self.stats.delayed_s += self.latency_s
            await self._sleep(self.latency_s)
        if retry_after:
            await self._refusal(retry_after)(scope, receive, send)
        else:
            await self.app(scope, receive, send)
