"""/metrics sees every provider request of the process: latency by status class, retries, 429s."""

from __future__ import annotations

import asyncio

import httpx
import sqlalchemy as sa

from sync.http import ATTEMPT_OBSERVERS, RATE_OBSERVERS, HttpPolicy, ProviderHTTP
from sync.web import Metrics


def _send_twice() -> None:
    answers = iter([httpx.Response(429, headers={"Retry-After": "0"}), httpx.Response(200)])

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(lambda request: next(answers))) as client:
            http = ProviderHTTP(client, provider="postacell", base_url="http://p.test/",
                                policy=HttpPolicy(backoff_base_s=0.0001, backoff_max_s=0.0001))
            assert (await http.request("GET", "things")).status_code == 200

    asyncio.run(scenario())


def test_request_latency_retries_and_429s_are_counted_until_the_endpoint_closes() -> None:
    metrics = Metrics(sa.create_engine("sqlite://"))
    try:
        _send_twice()
        text = metrics.render().decode()
        assert 'crm_esp_sync_http_throttled_total{provider="postacell"} 1.0' in text
        assert 'crm_esp_sync_http_retries_total{provider="postacell"} 1.0' in text
        assert 'crm_esp_sync_http_request_seconds_count{provider="postacell",status_class="2xx"} 1.0' in text
        assert 'crm_esp_sync_http_request_seconds_count{provider="postacell",status_class="4xx"} 1.0' in text
    finally:
        metrics.close()
    assert metrics._on_attempt not in ATTEMPT_OBSERVERS


def test_the_adaptive_limit_of_the_last_run_is_a_gauge() -> None:
    from sync.engine.runner import RunResult

    metrics = Metrics(sa.create_engine("sqlite://"))
    try:
        for level, cuts in ((4, 0), (2, 3)):
            metrics.observe(RunResult(1, "acme", "euromsg", "run", "succeeded",
                                      counts={"http_concurrency": level, "http_concurrency_cuts": cuts}))
        text = metrics.render().decode()
        assert 'crm_esp_sync_http_concurrency{provider="euromsg"} 2.0' in text
        assert 'crm_esp_sync_http_concurrency_cuts_total{provider="euromsg"} 3.0' in text
    finally:
        metrics.close()


def test_the_learnt_rate_is_a_gauge_set_at_each_change() -> None:
    """Seven requests in a moment, the last refused: the rate learnt from it is on /metrics at once."""
    metrics = Metrics(sa.create_engine("sqlite://"))
    answers = iter([httpx.Response(200)] * 6 + [httpx.Response(429, headers={"Retry-After": "0"}),
                                                httpx.Response(200)])

    async def scenario() -> float | None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(lambda request: next(answers))) as client:
            http = ProviderHTTP(client, provider="euromsg", base_url="http://p.test/",
                                policy=HttpPolicy(backoff_base_s=0.0001, backoff_max_s=0.0001),
                                clock=lambda: 1000.0)   # all seven in the same instant, however slow the machine
            for _ in range(7):
                assert (await http.request("GET", "things")).status_code == 200
            return http.stats.rate_per_s

    try:
        learnt = asyncio.run(scenario())
        assert learnt is not None
        assert f'crm_esp_sync_http_rate_per_s{{provider="euromsg"}} {learnt!r}' in metrics.render().decode()
    finally:
        metrics.close()
    assert metrics._on_rate not in RATE_OBSERVERS
