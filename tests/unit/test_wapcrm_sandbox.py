"""The WapCRM sandbox is exactly as strict as the document: the secret header, the documented path
spellings, the request models, the envelope on every answer, the writes recorded, the faults; and
it serves each reading the document leaves open as a dialect (the document's own first)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import httpx
import pytest

from sync.providers.wapcrm import api
from sync.providers.wapcrm.sandbox import DIALECTS
from sync.sandbox import FaultPlan, WapcrmSandbox, sandbox_transport

KEY = "wapcrm-gizli-anahtar-9"
PHONE = "905321234567"


def call(sandbox: WapcrmSandbox, method: str, path: str, *, key: str | None = KEY, header: str = api.SECRET_HEADER,
         params: dict[str, str] | None = None, json: Any = None) -> httpx.Response:
    async def main() -> httpx.Response:
        async with httpx.AsyncClient(transport=sandbox_transport(sandbox.app), base_url="http://w/api/") as client:
            headers = {header: key} if key else {}
            return await client.request(method, path, params=params, json=json, headers=headers)
    return asyncio.run(main())


@pytest.fixture
def sandbox() -> WapcrmSandbox:
    return WapcrmSandbox({KEY: "Acme"}, seed=4)


def test_every_answer_is_the_envelope_and_a_missing_key_is_status_false(sandbox: WapcrmSandbox) -> None:
    ok = call(sandbox, "GET", "users").json()
    assert set(ok) == set(api.ENVELOPE_KEYS) and ok["status"] is True and len(ok["data"]) == 2
    for key, header in ((None, api.SECRET_HEADER), ("wrong", api.SECRET_HEADER), (KEY, "X-WapCrm-SecretKey")):
        refused = call(sandbox, "GET", "users", key=key, header=header)
        assert refused.status_code == 200
        assert refused.json()["status"] is False and refused.json()["statusCode"] == api.CODE_UNAUTHORIZED


def test_only_the_documented_path_spellings_and_methods_answer(sandbox: WapcrmSandbox) -> None:
    assert call(sandbox, "GET", "Instances").json()["status"] is True
    assert call(sandbox, "GET", "instances").status_code == 404
    assert call(sandbox, "POST", "callresults", json={}).json()["status"] is True      # "GET veya POST"
    assert call(sandbox, "DELETE", "users").status_code == 405
    assert call(sandbox, "GET", "chatoperation").status_code == 405                 # "Request Tipi POST"


def test_conversation_dates_must_be_year_month_day(sandbox: WapcrmSandbox) -> None:
    for params in ({"startDate": "2026-11-30"}, {"startDate": "30.11.2026", "enddate": "2026-11-30"},
                   {"startDate": "2026-12-01", "enddate": "2026-11-30"},
                   {"startDate": "2026-02-30", "enddate": "2026-03-01"}):
        body = call(sandbox, "POST", "conversations", json=params).json()
        assert body["status"] is False and body["statusCode"] == api.CODE_BAD_REQUEST, params


def test_conversations_answer_the_days_asked_both_inclusive(sandbox: WapcrmSandbox) -> None:
    for day in (28, 29, 30):
        sandbox.add_conversation(KEY, PHONE, dt.datetime(2026, 11, day, 20, 30, tzinfo=dt.UTC))   # 23:30 local
    sandbox.add_conversation(KEY, PHONE, dt.datetime(2026, 11, 30, 21, 30, tzinfo=dt.UTC))       # 00:30 on Dec 1
    body = call(sandbox, "POST", "conversations", json={"startDate": "2026-11-29", "enddate": "2026-11-30"}).json()
    assert [row["createDate"] for row in body["data"]] == ["2026-11-29T23:30:00", "2026-11-30T23:30:00"]
    assert set(body["data"][0]) == set(api.CONVERSATION_FIELDS)
    posted = call(sandbox, "POST", "conversations", json={"startDate": "2026-12-01", "enddate": "2026-12-01"}).json()
    assert len(posted["data"]) == 1


def test_messages_need_a_phone_of_digits_and_an_instance_the_account_has(sandbox: WapcrmSandbox) -> None:
    sandbox.add_message(KEY, PHONE, "Merhaba", dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC))
    assert call(sandbox, "POST", "messagelistforphone", json={"chatPhoneNumber": PHONE}).json()["data"][0][
        "messagesource"] == "CUSTOMER"
    for params in ({}, {"chatPhoneNumber": "+90 532"}, {"chatPhoneNumber": "12345678"},
                   {"chatPhoneNumber": PHONE, "instanceID": 99}):
        body = call(sandbox, "POST", "messagelistforphone", json=params).json()
        assert body["status"] is False and body["statusCode"] == api.CODE_BAD_REQUEST, params
    one = call(sandbox, "POST", "messagelistforphone", json={"chatPhoneNumber": PHONE, "instanceID": 16}).json()
    assert one["status"] is True and one["data"] == []


def test_the_write_paths_are_answered_and_recorded(sandbox: WapcrmSandbox) -> None:
    """So that a test can prove the daemon sends none."""
    body = {"instanceID": 15, "userID": 1, "chatPhoneNumber": PHONE, "messageType": 1, "messageText": "Test"}
    assert call(sandbox, "POST", "chatoperation", json=body).json()["status"] is True
    assert call(sandbox, "POST", "addconversation", json={"PhoneNumber": PHONE}).json()["status"] is True
    assert len(sandbox.sent_messages) == 1 and len(sandbox.saved_results) == 1 and sandbox.write_requests() == 2
    assert call(sandbox, "POST", "chatoperation", json={**body, "messageType": 3}).json()["status"] is False


def test_apply_then_drop_applies_a_write_and_loses_its_answer() -> None:
    sandbox = WapcrmSandbox({KEY: "Acme"}, faults=FaultPlan(apply_then_drop_rate=1.0))
    with pytest.raises(httpx.RemoteProtocolError):
        call(sandbox, "POST", "addconversation", json={"PhoneNumber": PHONE})
    assert len(sandbox.saved_results) == 1 and sandbox.request_log[-1][2] == 0
    assert call(sandbox, "GET", "users").json()["status"] is True      # a read is never "applied then dropped"


def test_a_changed_conversation_keeps_its_id_and_moves_day(sandbox: WapcrmSandbox) -> None:
    cid = sandbox.add_conversation(KEY, PHONE, dt.datetime(2026, 11, 29, 9, 0, tzinfo=dt.UTC))
    sandbox.change_conversation(KEY, cid, callResultChild="Satış yapıldı")
    rows = call(sandbox, "POST", "conversations", json={"startDate": "2026-11-29", "enddate": "2026-11-29"}).json()
    assert [(r["id"], r["callResultChild"]) for r in rows["data"]] == [(cid, "Satış yapıldı")]
    with pytest.raises(ValueError, match="not a documented conversation field"):
        sandbox.add_conversation(KEY, PHONE, dt.datetime(2026, 11, 29, tzinfo=dt.UTC), customerPhone="x")


# --- dialects: each reading the document leaves open ---------------------------------------------

DAY = {"startDate": "2026-11-30", "enddate": "2026-11-30"}
WHEN = dt.datetime(2026, 11, 30, 9, 15, 30, tzinfo=dt.UTC)        # 12:15:30 in Istanbul


def seeded(dialect: str) -> WapcrmSandbox:
    sandbox = WapcrmSandbox({KEY: "Acme"}, seed=4, dialect=dialect)
    sandbox.add_conversation(KEY, PHONE, WHEN, ringTime=7, callTime=95, conversationResultDirection=2)
    sandbox.add_message(KEY, PHONE, "Merhaba", WHEN)
    return sandbox


def test_the_dialects_start_with_the_document_and_an_unknown_one_is_refused() -> None:
    assert DIALECTS[0] == "document" and len(set(DIALECTS)) == len(DIALECTS) >= 6
    assert WapcrmSandbox({KEY: "Acme"}).dialect == "document"
    with pytest.raises(ValueError, match=r"unknown WapCRM sandbox dialect 'xml' \(valid: document, query, "):
        WapcrmSandbox({KEY: "Acme"}, dialect="xml")


def test_the_document_dialect_reads_the_request_model_from_the_json_body_only() -> None:
    """The document shows each request model as JSON and never a query string."""
    sandbox = seeded("document")
    assert len(call(sandbox, "POST", "conversations", json=DAY).json()["data"]) == 1
    assert len(call(sandbox, "GET", "conversations", json=DAY).json()["data"]) == 1      # GET with the JSON model
    refused = call(sandbox, "GET", "conversations", params=DAY).json()
    assert refused["status"] is False and refused["statusCode"] == api.CODE_BAD_REQUEST
    assert "startDate" in refused["message"]


def test_the_query_dialects_read_a_gets_query_string_and_get_only_refuses_post() -> None:
    for dialect in ("query", "turkish", "get-only"):
        assert call(seeded(dialect), "GET", "conversations", params=DAY).json()["status"] is True, dialect
    assert call(seeded("query"), "POST", "conversations", json=DAY).json()["status"] is True
    get_only = seeded("get-only")
    assert call(get_only, "POST", "conversations", json=DAY).status_code == 405
    assert call(get_only, "POST", "users", json={}).status_code == 405
    assert call(get_only, "POST", "addconversation", json={"PhoneNumber": PHONE}).json()["status"] is True


def test_the_pascal_dialect_answers_as_a_net_server_might() -> None:
    sandbox = seeded("pascal")
    body = call(sandbox, "POST", "conversations", json=DAY).json()
    assert set(body) == {"Data", "Status", "Message", "StatusCode", "RequestID"} and body["StatusCode"] == 0
    row = body["Data"][0]
    assert row["CreateDate"] == f"/Date({int(WHEN.timestamp() * 1000)}+0300)/" and row["RingTime"] == 7
    instances = call(sandbox, "POST", "Instances", json={}).json()["Data"]
    assert set(instances) == {"15", "16"} and instances["15"]["InstanceID"] == 15 and "InstanceName" in instances["15"]
    assert call(sandbox, "POST", "users", json={}).json()["Data"][0]["UserName"] == "Ayşe Temsilci"
    assert call(sandbox, "POST", "conversations", json={"startDate": "2026-01-01", "enddate": "2026-01-01"}
                ).json()["Data"] is None
    refused = call(sandbox, "POST", "users", key="wrong").json()
    assert refused["Status"] is False and refused["StatusCode"] == 401


def test_the_turkish_dialect_answers_data_as_json_text_and_turkish_dates() -> None:
    sandbox = seeded("turkish")
    body = call(sandbox, "GET", "conversations", params=DAY).json()
    assert isinstance(body["data"], str)
    row = json.loads(body["data"])[0]
    assert (row["createDate"], row["ringTime"], row["callTime"], row["conversationResultDirection"]) == (
        "30.11.2026 12:15:30", "00:00:07", "00:01:35", "2")
    message = json.loads(call(sandbox, "GET", "messagelistforphone", params={"chatPhoneNumber": PHONE}
                              ).json()["data"])[0]
    assert (message["sentdate"], message["senttime"]) == ("30.11.2026", "12:15")
    assert json.loads(call(sandbox, "GET", "Instances").json()["data"])["15"]["instanceID"] == 15
    assert call(sandbox, "GET", "conversations", params={"startDate": "2026-01-01", "enddate": "2026-01-01"}
                ).json()["data"] == ""


def test_the_epoch_dialect_answers_unix_seconds_and_net_dates_and_times() -> None:
    sandbox = seeded("epoch")
    row = call(sandbox, "POST", "conversations", json=DAY).json()["data"][0]
    assert row["createDate"] == int(WHEN.timestamp())
    message = call(sandbox, "POST", "messagelistforphone", json={"chatPhoneNumber": PHONE}).json()["data"][0]
    assert (message["sentdate"], message["senttime"]) == ("2026-11-30T00:00:00", "12:15:30.0000000")
