"""Postacell: a subscriber's fields are checked against what the document allows before anything is
sent (issue 24), and the sandbox refuses exactly what the document says it refuses: a bad request is
"400 Bad Request – json object return" (a malformed address: ``{"email": [...]}``); no length is
documented, so none is refused."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from sync.errors import RejectedRow
from sync.providers.base import MemberSnapshot
from sync.providers.postacell import api
from sync.providers.postacell.client import PostacellProvider
from sync.sandbox import PostacellSandbox, sandbox_transport
from tests.unit.field_validation_cases import BAD_ADDRESSES, TURKISH, mail

FIELD_ID = "613ef1081ee5c40e796387b8"



def build(email: str, first_name: str | None = "Ayşe", *, phone: str | None = None,
          fields: dict[str, Any] | None = None) -> dict[str, Any]:
    member = MemberSnapshot(email, first_name, "Öztürk", phone, None, "active", fields=fields or {})
    return PostacellProvider(None).build_payload(member)  # type: ignore[arg-type]


def refusal(email: str, first_name: str | None = "Ayşe", **extra: Any) -> str:
    with pytest.raises(RejectedRow) as caught:
        build(email, first_name, **extra)
    assert caught.value.provider_code == "validation"
    return caught.value.reason


@pytest.mark.parametrize(("email", "why"), BAD_ADDRESSES)
def test_an_address_the_document_does_not_show_is_refused_with_the_reason(email: str, why: str) -> None:
    reason = refusal(email)
    assert reason.startswith(f"the e-mail address {email!r} {why}")
    assert reason.endswith(f"; Postacell: {api.ADDRESS_SOURCE}")


def test_a_ten_thousand_character_first_name_is_refused_naming_the_field_and_our_bound() -> None:
    assert refusal(mail("ayse"), "x" * 10_000) == (
        "first_name is 10000 characters long; Postacell takes at most 255 (our bound: the document gives no length)")
    assert refusal(mail("ayse"), phone="5" * 300).startswith("phone is 300 characters long")
    assert refusal(mail("ayse"), fields={FIELD_ID: "z" * 256}).startswith(
        f"custom field {FIELD_ID} is 256 characters long; Postacell takes at most 255")


def test_a_turkish_name_and_values_at_the_bound_pass_unchanged() -> None:
    payload = build(mail("cagri"), TURKISH, fields={FIELD_ID: "İ" * api.MAX_FIELD_VALUE_LENGTH})
    assert (payload["email"], payload["first_name"], payload["last_name"]) == (mail("cagri"), TURKISH, "Öztürk")
    assert payload["fields"] == [{"value": "İ" * api.MAX_FIELD_VALUE_LENGTH, "field": FIELD_ID}]
    assert build(mail("cagri"), "Ş" * api.MAX_NAME_LENGTH)["first_name"] == "Ş" * api.MAX_NAME_LENGTH


# --- the sandbox: as strict as the document, no stricter ------------------------------------------


def test_the_sandbox_answers_400_for_a_malformed_address_and_refuses_no_length() -> None:
    sandbox = PostacellSandbox(accounts={"acme": "s3cret"})
    bad = [mail("ay😀se"), mail("ayse", "😀.com.tr"), mail("ayse", "örnek.com.tr"), mail("a" * 65),
           mail("ayse", "b" * 64 + ".com.tr")]

    async def go() -> None:
        async with httpx.AsyncClient(transport=sandbox_transport(sandbox.app), base_url="http://sandbox/api/v1/",
                                     headers={"Accept": "application/json"}) as client:
            token = await client.post(api.TOKEN_PATH, json={"username": "acme", "password": "s3cret"})
            client.headers["Authorization"] = f"{api.AUTH_SCHEME} {token.json()['access']}"
            list_id = (await client.post(api.LIST_PATH, json={"title": "Müşteri Listesi"})).json()["id"]
            for email in bad:
                answer = await client.post(api.SUBSCRIBERS_PATH, json={"email": email, "status": "active",
                                                                        "lists": [list_id]})
                assert (answer.status_code, answer.json()) == (400, {"email": ["Enter a valid email address."]}), email
            long = await client.post(api.SUBSCRIBERS_PATH, json={
                "email": mail("uzun"), "status": "active", "lists": [list_id], "first_name": "x" * 10_000,
                "last_name": TURKISH, "phone": "5" * 10_000})
            assert long.status_code == 201, long.text
            queued = await client.post(api.BULK_IMPORT_PATH, json={
                "lists": [list_id], "subscribers": [{"email": email, "status": "active"} for email in bad]})
            job = (await client.get(api.BULK_JOB_PATH.format(id=queued.json()["id"]))).json()
            assert [row["result"] for row in job["results"]] == ["error"] * len(bad)
            assert all(row["detail"] == "email: Enter a valid email address." for row in job["results"])

    asyncio.run(go())
    stored = sandbox.find_subscriber("acme", mail("uzun"))
    assert stored is not None and len(stored["first_name"]) == 10_000 and stored["last_name"] == TURKISH
    assert all(sandbox.find_subscriber("acme", email) is None for email in bad)
