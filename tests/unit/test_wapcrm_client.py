"""WapCRM client against its in-process sandbox: the envelope and its error table, reference data,
conversations by day, messages by phone, and read-only by construction (no message sent, no call
result saved), with no secret in a URL, an error or a log line."""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
from structlog.testing import capture_logs

from sync.errors import AuthenticationError, FatalError, MalformedAnswerError, RejectedRow, RetriableError
from sync.http import HttpPolicy, ProviderHTTP
from sync.providers.base import ActivityPull, check_provider, provider_class
from sync.providers.specs import get_spec
from sync.providers.wapcrm import api
from sync.providers.wapcrm.client import (
    CAPABILITIES,
    ForbiddenRequest,
    WapcrmProvider,
    classify,
    message_key,
    parse_sent,
    parse_time,
)
from sync.sandbox import FaultPlan, WapcrmSandbox, sandbox_transport

T = TypeVar("T")
KEY = "wapcrm-gizli-anahtar-9"
BASE = "http://wapcrm.sandbox/api/"
FAST = HttpPolicy(backoff_base_s=0.001, backoff_max_s=0.002, max_attempts=4)
PHONE = "905321234567"
WHEN = dt.datetime(2026, 11, 30, 9, 15, tzinfo=dt.UTC)       # 12:15 in Istanbul


def run(sandbox: WapcrmSandbox, scenario: Callable[[WapcrmProvider], Awaitable[T]], *, key: str = KEY,
        settings: dict[str, Any] | None = None, policy: HttpPolicy = FAST) -> T:
    async def main() -> T:
        async with httpx.AsyncClient(transport=sandbox_transport(sandbox.app)) as client:
            def factory(caps: Any, auth: Any) -> ProviderHTTP:
                return ProviderHTTP(client, provider="wapcrm", base_url=BASE, policy=policy, auth=auth)
            provider = WapcrmProvider.create(factory, {"secret_key": key}, settings or {})
            return await scenario(provider)
    return asyncio.run(main())


@pytest.fixture
def sandbox() -> WapcrmSandbox:
    return WapcrmSandbox({KEY: "Acme"}, seed=1)


def test_the_provider_declares_pull_only_and_implements_activity_pull() -> None:
    provider = provider_class("wapcrm").create(lambda caps, auth: None, {"secret_key": KEY}, {})
    check_provider(provider)
    assert isinstance(provider, ActivityPull)
    caps = provider.capabilities
    assert (caps.lists, caps.pushes_members, caps.status_pull, caps.pulls_activity) == ("none", False, "none", True)
    assert caps == CAPABILITIES


def test_reference_data_reads_users_instances_and_the_call_result_tree(sandbox: WapcrmSandbox) -> None:
    items = run(sandbox, lambda p: p.pull_reference())
    by_kind = {kind: [i for i in items if i.kind == kind] for kind in ("user", "instance", "call_result")}
    assert [u.name for u in by_kind["user"]] == ["Ayşe Temsilci", "Mehmet Çağrı"]
    assert {i.remote_id: i.phone for i in by_kind["instance"]} == {"15": "908504900290", "16": "902124900290"}
    tree = {r.remote_id: (r.parent_id, r.name) for r in by_kind["call_result"]}
    assert tree["23"] == (None, "Ulaşıldı") and tree["21"] == ("23", "Satış yapıldı") and tree["31"] == ("30", "Meşgul")
    assert all(method == "GET" for method, _, _ in sandbox.calls)


def test_conversations_are_asked_one_day_at_a_time_with_the_documented_parameters(sandbox: WapcrmSandbox) -> None:
    sandbox.add_conversation(KEY, "0532 123 45 67", WHEN, callResultParent="Ulaşıldı", callResultChild="Satış yapıldı",
                             conversationResultDirection=2, ringTime="00:00:12", callTime=300, transferredCall=True,
                             tuUser="Mehmet Çağrı", targetNumber="902124900291", dataListName="Kasım")
    sandbox.add_conversation(KEY, PHONE, WHEN + dt.timedelta(days=1))
    found = run(sandbox, lambda p: p.pull_conversations(dt.date(2026, 11, 30)))
    assert len(found) == 1
    item = found[0]
    assert item.phone == PHONE and item.occurred_at == WHEN and item.direction == 2
    assert (item.ring_seconds, item.call_seconds, item.transferred, item.transferred_to) == (
        12, 300, True, "Mehmet Çağrı")
    assert (item.result, item.sub_result, item.list_name, item.user_name) == ("Ulaşıldı", "Satış yapıldı", "Kasım",
                                                                              "Ayşe Temsilci")
    assert item.details["phoneNumber"] == "0532 123 45 67" and item.details["targetNumber"] == "902124900291"
    assert sandbox.calls == [("GET", api.CONVERSATIONS_PATH, {"startDate": "2026-11-30", "enddate": "2026-11-30"})]


def test_messages_of_a_phone_keep_direction_and_are_keyed_without_an_id(sandbox: WapcrmSandbox) -> None:
    sandbox.add_message(KEY, PHONE, "Merhaba", WHEN)
    sandbox.add_message(KEY, PHONE, "Merhaba", WHEN)                   # the same text twice in one second
    sandbox.add_message(KEY, PHONE, "Hoş geldiniz", WHEN + dt.timedelta(minutes=1), source="ME")
    messages = run(sandbox, lambda p: p.pull_messages(PHONE))
    assert [(m.direction, m.text) for m in messages] == [("CUSTOMER", "Merhaba"), ("CUSTOMER", "Merhaba"),
                                                         ("ME", "Hoş geldiniz")]
    assert len({m.key for m in messages}) == 3
    assert messages[0].sent_at == WHEN and messages[0].channel == "908504900290" and messages[0].phone == PHONE
    again = run(sandbox, lambda p: p.pull_messages(PHONE))
    assert [m.key for m in again] == [m.key for m in messages]        # stable across answers


def test_instance_setting_asks_one_channel_and_a_landline_asks_nothing(sandbox: WapcrmSandbox) -> None:
    sandbox.add_message(KEY, PHONE, "Merhaba", WHEN)
    assert run(sandbox, lambda p: p.pull_messages(PHONE), settings={"instance_id": 16}) == []
    assert sandbox.calls[-1][2] == {"chatPhoneNumber": PHONE, "instanceID": "16"}
    calls = len(sandbox.calls)
    assert run(sandbox, lambda p: p.pull_messages("902125556677")) == []
    assert len(sandbox.calls) == calls


def test_a_refused_phone_is_a_reject_of_that_phone_with_message_and_request_id(sandbox: WapcrmSandbox) -> None:
    sandbox.refused_phones.add(PHONE)
    with pytest.raises(RejectedRow, match=r"Telefon numarası geçersiz \(statusCode 400\) \(requestID [0-9a-f-]{36}\)"):
        run(sandbox, lambda p: p.pull_messages(PHONE))


def test_a_wrong_key_is_an_authentication_error_with_the_request_id_and_never_the_key(sandbox: WapcrmSandbox) -> None:
    wrong = "yanlis-anahtar-12345"
    with capture_logs() as logs, pytest.raises(AuthenticationError) as caught:
        run(sandbox, lambda p: p.pull_reference(), key=wrong)
    text = str(caught.value)
    assert "Geçersiz SecretKey" in text and "requestID" in text and caught.value.provider_code == "401"
    assert wrong not in text and wrong not in repr(logs)


def test_a_transient_envelope_failure_is_retried(sandbox: WapcrmSandbox) -> None:
    sandbox.envelope_failures = 2
    items = run(sandbox, lambda p: p.pull_reference())
    assert items
    with pytest.raises(RetriableError, match="statusCode 500"):
        sandbox.envelope_failures = 10
        run(sandbox, lambda p: p.pull_reference())


def test_any_other_envelope_failure_stops_the_connection(sandbox: WapcrmSandbox) -> None:
    async def bad_date(provider: WapcrmProvider) -> Any:
        return await provider._read(api.CONVERSATIONS_PATH, {"startDate": "30.11.2026", "enddate": "2026-11-30"})
    with pytest.raises(FatalError, match="YIL-AY-GÜN"):
        run(sandbox, bad_date)


def test_classify_reads_only_the_envelope() -> None:
    request = httpx.Request("GET", BASE + api.USERS_PATH)
    def answer(body: Any) -> httpx.Response:
        return httpx.Response(200, json=body, request=request)
    ok = {"data": [], "status": True, "message": "Success", "statusCode": "", "requestID": "r"}
    assert classify(answer(ok)) is None
    assert classify(httpx.Response(200, text="1", request=request)) is None
    verdict = classify(answer({"data": "", "status": False, "message": "x", "statusCode": "429", "requestID": "r1"}))
    assert verdict is not None and verdict.kind == "retry" and "requestID r1" in verdict.reason
    phone = httpx.Request("GET", BASE + api.MESSAGES_PATH)
    refused = httpx.Response(200, json={"status": False, "message": "x", "statusCode": "400"}, request=phone)
    assert classify(refused) is None        # the client makes it that phone's reject


def test_a_truncated_answer_is_malformed(sandbox: WapcrmSandbox) -> None:
    async def main() -> Any:
        transport = httpx.MockTransport(lambda r: httpx.Response(200, content=b'{"data": [', request=r))
        async with httpx.AsyncClient(transport=transport) as client:
            provider = WapcrmProvider.create(
                lambda caps, auth: ProviderHTTP(client, provider="wapcrm", base_url=BASE, policy=FAST, auth=auth),
                {"secret_key": KEY}, {})
            return await provider.pull_reference()
    with pytest.raises(MalformedAnswerError, match="truncated or invalid JSON"):
        asyncio.run(main())


@pytest.mark.parametrize(("method", "path"), [("POST", api.SEND_MESSAGE_PATH), ("GET", api.SEND_MESSAGE_PATH),
                                              ("GET", api.SAVE_CALL_RESULT_PATH), ("POST", api.USERS_PATH)])
def test_sending_a_message_or_saving_a_result_is_impossible(sandbox: WapcrmSandbox, method: str, path: str) -> None:
    """The one request builder refuses the write paths and any method but GET before anything is sent."""
    with pytest.raises(ForbiddenRequest, match="only reads WapCRM"):
        run(sandbox, lambda p: p._send(path, {"chatPhoneNumber": PHONE}, method=method))
    assert sandbox.calls == [] and sandbox.request_log == []
    assert sandbox.sent_messages == [] and sandbox.saved_results == []


def test_the_client_has_no_method_that_writes() -> None:
    """Every coroutine of the provider reaches the network only through ``_send`` (GET on a read path)."""
    source = inspect.getsource(WapcrmProvider)
    assert source.count("self.http.request(") == 1
    assert "POST" not in source and "chatoperation" not in source and "addconversation" not in source
    assert not ({"chatoperation", "addconversation"} & api.READ_PATHS)


def test_the_secret_header_is_a_setting_with_the_documented_default() -> None:
    spec = get_spec("wapcrm")
    assert spec.default_settings()["secret_header"] == "X-CIB-SecretKey"
    assert spec.validate_settings({"secret_header": "X-WapCrm-SecretKey"})["secret_header"] == "X-WapCrm-SecretKey"
    with pytest.raises(Exception, match="HTTP header name"):
        spec.validate_settings({"secret_header": "X CIB: key"})
    other = WapcrmSandbox({KEY: "Acme"}, secret_header="X-WapCrm-SecretKey")
    assert run(other, lambda p: p.pull_reference(), settings={"secret_header": "X-WapCrm-SecretKey"})
    with pytest.raises(AuthenticationError):
        run(other, lambda p: p.pull_reference())


def test_faults_are_retried_for_reads() -> None:
    sandbox = WapcrmSandbox({KEY: "Acme"}, faults=FaultPlan(seed=2, error_rate=0.3, drop_rate=0.2, rate_limit_every=3,
                                                            retry_after_s=0))
    sandbox.add_message(KEY, PHONE, "Merhaba", WHEN)
    for _ in range(5):
        assert [m.text for m in run(sandbox, lambda p: p.pull_messages(PHONE),
                                    policy=HttpPolicy(backoff_base_s=0.001, backoff_max_s=0.002, max_attempts=12))
                ] == ["Merhaba"]
    assert sandbox._faults.injected


def test_dates_of_answers_are_read_in_turkish_time() -> None:
    assert parse_time("2026-11-30T12:15:00") == WHEN
    assert parse_time("30.11.2026 12:15:00") == WHEN
    assert parse_time("2026-11-30T09:15:00Z") == WHEN
    assert parse_time("dün") is None
    assert parse_sent("2026-11-30", "12:15:00") == WHEN == parse_sent("30.11.2026", "12:15")
    assert parse_sent("2026-11-30", "25:00") is None and parse_sent(None, "12:00") is None
    assert message_key({"message": "a"}, 0) != message_key({"message": "a"}, 1)


def test_an_answer_without_the_envelope_status_stops_the_connection_naming_the_base_url() -> None:
    async def main() -> Any:
        transport = httpx.MockTransport(lambda r: httpx.Response(404, text="Not Found", request=r))
        async with httpx.AsyncClient(transport=transport) as client:
            provider = WapcrmProvider.create(
                lambda caps, auth: ProviderHTTP(client, provider="wapcrm", base_url=BASE, policy=FAST, auth=auth),
                {"secret_key": KEY}, {})
            return await provider.pull_conversations(dt.date(2026, 11, 30))
    with pytest.raises(FatalError, match="HTTP 404 instead of the envelope; check the connection's base URL"):
        asyncio.run(main())

