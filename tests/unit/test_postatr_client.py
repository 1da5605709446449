"""Postatr client against its in-process sandbox (and MockTransport where an answer must be forced):
the token's 10 minutes and re-login on code 1, DataOnly by construction, ignored members as rejects,
the error table, ReportMembers chunks halved on 93, and no secret in errors or logs."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from structlog.testing import capture_logs

from sync.errors import AuthenticationError, ConfigurationError, FatalError, RejectedRow, RetriableError
from sync.http import HttpPolicy, ProviderHTTP
from sync.providers.base import (
    MemberKey,
    MemberSnapshot,
    MemberUpsert,
    RemoteCampaign,
    ReportContext,
    check_provider,
    provider_class,
)
from sync.providers.postatr import api
from sync.providers.postatr.client import CAPABILITIES, PostatrAuth, PostatrProvider, classify, parse_time
from sync.providers.specs import get_spec
from sync.sandbox import PostatrSandbox, sandbox_transport

T = TypeVar("T")
USER, PASSWORD, ENCRYPTED_ID = "acme-postatr", "Postatr-gizli-şifre-9", "12FD8A5F-2H34-486F-871D-5E697677BFC4"
BASE = "http://postatr.sandbox/api.asmx/"
FAST = HttpPolicy(backoff_base_s=0.001, backoff_max_s=0.002, max_attempts=4)
LIST_ID = api.derived_list_id(USER, "L1")


class Clock:
    """One clock for the sandbox and the client, moved by the test."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def sandbox_for(clock: Clock | None = None, **options: Any) -> PostatrSandbox:
    return PostatrSandbox({USER: (PASSWORD, ENCRYPTED_ID)}, clock=clock or Clock(), **options)


def run(sandbox: PostatrSandbox | None, scenario: Callable[[PostatrProvider], Awaitable[T]], *,
        transport: httpx.AsyncBaseTransport | None = None, password: str = PASSWORD, clock: Clock | None = None,
        lists: dict[str, Any] | None = None) -> T:
    async def go() -> T:
        inner = transport or sandbox_transport(sandbox.app)  # type: ignore[union-attr]
        auth = PostatrAuth(USER, password, ENCRYPTED_ID, clock or (sandbox.clock if sandbox else Clock()))
        async with httpx.AsyncClient(transport=inner) as client:
            http = ProviderHTTP(client, provider="postatr", base_url=BASE, policy=FAST, auth=auth)
            return await scenario(PostatrProvider(http, auth, USER, lists))
    return asyncio.run(go())


def upsert(provider: PostatrProvider, member_id: str, email: str, *, status: str = "active",
           list_id: str = LIST_ID, first_name: str = "Ayşe") -> MemberUpsert:
    payload = provider.build_payload(MemberSnapshot(email, first_name, "Çelik", None, None, status))  # type: ignore[arg-type]
    return MemberUpsert(MemberKey(member_id, "L1"), email, payload, (list_id,))


def context(ids: list[str]) -> ReportContext:
    def chunks(size: int) -> Iterator[list[str]]:
        for start in range(0, len(ids), size):
            yield ids[start:start + size]
    return ReportContext(member_ids=chunks)


def answer(body: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json={"d": body})


def token_response() -> httpx.Response:
    return httpx.Response(200, text=api.token_answer("6AC778A1-10D5-4EE5-A95A-22CBE9431085"),
                          headers={"content-type": "text/xml"})


# --- the provider as a whole --------------------------------------------------------------------


def test_the_provider_declares_only_what_the_document_offers() -> None:
    provider = provider_class("postatr").create(lambda caps, auth: None, {"username": USER, "password": PASSWORD,
                                                                         "encrypted_id": ENCRYPTED_ID}, {})
    check_provider(provider)
    caps = provider.capabilities
    assert (caps.lists, caps.member_removal, caps.member_key, caps.status_pull, caps.supports_unsubscribe) == (
        "mapped", "none", "crm_id", "none", False)
    assert caps.has_campaign_reports and caps.max_batch == api.MAX_MEMBERS_PER_PROCESS


# --- the token ----------------------------------------------------------------------------------


def test_login_reads_the_token_from_the_string_element_and_uses_it_in_the_body() -> None:
    sandbox = sandbox_for()
    outcomes = run(sandbox, lambda p: p.upsert_members([upsert(p, "M1", "ayse@ornek.com.tr")]))
    assert outcomes[0].rejected is None and outcomes[0].remote_id == "M1"
    assert sandbox.member(USER, "M1") is not None


def test_the_all_zero_token_is_a_clear_authentication_error_without_a_secret() -> None:
    with pytest.raises(AuthenticationError) as caught:
        run(sandbox_for(), lambda p: p.upsert_members([upsert(p, "M1", "ayse@ornek.com.tr")]),
            password="wrong-password-123")
    text = str(caught.value)
    assert "all-zero token" in text and "credentials" in text
    assert "wrong-password-123" not in text and ENCRYPTED_ID not in text


def test_the_token_is_renewed_before_its_ten_minutes_are_over() -> None:
    clock = Clock()
    sandbox = sandbox_for(clock)

    async def scenario(provider: PostatrProvider) -> list[int]:
        logins = []
        await provider.upsert_members([upsert(provider, "M1", "a@ornek.com.tr")])
        logins.append(provider.auth.logins)
        clock.now += api.TOKEN_LIFETIME_S - api.TOKEN_RENEW_MARGIN_S - 5
        await provider.upsert_members([upsert(provider, "M2", "b@ornek.com.tr")])
        logins.append(provider.auth.logins)
        clock.now += 10     # now inside the renewal margin, still before the sandbox would refuse it
        await provider.upsert_members([upsert(provider, "M3", "c@ornek.com.tr")])
        logins.append(provider.auth.logins)
        return logins

    assert run(sandbox, scenario) == [1, 1, 2]      # renewed by the clock, not after a refusal
    assert len(sandbox._tokens) == 2


def test_error_code_1_logs_in_again_once_and_the_resent_body_carries_the_new_token() -> None:
    sandbox = sandbox_for()

    async def scenario(provider: PostatrProvider) -> int:
        await provider.upsert_members([upsert(provider, "M1", "a@ornek.com.tr")])
        sandbox.expire_tokens()        # e.g. the service restarted and forgot its tokens
        outcomes = await provider.upsert_members([upsert(provider, "M2", "b@ornek.com.tr")])
        assert outcomes[0].rejected is None
        return provider.auth.logins

    assert run(sandbox, scenario) == 2
    assert sandbox.member(USER, "M2") is not None


def test_a_second_code_1_right_after_a_fresh_login_is_an_authentication_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(api.AUTHENTICATE):
            return token_response()
        return answer({"ErrorCode": 1})

    with pytest.raises(AuthenticationError) as caught:
        run(None, lambda p: p.upsert_members([upsert(p, "M1", "a@ornek.com.tr")]),
            transport=httpx.MockTransport(handler))
    assert "login or token invalid" in str(caught.value)


def test_no_secret_in_the_log_lines_of_a_login_and_a_push() -> None:
    sandbox = sandbox_for()
    with capture_logs() as logs:
        run(sandbox, lambda p: p.upsert_members([upsert(p, "M1", "a@ornek.com.tr")]))
    text = json.dumps(logs, default=str)
    assert PASSWORD not in text and ENCRYPTED_ID not in text
    assert all(token not in text for token in sandbox._tokens)


# --- DataOnly by construction -------------------------------------------------------------------


def test_the_request_builder_cannot_express_another_process_type() -> None:
    parameters = set(inspect.signature(api.build_start_process).parameters)
    assert parameters == {"token_slot", "list_id", "member_groups", "members"}
    body = api.build_start_process({}, LIST_ID, "", [api.PostatrMember("M1", "A", "B", "a@ornek.com.tr", {})])
    data = body["MyData"]
    assert data["ProcessType"] == "DataOnly" and data["SegmentationFilter"] == "1=2"
    assert not {"MailSubject", "MailBody", "StartDate", "MailTestAddress", "SenderId"} & set(data)
    assert data["MemberGroups"] == "0"


def test_every_start_process_the_client_sends_is_data_only_and_starts_nothing() -> None:
    sandbox = sandbox_for()

    async def scenario(provider: PostatrProvider) -> None:
        items = [upsert(provider, f"M{n}", f"uye{n}@ornek.com.tr") for n in range(1, 8)]
        items.append(upsert(provider, "M99", "bozuk@adres"))
        await provider.upsert_members(items)
        await provider.upsert_members(items[:3])
        async for campaign in provider.pull_campaigns():
            async for _ in provider.pull_campaign_results(campaign, context(["M1"])):
                pass

    sandbox.simulate_campaign(USER)
    run(sandbox, scenario)
    assert sandbox.process_types and set(sandbox.process_types) == {"DataOnly"}
    assert sandbox.campaigns_started_by_requests == []


# --- members ------------------------------------------------------------------------------------


def test_an_ignored_member_is_its_own_reject_with_the_translated_reason_and_the_rest_goes_on() -> None:
    sandbox = sandbox_for()
    outcomes = run(sandbox, lambda p: p.upsert_members([
        upsert(p, "M1", "ayse@ornek.com.tr"), upsert(p, "M2", "bozuk@adres"), upsert(p, "M3", "can@ornek.com.tr")]))
    assert [o.rejected is None for o in outcomes] == [True, False, True]
    rejected = outcomes[1].rejected
    assert rejected is not None and rejected.provider_code == "ignored"
    assert "the e-mail address is invalid" in rejected.reason and "Email adresi hatalı" in rejected.reason
    assert sandbox.member(USER, "M2") is None and sandbox.member(USER, "M3") is not None


def test_when_every_member_is_ignored_error_97_still_gives_each_its_reason() -> None:
    outcomes = run(sandbox_for(), lambda p: p.upsert_members([upsert(p, "M1", "x@y"), upsert(p, "M2", "z@w")]))
    assert all(o.rejected is not None and "invalid" in o.rejected.reason for o in outcomes)


def test_an_e_mail_change_updates_the_same_memberid() -> None:
    sandbox = sandbox_for()

    async def scenario(provider: PostatrProvider) -> None:
        await provider.upsert_members([upsert(provider, "M1", "eski@ornek.com.tr")])
        await provider.upsert_members([upsert(provider, "M1", "yeni@ornek.com.tr")])

    run(sandbox, scenario)
    assert [row["Email"] for row in sandbox.members(USER)] == ["yeni@ornek.com.tr"]


def test_a_member_to_unsubscribe_is_a_reject_saying_what_to_do_and_nothing_is_sent() -> None:
    sandbox = sandbox_for()
    outcomes = run(sandbox, lambda p: p.upsert_members([upsert(p, "M1", "ret@ornek.com.tr", status="unsubscribed")]))
    rejected = outcomes[0].rejected
    assert rejected is not None and rejected.provider_code == "unsubscribe_unsupported"
    assert "panel" in rejected.reason and "ret@ornek.com.tr" in rejected.reason
    assert sandbox.write_requests() == 0


def test_a_batch_goes_out_in_one_request_per_list_and_carries_the_lists_member_groups() -> None:
    sandbox = sandbox_for()
    other = api.derived_list_id(USER, "L2")
    lists = {"L1": {"member_groups": "1354, 1359"}}
    run(sandbox, lambda p: p.upsert_members([upsert(p, "M1", "a@ornek.com.tr"), upsert(p, "M2", "b@ornek.com.tr"),
                                             upsert(p, "M1", "a@ornek.com.tr", list_id=other)]), lists=lists)
    assert sandbox.write_requests() == 2
    member = sandbox.member(USER, "M1")
    assert member is not None and set(member["lists"]) == {LIST_ID, other}
    assert member["groups"] == ["1354", "1359"]


def test_a_request_level_code_about_one_member_is_narrowed_down_to_that_member() -> None:
    """92 ("this e-mail address cannot do this operation") names no member: the batch is halved
    until the one it concerns is alone; it alone is rejected."""
    sent: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(api.AUTHENTICATE):
            return token_response()
        members = json.loads(request.content)["MyData"]["Members"]["Member"]
        sent.append(len(members))
        if any(m["Email"] == "yasak@ornek.com.tr" for m in members):
            return answer({"ErrorCode": 92})
        return answer({"ErrorCode": 0, "inserted": len(members), "updated": 0, "ignored": 0, "ignored_details": []})

    outcomes = run(None, lambda p: p.upsert_members(
        [upsert(p, f"M{n}", "yasak@ornek.com.tr" if n == 5 else f"u{n}@ornek.com.tr") for n in range(8)]),
        transport=httpx.MockTransport(handler))
    rejected = [o for o in outcomes if o.rejected is not None]
    assert [o.key.crm_member_id for o in rejected] == ["M5"]
    assert rejected[0].rejected is not None and "error 92" in rejected[0].rejected.reason
    assert sent[0] == 8 and max(sent[1:]) < 8


def test_a_lost_start_process_answer_is_sent_again_and_creates_nothing_twice() -> None:
    sandbox = sandbox_for()

    class DropFirstWrite(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self.inner, self.dropped = sandbox_transport(sandbox.app), False

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await self.inner.handle_async_request(request)
            if request.url.path.endswith(api.START_PROCESS) and not self.dropped:
                self.dropped = True
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
            return response

    outcomes = run(sandbox, lambda p: p.upsert_members([upsert(p, "M1", "a@ornek.com.tr")]),
                   transport=DropFirstWrite())
    assert outcomes[0].rejected is None
    assert sandbox.write_requests() == 2 and len(sandbox.members(USER)) == 1


def test_member_values_longer_than_postatr_takes_are_rejected_before_sending() -> None:
    provider = PostatrProvider(None, PostatrAuth(USER, PASSWORD, ENCRYPTED_ID), USER)  # type: ignore[arg-type]
    with pytest.raises(RejectedRow) as caught:
        provider.build_payload(MemberSnapshot("a@ornek.com.tr", "Ç" * 200, None, None, None, "active"))
    assert caught.value.provider_code == "too_long"
    payload = provider.build_payload(MemberSnapshot("A@Ornek.com.tr", "Ayşe", None, None, None, "active"))
    assert payload == {"FName": "Ayşe", "LName": "", "Email": "a@ornek.com.tr", "MyColumns": {}, "status": "active"}


# --- the error table ----------------------------------------------------------------------------


def test_every_documented_error_code_is_in_the_one_table_with_an_action_and_a_translation() -> None:
    documented = {1, 2, 3, 4, 5, 7, 9, 18, 19, 40, 41, 42, 49, 71, 72, 80, 81, 82, 83, 91, 92, 93, 95, 96, 97, 101, 102}
    assert set(api.ERROR_CODES) == documented
    for code, error in api.ERROR_CODES.items():
        assert error.action in ("relogin", "auth", "fatal", "retry", "item")
        assert error.english and error.turkish and error.english not in error.turkish
        assert str(code) in api.describe_error(code) and error.english in api.describe_error(code)


@pytest.mark.parametrize(("code", "kind"), [(1, "relogin"), (2, "auth"), (42, "retry"), (49, "retry"), (95, "fatal"),
                                            (102, "fatal"), (555, "fatal"), (93, None), (92, None), (40, None),
                                            (0, None)])
def test_the_classifier_reads_the_error_code_inside_an_http_200(code: int, kind: str | None) -> None:
    verdict = classify(answer({"ErrorCode": code}))
    assert (verdict.kind if verdict else None) == kind
    if verdict is not None:
        assert verdict.provider_code == str(code) and not verdict.maybe_applied


def test_the_classifier_leaves_the_token_answer_and_bare_objects_alone() -> None:
    assert classify(token_response()) is None
    assert classify(httpx.Response(200, json={"ErrorCode": 0, "inserted": 1})) is None
    verdict = classify(httpx.Response(200, json={"ErrorCode": "1"}))
    assert verdict is not None and verdict.kind == "relogin"


def test_a_retriable_code_is_retried_and_a_fatal_one_stops_with_its_english_reason() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(api.AUTHENTICATE):
            return token_response()
        calls.append(request.url.path)
        if len(calls) == 1:
            return answer({"ErrorCode": 49})
        return answer({"ErrorCode": 0, "Campaigns": [{"CampId": "7", "Status": "Tamamlandı"}]})

    async def campaigns(provider: PostatrProvider) -> list[RemoteCampaign]:
        return [c async for c in provider.pull_campaigns()]

    found = run(None, campaigns, transport=httpx.MockTransport(handler))
    assert [c.remote_id for c in found] == ["7"] and len(calls) >= 2

    def fatal(request: httpx.Request) -> httpx.Response:
        return token_response() if request.url.path.endswith(api.AUTHENTICATE) else answer({"ErrorCode": 96})

    with pytest.raises(FatalError) as caught:
        run(None, lambda p: p.upsert_members([upsert(p, "M1", "a@ornek.com.tr")]), transport=httpx.MockTransport(fatal))
    assert "members of this JSON cannot be read" in str(caught.value)


def test_an_answer_that_is_not_json_is_a_malformed_answer_naming_the_call() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(api.AUTHENTICATE):
            return token_response()
        return httpx.Response(200, text="<html>Runtime Error</html>", headers={"content-type": "text/html"})

    with pytest.raises(RetriableError) as caught:
        run(None, lambda p: p.upsert_members([upsert(p, "M1", "a@ornek.com.tr")]),
            transport=httpx.MockTransport(handler))
    assert "StartProcess" in str(caught.value)


# --- reports ------------------------------------------------------------------------------------


def test_campaigns_are_read_all_then_each_unfinished_one_by_its_camp_id() -> None:
    sandbox = sandbox_for()
    run(sandbox, lambda p: p.upsert_members([upsert(p, "M1", "a@ornek.com.tr")]))
    camp_id = sandbox.simulate_campaign(USER, "Kasım")
    sandbox.reset_log()

    async def campaigns(provider: PostatrProvider) -> list[RemoteCampaign]:
        return [c async for c in provider.pull_campaigns()]

    found = run(sandbox, campaigns)
    assert [(c.remote_id, c.status, c.final) for c in found] == [(camp_id, "Tamamlandı", False)]
    assert found[0].sent_at is not None
    assert [path for _, path, _ in sandbox.request_log if path.endswith("ReportCampaign")] == [
        "/api.asmx/ReportCampaign"] * 2


def test_member_reports_come_in_chunks_and_a_chunk_refused_with_93_is_halved() -> None:
    sandbox = sandbox_for(report_members_limit=7)
    ids = [f"M{n}" for n in range(1, 31)]

    async def scenario(provider: PostatrProvider) -> tuple[list[Any], int]:
        await provider.upsert_members([upsert(provider, i, f"{i.lower()}@ornek.com.tr") for i in ids])
        camp_id = sandbox.simulate_campaign(USER)
        campaign = RemoteCampaign(camp_id, "k", "Tamamlandı", None, None, False)
        pages = [page async for page in provider.pull_campaign_results(campaign, context([*ids, "M404"]))]
        return pages, provider.report_chunk

    pages, chunk = run(sandbox, scenario)
    results = [r for page in pages for r in page]
    assert sorted(r.crm_member_id or "" for r in results) == sorted(ids)
    sizes = sandbox.report_member_requests
    assert [size for size in sizes if size > 7] == [31, 15]     # refused with 93, then halved
    assert chunk == 7 and sum(size for size in sizes if size <= 7) == 31
    truth = {row["Memberid"]: row for row in sandbox.campaign_report(next(iter(sandbox._campaigns)))}
    for result in results:
        status = truth[result.crm_member_id or ""]["Status"]
        assert (result.opened_at is not None) == (status in ("Açtı", "Tıkladı"))
        assert (result.clicked_at is not None) == (status == "Tıkladı")
        assert result.open_count == truth[result.crm_member_id or ""]["OpenCount"]


def test_a_campaign_that_is_not_there_is_that_campaigns_reject() -> None:
    sandbox = sandbox_for()

    async def scenario(provider: PostatrProvider) -> None:
        campaign = RemoteCampaign("999", "k", "", None, None, False)
        async for _ in provider.pull_campaign_results(campaign, context(["M1"])):
            pass

    with pytest.raises(RejectedRow) as caught:
        run(sandbox, scenario)
    assert caught.value.provider_code == "40"


def test_report_dates_are_read_in_both_documented_formats_in_turkeys_time() -> None:
    first, second = parse_time("27.01.2018 14:07"), parse_time("2019-04-14 18:59:59")
    assert first is not None and first.isoformat() == "2018-01-27T11:07:00+00:00"
    assert second is not None and second.isoformat() == "2019-04-14T15:59:59+00:00"
    assert parse_time("") is None and parse_time("yarın") is None


# --- lists and settings -------------------------------------------------------------------------


def test_every_crm_list_has_a_stable_list_id_per_account_and_a_setting_may_give_its_own() -> None:
    own = "468c1222-428a-4acf-b269-3eaf090979a4"
    provider = PostatrProvider(None, PostatrAuth(USER, PASSWORD, ENCRYPTED_ID), USER,  # type: ignore[arg-type]
                               {"L2": {"list_id": own.upper(), "member_groups": "0"}})
    mapped = provider.mapped_lists()
    assert mapped["L1"].remote_id == api.derived_list_id(USER, "L1") == api.derived_list_id(USER.upper(), "L1")
    assert mapped["L1"].remote_id != api.derived_list_id("another-account", "L1")
    assert api.is_guid(mapped["L9"].remote_id) and "L9" in mapped
    assert mapped["L2"].remote_id == own and list(mapped) == ["L2"]


@pytest.mark.parametrize("bad", [{"L1": {"list_id": "not-a-guid"}}, {"L1": {"member_groups": "12;13"}},
                                 {"L1": {"groups": "1"}}, {"L1": "x"},
                                 {"L1": {"list_id": LIST_ID}, "L2": {"list_id": LIST_ID}}])
def test_a_wrong_lists_setting_is_refused_in_one_line(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError) as caught:
        get_spec("postatr").validate_settings({"lists": bad})
    assert "\n" not in str(caught.value) and "lists" in str(caught.value)


def test_capabilities_constant_is_what_the_provider_reports() -> None:
    provider = PostatrProvider(None, PostatrAuth(USER, PASSWORD, ENCRYPTED_ID), USER)  # type: ignore[arg-type]
    assert provider.capabilities is CAPABILITIES
