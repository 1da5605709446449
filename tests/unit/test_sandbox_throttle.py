"""The sandboxes' latency and rate-limit wrapper (sync/sandbox/throttle.py): above the rate it answers
429 with a Retry-After in whole seconds and never lets the request through; every answer waits the
latency; our HTTP layer honours its refusals. A fake clock that only the fake sleep moves: nothing
here waits, and nothing asserts a duration measured on the machine."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sync.http import HttpPolicy, ProviderHTTP
from sync.sandbox import PostacellSandbox, Throttle, refusal_of, sandbox_transport


class FakeTime:
    """A clock that stands still until someone sleeps; every sleep is recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def counting_app() -> tuple[Starlette, list[str]]:
    seen: list[str] = []

    async def echo(request: Request) -> JSONResponse:
        seen.append(request.url.path)
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/{name}", echo)]), seen


def get_all(app: Throttle, paths: list[str], time_: FakeTime | None = None) -> list[httpx.Response]:
    async def go() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=sandbox_transport(app), base_url="http://sandbox") as client:
            answers = []
            for path in paths:
                answers.append(await client.get(path))
                if time_ is not None:
                    time_.now += 0.01       # the client's own time between two requests
            return answers
    return asyncio.run(go())


def test_above_the_rate_it_answers_429_with_retry_after_and_the_sandbox_never_sees_the_request() -> None:
    time_ = FakeTime()
    inner, seen = counting_app()
    throttle = Throttle(inner, rate_per_s=2, clock=time_.clock, sleep=time_.sleep)
    answers = get_all(throttle, [f"/r{n}" for n in range(5)])
    assert [a.status_code for a in answers] == [200, 200, 429, 429, 429]
    assert [a.headers.get("Retry-After") for a in answers[2:]] == ["1", "1", "1"]
    assert seen == ["/r0", "/r1"]
    assert (throttle.stats.received, throttle.stats.admitted, throttle.stats.refused) == (5, 2, 3)
    time_.now += 1.0                    # the window has moved past both admitted requests
    again = get_all(throttle, ["/r5", "/r6", "/r7"])
    assert [a.status_code for a in again] == [200, 200, 429]
    assert seen == ["/r0", "/r1", "/r5", "/r6"]


def test_retry_after_is_the_whole_seconds_until_the_oldest_admitted_request_leaves_the_window() -> None:
    time_ = FakeTime()
    inner, _ = counting_app()
    throttle = Throttle(inner, rate_per_s=0.5, window_s=4.0, clock=time_.clock, sleep=time_.sleep)
    assert throttle.allowed == 2
    assert throttle.admit() == 0        # at 1000.0
    time_.now += 1.0
    assert throttle.admit() == 0        # at 1001.0
    time_.now += 0.5
    assert throttle.admit() == 3        # the first leaves at 1004.0: 2.5 s, rounded up
    time_.now += 2.5
    assert throttle.admit() == 0        # it has left


def test_every_answer_waits_the_latency_refusals_included() -> None:
    time_ = FakeTime()
    inner, seen = counting_app()
    throttle = Throttle(inner, latency_s=0.03, rate_per_s=3, clock=time_.clock, sleep=time_.sleep)
    answers = get_all(throttle, [f"/r{n}" for n in range(4)])
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert time_.sleeps == [0.03] * 4
    assert len(seen) == 3
    assert throttle.stats.delayed_s == pytest.approx(0.12)


def test_no_rate_lets_everything_through_after_the_latency() -> None:
    time_ = FakeTime()
    inner, seen = counting_app()
    throttle = Throttle(inner, latency_s=0.03, rate_per_s=0, clock=time_.clock, sleep=time_.sleep)
    answers = get_all(throttle, [f"/r{n}" for n in range(25)])
    assert {a.status_code for a in answers} == {200}
    assert len(seen) == 25 and time_.sleeps == [0.03] * 25
    assert throttle.stats.refused == 0


def test_the_refusal_has_the_providers_shape() -> None:
    time_ = FakeTime()
    sandbox = PostacellSandbox({"u": "p"})
    throttle = Throttle(sandbox.app, rate_per_s=1, refusal=refusal_of(sandbox), clock=time_.clock,
                        sleep=time_.sleep)
    throttle.admit()                    # the one request of this second
    answer, = get_all(throttle, ["/api/v1/email/lists/"])
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "1"
    assert answer.json()["detail"].startswith("Request was throttled")     # DRF's throttle answer
    assert sandbox.request_log == []


def test_our_http_layer_waits_out_its_refusals_and_gets_every_answer() -> None:
    time_ = FakeTime()
    inner, seen = counting_app()
    throttle = Throttle(inner, latency_s=0.03, rate_per_s=2, clock=time_.clock, sleep=time_.sleep)

    async def go() -> ProviderHTTP:
        async with httpx.AsyncClient(transport=sandbox_transport(throttle)) as client:
            http = ProviderHTTP(client, provider="bench", base_url="http://sandbox/",
                                policy=HttpPolicy(concurrency=1, start_concurrency=1, backoff_base_s=0.001),
                                sleep=time_.sleep, clock=time_.clock)
            for n in range(6):
                assert (await http.request("GET", f"r{n}")).status_code == 200
            return http

    http = asyncio.run(go())
    assert seen == [f"/r{n}" for n in range(6)]
    assert throttle.stats.admitted == 6
    assert throttle.stats.refused == http.stats.retries > 0
    assert http.stats.requests == throttle.stats.received
