"""The MailMasterPlus sandbox is exactly as strict as the document (and api.py's ASSUMED choices)."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from sync.providers.mailmasterplus import api
from sync.sandbox import SANDBOXES, FaultPlan, MailMasterPlusSandbox, sandbox_transport

USER, PASSWORD = "acme-mmp", "MMP-jelszó-1"
BASE = "http://mmp.sandbox/"


def make(dialect: str = "document", unique: bool = True, faults: FaultPlan | None = None) -> MailMasterPlusSandbox:
    sandbox = MailMasterPlusSandbox({USER: PASSWORD}, dialect=dialect, faults=faults)
    sandbox.add_list(USER, 101, "Müşteri Listesi", subscribe_form=201, update_form=301, unique=unique)
    return sandbox


def call(sandbox: MailMasterPlusSandbox, method: str, path: str, *, auth: Any = (USER, PASSWORD),
         **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=sandbox_transport(sandbox.app), base_url=BASE, auth=auth) as client:
            return await client.request(method, path, **kwargs)
    return asyncio.run(go())


def subscribe(sandbox: MailMasterPlusSandbox, email: str, **fields: str) -> httpx.Response:
    return call(sandbox, "POST", "subscribe/101/form/201", json={"email": email, **fields})


def test_the_sandbox_is_registered() -> None:
    assert SANDBOXES["mailmasterplus"] is MailMasterPlusSandbox


@pytest.mark.parametrize("auth", [None, (USER, "wrong"), ("nobody", PASSWORD)])
def test_every_call_needs_http_basic_auth(auth: Any) -> None:
    response = call(make(), "GET", "list/101", auth=auth)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_unknown_resource_is_404_and_a_wrong_method_405() -> None:
    sandbox = make()
    assert call(sandbox, "GET", "lists/101").status_code == 404
    assert call(sandbox, "GET", "subscribe/101/form/201").status_code == 405
    assert call(sandbox, "POST", "delete/101/record/1").status_code == 405


@pytest.mark.parametrize(("path", "body"), [
    ("subscribe/999/form/201", {"email": "a@ornek.com.tr"}),        # not the account's list
    ("subscribe/101/form/301", {"email": "a@ornek.com.tr"}),        # an update form, not a subscribe form
    ("subscribe/101/form/201", {"name": "x"}),                      # no email
    ("subscribe/101/form/201", {"email": "a@ornek.com.tr", "city": "Ankara"}),   # a field the list lacks
    ("subscribe/101/form/201", {"email": "a@ornek.com.tr", "active": "1"}),      # a system field
    ("subscribe/101/form/201", ["a@ornek.com.tr"]),                 # not an object
])
def test_bad_parameters_are_406(path: str, body: Any) -> None:
    assert call(make(), "POST", path, json=body).status_code == api.STATUS_BAD_PARAMETERS


def test_a_body_that_is_not_json_is_406() -> None:
    assert call(make(), "POST", "subscribe/101/form/201", content=b"email=a@b.com").status_code == 406


@pytest.mark.parametrize(("dialect", "exists", "malformed"), [("document", 1, 2), ("negative", -1, -2)])
def test_subscribe_answers_the_new_id_or_the_dialects_codes(dialect: str, exists: int, malformed: int) -> None:
    sandbox = make(dialect)
    assert subscribe(sandbox, "ayse@ornek.com.tr", mssys_firstname="Ayşe").text == "1"   # ids start at 1
    assert subscribe(sandbox, "mehmet@ornek.com.tr").text == "2"
    assert subscribe(sandbox, "AYSE@ORNEK.COM.TR").text == str(exists)          # unique list, same address
    assert subscribe(sandbox, "not-an-address").text == str(malformed)
    sandbox.refused.add("ali@ornek.com.tr")
    assert subscribe(sandbox, "ali@ornek.com.tr").text == "0"
    assert subscribe(sandbox, "can@ornek.com.tr").text == "3"
    assert [row["email"] for row in sandbox.records(USER, 101)] == [
        "ayse@ornek.com.tr", "mehmet@ornek.com.tr", "can@ornek.com.tr"]


def test_a_list_that_is_not_unique_takes_an_address_twice() -> None:
    sandbox = make(unique=False)
    assert [subscribe(sandbox, "ayse@ornek.com.tr").text for _ in range(2)] == ["1", "2"]


def test_records_show_the_assumed_shape() -> None:
    sandbox = make()
    subscribe(sandbox, "ayse@ornek.com.tr", mssys_firstname="Ayşe")
    listed = call(sandbox, "GET", "list/101")
    assert listed.headers["content-type"].startswith("application/json")
    (row,) = listed.json()
    assert row["id"] == "1" and row["active"] == "1" and row["mssys_firstname"] == "Ayşe"
    assert {api.STATUS_CHANGED_FIELD, api.SUBSCRIBED_AT_FIELD, api.UPDATED_AT_FIELD} <= set(row)
    assert call(sandbox, "GET", "list/101/record/1").json() == row
    by_email = call(sandbox, "GET", "list/101/field/email/value/" + quote("AYSE@ornek.com.tr", safe=""))
    assert by_email.json() == row
    assert call(sandbox, "GET", "list/101/record/7").content == b""                 # documented: empty
    assert call(sandbox, "GET", "list/101/field/email/value/x%40y.com").content == b""
    assert call(sandbox, "GET", "list/101/field/nosuch/value/1").status_code == 406


def test_an_empty_list_is_an_empty_array() -> None:
    assert call(make(), "GET", "list/101").json() == []


def test_update_answers_the_count_or_nothing() -> None:
    sandbox = make()
    subscribe(sandbox, "ayse@ornek.com.tr")
    assert call(sandbox, "PUT", "update/101/form/301/record/1", json={"mssys_lastname": "Çelik"}).text == "1"
    assert call(sandbox, "PUT", "update/101/form/301/record/9", json={"mssys_lastname": "X"}).content == b""
    assert call(sandbox, "PUT", "update/101/form/201/record/1", json={}).status_code == 406   # a subscribe form
    assert call(sandbox, "PUT", "update/101/form/301/record/1", json={"active": "1"}).status_code == 406
    path = "update/101/form/301/field/email/value/" + quote("ayse@ornek.com.tr", safe="")
    assert call(sandbox, "PUT", path, json={"mssys_firstname": "Ayşe"}).text == "1"
    assert sandbox.find(USER, 101, "ayse@ornek.com.tr") == {**sandbox.records(USER, 101)[0]}
    assert sandbox.records(USER, 101)[0]["mssys_lastname"] == "Çelik"


def test_an_update_never_makes_an_unsubscribed_record_active() -> None:
    sandbox = make()
    subscribe(sandbox, "ayse@ornek.com.tr")
    sandbox.unsubscribe(USER, 101, "ayse@ornek.com.tr")
    call(sandbox, "PUT", "update/101/form/301/record/1", json={"mssys_firstname": "Ayşe"})
    assert sandbox.records(USER, 101)[0]["active"] == "0"
    assert subscribe(sandbox, "ayse@ornek.com.tr").text == "1"      # "exists", still unsubscribed
    assert sandbox.records(USER, 101)[0]["active"] == "0"


def test_unsubscribe_and_delete_answer_1_or_0() -> None:
    sandbox = make()
    subscribe(sandbox, "ayse@ornek.com.tr")
    subscribe(sandbox, "mehmet@ornek.com.tr")
    assert call(sandbox, "GET", "unsubscribe/101/record/1").text == "1"
    assert call(sandbox, "GET", "unsubscribe/101/record/1").text == "1"       # ASSUMED: the state holds
    assert call(sandbox, "GET", "unsubscribe/101/record/9").text == "0"
    assert call(sandbox, "GET", "unsubscribe/101/email/mehmet%40ornek.com.tr").text == "1"
    assert call(sandbox, "GET", "unsubscribe/101/email/nobody%40ornek.com.tr").text == "0"
    assert [row["active"] for row in sandbox.records(USER, 101)] == ["0", "0"]
    assert call(sandbox, "DELETE", "delete/101/record/1").text == "1"
    assert call(sandbox, "DELETE", "delete/101/record/1").text == "0"
    assert [row["id"] for row in sandbox.records(USER, 101)] == ["2"]


def test_writes_are_counted_and_the_get_unsubscribe_is_one() -> None:
    sandbox = make()
    subscribe(sandbox, "ayse@ornek.com.tr")
    call(sandbox, "GET", "list/101")
    call(sandbox, "GET", "unsubscribe/101/record/1")
    assert sandbox.write_requests() == 2


def test_apply_then_drop_applies_the_write_and_loses_the_answer() -> None:
    sandbox = make(faults=FaultPlan(apply_then_drop_rate=1.0))
    with pytest.raises(httpx.RemoteProtocolError):
        subscribe(sandbox, "ayse@ornek.com.tr")
    assert [row["email"] for row in sandbox.records(USER, 101)] == ["ayse@ornek.com.tr"]


def test_a_list_deleted_in_the_panel_answers_406() -> None:
    sandbox = make()
    sandbox.delete_list(USER, 101)
    assert call(sandbox, "GET", "list/101").status_code == 406


def test_an_unknown_dialect_is_refused() -> None:
    with pytest.raises(ValueError, match="dialect"):
        MailMasterPlusSandbox(dialect="positive")
