"""The Euromsg sandbox behaves as the document and ``sync.providers.euromsg.api`` say."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from sync.providers.euromsg import api
from sync.providers.euromsg.sandbox import DIALECT_TABLE, DIALECTS, EuromsgSandbox
from sync.sandbox import SANDBOXES, FaultPlan, sandbox_transport

BASE = "http://sandbox/"
CLIENT, PASSWORD = "crm-firma", "entegrator-sifre"
ACME, GLOBEX = "acme-key-000001", "globex-key-000002"


def mail(local: str, domain: str = "example.com.tr") -> str:
    return "@".join((local, domain))


class FakeClock:
    def __init__(self, now: float = 1_780_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(**options: Any) -> EuromsgSandbox:
    """A sandbox with two accounts, in the default dialect unless ``dialect`` says otherwise."""
    return EuromsgSandbox({CLIENT: PASSWORD}, {ACME: "Acme", GLOBEX: "Globex"}, **options)


@asynccontextmanager
async def connect(sb: EuromsgSandbox, api_key: str | None = ACME) -> AsyncIterator[httpx.AsyncClient]:
    """A client with a token identified with ``api_key`` (None: a token without identification)."""
    async with httpx.AsyncClient(transport=sandbox_transport(sb.app), base_url=BASE) as client:
        answer = (await client.post(api.TOKEN_PATH, json={"clientName": CLIENT, "password": PASSWORD})).json()
        token = answer["tokenValue"] if "tokenValue" in answer else answer["data"]["tokenValue"]  # post-adds: enveloped
        client.headers["Authorization"] = f"{api.AUTH_SCHEME} {token}"
        if api_key is not None:
            path, query = sb.identification_request(api_key)
            identified = await client.put(path, params=query)
            assert identified.status_code == 200, identified.text
        yield client


def run(sb: EuromsgSandbox, scenario: Callable[[httpx.AsyncClient], Awaitable[None]],
        api_key: str | None = ACME) -> None:
    async def main() -> None:
        async with connect(sb, api_key) as client:
            await scenario(client)
    asyncio.run(main())


def iys(**overrides: Any) -> dict[str, Any]:
    return {api.IYS_RECIPIENT_TYPE: "BIREYSEL", api.IYS_STATUS: "ONAY", api.IYS_DATE: "2024-03-01 10:00:00",
            api.IYS_SOURCE: "HS_WEB", **overrides}


def test_euromsg_is_a_registered_sandbox() -> None:
    assert SANDBOXES["euromsg"] is EuromsgSandbox


def test_token_answer_has_the_documented_shape_and_bad_credentials_are_401() -> None:
    sb = make()

    async def main() -> None:
        async with httpx.AsyncClient(transport=sandbox_transport(sb.app), base_url=BASE) as client:
            good = await client.post(api.TOKEN_PATH, json={"clientName": CLIENT, "password": PASSWORD})
            bad = await client.post(api.TOKEN_PATH, json={"clientName": CLIENT, "password": "wrong"})
        assert good.status_code == 200 and set(good.json()) == {"tokenValue", "expireTime", "roles"}
        assert bad.status_code == 401 and bad.json()["errorCode"] == api.ERROR_INVALID_CREDENTIALS

    asyncio.run(main())


def test_a_token_acts_only_after_identification_and_only_for_one_api_key() -> None:
    sb = make()

    async def scenario(client: httpx.AsyncClient) -> None:
        before = await client.get(api.EMAIL_LIST_PATH)
        assert before.status_code == 403 and before.json()["errorCode"] == api.ERROR_NOT_IDENTIFIED
        unknown = await client.put(sb.identification_request("no-such-key")[0])
        assert unknown.status_code == 403 and unknown.json()["errorCode"] == api.ERROR_INVALID_API_KEY
        assert (await client.put(sb.identification_request(ACME)[0])).status_code == 200
        other = await client.put(sb.identification_request(GLOBEX)[0])
        assert other.status_code == 409 and other.json()["errorCode"] == api.ERROR_ALREADY_IDENTIFIED
        await client.post(api.EMAIL_LIST_PATH, json={"name": "Acme only"})

    run(sb, scenario, api_key=None)
    assert list(sb.lists(ACME).values()) == ["Acme only"] and sb.lists(GLOBEX) == {}


def test_tokens_expire_on_the_clock() -> None:
    clock = FakeClock()
    sb = make(clock=clock)

    async def scenario(client: httpx.AsyncClient) -> None:
        assert (await client.get(api.EMAIL_LIST_PATH)).status_code == 200
        clock.now += api.TOKEN_LIFETIME_S + 1
        expired = await client.get(api.EMAIL_LIST_PATH)
        assert expired.status_code == 401 and expired.json()["errorCode"] == api.ERROR_INVALID_TOKEN

    run(sb, scenario)


def test_lists_create_rename_delete_and_panel_lists_are_listed() -> None:
    sb = make()
    panel = sb.create_list(ACME, "Panelden")

    async def scenario(client: httpx.AsyncClient) -> None:
        made = (await client.post(api.EMAIL_LIST_PATH, json={"name": "Müşteriler"})).json()["data"]
        assert isinstance(made["id"], int)
        listed = (await client.get(api.EMAIL_LIST_PATH)).json()["data"]
        assert {row["name"] for row in listed["items"]} == {"Panelden", "Müşteriler"}
        assert (await client.patch(api.EMAIL_LIST_ITEM_PATH.format(id=made["id"]), json={"name": "Yeni"})
                ).json()["isSuccess"]
        await client.post(api.MEMBER_PATH, json={"emailListId": made["id"], "email": mail("ayse")})
        assert (await client.delete(api.EMAIL_LIST_ITEM_PATH.format(id=made["id"]))).json()["isSuccess"]
        gone = await client.patch(api.EMAIL_LIST_ITEM_PATH.format(id=made["id"]), json={"name": "x"})
        assert gone.status_code == 404 and gone.json()["errorCode"] == api.ERROR_LIST_NOT_FOUND

    run(sb, scenario)
    assert sb.lists(ACME) == {panel: "Panelden"}
    member = sb.find_member(ACME, mail("ayse"))
    assert member is not None and member["emailListIds"] == []     # the member stays (documented)


def test_adding_an_existing_email_is_refused_inside_http_200_and_changes_nothing() -> None:
    sb = make()
    first, second = sb.create_list(ACME, "A"), sb.create_list(ACME, "B")

    async def scenario(client: httpx.AsyncClient) -> None:
        await client.post(api.MEMBER_PATH, json={"emailListId": int(first), "email": mail("ayse")})
        sb.set_status(ACME, mail("ayse"), "Unsubscribed")
        again = await client.post(api.MEMBER_PATH, json={"emailListId": int(second), "email": mail("AYSE"),
                                                         "status": "Active", "firstName": "Ayşe"})
        assert again.status_code == 200 and again.json()["isSuccess"] is False
        assert again.json()["errorCode"] == api.ERROR_MEMBER_EXISTS

    run(sb, scenario)
    member = sb.find_member(ACME, mail("ayse"))
    assert member is not None
    assert (member["status"], member["emailListIds"], member["firstName"]) == ("Unsubscribed", [int(first)], None)


def test_members_by_list_are_paged_and_by_email_give_the_member_id() -> None:
    sb = make()
    list_id = int(sb.create_list(ACME, "Büyük"))

    async def scenario(client: httpx.AsyncClient) -> None:
        for n in range(7):
            await client.post(api.MEMBER_PATH, json={"emailListId": list_id, "email": mail(f"uye{n}")})
        page = (await client.get(api.MEMBER_PATH, params={"emailListId": list_id, "page": 2, "pageSize": 3})
                ).json()["data"]
        assert (page["totalCount"], len(page["items"]), page["page"]) == (7, 3, 2)
        one = (await client.get(api.MEMBER_PATH, params={"email": mail("UYE4")})).json()["data"]["items"]
        assert len(one) == 1 and isinstance(one[0]["memberId"], int)
        neither = (await client.get(api.MEMBER_PATH)).json()
        assert neither["errorCode"] == api.ERROR_VALIDATION
        too_big = (await client.get(api.MEMBER_PATH, params={"emailListId": list_id,
                                                             "pageSize": api.MAX_PAGE_SIZE + 1})).json()
        assert too_big["errorCode"] == api.ERROR_VALIDATION

    run(sb, scenario)


def test_patch_replaces_lists_and_delete_hides_the_member_but_keeps_a_record() -> None:
    sb = make()
    a, b = int(sb.create_list(ACME, "A")), int(sb.create_list(ACME, "B"))

    async def scenario(client: httpx.AsyncClient) -> None:
        made = (await client.post(api.MEMBER_PATH, json={"emailListId": a, "email": mail("can")})).json()["data"]
        path = api.MEMBER_ITEM_PATH.format(id=made["memberId"])
        patched = (await client.patch(path, json={"emailListIds": [b], "city": "İzmir"})).json()["data"]
        assert (patched["emailListIds"], patched["city"]) == ([b], "İzmir")
        bad = (await client.patch(path, json={"status": "HardBounced"})).json()
        assert bad["errorCode"] == api.ERROR_VALIDATION          # only Active/Unsubscribed are ours to set
        assert (await client.delete(path)).json()["isSuccess"]
        assert (await client.delete(path)).status_code == 404

    run(sb, scenario)
    assert sb.find_member(ACME, mail("can")) is None
    assert [email for email, _ in sb.deleted_members(ACME)] == [mail("can")]


@pytest.mark.parametrize(("fields", "why"), [
    ({}, "required"),
    (iys(**{api.IYS_DATE: "2015-04-30 23:59:59"}), "before 2015-05-01"),
    (iys(**{api.IYS_DATE: "2099-01-01 00:00:00"}), "future"),
    (iys(**{api.IYS_SOURCE: "HS_2015"}), "HS_2015"),
    (iys(**{api.IYS_SOURCE: "HS_FAX"}), "not an İYS source"),
    (iys(**{api.IYS_STATUS: "EVET"}), "ONAY or RET"),
    (iys(**{api.IYS_DATE: "01.03.2024 10:00"}), "YYYY-MM-DD"),
    (iys(**{api.IYS_RECIPIENT_TYPE: "SIRKET"}), "BIREYSEL or TACIR"),
    ({api.IYS_RECIPIENT_TYPE: "BIREYSEL", api.IYS_STATUS: "ONAY"}, "required"),
])
def test_an_iys_account_refuses_members_with_missing_or_invalid_iys_fields(fields: dict[str, Any], why: str) -> None:
    sb = EuromsgSandbox({CLIENT: PASSWORD}, {ACME: "Acme"}, iys_accounts=[ACME])
    list_id = int(sb.create_list(ACME, "İYS"))

    async def scenario(client: httpx.AsyncClient) -> None:
        answer = await client.post(api.MEMBER_PATH, json={"emailListId": list_id, "email": mail("x"), **fields})
        body = answer.json()
        assert answer.status_code == 200 and body["isSuccess"] is False
        assert body["errorCode"] == api.ERROR_IYS_VALIDATION and why in body["message"]

    run(sb, scenario)
    assert sb.members(ACME) == []


def test_an_iys_account_takes_valid_rows_hs_2015_on_its_date_and_wants_date_and_source_of_tacir_too() -> None:
    """The document: date, source and merchant status are mandatory on an İYS account (issue 22 item 6)."""
    sb = EuromsgSandbox({CLIENT: PASSWORD}, {ACME: "Acme"}, iys_accounts=[ACME])
    list_id = int(sb.create_list(ACME, "İYS"))
    rows = [iys(), iys(**{api.IYS_SOURCE: "HS_2015", api.IYS_DATE: "2015-05-01 00:00:00"}),
            iys(**{api.IYS_RECIPIENT_TYPE: "TACIR", api.IYS_STATUS: "RET"})]

    async def scenario(client: httpx.AsyncClient) -> None:
        for n, fields in enumerate(rows):
            body = (await client.post(api.MEMBER_PATH, json={"emailListId": list_id, "email": mail(f"i{n}"),
                                                             **fields})).json()
            assert body["isSuccess"], body
        bare_tacir = (await client.post(api.MEMBER_PATH, json={
            "emailListId": list_id, "email": mail("tacir"), api.IYS_RECIPIENT_TYPE: "TACIR",
            api.IYS_STATUS: "RET"})).json()
        assert bare_tacir["errorCode"] == api.ERROR_IYS_VALIDATION
        assert api.IYS_DATE in bare_tacir["message"] and api.IYS_SOURCE in bare_tacir["message"]

    run(sb, scenario)
    assert len(sb.members(ACME)) == 3


def test_an_account_without_a_sending_package_refuses_member_writes_until_renewed() -> None:
    sb = make()
    list_id = int(sb.create_list(ACME, "A"))
    sb.set_package(ACME, False)

    async def scenario(client: httpx.AsyncClient) -> None:
        refused = (await client.post(api.MEMBER_PATH, json={"emailListId": list_id, "email": mail("a")})).json()
        assert refused["errorCode"] == api.ERROR_NO_PACKAGE
        assert (await client.get(api.EMAIL_LIST_PATH)).json()["isSuccess"]    # reads still work
        sb.set_package(ACME, True)
        assert (await client.post(api.MEMBER_PATH, json={"emailListId": list_id, "email": mail("a")})
                ).json()["isSuccess"]

    run(sb, scenario)


def test_a_simulated_campaign_is_queried_by_status_name_and_report_filters() -> None:
    sb = make(seed=5)
    list_id = int(sb.create_list(ACME, "Kampanya"))

    async def scenario(client: httpx.AsyncClient) -> None:
        for n in range(60):
            await client.post(api.MEMBER_PATH, json={"emailListId": list_id, "email": mail(f"k{n}")})
        sb.set_status(ACME, mail("k0"), "Unsubscribed")
        campaign_id = sb.simulate_campaign(ACME, name="Kasım", rates={"open": 0.5, "bounce": 0.1,
                                                                      "unsubscribe": 0.1})
        sb.simulate_campaign(ACME, name="Taslak", status="Draft")
        sent = (await client.get(api.CAMPAIGN_PATH, params={"status": "Sent"})).json()["data"]["items"]
        assert [c["name"] for c in sent] == ["Kasım"] and sent[0]["sendDate"]
        by_name = (await client.get(api.CAMPAIGN_PATH, params={"name": "tasl"})).json()["data"]["items"]
        assert [c["status"] for c in by_name] == ["Draft"]
        rows = sb.campaign_rows(ACME, campaign_id)
        assert len(rows) == 59 and mail("k0") not in {r["email"] for r in rows}    # unsubscribed: not sent
        params: dict[str, str | int] = {"campaignId": campaign_id, "pageSize": 500}
        opened = (await client.get(api.CAMPAIGN_REPORT_DETAIL_PATH, params={**params, "opened": "true"})
                  ).json()["data"]
        assert opened["totalCount"] == sum(r["opened"] for r in rows) > 0
        hard = (await client.get(api.CAMPAIGN_REPORT_DETAIL_PATH, params={**params, "status": "SoftBounced"})
                ).json()["data"]["items"]
        assert all(r["status"] == "SoftBounced" for r in hard)
        summary = (await client.get(api.CAMPAIGN_REPORT_PATH, params={"campaignId": campaign_id})).json()["data"]
        assert summary[0]["emailListId"] == list_id and summary[0]["total"] == 60
        missing = await client.get(api.CAMPAIGN_REPORT_PATH, params={"campaignId": "999999"})
        assert missing.status_code == 404 and missing.json()["errorCode"] == api.ERROR_CAMPAIGN_NOT_FOUND

    run(sb, scenario)
    unsubscribed = [r["email"] for r in sb.campaign_rows(ACME, sb.simulate_campaign(ACME, status="Draft"))]
    assert unsubscribed == []


def test_apply_then_drop_applies_the_write_and_token_calls_get_no_faults() -> None:
    sb = make(faults=FaultPlan(apply_then_drop_rate=1.0))

    async def main() -> None:
        async with httpx.AsyncClient(transport=sandbox_transport(sb.app), base_url=BASE) as client:
            token = await client.post(api.TOKEN_PATH, json={"clientName": CLIENT, "password": PASSWORD})
            client.headers["Authorization"] = f"{api.AUTH_SCHEME} {token.json()['tokenValue']}"
            with pytest.raises(httpx.RemoteProtocolError):     # applied: the token is identified
                await client.put(sb.identification_request(ACME)[0])
            with pytest.raises(httpx.RemoteProtocolError):
                await client.post(api.EMAIL_LIST_PATH, json={"name": "Kayıp cevap"})

    asyncio.run(main())
    assert list(sb.lists(ACME).values()) == ["Kayıp cevap"]
    assert sb.write_requests() == 1


def test_health_check_needs_no_token() -> None:
    sb = make()

    async def main() -> None:
        async with httpx.AsyncClient(transport=sandbox_transport(sb.app), base_url=BASE) as client:
            answer = await client.get(api.HEALTH_PATH)
        assert (answer.status_code, answer.text) == (200, api.HEALTHY)

    asyncio.run(main())


# --- dialects: every reading the client accepts is served (issue 22) ---------------------------------


def test_an_unknown_dialect_is_refused_naming_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="valid: document, bare, pascal, post-adds"):
        make(dialect="soap")
    assert DIALECTS[0] == "document"


def test_each_dialect_answers_in_its_own_reading() -> None:
    """document: the envelope and page objects; bare: arrays, ProblemDetails, lower-case statuses,
    ``id``; pascal: PascalCase keys, bare ids, the member object by e-mail; post-adds: id-keyed
    objects, ``listId``. Where the key goes (and, in bare, where the lists are: ``email-list``)
    differs too; a request in another reading finds no route."""
    seen: dict[str, dict[str, Any]] = {}
    for dialect in DIALECTS:
        sb = make(dialect=dialect)
        list_id = int(sb.create_list(ACME, "A"))

        async def scenario(client: httpx.AsyncClient, dialect: str = dialect, list_id: int = list_id) -> None:
            key, path = DIALECT_TABLE[dialect].list_key, DIALECT_TABLE[dialect].list_path
            made = await client.post(api.MEMBER_PATH, json={key: list_id, "email": mail("ayse")})
            again = await client.post(api.MEMBER_PATH, json={key: list_id, "email": mail("ayse")})
            lists = await client.get(path)
            other = await client.get(next(p for p in api.LIST_PATHS if p != path))
            assert other.status_code in (404, 405), (dialect, other.status_code)
            spelt = await client.get(api.MEMBER_PATH, params={key: list_id})
            assert spelt.status_code == 200
            if key != "emailListId":          # the other spelling is not read
                assert (await client.post(api.MEMBER_PATH, json={"emailListId": list_id, "email": mail("x")})
                        ).json()["errorCode"] == api.ERROR_VALIDATION
            one = await client.get(api.MEMBER_PATH, params={"email": mail("yok")})
            seen[dialect] = {"made": made.json(), "again": (again.status_code, again.json()),
                             "lists": lists.json(), "none": (one.status_code, one.json()),
                             "health": (await client.get(api.HEALTH_PATH)).text}

        async def main(sb: EuromsgSandbox = sb, scenario: Any = scenario) -> None:
            async with httpx.AsyncClient(transport=sandbox_transport(sb.app), base_url=BASE) as client:
                token = (await client.post(api.TOKEN_PATH, json={"clientName": CLIENT, "password": PASSWORD})).json()
                value = token.get("tokenValue") or (token.get("data") or {}).get("tokenValue") or (
                    token["Data"]["TokenValue"])
                client.headers["Authorization"] = f"{api.AUTH_SCHEME} {value}"
                for other in api.API_KEY_READINGS:       # only the dialect's reading has a route
                    if other != DIALECT_TABLE[sb.dialect].api_key_in:
                        wrong = api.IDENTIFICATION_PATHS[other].format(key=ACME)
                        answer = await client.put(wrong, params={api.API_KEY_PARAM: ACME} if other == "query" else {})
                        assert answer.status_code in (403, 404, 405), (sb.dialect, other, answer.status_code)
                path, query = sb.identification_request(ACME)
                assert (await client.put(path, params=query)).status_code in (200, 204)
                await scenario(client)

        asyncio.run(main())
    document, bare, pascal, adds = (seen[d] for d in DIALECTS)
    assert document["made"]["isSuccess"] and document["made"]["data"]["status"] == "Active"
    assert document["again"][1]["errorCode"] == api.ERROR_MEMBER_EXISTS
    assert document["lists"]["data"]["items"][0]["name"] == "A" and document["health"] == "Healthy"
    assert bare["made"]["status"] == "active" and "id" in bare["made"] and "memberId" not in bare["made"]
    assert bare["again"][0] == 409 and bare["again"][1]["status"] == 409          # ProblemDetails
    assert isinstance(bare["lists"], list) and bare["none"][0] == 404 and '"Healthy"' in bare["health"]
    assert isinstance(pascal["made"]["Data"], int) and pascal["again"][1]["ErrorCode"] == api.ERROR_MEMBER_EXISTS
    assert pascal["lists"]["Data"]["Items"][0]["Name"] == "A" and pascal["none"] == (200, {
        "IsSuccess": True, "ErrorCode": None, "Message": None, "Data": None})
    assert adds["again"][1]["isSuccess"] is True                                   # POST adds, not refused
    (key, row), = adds["lists"]["data"].items()
    assert key.isdigit() and row["name"] == "A" and "id" not in row
    assert "listIds" in adds["made"]["data"] and "emailListIds" not in adds["made"]["data"]


def test_post_adds_dialect_puts_an_existing_card_in_the_list_and_applies_the_status_sent() -> None:
    """The reading that makes a create dangerous: a POST that sends Active revives an unsubscribe."""
    sb = make(dialect="post-adds")
    first, second = int(sb.create_list(ACME, "A")), int(sb.create_list(ACME, "B"))

    async def scenario(client: httpx.AsyncClient) -> None:
        await client.post(api.MEMBER_PATH, json={"listId": first, "email": mail("ayse")})
        sb.set_status(ACME, mail("ayse"), "Unsubscribed")
        quiet = (await client.post(api.MEMBER_PATH, json={"listId": second, "email": mail("AYSE"),
                                                          "firstName": "Ayşe"})).json()["data"]
        assert (quiet["status"], quiet["listIds"], quiet["firstName"]) == ("Unsubscribed", [first, second], "Ayşe")
        loud = (await client.post(api.MEMBER_PATH, json={"listId": second, "email": mail("ayse"),
                                                         "status": "Active"})).json()["data"]
        assert loud["status"] == "Active"

    run(sb, scenario)


def test_a_create_takes_every_list_of_the_member() -> None:
    sb = make()
    a, b = int(sb.create_list(ACME, "A")), int(sb.create_list(ACME, "B"))

    async def scenario(client: httpx.AsyncClient) -> None:
        made = (await client.post(api.MEMBER_PATH, json={"emailListId": a, "emailListIds": [a, b],
                                                         "email": mail("iki")})).json()["data"]
        assert made["emailListIds"] == [a, b] and made["status"] == "Active"
        bad = (await client.post(api.MEMBER_PATH, json={"emailListId": a, "emailListIds": [99999],
                                                        "email": mail("uc")})).json()
        assert bad["errorCode"] == api.ERROR_LIST_NOT_FOUND

    run(sb, scenario)
