"""Postacell client pieces against the in-process sandbox: tokens, the error table, report CSVs."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from sync.errors import AuthenticationError, FatalError, ProviderError, RejectedRow
from sync.http import HttpPolicy, ProviderHTTP
from sync.providers.base import RecipientResult
from sync.providers.postacell import api
from sync.providers.postacell.client import PostacellAuth, _check, merge_report_csv
from sync.sandbox import PostacellSandbox, sandbox_transport

BASE = "http://sandbox/api/v1/"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def token_calls(sandbox: PostacellSandbox) -> list[str]:
    return [path.rsplit("/api/v1/", 1)[1] for method, path, _ in sandbox.request_log
            if method == "POST" and path.rstrip("/").endswith(("token", "token/refresh"))]


def test_access_token_is_refreshed_before_expiry_and_login_repeated_after_refresh_expiry() -> None:
    clock = Clock()
    sandbox = PostacellSandbox({"acme": "pw-123456"}, clock=clock)
    auth = PostacellAuth("acme", "pw-123456", clock=clock)

    async def scenario() -> list[str]:
        async with httpx.AsyncClient(transport=sandbox_transport(sandbox.app)) as client:
            http = ProviderHTTP(client, provider="postacell", base_url=BASE, policy=HttpPolicy(), auth=auth)
            await http.request("GET", api.LIST_FILTER_PATH)               # login
            clock.now += api.ACCESS_TOKEN_LIFETIME_S - api.TOKEN_REFRESH_MARGIN_S + 1
            response = await http.request("GET", api.LIST_FILTER_PATH)    # refreshed BEFORE the 401
            assert response.status_code == 200
            clock.now += api.REFRESH_TOKEN_LIFETIME_S
            await http.request("GET", api.LIST_FILTER_PATH)               # refresh expired: log in again
        return token_calls(sandbox)

    assert asyncio.run(scenario()) == ["token", "token/refresh", "token"]
    assert not any(status == 401 for _, _, status in sandbox.request_log)


def test_wrong_password_is_an_authentication_error_without_the_password() -> None:
    sandbox = PostacellSandbox({"acme": "right-pw-1"})

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=sandbox_transport(sandbox.app)) as client:
            http = ProviderHTTP(client, provider="postacell", base_url=BASE, policy=HttpPolicy(),
                                auth=PostacellAuth("acme", "wrong-pw-1"))
            await http.request("GET", api.LIST_FILTER_PATH)

    with pytest.raises(AuthenticationError, match="login failed") as caught:
        asyncio.run(scenario())
    assert "wrong-pw-1" not in str(caught.value)


@pytest.mark.parametrize(("status", "error"), [
    (400, RejectedRow), (409, RejectedRow), (401, AuthenticationError), (403, AuthenticationError),
    (404, ProviderError), (413, FatalError),
])
def test_error_table_maps_statuses_to_what_the_caller_does(status: int, error: type[Exception]) -> None:
    response = httpx.Response(status, json={"email": ["Enter a valid email address."]},
                              request=httpx.Request("POST", BASE + "email/subscribers"))
    with pytest.raises(error):
        _check(response, "create subscriber")


def test_report_csvs_merge_into_one_result_per_recipient() -> None:
    results: dict[str, RecipientResult] = {}
    merge_report_csv(results, "subscribers", "\ufeffemail,date\nAyşe@Ornek.com.tr,2026-11-20T10:00:00Z\n".encode())
    merge_report_csv(results, "opened", "email,date,count\nayşe@ornek.com.tr,2026-11-20T11:00:00,3\n".encode())
    merge_report_csv(results, "bounced", b"email,date,bounce_type,diagnostic_code\n"
                                         b"ali@ornek.com.tr,2026-11-20T10:01:00Z,HARDBOUNCE,550 5.1.1 unknown\n")
    assert set(results) == {"ayşe@ornek.com.tr", "ali@ornek.com.tr"}    # e-mails folded to lower case
    ayse, ali = results["ayşe@ornek.com.tr"], results["ali@ornek.com.tr"]
    assert ayse.open_count == 3 and ayse.opened_at is not None and ayse.opened_at.tzinfo is not None
    assert (ali.bounce_type, ali.bounce_reason) == ("hard", "550 5.1.1 unknown")


def test_report_csv_without_expected_columns_is_refused() -> None:
    with pytest.raises(FatalError, match="lacks column"):
        merge_report_csv({}, "clicked", b"mail,when\nx@y.z,2026-01-01\n")


def test_bulk_import_sends_one_request_per_list_and_every_member_gets_its_whole_set() -> None:
    """Seven distinct list sets over three lists: three bulk requests, not seven."""
    from itertools import combinations

    from sync.providers.base import MemberKey, MemberUpsert
    from sync.providers.postacell.client import PostacellProvider

    sandbox = PostacellSandbox({"acme": "pw-123456"}, job_polls_until_done=0)

    async def scenario() -> list[str]:
        async with httpx.AsyncClient(transport=sandbox_transport(sandbox.app)) as client:
            http = ProviderHTTP(client, provider="postacell", base_url=BASE, policy=HttpPolicy(),
                                auth=PostacellAuth("acme", "pw-123456"))
            provider = PostacellProvider(http)
            lists = [(await provider.create_list(name)).remote_id for name in ("A", "B", "C")]
            sets = [combo for size in (1, 2, 3) for combo in combinations(lists, size)]
            batch = [MemberUpsert(MemberKey(f"M{n}"), f"uye{n}@ornek.com.tr",
                                  {"email": f"uye{n}@ornek.com.tr", "status": "active"}, sets[n % len(sets)])
                     for n in range(21)]
            outcomes = await provider.upsert_members(batch)
            assert all(o.rejected is None and o.remote_id for o in outcomes)
            return [str(sorted(sets[n % len(sets)])) for n in range(21)]

    expected = asyncio.run(scenario())
    bulk_posts = [p for m, p, _ in sandbox.request_log if m == "POST" and p.endswith("/subscribers/json")]
    assert len(bulk_posts) == 3
    for n, wanted in enumerate(expected):
        row = sandbox.find_subscriber("acme", f"uye{n}@ornek.com.tr")
        assert row is not None and str(sorted(item["id"] for item in row["lists"])) == wanted


def test_a_large_batch_goes_by_exact_list_set_in_fewer_fuller_requests() -> None:
    """2,100 members in lists {A, B} and 300 in {A}: by list set 3 + 1 requests (each member in
    one request with all its lists), where one request per list would take 3 (A: 2,400) + 3 (B)."""
    from sync.providers.base import MemberKey, MemberUpsert
    from sync.providers.postacell.client import PostacellProvider

    sandbox = PostacellSandbox({"acme": "pw-123456"}, job_polls_until_done=1)

    async def scenario() -> dict[str, tuple[str, ...]]:
        async with httpx.AsyncClient(transport=sandbox_transport(sandbox.app)) as client:
            http = ProviderHTTP(client, provider="postacell", base_url=BASE, policy=HttpPolicy(),
                                auth=PostacellAuth("acme", "pw-123456"))
            provider = PostacellProvider(http)
            a, b = [(await provider.create_list(name)).remote_id for name in ("A", "B")]
            wanted = {f"uye{n}@ornek.com.tr": (a, b) if n < 2100 else (a,) for n in range(2400)}
            batch = [MemberUpsert(MemberKey(f"M{n}"), email, {"email": email, "status": "active"}, lists)
                     for n, (email, lists) in enumerate(wanted.items())]
            outcomes = await provider.upsert_members(batch)
            assert len(outcomes) == 2400 and all(o.rejected is None and o.remote_id for o in outcomes)
            return wanted

    wanted = asyncio.run(scenario())
    bulk_posts = [p for m, p, _ in sandbox.request_log if m == "POST" and p.endswith("/subscribers/json")]
    assert len(bulk_posts) == 4
    for email, lists in wanted.items():
        row = sandbox.find_subscriber("acme", email)
        assert row is not None and sorted(item["id"] for item in row["lists"]) == sorted(lists)
