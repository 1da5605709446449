"""The MailMasterPlus sandbox is exactly as strict as the document (and api.py's ASSUMED choices)."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from sync.providers.mailmasterplus import api
from sync.providers.mailmasterplus.sandbox import DIALECTS
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


def number(response: httpx.Response) -> int:
    """A bare-number answer in any dialect's reading (text, JSON, JSON string)."""
    return int(str(json.loads(response.text)))


def test_the_dialects_are_exported_with_the_documents_literal_reading_first() -> None:
    assert DIALECTS == ("document", "negative", "typed")


@pytest.mark.parametrize(("dialect", "exists", "malformed", "shape"), [
    ("document", 1, 2, "1"), ("negative", -1, -2, "1"), ("typed", 1, 2, '"1"')])
def test_subscribe_answers_the_new_id_or_the_dialects_codes(dialect: str, exists: int, malformed: int,
                                                            shape: str) -> None:
    sandbox = make(dialect)
    first = subscribe(sandbox, "ayse@ornek.com.tr", mssys_firstname="Ayşe")
    assert first.text == shape                                                  # ids start at 1
    assert number(subscribe(sandbox, "mehmet@ornek.com.tr")) == 2
    assert number(subscribe(sandbox, "AYSE@ORNEK.COM.TR")) == exists           # unique list, same address
    assert number(subscribe(sandbox, "not-an-address")) == malformed
    sandbox.refused.add("ali@ornek.com.tr")
    assert number(subscribe(sandbox, "ali@ornek.com.tr")) == 0
    assert number(subscribe(sandbox, "can@ornek.com.tr")) == 3
    assert [row["email"] for row in sandbox.records(USER, 101)] == [
        "ayse@ornek.com.tr", "mehmet@ornek.com.tr", "can@ornek.com.tr"]


def test_a_list_that_is_not_unique_takes_an_address_twice() -> None:
    sandbox = make(unique=False)
    assert [subscribe(sandbox, "ayse@ornek.com.tr").text for _ in range(2)] == ["1", "2"]


#: dialect -> (the whole list, a record by e-mail, active's value, the status time, an empty list,
#:            a missing record by id, by e-mail)
SHAPES = {
    "document": ("id_keyed", "object", "1", None, b"", b"", b""),
    "negative": ("array", "array", 1, "2026-07-01 12:00:00", b"[]", b"[]", b"[]"),
    "typed": ("id_keyed", "id_keyed", True, "2026-07-01T12:00:00+02:00", b"{}", b"false", b"0"),
}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_records_come_in_each_dialects_reading(dialect: str) -> None:
    """Each dialect serves its own readings of what the document leaves open (api.py's table); the
    helpers show one shape whatever the dialect."""
    whole, by_email_shape, active, stamp, empty_list, none_by_id, none_by_email = SHAPES[dialect]
    sandbox = make(dialect)
    assert call(sandbox, "GET", "list/101").content == empty_list
    sandbox.clock = lambda: 1_782_900_000.0                     # 2026-07-01 10:00 UTC, 12:00 in Budapest
    subscribe(sandbox, "ayse@ornek.com.tr", mssys_firstname="Ayşe")
    listed = call(sandbox, "GET", "list/101")
    assert listed.headers["content-type"].startswith("application/json")
    body = listed.json()
    row = body[0] if whole == "array" else body["1"]
    assert row["active"] == active and row["mssys_firstname"] == "Ayşe" and row["email"] == "ayse@ornek.com.tr"
    assert row.get("id") == ("1" if dialect != "typed" else None)        # typed: the id is the key only
    assert row.get(api.STATUS_CHANGED_FIELD) == stamp
    assert (api.SUBSCRIBED_AT_FIELD in row) == (dialect == "negative")
    assert call(sandbox, "GET", "list/101/record/1").json() == row
    by_email = call(sandbox, "GET", "list/101/field/email/value/" + quote("AYSE@ornek.com.tr", safe="")).json()
    assert by_email == {"object": row, "array": [row], "id_keyed": {"1": row}}[by_email_shape]
    assert call(sandbox, "GET", "list/101/record/7").content == none_by_id
    assert call(sandbox, "GET", "list/101/field/email/value/x%40y.com").content == none_by_email
    assert call(sandbox, "GET", "list/101/field/nosuch/value/1").status_code == 406
    assert sandbox.records(USER, 101)[0]["active"] == "1" and sandbox.records(USER, 101)[0]["id"] == "1"


@pytest.mark.parametrize(("dialect", "unchanged"), [("document", 0), ("negative", 1), ("typed", 0)])
def test_an_update_that_changes_nothing_counts_what_the_dialect_counts(dialect: str, unchanged: int) -> None:
    """The document's "a módosított feliratkozók száma": records changed (0, as MySQL's affected
    rows), or, in the public clients' reading, records matched."""
    sandbox = make(dialect)
    subscribe(sandbox, "ayse@ornek.com.tr", mssys_lastname="Çelik")
    assert number(call(sandbox, "PUT", "update/101/form/301/record/1", json={"mssys_lastname": "Çelik"})) == unchanged
    assert number(call(sandbox, "PUT", "update/101/form/301/record/1", json={"mssys_lastname": "Kaya"})) == 1


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


def test_the_typed_dialect_answers_unsubscribe_and_delete_as_booleans_false_when_nothing_changed() -> None:
    sandbox = make("typed")
    subscribe(sandbox, "ayse@ornek.com.tr")
    assert call(sandbox, "GET", "unsubscribe/101/record/1").text == "true"
    assert call(sandbox, "GET", "unsubscribe/101/record/1").text == "false"       # unsubscribed already
    assert call(sandbox, "DELETE", "delete/101/record/1").text == "true"
    assert call(sandbox, "DELETE", "delete/101/record/1").text == "false"


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
