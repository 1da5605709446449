"""Issue 6, item 14: a request applied by the provider whose answer never came back.

The sandbox's ``apply_then_drop_rate`` fault runs the request, then drops the connection
unanswered: the client cannot tell it from a request that never arrived. A create must then
look before it posts again; a bulk import (the provider upserts by e-mail) may simply repeat.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx
import pytest

from sync.http import HttpPolicy, ProviderHTTP
from sync.providers.base import MemberKey, MemberUpsert
from sync.providers.postacell import api
from sync.providers.postacell.client import PostacellAuth, PostacellProvider
from sync.sandbox import FaultPlan, PostacellSandbox, sandbox_transport
from sync.sandbox.faults import FaultInjector

BASE = "http://sandbox/api/v1/"
FAST = HttpPolicy(backoff_base_s=0.001, backoff_max_s=0.01, max_attempts=8)
T = TypeVar("T")


def with_provider(sandbox: PostacellSandbox, work: Callable[[PostacellProvider], Awaitable[T]]) -> T:
    async def scenario() -> T:
        async with httpx.AsyncClient(transport=sandbox_transport(sandbox.app)) as client:
            http = ProviderHTTP(client, provider="postacell", base_url=BASE, policy=FAST,
                                auth=PostacellAuth("acme", "pw-123456"))
            return await work(PostacellProvider(http))
    return asyncio.run(scenario())


def posts(sandbox: PostacellSandbox, path: str) -> int:
    return sum(1 for method, logged, _ in sandbox.request_log
               if method == "POST" and logged == "/api/v1/" + path)


def test_apply_then_drop_applies_the_write_and_drops_its_answer() -> None:
    sandbox = PostacellSandbox({"acme": "pw-123456"}, faults=FaultPlan(apply_then_drop_rate=1.0))

    async def scenario(provider: PostacellProvider) -> None:
        with pytest.raises(httpx.RemoteProtocolError):
            await provider.http._client.post(
                BASE + api.LIST_PATH, json={"title": "Bülten"},
                headers=await provider.http._auth.headers(provider.http))  # type: ignore[union-attr]
        assert [found.name for found in await provider.find_lists("Bülten")] == ["Bülten"]  # reads answer

    with_provider(sandbox, scenario)
    assert list(sandbox.lists("acme").values()) == ["Bülten"]
    assert sandbox.request_log[-2] == ("POST", "/api/v1/" + api.LIST_PATH, 0)
    assert sandbox._faults.injected["apply_then_drop"] == 1


def test_apply_then_drop_does_not_move_the_other_faults_of_a_seed() -> None:
    plain, both = (FaultInjector(FaultPlan(seed=5, drop_rate=0.2, error_rate=0.2, apply_then_drop_rate=rate))
                   for rate in (0.0, 0.5))
    plain_faults = [plain.next_fault() for _ in range(200)]
    both_faults = [both.next_fault() for _ in range(200)]
    assert [f for f in both_faults if f is None or f.kind != "apply_then_drop"] == [
        f for f, g in zip(plain_faults, both_faults, strict=True) if g is None or g.kind != "apply_then_drop"]
    assert all(f is None for f, g in zip(plain_faults, both_faults, strict=True)
               if g is not None and g.kind == "apply_then_drop")
    assert 30 < both.injected["apply_then_drop"] < 90
    assert not any(f is not None and f.kind == "apply_then_drop"
                   for f in (both.next_fault(write=False) for _ in range(50)))   # reads: never


def test_a_list_create_whose_answer_was_lost_creates_exactly_one_list() -> None:
    sandbox = PostacellSandbox({"acme": "pw-123456"}, faults=FaultPlan(apply_then_drop_rate=1.0))
    created = with_provider(sandbox, lambda provider: provider.create_list("Kasım Bülteni"))
    assert sandbox.lists("acme") == {created.remote_id: "Kasım Bülteni"}
    assert posts(sandbox, api.LIST_PATH) == 1


def test_a_list_create_refused_by_a_5xx_is_tried_again_after_a_look() -> None:
    sandbox = PostacellSandbox({"acme": "pw-123456"}, faults=FaultPlan(error_rate=0.5, seed=11))
    created = with_provider(sandbox, lambda provider: provider.create_list("Kampanya"))
    assert sandbox.lists("acme") == {created.remote_id: "Kampanya"}


def test_a_list_create_keeps_an_older_list_of_the_same_name_apart() -> None:
    """A same-named list that was there before the lost create is not mistaken for ours."""
    sandbox = PostacellSandbox({"acme": "pw-123456"})
    older = with_provider(sandbox, lambda provider: provider.create_list("Bülten"))
    sandbox._faults = FaultInjector(FaultPlan(apply_then_drop_rate=1.0))
    created = with_provider(sandbox, lambda provider: provider.create_list("Bülten"))
    assert created.remote_id != older.remote_id
    assert sorted(sandbox.lists("acme")) == sorted([older.remote_id, created.remote_id])


def test_a_bulk_import_whose_answer_was_lost_creates_no_duplicate() -> None:
    sandbox = PostacellSandbox({"acme": "pw-123456"}, job_polls_until_done=0)
    remote_list = with_provider(sandbox, lambda provider: provider.create_list("Bülten")).remote_id
    sandbox._faults = FaultInjector(FaultPlan(apply_then_drop_rate=0.5, seed=1))
    batch = [MemberUpsert(MemberKey(f"M{n}"), f"uye{n}@ornek.com.tr",
                          {"email": f"uye{n}@ornek.com.tr", "status": "active"}, (remote_list,))
             for n in range(5)]

    outcomes = with_provider(sandbox, lambda provider: provider.upsert_members(batch))
    assert sandbox._faults.injected["apply_then_drop"] >= 1
    assert posts(sandbox, api.BULK_IMPORT_PATH) >= 2        # the lost one was sent again
    assert all(outcome.rejected is None and outcome.remote_id for outcome in outcomes)
    emails = sorted(row["email"] for row in sandbox.subscribers("acme"))
    assert emails == sorted(f"uye{n}@ornek.com.tr" for n in range(5))
