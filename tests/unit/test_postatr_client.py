"""Postatr client against its in-process sandbox (and MockTransport where an answer must be forced):
the token's 10 minutes and re-login on code 1, DataOnly by construction, ignored members as rejects,
the error table, ReportMembers chunks halved on 93, and no secret in errors or logs."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import inspect
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from structlog.testing import capture_logs

from sync.errors import (
    AuthenticationError,
    ConfigurationError,
    FatalError,
    RejectedRow,
    RetriableError,
    UnknownReadingError,
)
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
from sync.providers.postatr import answers, api
from sync.providers.postatr.client import CAPABILITIES, PostatrAuth, PostatrProvider, classify, parse_time
from sync.providers.postatr.sandbox import DIALECTS
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
        lists: dict[str, Any] | None = None, columns: dict[str, str] | None = None) -> T:
    async def go() -> T:
        inner = transport or sandbox_transport(sandbox.app)  # type: ignore[union-attr]
        auth = PostatrAuth(USER, password, ENCRYPTED_ID, clock or (sandbox.clock if sandbox else Clock()))
        async with httpx.AsyncClient(transport=inner) as client:
            http = ProviderHTTP(client, provider="postatr", base_url=BASE, policy=FAST, auth=auth)
            return await scenario(PostatrProvider(http, auth, USER, lists, columns=columns))
    return asyncio.run(go())


def upsert(provider: PostatrProvider, member_id: str, email: str, *, status: str = "active",
           list_id: str = LIST_ID, first_name: str = "Ayşe") -> MemberUpsert:
    member = MemberSnapshot(email, first_name, "Çelik", None, None, status)  # type: ignore[arg-type]
    try:
        payload = provider.build_payload(member)
    except RejectedRow:   # an address the client refuses ("bozuk@adres"): sent unchecked, to see the answer
        payload = {"FName": first_name, "LName": "Çelik", "Email": email, "MyColumns": provider.my_columns(member),
                   "status": status}
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
        provider.build_payload(MemberSnapshot("a@ornek.com.tr", "Ç" * 300, None, None, None, "active"))
    assert caught.value.provider_code == "validation"
    payload = provider.build_payload(MemberSnapshot("a@ornek.com.tr", "Ayşe", None, None, None, "active"))
    assert payload == {"FName": "Ayşe", "LName": "", "Email": "a@ornek.com.tr",
                       "MyColumns": {"phone": "", "city": ""}, "status": "active"}


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


def test_where_every_recipient_at_once_is_refused_with_93_reports_come_by_member_ids_halved_on_93() -> None:
    """The reading where ReportMembers without Memberids answers 93 for a large campaign: our linked
    ids in chunks; a chunk that still gets 93 is halved."""
    sandbox = sandbox_for(report_members_limit=7, dialect="d-array")
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
    assert [size for size in sizes if size > 7] == [30, 31, 15]     # everyone, then a chunk refused with 93, halved
    assert chunk == 7 and sum(size for size in sizes if size <= 7) == 31
    truth = {row["Memberid"]: row for row in sandbox.campaign_report(next(iter(sandbox._campaigns)))}
    for result in results:
        status = truth[result.crm_member_id or ""]["Status"]
        assert (result.bounce_type == api.FAILED_RECIPIENT) == (truth[result.crm_member_id or ""]["ErrorCode"] != 0)
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


# --- readings (issue 22): every reasonable reading of what the document does not show ---------------

ROW = {"Memberid": "M1", "Email": "Ayse@Ornek.com.tr", "Status": "Tıkladı", "SentDate": "27.01.2018 14:07",
       "OpenCount": 2, "LastOpenDate": "27.01.2018 15:07", "ErrorCode": 0}
FAILED_ROW = {"Memberid": "M2", "Email": "can@ornek.com.tr", "Status": "", "SentDate": "27.01.2018 14:07",
              "OpenCount": 0, "LastOpenDate": "", "ErrorCode": 92}
CAMPAIGN = {"CampId": "10041", "Status": "Gönderiliyor", "SentDate": "27.01.2018 14:07"}


def serving(answers_by_method: dict[str, Any], seen: list[tuple[str, dict[str, Any]]] | None = None,
            token: httpx.Response | None = None) -> httpx.MockTransport:
    """A server answering each method with a fixed JSON body (or a callable of the request body)."""
    def handler(request: httpx.Request) -> httpx.Response:
        method = request.url.path.rsplit("/", 1)[-1]
        if method == api.AUTHENTICATE:
            return token or token_response()
        body = json.loads(request.content)
        if seen is not None:
            seen.append((method, body))
        found = answers_by_method[method]
        found = found(body) if callable(found) else found
        return found if isinstance(found, httpx.Response) else httpx.Response(200, json=found)
    return httpx.MockTransport(handler)


def members_report(rows: list[dict[str, Any]]) -> Callable[[PostatrProvider], Awaitable[list[Any]]]:
    async def scenario(provider: PostatrProvider) -> list[Any]:
        campaign = RemoteCampaign("10041", "k", "Tamamlandı", None, None, False)
        results = [r async for page in provider.pull_campaign_results(campaign, context(["M1"])) for r in page]
        return [results, provider.readings.as_dict()]
    return scenario


def camel(row: dict[str, Any]) -> dict[str, Any]:
    return {key[0].lower() + key[1:]: value for key, value in row.items()}


@pytest.mark.parametrize(("answer", "reading"), [
    ([ROW, FAILED_ROW], "array"),
    ({"d": [ROW, FAILED_ROW]}, 'array in {"d": ...}'),
    ({"d": json.dumps([ROW, FAILED_ROW])}, 'array in {"d": JSON text}'),
    ({"d": {"ErrorCode": 0, "Members": [ROW, FAILED_ROW]}}, "rows under 'Members' in {\"d\": ...}"),
    ({"errorCode": 0, "members": [camel(ROW), camel(FAILED_ROW)]}, "rows under 'members'"),
    ({"ErrorCode": 0, "Recipients": [ROW, FAILED_ROW]}, "rows under 'Recipients'"),
    ({"ErrorCode": 0, "Alicilar": [ROW, FAILED_ROW]}, "rows under 'Alicilar'"),        # any key: the one list of rows
    ({"d": {"M1": {k: v for k, v in ROW.items() if k != "Memberid"}, "M2": FAILED_ROW}},
     'object keyed by id in {"d": ...}'),
    ({"MEMBER_ID": "M1", "EMAIL": "Ayse@Ornek.com.tr", "status": "TIKLADI", "sent_date": "2018-01-27 14:07:00",
      "open_count": "2", "last_open_date": "/Date(1517054820000)/"}, "one row object"),
    ({"d": {"ErrorCode": 0, "Members": {"Member": [ROW, FAILED_ROW]}}},        # nested as the request's Members.Member
     "rows under 'Members' > 'Member' in {\"d\": ...}"),
    ({"d": {"__type": "Postatr.Result", "ErrorCode": 0,
            "Members": [{"__type": "Postatr.MemberReport", **ROW}, {"__type": "Postatr.MemberReport", **FAILED_ROW}]}},
     "rows under 'Members' in {\"d\": ...}"),                                 # ASMX's type hints
    ([dict(ROW, SentDate="1/27/2018 2:07:00 PM", LastOpenDate="1/27/2018 3:07:00 PM"), FAILED_ROW], "array"),
    ([dict(ROW, SentDate="27/01/2018 14:07:00", LastOpenDate="27/01/2018 15:07"), FAILED_ROW], "array"),
])
def test_member_report_readings_all_give_the_same_recipients(answer: Any, reading: str) -> None:
    """ReportMembers as a bare array, in {"d": ...} (an array, JSON text, an object), under any key or
    casing, id-keyed, or one row object: the same recipients, and the reading noted (issue 22, 13)."""
    results, readings = run(None, members_report([]), transport=serving({"ReportMembers": answer}))
    assert readings["ReportMembers"] == reading
    clicked = next(r for r in results if r.crm_member_id == "M1")
    assert clicked.email == "ayse@ornek.com.tr" and clicked.open_count == 2
    assert clicked.clicked_at is not None and clicked.opened_at == clicked.clicked_at
    assert clicked.clicked_at.isoformat() == "2018-01-27T12:07:00+00:00"
    assert clicked.sent_at is not None and clicked.bounce_type is None


def test_a_recipient_with_an_error_code_is_stored_as_failed_with_its_code_never_as_sent() -> None:
    """The documented per-recipient ErrorCode (issue 22, 14): failed, with the code and its meaning."""
    results, readings = run(None, members_report([]), transport=serving({"ReportMembers": [ROW, FAILED_ROW]}))
    failed = next(r for r in results if r.crm_member_id == "M2")
    assert failed.bounce_type == api.FAILED_RECIPIENT == "failed"
    assert failed.bounce_reason is not None and "92" in failed.bounce_reason and "cannot do" in failed.bounce_reason
    assert failed.sent_at is None and failed.opened_at is None and failed.clicked_at is None
    assert failed.extra["error_code"] == 92
    assert readings["failed recipients"] == "ErrorCode on the row"


def test_a_not_yet_sent_recipient_is_stored_without_a_send_date() -> None:
    queued = dict(ROW, Status="Kuyrukta", OpenCount=0, LastOpenDate="")
    results, _ = run(None, members_report([]), transport=serving({"ReportMembers": [queued]}))
    assert results[0].sent_at is None and results[0].opened_at is None and results[0].bounce_type is None


@pytest.mark.parametrize("answer", [
    {"d": {"ErrorCode": 0, "Uyeler": "M1,M2"}},                  # data under a key, in no row shape
    {"ErrorCode": 0, "Gonderilen": [ROW], "Hatali": [FAILED_ROW]},   # two lists of rows: which is the report?
    {"d": 5},
    "a text",
    [1, 2],
    [dict(ROW, Status="Bilinmiyor")],                            # a status the document does not have
    [dict(ROW, SentDate="dün")],                                 # a date in no format
    [{"Memberid": "M1", "Status": "Açtı"}],                      # rows without an e-mail: cannot be stored
])
def test_a_member_report_in_no_reading_fails_in_one_line_never_as_an_empty_pull(answer: Any) -> None:
    with pytest.raises(UnknownReadingError) as caught:
        run(None, members_report([]), transport=serving({"ReportMembers": answer}))
    text = str(caught.value)
    assert "\n" not in text and "ReportMembers" in text and "none of the readings" in text and "it began:" in text


CAMPAIGN_READINGS = [
    ({"d": {"ErrorCode": 0, "Campaigns": [CAMPAIGN]}}, "rows under 'Campaigns' in {\"d\": ...}"),
    ([CAMPAIGN], "array"),
    ({"d": [dict(CAMPAIGN, CampId=10041)]}, 'array in {"d": ...}'),
    ({"d": json.dumps({"Data": [CAMPAIGN]})}, "rows under 'Data' in {\"d\": JSON text}"),
    ({"errorCode": 0, "campaigns": [{"campaignId": "10041", "status": "GONDERILIYOR", "sentDate": "2018-01-27T14:07"}]},
     "rows under 'campaigns'"),
    ({"d": {"10041": {"Status": "Gönderiliyor", "SentDate": "27.01.2018 14:07"}}}, 'object keyed by id in {"d": ...}'),
    ({"ErrorCode": 0, "Kampanyalar": [CAMPAIGN]}, "rows under 'Kampanyalar'"),
    ({"d": {"Campaigns": {"Campaign": CAMPAIGN}}}, "rows under 'Campaigns' > 'Campaign' in {\"d\": ...}"),
    ({"d": {"__type": "Postatr.Result", "Campaigns": [{"__type": "Postatr.Campaign", **CAMPAIGN}]}},
     "rows under 'Campaigns' in {\"d\": ...}"),
    ([{"KampanyaId": 10041, "Status": "Gönderiliyor", "SentDate": "27.01.2018 14:07"}], "array"),
]


@pytest.mark.parametrize(("listing", "reading"), CAMPAIGN_READINGS)
def test_campaign_report_readings_all_give_the_campaign(listing: Any, reading: str) -> None:
    """ReportCampaign bare, in {"d": ...}, as JSON text, under any key, id-keyed, camelCase: the same
    campaign, never 0 campaigns pulled silently (issue 22, 13)."""
    details = CAMPAIGN | {"Status": "Tamamlandı", "OpenCount": 3, "LastOpenDate": "27.01.2018 16:00", "ErrorCode": 0}

    async def campaigns(provider: PostatrProvider) -> list[Any]:
        return [[c async for c in provider.pull_campaigns()], provider.readings.as_dict()]

    found, readings = run(None, campaigns, transport=serving({
        "ReportCampaign": lambda body: details if body.get("CampId") else listing}))
    assert [(c.remote_id, c.status, c.final) for c in found] == [("10041", "Tamamlandı", True)]
    assert found[0].sent_at is not None and found[0].sent_at.isoformat() == "2018-01-27T11:07:00+00:00"
    assert found[0].updated_at is not None and found[0].updated_at.isoformat() == "2018-01-27T13:00:00+00:00"
    assert readings["ReportCampaign"] == reading and readings["ReportCampaign by CampId"] == "one row object"


@pytest.mark.parametrize("listing", [
    {"d": {"ErrorCode": 0, "Kampanyalar": "10041"}},
    {"ErrorCode": 0, "Kampanyalar": [{"Ad": "Kasım"}]},
    [{"Status": "Tamamlandı", "SentDate": "27.01.2018 14:07"}],        # rows that name no campaign
])
def test_a_campaign_listing_in_no_reading_fails_loudly(listing: Any) -> None:
    async def campaigns(provider: PostatrProvider) -> list[RemoteCampaign]:
        return [c async for c in provider.pull_campaigns()]

    with pytest.raises(UnknownReadingError) as caught:
        run(None, campaigns, transport=serving({"ReportCampaign": listing}))
    assert "ReportCampaign" in str(caught.value) and "\n" not in str(caught.value)


def test_an_empty_listing_is_no_campaign_and_an_error_object_is_that_error() -> None:
    async def campaigns(provider: PostatrProvider) -> list[RemoteCampaign]:
        return [c async for c in provider.pull_campaigns()]

    empties: list[Any] = [[], {"d": []}, {"ErrorCode": 0}, {"d": {"ErrorCode": 0, "Campaigns": None}}, {"d": None},
                          {"d": {"ErrorCode": 40}}, [{"Email": None, "CampId": None, "ErrorCode": 40}],
                          {"ErrorCode": 0, "Count": 0, "Kampanyalar": []}]
    for empty in empties:
        assert run(None, campaigns, transport=serving({"ReportCampaign": empty})) == [], empty
    with pytest.raises(RejectedRow) as caught:
        run(None, campaigns, transport=serving({"ReportCampaign": {"Email": None, "Status": None, "ErrorCode": 41}}))
    assert caught.value.provider_code == "41"


def test_code_40_to_a_campaign_asked_by_its_camp_id_is_that_campaigns_reject_not_an_empty_listing() -> None:
    async def details(provider: PostatrProvider) -> Any:
        return await provider._report_campaign("10041")

    with pytest.raises(RejectedRow) as caught:
        run(None, details, transport=serving({"ReportCampaign": {"d": {"ErrorCode": 40}}}))
    assert caught.value.provider_code == "40"


def test_a_token_refused_as_an_arrays_one_error_row_logs_in_again() -> None:
    """The "bare" reading answers a report's error as ``[{"Email": null, ..., "ErrorCode": 1}]``: the
    classifier reads it as the answer's error, so the client logs in again and goes on."""
    clock = Clock()
    sandbox = sandbox_for(clock, dialect="bare")

    async def scenario(provider: PostatrProvider) -> list[RemoteCampaign]:
        await provider.upsert_members([upsert(provider, "M1", "a@ornek.com.tr")])
        sandbox.simulate_campaign(USER)
        sandbox.expire_tokens()
        return [c async for c in provider.pull_campaigns()]

    found = run(sandbox, scenario, clock=clock)
    assert [c.remote_id for c in found] == ["10041"]


def test_the_listings_own_error_in_an_error_row_is_loud() -> None:
    async def campaigns(provider: PostatrProvider) -> list[RemoteCampaign]:
        return [c async for c in provider.pull_campaigns()]

    with pytest.raises(RejectedRow) as caught:
        run(None, campaigns, transport=serving({"ReportCampaign": [{"Email": None, "ErrorCode": 41}]}))
    assert caught.value.provider_code == "41"


@pytest.mark.parametrize(("token", "reading"), [
    (httpx.Response(200, text='<?xml version="1.0" encoding="utf-8"?>\n<string xmlns="http://tempuri.org/">'
                              "6AC778A1-10D5-4EE5-A95A-22CBE9431085</string>"), "XML <string>"),
    (httpx.Response(200, text="<string>6AC778A1-10D5-4EE5-A95A-22CBE9431085</string>"), "XML <string>"),
    (httpx.Response(200, json={"d": "6AC778A1-10D5-4EE5-A95A-22CBE9431085"}), '{"d": ...} string'),
    (httpx.Response(200, json="6AC778A1-10D5-4EE5-A95A-22CBE9431085"), "JSON string"),
    (httpx.Response(200, text="6AC778A1-10D5-4EE5-A95A-22CBE9431085"), "plain text"),
    (httpx.Response(200, json={"d": {"token": "6AC778A1-10D5-4EE5-A95A-22CBE9431085"}}),
     'object with token in {"d": ...}'),
    (httpx.Response(200, json={"AuthenticateResult": "6AC778A1-10D5-4EE5-A95A-22CBE9431085"}),
     "object with AuthenticateResult"),
])
def test_authenticate_readings_all_give_the_token(token: httpx.Response, reading: str) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    async def scenario(provider: PostatrProvider) -> dict[str, str]:
        await provider.pull_campaign_results(RemoteCampaign("1", "k", "", None, None, False),
                                             context([])).__anext__()
        return provider.readings.as_dict()

    readings = run(None, scenario, transport=serving({"ReportMembers": [ROW]}, seen, token=token))
    assert readings["Authenticate"] == reading
    assert seen[0][1]["Token"] == "6AC778A1-10D5-4EE5-A95A-22CBE9431085"


@pytest.mark.parametrize("refused", [httpx.Response(200, json={"d": api.ZERO_GUID}), httpx.Response(200, text="0"),
                                     httpx.Response(200, json={"Token": "0"})])
def test_a_refusal_in_any_reading_is_an_authentication_error(refused: httpx.Response) -> None:
    with pytest.raises(AuthenticationError) as caught:
        run(None, members_report([]), transport=serving({"ReportMembers": [ROW]}, token=refused))
    assert "all-zero token" in str(caught.value)


def test_an_authenticate_answer_in_no_reading_fails_without_showing_a_token() -> None:
    odd = httpx.Response(200, json={"d": {"Anahtar": "6AC778A1-10D5-4EE5-A95A-22CBE9431085", "Sure": 600}})
    with pytest.raises(UnknownReadingError) as caught:
        run(None, members_report([]), transport=serving({"ReportMembers": [ROW]}, token=odd))
    text = str(caught.value)
    assert "Authenticate" in text and "6AC778A1" not in text and "<GUID>" in text


@pytest.mark.parametrize("body", [
    {"d": json.dumps({"ErrorCode": 1})}, {"errorCode": "1"}, {"d": {"error_code": 1}},
    {"d": {"__type": "Postatr.Api.Result", "ErrorCode": 1}},                   # ASMX's type hint
    [{"Email": None, "Status": None, "OpenCount": 0, "Memberid": None, "ErrorCode": 1}],   # a list method's error
    {"d": [{"Email": "", "ErrorCode": "1"}]},
])
def test_the_classifier_reads_the_answers_error_code_in_every_reading(body: Any) -> None:
    verdict = classify(httpx.Response(200, json=body))
    assert verdict is not None and verdict.kind == "relogin"


@pytest.mark.parametrize("body", [{"d": {"Email": "a@b.com", "Memberid": "M1", "ErrorCode": 91}},
                                  [{"Email": "a@b.com", "Memberid": "M1", "ErrorCode": 1}],
                                  [{"Email": None, "ErrorCode": 1}, {"Email": None, "ErrorCode": 1}]])
def test_the_classifier_leaves_a_recipient_rows_own_error_code_to_the_report(body: Any) -> None:
    assert classify(httpx.Response(200, json=body)) is None


def test_without_member_ids_every_recipient_comes_in_one_call_per_campaign() -> None:
    """ReportMembers asks without Memberids (issue 22, 15): "Göndermezseniz kampanyadaki tüm alıcıları
    raporlar". 250 recipients: one call (it was 3 chunks of our linked ids), none of our ids read."""
    sandbox = sandbox_for()
    ids = [f"M{n:03}" for n in range(250)]

    def no_ids(size: int) -> Iterator[list[str]]:
        raise AssertionError("the linked member ids are not needed")

    async def scenario(provider: PostatrProvider) -> list[list[Any]]:
        for start in range(0, len(ids), 100):
            batch = ids[start:start + 100]
            await provider.upsert_members([upsert(provider, i, f"{i.lower()}@ornek.com.tr") for i in batch])
        campaign = RemoteCampaign(sandbox.simulate_campaign(USER), "k", "Tamamlandı", None, None, False)
        sandbox.reset_log()
        return [page async for page in provider.pull_campaign_results(campaign, ReportContext(member_ids=no_ids))]

    pages = run(sandbox, scenario)
    assert sandbox.report_member_requests == [250]
    assert [path for _, path, _ in sandbox.request_log] == ["/api.asmx/ReportMembers"]
    assert sorted(r.crm_member_id for page in pages for r in page) == ids
    failed = [r for page in pages for r in page if r.bounce_type == api.FAILED_RECIPIENT]
    truth = [row for row in sandbox.campaign_report(next(iter(sandbox._campaigns))) if row["ErrorCode"]]
    assert len(failed) == len(truth) > 0


@pytest.mark.parametrize(("details", "reading"), [
    ([{"Memberid": "M2", "Email": "bozuk@adres", "reason": "Email adresi hatalı"}], "a list of objects"),
    ([{"MEMBERID": "M2", "REASON": "Email adresi hatalı"}], "a list of objects"),
    ([{"email": "BOZUK@adres", "Sebep": "Email adresi hatalı"}], "a list of objects"),
    ({"M2": "Email adresi hatalı"}, "an object keyed by Memberid"),
    ({"M2": {"Message": "Email adresi hatalı"}}, "an object keyed by Memberid"),
    (json.dumps([{"Memberid": "M2", "Reason": "Email adresi hatalı"}]), "JSON text of a list of objects"),
    (["M2: Email adresi hatalı"], "a list of texts"),
])
def test_an_ignored_members_reason_is_read_in_any_spelling(details: Any, reading: str) -> None:
    """Refusal reasons under ``Reason`` in any case, other names, keyed by Memberid, as texts (issue 22, 16)."""
    def process(body: dict[str, Any]) -> dict[str, Any]:
        members = body["MyData"]["Members"]["Member"]
        return {"d": {"ErrorCode": 0, "inserted": len(members) - 1, "updated": 0, "ignored": 1,
                      "ignored_details": details}}

    async def scenario(provider: PostatrProvider) -> list[Any]:
        outcomes = await provider.upsert_members([upsert(provider, "M1", "a@ornek.com.tr"),
                                                  upsert(provider, "M2", "bozuk@adres"),
                                                  upsert(provider, "M3", "c@ornek.com.tr")])
        return [outcomes, provider.readings.as_dict()]

    outcomes, readings = run(None, scenario, transport=serving({"StartProcess": process}))
    assert [o.rejected is None for o in outcomes] == [True, False, True]
    rejected = outcomes[1].rejected
    assert rejected is not None and "the e-mail address is invalid" in rejected.reason
    assert "no reason given" not in rejected.reason
    assert readings["StartProcess ignored_details"] == reading


def test_an_ignored_member_no_detail_names_is_found_by_halving_not_stored_as_pushed() -> None:
    """``ignored: 1`` without details naming anyone: the request is halved until the member is alone."""
    sent: list[list[str]] = []

    def process(body: dict[str, Any]) -> dict[str, Any]:
        members = body["MyData"]["Members"]["Member"]
        sent.append([m["Memberid"] for m in members])
        bad = sum(1 for m in members if m["Memberid"] == "M5")
        return {"ErrorCode": 97 if bad == len(members) else 0, "inserted": len(members) - bad, "ignored": bad}

    outcomes = run(None, lambda p: p.upsert_members([upsert(p, f"M{n}", f"u{n}@ornek.com.tr") for n in range(8)]),
                   transport=serving({"StartProcess": process}))
    assert [o.key.crm_member_id for o in outcomes if o.rejected is not None] == ["M5"]
    assert sent[0] == [f"M{n}" for n in range(8)] and ["M5"] in sent


def test_start_process_logs_in_with_the_examples_credentials_when_the_token_is_refused_there() -> None:
    """The "bare" reading's StartProcess takes only the example's Username/Password/EncryptedId in
    MyData: after error 1 right after a fresh login (nothing applied), the client sends them too,
    for the rest of the session; no secret reaches a log line."""
    sandbox = sandbox_for(dialect="bare")

    async def scenario(provider: PostatrProvider) -> dict[str, str]:
        first = await provider.upsert_members([upsert(provider, "M1", "a@ornek.com.tr")])
        second = await provider.upsert_members([upsert(provider, "M2", "b@ornek.com.tr")])
        assert first[0].rejected is None and second[0].rejected is None
        return provider.readings.as_dict()

    with capture_logs() as logs:
        readings = run(sandbox, scenario)
    assert sandbox.write_requests() == 4       # token refused twice (with a fresh login between), then 1 + 1
    assert sandbox.member(USER, "M1") is not None and sandbox.member(USER, "M2") is not None
    assert readings["StartProcess login"] == "Username/Password/EncryptedId in MyData (the example)"
    assert PASSWORD not in json.dumps(logs, default=str) and ENCRYPTED_ID not in json.dumps(logs, default=str)


def test_start_process_refused_in_both_logins_is_one_authentication_error() -> None:
    def refuse(body: dict[str, Any]) -> dict[str, Any]:
        return {"d": {"ErrorCode": 1}}

    with pytest.raises(AuthenticationError) as caught:
        run(None, lambda p: p.upsert_members([upsert(p, "M1", "a@ornek.com.tr")]),
            transport=serving({"StartProcess": refuse}))
    assert "refused both" in str(caught.value) and PASSWORD not in str(caught.value)


@pytest.mark.parametrize("answer", [{"d": json.dumps({"ErrorCode": 0, "inserted": 1})},
                                    [{"Inserted": "1", "Updated": "0", "Ignored": "0"}],
                                    {"errorCode": 0, "inserted": 1, "ignoredDetails": []}])
def test_start_process_answers_are_read_in_every_reading(answer: Any) -> None:
    outcomes = run(None, lambda p: p.upsert_members([upsert(p, "M1", "a@ornek.com.tr")]),
                   transport=serving({"StartProcess": answer}))
    assert outcomes[0].rejected is None and outcomes[0].remote_id == "M1"


def test_a_start_process_answer_in_no_reading_is_loud() -> None:
    with pytest.raises(UnknownReadingError) as caught:
        run(None, lambda p: p.upsert_members([upsert(p, "M1", "a@ornek.com.tr")]),
            transport=serving({"StartProcess": {"d": {"Sonuc": "Tamam"}}}))
    assert "StartProcess" in str(caught.value)


# --- member columns and the e-mail as written (issue 22, 17) --------------------------------------


def test_phone_and_city_reach_postatr_in_the_columns_the_setting_names() -> None:
    sandbox = sandbox_for()
    columns = {"phone": "telefon", "city": "sehir"}

    async def scenario(provider: PostatrProvider) -> None:
        with_both = MemberSnapshot("a@ornek.com.tr", "Ayşe", "Çelik", "+90 532 111 22 33", "İzmir", "active",
                                   fields={"uyekodu": "123456"})
        without = MemberSnapshot("b@ornek.com.tr", "Can", None, None, None, "active")
        await provider.upsert_members([MemberUpsert(MemberKey("M1", "L1"), "a@ornek.com.tr",
                                                    provider.build_payload(with_both), (LIST_ID,)),
                                       MemberUpsert(MemberKey("M2", "L1"), "b@ornek.com.tr",
                                                    provider.build_payload(without), (LIST_ID,))])

    run(sandbox, scenario, columns=columns)
    first, second = sandbox.member(USER, "M1"), sandbox.member(USER, "M2")
    assert first is not None and second is not None
    assert first["MyColumns"] == {"telefon": "+90 532 111 22 33", "sehir": "İzmir", "uyekodu": "123456"}
    assert second["MyColumns"] == {"telefon": "", "sehir": ""}     # sent empty: a value removed in the CRM goes


def test_without_the_columns_setting_phone_and_city_go_under_the_contracts_names() -> None:
    """Issue 22, 17: phone and city reach MyColumns by default (they never did: MyColumns was {})."""
    provider = PostatrProvider(None, PostatrAuth(USER, PASSWORD, ENCRYPTED_ID), USER)  # type: ignore[arg-type]
    payload = provider.build_payload(MemberSnapshot("a@ornek.com.tr", "A", None, " 0532 111  22 33", "Bursa",
                                                    "active"))
    assert payload["MyColumns"] == {"phone": "0532 111 22 33", "city": "Bursa"}
    assert api.DEFAULT_COLUMNS == {"phone": "phone", "city": "city"}


def test_the_columns_setting_may_leave_one_out_and_a_custom_field_keeps_its_column() -> None:
    def columns_of(columns: dict[str, Any], fields: dict[str, Any] | None = None) -> dict[str, str]:
        provider = PostatrProvider(None, PostatrAuth(USER, PASSWORD, ENCRYPTED_ID), USER,  # type: ignore[arg-type]
                                   columns=columns, fields=fields)
        snapshot = MemberSnapshot("a@ornek.com.tr", "A", None, "05321112233", "Bursa", "active",
                                  fields={"phone": "05320000000"} if fields else {})
        return dict(provider.build_payload(snapshot)["MyColumns"])

    assert columns_of({"city": ""}) == {"phone": "05321112233"}
    assert columns_of({"phone": None, "city": "sehir"}) == {"sehir": "Bursa"}
    # a custom field the tenant mapped to the column "phone" keeps it; the default gives way
    assert columns_of({}, {"gsm": {"field": "phone", "type": "text", "required": False}}) == {
        "phone": "05320000000", "city": "Bursa"}


@pytest.mark.parametrize(("columns", "words"), [
    ({"email": "eposta"}, "Member's own field Email"), ({"consent_date": "izin"}, "only phone, city"),
    ({"phone": "tele fon"}, "Postatr database column"), ({"phone": "tel", "city": "tel"}, "named twice"),
    ({"phone": 5}, "Postatr database column"),
])
def test_a_wrong_columns_setting_is_refused_in_one_true_line(columns: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        api.parse_column_settings("columns", columns)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_the_fields_setting_tells_the_truth_about_phone_and_city() -> None:
    """Says where phone and city go and how to rename them (issue 22, 17)."""
    with pytest.raises(ConfigurationError) as caught:
        api.check_fields("fields", {"phone": "telefon"})
    text = str(caught.value)
    assert "sent already in MyColumns" in text and "columns setting" in text and '"phone"' in text
    assert "\n" not in text
    with pytest.raises(ConfigurationError) as caught:
        api.check_fields("fields", {"first_name": "ad"})
    assert "FName" in str(caught.value)
    assert api.check_fields("fields", {"loyalty": "uyekodu"}) == {"loyalty": {"field": "uyekodu", "type": "text",
                                                                             "required": False}}


def test_a_column_named_by_both_settings_is_refused_when_the_provider_is_built() -> None:
    """Only where the columns setting itself names it: a default column gives way instead."""
    with pytest.raises(ConfigurationError) as caught:
        provider_class("postatr").create(lambda caps, auth: None, {"username": USER, "password": PASSWORD,
                                                                   "encrypted_id": ENCRYPTED_ID},
                                         {"columns": {"phone": "telefon"}, "fields": {"gsm": "telefon"}})
    assert "telefon" in str(caught.value)
    built = provider_class("postatr").create(lambda caps, auth: None, {"username": USER, "password": PASSWORD,
                                                                       "encrypted_id": ENCRYPTED_ID},
                                             {"columns": {"city": "sehir"}})
    assert built.columns == {"phone": "phone", "city": "sehir"}


def test_the_e_mail_keeps_its_local_part_as_the_crm_wrote_it_and_folds_only_the_domain() -> None:
    @dataclasses.dataclass(frozen=True)
    class Written(MemberSnapshot):
        email_as_written: str | None = None

    provider = PostatrProvider(None, PostatrAuth(USER, PASSWORD, ENCRYPTED_ID), USER)  # type: ignore[arg-type]
    payload = provider.build_payload(Written("ayse.cetin@gmail.com", "Ayşe", None, None, None, "active",
                                             email_as_written=" Ayse.CETIN@GMAİL.Com "))
    assert payload["Email"] == "Ayse.CETIN@gmail.com"
    assert api.outgoing_email("Ali.Veli@Ornek.COM.TR") == "Ali.Veli@ornek.com.tr"
    other = provider.build_payload(Written("a@ornek.com.tr", "A", None, None, None, "active",
                                           email_as_written="Someone.Else@ornek.com.tr"))
    assert other["Email"] == "a@ornek.com.tr"     # a written form of another address is never sent


# --- connection test ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_the_connection_probe_reads_what_a_run_reads_and_names_each_reading_without_writing(dialect: str) -> None:
    sandbox = sandbox_for(dialect=dialect, report_members_limit=5)

    async def scenario(provider: PostatrProvider) -> tuple[list[str], dict[str, str]]:
        await provider.upsert_members([upsert(provider, f"M{n}", f"u{n}@ornek.com.tr") for n in range(12)])
        sandbox.simulate_campaign(USER, "Kasım")
        sandbox.reset_log()
        return await provider.connection_probe(), provider.readings.as_dict()

    lines, readings = run(sandbox, scenario)
    assert sandbox.write_requests() == 0
    text = "\n".join(lines)
    assert "ReportCampaign: 1 campaign(s) (reading: " in text and "ReportCampaign CampId 10041" in text
    assert "StartProcess: not tried (a write)" in text
    if dialect == "d-array":
        assert "refused" in text and "member ids" in text
    else:
        assert "ReportMembers CampId 10041: 12 recipient(s)" in text
        assert readings["ReportMembers"] in text
    assert {"Authenticate", "ReportCampaign", "ReportCampaign by CampId"} <= set(readings)


def test_report_dates_in_every_reading() -> None:
    assert answers.read_time("x", "/Date(1517058420000)/") == dt.datetime(2018, 1, 27, 13, 7, tzinfo=dt.UTC)
    assert answers.read_time("x", "2018-01-27T14:07:00+03:00") == dt.datetime(2018, 1, 27, 11, 7, tzinfo=dt.UTC)
    assert answers.read_time("x", "27.01.2018") == dt.datetime(2018, 1, 26, 21, 0, tzinfo=dt.UTC)
    with pytest.raises(UnknownReadingError):
        answers.read_time("ReportMembers", "yarın")


def test_a_sandbox_dialect_that_does_not_exist_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="valid: document, bare"):
        sandbox_for(dialect="soap")


def test_the_probe_of_an_account_without_campaigns_says_which_answer_told_it() -> None:
    for dialect, reading in (("document", "rows under 'Campaigns' in {\"d\": ...}"),
                             ("id-keyed", "ErrorCode 40 (no campaign) in {\"d\": ...}"),
                             ("d-array", "null (no rows) in {\"d\": ...}")):
        lines = run(sandbox_for(dialect=dialect), lambda provider: provider.connection_probe())
        assert f"ReportCampaign: 0 campaign(s) (reading: {reading})" in lines, (dialect, lines)
        assert lines[-1].startswith("MyColumns: CRM phone as 'phone' (default), city as 'city' (default)")
