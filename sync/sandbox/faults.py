"""Deterministic fault injection for the provider sandboxes.

A ``FaultPlan`` says which faults to inject; a ``FaultInjector`` draws them from
``random.Random(seed)``, so a given seed gives the same faults for the same sequence
of requests on every run. Each request consumes the same random draws whatever the
plan, so turning one fault kind on does not move the others (``apply_then_drop_rate`` draws
from a stream of its own, so adding it left the older faults of every seed where they were).

``apply_then_drop_rate`` is the nastiest of them: the sandbox APPLIES the write, then drops
the connection unanswered, as when a provider commits and the answer is lost on the way back.
It hits only writes (POST/PUT/PATCH/DELETE): a read whose answer is lost is a plain drop.

Faults apply only to a provider's API calls. Token endpoints and file downloads (report
CSVs) are exempt by design: a sandbox that fails its login or its public file links
tests nothing the retry policy of the API calls does not, and would make every other
test pay for it. Each sandbox decides which of its paths are "API calls".
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

#: Status codes an ``error_rate`` fault answers with, as a real front end would.
ERROR_STATUSES = (500, 502, 503)

FaultKind = Literal["drop", "rate_limit", "error", "apply_then_drop"]


@dataclass(frozen=True)
class FaultPlan:
    """Which faults a sandbox injects, and how often."""

    seed: int = 0
    latency_s: float = 0.0  # added to every API call (asyncio.sleep)
    error_rate: float = 0.0  # fraction of API calls answered 500/502/503
    rate_limit_every: int = 0  # every Nth API call answered 429 with Retry-After
    retry_after_s: float = 1.0
    drop_rate: float = 0.0  # fraction of API calls whose connection is dropped unanswered
    token_expire_after: int = 0  # an access token stops working after N authenticated calls
    apply_then_drop_rate: float = 0.0  # fraction of writes applied, then dropped unanswered

    def __post_init__(self) -> None:
        for name in ("error_rate", "drop_rate", "apply_then_drop_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        for name in ("latency_s", "rate_limit_every", "retry_after_s", "token_expire_after"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")

    @classmethod
    def from_spec(cls, spec: str) -> FaultPlan:
        """Parse ``"error_rate=0.1,rate_limit_every=7,seed=3"`` (the CLI's ``--faults``)."""
        types = {field.name: field.type for field in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            name, sep, raw = item.partition("=")
            name = name.strip()
            if not sep or name not in types:
                raise ValueError(f"bad fault setting {item!r}; known settings: {', '.join(types)}")
            try:
                values[name] = int(raw) if types[name] == "int" else float(raw)
            except ValueError:
                raise ValueError(f"bad value for {name}: {raw.strip()!r}") from None
        return cls(**values)


@dataclass(frozen=True)
class Fault:
    """One injected fault: a dropped connection, a 429, a 5xx, or a write applied then dropped."""

    kind: FaultKind
    status: int = 0  # 0 for a drop (applied or not): there is no response
    retry_after_s: float = 0.0


class FaultInjector:
    """Draws the faults of a ``FaultPlan`` request by request, reproducibly."""

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan
        self._rng = random.Random(plan.seed)
        self._apply_then_drop_rng = random.Random(f"apply_then_drop/{plan.seed}")
        self._calls = 0
        self._token_uses: Counter[str] = Counter()
        self.injected: Counter[FaultKind] = Counter()  # faults handed out so far, by kind

    def next_fault(self, *, write: bool = True) -> Fault | None:
        """The fault for the next API call (``write``: does it change something?), or None;
        always consumes the same draws."""
        fault = self._draw(write)
        if fault is not None:
            self.injected[fault.kind] += 1
        return fault

    def _draw(self, write: bool) -> Fault | None:
        self._calls += 1
        drop_draw, error_draw = self._rng.random(), self._rng.random()
        error_status = self._rng.choice(ERROR_STATUSES)
        apply_then_drop_draw = self._apply_then_drop_rng.random()
        plan = self.plan
        if drop_draw < plan.drop_rate:
            return Fault("drop")
        if plan.rate_limit_every and self._calls % plan.rate_limit_every == 0:
            return Fault("rate_limit", 429, plan.retry_after_s)
        if error_draw < plan.error_rate:
            return Fault("error", error_status)
        if write and apply_then_drop_draw < plan.apply_then_drop_rate:
            return Fault("apply_then_drop")
        return None

    async def before_api_call(self, *, write: bool = True) -> Fault | None:
        """Wait the planned latency, then say which fault (if any) this call gets."""
        if self.plan.latency_s:
            await asyncio.sleep(self.plan.latency_s)
        return self.next_fault(write=write)

    def use_token(self, token: str) -> bool:
        """Count one authenticated call made with ``token``; False once it is used up."""
        self._token_uses[token] += 1
        limit = self.plan.token_expire_after
        return not limit or self._token_uses[token] <= limit
