"""A provider that keeps readings, for the provider-neutral plumbing's tests (issue 22).

``ReadingPostacell`` is the Postacell client with what issue 22 asks of every client, on its two
index calls (``email/list-filter/`` and ``email/cmp-filter``): it accepts the documented envelope
``{"results": [...], "next": ...}`` and a bare array, notes which came (``self.readings``), has a
``connection_probe``, and one request reading (``index_path``: the list index at its documented
path, or at ``email/lists/``) with ``request_fallbacks``. The tests register it in place of
Postacell (``IMPLEMENTATIONS``) and serve the Postacell sandbox through :class:`ShapedServer`,
which answers in the reading a test picks.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

import httpx

from sync.errors import ConfigurationError
from sync.providers.postacell import api
from sync.providers.postacell.client import PostacellProvider, _check
from sync.providers.readings import ReadingLog, unknown_reading
from sync.providers.specs import CheckedTextSpec
from sync.sandbox import PostacellSandbox, sandbox_transport

ENVELOPE = "envelope {results, next}"
BARE = "bare array"
#: The ``index_path`` setting's values: the document's path first.
INDEX_PATHS = ("list-filter", "lists")
LISTS_ELSEWHERE = "email/lists/"


def _index_path(key: str, value: Any) -> str:
    if value not in INDEX_PATHS:
        raise ConfigurationError(f"setting {key} must be one of {', '.join(INDEX_PATHS)}: {value!r}")
    return str(value)


#: The ``index_path`` connection setting (the tests add it to Postacell's spec).
INDEX_PATH_SETTING = CheckedTextSpec(INDEX_PATHS[0], "text", check=_index_path, help="where the list index is")


class ReadingPostacell(PostacellProvider):
    """Postacell, reading its two index calls in either reading and saying which came."""

    request_fallbacks: ClassVar[Mapping[str, tuple[str, ...]]] = {"index_path": INDEX_PATHS}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.readings = ReadingLog()
        self.index_path = INDEX_PATHS[0]

    @classmethod
    def create(cls, http_factory: Any, credentials: Mapping[str, str], settings: Mapping[str, Any],
               integrator: Mapping[str, str] | None = None) -> ReadingPostacell:
        provider = super().create(http_factory, credentials, settings, integrator)
        assert isinstance(provider, ReadingPostacell)
        provider.index_path = str(settings.get("index_path") or INDEX_PATHS[0])
        return provider

    async def _pages(self, path: str, params: Mapping[str, Any], what: str) -> AsyncIterator[dict[str, Any]]:
        endpoint = f"GET {path}"
        url: str | None = LISTS_ELSEWHERE if path == api.LIST_FILTER_PATH and self.index_path == "lists" else path
        query: Mapping[str, Any] | None = params
        while url:
            response = await self._api("GET", url, params=query)
            _check(response, what)
            body = response.json()
            if isinstance(body, list):
                self.readings.note(endpoint, BARE)
                rows, url = body, None
            elif isinstance(body, dict) and isinstance(body.get("results"), list):
                self.readings.note(endpoint, ENVELOPE)
                rows, url, query = body["results"], body.get("next"), None
            else:
                raise unknown_reading(endpoint, [ENVELOPE, BARE], response.content)
            for row in rows:
                yield row

    async def connection_probe(self) -> list[str]:
        lists = await self.all_lists()
        endpoint = f"GET {api.LIST_FILTER_PATH}"
        return [f"{endpoint}: {len(lists)} list(s) (reading: {self.readings.seen.get(endpoint, '-')})"]


class ShapedServer:
    """The Postacell sandbox, answering its index calls in the reading a test sets: ``bare`` (paths
    answered as a bare array), ``lists_at`` (the ``index_path`` the list index is served at, 404 at
    the other; None: at neither), ``missing`` (paths answered 404 in every reading). Logs (method,
    path, status) of every request."""

    def __init__(self, sandbox: PostacellSandbox) -> None:
        self.sandbox = sandbox
        self.inner = sandbox_transport(sandbox.app)
        self.bare: set[str] = set()
        self.lists_at: str | None = INDEX_PATHS[0]
        #: Paths answered 404 whatever the request reading.
        self.missing: set[str] = set()
        self.requests: list[tuple[str, str, int]] = []

    def transport(self, _connection: Any = None) -> httpx.AsyncBaseTransport:
        return httpx.MockTransport(self.handle)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        response = await self._answer(request)
        self.requests.append((request.method, request.url.path, response.status_code))
        return response

    async def _answer(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        documented = path.endswith("/" + api.LIST_FILTER_PATH)
        elsewhere = path.endswith("/" + LISTS_ELSEWHERE)
        if ((documented and self.lists_at != "list-filter") or (elsewhere and self.lists_at != "lists")
                or any(path.endswith("/" + missing) for missing in self.missing)):
            return httpx.Response(404, json={"detail": "Not found."})
        if elsewhere:
            path = path.removesuffix(LISTS_ELSEWHERE) + api.LIST_FILTER_PATH
            request = httpx.Request(request.method, request.url.copy_with(path=path), headers=request.headers)
        response = await self.inner.handle_async_request(request)
        content = await response.aread()
        if response.status_code == 200 and any(path.endswith("/" + bare) for bare in self.bare):
            body = json.loads(content)
            if isinstance(body, dict) and body.get("next") is None:
                return httpx.Response(200, json=body["results"])
        return httpx.Response(response.status_code, headers=response.headers, content=content)
