"""WapCRM is only read (issue 24): no member field (no name, no address) can reach it; the one CRM
value sent, a phone as ``chatPhoneNumber``, is checked before sending, and the sandbox refuses what
the document says ("9 hane ve üzeri": fewer than 9 digits) and nothing it does not (no upper bound)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest

from sync.errors import RejectedRow
from sync.http import HttpPolicy, ProviderHTTP
from sync.providers.base import MemberPush
from sync.providers.wapcrm import api
from sync.providers.wapcrm.client import CAPABILITIES, WapcrmProvider
from sync.sandbox import WapcrmSandbox, sandbox_transport

T = TypeVar("T")
KEY = "wapcrm-gizli-anahtar-9"
BASE = "http://wapcrm.sandbox/api/"
FAST = HttpPolicy(backoff_base_s=0.001, backoff_max_s=0.002, max_attempts=2)


def run(sandbox: WapcrmSandbox, scenario: Callable[[WapcrmProvider], Awaitable[T]]) -> T:
    async def main() -> T:
        async with httpx.AsyncClient(transport=sandbox_transport(sandbox.app)) as client:
            def factory(caps: Any, auth: Any) -> ProviderHTTP:
                return ProviderHTTP(client, provider="wapcrm", base_url=BASE, policy=FAST, auth=auth)
            return await scenario(WapcrmProvider.create(factory, {"secret_key": KEY}, {}))
    return asyncio.run(main())


def call(sandbox: WapcrmSandbox, phone: str) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        async with httpx.AsyncClient(transport=sandbox_transport(sandbox.app), base_url=BASE) as client:
            answer = await client.post(api.MESSAGES_PATH, json={api.PHONE_PARAM: phone},
                                       headers={api.SECRET_HEADER: KEY})
            return dict(answer.json())
    return asyncio.run(main())


def test_no_member_field_can_reach_wapcrm_it_is_read_only() -> None:
    provider = WapcrmProvider.create(lambda caps, auth: None, {"secret_key": KEY}, {})  # type: ignore[arg-type,return-value]
    assert CAPABILITIES.pushes_members is False and not isinstance(provider, MemberPush)
    assert not hasattr(provider, "build_payload")


@pytest.mark.parametrize(("phone", "why"), [
    ("5" * 10_000, "digits"), ("0532 😀 123 45 67", "holds characters other than digits"),
    ("0532１２３４５６７", "holds characters other than digits"), ("0532 123", "digits"),
])
def test_a_phone_that_cannot_be_the_documented_905_form_is_refused_before_sending(phone: str, why: str) -> None:
    sandbox = WapcrmSandbox({KEY: "Acme"}, seed=1)
    with pytest.raises(RejectedRow) as caught:
        run(sandbox, lambda provider: provider.pull_messages(phone))
    assert caught.value.provider_code == "phone_invalid" and why in caught.value.reason
    assert sandbox.calls == []


def test_a_turkish_number_goes_in_the_documented_905_form() -> None:
    sandbox = WapcrmSandbox({KEY: "Acme"}, seed=1)
    assert run(sandbox, lambda provider: provider.pull_messages("0 (532) 123-45.67")) == []
    assert [params.get(api.PHONE_PARAM) for _, _, params in sandbox.calls] == ["905321234567"]


def test_the_sandbox_refuses_fewer_than_9_digits_as_documented_and_no_longer_number() -> None:
    sandbox = WapcrmSandbox({KEY: "Acme"}, seed=1)
    for phone in ("12345678", "90532😀1234567", "５３２１２３４５６７"):
        refused = call(sandbox, phone)
        assert (refused["status"], refused["statusCode"]) == (False, api.CODE_BAD_REQUEST), phone
    for phone in ("123456789", "9" * api.MIN_PHONE_DIGITS * 3):
        answered = call(sandbox, phone)
        assert (answered["status"], answered["data"]) == (True, []), phone
