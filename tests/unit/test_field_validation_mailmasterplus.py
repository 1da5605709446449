"""MailMasterPlus: a record's fields are checked against what the document allows before anything is
sent (issue 24), and the sandbox refuses exactly what the document says it refuses: "Szintaktikailag
hibás e mail cím esetén a body értéke: 2" (a malformed address: the subscribe answers 2); no length
is documented, so none is refused."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from sync.errors import RejectedRow
from sync.providers.base import MemberSnapshot
from sync.providers.mailmasterplus import api
from sync.providers.mailmasterplus.client import MailMasterPlusProvider
from sync.sandbox import MailMasterPlusSandbox, sandbox_transport
from tests.unit.field_validation_cases import BAD_ADDRESSES, TURKISH, mail

USER, PASSWORD = "acme-mmp", "MMP-jelszó-1"
LISTS = {"L1": {"nl_id": 101, "subscribe_form": 201, "update_form": 301, "fields": {"city": "varos"}}}



def build(email: str, first_name: str | None = "Ayşe", *, city: str | None = None,
          fields: dict[str, Any] | None = None) -> dict[str, Any]:
    member = MemberSnapshot(email, first_name, "Öztürk", "905321112233", city, "active", fields=fields or {})
    provider = MailMasterPlusProvider(None, LISTS, custom_fields=tuple(fields or ()))  # type: ignore[arg-type]
    return provider.build_payload(member)


def refusal(email: str, first_name: str | None = "Ayşe", **extra: Any) -> str:
    with pytest.raises(RejectedRow) as caught:
        build(email, first_name, **extra)
    assert caught.value.provider_code == "validation"
    return caught.value.reason


@pytest.mark.parametrize(("email", "why"), BAD_ADDRESSES)
def test_an_address_the_document_does_not_show_is_refused_with_the_reason(email: str, why: str) -> None:
    reason = refusal(email)
    assert reason.startswith(f"the e-mail address {email!r} {why}")
    assert reason.endswith(f"; MailMasterPlus: {api.ADDRESS_SOURCE}")


def test_a_ten_thousand_character_first_name_is_refused_naming_the_field_and_our_bound() -> None:
    assert refusal(mail("ayse"), "x" * 10_000) == (
        "first_name is 10000 characters long; MailMasterPlus takes at most 255 (our bound: the document gives no "
        "length)")
    assert refusal(mail("ayse"), city="y" * 256).startswith("city is 256 characters long")
    assert refusal(mail("ayse"), fields={"hobbi": "z" * 256}).startswith("custom field hobbi is 256 characters long")


def test_a_turkish_name_and_values_at_the_bound_pass_unchanged() -> None:
    payload = build(mail("cagri"), TURKISH, city="İ" * api.MAX_FIELD_LENGTH)
    assert (payload["email"], payload["first_name"], payload["last_name"]) == (mail("cagri"), TURKISH, "Öztürk")
    assert payload["city"] == "İ" * api.MAX_FIELD_LENGTH


# --- the sandbox: as strict as the document, no stricter ------------------------------------------


def test_the_sandbox_answers_2_for_a_malformed_address_and_refuses_no_length() -> None:
    sandbox = MailMasterPlusSandbox({USER: PASSWORD})
    sandbox.add_list(USER, 101, "Müşteri Listesi", subscribe_form=201, update_form=301,
                     fields=(*api.DEFAULT_FIELDS.values(), "varos"))
    bad = [mail("ay😀se"), mail("ayse", "😀.com.tr"), mail("ayse", "örnek.com.tr"), mail("a" * 65),
           mail("ayse", "b" * 64 + ".com.tr")]

    async def go() -> None:
        async with httpx.AsyncClient(transport=sandbox_transport(sandbox.app), base_url="http://mmp.sandbox/",
                                     auth=(USER, PASSWORD)) as client:
            for email in bad:
                answer = await client.post("subscribe/101/form/201", json={"email": email})
                assert (answer.status_code, answer.text) == (200, "2"), email
            made = await client.post("subscribe/101/form/201", json={
                "email": mail("uzun"), "mssys_firstname": "x" * 10_000, "mssys_lastname": TURKISH,
                "varos": "y" * 10_000})
            assert made.text.isdigit() and int(made.text) > 0, made.text
            moved = await client.put(f"update/101/form/301/record/{made.text}", json={"email": mail("ay😀se")})
            assert (moved.status_code, moved.text) == (200, "")          # "Sikertelen adatmódosítás": empty

    asyncio.run(go())
    records = sandbox.records(USER, 101)
    assert [record["email"] for record in records] == [mail("uzun")]
    assert len(records[0]["mssys_firstname"]) == 10_000 and records[0]["mssys_lastname"] == TURKISH
