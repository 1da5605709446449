"""Postacell's status pull: pages fetched concurrently give exactly the rows of a page-by-page scan.

Against the in-process sandbox (httpx ASGI transport). The document's paging is DRF page numbers
(``count`` in every answer, ``page`` as a parameter), which is what lets the client ask several
pages at once; these tests hold it to the rows, the order, the connection's concurrency, and
queries that grow or shrink while they are read.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from sync.errors import ProviderError
from sync.http import HttpPolicy, ProviderHTTP
from sync.providers.base import RemoteStatus
from sync.providers.postacell import api
from sync.providers.postacell.client import CAPABILITIES, PULLED_STATUSES, PostacellAuth, PostacellProvider
from sync.sandbox import FaultPlan, PostacellSandbox, sandbox_transport

BASE = "http://sandbox/api/v1/"
ACCOUNT, PASSWORD = "acme", "pw-123456"
#: Not a multiple of the page size, and every status on several pages (one on exactly one page).
MIX = {"unsubscribed": 7 * api.PAGE_SIZE + 13, "hard_bounce": 2 * api.PAGE_SIZE + 1,
       "soft_bounce": api.PAGE_SIZE, "spam_complaint": 3 * api.PAGE_SIZE - 1, "active": 120}


def address(n: int) -> str:
    return "@".join((f"abone{n:05d}", "ornek.com.tr"))


def loaded_sandbox(**kwargs: Any) -> PostacellSandbox:
    sandbox = PostacellSandbox({ACCOUNT: PASSWORD}, **kwargs)
    rows, n = [], 0
    for status, count in MIX.items():
        for _ in range(count):
            rows.append((address(n), status))
            n += 1
    rows.sort(key=lambda row: row[0][::-1])       # statuses interleaved in creation order
    assert sandbox.load_subscribers(ACCOUNT, rows) == len(rows)
    return sandbox


def provider_on(app: ASGIApp, concurrency: int) -> tuple[httpx.AsyncClient, PostacellProvider]:
    client = httpx.AsyncClient(transport=sandbox_transport(app))
    http = ProviderHTTP(client, provider="postacell", base_url=BASE, policy=HttpPolicy(concurrency=concurrency),
                        auth=PostacellAuth(ACCOUNT, PASSWORD))
    return client, PostacellProvider(http, dataclasses.replace(CAPABILITIES, concurrency=concurrency))


def pull(app: ASGIApp, concurrency: int) -> list[RemoteStatus]:
    async def scenario() -> list[RemoteStatus]:
        client, provider = provider_on(app, concurrency)
        async with client:
            return [status async for status in provider.pull_statuses(None)]
    return asyncio.run(scenario())


def following_next_links(sandbox: PostacellSandbox) -> list[tuple[str, str]]:
    """(e-mail, Postacell status) as a plain walk of every status query's ``next`` links gives them."""
    async def scenario() -> list[tuple[str, str]]:
        client, provider = provider_on(sandbox.app, 1)
        async with client:
            return [(row["email"], status) for status in PULLED_STATUSES
                    async for row in provider._pages(api.SUBSCRIBERS_FILTER_PATH, {"status": status}, "walk")]
    return asyncio.run(scenario())


def filter_pages(sandbox: PostacellSandbox) -> list[str]:
    return [path for method, path, _ in sandbox.request_log if method == "GET" and "subscribers-filter" in path]


def recording(app: ASGIApp, queries: list[str]) -> ASGIApp:
    """``app``, noting the query string of every subscriber-filter request (the log has paths only)."""
    async def recorded(scope: Scope, receive: Receive, send: Send) -> None:
        if "subscribers-filter" in scope.get("path", ""):
            queries.append(scope.get("query_string", b"").decode())
        await app(scope, receive, send)
    return recorded


@pytest.mark.parametrize("concurrency", [1, 2, 4, 8])
def test_concurrent_pages_give_the_rows_of_a_page_by_page_scan_in_its_order(concurrency: int) -> None:
    sandbox = loaded_sandbox()
    expected = following_next_links(sandbox)
    sandbox.reset_log()
    queries: list[str] = []
    pulled = pull(recording(sandbox.app, queries), concurrency)
    assert [(s.email, s.status) for s in pulled] == [(email, PULLED_STATUSES[status]) for email, status in expected]
    assert len(pulled) == sum(n for status, n in MIX.items() if status != "active")
    assert len({s.remote_id for s in pulled}) == len(pulled)
    pages = sum(-(-MIX[status] // api.PAGE_SIZE) for status in PULLED_STATUSES)
    assert len(filter_pages(sandbox)) == len(set(queries)) == pages     # each page once, none past the end
    assert not any(status >= 400 for _, _, status in sandbox.request_log)


def test_pages_go_out_concurrently_but_never_past_the_connections_concurrency() -> None:
    sandbox = loaded_sandbox(faults=FaultPlan(latency_s=0.002))
    in_flight = peak = 0

    async def counting(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await sandbox.app(scope, receive, send)
        finally:
            in_flight -= 1

    pulled = pull(counting, CAPABILITIES.concurrency)
    assert len(pulled) == sum(n for status, n in MIX.items() if status != "active")
    assert 1 < peak <= CAPABILITIES.concurrency


def after_requests(sandbox: PostacellSandbox, count: int, change: Callable[[], None]) -> ASGIApp:
    """The sandbox's app, which makes ``change`` (as the service would, meanwhile) once ``count``
    subscriber-filter requests have been answered."""
    seen = 0

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal seen
        await sandbox.app(scope, receive, send)
        if "subscribers-filter" in scope.get("path", ""):
            seen += 1
            if seen == count:
                change()
    return app


def test_a_query_that_grows_while_it_is_read_is_followed_to_its_new_end() -> None:
    sandbox = loaded_sandbox()
    extra = [(address(90_000 + n), "unsubscribed") for n in range(2 * api.PAGE_SIZE + 5)]
    app = after_requests(sandbox, len(PULLED_STATUSES), lambda: sandbox.load_subscribers(ACCOUNT, extra))
    pulled = pull(app, 4)
    emails = {s.email for s in pulled}
    assert {email for email, _ in extra} <= emails          # the new rows are at the end of create_date order
    assert len(pulled) == len(emails) == sum(n for status, n in MIX.items() if status != "active") + len(extra)


def test_a_query_that_shrinks_while_it_is_read_ends_without_an_error() -> None:
    sandbox = loaded_sandbox()
    unsubscribed = [email for email, status in following_next_links(sandbox) if status == "unsubscribed"]

    def resubscribe() -> None:      # most of the unsubscribed become active again: fewer pages
        for email in unsubscribed[: 5 * api.PAGE_SIZE]:
            sandbox.set_status(ACCOUNT, email, "active")

    sandbox.reset_log()
    pulled = pull(after_requests(sandbox, len(PULLED_STATUSES), resubscribe), 4)
    got = [s.email for s in pulled if s.status == "unsubscribed"]
    assert len(got) == len(set(got)) and set(got) <= set(unsubscribed)
    assert set(got) >= set(unsubscribed[: api.PAGE_SIZE])        # page 1 was read before the change
    assert any(status == 404 for _, _, status in sandbox.request_log)    # "Invalid page." ended the query
    others = [s for s in pulled if s.status != "unsubscribed"]
    assert len(others) == MIX["hard_bounce"] + MIX["soft_bounce"] + MIX["spam_complaint"]


def test_refresh_reads_again_only_the_lists_whose_counters_moved() -> None:
    sandbox = PostacellSandbox({ACCOUNT: PASSWORD}, job_polls_until_done=0)
    lists = [sandbox.create_list(ACCOUNT, title) for title in ("A", "B", "C")]

    queries: list[str] = []

    async def scenario() -> tuple[list[list[str]], list[str]]:
        client, provider = provider_on(recording(sandbox.app, queries), 4)
        async with client:
            for n in range(3 * api.PAGE_SIZE):
                response = await provider.http.request(
                    "POST", api.SUBSCRIBERS_PATH, headers={"Accept": "application/json"},
                    json={"email": address(n), "status": "active", "lists": [lists[n % 3]]})
                assert response.status_code == 201
            for n in range(0, 3 * api.PAGE_SIZE, 2):
                sandbox.set_status(ACCOUNT, address(n), "unsubscribed" if n % 4 else "hard_bounce")
            first = [s.email async for s in provider.refresh_statuses(lists)]
            again = [s.email async for s in provider.refresh_statuses(lists)]     # nothing moved
            sandbox.set_status(ACCOUNT, address(1), "spam_complaint")               # list B moved
            queries.clear()
            moved = [s.email async for s in provider.refresh_statuses(lists)]
            return [first, again, moved], list(queries)

    (first, again, moved), pages = asyncio.run(scenario())
    assert sorted(first) == sorted(address(n) for n in range(0, 3 * api.PAGE_SIZE, 2))
    assert again == []
    assert address(1) in moved and all(int(email[5:10]) % 3 == 1 for email in moved)
    assert pages and all(f"lists={lists[1]}" in path for path in pages)


def test_the_sandbox_filter_sees_every_change_between_two_pages() -> None:
    """The sandbox keeps a query's ordered rows between pages (O(page) a page); any change to a
    subscriber must show on the next page, as a live query would show it."""
    sandbox = loaded_sandbox()

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        client, provider = provider_on(sandbox.app, 1)
        async with client:
            async def page(number: int) -> dict[str, Any]:
                body = await provider._page(api.SUBSCRIBERS_FILTER_PATH, {"status": "hard_bounce"}, "t", number)
                assert body is not None
                return body
            one = await page(1)
            sandbox.set_status(ACCOUNT, one["results"][0]["email"], "active")
            return one, await page(1)

    one, again = asyncio.run(scenario())
    assert again["count"] == one["count"] - 1
    assert again["results"][0]["email"] == one["results"][1]["email"]


def test_a_failed_page_stops_the_pull_and_leaves_nothing_running() -> None:
    sandbox = loaded_sandbox()

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        if "page=3" in scope.get("query_string", b"").decode():
            response = httpx.Response(400, json={"detail": "bad"})
            await send({"type": "http.response.start", "status": 400,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": response.content})
            return
        await sandbox.app(scope, receive, send)

    async def scenario() -> set[asyncio.Task[Any]]:
        client, provider = provider_on(failing, 4)
        async with client:
            with pytest.raises(ProviderError):
                _ = [s async for s in provider.pull_statuses(None)]
        return {task for task in asyncio.all_tasks() if task is not asyncio.current_task()}

    assert asyncio.run(scenario()) == set()

