"""The request rate learnt from 429s (sync/http.py, ``AdaptiveRate``): a 429 paces the requests not
yet sent below what the provider admitted, each window without a cut that used the rate adds a step
back, never above the documented rate; what is in flight is not stalled; the refused request waits
its Retry-After; refusals that do not depend on our pace take a cut back.

Time is virtual everywhere: ``AdaptiveRate`` alone runs on a clock the test moves, and the HTTP layer
runs on ``VirtualTime``, whose sleeps end in order of their deadlines when every task waits. Nothing
asserts a duration measured on the machine; the comparisons with a fixed rate count refusals.
"""

from __future__ import annotations

import asyncio
import heapq
import random
from collections.abc import Coroutine
from itertools import pairwise
from typing import Any, TypeVar

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from sync.errors import RetriableError
from sync.http import RATE_OBSERVERS, AdaptiveRate, HttpPolicy, ProviderHTTP
from sync.providers.postacell import api
from sync.providers.postacell.client import PostacellAuth
from sync.sandbox import PostacellSandbox, Throttle, refusal_of, sandbox_transport

T = TypeVar("T")
USER, PASSWORD = "acme-api", "s3cret-pass"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def send_for(rate: AdaptiveRate, clock: Clock, *, per_s: float, seconds: float, refused_every: int = 0) -> None:
    """Requests sent ``per_s`` a second for ``seconds`` (each taking its turn first), each answered
    at once: admitted, or refused when ``refused_every`` says so."""
    for n in range(1, round(per_s * seconds) + 1):
        clock.now += rate.reserve() + 1.0 / per_s
        rate.sent(clock.now)
        rate.answered(clock.now, refused=bool(refused_every) and n % refused_every == 0)


# --- AdaptiveRate on a clock the test moves ----------------------------------------------------


def test_a_429_cuts_the_rate_below_what_was_admitted_and_windows_without_one_bring_it_back() -> None:
    clock = Clock()
    rate = AdaptiveRate(None, 1, clock)
    send_for(rate, clock, per_s=40, seconds=2)
    assert rate.rate is None                            # no documented rate, no 429: not paced
    clock.now += 0.01
    rate.sent(clock.now)
    assert rate.answered(clock.now, refused=True) is True
    assert rate.rate is not None and rate.rate <= 0.9 * 40 and rate.cuts == 1
    cut = rate.rate
    for _ in range(30):                                 # 30 windows, each using the rate, no refusal
        for _ in range(50):
            clock.now += rate.reserve()                 # the connection waits for its turn
            rate.sent(clock.now)
            rate.answered(clock.now, refused=False)
        clock.now += 0.001
    assert rate.rate > 40 > cut                         # back up, and on past where it was refused


def test_the_learnt_rate_never_exceeds_the_documented_rate() -> None:
    clock = Clock()
    rate = AdaptiveRate(10.0, 1, clock)
    send_for(rate, clock, per_s=10, seconds=1)
    rate.answered(clock.now, refused=True)
    assert rate.rate is not None and rate.rate < 10
    turns = []
    for _ in range(2000):                               # 200 s of demand, far more than 10 a second
        clock.now += rate.reserve()
        turns.append(clock.now)
        rate.sent(clock.now)
        rate.answered(clock.now, refused=False)
        assert rate.rate <= 10.0
    assert rate.rate == 10.0                            # back at the ceiling, never past it
    gaps = [later - earlier for earlier, later in pairwise(turns)]
    assert min(gaps) >= 1 / 10 - 1e-9


def test_refusals_of_requests_sent_within_a_window_of_the_cut_do_not_cut_again() -> None:
    """The provider's window still counts what was sent before the cut."""
    clock = Clock()
    rate = AdaptiveRate(None, 1, clock)
    send_for(rate, clock, per_s=40, seconds=1)
    rate.sent(clock.now)
    rate.answered(clock.now, refused=True)
    cut = rate.rate
    for _ in range(10):
        clock.now += 0.05
        rate.sent(clock.now)
        assert rate.answered(clock.now, refused=True) is False
    assert rate.rate == cut and rate.cuts == 1


def test_a_429_in_a_quiet_moment_cuts_nothing() -> None:
    clock = Clock()
    rate = AdaptiveRate(None, 1, clock)
    rate.sent(clock.now)                                # the token call, alone
    assert rate.answered(clock.now, refused=True) is False
    assert rate.rate is None and rate.cuts == 0


def test_refusals_that_keep_their_share_at_the_lower_rate_take_the_cut_back() -> None:
    """One call in seven refused whatever the pace (the sandbox's --faults) is not a rate limit: the
    cut it caused is taken back, and such refusals cut no more."""
    clock = Clock()
    rate = AdaptiveRate(None, 1, clock)
    send_for(rate, clock, per_s=100, seconds=0.07, refused_every=7)
    assert rate.cuts == 1 and rate.rate is not None
    send_for(rate, clock, per_s=100, seconds=10, refused_every=7)
    assert rate.undone == 1 and rate.rate is None and rate.cuts == 1


def test_an_undone_cut_names_the_steady_share_and_a_later_cut_forgets_it() -> None:
    """The share of refusals that came as often at the lower pace is the provider's own
    (``steady_share``: the in-flight limit tolerates it, the next run starts with it)."""
    clock = Clock()
    rate = AdaptiveRate(None, 1, clock)
    assert rate.steady_share is None
    send_for(rate, clock, per_s=100, seconds=0.07, refused_every=7)
    assert rate.cuts == 1 and rate.steady_share is None
    send_for(rate, clock, per_s=100, seconds=10, refused_every=7)
    assert rate.undone == 1 and rate.steady_share is not None and 0.1 < rate.steady_share < 0.2
    # Refusals fall to one in fifty, under half of that share: cut again (see the class); the cut
    # forgets the steady share (stopped right after it, before it may be taken back in turn).
    sent = 0
    while rate.cuts < 2 and sent < 10_000:
        sent += 1
        send_for(rate, clock, per_s=100, seconds=0.01, refused_every=1 if sent % 50 == 0 else 0)
    assert rate.cuts == 2 and rate.steady_share is None


def test_a_run_that_starts_with_the_steady_share_is_not_cut_by_refusals_at_it() -> None:
    clock = Clock()
    rate = AdaptiveRate(None, 1, clock, start_share=1 / 7)
    assert rate.steady_share == pytest.approx(1 / 7)
    send_for(rate, clock, per_s=100, seconds=5, refused_every=7)
    assert rate.cuts == 0 and rate.rate is None
    fresh = AdaptiveRate(None, 1, Clock())
    send_for(fresh, fresh._clock, per_s=100, seconds=0.07, refused_every=7)   # type: ignore[arg-type]
    assert fresh.cuts == 1                                   # without it, the first refusals cut


def test_a_documented_rate_paces_like_a_token_bucket_until_a_429() -> None:
    clock = Clock()
    rate = AdaptiveRate(4.0, 3, clock)
    assert [rate.reserve() for _ in range(5)] == [0.0, 0.0, 0.0, 0.25, 0.5]
    clock.now += 10
    assert [rate.reserve(), rate.reserve(), rate.reserve(), rate.reserve()] == [0.0, 0.0, 0.0, 0.25]


def test_a_run_starts_at_the_rate_the_last_one_learnt_and_grows_from_there_as_after_a_cut() -> None:
    clock = Clock()
    rate = AdaptiveRate(None, 1, clock, start=5.0)
    assert [rate.reserve() for _ in range(3)] == pytest.approx([0.0, 0.2, 0.4])     # paced from the first request
    clock.now += 1.0
    send_for(rate, clock, per_s=100, seconds=0.15)     # 15 requests asking for more than 5/s: ~3 s
    assert rate.rate is not None and 5.0 < rate.rate < 5.5     # a small step a second, as after a cut
    documented = AdaptiveRate(10.0, 1, clock, start=12.0)       # never above the documented rate
    assert documented.rate == 10.0
    assert AdaptiveRate(10.0, 1, clock, start=0.01).rate == AdaptiveRate.MIN_RATE


# --- the HTTP layer, on virtual time -----------------------------------------------------------


class VirtualTime:
    """Sleeps end in order of their deadlines, once every task of the loop is waiting."""

    #: Loop turns given to the tasks before the clock moves (the in-process transports do no I/O).
    SETTLE = 30

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self._due: list[tuple[float, int, asyncio.Future[None]]] = []
        self._n = 0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        self._n += 1
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._due, (self.now + seconds, self._n, waiter))
        await waiter

    def run(self, scenario: Coroutine[Any, Any, T]) -> T:
        async def drive() -> T:
            task = asyncio.ensure_future(scenario)
            while not task.done():
                for _ in range(self.SETTLE):
                    await asyncio.sleep(0)
                if task.done():
                    break
                assert self._due, "every task waits, and no sleep is due: a deadlock"
                at, _, waiter = heapq.heappop(self._due)
                self.now = max(self.now, at)
                if not waiter.done():
                    waiter.set_result(None)
            return task.result()

        return asyncio.run(drive())


def test_a_429_does_not_stall_what_is_in_flight_and_the_refused_request_waits_its_retry_after() -> None:
    """Issue 24, item 5, with the rate on: six requests are in flight when the seventh is refused
    (Retry-After 10). The rate is cut, the six come back at once, and only the refused one waits."""
    time = VirtualTime()
    gate = asyncio.Event()
    sent: list[tuple[str, float]] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        sent.append((request.url.path, time.now))
        if request.url.path == "/v1/refused" and len([p for p, _ in sent if p == "/v1/refused"]) == 1:
            return httpx.Response(429, headers={"Retry-After": "10"})
        if request.url.path.startswith("/v1/held"):
            await gate.wait()
        return httpx.Response(200)

    async def scenario() -> tuple[list[float], ProviderHTTP]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            http = ProviderHTTP(client, provider="testesp", base_url="https://api.example.test/v1/",
                                policy=HttpPolicy(concurrency=8, start_concurrency=8), sleep=time.sleep,
                                clock=time.clock)
            done: list[float] = []

            async def held(n: int) -> None:
                assert (await http.request("GET", f"held/{n}")).status_code == 200
                done.append(time.now)

            holders = [asyncio.create_task(held(n)) for n in range(6)]
            while len(sent) < 6:
                await asyncio.sleep(0)
            refused = asyncio.create_task(http.request("GET", "refused"))
            while http.stats.rate_cuts == 0:
                await asyncio.sleep(0)
            assert http.rate is not None and http.rate.rate is not None       # cut: paced from now on
            assert http.stats.rate_per_s == http.rate.rate
            gate.set()
            await asyncio.gather(*holders)
            assert (await refused).status_code == 200
            return done, http

    started = time.now
    done, http = time.run(scenario())
    assert done == [started] * 6                            # the six were not held back at all
    first, again = (at for path, at in sent if path == "/v1/refused")
    assert first == started and again - first >= 10        # the refused one waited its Retry-After
    assert http.stats.rate_cuts == 1


def test_the_learnt_rate_is_told_to_its_observers() -> None:
    seen: list[tuple[str, float | None]] = []
    RATE_OBSERVERS.append(lambda provider, rate: seen.append((provider, rate)))
    try:
        test_a_429_does_not_stall_what_is_in_flight_and_the_refused_request_waits_its_retry_after()
    finally:
        RATE_OBSERVERS.pop()
    assert seen and seen[0][0] == "testesp" and seen[0][1] is not None


# --- against the Postacell sandbox behind a throttling gateway ----------------------------------


def _network(app: Throttle, time: VirtualTime, jitter_s: float, seed: int) -> Any:
    """The way to the gateway: each request arrives up to ``jitter_s`` late (seeded), so requests
    paced evenly when they leave arrive bunched, as over a real network on a loaded machine."""
    rng = random.Random(seed)

    async def network(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and jitter_s:
            await time.sleep(rng.uniform(0, jitter_s))
        await app(scope, receive, send)

    return network


def _throttled_run(*, adaptive_rate: bool, documented: float | None, limit: float, jitter_s: float,
                   requests: int, concurrency: int = 4, seed: int = 5, start: float | None = None
                   ) -> tuple[int, int, int, ProviderHTTP]:
    """``requests`` list reads from 8 workers through our HTTP layer to the Postacell sandbox behind
    a gateway admitting ``limit`` a second with 30 ms of latency: the gateway's (received, refused),
    and the reads given up after ``max_attempts`` refusals."""
    time = VirtualTime()
    gave_up: list[int] = []
    sandbox = PostacellSandbox({USER: PASSWORD})
    gateway = Throttle(sandbox.app, latency_s=0.03, rate_per_s=limit, refusal=refusal_of(sandbox),
                       clock=time.clock, sleep=time.sleep)

    async def scenario() -> ProviderHTTP:
        transport = sandbox_transport(_network(gateway, time, jitter_s, seed))
        async with httpx.AsyncClient(transport=transport) as client:
            http = ProviderHTTP(client, provider="postacell", base_url="http://sandbox/api/v1/",
                                policy=HttpPolicy(concurrency=concurrency, rate_per_s=documented,
                                                  adaptive_rate=adaptive_rate, start_rate_per_s=start),
                                auth=PostacellAuth(USER, PASSWORD), sleep=time.sleep, clock=time.clock)
            left = list(range(requests))

            async def worker() -> None:
                while left:
                    left.pop()
                    try:
                        assert (await http.request("GET", api.LIST_FILTER_PATH)).status_code == 200
                    except RetriableError:
                        gave_up.append(1)

            await asyncio.gather(*(worker() for _ in range(8)))
            return http

    http = time.run(scenario())
    assert gateway.stats.admitted == requests + 1 - len(gave_up)    # every read, and the one login
    return gateway.stats.received, gateway.stats.refused, len(gave_up), http


@pytest.mark.parametrize(("case", "documented", "limit", "jitter_s", "requests"), [
    ("no documented rate (Euromsg, MailMasterPlus), a gateway at 40/s", None, 40.0, 0.02, 600),
    ("pacing at the documented 10/s (Postacell), arrivals bunched", 10.0, 10.0, 0.05, 200),
])
def test_against_a_throttling_gateway_the_learnt_rate_is_refused_less_than_a_fixed_one(
        case: str, documented: float | None, limit: float, jitter_s: float, requests: int) -> None:
    _, fixed_refused, _, fixed = _throttled_run(adaptive_rate=False, documented=documented, limit=limit,
                                             jitter_s=jitter_s, requests=requests)
    received, refused, gave_up, learnt = _throttled_run(adaptive_rate=True, documented=documented, limit=limit,
                                               jitter_s=jitter_s, requests=requests)
    assert fixed_refused > 0 and fixed.rate is None
    assert refused * 3 <= fixed_refused, case               # at least three times fewer refusals
    assert refused <= 0.03 * received and gave_up == 0, case
    assert learnt.stats.rate_cuts >= 1 and learnt.stats.rate_per_s is not None
    assert documented is None or learnt.stats.rate_per_s <= documented


def test_a_short_run_that_starts_at_the_learnt_rate_is_hardly_refused() -> None:
    """Each run used to start unpaced (no documented rate): a short run met the gateway's limit
    again and again. Started where the run before ended, it is paced from its first request."""
    _, first_refused, _, first = _throttled_run(adaptive_rate=True, documented=None, limit=40.0,
                                                       jitter_s=0.02, requests=150)
    assert first_refused > 0 and first.stats.rate_per_s is not None
    _, refused, gave_up, second = _throttled_run(adaptive_rate=True, documented=None, limit=40.0, jitter_s=0.02,
                                                 requests=150, seed=6, start=first.stats.rate_per_s)
    assert refused * 3 <= first_refused and gave_up == 0, (first_refused, refused)
    assert second.stats.rate_per_s is not None
