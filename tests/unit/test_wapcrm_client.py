"""WapCRM client against its in-process sandbox: the envelope and its error table, reference data,
conversations by day, messages by phone, and read-only by construction (no message sent, no call
result saved), with no secret in a URL, an error or a log line. Every reading the document allows
(the sandbox's dialects) gives the same activity; an answer in none is one loud line."""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
from structlog.testing import capture_logs

from sync.errors import (
    AuthenticationError,
    ConfigurationError,
    FatalError,
    MalformedAnswerError,
    RejectedRow,
    RetriableError,
    UnknownReadingError,
)
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
    read_time,
)
from sync.providers.wapcrm.sandbox import DIALECTS
from sync.sandbox import FaultPlan, WapcrmSandbox, sandbox_transport

T = TypeVar("T")
KEY = "wapcrm-gizli-anahtar-9"
BASE = "http://wapcrm.sandbox/api/"
FAST = HttpPolicy(backoff_base_s=0.001, backoff_max_s=0.002, max_attempts=4)
PHONE = "905321234567"
WHEN = dt.datetime(2026, 11, 30, 9, 15, tzinfo=dt.UTC)       # 12:15 in Istanbul
ISTANBUL = dt.timezone(dt.timedelta(hours=3))


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
    assert all(method == "POST" for method, _, _ in sandbox.calls)      # the document's JSON model, the default


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
    assert sandbox.calls == [("POST", api.CONVERSATIONS_PATH, {"startDate": "2026-11-30", "enddate": "2026-11-30"})]


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
    assert sandbox.calls[-1][2] == {"chatPhoneNumber": PHONE, "instanceID": 16}     # as the document's example
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


@pytest.mark.parametrize("reading", list(api.REQUEST_READINGS))
@pytest.mark.parametrize("path", [api.SEND_MESSAGE_PATH, api.SAVE_CALL_RESULT_PATH, "users/delete", "Users"])
def test_sending_a_message_or_saving_a_result_is_impossible(sandbox: WapcrmSandbox, reading: str, path: str) -> None:
    """The one request builder refuses every path but the documented reads, in every request
    reading, before anything is sent."""
    with pytest.raises(ForbiddenRequest, match="only reads WapCRM"):
        run(sandbox, lambda p: p._send(path, {"chatPhoneNumber": PHONE, "messageType": 1}),
            settings={"request_reading": reading})
    assert sandbox.calls == [] and sandbox.request_log == []
    assert sandbox.sent_messages == [] and sandbox.saved_results == []


def test_the_client_has_no_method_that_writes() -> None:
    """Every coroutine of the provider reaches the network only through ``_send`` (a read path, GET
    or POST as the document allows for reads); no write path is named in the client."""
    source = inspect.getsource(WapcrmProvider)
    assert source.count("self.http.request(") == 1
    assert "chatoperation" not in source and "addconversation" not in source
    assert "SEND_MESSAGE_PATH" not in source and "SAVE_CALL_RESULT_PATH" not in source
    assert not ({"chatoperation", "addconversation"} & api.READ_PATHS)
    assert set(api.REQUEST_READINGS.values()) == {"GET", "POST"}


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


def test_dates_of_answers_are_read_in_every_reading_in_turkish_time() -> None:
    assert parse_time("2026-11-30T12:15:00") == WHEN == parse_time("2026-11-30 12:15:00.0000000")
    assert parse_time("30.11.2026 12:15:00") == WHEN == parse_time("30.11.2026 12:15")
    assert parse_time("2026-11-30T09:15:00Z") == WHEN == parse_time("2026-11-30T12:15:00+03:00")
    assert parse_time(int(WHEN.timestamp())) == WHEN == parse_time(str(int(WHEN.timestamp() * 1000)))
    assert parse_time(f"/Date({int(WHEN.timestamp() * 1000)}+0300)/") == WHEN
    assert parse_time(None) is None and parse_time("  ") is None
    assert [read_time(v, "x")[1] for v in ("2026-11-30T12:15:00", "2026-11-30T12:15:00Z", "30.11.2026 12:15:00",
                                           1764494100, 1764494100000, "/Date(1764494100000)/")] == list(
        api.DATE_READINGS)
    for unreadable in ("dün", "11/30/2026 12:15", "2026-13-45T99:00:00", True):
        with pytest.raises(UnknownReadingError, match=r"createDate: the answer is in none of the readings"):
            parse_time(unreadable)
    assert parse_sent("2026-11-30", "12:15:00") == WHEN == parse_sent("30.11.2026", "12:15")
    assert parse_sent("2026-11-30T00:00:00", "12:15:00.0000000") == WHEN == parse_sent("2026-11-30T12:15:00", "")
    assert parse_sent(f"/Date({int(dt.datetime(2026, 11, 30, tzinfo=ISTANBUL).timestamp() * 1000)}+0300)/",
                      "12:15:00") == WHEN
    assert parse_sent(None, "12:00") is None
    with pytest.raises(UnknownReadingError, match="senttime"):
        parse_sent("2026-11-30", "25:00")
    assert message_key({"message": "a"}, 0) != message_key({"message": "a"}, 1)


def test_an_answer_without_the_envelope_status_stops_the_connection_naming_the_base_url() -> None:
    async def main() -> Any:
        transport = httpx.MockTransport(lambda r: httpx.Response(404, text="Not Found", request=r))
        async with httpx.AsyncClient(transport=transport) as client:
            provider = WapcrmProvider.create(
                lambda caps, auth: ProviderHTTP(client, provider="wapcrm", base_url=BASE, policy=FAST, auth=auth),
                {"secret_key": KEY}, {})
            return await provider.pull_conversations(dt.date(2026, 11, 30))
    with pytest.raises(FatalError, match="HTTP 404 instead of the envelope; check the connection's base URL "
                                         "or its request_reading setting"):
        asyncio.run(main())



# --- readings (issue 22): the document's open questions, every reasonable answer ------------------

def working_reading(dialect: str) -> dict[str, Any]:
    """The request reading that dialect answers: the document's JSON body, or GET for a GET-only one."""
    return {"request_reading": api.GET_QUERY} if dialect == "get-only" else {}


def seeded(dialect: str) -> WapcrmSandbox:
    sandbox = WapcrmSandbox({KEY: "Acme"}, seed=1, dialect=dialect)
    sandbox.add_conversation(KEY, PHONE, WHEN, conversationResultDirection=2, ringTime=12, callTime=95,
                             transferredCall=True, tuUser="Mehmet Çağrı")
    sandbox.add_conversation(KEY, "0212 555 66 77", WHEN + dt.timedelta(hours=1))
    sandbox.add_message(KEY, PHONE, "Merhaba", WHEN)
    sandbox.add_message(KEY, PHONE, "Hoş geldiniz", WHEN + dt.timedelta(minutes=1), source="ME")
    return sandbox


def activity(provider: WapcrmProvider) -> Awaitable[tuple[Any, ...]]:
    async def read() -> tuple[Any, ...]:
        reference = await provider.pull_reference()
        conversations = await provider.pull_conversations(dt.date(2026, 11, 30))
        messages = await provider.pull_messages(PHONE)
        return (sorted((i.kind, i.remote_id, i.name, i.parent_id, i.phone) for i in reference),
                sorted((c.remote_id, c.occurred_at, c.phone, c.direction, c.ring_seconds, c.call_seconds,
                        c.transferred, c.transferred_to, c.result, c.sub_result, c.user_name, c.list_name)
                       for c in conversations),
                [(m.direction, m.text, m.sent_at, m.channel, m.phone) for m in messages],
                dict(provider.readings.as_dict()))
    return read()


def test_every_dialect_gives_the_same_activity_and_notes_its_reading() -> None:
    """Each reading the sandbox serves (api.READINGS) reads as the same users, instances, call
    results, conversations and messages; only the readings noted differ."""
    expected = run(seeded("document"), activity)
    assert expected[1][0][1] == WHEN and expected[2][0][2] == WHEN and len(expected[0]) == 9
    readings: dict[str, dict[str, str]] = {}
    for dialect in DIALECTS:
        sandbox = seeded(dialect)
        found = run(sandbox, activity, settings=working_reading(dialect))
        assert found[:3] == expected[:3], dialect
        readings[dialect] = found[3]
        assert sandbox.write_requests() == 0 and sandbox.sent_messages == [] and sandbox.saved_results == []
    assert readings["document"]["envelope"] == "as documented"
    assert readings["document"]["conversations createDate"] == api.DATE_ISO_LOCAL
    assert readings["document"]["Instances"] == "array" and readings["document"]["users fields"] == "id, name"
    assert readings["pascal"]["envelope"] == "PascalCase" and readings["pascal"]["conversations fields"] == "PascalCase"
    assert readings["pascal"]["Instances"] == "id-keyed object"
    assert readings["pascal"]["Instances fields"] == "InstanceID, InstanceName, PhoneNumber"
    assert readings["pascal"]["conversations createDate"] == api.DATE_ASPNET
    assert readings["turkish"]["conversations"] == "JSON text of an array"
    assert readings["turkish"]["conversations createDate"] == api.DATE_TURKISH
    assert readings["turkish"]["conversations ringTime"] == api.DURATION_CLOCK
    assert readings["epoch"]["conversations createDate"] == api.DATE_UNIX_SECONDS
    assert readings["epoch"]["messagelistforphone sentdate"] == api.DATE_ISO_LOCAL


def test_the_default_request_reading_is_the_documents_json_model() -> None:
    """post-json (POST, the request model as the JSON body, as the document shows it) is the
    default and answers every server that honours "GET veya POST"; get-query is a setting."""
    assert WapcrmProvider.request_fallbacks == {"request_reading": ("post-json", "get-query")}
    assert api.DEFAULT_REQUEST_READING == api.POST_JSON == next(iter(api.REQUEST_READINGS))
    document = seeded("document")
    assert run(document, lambda p: p.pull_conversations(dt.date(2026, 11, 30)))
    assert document.calls[-1] == ("POST", api.CONVERSATIONS_PATH, {"startDate": "2026-11-30", "enddate": "2026-11-30"})
    # A GET's query string is no request model to the document's server: loud, never an empty pull.
    with pytest.raises(FatalError, match="startDate YIL-AY-GÜN"):
        run(document, lambda p: p.pull_conversations(dt.date(2026, 11, 30)), settings={"request_reading": "get-query"})
    query = seeded("query")
    assert run(query, lambda p: p.pull_conversations(dt.date(2026, 11, 30)), settings={"request_reading": "get-query"})
    assert query.calls[-1] == ("GET", api.CONVERSATIONS_PATH, {"startDate": "2026-11-30", "enddate": "2026-11-30"})


def test_a_server_without_the_request_reading_fails_with_its_404_or_405_status() -> None:
    """So that `connection test` can try the next request reading (readings.request_fallbacks)."""
    with pytest.raises(FatalError, match=r"POST answered HTTP 405 .* request_reading setting \(post-json") as caught:
        run(seeded("get-only"), lambda p: p.pull_reference())
    assert caught.value.status_code == 405


def test_the_request_reading_setting_is_validated() -> None:
    assert api.parse_request_reading("request_reading", " GET-QUERY ") == "get-query"
    for wrong in ("json", "", 1, None):
        with pytest.raises(ConfigurationError, match="request_reading must be one of post-json, get-query"):
            api.parse_request_reading("request_reading", wrong)
    with pytest.raises(ConfigurationError, match="request_reading"):
        WapcrmProvider.create(lambda caps, auth: None, {"secret_key": KEY}, {"request_reading": "form"})  # type: ignore


def answered(body: Any, scenario: Callable[[WapcrmProvider], Awaitable[T]]) -> T:
    """``scenario`` against a server that answers every request with ``body`` (JSON, or raw bytes)."""
    async def main() -> T:
        def reply(request: httpx.Request) -> httpx.Response:
            if isinstance(body, bytes):
                return httpx.Response(200, content=body, request=request)
            return httpx.Response(200, json=body, request=request)
        async with httpx.AsyncClient(transport=httpx.MockTransport(reply)) as client:
            provider = WapcrmProvider.create(
                lambda caps, auth: ProviderHTTP(client, provider="wapcrm", base_url=BASE, policy=FAST, auth=auth),
                {"secret_key": KEY}, {})
            return await scenario(provider)
    return asyncio.run(main())


def conversations_of_the_day(provider: WapcrmProvider) -> Awaitable[Any]:
    return provider.pull_conversations(dt.date(2026, 11, 30))


ROW = {"id": 7, "createDate": "2026-11-30T12:15:00", "phoneNumber": PHONE}


@pytest.mark.parametrize(("body", "named"), [
    ([ROW], "the documented envelope"),                                        # no envelope at all
    ({"data": [ROW], "status": "maybe"}, "the documented envelope"),
    ({"status": True, "message": "Success"}, "the documented envelope"),      # success without data
    ({"data": 5, "status": True}, "an array of objects"),
    ({"data": [ROW, "x"], "status": True}, "an array of objects"),
    ({"data": "not json", "status": True}, "an array of objects"),
    ({"data": [{"conversationId": 7, "createDate": "2026-11-30T12:15:00"}], "status": True}, "rows with an id"),
    ({"data": [{**ROW, "createDate": "30/11/2026 12:15"}], "status": True}, "createDate"),
    ({"data": [{**ROW, "ringTime": "yedi saniye"}], "status": True}, "ringTime"),
    ({"data": [{**ROW, "conversationResultDirection": 9}], "status": True}, "conversationResultDirection"),
    ({"data": [{**ROW, "transferredCall": "belki"}], "status": True}, "transferredCall"),
])
def test_an_answer_in_no_reading_is_one_loud_line_naming_the_endpoint(body: Any, named: str) -> None:
    """Never an empty pull, never a default: the endpoint, the readings expected and the start of
    what came, in one line (no secret)."""
    with pytest.raises(UnknownReadingError) as caught:
        answered(body, conversations_of_the_day)
    text = str(caught.value)
    assert text.startswith("WapCRM conversations") and named in text and "it began: " in text
    assert "\n" not in text and KEY not in text


@pytest.mark.parametrize("empty", [[], "", None, {}, "[]"])
def test_an_empty_data_in_every_reading_is_an_empty_day_and_tells_no_shape(empty: Any) -> None:
    async def read(provider: WapcrmProvider) -> tuple[Any, dict[str, str]]:
        return await conversations_of_the_day(provider), provider.readings.as_dict()
    found, readings = answered({"data": empty, "status": True, "message": "Success", "statusCode": "",
                                "requestID": "r"}, read)
    assert found == [] and readings == {"envelope": "as documented"}


def test_envelope_keys_in_any_casing_and_a_text_status_are_read_and_errors_classified() -> None:
    body = {"DATA": {"7": {"CreateDate": "2026-11-30T12:15:00", "PhoneNumber": PHONE}}, "STATUS": "True"}
    async def read(provider: WapcrmProvider) -> tuple[Any, dict[str, str]]:
        return await conversations_of_the_day(provider), provider.readings.as_dict()
    found, readings = answered(body, read)
    assert [(c.remote_id, c.occurred_at, c.phone) for c in found] == [("7", WHEN, PHONE)]
    assert readings["envelope"] == "another casing" and readings["envelope status"] == "text true/false"
    assert readings["conversations"] == "id-keyed object" and readings["conversations fields"] == "PascalCase"
    request = httpx.Request("POST", BASE + api.USERS_PATH)
    refused = httpx.Response(200, json={"Status": "false", "StatusCode": 401, "Message": "x", "RequestID": "r"},
                             request=request)
    verdict = classify(refused)
    assert verdict is not None and verdict.kind == "auth" and verdict.provider_code == "401"


def test_connection_probe_reads_what_a_run_reads_with_real_parameters() -> None:
    """Users, instances, call results, yesterday's and today's conversations, and the messages of
    a phone from them: the request reading shows there, and nothing is written."""
    for dialect in DIALECTS:
        sandbox = WapcrmSandbox({KEY: "Acme"}, seed=1, dialect=dialect)
        yesterday = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        sandbox.add_conversation(KEY, PHONE, yesterday)
        sandbox.add_message(KEY, PHONE, "Merhaba", yesterday)
        lines = run(sandbox, lambda p: p.connection_probe(), settings=working_reading(dialect))
        asked = [(path, params) for _, path, params in sandbox.calls]
        assert [path for path, _ in asked] == ["users", "Instances", "callresults", "conversations", "conversations",
                                               "messagelistforphone"], dialect
        assert asked[-1][1][api.PHONE_PARAM] == PHONE and asked[3][1][api.START_DATE_PARAM] != asked[4][1][
            api.START_DATE_PARAM]
        text = "\n".join(lines)
        assert "conversations" in text and "1 conversation(s)" in text and "90532*****67: 1 message(s)" in text
        assert PHONE not in text and sandbox.write_requests() == 0
    assert lines[0].startswith("request reading get-query (GET")
    with pytest.raises(FatalError) as caught:
        run(seeded("get-only"), lambda p: p.connection_probe())
    assert caught.value.status_code == 405


def test_connection_probe_without_any_conversation_asks_an_instance_number() -> None:
    sandbox = WapcrmSandbox({KEY: "Acme"}, seed=1)
    lines = run(sandbox, lambda p: p.connection_probe())
    assert sandbox.calls[-1][2] == {api.PHONE_PARAM: "902124900290"}       # the first usable instance number
    assert lines[-1].endswith("0 message(s) (empty: no reading to tell)")
