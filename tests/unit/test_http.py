"""The shared provider HTTP layer: retries, Retry-After, limits, re-login and secret-free errors.

Providers are faked with stateful ``httpx.MockTransport`` handlers; time is a fake clock
that moves only when the code under test sleeps, so nothing here really waits.
"""

from __future__ import annotations

import asyncio
import random
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from itertools import pairwise
from typing import Any, TypeVar

import httpx
import pytest
import structlog.testing

from sync.errors import (
    AnswerLostError,
    AuthenticationError,
    ConfigurationError,
    FatalError,
    MalformedAnswerError,
    RetriableError,
)
from sync.http import (
    AdaptiveLimit,
    Auth,
    HttpPolicy,
    ProviderHTTP,
    TokenBucket,
    Verdict,
    describe,
    json_of,
    retry_after_seconds,
    safe_url,
)

BASE_URL = "https://api.example.test/v1/"

Outcome = httpx.Response | Exception | int
T = TypeVar("T")


class FakeTime:
    """A monotonic clock that moves only when someone sleeps; concurrent sleeps overlap."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.sleeping = asyncio.Event()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        target = self.now + seconds
        self.sleeping.set()
        await asyncio.sleep(0)  # let other tasks run (and start their own waits) at this instant
        self.now = max(self.now, target)


class UpperBound(random.Random):
    """Makes full jitter deterministic: always the largest delay allowed."""

    def uniform(self, a: float, b: float) -> float:
        return b


class Script:
    """A stateful provider: answers the n-th request with the n-th outcome (the last repeats)."""

    def __init__(self, time: FakeTime, *outcomes: Outcome) -> None:
        self.time = time
        self.outcomes = list(outcomes)
        self.sent: list[tuple[float, httpx.Request]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append((self.time.now, request))
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, Exception):
            raise outcome
        if isinstance(outcome, int):
            return httpx.Response(outcome, json={"detail": f"status {outcome}"})
        return outcome

    @property
    def times(self) -> list[float]:
        return [at for at, _ in self.sent]


@asynccontextmanager
async def provider_http(handler: Callable[[httpx.Request], Any], time: FakeTime, *,
                        base_url: str = BASE_URL, auth: Auth | None = None,
                        rng: random.Random | None = None, **policy: Any) -> AsyncIterator[ProviderHTTP]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        yield ProviderHTTP(client, provider="testesp", base_url=base_url, policy=HttpPolicy(**policy),
                           auth=auth, sleep=time.sleep, clock=time.clock, rng=rng or UpperBound())


def run(scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(scenario())


class TokenAuth:
    """Logs in through the layer itself (POST login, unauthenticated) and caches the token."""

    def __init__(self) -> None:
        self.token: str | None = None
        self.logins = 0
        self.invalidations = 0

    async def headers(self, http: ProviderHTTP) -> Mapping[str, str]:
        if self.token is None:
            response = await http.request("POST", "login", json={"user": "u"}, authenticated=False)
            self.token = response.json()["token"]
            self.logins += 1
        return {"Authorization": f"Bearer {self.token}"}

    def invalidate(self) -> None:
        self.token = None
        self.invalidations += 1


# --- retries ---------------------------------------------------------------------------------


def test_server_errors_are_retried_until_success() -> None:
    time = FakeTime()
    script = Script(time, 500, 502, 503, 504, httpx.Response(200, json={"ok": True}))

    async def scenario() -> httpx.Response:
        async with provider_http(script, time) as http:
            response = await http.request("get", "lists")
            assert (http.stats.requests, http.stats.retries, http.stats.by_method["GET"]) == (5, 4, 5)
            return response

    response = run(scenario)
    assert response.json() == {"ok": True}
    assert time.sleeps == [0.5, 1.0, 2.0, 4.0]  # exponential, capped by UpperBound at the maximum
    assert str(script.sent[0][1].url) == "https://api.example.test/v1/lists"


def test_transport_errors_are_retried() -> None:
    time = FakeTime()
    script = Script(time, httpx.ConnectError("refused"), httpx.ReadTimeout("slow"),
                    httpx.RemoteProtocolError("dropped"), httpx.ReadError("reset"), 200)

    async def scenario() -> httpx.Response:
        async with provider_http(script, time) as http:
            return await http.request("GET", "lists")

    assert run(scenario).status_code == 200
    assert len(script.sent) == 5


def test_backoff_is_full_jitter_below_an_exponential_cap() -> None:
    time = FakeTime()
    script = Script(time, 503)

    async def scenario() -> None:
        async with provider_http(script, time, rng=random.Random(7), max_attempts=8,
                                 backoff_base_s=1.0, backoff_max_s=10.0) as http:
            with pytest.raises(RetriableError):
                await http.request("GET", "lists")

    run(scenario)
    caps = [1, 2, 4, 8, 10, 10, 10]
    assert len(time.sleeps) == len(caps)
    assert all(0 <= slept <= cap for slept, cap in zip(time.sleeps, caps, strict=True))
    assert len(set(time.sleeps)) == len(caps)  # jittered, not a fixed ladder


def test_gives_up_after_max_attempts_with_retriable_error() -> None:
    time = FakeTime()
    script = Script(time, 503)

    async def scenario() -> None:
        async with provider_http(script, time, max_attempts=3) as http:
            with pytest.raises(RetriableError) as caught:
                await http.request("PUT", "lists/1", json={"title": "x"})
            assert caught.value.status_code == 503
            assert caught.value.retry_after is None
            assert "failed 3 times" in str(caught.value)

    run(scenario)
    assert len(script.sent) == 3
    assert len(time.sleeps) == 2


def test_giving_up_on_transport_errors_keeps_the_cause() -> None:
    time = FakeTime()
    script = Script(time, httpx.ConnectError("refused"))

    async def scenario() -> None:
        async with provider_http(script, time, max_attempts=2) as http:
            with pytest.raises(RetriableError) as caught:
                await http.request("GET", "lists")
            assert isinstance(caught.value.__cause__, httpx.ConnectError)
            assert caught.value.status_code is None

    run(scenario)


# --- Retry-After -----------------------------------------------------------------------------


def test_retry_after_seconds_is_honoured() -> None:
    time = FakeTime()
    script = Script(time, httpx.Response(429, headers={"Retry-After": "7"}), 200)

    async def scenario() -> None:
        async with provider_http(script, time) as http:
            assert (await http.request("GET", "lists")).status_code == 200

    run(scenario)
    assert script.times[1] - script.times[0] >= 7


def test_retry_after_http_date_is_measured_from_the_response_date() -> None:
    time = FakeTime()
    server_now = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    throttled = httpx.Response(503, headers={
        "Date": format_datetime(server_now, usegmt=True),
        "Retry-After": format_datetime(server_now + timedelta(seconds=12), usegmt=True),
    })
    script = Script(time, throttled, 200)

    async def scenario() -> None:
        async with provider_http(script, time) as http:
            assert (await http.request("GET", "lists")).status_code == 200

    run(scenario)
    assert script.times[1] - script.times[0] >= 12


def test_retry_after_holds_back_every_request_of_a_fixed_concurrency_connection() -> None:
    """With a fixed concurrency (no adaptive limit to halve), a request started while another one
    waits out its Retry-After is not sent before it ends."""
    time = FakeTime()

    def handler(request: httpx.Request) -> httpx.Response:
        first = not script.sent
        script.sent.append((time.now, request))
        return httpx.Response(429, headers={"Retry-After": "10"}) if first else httpx.Response(200)

    script = Script(time, 200)  # used as a log of what was sent
    started = time.now

    async def scenario() -> None:
        async with provider_http(handler, time, adaptive=False) as http:
            first = asyncio.create_task(http.request("GET", "a"))
            await time.sleeping.wait()  # "a" got its 429 and waits now
            assert (await http.request("GET", "b")).status_code == 200
            assert (await first).status_code == 200
            assert http.stats.rate_limited_waits == 1

    run(scenario)
    sent = {request.url.path: at for at, request in script.sent}
    assert len(script.sent) == 3
    assert sent["/v1/b"] - started >= 10
    assert sent["/v1/a"] - started >= 10


def _first_refused(**policy: Any) -> tuple[dict[str, float], ProviderHTTP]:
    """Request "a" is answered 429 with ``Retry-After: 10`` once; "b" is sent while "a" waits it out.
    When each was sent last, counted from the start, and the HTTP layer after both answered."""
    time = FakeTime()

    def handler(request: httpx.Request) -> httpx.Response:
        first = not script.sent
        script.sent.append((time.now, request))
        return httpx.Response(429, headers={"Retry-After": "10"}) if first else httpx.Response(200)

    script = Script(time, 200)
    started = time.now

    async def scenario() -> ProviderHTTP:
        async with provider_http(handler, time, **policy) as http:
            first = asyncio.create_task(http.request("GET", "a"))
            await time.sleeping.wait()  # "a" got its 429 and waits now
            assert (await http.request("GET", "b")).status_code == 200
            assert (await first).status_code == 200
            return http

    http = run(scenario)
    return {request.url.path: at - started for at, request in script.sent}, http


def test_a_429_halves_what_is_in_flight_instead_of_stalling_the_connection() -> None:
    """Issue 24, item 5: one 429 paused every request of the connection (Euromsg and
    MailMasterPlus fell to about 6 requests/s with one 429 in seven calls). Now the refused
    request waits its Retry-After, the adaptive limit halves, and the others go on at once."""
    sent, http = _first_refused(concurrency=4, start_concurrency=4)
    assert http.limit.allowed == 2 and http.stats.concurrency_cuts == 1
    assert http.stats.rate_limited_waits == 0     # nobody waited for another's Retry-After
    assert sent["/v1/b"] == 0                      # not held back
    assert sent["/v1/a"] >= 10                     # the refused request waited its Retry-After


def test_a_429_at_one_request_in_flight_holds_back_the_whole_connection() -> None:
    """Below one request in flight only waiting slows down further: at the floor, the Retry-After
    holds back every request of the connection, as with a fixed concurrency."""
    sent, _http = _first_refused(concurrency=4, start_concurrency=1)
    assert sent["/v1/b"] >= 10


def test_a_429_at_one_request_in_flight_holds_nothing_back_when_its_share_is_tolerated() -> None:
    """Refusals an earlier run found to come whatever its pace (``start_steady_share``, one call in
    seven refused by a provider at any load): the refused request waits its Retry-After alone, even
    at one request in flight, and the limit is not cut. Before, a no-change Euromsg run with one
    call in seven refused waited its 7 refusals one after another, 8 s for 48 requests."""
    sent, http = _first_refused(concurrency=4, start_concurrency=1, start_steady_share=1 / 7)
    assert http.stats.concurrency_cuts == 0 and http.stats.rate_limited_waits == 0
    assert sent["/v1/b"] == 0                      # not held back
    assert sent["/v1/a"] >= 10                     # the refused request waited its Retry-After


def test_a_503_retry_after_holds_back_the_whole_connection() -> None:
    """A 503 with Retry-After says the service is down: everybody waits, whatever the limit."""
    time = FakeTime()

    def handler(request: httpx.Request) -> httpx.Response:
        first = not script.sent
        script.sent.append((time.now, request))
        return httpx.Response(503, headers={"Retry-After": "10"}) if first else httpx.Response(200)

    script = Script(time, 200)
    started = time.now

    async def scenario() -> None:
        async with provider_http(handler, time, concurrency=4, start_concurrency=4) as http:
            first = asyncio.create_task(http.request("GET", "a"))
            await time.sleeping.wait()
            assert (await http.request("GET", "b")).status_code == 200
            assert (await first).status_code == 200

    run(scenario)
    sent = {request.url.path: at for at, request in script.sent}
    assert sent["/v1/b"] - started >= 10


def test_retry_after_longer_than_the_policy_allows_fails_at_once() -> None:
    time = FakeTime()
    script = Script(time, httpx.Response(429, headers={"Retry-After": "3600"}), 200)

    async def scenario() -> None:
        async with provider_http(script, time, max_retry_after_s=300) as http:
            with pytest.raises(RetriableError) as caught:
                await http.request("GET", "lists")
            assert (caught.value.status_code, caught.value.retry_after) == (429, 3600)

    run(scenario)
    assert len(script.sent) == 1
    assert time.sleeps == []


@pytest.mark.parametrize(("headers", "expected"), [
    ({"Retry-After": "120"}, 120.0),
    ({"Retry-After": " 1.5 "}, 1.5),
    ({"Retry-After": "-3"}, 0.0),
    ({"Retry-After": "soon"}, None),
    ({"Retry-After": "nan"}, None),
    ({}, None),
    ({"Date": "Sat, 01 Mar 2025 12:00:00 GMT", "Retry-After": "Sat, 01 Mar 2025 11:59:00 GMT"}, 0.0),
])
def test_retry_after_parsing(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_seconds(httpx.Response(429, headers=headers)) == expected


# --- auth ------------------------------------------------------------------------------------


def test_401_invalidates_the_token_and_retries_once_with_a_fresh_one() -> None:
    time = FakeTime()
    tokens = iter(["stale", "fresh"])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/login":
            assert "Authorization" not in request.headers
            return httpx.Response(200, json={"token": next(tokens)})
        ok = request.headers["Authorization"] == "Bearer fresh"
        return httpx.Response(200, json={"ok": True}) if ok else httpx.Response(401)

    auth = TokenAuth()

    async def scenario() -> None:
        # concurrency=1: the login inside auth.headers must not wait for a slot held by its caller
        async with provider_http(handler, time, auth=auth, concurrency=1) as http:
            assert (await http.request("GET", "lists")).json() == {"ok": True}

    run(scenario)
    assert (auth.logins, auth.invalidations) == (2, 1)


def test_second_401_is_an_authentication_error() -> None:
    time = FakeTime()
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path == "/v1/login":
            return httpx.Response(200, json={"token": "t"})
        return httpx.Response(401)

    auth = TokenAuth()

    async def scenario() -> None:
        async with provider_http(handler, time, auth=auth) as http:
            with pytest.raises(AuthenticationError) as caught:
                await http.request("GET", "lists")
            assert caught.value.status_code == 401

    run(scenario)
    assert paths == ["/v1/login", "/v1/lists", "/v1/login", "/v1/lists"]


def test_401_on_an_unauthenticated_request_is_an_authentication_error() -> None:
    time = FakeTime()
    script = Script(time, 401)

    async def scenario() -> None:
        async with provider_http(script, time, auth=TokenAuth()) as http:
            with pytest.raises(AuthenticationError):
                await http.request("POST", "login", authenticated=False)

    run(scenario)
    assert len(script.sent) == 1


def test_client_errors_are_returned_to_the_caller() -> None:
    time = FakeTime()
    script = Script(time, httpx.Response(400, json={"email": ["Enter a valid email address."]}))

    async def scenario() -> httpx.Response:
        async with provider_http(script, time) as http:
            return await http.request("POST", "subscribers", json={"email": "nope"})

    response = run(scenario)
    assert response.status_code == 400
    assert describe(response) == "email: Enter a valid email address."
    assert len(script.sent) == 1


# --- rate limit and concurrency --------------------------------------------------------------


@pytest.mark.parametrize("burst", [1, 3])
def test_rate_limit_spaces_requests(burst: int) -> None:
    time = FakeTime()
    script = Script(time, 200)
    count, rate = 10, 4.0
    started = time.now

    async def scenario() -> None:
        async with provider_http(script, time, rate_per_s=rate, burst=burst) as http:
            await asyncio.gather(*(http.request("GET", f"item/{n}") for n in range(count)))
            assert http.stats.rate_limited_waits == count - burst

    run(scenario)
    assert script.times[-1] - started >= (count - burst) / rate
    assert script.times[-1] - started == pytest.approx((count - burst) / rate)  # and no slower
    gaps = [later - earlier for earlier, later in pairwise(script.times[burst - 1:])]
    assert all(gap >= 1 / rate - 1e-9 for gap in gaps)


class StallingTime(FakeTime):
    """A clock whose first sleep ends late: the event loop was busy (a commit, a plan holding the GIL)."""

    def __init__(self, stall: float) -> None:
        super().__init__()
        self.stall = stall

    async def sleep(self, seconds: float) -> None:
        stall, self.stall = self.stall, 0.0
        await super().sleep(seconds + stall)


def test_turns_that_came_while_the_loop_was_busy_leave_one_interval_apart() -> None:
    """Turns are reserved ahead; requests whose turns all came while the loop was busy left
    together (a burst a provider counting requests in any second refuses): they leave one interval
    of the pace apart, as if the loop had been on time."""
    time = StallingTime(stall=2.0)
    script = Script(time, 200)
    rate = 4.0

    async def scenario() -> None:
        async with provider_http(script, time, rate_per_s=rate, concurrency=8) as http:
            await asyncio.gather(*(http.request("GET", f"item/{n}") for n in range(8)))

    run(scenario)
    gaps = [later - earlier for earlier, later in pairwise(script.times)]
    assert min(gaps) >= 1 / rate - 1e-9, gaps


def test_token_bucket_refills_while_idle() -> None:
    now = [0.0]
    bucket = TokenBucket(2.0, 2, lambda: now[0])
    assert [bucket.reserve(), bucket.reserve(), bucket.reserve()] == [0.0, 0.0, 0.5]
    now[0] = 10.0
    assert [bucket.reserve(), bucket.reserve()] == [0.0, 0.0]  # refilled, but never above burst
    assert bucket.reserve() == 0.5


def test_concurrency_never_exceeds_the_limit() -> None:
    time = FakeTime()
    limit = 3
    in_flight = 0
    most = 0

    async def scenario() -> None:
        full, gate = asyncio.Event(), asyncio.Event()

        async def handler(request: httpx.Request) -> httpx.Response:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            if in_flight == limit:
                full.set()
            await gate.wait()  # hold every request in flight until the gate opens
            in_flight -= 1
            return httpx.Response(200)

        async with provider_http(handler, time, concurrency=limit, adaptive=False) as http:
            requests = asyncio.gather(*(http.request("GET", f"item/{n}") for n in range(10)))
            async with asyncio.timeout(1):  # real seconds, only ever reached if the test is broken
                await full.wait()
            await asyncio.sleep(0)  # give a request over the limit its chance to get in
            gate.set()
            await requests
            assert http.stats.requests == 10

    run(scenario)
    assert most == limit


def test_the_adaptive_limit_starts_low_grows_on_fast_answers_and_never_passes_its_ceiling() -> None:
    time = FakeTime()
    in_flight = 0
    most: list[int] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight
        in_flight += 1
        most.append(in_flight)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        in_flight -= 1
        return httpx.Response(200)

    async def scenario() -> None:
        async with provider_http(handler, time, concurrency=5, start_concurrency=2) as http:
            await asyncio.gather(*(http.request("GET", f"item/{n}") for n in range(12)))
            assert max(most[:2]) <= 2                      # started low
            await asyncio.gather(*(http.request("GET", f"item/{n}") for n in range(200)))
            assert http.limit.allowed == 5 and http.stats.concurrency_peak == 5

    run(scenario)
    assert max(most) == 5


def test_a_refusal_cuts_the_limit_once_per_round_and_never_below_one() -> None:
    clock = FakeTime()
    limit = AdaptiveLimit(ceiling=8, start=8, clock=clock.clock)
    sent_before_the_cut = clock.now
    clock.now += 1
    assert limit.answered(sent_before_the_cut, 0.1, overloaded=True) is False
    assert limit.allowed == 4
    clock.now += 1
    # Answers to requests sent before the cut saw the old limit: they do not cut again.
    assert limit.answered(sent_before_the_cut, 0.1, overloaded=True) is False
    assert limit.allowed == 4
    for _ in range(4):
        clock.now += 1
        limit.answered(clock.now, 0.1, overloaded=True)
    assert limit.allowed == 1 and limit.cuts == 3     # 8 -> 4 -> 2 -> 1, then nothing left to halve
    clock.now += 1
    assert limit.answered(clock.now, 0.1, overloaded=True) is True    # at the floor: nothing left to halve
    assert limit.allowed == 1


def test_an_isolated_refusal_among_good_answers_takes_off_a_little_not_half() -> None:
    """A provider that refuses one call now and then (one in seven, in the bench's --faults) is not
    overloaded: the cut is half the share of refusals since the last cut (DCTCP's), so the limit
    does not collapse to a request or two; a round of refusals only still halves it."""
    clock = FakeTime()
    limit = AdaptiveLimit(ceiling=16, start=16, clock=clock.clock)
    for _ in range(13):
        limit.answered(clock.now, 0.03, overloaded=False)
    clock.now += 1
    limit.answered(clock.now, 0.03, overloaded=True)       # 1 refusal in 14 answers: x (1 - 1/28)
    assert limit.cuts == 1 and 15.0 < limit.limit < 16.0 and limit.allowed == 15
    clock.now += 1
    limit.answered(clock.now, 0.03, overloaded=True)       # nothing but a refusal since: halved
    assert limit.cuts == 2 and limit.allowed == 7


def test_refusals_within_the_tolerated_share_cut_nothing_and_more_of_them_cut_as_before() -> None:
    """``AdaptiveLimit.tolerated``: the share of refusals known to come whatever our load. One call
    in seven refused keeps the limit at its ceiling (cut 831 times in a 10,000-member Euromsg run
    before, down to 10 of 16); twice that share or more is overload again, and cuts."""
    clock = FakeTime()
    limit = AdaptiveLimit(ceiling=16, start=16, clock=clock.clock)
    limit.tolerated = 1 / 7
    for n in range(1, 701):
        clock.now += 0.01
        assert limit.answered(clock.now, 0.03, overloaded=n % 7 == 0) is False
    assert limit.cuts == 0 and limit.allowed == 16
    for _ in range(40):                                     # then nothing but refusals
        clock.now += 0.01
        limit.answered(clock.now, 0.03, overloaded=True)
    assert limit.cuts > 0 and limit.allowed < 8


def _tolerating(ceiling: int, good: int) -> tuple[FakeTime, AdaptiveLimit]:
    """A limit at its ceiling that tolerates one refusal in seven, after ``good`` answers, a second later."""
    clock = FakeTime()
    limit = AdaptiveLimit(ceiling=ceiling, start=ceiling, clock=clock.clock)
    limit.tolerated = 1 / 7
    for _ in range(good):
        limit.answered(clock.now, 0.03, overloaded=False)
    clock.now += 1
    return clock, limit


def test_a_5xx_is_never_tolerated() -> None:
    """The tolerated share is of 429s: a 5xx or a timeout at any share cuts as before."""
    clock, limit = _tolerating(16, 13)
    limit.answered(clock.now, 0.03, overloaded=True, throttled=False)
    assert limit.cuts == 1


def test_a_tolerated_refusal_at_one_request_in_flight_is_not_the_floor() -> None:
    """At one request in flight a refusal says "nothing left to slow down" (the Retry-After then
    holds the whole connection), unless its share is the provider's own."""
    clock, limit = _tolerating(1, 6)
    assert limit.answered(clock.now, 0.03, overloaded=True) is False
    limit.tolerated = None
    clock.now += 1
    assert limit.answered(clock.now, 0.03, overloaded=True) is True


def test_a_slow_answer_stops_the_increase_but_never_cuts() -> None:
    clock = FakeTime()
    limit = AdaptiveLimit(ceiling=8, start=2, clock=clock.clock)
    limit.answered(0.0, 0.02, overloaded=False)
    grown = limit.limit
    limit.answered(0.0, 5.0, overloaded=False)      # a bulk import, say
    assert limit.limit == grown


def test_a_waiter_cancelled_after_it_was_woken_passes_the_slot_on() -> None:
    async def scenario() -> None:
        limit = AdaptiveLimit(ceiling=1, start=1, clock=FakeTime().clock)
        await limit.acquire()
        second = asyncio.create_task(limit.acquire())
        third = asyncio.create_task(limit.acquire())
        await asyncio.sleep(0)
        limit.release()             # wakes the second ...
        second.cancel()             # ... which is cancelled before it runs
        await asyncio.sleep(0)
        async with asyncio.timeout(1):
            await third             # the third gets the slot
        assert limit.in_flight == 1

    run(scenario)


# --- secrets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("failure", [503, httpx.ConnectError("connection refused"), 401])
def test_secrets_never_reach_exceptions_or_logs(failure: Outcome) -> None:
    """A bearer token, an api key in the query and a password in a URL's userinfo stay hidden."""
    time = FakeTime()
    script = Script(time, failure)
    token, password, api_key = "tok-SECRET-1", "pw-SECRET-2", "key-SECRET-3"

    class StaticAuth:
        async def headers(self, http: ProviderHTTP) -> Mapping[str, str]:
            return {"Authorization": f"Bearer {token}"}

        def invalidate(self) -> None:
            pass

    async def scenario() -> list[BaseException]:
        errors: list[BaseException] = []
        async with provider_http(script, time, auth=StaticAuth(), max_attempts=2) as http:
            for url in ("lists", f"https://user:{password}@files.example.test/export.csv"):
                with pytest.raises((RetriableError, AuthenticationError)) as caught:
                    await http.request("GET", url, params={"api_key": api_key})
                errors.append(caught.value)
        return errors

    with structlog.testing.capture_logs() as logs:
        errors = run(scenario)

    sent = [request for _, request in script.sent]
    assert sent[0].headers["Authorization"] == f"Bearer {token}"  # the secrets did go out
    assert sent[0].url.params["api_key"] == api_key
    assert sent[-1].url.password == password
    texts = ["".join(traceback.format_exception(error)) + repr(error) for error in errors] + [repr(logs)]
    for text in texts:
        for secret in (token, password, api_key):
            assert secret not in text
    assert "api.example.test/v1/lists" in str(errors[0])
    assert "files.example.test/export.csv" in str(errors[1])
    assert any(entry["log_level"] == "warning" and entry["event"] == "http.retry" for entry in logs)
    assert {entry["url"] for entry in logs} == {"api.example.test/v1/lists", "files.example.test/export.csv"}


def test_safe_url_keeps_only_host_and_path() -> None:
    assert safe_url("https://u:p@api.example.test:8443/v1/x?key=1#frag") == "api.example.test:8443/v1/x"
    assert safe_url(httpx.URL("https://api.example.test/v1/x?key=1")) == "api.example.test/v1/x"


# --- URLs, policy, describe ------------------------------------------------------------------


def test_relative_paths_join_the_base_and_absolute_links_are_kept() -> None:
    time = FakeTime()
    script = Script(time, 200)

    async def scenario() -> None:
        async with provider_http(script, time, base_url="https://api.example.test/v1") as http:
            await http.request("GET", "email/list-filter/", params={"page": 2})
            await http.request("GET", "https://cdn.example.test/exports/1.csv?sig=abc")

    run(scenario)
    assert [str(request.url) for _, request in script.sent] == [
        "https://api.example.test/v1/email/list-filter/?page=2",
        "https://cdn.example.test/exports/1.csv?sig=abc",
    ]


def test_policy_rejects_impossible_limits() -> None:
    assert HttpPolicy().timeout == httpx.Timeout(30.0, connect=10.0)
    with pytest.raises(ConfigurationError):
        HttpPolicy(concurrency=0)
    with pytest.raises(ConfigurationError):
        HttpPolicy(rate_per_s=0)


@pytest.mark.parametrize(("response", "expected"), [
    (httpx.Response(404, json={"detail": "Not found."}), "Not found."),
    (httpx.Response(401, json={"detail": "Given token not valid", "code": "token_not_valid"}),
     "Given token not valid"),
    (httpx.Response(400, json={"email": ["Enter a valid email address."], "lists": ["Required."]}),
     "email: Enter a valid email address.; lists: Required."),
    (httpx.Response(400, json={"non_field_errors": ["Duplicate."]}), "non_field_errors: Duplicate."),
    (httpx.Response(422, json={"message": "Invalid", "errors": [{"field": "email", "message": "bad"}]}),
     "Invalid: email: bad"),
    (httpx.Response(400, json={"error": {"code": 12, "message": "List is locked"}}), "List is locked"),
    (httpx.Response(502, text="<html>\n  Bad   gateway\n</html>"), "<html> Bad gateway </html>"),
    (httpx.Response(400, text="x" * 500), "x" * 199 + "…"),
    (httpx.Response(404, content=b""), "Not Found"),
])
def test_describe_error_bodies(response: httpx.Response, expected: str) -> None:
    assert describe(response) == expected


# --- what is safe to repeat (issue 6, item 14) ------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE", "PATCH"])
def test_idempotent_methods_are_retried_after_a_lost_answer(method: str) -> None:
    time = FakeTime()
    script = Script(time, httpx.RemoteProtocolError("dropped"), 502, httpx.ReadTimeout("slow"), 200)

    async def scenario() -> httpx.Response:
        async with provider_http(script, time) as http:
            return await http.request(method, "lists/1")

    assert run(scenario).status_code == 200
    assert len(script.sent) == 4


@pytest.mark.parametrize("failure", [httpx.RemoteProtocolError("dropped"), httpx.ReadTimeout("slow"),
                                     httpx.ReadError("reset"), 500, 502, 503, 504])
def test_a_post_whose_answer_was_lost_is_not_repeated(failure: Outcome) -> None:
    """The create may have happened: the caller must look before it posts again."""
    time = FakeTime()
    script = Script(time, failure, httpx.Response(201, json={"id": "2"}))

    async def scenario() -> None:
        async with provider_http(script, time) as http:
            with pytest.raises(AnswerLostError) as caught:
                await http.request("POST", "lists", json={"title": "Bülten"})
            assert isinstance(caught.value, RetriableError)
            assert "POST api.example.test/v1/lists" in caught.value.message
            assert "may have been applied" in caught.value.message

    run(scenario)
    assert len(script.sent) == 1


@pytest.mark.parametrize("failure", [httpx.ConnectError("refused"), httpx.ConnectTimeout("syn lost"),
                                     httpx.Response(429, headers={"Retry-After": "1"})])
def test_a_post_that_never_reached_the_provider_is_retried(failure: Outcome) -> None:
    time = FakeTime()
    script = Script(time, failure, httpx.Response(201, json={"id": "2"}))

    async def scenario() -> httpx.Response:
        async with provider_http(script, time) as http:
            return await http.request("POST", "lists", json={"title": "Bülten"})

    assert run(scenario).status_code == 201
    assert len(script.sent) == 2


def test_a_post_the_caller_declares_idempotent_is_retried() -> None:
    """A token call or a bulk import that upserts by e-mail is safe to send twice."""
    time = FakeTime()
    script = Script(time, httpx.RemoteProtocolError("dropped"), 503, httpx.Response(202, json={"id": 7}))

    async def scenario() -> httpx.Response:
        async with provider_http(script, time) as http:
            return await http.request("POST", "subscribers/json", json={"subscribers": []}, idempotent=True)

    assert run(scenario).status_code == 202
    assert len(script.sent) == 3


def test_a_put_the_caller_declares_not_idempotent_is_not_repeated() -> None:
    time = FakeTime()
    script = Script(time, 502, 200)

    async def scenario() -> None:
        async with provider_http(script, time) as http:
            with pytest.raises(AnswerLostError):
                await http.request("PUT", "counter/increment", idempotent=False)

    run(scenario)
    assert len(script.sent) == 1


# --- malformed answers (issue 6, item 16) ------------------------------------------------------


def _answer(status: int, content: bytes, content_type: str = "application/json",
            method: str = "POST", url: str = BASE_URL + "email/lists/") -> httpx.Response:
    return httpx.Response(status, content=content, headers={"Content-Type": content_type},
                          request=httpx.Request(method, url))


@pytest.mark.parametrize(("response", "wrong"), [
    (_answer(200, b"<!DOCTYPE html><html><title>Bakim</title></html>", "text/html"), "an HTML page"),
    (_answer(200, b""), "an empty body"),
    (_answer(200, b'{"id": "65a1", "tit'), "truncated or invalid JSON"),
    (_answer(200, b'{"detail": "Bir hata olustu"}'), "an error envelope: Bir hata olustu"),
    (_answer(200, b'{"title": "Bulten"}'), "no 'id'"),
    (_answer(200, b'[{"id": "1"}]'), "a JSON array where an object was expected"),
])
def test_json_of_names_the_endpoint_and_what_was_wrong(response: httpx.Response, wrong: str) -> None:
    with pytest.raises(MalformedAnswerError) as caught:
        json_of(response, "create list", required=("id",))
    message = caught.value.message
    assert isinstance(caught.value, RetriableError)
    assert message.startswith("create list: POST api.example.test/v1/email/lists/ answered HTTP 200 with ")
    assert wrong in message
    assert "\n" not in message and caught.value.status_code == 200


def test_json_of_returns_the_body_when_it_has_what_is_required() -> None:
    assert json_of(_answer(201, b'{"id": "65a1", "title": "B"}'), "create list", required=("id",)) \
        == {"id": "65a1", "title": "B"}
    assert json_of(_answer(200, b'[1, 2]'), "ids", shape=list) == [1, 2]


def test_json_of_never_echoes_an_answer_body() -> None:
    """A token answer with a missing field must not put the token it did carry in the message."""
    with pytest.raises(MalformedAnswerError) as caught:
        json_of(_answer(200, b'{"access": "eyJ-SECRET"}'), "login", required=("access", "refresh"))
    assert "SECRET" not in caught.value.message and "no 'refresh'" in caught.value.message


def test_a_token_that_expires_again_during_retries_gets_another_login() -> None:
    """401, login, 503, 401 (expired again while waiting), login, 200: not an AuthenticationError."""
    answers = iter([401, 503, 401, 200])
    logins: list[int] = []

    class CountingAuth(Auth):
        async def headers(self, http: ProviderHTTP) -> dict[str, str]:
            return {"Authorization": f"Bearer t{len(logins)}"}

        def invalidate(self) -> None:
            logins.append(1)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(next(answers))

    async def scenario() -> int:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            http = ProviderHTTP(client, provider="p", base_url="http://p.test/", auth=CountingAuth(),
                                policy=HttpPolicy(backoff_base_s=0.0001, backoff_max_s=0.0001, max_attempts=5))
            return (await http.request("GET", "things")).status_code

    assert asyncio.run(scenario()) == 200
    assert len(logins) == 2


class LockedTokenAuth:
    """Tokens t1, t2, ... from POST login, one login at a time (as every provider's auth does)."""

    def __init__(self) -> None:
        self.token: str | None = None
        self.logins = 0
        self.invalidations = 0
        self._lock = asyncio.Lock()

    async def headers(self, http: ProviderHTTP) -> Mapping[str, str]:
        async with self._lock:
            if self.token is None:
                self.token = (await http.request("POST", "login", authenticated=False)).json()["token"]
                self.logins += 1
            return {"Authorization": f"Bearer {self.token}"}

    def invalidate(self) -> None:
        self.token = None
        self.invalidations += 1


class CountedTokens:
    """A provider whose tokens stop working after ``lifetime[token]`` calls (Euromsg's gateway in
    the shared suite's faults), answering after the other requests in flight had their turn."""

    def __init__(self, **lifetime: int) -> None:
        self.lifetime = lifetime
        self.used: dict[str, int] = {}
        self.refused = 0
        self.issued = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/login"):
            self.issued += 1
            return httpx.Response(200, json={"token": f"t{self.issued}"})
        for _ in range(3):
            await asyncio.sleep(0)          # the others get in flight too
        token = request.headers["Authorization"].removeprefix("Bearer ")
        self.used[token] = self.used.get(token, 0) + 1
        if self.used[token] > self.lifetime.get(token, 10**6):
            self.refused += 1
            return httpx.Response(401)
        return httpx.Response(200, json={"token": token})


def test_requests_in_flight_on_a_token_that_expires_log_in_once_between_them() -> None:
    """Eight requests sent on t1, which dies after 3 calls: the first 401 logs in again; the
    other 401s were sent on t1 too, and go again on t2 with no login of their own (each
    logging in again would replace the token the others just got, and a request meeting a
    replaced token twice failed: Euromsg at 16 in flight, 2026-12-07)."""
    time, auth, provider = FakeTime(), LockedTokenAuth(), CountedTokens(t1=3)

    async def scenario() -> list[str]:
        async with provider_http(provider, time, auth=auth, concurrency=8) as http:
            answers = await asyncio.gather(*(http.request("GET", f"m/{i}") for i in range(8)))
            return [a.json()["token"] for a in answers]

    assert sorted(run(scenario)) == ["t1"] * 3 + ["t2"] * 5
    # (those still waiting for their turn when t2 came are sent with it: refused on t1 are 2 to 5)
    assert (auth.logins, auth.invalidations) == (2, 1) and provider.refused >= 2


def test_a_request_waiting_for_its_slot_goes_with_the_token_renewed_meanwhile() -> None:
    """One request in flight at a time; three built on t1 (headers are taken before the slot, so a
    login never queues behind its caller). t1 dies after one call: the second request's 401 logs
    in; the third, still holding t1, is sent with t2 when its slot comes, and is not refused."""
    time, auth, provider = FakeTime(), LockedTokenAuth(), CountedTokens(t1=1)

    async def scenario() -> list[str]:
        async with provider_http(provider, time, auth=auth, concurrency=1) as http:
            answers = await asyncio.gather(*(http.request("GET", f"m/{i}") for i in range(3)))
            return [a.json()["token"] for a in answers]

    assert run(scenario) == ["t1", "t2", "t2"]
    assert (auth.logins, provider.refused) == (2, 1)


def test_a_token_that_worked_and_expired_before_our_retry_gets_another_login() -> None:
    """A is refused on t1 and logs in (t2); B uses t2's one call while A's retry is in flight on
    it, so A is refused again right after its own login. t2 worked (for B): it expired, A logs
    in once more (t3) rather than ending the member as a refused login."""
    time, auth = FakeTime(), LockedTokenAuth()
    t2_issued, b_done = asyncio.Event(), asyncio.Event()
    used: dict[str, int] = {}

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/login"):
            auth_token = f"t{auth.logins + 1}"
            if auth_token == "t2":
                t2_issued.set()
            return httpx.Response(200, json={"token": auth_token})
        token = request.headers["Authorization"].removeprefix("Bearer ")
        if request.url.path.endswith("/a") and token == "t2":
            await b_done.wait()
        used[token] = used.get(token, 0) + 1
        if request.url.path.endswith("/b"):
            b_done.set()
        ok = token == "t3" or (token == "t2" and used[token] == 1)
        return httpx.Response(200, json={"token": token}) if ok else httpx.Response(401)

    async def scenario() -> tuple[str, str]:
        async with provider_http(handler, time, auth=auth, concurrency=2) as http:
            async def b() -> httpx.Response:
                await t2_issued.wait()
                return await http.request("GET", "b")
            a_answer, b_answer = await asyncio.gather(http.request("GET", "a"), b())
            return a_answer.json()["token"], b_answer.json()["token"]

    assert run(scenario) == ("t3", "t2")
    assert auth.logins == 3


# --- errors inside HTTP 200: the provider's answer classifier --------------------------------


def _envelope_classifier(response: httpx.Response) -> Verdict | None:
    """A provider that answers every error with 200 and {"error": code}."""
    code = response.json().get("error") if response.content else None
    kinds = {1: "relogin", 2: "retry", 3: "auth", 4: "fatal"}
    if code not in kinds:
        return None
    return Verdict(kinds[code], f"error {code}", provider_code=str(code), maybe_applied=code == 2)  # type: ignore[arg-type]


def _ok(**body: Any) -> httpx.Response:
    return httpx.Response(200, json=body)


def test_a_classified_expired_token_logs_in_again_once() -> None:
    time, auth = FakeTime(), TokenAuth()
    logins = iter(["t1", "t2", "t3"])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/login"):
            return _ok(token=next(logins))
        return _ok(error=1) if request.headers["Authorization"] == "Bearer t1" else _ok(data="fine")

    async def scenario() -> httpx.Response:
        async with provider_http(handler, time, auth=auth) as http:
            http.classifier = _envelope_classifier
            return await http.request("POST", "members", json={})

    assert run(scenario).json() == {"data": "fine"}
    assert (auth.logins, auth.invalidations) == (2, 1)


def test_a_classified_expired_token_right_after_a_login_is_an_authentication_error() -> None:
    time, auth = FakeTime(), TokenAuth()

    def handler(request: httpx.Request) -> httpx.Response:
        return _ok(token="t") if request.url.path.endswith("/login") else _ok(error=1)

    async def scenario() -> None:
        async with provider_http(handler, time, auth=auth) as http:
            http.classifier = _envelope_classifier
            await http.request("GET", "lists")

    with pytest.raises(AuthenticationError, match="error 1") as caught:
        run(scenario)
    assert caught.value.provider_code == "1"
    assert auth.logins == 2


@pytest.mark.parametrize(("code", "error"), [(3, AuthenticationError), (4, FatalError)])
def test_classified_fatal_answers_raise_at_once(code: int, error: type[Exception]) -> None:
    time = FakeTime()
    script = Script(time, _ok(error=code))

    async def scenario() -> None:
        async with provider_http(script, time) as http:
            http.classifier = _envelope_classifier
            await http.request("GET", "lists")

    with pytest.raises(error, match=f"error {code}"):
        run(scenario)
    assert len(script.sent) == 1


def test_a_classified_transient_error_is_retried_when_safe_and_not_when_it_may_have_applied() -> None:
    time = FakeTime()
    script = Script(time, _ok(error=2), _ok(error=2), _ok(data="fine"))

    async def get() -> httpx.Response:
        async with provider_http(script, time) as http:
            http.classifier = _envelope_classifier
            return await http.request("GET", "lists")

    assert run(get).json() == {"data": "fine"}
    assert len(script.sent) == 3

    post_script = Script(time, _ok(error=2), _ok(data="fine"))

    async def post() -> None:
        async with provider_http(post_script, time) as http:
            http.classifier = _envelope_classifier
            await http.request("POST", "members", json={})

    with pytest.raises(AnswerLostError, match="error 2") as caught:  # maybe_applied: look before sending again
        run(post)
    assert caught.value.provider_code == "2"
    assert len(post_script.sent) == 1


def test_answers_the_classifier_passes_and_client_errors_reach_the_caller() -> None:
    time = FakeTime()
    script = Script(time, _ok(error=99), 404)

    async def scenario() -> list[int]:
        async with provider_http(script, time) as http:
            http.classifier = _envelope_classifier
            return [(await http.request("GET", "a")).status_code, (await http.request("GET", "b")).status_code]

    assert run(scenario) == [200, 404]


def test_requests_held_by_a_retry_after_leave_at_the_rate_not_together() -> None:
    """Turns of the rate taken before a shared Retry-After (a 503) are taken again after it: the
    requests it held would otherwise all leave at once when it ends, a burst refused again."""
    time = FakeTime()
    rate = 4.0
    script = Script(time, httpx.Response(503, headers={"Retry-After": "2"}), 200)

    async def scenario() -> None:
        async with provider_http(script, time, rate_per_s=rate, concurrency=8, adaptive=False) as http:
            await asyncio.gather(*(http.request("GET", f"item/{n}") for n in range(6)))

    run(scenario)
    after = [at for at in script.times if at >= script.times[0] + 2]
    assert len(after) >= 6, script.times
    gaps = [later - earlier for earlier, later in pairwise(after)]
    assert all(gap >= 1 / rate - 1e-9 for gap in gaps), script.times
