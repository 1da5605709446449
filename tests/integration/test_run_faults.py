"""Issue 6, items 14 and 16, through a whole run on every backend: answers lost after the provider
applied the write, and answers we cannot read."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest
import sqlalchemy as sa
import structlog.testing

from sync.config import CrmSource
from sync.crm import crm_tables
from sync.sandbox import FaultPlan, PostacellSandbox, sandbox_transport
from tests.integration.test_leases import PASSWORD, make_world


def test_a_run_whose_write_answers_are_lost_creates_each_list_and_member_once(engine: sa.Engine,
                                                                              db_url: str) -> None:
    sandbox = PostacellSandbox({"acme-api": PASSWORD}, job_polls_until_done=0,
                               faults=FaultPlan(apply_then_drop_rate=0.4, seed=2))
    world = make_world(engine, db_url, sandbox)
    result = world.run()
    assert result.status in ("succeeded", "partial"), result.error
    assert sandbox._faults.injected["apply_then_drop"] >= 3
    lists = crm_tables(CrmSource()).lists
    with engine.connect() as conn:
        crm_names = Counter(conn.scalars(sa.select(lists.c.name).where(lists.c.tenant_id == "acme",
                                                                       lists.c.deleted_at.is_(None))))
    assert Counter(sandbox.lists("acme-api").values()) == crm_names          # no list twice
    emails = [row["email"] for row in sandbox.subscribers("acme-api")]
    assert len(emails) == len(set(emails)) > 30                                # no member twice


@pytest.mark.parametrize("body", [b"<html><body>Bakim calismasi</body></html>", b"", b'{"count": 3, "resu'])
def test_a_malformed_answer_ends_the_run_in_one_line_without_a_traceback(engine: sa.Engine, db_url: str,
                                                                         body: bytes) -> None:
    world = make_world(engine, db_url)
    inner = sandbox_transport(world.sandbox.app)

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and "list-filter" in request.url.path:
            return httpx.Response(200, content=body, headers={"Content-Type": "text/html" if body[:1] == b"<"
                                                                else "application/json"})
        response = await inner.handle_async_request(request)
        await response.aread()
        return httpx.Response(response.status_code, headers=response.headers, content=response.content)

    with structlog.testing.capture_logs() as logs:
        result = world.run(httpx.MockTransport(handler))
    # The run fails, or (a list-level problem is that list's problem) the lists are rejected: either
    # way each report of it is one line naming the endpoint and what was wrong.
    assert result.status in ("failed", "partial")
    said = [result.error or ""] + [str(value) for entry in logs for value in entry.values()]
    assert any("GET sandbox/api/v1/email/list-filter/ answered HTTP 200 with " in text for text in said)
    for text in said:
        assert "internal error" not in text and "JSONDecodeError" not in text and "KeyError" not in text
        assert "Traceback" not in text
    assert result.error is None or "\n" not in result.error
    assert not any(entry.get("exc_info") or entry["event"] == "run.crashed" for entry in logs)
