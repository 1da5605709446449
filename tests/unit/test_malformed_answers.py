"""Issue 6, item 16: answers we cannot read end in one line naming the endpoint, never a traceback.

The Postacell client runs against the sandbox; one endpoint at a time answers with an HTML page
or an empty body with 200, truncated JSON, or an error envelope with 200.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from sync.errors import MalformedAnswerError, RetriableError
from sync.http import HttpPolicy, ProviderHTTP
from sync.providers.base import MemberKey, MemberUpsert
from sync.providers.postacell import api
from sync.providers.postacell.client import PostacellAuth, PostacellProvider
from sync.sandbox import PostacellSandbox, sandbox_transport

BASE = "http://sandbox/api/v1/"
HTML = b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"

MALFORMED: dict[str, tuple[int, bytes, str, str]] = {
    "html": (200, HTML, "text/html; charset=utf-8", "an HTML page instead of JSON"),
    "empty": (200, b"", "application/json", "an empty body"),
    "truncated": (200, b'{"id": "6571a", "title": "B', "application/json", "truncated or invalid JSON"),
    "envelope": (200, b'{"detail": "Sunucu hatas\xc4\xb1"}', "application/json", "an error envelope: Sunucu hatası"),
}


def spoiled(sandbox: PostacellSandbox, method: str, path: str, kind: str) -> httpx.AsyncBaseTransport:
    """The sandbox, except that ``method path`` answers with the ``kind`` of malformed answer."""
    inner = sandbox_transport(sandbox.app)
    status, body, content_type, _ = MALFORMED[kind]

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.method == method and request.url.path.rstrip("/") == ("/api/v1/" + path).rstrip("/"):
            return httpx.Response(status, content=body, headers={"Content-Type": content_type})
        response = await inner.handle_async_request(request)
        await response.aread()
        return httpx.Response(response.status_code, headers=response.headers, content=response.content)

    return httpx.MockTransport(handler)


def run_with(transport: httpx.AsyncBaseTransport, work: Callable[[PostacellProvider], Awaitable[Any]]) -> Any:
    async def scenario() -> Any:
        async with httpx.AsyncClient(transport=transport) as client:
            http = ProviderHTTP(client, provider="postacell", base_url=BASE, policy=HttpPolicy(max_attempts=2,
                                backoff_base_s=0.001, backoff_max_s=0.001), auth=PostacellAuth("acme", "pw-123456"))
            return await work(PostacellProvider(http))
    return asyncio.run(scenario())


def assert_one_line(error: MalformedAnswerError, starts: str, kind: str) -> None:
    message = error.message
    assert isinstance(error, RetriableError)
    assert message.startswith(starts), message
    assert MALFORMED[kind][3] in message, message
    assert "\n" not in message and "JSONDecodeError" not in message and "KeyError" not in message


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_a_malformed_list_create_answer_names_the_endpoint(kind: str) -> None:
    sandbox = PostacellSandbox({"acme": "pw-123456"})
    with pytest.raises(MalformedAnswerError) as caught:
        run_with(spoiled(sandbox, "POST", api.LIST_PATH, kind), lambda provider: provider.create_list("Bülten"))
    assert_one_line(caught.value, "create list 'Bülten': POST sandbox/api/v1/email/list answered HTTP 200 with ",
                    kind)


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_a_malformed_list_index_answer_names_the_endpoint(kind: str) -> None:
    sandbox = PostacellSandbox({"acme": "pw-123456"})
    with pytest.raises(MalformedAnswerError) as caught:
        run_with(spoiled(sandbox, "GET", api.LIST_FILTER_PATH, kind), lambda provider: provider.find_lists("x"))
    assert_one_line(caught.value, "list index: GET sandbox/api/v1/email/list-filter/ answered HTTP 200 with ",
                    kind)


@pytest.mark.parametrize("kind", ["html", "envelope"])
def test_a_malformed_login_answer_names_the_endpoint_and_no_secret(kind: str) -> None:
    sandbox = PostacellSandbox({"acme": "pw-123456"})
    with pytest.raises(MalformedAnswerError) as caught:
        run_with(spoiled(sandbox, "POST", api.TOKEN_PATH, kind), lambda provider: provider.find_lists("x"))
    assert_one_line(caught.value, "Postacell login: POST sandbox/api/v1/token answered HTTP 200 with ", kind)
    assert "pw-123456" not in caught.value.message


@pytest.mark.parametrize("kind", ["truncated", "envelope"])
def test_a_malformed_bulk_import_answer_names_the_endpoint(kind: str) -> None:
    sandbox = PostacellSandbox({"acme": "pw-123456"}, job_polls_until_done=0)
    remote_list = run_with(sandbox_transport(sandbox.app), lambda provider: provider.create_list("B")).remote_id
    batch = [MemberUpsert(MemberKey("M1"), "uye1@ornek.com.tr", {"email": "uye1@ornek.com.tr", "status": "active"},
                          (remote_list,))]
    with pytest.raises(MalformedAnswerError) as caught:
        run_with(spoiled(sandbox, "POST", api.BULK_IMPORT_PATH, kind),
                 lambda provider: provider.upsert_members(batch))
    assert_one_line(caught.value, "bulk import: POST sandbox/api/v1/email/subscribers/json answered HTTP 200 with ",
                    kind)
