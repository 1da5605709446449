"""The one HTTP layer every provider client talks through.

It adds what httpx leaves to us: retries of 429/5xx and transport errors with jittered
backoff, an adaptive concurrency limit (AIMD, ``AdaptiveLimit``: a 429 or 5xx cuts the requests
in flight without stalling them, by half the share of refusals since the last cut, so a round of
refusals halves it; answers that come back fast and unrefused add one), a request rate learnt
from the 429s (``AdaptiveRate``: a 429 lowers the pace of the requests not yet sent below what
the provider admitted over the last second, and each second without a refusal adds a little,
never above the documented rate), a Retry-After that the refused request waits out (and every
request of the connection, for a 503, or once the limit is down to one request), a fresh login
on a 401 (one per token: a request sent with a token another request already replaced is sent
again with the new one, and every request takes the newest token when its slot comes), and log
lines and errors that never carry a secret. It repeats only what is safe to repeat: a request that may have been applied
(its answer lost, or a 5xx after it was sent) is sent again only when its method is idempotent
or the caller says so (``idempotent=True``); otherwise ``AnswerLostError`` lets the caller look
before it sends again. ``json_of`` reads an answer's body or says, in one line, what was wrong.

The ``httpx.AsyncClient`` is passed in, so tests and the demo can plug a
sandbox (``httpx.ASGITransport``) or an ``httpx.MockTransport`` under it.
"""

from __future__ import annotations

import asyncio
import email.utils
import json as jsonlib
import math
import random
import ssl
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TypeAlias

import httpx
import structlog

from sync.errors import (
    AnswerLostError,
    AuthenticationError,
    ConfigurationError,
    FatalError,
    MalformedAnswerError,
    RetriableError,
)

__all__ = ["AdaptiveLimit", "AdaptiveRate", "AnswerClassifier", "Auth", "HttpPolicy", "HttpStats", "ProviderHTTP",
           "TokenBucket", "Verdict", "WriteGuard", "describe", "json_of", "retry_after_seconds", "safe_url"]

log = structlog.get_logger(__name__)

#: Statuses worth another attempt; the rest (and every 2xx/3xx) go back to the caller.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Statuses whose Retry-After we honour.
RETRY_AFTER_STATUSES = frozenset({429, 503})
#: Methods repeated after a lost answer by default: RFC 9110's idempotent methods, and PATCH (our
#: PATCHes set fields, so a second one changes nothing). A POST is repeated only when the caller
#: says ``idempotent=True`` (a token call, a bulk import that upserts by e-mail).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"})
#: Methods that change nothing at the provider: no write guard before them.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Statuses that say the request was not processed, so any method may be sent again.
NOT_PROCESSED_STATUSES = frozenset({429})
#: Transport errors raised before the request left: any method may be sent again.
NOT_SENT_ERRORS: tuple[type[httpx.TransportError], ...] = (httpx.ConnectError, httpx.ConnectTimeout,
                                                           httpx.PoolTimeout)
DESCRIBE_LIMIT = 200
#: Redirects followed for one request, all on the provider's own host (see ``_redirect_target``).
MAX_REDIRECTS = 5
#: A request answered 401 on a token another request had already replaced is sent again with the
#: new one, up to this many times (tokens that keep dying before it is answered end it as a 401).
MAX_STALE_TOKEN_RETRIES = 4
#: Logins of one request: a second one only when the token of the first had worked for some
#: request (an expiry by time or by calls, not a login whose tokens are refused).
MAX_RELOGINS = 3
#: Transport errors that say the provider is overloaded (it did not answer in time): they cut the
#: adaptive limit like a 429 or 5xx; a refused or reset connection does not.
_OVERLOAD_ERRORS = frozenset({"ReadTimeout", "WriteTimeout", "PoolTimeout"})

Primitive: TypeAlias = str | int | float | bool | None
QueryParams: TypeAlias = Mapping[str, Primitive | Sequence[Primitive]]
Sleep: TypeAlias = Callable[[float], Awaitable[None]]
Clock: TypeAlias = Callable[[], float]
#: Called before every attempt of a request that may change something at the provider; raises to
#: stop it (the runner's lease check: a run that lost its lease sends no further write).
WriteGuard: TypeAlias = Callable[[], Awaitable[None]]
#: Observers of every attempt: (provider, "attempt" | "retry", status or error name, seconds). The
#: daemon's /metrics registers one (request latency, retries, 429s); nothing else pays for it.
AttemptObserver: TypeAlias = Callable[[str, str, int | str, float], None]
ATTEMPT_OBSERVERS: list[AttemptObserver] = []
#: Observers of a connection's learnt rate (``AdaptiveRate``): (provider, requests a second, None for
#: no limit), told at every change. The daemon's /metrics registers one.
RateObserver: TypeAlias = Callable[[str, float | None], None]
RATE_OBSERVERS: list[RateObserver] = []


@dataclass(frozen=True)
class Verdict:
    """What an answer that came with a success status really says (a provider that puts its
    errors inside HTTP 200: Postatr's ErrorCode, MailMasterPlus's bare numbers, WapCRM's
    ``status: false`` envelope).

    - ``relogin``: the token is no longer valid; log in again and send once more (like a 401).
    - ``retry``: a transient fault; backed off and sent again like a 5xx (``maybe_applied``: the
      provider may have acted on it, so only a request safe to repeat is sent again).
    - ``auth``: the credentials are refused (``AuthenticationError``).
    - ``fatal``: refused in a way retrying cannot fix (``FatalError``).

    Row-level errors are not the HTTP layer's business: a classifier returns None for them and the
    client turns them into rejects.
    """

    kind: Literal["relogin", "retry", "fatal", "auth"]
    reason: str  # one readable line, never a secret
    provider_code: str | None = None
    maybe_applied: bool = False


#: A provider's reading of an answer: None when it is what it looks like.
AnswerClassifier: TypeAlias = Callable[[httpx.Response], Verdict | None]


def _tell_observers(provider: str, kind: str, outcome: int | str, seconds: float) -> None:
    for observer in ATTEMPT_OBSERVERS:
        observer(provider, kind, outcome, seconds)


def _default_timeout() -> httpx.Timeout:
    return httpx.Timeout(30.0, connect=10.0)


@dataclass(frozen=True)
class HttpPolicy:
    """How one connection talks to its provider: timeouts, retries, concurrency and rate."""

    timeout: httpx.Timeout = field(default_factory=_default_timeout)
    max_attempts: int = 6
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 300.0  # a longer Retry-After is a RetriableError at once
    concurrency: int = 4  # in-flight requests per connection: the ceiling of the adaptive limit
    #: AIMD between 1 and ``concurrency`` (``AdaptiveLimit``), starting at ``start_concurrency``;
    #: False: always ``concurrency`` in flight.
    adaptive: bool = True
    start_concurrency: int = 2
    #: The documented rate, requests a second per connection; None = none documented.
    rate_per_s: float | None = None
    burst: int = 1
    #: Learn the rate from 429s (``AdaptiveRate``), never above ``rate_per_s``; False: a fixed
    #: token bucket at ``rate_per_s`` (and no rate at all without one).
    adaptive_rate: bool = True
    #: Where the learnt rate starts: the pace an earlier run of the connection ended at (the
    #: runner reads it from that run's counts), so a run does not meet the provider's limit
    #: again unpaced; never above ``rate_per_s``. None: at ``rate_per_s`` (unpaced without one).
    start_rate_per_s: float | None = None
    #: The share of refusals an earlier run of the connection learnt to come whatever its pace
    #: (``AdaptiveRate.steady_share``; the runner reads it from that run's counts): refusals at
    #: about that share cut neither the rate nor the requests in flight from this run's start.
    #: None: not known.
    start_steady_share: float | None = None
    #: An answer's body (decoded) is read up to this many bytes; a longer one is refused in one line
    #: (a runaway page, a misrouted download) rather than held in memory. Postacell's CSV report
    #: exports, the largest answers we take, run to about 100 bytes a recipient.
    max_body_bytes: int = 256 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.concurrency < 1 or self.burst < 1 or self.start_concurrency < 1:
            raise ConfigurationError("max_attempts, concurrency, start_concurrency and burst must be at least 1")
        if self.max_body_bytes < 1:
            raise ConfigurationError("max_body_bytes must be at least 1")
        if self.rate_per_s is not None and not self.rate_per_s > 0:
            raise ConfigurationError("rate_per_s must be positive (or None for no limit)")
        if self.start_rate_per_s is not None and not self.start_rate_per_s > 0:
            raise ConfigurationError("start_rate_per_s must be positive (or None)")
        if self.start_steady_share is not None and not 0 < self.start_steady_share < 1:
            raise ConfigurationError("start_steady_share must be between 0 and 1 (or None)")


@dataclass
class HttpStats:
    """Counters of one connection's HTTP traffic, for the run summary."""

    requests: int = 0  # attempts actually sent
    retries: int = 0
    rate_limited_waits: int = 0  # waits for a rate-limit token or another request's Retry-After
    retry_after_waits: int = 0  # refused attempts that waited their own Retry-After (429, 503)
    waited_s: float = 0.0
    by_method: Counter[str] = field(default_factory=Counter)
    concurrency: int = 0  # requests allowed in flight at the end (the adaptive limit)
    concurrency_peak: int = 0
    concurrency_cuts: int = 0  # cuts on a 429 or 5xx (AdaptiveLimit)
    rate_per_s: float | None = None  # the learnt rate at the end (AdaptiveRate); None: no limit
    rate_cuts: int = 0  # cuts of the learnt rate on a 429
    rate_undone: int = 0  # cuts taken back: the refusals came as often at the lower rate
    #: The share of refusals learnt to come whatever our pace (AdaptiveRate.steady_share); None: none
    steady_share: float | None = None


class AdaptiveLimit:
    """How many requests one connection has in flight, found by AIMD (additive increase,
    multiplicative decrease: TCP's congestion control, as in Netflix's concurrency-limits).

    Every answer that comes back unrefused and no slower than twice the fastest one seen (plus
    50 ms) adds ``1 / limit`` (one more request in flight per round trip of them); a 429 or 5xx
    cuts the limit, once per round (answers to requests sent before the last cut saw the old
    limit and do not cut again), by half the share of refusals among the answers since the last
    cut (DCTCP's ``cwnd * (1 - alpha / 2)``): refusals only halve it, one refusal among many good
    answers takes off a little (one call in seven refused at random cut it every round by half,
    down to one or two requests in flight, 2026-12-06). Never above ``ceiling`` (the provider's configured concurrency),
    never below one. Latency alone never cuts: one connection mixes calls as different as a
    one-member GET and a bulk import, so a slow answer is not a sign of overload by itself; it
    only stops the increase. What is in flight is never stalled by a cut: it finishes, and the
    next request waits for a free slot under the new limit.

    Refusals known to come whatever our load (``tolerated``: the share the learnt rate found
    unchanged at a lower pace, ``AdaptiveRate.steady_share``, or an earlier run of the connection
    found) cut nothing while their share since the last cut stays within ``TOLERANCE`` times it
    (or fewer than ``MIN_EVIDENCE`` answers came; 429s only): a provider that refuses one call in seven
    whatever we do is not overloaded by us, and a refusal at one request in flight then does not
    hold the whole connection for its Retry-After (only the refused request waits it). More
    refusals than that cut as before.
    """

    #: Refusals up to this many times the tolerated share are not ours to slow down for.
    TOLERANCE = 2.0
    MIN_EVIDENCE = 10
    #: Past this many answers since the last cut, the counts are halved: the share follows the
    #: last few hundred answers, not the whole run.
    _KEPT_ANSWERS = 200

    def __init__(self, ceiling: int, start: int, clock: Clock) -> None:
        self.ceiling = max(1, ceiling)
        self.limit = float(min(max(1, start), self.ceiling))
        self.in_flight = 0
        self.cuts = 0
        self.peak = self.allowed
        self._clock = clock
        self._cut_at = -math.inf
        self._fastest = math.inf
        #: Good answers and refusals since the last cut.
        self._answers = 0
        self._refused = 0
        self._waiters: list[asyncio.Future[None]] = []
        #: The share of refusals that come whatever our load (see the class); None: not known.
        self.tolerated: float | None = None

    @property
    def allowed(self) -> int:
        return max(1, int(self.limit))

    async def acquire(self) -> None:
        while self.in_flight >= self.allowed:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    self._wake()        # woken, then cancelled: pass the free slot on
                raise
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        for _ in range(max(0, self.allowed - self.in_flight)):
            if not self._waiters:
                return
            waiter = self._waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)

    def answered(self, sent_at: float, elapsed: float, *, overloaded: bool, throttled: bool = True) -> bool:
        """Adapt to one answer (sent at ``sent_at``, after ``elapsed`` seconds); True when it was
        a refusal that found the limit at one request already (nothing left to slow down).
        ``throttled``: an overloaded answer was a 429 (only those are ``tolerated``; a 5xx or a
        timeout always counts)."""
        if overloaded:
            self._refused += 1
            self._keep_recent()
            if throttled and self._tolerates():
                return False            # the provider's own share of refusals: not our load
            if sent_at < self._cut_at:
                return False            # this round was cut already
            floor = self.limit <= 1.0
            # Cut by half the share of refusals among the answers since the last cut (DCTCP's
            # cwnd * (1 - alpha / 2)): a refusal that is all the connection heard halves the limit;
            # an isolated one among many good answers (a provider that refuses a call now and then)
            # takes off a little, so it slows the connection without collapsing it.
            share = self._refused / (self._answers + self._refused)
            self._cut_at = self._clock()
            self._answers = self._refused = 0
            if not floor:
                self.limit = max(1.0, self.limit * (1 - min(1.0, share) / 2))
                self.cuts += 1
            return floor
        self._answers += 1
        self._keep_recent()
        self._fastest = min(self._fastest, elapsed)
        if elapsed <= 2 * self._fastest + 0.05:
            self.limit = min(float(self.ceiling), self.limit + 1.0 / self.limit)
            self.peak = max(self.peak, self.allowed)
            self._wake()
        return False

    def _tolerates(self) -> bool:
        if self.tolerated is None:
            return False
        seen = self._answers + self._refused
        return seen < self.MIN_EVIDENCE or self._refused / seen <= self.TOLERANCE * self.tolerated

    def _keep_recent(self) -> None:
        if self._answers + self._refused > self._KEPT_ANSWERS:
            self._answers, self._refused = self._answers // 2, self._refused // 2


class AdaptiveRate:
    """How many requests a second one connection sends, learnt from the provider's 429s.

    A limit on requests in flight (``AdaptiveLimit``) does not bound the rate when answers come
    back fast (4 in flight at 30 ms is up to 133 a second), and pacing exactly at a documented
    rate is refused by a provider that admits that many in any second (the requests arrive
    bunched). So the pace of the requests not yet sent is learnt:

    - **Pacing** is a virtual schedule (GCRA): each request takes ``1 / rate`` of it, ``burst``
      may go at once, as a token bucket at ``rate`` does. A change of the rate applies to the
      requests that ask for their turn afterwards; what is in flight or already given its turn
      is never held back by a 429.
    - **A 429 cuts the rate** to ``DECREASE`` times what the provider admitted (answers not
      refused) among the requests sent in the ``window_s`` before the refused one, kept between
      half and ``DECREASE`` times the pace the connection sent at in that window (or its rate, if
      lower): a provider that admits N in any second gets a pace a little below N.
      Before the first 429, a connection without a documented rate is not paced at all. A 429
      after fewer than ``MIN_SENT`` requests in the window says nothing about our pace (a token
      call refused in a quiet moment): it cuts nothing (the in-flight limit and the Retry-After
      still slow the connection down).
    - **Refusals of requests sent within a window after a change do not count**: the provider's
      window still holds what was sent before it.
    - **A cut that did not help is taken back**: refusals that keep coming, after at least
      ``MIN_EVIDENCE`` answers, at half or more of the share they had before the cut do not
      depend on our rate (a provider that refuses one call in seven whatever the pace), so the
      rate goes back to where it was before that cut (None: not paced), and refusals at that
      share cut no more: it is the provider's ``steady_share``, which the in-flight limit then
      tolerates too (``AdaptiveLimit.tolerated``) and the connection's next run starts with
      (``start_share``: refusals at half of it or more cut nothing from its first request).
    - **Each window without a cut in which a request waited for its turn adds a step**: first
      ``INCREASE`` of the rate set by the last cut, each next step ``ACCELERATION`` times the one
      before, and back to the first step once the rate is ``NEAR`` the pace the last cut came at
      (a provider's limit is found again carefully, in about eight windows, and a rate cut far
      below what the provider takes, by a 429 in a quiet moment, is not stuck there). Never above
      ``ceiling`` (the documented rate). A connection that is not using its rate (a window being
      planned, a commit) does not grow it.
    - **A run starts where the last one ended** (``start``, below the ceiling): paced from its
      first request and grown from there as just after a cut to it, not unpaced into the
      provider's limit again.
    """

    DECREASE = 0.9
    INCREASE = 0.01
    ACCELERATION = 1.5
    NEAR = 0.95
    MIN_STEP = 0.05
    MIN_RATE = 0.5
    MIN_EVIDENCE = 10
    MIN_SENT = 5
    #: How long send instants and answers are remembered, in windows.
    _KEPT_WINDOWS = 4

    def __init__(self, ceiling: float | None, burst: int, clock: Clock, *, window_s: float = 1.0,
                 start: float | None = None, start_share: float | None = None) -> None:
        self.ceiling = ceiling
        self.rate: float | None = ceiling
        self.window_s = window_s
        self.cuts = 0
        self.undone = 0
        self._burst = max(1, burst)
        self._clock = clock
        self._next = -math.inf                  # the virtual schedule (GCRA's theoretical arrival time)
        self._sent: deque[float] = deque()      # when each request was sent, oldest first
        self._answers: deque[tuple[float, bool]] = deque()  # (sent at, refused) by arrival
        self._changed_at = -math.inf            # the last cut or undo
        self._grown_at = clock()
        self._waited = False                    # a request waited for its turn since the last growth
        self._base_step = self._step = 0.0
        self._slow_from = math.inf              # near the pace the last cut came at: grow slowly again
        #: The share of refusals before the last cut; None until the first cut.
        self._share_before: float | None = None
        #: The rate before the last cut (what an undo restores), while that cut may still be undone.
        self._undoable = False
        self._before_cut: float | None = None
        self._seen = self._seen_refused = 0     # answers since the last change's window ended
        #: The share of refusals found to come whatever our pace (an undone cut's); None: not known.
        self.steady_share: float | None = start_share
        if start_share is not None:
            self._share_before = start_share
        if start is not None and (ceiling is None or start < ceiling):
            self.rate = max(self.MIN_RATE, start)
            self._base_step = self._step = max(self.MIN_STEP, self.INCREASE * self.rate)
            self._slow_from = self.NEAR * self.rate / self.DECREASE    # as just after a cut to it

    def reserve(self) -> float:
        """Take the next turn and return how many seconds to wait before sending."""
        now = self._clock()
        self._grow(now)
        if self.rate is None:
            return 0.0
        interval = 1.0 / self.rate
        at = max(now, self._next - (self._burst - 1) * interval)
        self._next = max(self._next, now) + interval
        if at > now:
            self._waited = True
        return at - now

    def sent(self, at: float) -> None:
        """Note a request that leaves now."""
        self._sent.append(at)
        self._forget(at)

    def answered(self, sent_at: float, *, refused: bool) -> bool:
        """Learn from one answer to a request sent at ``sent_at``; True when the rate changed."""
        now = self._clock()
        self._answers.append((sent_at, refused))
        self._forget(now)
        if sent_at < self._changed_at + self.window_s:
            return False                # sent while the provider's window held what came before the change
        self._seen += 1
        if not refused:
            return False
        self._seen_refused += 1
        share = self._seen_refused / self._seen
        if sum(1 for at in self._sent if sent_at - self.window_s < at <= sent_at) < self.MIN_SENT:
            return False                # a refusal at a pace this low is not about our pace
        if self._share_before is not None and share >= self._share_before / 2:
            if self._seen < self.MIN_EVIDENCE or not self._undoable:
                return False
            # As many refusals at the lower rate as before the cut: they do not depend on our rate.
            restored = self._before_cut
            if restored is not None and self.rate is not None:
                restored = max(restored, self.rate)
            self.rate, self._undoable = restored, False
            self.undone += 1
            self.steady_share = (share + self._share_before) / 2    # after the cut and before it
            self._changed(now)
            log.debug("http.rate_undone", rate_per_s=self.rate, refused_share=round(share, 3))
            return True
        self._cut(sent_at, now)
        return True

    def _cut(self, sent_at: float, now: float) -> None:
        window = [refused for at, refused in self._answers if sent_at - self.window_s < at <= sent_at]
        admitted = window.count(False) / self.window_s
        sent = sum(1 for at in self._sent if sent_at - self.window_s < at <= sent_at) / self.window_s
        current = sent if self.rate is None else min(sent, self.rate)
        cut = min(self.DECREASE * current, max(current / 2, self.DECREASE * admitted))
        self._undoable, self._before_cut = True, self.rate
        self._share_before = window.count(True) / len(window) if window else 1.0
        self.steady_share = None
        self.rate = max(self.MIN_RATE, cut if self.ceiling is None else min(self.ceiling, cut))
        self._base_step = self._step = max(self.MIN_STEP, self.INCREASE * self.rate)
        self._slow_from = self.NEAR * current
        self.cuts += 1
        self._changed(now)
        log.debug("http.rate_cut", rate_per_s=round(self.rate, 2), admitted_per_s=admitted, sent_per_s=sent)

    def _changed(self, now: float) -> None:
        self._changed_at = self._grown_at = now
        self._waited = False
        self._seen = self._seen_refused = 0

    def _grow(self, now: float) -> None:
        if now - self._grown_at < self.window_s:
            return
        if self._waited and self.rate is not None and (self.ceiling is None or self.rate < self.ceiling):
            if self.rate >= self._slow_from:
                self._slow_from, self._step = math.inf, self._base_step
            grown = self.rate + self._step
            self.rate = grown if self.ceiling is None else min(self.ceiling, grown)
            self._step *= self.ACCELERATION
        self._grown_at = now
        self._waited = False

    def _forget(self, now: float) -> None:
        horizon = now - self._KEPT_WINDOWS * self.window_s
        while self._sent and self._sent[0] < horizon:
            self._sent.popleft()
        while self._answers and self._answers[0][0] < horizon:
            self._answers.popleft()


class Auth(Protocol):
    """Gives the headers that authenticate a request, logging in when it has no token."""

    async def headers(self, http: ProviderHTTP) -> Mapping[str, str]:
        """Headers to add; may log in with ``http.request(..., authenticated=False)``."""
        ...

    def invalidate(self) -> None:
        """Forget the cached token (the provider answered 401)."""
        ...


class TokenBucket:
    """Allows ``rate_per_s`` requests a second with bursts of ``burst``, on an injected clock.

    A token is taken on credit (the count may go below zero) and the taker waits until it
    is paid for, so concurrent takers queue in order without a lock.
    """

    def __init__(self, rate_per_s: float, burst: int, clock: Clock) -> None:
        self._rate = rate_per_s
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()

    @property
    def rate(self) -> float:
        return self._rate

    def reserve(self) -> float:
        """Take one token and return how many seconds to wait before using it."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate) - 1.0
        self._updated = now
        return max(0.0, -self._tokens / self._rate)


def safe_url(url: httpx.URL | str) -> str:
    """Host and path of ``url`` for logs and errors: no userinfo, query or fragment."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "<invalid url>"
    port = f":{parsed.port}" if parsed.port is not None else ""
    return f"{parsed.host}{port}{parsed.path}"


def _parse_http_date(value: str) -> datetime | None:
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def retry_after_seconds(response: httpx.Response) -> float | None:
    """Seconds the ``Retry-After`` header asks for (delta seconds or HTTP-date), or None.

    An HTTP-date is measured from the response's own ``Date`` so a skewed local clock does
    not matter; without a ``Date`` our wall clock stands in.
    """
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        until = _parse_http_date(value)
        if until is None:
            return None
        server_now = _parse_http_date(response.headers.get("Date", "")) or datetime.now(UTC)
        seconds = (until - server_now).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


_MESSAGE_KEYS = ("detail", "message", "error_description", "error", "title", "msg")


def _text_of(body: object) -> str:
    """Flatten a JSON error body: its message, else its field errors as ``field: message``."""
    if isinstance(body, dict):
        message = next((_text_of(body[key]) for key in _MESSAGE_KEYS if body.get(key)), "")
        if not message:
            return "; ".join(f"{key}: {text}" for key, value in body.items() if (text := _text_of(value)))
        if isinstance(body.get("field"), str):
            message = f"{body['field']}: {message}"
        details = _text_of(body.get("errors"))
        return f"{message}: {details}" if details else message
    if isinstance(body, list):
        return "; ".join(text for item in body if (text := _text_of(item)))
    return "" if body is None else str(body)


def describe(response: httpx.Response) -> str:
    """A short readable text of an error body, for the providers' status tables.

    JSON gives its ``detail``/``message`` and field errors (DRF's ``{"email": ["Enter a
    valid email address."]}`` reads ``email: Enter a valid email address.``); any other
    body gives its first 200 characters.
    """
    try:
        text = _text_of(response.json())
    except ValueError:  # not JSON: json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        text = response.text
    text = " ".join(text.split())
    if len(text) > DESCRIBE_LIMIT:
        text = text[: DESCRIBE_LIMIT - 1] + "…"
    return text or response.reason_phrase or f"HTTP {response.status_code}"


#: Keys of an error envelope (not "title": a list has one).
_ENVELOPE_KEYS = ("detail", "message", "error_description", "error", "msg")
_JSON_KINDS = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}


def _request_line(response: httpx.Response) -> str:
    try:
        request = response.request
    except RuntimeError:
        return "a request"
    return f"{request.method} {safe_url(request.url)}"


def json_of(response: httpx.Response, what: str, required: Sequence[str] = (), *,
            shape: type[dict[str, Any]] | type[list[Any]] = dict) -> Any:
    """The JSON body of an answer the caller has already checked for its status, or
    ``MalformedAnswerError`` saying in one line which endpoint gave what instead.

    ``shape`` is the JSON type expected (object or array); ``required`` names the keys an object
    must have. The message never echoes the body (a token answer carries secrets); of an error
    envelope it gives only the envelope's message.
    """
    def malformed(wrong: str) -> MalformedAnswerError:
        return MalformedAnswerError(f"{what}: {_request_line(response)} answered HTTP {response.status_code} "
                                    f"with {wrong}", status_code=response.status_code)

    content = response.content
    if not content.strip():
        raise malformed("an empty body")
    content_type = response.headers.get("Content-Type", "").lower()
    head = content.lstrip()[:5].lower()
    if head == b"<?xml" or (head[:1] == b"<" and "xml" in content_type and "html" not in content_type):
        raise malformed("an XML document instead of JSON")
    if head[:1] == b"<":
        raise malformed("an HTML page instead of JSON")
    # The body decides, not the label: JSON sent as text/plain or text/html is still read.
    try:
        body = jsonlib.loads(content)
    except UnicodeDecodeError:
        raise malformed("a body that is not UTF-8 text") from None
    except jsonlib.JSONDecodeError as exc:
        if "html" in content_type:
            raise malformed("an HTML page instead of JSON") from None
        raise malformed(f"truncated or invalid JSON ({exc.msg} at byte {exc.pos} of {len(content)})") from None
    if not isinstance(body, shape):
        expected = "an object" if shape is dict else "an array"
        raise malformed(f"a JSON {_JSON_KINDS.get(type(body), 'value').split(' ', 1)[-1]} where "
                        f"{expected} was expected")
    if isinstance(body, dict) and (missing := [key for key in required if body.get(key) is None]):
        envelope = {key: body[key] for key in _ENVELOPE_KEYS if body.get(key)}
        if envelope:
            text = " ".join(_text_of(envelope).split())[:DESCRIBE_LIMIT]
            raise malformed(f"an error envelope: {text}")
        raise malformed(f"no {', '.join(repr(key) for key in missing)} in the answer")
    return body


def _certificate_refusal(exc: BaseException) -> str | None:
    """Why TLS verification refused the provider's certificate, if that is what ``exc`` is: a
    certificate does not become trusted on a retry, so this ends the request at once."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return str(seen.verify_message or seen.reason or "certificate verify failed")
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return text.split("certificate verify failed:", 1)[-1].split("(_ssl", 1)[0].strip() or "verify failed"
    return None


@dataclass(frozen=True)
class _Failure:
    """Why an attempt failed: an HTTP status (maybe with Retry-After) or a transport error."""

    reason: str
    status: int | None = None
    retry_after: float | None = None
    cause: httpx.TransportError | None = None
    maybe_applied: bool = True  # False when the provider cannot have acted on the request
    provider_code: str | None = None
    #: A refusal when the adaptive limit was at one request already: its Retry-After holds back
    #: the whole connection (below one request in flight, only waiting slows down further).
    at_floor: bool = False


class ProviderHTTP:
    """Sends one connection's requests to its provider, with retries, limits and auth."""

    def __init__(self, client: httpx.AsyncClient, *, provider: str, base_url: str, policy: HttpPolicy,
                 auth: Auth | None = None, sleep: Sleep = asyncio.sleep, clock: Clock = time.monotonic,
                 rng: random.Random | None = None, write_guard: WriteGuard | None = None) -> None:
        self.provider = provider
        self.base_url = httpx.URL(base_url if base_url.endswith("/") else base_url + "/")
        self.policy = policy
        self.stats = HttpStats()
        self._client = client
        self._auth = auth
        self._write_guard = write_guard
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self.limit = AdaptiveLimit(policy.concurrency, policy.start_concurrency if policy.adaptive
                                   else policy.concurrency, clock)
        self._adaptive = policy.adaptive
        self.stats.concurrency = self.stats.concurrency_peak = self.limit.allowed
        self._floor_hit = False     # the last refusal found the limit at one request
        self._bucket = (TokenBucket(policy.rate_per_s, policy.burst, clock)
                        if policy.rate_per_s is not None and not policy.adaptive_rate else None)
        #: The pace learnt from 429s, never above the documented ``rate_per_s``.
        self.rate = AdaptiveRate(policy.rate_per_s, policy.burst, clock, start=policy.start_rate_per_s,
                                 start_share=policy.start_steady_share) if policy.adaptive_rate else None
        self.stats.rate_per_s = self.rate.rate if self.rate is not None else policy.rate_per_s
        self.limit.tolerated = self.stats.steady_share = policy.start_steady_share
        self._not_before = -math.inf  # shared Retry-After: no request leaves before this instant
        self._last_turn = -math.inf   # when the last request left its turn (``_wait_turn``)
        #: The provider's reading of answers with a success status (errors inside HTTP 200).
        self.classifier: AnswerClassifier | None = None
        #: The headers the auth gave last (its current token), None once a 401 invalidated them;
        #: a request waiting for a slot is sent with these, not with the ones it was built with.
        self._auth_now: dict[str, str] | None = None
        #: A request sent with ``_auth_now`` was answered other than 401: the token worked, so a
        #: later 401 on it is an expiry (log in again), not a login whose tokens are refused.
        self._auth_worked = False

    def url_for(self, path_or_url: str) -> httpx.URL:
        """``path_or_url`` joined onto ``base_url``; an absolute URL (a next-page link) is kept."""
        url = httpx.URL(path_or_url)
        return url if url.is_absolute_url else self.base_url.join(url)

    async def request(self, method: str, path_or_url: str, *, params: QueryParams | None = None,
                      json: Any = None, data: Mapping[str, Any] | None = None,
                      content: bytes | str | None = None, headers: Mapping[str, str] | None = None,
                      authenticated: bool = True, idempotent: bool | None = None) -> httpx.Response:
        """Send a request, retrying transient faults; return any answer but 401, 429 and 5xx.

        A failure after the request may have reached the provider (a lost answer, a 5xx) is
        retried only if the request is safe to repeat: ``idempotent``, which defaults to the
        method's nature (see ``IDEMPOTENT_METHODS``); otherwise it raises ``AnswerLostError``.
        A refused connection or a 429 is retried whatever the method.

        Raises ``RetriableError`` when the attempts run out or a Retry-After is too long,
        and ``AuthenticationError`` on a 401 that a fresh login does not cure.
        """
        method = method.upper()
        url = self.url_for(path_or_url)
        shown = safe_url(url)
        auth = self._auth if authenticated else None
        repeatable = method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        failures = 0
        relogged = False
        relogins = 0
        stale = 0
        redirects = 0
        while True:
            send_headers = dict(headers or {})
            if auth is not None:  # before taking a slot: a login must not queue behind us
                given = dict(await auth.headers(self))
                if given != self._auth_now:
                    self._auth_now, self._auth_worked = given, False
                send_headers.update(given)
            if self._write_guard is not None and method not in SAFE_METHODS:
                await self._write_guard()  # before every attempt: a retry is a write too
            request = self._client.build_request(method, url, params=params, json=json, data=data,
                                                 content=content, headers=send_headers,
                                                 timeout=self.policy.timeout)
            try:
                response = await self._send(request, shown, failures + 1, fresh_auth=auth is not None)
            except httpx.UnsupportedProtocol:
                raise  # a wrong URL, not a transient fault
            except httpx.ConnectError as exc:
                if (untrusted := _certificate_refusal(exc)) is not None:
                    raise FatalError(f"{self.provider}: {method} {shown}: the TLS certificate of {url.host} is not "
                                     f"trusted ({untrusted}); nothing was sent") from None
                failure = _Failure(type(exc).__name__, cause=exc, maybe_applied=False)
            except httpx.TransportError as exc:
                failure = _Failure(type(exc).__name__, cause=exc, maybe_applied=not isinstance(exc, NOT_SENT_ERRORS))
            else:
                status = response.status_code
                if response.has_redirect_location:
                    redirects += 1
                    url, method = self._redirect_target(response, method, shown, redirects)
                    shown = safe_url(url)
                    if method == "GET":     # a 303 (or a 301/302 of a POST): the body stays here
                        json = data = content = None
                    params = None           # the Location carries its own query
                    continue
                verdict = (self.classifier(response) if self.classifier is not None
                           and status not in RETRY_STATUSES and status != 401 else None)
                if verdict is not None and verdict.kind == "auth":
                    raise AuthenticationError(f"{self.provider}: {method} {shown}: {verdict.reason}",
                                              status_code=status, provider_code=verdict.provider_code)
                if verdict is not None and verdict.kind == "fatal":
                    raise FatalError(f"{self.provider}: {method} {shown}: {verdict.reason}",
                                     status_code=status, provider_code=verdict.provider_code)
                expired = status == 401 or (verdict is not None and verdict.kind == "relogin")
                what = f"HTTP {status}" if verdict is None else verdict.reason
                current = auth is not None and self._carries_current_auth(response.request)
                if current and not expired:
                    self._auth_worked = True
                if expired and auth is not None and not current and stale < MAX_STALE_TOKEN_RETRIES:
                    # Sent with a token that another request's 401 already replaced (or is
                    # replacing): sent again with the new one, with no login of its own.
                    stale += 1
                    self._note_retry(method, shown, f"{what} on an earlier token, sent again with the current one",
                                     failures + 1, 0.0)
                    continue
                if expired and auth is not None and (not relogged or (self._auth_worked
                                                                      and relogins < MAX_RELOGINS)):
                    # A 401 right after our own login is final, unless that token had worked
                    # meanwhile (it expired, by time or by calls, while we waited for a slot).
                    auth.invalidate()
                    self._auth_now, self._auth_worked = None, False
                    relogged = True
                    relogins += 1
                    self._note_retry(method, shown, f"{what}, logging in again", failures + 1, 0.0)
                    continue
                if expired:
                    raise AuthenticationError(f"{self.provider}: {method} {shown} was refused ({what})",
                                              status_code=status,
                                              provider_code=None if verdict is None else verdict.provider_code)
                # One fresh login per run of 401s: a token that expires again while this request
                # waits out a 5xx gets a login of its own; a 401 right after a login is final.
                relogged = False
                if verdict is not None:  # "retry"
                    failure = _Failure(verdict.reason, status=status, maybe_applied=verdict.maybe_applied,
                                       provider_code=verdict.provider_code)
                elif status not in RETRY_STATUSES:
                    return response
                else:
                    failure = _Failure(f"HTTP {status}", status=status, retry_after=(
                        retry_after_seconds(response) if status in RETRY_AFTER_STATUSES else None),
                        maybe_applied=status not in NOT_PROCESSED_STATUSES, at_floor=self._floor_hit)
            if failure.maybe_applied and not repeatable:
                raise AnswerLostError(
                    f"{self.provider}: {method} {shown} got no usable answer ({failure.reason}) and may have "
                    "been applied; not sent again", status_code=failure.status,
                    provider_code=failure.provider_code) from failure.cause
            failures += 1
            await self._back_off(method, shown, failures, failure)

    def _redirect_target(self, response: httpx.Response, method: str, shown: str,
                         redirects: int) -> tuple[httpx.URL, str]:
        """Where a redirect leads and with which method, if it stays on the host we were sent to.

        httpx would follow a redirect anywhere and take every header but ``Authorization`` along
        (a secret key in its own header, WapCRM's) and, on a 307/308, the body (Postatr's token):
        so redirects are followed here, only to the same host (same scheme, or http to https), and
        a redirect elsewhere ends the request with one line naming the host, nothing sent there.
        """
        here = response.request.url
        try:
            target = here.join(response.headers["Location"])
        except httpx.InvalidURL:
            raise MalformedAnswerError(f"{self.provider}: {method} {shown} was redirected to an invalid URL",
                                       status_code=response.status_code) from None
        same_host = (target.host == here.host and target.port == here.port
                     and (target.scheme == here.scheme or (here.scheme, target.scheme) == ("http", "https")))
        if not same_host:
            raise FatalError(f"{self.provider}: {method} {shown} was redirected (HTTP {response.status_code}) "
                             f"to another host, {target.host or '?'}: not followed, so no credential goes there; "
                             "check the connection's base_url", status_code=response.status_code)
        if redirects > MAX_REDIRECTS:
            raise FatalError(f"{self.provider}: {method} {shown} was redirected more than {MAX_REDIRECTS} times",
                             status_code=response.status_code)
        status = response.status_code
        if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
            method = "GET"          # what browsers and httpx do
        log.info("http.redirect", provider=self.provider, method=method, url=shown, to=safe_url(target),
                 status=status)
        return target, method

    async def _back_off(self, method: str, shown: str, failures: int, failure: _Failure) -> None:
        """Wait before the next attempt, or raise ``RetriableError`` when there is none."""
        retry_after = failure.retry_after
        if retry_after is not None and retry_after > self.policy.max_retry_after_s:
            raise RetriableError(f"{self.provider}: {method} {shown} is throttled for {retry_after:.0f} s "
                                 f"({failure.reason})", status_code=failure.status, retry_after=retry_after)
        if failures >= self.policy.max_attempts:
            raise RetriableError(
                f"{self.provider}: {method} {shown} failed {failures} times, last: {failure.reason}",
                status_code=failure.status, provider_code=failure.provider_code,
                retry_after=retry_after) from failure.cause
        cap = min(self.policy.backoff_max_s, self.policy.backoff_base_s * 2 ** (failures - 1))
        delay = self._rng.uniform(0, cap)  # full jitter
        if retry_after is not None:
            self.stats.retry_after_waits += 1
            # The refused request waits its Retry-After. The others wait too only for a 503 (the
            # service is down), with a fixed concurrency, or when the adaptive limit was at one
            # request already: otherwise halving what is in flight (AdaptiveLimit) is the slowing
            # down, and one refusal does not stall the connection.
            if failure.status != 429 or not self._adaptive or failure.at_floor:
                self._not_before = max(self._not_before, self._clock() + retry_after)
            delay = max(delay, retry_after)
        self._note_retry(method, shown, failure.reason, failures, delay)
        await self._sleep(delay)

    def _note_retry(self, method: str, shown: str, reason: str, attempt: int, delay: float) -> None:
        self.stats.retries += 1
        log.warning("http.retry", provider=self.provider, method=method, url=shown, reason=reason,
                    attempt=attempt, delay_s=round(delay, 3))
        if ATTEMPT_OBSERVERS:
            _tell_observers(self.provider, "retry", reason, delay)

    def _carries_current_auth(self, request: httpx.Request) -> bool:
        """The request was sent with the auth's current headers (its token was not replaced since)."""
        now = self._auth_now
        return now is not None and all(request.headers.get(name) == value for name, value in now.items())

    async def _send(self, request: httpx.Request, shown: str, attempt: int, *,
                    fresh_auth: bool = False) -> httpx.Response:
        """One attempt: take a slot, wait for our turn, send, log the outcome and adapt the limit.
        ``fresh_auth``: an authenticated request, sent with the auth's newest headers (a token
        renewed while it waited for its slot or turn replaces the one it was built with)."""
        await self.limit.acquire()
        try:
            await self._wait_turn(request.method, shown)
            if fresh_auth and self._auth_now:
                request.headers.update(self._auth_now)
            self.stats.requests += 1
            self.stats.by_method[request.method] += 1
            started = self._clock()
            if self.rate is not None:
                self.rate.sent(started)
            outcome: int | str = "aborted"  # cancelled, or a non-transport error
            try:
                response = await self._client.send(request, follow_redirects=False, stream=True)
                outcome = response.status_code
                await self._read_body(response, shown)
            except httpx.TransportError as exc:
                outcome = type(exc).__name__
                raise
            finally:
                elapsed = self._clock() - started
                log.debug("http.attempt", provider=self.provider, method=request.method, url=shown,
                          status=outcome, elapsed_ms=round(elapsed * 1000, 1), attempt=attempt)
                if ATTEMPT_OBSERVERS:
                    _tell_observers(self.provider, "attempt", outcome, elapsed)
                seen: int | str = outcome
                if self._adaptive and seen != "aborted":
                    overloaded = seen in RETRY_STATUSES if isinstance(seen, int) else seen in _OVERLOAD_ERRORS
                    at_floor = self.limit.answered(started, elapsed, overloaded=overloaded, throttled=seen == 429)
                    if overloaded:      # (read by request() before any other task runs)
                        self._floor_hit = at_floor
                    self.stats.concurrency = self.limit.allowed
                    self.stats.concurrency_peak = self.limit.peak
                    self.stats.concurrency_cuts = self.limit.cuts
                if self.rate is not None and isinstance(seen, int) and self.rate.answered(started, refused=seen == 429):
                    self._rate_changed()
            return response
        finally:
            self.limit.release()

    def _rate_changed(self) -> None:
        assert self.rate is not None
        self.stats.rate_per_s = self.rate.rate
        self.stats.rate_cuts = self.rate.cuts
        self.stats.rate_undone = self.rate.undone
        # Refusals the rate found unchanged at a lower pace are the provider's own: the in-flight
        # limit tolerates them too (a cut of the rate since forgets them).
        self.limit.tolerated = self.stats.steady_share = self.rate.steady_share
        log.debug("http.rate", provider=self.provider, rate_per_s=None if self.rate.rate is None
                  else round(self.rate.rate, 2), cuts=self.rate.cuts, undone=self.rate.undone)
        for observer in RATE_OBSERVERS:
            observer(self.provider, self.rate.rate)

    async def _read_body(self, response: httpx.Response, shown: str) -> None:
        """Read a streamed answer's body, at most ``policy.max_body_bytes`` of it (after decoding:
        a compressed bomb is cut short too)."""
        limit = self.policy.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise MalformedAnswerError(
                        f"{self.provider}: {response.request.method} {shown} answered HTTP {response.status_code} "
                        f"with a body over {limit:,} bytes; not read further", status_code=response.status_code)
                chunks.append(chunk)
        finally:
            await response.aclose()
        response._content = b"".join(chunks)  # what Response.aread() sets; read here with a bound

    async def _wait_turn(self, method: str, shown: str) -> None:
        """Wait until the connection's Retry-After is over, then for a turn of the rate. A turn
        taken before a Retry-After that came meanwhile is taken again after it: the requests held
        by one Retry-After would otherwise all leave together when it ends, a burst the provider
        refuses again."""
        while True:
            while (delay := self._not_before - self._clock()) > 0:
                await self._wait("retry-after", delay, method, shown)
            if self._bucket is not None:
                await self._wait("rate limit", self._bucket.reserve(), method, shown)
            if self.rate is not None:
                before = self.rate.rate
                delay = self.rate.reserve()
                if self.rate.rate != before:    # grown
                    self._rate_changed()
                await self._wait("rate limit", delay, method, shown)
            # Turns are reserved ahead: requests whose turns came while the event loop was busy
            # (a commit, a plan in a worker thread holding the GIL) would leave together, more in
            # one second than the pace, which a provider counting requests in any second refuses.
            # A turn is kept in real time too: one interval of the pace after the request before
            # (taken before the wait, so that requests waiting together leave one after another).
            if interval := self._interval():
                now = self._clock()
                self._last_turn = max(now, self._last_turn + interval)
                await self._wait("rate limit", self._last_turn - now, method, shown)
            if self._not_before <= self._clock():
                return

    def _interval(self) -> float:
        """Seconds between two requests at the connection's pace (0: not paced, or bursts allowed)."""
        if self.policy.burst > 1:
            return 0.0
        rates = [rate for rate in (self._bucket.rate if self._bucket is not None else None,
                                   self.rate.rate if self.rate is not None else None) if rate]
        return 1.0 / min(rates) if rates else 0.0

    async def _wait(self, reason: str, delay: float, method: str, shown: str) -> None:
        """A wait that is not a failure: counted and logged at debug."""
        if delay <= 0:
            return
        self.stats.rate_limited_waits += 1
        self.stats.waited_s += delay
        log.debug("http.wait", provider=self.provider, method=method, url=shown, reason=reason,
                  delay_s=round(delay, 3))
        await self._sleep(delay)
