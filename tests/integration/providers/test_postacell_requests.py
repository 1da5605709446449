"""Sandbox fidelity for Postacell: every request the client makes is one the document offers.

A whole life of a connection (first sync, edits, deletions, an unsubscribe, a campaign and its
report) goes through a transport that records each request; each is then checked against the
document (sync/providers/postacell/api.py says which paths, spellings, methods, query
parameters and Accept header it documents, and marks what it had to assume). A client that
relied on an undocumented ordering, filter or spelling fails here, not at the real service.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from sync.providers.postacell import api
from tests.integration.providers.conftest import World


def _template(path: str) -> str:
    return "^" + re.escape(path.strip("/")).replace(re.escape("{id}"), "[^/]+") + "$"


#: (method, path template) -> the query parameters the document (or api.py, ASSUMED) gives it.
OFFERED: dict[tuple[str, str], tuple[str, ...]] = {
    ("POST", api.TOKEN_PATH): (), ("POST", api.TOKEN_REFRESH_PATH): (),
    ("GET", api.LIST_FILTER_PATH): api.LIST_FILTERS, ("POST", api.LIST_PATH): (),
    ("GET", api.LIST_ITEM_PATH): (), ("PATCH", api.LIST_ITEM_PATH): (), ("DELETE", api.LIST_ITEM_PATH): (),
    ("GET", api.LIST_COUNTER_PATH): (),
    ("GET", api.SUBSCRIBERS_FILTER_PATH): api.SUBSCRIBER_FILTERS, ("POST", api.SUBSCRIBERS_PATH): (),
    ("GET", api.SUBSCRIBER_ITEM_PATH): (), ("PATCH", api.SUBSCRIBER_ITEM_PATH): (),
    ("DELETE", api.SUBSCRIBER_ITEM_PATH): (),
    ("POST", api.BULK_IMPORT_PATH): (), ("GET", api.BULK_JOB_PATH): (),
    ("GET", api.CAMPAIGN_FILTER_PATH): api.CAMPAIGN_FILTERS, ("POST", api.REPORT_EXPORT_PATH): (),
    ("GET", api.REPORT_EXPORT_FILTER_PATH): api.REPORT_EXPORT_FILTERS,
}


def _offered(method: str, relative: str) -> tuple[str, ...] | None:
    for (offered_method, path), params in OFFERED.items():
        if offered_method == method and re.match(_template(path), relative.strip("/")):
            spelled_with_slash = relative.endswith("/")
            if spelled_with_slash and path.strip("/") not in api.BOTH_SPELLINGS:
                return None
            return params
    return None


def test_every_request_of_a_connections_life_is_one_the_document_offers(world: World) -> None:
    if world.harness.name != "postacell":
        pytest.skip("this walk checks Postacell's document (api.py); each provider has its own")
    seen: list[httpx.Request] = []
    world.run(hook=seen.append)
    crm = world.valid_active_members()
    emails = sorted(crm)
    world.update_member(crm[emails[0]].id, first_name="Değişti")
    world.update_member(crm[emails[1]].id, deleted_at=world.now())
    world.leave_list(crm[emails[2]].id, world.lists_of(crm[emails[2]].id)[0])
    world.update_list("L1", name="Yeni Ad")
    world.harness.unsubscribe(emails[3])
    world.run(hook=seen.append)
    world.harness.send_campaign()
    world.run(hook=seen.append)
    base = urlsplit(world.harness.base_url).path
    wrong = []
    for request in seen:
        url = urlsplit(str(request.url))
        if "/media/" in url.path:          # a report file: a public link the export listing gave
            continue
        relative = url.path.removeprefix(base)
        offered = _offered(request.method, relative)
        params = {name for name, _ in parse_qsl(url.query)}
        if offered is None:
            wrong.append(f"{request.method} {relative}: not a documented path or spelling")
        elif params - set(offered):
            wrong.append(f"{request.method} {relative}: undocumented parameter(s) {sorted(params - set(offered))}")
        if relative.strip("/") not in (api.TOKEN_PATH, api.TOKEN_REFRESH_PATH) \
                and "application/json" not in request.headers.get("accept", ""):
            wrong.append(f"{request.method} {relative}: Accept is {request.headers.get('accept')!r}")
    assert len(seen) > 20
    assert wrong == []
