"""Euromsg Express: a member card's fields are checked against what the document allows before
anything is sent (issue 24), and the sandbox refuses exactly that: the document makes only the
e-mail mandatory (and the İYS fields on an İYS account) and gives no length, so a malformed address
is VALIDATION_ERROR (api.py's code) and no length is refused."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
import pytest

from sync.errors import RejectedRow
from sync.providers.base import MemberSnapshot
from sync.providers.euromsg import api
from sync.providers.euromsg.client import EuromsgProvider
from sync.providers.euromsg.sandbox import EuromsgSandbox
from sync.sandbox import sandbox_transport
from tests.unit.field_validation_cases import BAD_ADDRESSES, TURKISH, mail

CLIENT, PASSWORD, KEY = "crm-firma", "entegrator-sifre", "acme-key-000001"



def build(email: str, first_name: str | None = "Ayşe", *, city: str | None = None, iys: bool = False) -> dict[str, Any]:
    member = MemberSnapshot(email, first_name, "Öztürk", None, city, "active", consent_status="ONAY",
                            consent_date=dt.datetime(2024, 3, 1, 7, 0), consent_source="HS_WEB",
                            recipient_type="BIREYSEL")
    return EuromsgProvider(None, iys=iys).build_payload(member)  # type: ignore[arg-type]


def refusal(email: str, first_name: str | None = "Ayşe", **extra: Any) -> str:
    with pytest.raises(RejectedRow) as caught:
        build(email, first_name, **extra)
    assert caught.value.provider_code == "validation"
    return caught.value.reason


@pytest.mark.parametrize(("email", "why"), BAD_ADDRESSES)
def test_an_address_the_document_does_not_show_is_refused_with_the_reason(email: str, why: str) -> None:
    reason = refusal(email)
    assert reason.startswith(f"the e-mail address {email!r} {why}")
    assert reason.endswith(f"; Euromsg: {api.ADDRESS_SOURCE}")


def test_a_ten_thousand_character_first_name_is_refused_naming_the_field_and_our_bound() -> None:
    assert refusal(mail("ayse"), "x" * 10_000) == (
        "first_name (firstName) is 10000 characters long; Euromsg takes at most 255 (our bound: the document gives "
        "no length)")
    assert refusal(mail("ayse"), city="y" * 256, iys=True).startswith("city (city) is 256 characters long")


def test_a_turkish_name_and_values_at_the_bound_pass_unchanged() -> None:
    payload = build(mail("cagri"), TURKISH, city="İ" * api.MAX_CITY_LENGTH, iys=True)
    assert (payload["email"], payload["firstName"], payload["lastName"]) == (mail("cagri"), TURKISH, "Öztürk")
    assert payload["city"] == "İ" * api.MAX_CITY_LENGTH and payload[api.IYS_SOURCE] == "HS_WEB"


# --- the sandbox: as strict as the document, no stricter ------------------------------------------


def test_the_sandbox_refuses_a_malformed_address_with_its_validation_error_and_no_length() -> None:
    sandbox = EuromsgSandbox({CLIENT: PASSWORD}, {KEY: "Acme"})
    bad = [mail("ay😀se"), mail("ayse", "😀.com.tr"), mail("ayse", "örnek.com.tr"), mail("a" * 65),
           mail("ayse", "b" * 64 + ".com.tr")]

    async def go() -> None:
        async with httpx.AsyncClient(transport=sandbox_transport(sandbox.app), base_url="http://sandbox/") as client:
            token = (await client.post(api.TOKEN_PATH, json={"clientName": CLIENT, "password": PASSWORD})).json()
            client.headers["Authorization"] = f"{api.AUTH_SCHEME} {token['tokenValue']}"
            path, query = sandbox.identification_request(KEY)
            assert (await client.put(path, params=query)).status_code == 200
            made = (await client.post(api.EMAIL_LIST_PATH, json={"name": "Ç" * 1_000})).json()   # no length either
            assert made["isSuccess"] is True, made
            list_id = made["data"]["id"]
            for email in bad:
                answer = (await client.post(api.MEMBER_PATH, json={"emailListId": list_id, "email": email})).json()
                assert (answer["isSuccess"], answer["errorCode"]) == (False, api.ERROR_VALIDATION), email
                assert "valid e-mail address" in answer["message"]
            long = (await client.post(api.MEMBER_PATH, json={
                "emailListId": list_id, "email": mail("uzun"), "firstName": "x" * 10_000, "lastName": TURKISH,
                "city": "y" * 10_000})).json()
            assert long["isSuccess"] is True, long

    asyncio.run(go())
