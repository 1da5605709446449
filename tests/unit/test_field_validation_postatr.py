"""Postatr: a member's fields are checked against what the document allows before anything is sent
(issue 24), and the sandbox refuses exactly what the document says it refuses: a member whose
address is wrong is ignored ("Email adresi hatalı"); no length is documented, so none is refused."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from sync.errors import RejectedRow
from sync.providers.base import MemberSnapshot
from sync.providers.postatr import api
from sync.providers.postatr.client import PostatrAuth, PostatrProvider
from sync.sandbox import PostatrSandbox, sandbox_transport
from tests.unit.field_validation_cases import BAD_ADDRESSES, TURKISH, mail

USER, PASSWORD, ENCRYPTED_ID = "acme", "şifre-123", "12FD8A5F-2H34-486F-871D-5E697677BFC4"
LIST_ID = "468c1222-428a-4acf-b269-3eaf090979a4"



def provider() -> PostatrProvider:
    return PostatrProvider(None, PostatrAuth(USER, PASSWORD, ENCRYPTED_ID), USER)  # type: ignore[arg-type]


def build(email: str, first_name: str | None = "Ayşe", *, city: str | None = None) -> dict[str, Any]:
    return provider().build_payload(MemberSnapshot(email, first_name, "Öztürk", None, city, "active"))


def refusal(email: str, first_name: str | None = "Ayşe", **extra: Any) -> str:
    with pytest.raises(RejectedRow) as caught:
        build(email, first_name, **extra)
    assert caught.value.provider_code == "validation"
    return caught.value.reason


@pytest.mark.parametrize(("email", "why"), BAD_ADDRESSES)
def test_an_address_the_document_does_not_show_is_refused_with_the_reason(email: str, why: str) -> None:
    reason = refusal(email)
    assert reason.startswith(f"the e-mail address {email!r} {why}")
    assert reason.endswith(f"; Postatr: {api.ADDRESS_SOURCE}")


def test_a_ten_thousand_character_first_name_is_refused_naming_the_field_and_our_bound() -> None:
    assert refusal(mail("ayse"), "x" * 10_000) == (
        "first_name (FName) is 10000 characters long; Postatr takes at most 255 (our bound: the document gives no "
        "length)")
    assert "MyColumns city is 300 characters long" in refusal(mail("ayse"), city="y" * 300)


def test_a_turkish_name_and_a_value_at_the_bound_pass_unchanged() -> None:
    payload = build(mail("cagri"), TURKISH, city="İ" * api.MAX_COLUMN_LENGTH)
    assert payload["FName"] == TURKISH and payload["LName"] == "Öztürk" and payload["Email"] == mail("cagri")
    assert payload["MyColumns"]["city"] == "İ" * api.MAX_COLUMN_LENGTH
    assert build(mail("cagri"), "Ş" * api.MAX_NAME_LENGTH)["FName"] == "Ş" * api.MAX_NAME_LENGTH


# --- the sandbox: as strict as the document, no stricter ------------------------------------------


def start_process(sandbox: PostatrSandbox, members: list[dict[str, Any]]) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with httpx.AsyncClient(transport=sandbox_transport(sandbox.app), base_url="http://p/api.asmx/") as c:
            login = await c.post(api.AUTHENTICATE, json={"Username": USER, "Password": PASSWORD,
                                                         "EncryptedId": ENCRYPTED_ID})
            token = api.TOKEN_ANSWER.match(login.text).group(1)  # type: ignore[union-attr]
            body = {"Token": token, "ProcessType": "DataOnly", "SegmentationFilter": "1=2", "ListId": LIST_ID,
                    "MemberGroups": "0", "Members": {"Member": members}}
            answer = await c.post(api.START_PROCESS, json={"MyData": body})
            return dict(api.unwrap_answer(answer.json()))
    return asyncio.run(go())


def test_the_sandbox_ignores_a_wrong_address_as_the_document_says_and_refuses_no_length() -> None:
    sandbox = PostatrSandbox({USER: (PASSWORD, ENCRYPTED_ID)})
    bad = [mail("ay😀se"), mail("ayse", "😀.com.tr"), mail("ayse", "örnek.com.tr"), mail("a" * 65),
           mail("ayse", "b" * 64 + ".com.tr")]
    members = [{"Memberid": f"B{n}", "Email": email, "FName": "Ayşe", "MyColumns": {}} for n, email in enumerate(bad)]
    members.append({"Memberid": "LONG", "Email": mail("uzun"), "FName": "x" * 10_000, "LName": TURKISH,
                    "MyColumns": {"city": "y" * 10_000}})
    answer = start_process(sandbox, members)
    assert (answer["ErrorCode"], answer["inserted"], answer["ignored"]) == (0, 1, len(bad))
    assert {(d["Memberid"], d["Reason"]) for d in answer["ignored_details"]} == {
        (f"B{n}", "Email adresi hatalı") for n in range(len(bad))}
    stored = sandbox.member(USER, "LONG")
    assert stored is not None and len(stored["FName"]) == 10_000
