"""The Postacell sandbox behaves as the document and ``sync.providers.postacell.api`` say."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from sync.providers.postacell import api
from sync.providers.postacell.sandbox import CAMPAIGN_LINKS
from sync.sandbox import SANDBOXES, FaultPlan, PostacellSandbox, sandbox_transport, serve_in_thread

BASE_URL = "http://sandbox/api/v1/"


def mail(local: str, domain: str = "example.com") -> str:
    """An e-mail address, built so that none is spelled out in the source."""
    return "@".join((local, domain))


OTHER, AYSE = mail("ops", "globex.com.tr"), mail("ayse")
ACCOUNTS = {"acme": "s3cret", OTHER: "hunter2"}


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_sandbox(**options: Any) -> PostacellSandbox:
    return PostacellSandbox(accounts=ACCOUNTS, **options)


@asynccontextmanager
async def connect(sb: PostacellSandbox, account: str | None = "acme") -> AsyncIterator[httpx.AsyncClient]:
    """A client on the in-process sandbox, logged in as ``account`` (None: anonymous)."""
    async with httpx.AsyncClient(transport=sandbox_transport(sb.app), base_url=BASE_URL,
                                 headers={"Accept": "application/json"}) as client:
        if account:
            answer = await client.post(api.TOKEN_PATH, json={"username": account, "password": ACCOUNTS[account]})
            client.headers["Authorization"] = f"{api.AUTH_SCHEME} {answer.json()['access']}"
        yield client


def run(sb: PostacellSandbox, scenario: Callable[[httpx.AsyncClient], Awaitable[None]],
        account: str | None = "acme") -> None:
    async def main() -> None:
        async with connect(sb, account) as client:
            await scenario(client)
    asyncio.run(main())


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


async def create_list(client: httpx.AsyncClient, title: str) -> str:
    answer = await client.post(api.LIST_PATH, json={"title": title})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


async def upsert(client: httpx.AsyncClient, email: str, lists: list[str], status: str = "active",
                 **extra: Any) -> httpx.Response:
    return await client.post(api.SUBSCRIBERS_PATH,
                             json={"email": email, "status": status, "lists": lists, "update": True, **extra})


# --- tokens --------------------------------------------------------------------------------


def test_token_call_returns_signed_access_and_refresh_jwts_with_lifetimes() -> None:
    clock = FakeClock()
    sb = make_sandbox(clock=clock)

    async def scenario(client: httpx.AsyncClient) -> None:
        answer = await client.post(api.TOKEN_PATH, json={"username": "acme", "password": "s3cret"})
        assert answer.status_code == 200
        access, refresh = claims(answer.json()["access"]), claims(answer.json()["refresh"])
        assert (access["token_type"], access["user"]) == ("access", "acme")
        assert access["exp"] == int(clock.now) + api.ACCESS_TOKEN_LIFETIME_S
        assert (refresh["token_type"], refresh["exp"]) == ("refresh", int(clock.now) + api.REFRESH_TOKEN_LIFETIME_S)
        assert answer.json()["access"].count(".") == 2

    run(sb, scenario, account=None)


def test_token_call_accepts_email_as_login_and_answers_401_to_a_wrong_password() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        ok = await client.post(api.TOKEN_PATH, json={"email": OTHER, "password": "hunter2"})
        assert ok.status_code == 200
        assert claims(ok.json()["access"])["user"] == OTHER
        wrong = await client.post(api.TOKEN_PATH, json={"username": "acme", "password": "nope"})
        assert wrong.status_code == 401
        assert "detail" in wrong.json()
        missing = await client.post(api.TOKEN_PATH, json={"username": "acme"})
        assert missing.status_code == 400
        assert missing.json() == {"password": ["This field is required."]}

    run(make_sandbox(), scenario, account=None)


def test_api_call_without_token_is_403_and_with_a_bad_token_is_401_token_not_valid() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        assert (await client.get(api.LIST_FILTER_PATH)).status_code == 403
        tokens = (await client.post(api.TOKEN_PATH, json={"username": "acme", "password": "s3cret"})).json()
        header, payload, _ = tokens["access"].split(".")
        for bad in (f"{header}.{payload}.forged", "not-a-jwt", tokens["refresh"]):
            answer = await client.get(api.LIST_FILTER_PATH, headers={"Authorization": f"Bearer {bad}"})
            assert answer.status_code == 401
            assert answer.json()["code"] == "token_not_valid"

    run(make_sandbox(), scenario, account=None)


def test_expired_access_token_is_401_and_refresh_gives_a_working_one_until_refresh_expires() -> None:
    clock = FakeClock()
    sb = make_sandbox(clock=clock)

    async def scenario(client: httpx.AsyncClient) -> None:
        tokens = (await client.post(api.TOKEN_PATH, json={"username": "acme", "password": "s3cret"})).json()
        clock.now += api.ACCESS_TOKEN_LIFETIME_S
        expired = await client.get(api.LIST_FILTER_PATH, headers={"Authorization": f"Bearer {tokens['access']}"})
        assert expired.status_code == 401
        assert expired.json()["code"] == "token_not_valid"
        refreshed = await client.post(api.TOKEN_REFRESH_PATH, json={"refresh": tokens["refresh"]})
        assert refreshed.status_code == 200
        fresh = refreshed.json()["access"]
        assert (await client.get(api.LIST_FILTER_PATH, headers={"Authorization": f"Bearer {fresh}"})).status_code == 200
        clock.now += api.REFRESH_TOKEN_LIFETIME_S
        late = await client.post(api.TOKEN_REFRESH_PATH, json={"refresh": tokens["refresh"]})
        assert late.status_code == 401
        assert late.json()["code"] == "token_not_valid"

    run(sb, scenario, account=None)


def test_accounts_keep_separate_lists_and_subscribers() -> None:
    sb = make_sandbox()

    async def scenario() -> None:
        async with connect(sb, "acme") as acme, connect(sb, OTHER) as other:
            list_id = await create_list(acme, "Müşteriler")
            await upsert(acme, mail("ali"), [list_id])
            assert (await other.get(api.LIST_FILTER_PATH)).json()["count"] == 0
            assert (await other.get(api.LIST_ITEM_PATH.format(id=list_id))).status_code == 404
            assert (await other.get(api.SUBSCRIBERS_FILTER_PATH)).json()["count"] == 0
            assert (await acme.get(api.SUBSCRIBERS_FILTER_PATH)).json()["count"] == 1

    asyncio.run(scenario())


# --- lists ---------------------------------------------------------------------------------


def test_list_crud_round_trip_with_valid_counting_active_subscribers_and_status_counter() -> None:
    sb = make_sandbox()

    async def scenario(client: httpx.AsyncClient) -> None:
        list_id = await create_list(client, "Müşteri Listesi")
        for email, status in [(mail("a"), "active"), (mail("b"), "active"), (mail("c"), "unsubscribed")]:
            assert (await upsert(client, email, [list_id], status)).status_code == 201
        item = (await client.get(api.LIST_ITEM_PATH.format(id=list_id))).json()
        assert (item["title"], item["valid"], item["user_id"]) == ("Müşteri Listesi", 2, 1)
        counter = (await client.get(api.LIST_COUNTER_PATH.format(id=list_id))).json()
        assert counter == [{"_id": "active", "count": 2}, {"_id": "unsubscribed", "count": 1}]
        renamed = await client.patch(api.LIST_ITEM_PATH.format(id=list_id), json={"title": "Yeni Ad"})
        assert (renamed.status_code, renamed.json()["title"]) == (200, "Yeni Ad")
        assert (await client.delete(api.LIST_ITEM_PATH.format(id=list_id))).status_code == 204
        assert (await client.get(api.LIST_ITEM_PATH.format(id=list_id))).status_code == 404

    run(sb, scenario)


def test_list_counts_kept_from_changes_agree_with_a_count_from_scratch_after_every_kind_of_change() -> None:
    """``valid`` and the counter are kept from the changed subscribers once counted (O(changes));
    after each kind of change they must equal a count made from every subscriber."""
    sb = make_sandbox(job_polls_until_done=0)

    async def scenario(client: httpx.AsyncClient) -> None:
        one, two = await create_list(client, "Bir"), await create_list(client, "İki")

        async def counts() -> dict[str, Any]:
            seen = {}
            for list_id in (one, two):
                item = (await client.get(api.LIST_ITEM_PATH.format(id=list_id))).json()
                counter = (await client.get(api.LIST_COUNTER_PATH.format(id=list_id))).json()
                seen[list_id] = (item["valid"], counter)
            return seen

        async def agree() -> dict[str, Any]:
            kept = await counts()
            sb._accounts["acme"].touch()        # forget the kept counts: count from every subscriber
            assert await counts() == kept
            return kept

        sb.load_subscribers("acme", [(mail(f"filler{index}"), "active") for index in range(40)])   # in no list
        for index in range(4):
            await upsert(client, mail(f"m{index}"), [one] if index % 2 else [one, two])
        assert (await agree())[one] == (4, [{"_id": "active", "count": 4}])
        await upsert(client, mail("m0"), [], "unsubscribed")                  # status change, lists kept
        sub_id = (await upsert(client, mail("m1"), [two])).json()["id"]        # a list added
        await client.patch(api.SUBSCRIBER_ITEM_PATH.format(id=sub_id), json={"status": "active", "lists": [one]})
        gone = (await upsert(client, mail("m2"), [])).json()["id"]
        assert (await client.delete(api.SUBSCRIBER_ITEM_PATH.format(id=gone))).status_code == 204
        await client.post(api.BULK_IMPORT_PATH, json={"lists": [two], "subscribers": [
            {"email": mail("m3"), "status": "hard_bounce", "update": True}, {"email": mail("n1"), "status": "active"}]})
        sb.set_status("acme", mail("n1"), "spam_complaint")
        acc = sb._accounts["acme"]   # kept from the changes, not counted again: the job's when it ended,
        #                              the panel change since at the next read
        assert acc.list_counts is not None and [sub.email for sub, _ in acc.dirty.values()] == [mail("n1")]
        kept = await agree()
        assert kept[one] == (1, [{"_id": "active", "count": 1}, {"_id": "unsubscribed", "count": 1},
                                 {"_id": "hard_bounce", "count": 1}])
        assert kept[two][0] == 0
        sb.delete_list("acme", two)
        assert (await client.get(api.LIST_COUNTER_PATH.format(id=one))).json() == kept[one][1]

    run(sb, scenario)


def test_list_create_and_rename_without_title_are_400_with_drf_field_errors() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        missing = await client.post(api.LIST_PATH, json={})
        assert (missing.status_code, missing.json()) == (400, {"title": ["This field is required."]})
        list_id = await create_list(client, "A")
        blank = await client.patch(api.LIST_ITEM_PATH.format(id=list_id), json={"title": "  "})
        assert (blank.status_code, blank.json()) == (400, {"title": ["This field may not be blank."]})
        form = await client.post(api.LIST_PATH, data={"title": "Form ile"})
        assert (form.status_code, form.json()["title"]) == (201, "Form ile")

    run(make_sandbox(), scenario)


def test_list_filter_pages_by_page_size_with_absolute_next_and_previous_links() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        for n in range(api.PAGE_SIZE + 3):
            await create_list(client, f"Liste {n:03}")
        first = (await client.get(api.LIST_FILTER_PATH, params={"ordering": "title"})).json()
        assert (first["count"], len(first["results"]), first["previous"]) == (api.PAGE_SIZE + 3, api.PAGE_SIZE, None)
        assert first["next"] == f"{BASE_URL}{api.LIST_FILTER_PATH}?ordering=title&page=2"
        second = (await client.get(first["next"])).json()
        assert [row["title"] for row in second["results"]] == [f"Liste {n:03}" for n in range(50, 53)]
        assert second["next"] is None
        assert second["previous"] == f"{BASE_URL}{api.LIST_FILTER_PATH}?ordering=title"
        assert (await client.get(api.LIST_FILTER_PATH, params={"page": 3})).status_code == 404

    run(make_sandbox(), scenario)


def test_list_filter_orders_by_title_and_create_date_both_ways() -> None:
    clock = FakeClock()

    async def scenario(client: httpx.AsyncClient) -> None:
        for title in ("Bravo", "Alfa", "Charlie"):
            await create_list(client, title)
            clock.now += 10

        async def titles(ordering: str) -> list[str]:
            page = (await client.get(api.LIST_FILTER_PATH, params={"ordering": ordering})).json()
            return [row["title"] for row in page["results"]]

        assert await titles("title") == ["Alfa", "Bravo", "Charlie"]
        assert await titles("-title") == ["Charlie", "Bravo", "Alfa"]
        assert await titles("create_date") == ["Bravo", "Alfa", "Charlie"]
        assert await titles("-create_date") == ["Charlie", "Alfa", "Bravo"]

    run(make_sandbox(clock=clock), scenario)


def test_list_filter_ignores_a_title_filter_the_document_does_not_offer() -> None:
    """``list-filter`` documents only ordering and page; an unknown parameter is ignored (as DRF
    does), so a client cannot rely on a server-side title search."""
    async def scenario(client: httpx.AsyncClient) -> None:
        for title in ("Yurt Dışı Genel Müdürler", "İstanbul Şubesi", "Pazarlamacılar"):
            await create_list(client, title)
        page = (await client.get(api.LIST_FILTER_PATH, params={"title": "genel"})).json()
        assert page["count"] == 3

    run(make_sandbox(), scenario)


def test_subscribers_filter_ignores_the_undocumented_update_date_ordering() -> None:
    """Only email and create_date orderings are documented; ``-update_date`` falls back to the
    default order instead of being honoured (the defect that hid a client's wrong guess)."""
    clock = FakeClock()

    async def scenario(client: httpx.AsyncClient) -> None:
        list_id = await create_list(client, "Liste")
        for n in range(3):
            await upsert(client, f"u{n}@ornek.com.tr", [list_id])
            clock.now += 10
        first = (await client.get(api.SUBSCRIBERS_FILTER_PATH, params={"email": "u0@"})).json()["results"][0]
        await client.patch(api.SUBSCRIBER_ITEM_PATH.format(id=first["id"]), json={"status": "unsubscribed"})
        rows = (await client.get(api.SUBSCRIBERS_FILTER_PATH, params={"ordering": "-update_date"})).json()["results"]
        assert [row["email"] for row in rows] == ["u0@ornek.com.tr", "u1@ornek.com.tr", "u2@ornek.com.tr"]

    run(make_sandbox(clock=clock), scenario)


def test_json_only_endpoints_refuse_an_accept_header_other_than_json() -> None:
    """The document: POST subscribers and subscribers/json take only ``Accept: application/json``."""
    async def scenario(client: httpx.AsyncClient) -> None:
        list_id = await create_list(client, "Liste")
        body = {"email": "a@ornek.com.tr", "status": "active", "lists": [list_id]}
        for path, payload in ((api.SUBSCRIBERS_PATH, body),
                              (api.BULK_IMPORT_PATH, {"lists": [list_id], "subscribers": [body]})):
            refused = await client.post(path, json=payload, headers={"Accept": "*/*"})
            assert refused.status_code == 406, path
        assert (await client.post(api.SUBSCRIBERS_PATH, json=body)).status_code == 201

    run(make_sandbox(), scenario)


# --- subscribers ---------------------------------------------------------------------------


def test_subscriber_upsert_answers_201_then_200_and_update_false_leaves_it_unchanged() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        list_a, list_b = await create_list(client, "A"), await create_list(client, "B")
        created = await upsert(client, AYSE, [list_a], first_name="Ayşe")
        assert created.status_code == 201
        assert created.json()["lists"] == [list_a]
        updated = await upsert(client, AYSE, [list_b], last_name="Yılmaz")
        assert updated.status_code == 200
        assert updated.json()["id"] == created.json()["id"]
        assert updated.json()["lists"] == [list_a, list_b]  # POST adds lists
        assert (updated.json()["first_name"], updated.json()["last_name"]) == ("Ayşe", "Yılmaz")
        kept = await client.post(api.SUBSCRIBERS_PATH, json={
            "email": AYSE, "status": "unsubscribed", "first_name": "X", "update": False})
        assert kept.status_code == 200
        assert (kept.json()["status"], kept.json()["first_name"]) == ("active", "Ayşe")

    run(make_sandbox(), scenario)


def test_subscriber_post_rejects_bad_email_status_and_unknown_list_with_drf_errors() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        answer = await client.post(api.SUBSCRIBERS_PATH, json={
            "email": "not-an-email", "status": "gone", "lists": ["5fa29d777af8092595bcbac7"]})
        assert answer.status_code == 400
        assert answer.json() == {
            "email": ["Enter a valid email address."],
            "status": ['"gone" is not a valid choice.'],
            "lists": ['Invalid pk "5fa29d777af8092595bcbac7" - object does not exist.'],
        }
        missing = await client.post(api.SUBSCRIBERS_PATH, json={})
        assert set(missing.json()) == {"email", "status"}
        form = await client.post(api.SUBSCRIBERS_PATH, data={"email": mail("form"), "status": "active"})
        assert form.status_code == 415  # documented: JSON only
        assert (await client.get(api.SUBSCRIBERS_FILTER_PATH)).json()["count"] == 0

    run(make_sandbox(), scenario)


def test_subscriber_patch_replaces_the_list_set_and_requires_status() -> None:
    clock = FakeClock()

    async def scenario(client: httpx.AsyncClient) -> None:
        list_a, list_b, list_c = [await create_list(client, title) for title in "ABC"]
        sub = (await upsert(client, mail("patch"), [list_a, list_b])).json()
        item = api.SUBSCRIBER_ITEM_PATH.format(id=sub["id"])
        without_status = await client.patch(item, json={"lists": [list_c]})
        assert (without_status.status_code, without_status.json()) == (400, {"status": ["This field is required."]})
        clock.now += 60
        patched = await client.patch(item, json={"status": "active", "lists": [list_c], "phone": "+905551112233"})
        assert patched.status_code == 200
        assert patched.json()["lists"] == [list_c]
        assert patched.json()["phone"] == "+905551112233"
        assert patched.json()["update_date"] > sub["update_date"]
        unknown = await client.patch(item, json={"status": "active", "lists": ["nope"]})
        assert unknown.status_code == 400
        assert (await client.get(item)).json()["lists"] == [{"id": list_c, "title": "C"}]

    run(make_sandbox(clock=clock), scenario)


def test_subscriber_filter_by_email_status_and_list_with_documented_orderings() -> None:
    clock = FakeClock()
    sb = make_sandbox(clock=clock)
    ali, veli, zeynep = mail("ali", "gmail.com"), mail("veli", "gmail.com"), mail("zeynep", "yahoo.com")

    async def scenario(client: httpx.AsyncClient) -> None:
        list_a, list_b = await create_list(client, "A"), await create_list(client, "B")
        for email, lists, status in [(ali, [list_a], "active"), (veli, [list_a, list_b], "spam_complaint"),
                                     (zeynep, [list_b], "spam_complaint")]:
            await upsert(client, email, lists, status)
            clock.now += 1
        sb.set_status("acme", ali, "unsubscribed")

        async def emails(**params: str) -> list[str]:
            page = (await client.get(api.SUBSCRIBERS_FILTER_PATH, params=params)).json()
            return [row["email"] for row in page["results"]]

        assert await emails(email="GMAIL.com") == [ali, veli]
        assert await emails(status="spam_complaint", lists=list_b) == [veli, zeynep]
        assert await emails(email="gmail", status="spam_complaint") == [veli]
        assert await emails(ordering="-update_date") == [ali, veli, zeynep]   # undocumented: ignored
        assert await emails(ordering="-create_date") == [zeynep, veli, ali]
        assert await emails(ordering="-email") == [zeynep, veli, ali]
        row = (await client.get(api.SUBSCRIBERS_FILTER_PATH)).json()["results"][0]
        assert set(row) == {"id", "email", "create_date", "update_date", "status", "verify"}
        assert not row["update_date"].endswith("Z")  # as in the document's example

    run(sb, scenario)


def test_fields_crud_and_subscriber_detail_shows_list_titles_and_field_definitions() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        school = await client.post(api.FIELDS_PATH, json={"title": "Okul Adı", "type": "text"})
        assert (school.status_code, school.json()["merge_tag"]) == (201, "okul_adi")
        age = (await client.post(api.FIELDS_PATH, json={"title": "Age", "type": "number"})).json()
        bad = await client.post(api.FIELDS_PATH, json={"title": "X", "type": "color"})
        assert bad.status_code == 400
        list_id = await create_list(client, "Öğrenciler")
        sub = (await upsert(client, mail("ogrenci"), [list_id], fields=[
            {"field": school.json()["id"], "value": "Boğaziçi"}, {"field": age["id"], "value": 29}])).json()
        detail = (await client.get(api.SUBSCRIBER_ITEM_PATH.format(id=sub["id"]))).json()
        assert detail["lists"] == [{"id": list_id, "title": "Öğrenciler"}]
        assert detail["fields"] == [{"value": "Boğaziçi", "field": school.json()},
                                    {"value": "29", "field": age}]
        field_item = api.FIELD_ITEM_PATH.format(id=age["id"])
        assert (await client.patch(field_item, json={"title": "Yaş"})).json()["title"] == "Yaş"
        assert (await client.get(field_item)).json()["merge_tag"] == "age"
        assert (await client.delete(field_item)).status_code == 204
        assert [f["title"] for f in (await client.get(api.FIELDS_PATH)).json()] == ["Okul Adı"]
        detail = (await client.get(api.SUBSCRIBER_ITEM_PATH.format(id=sub["id"]))).json()
        assert [value["value"] for value in detail["fields"]] == ["Boğaziçi"]

    run(make_sandbox(), scenario)


def test_deleting_a_list_keeps_its_subscribers_and_deleting_a_subscriber_is_204() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        list_id = await create_list(client, "Gidecek")
        sub = (await upsert(client, mail("kalan"), [list_id])).json()
        await client.delete(api.LIST_ITEM_PATH.format(id=list_id))
        item = api.SUBSCRIBER_ITEM_PATH.format(id=sub["id"])
        kept = await client.get(item)
        assert (kept.status_code, kept.json()["lists"]) == (200, [])
        assert (await client.delete(item)).status_code == 204
        assert (await client.get(item)).status_code == 404
        assert (await upsert(client, mail("kalan"), [])).status_code == 201

    run(make_sandbox(), scenario)


# --- bulk import ---------------------------------------------------------------------------


def test_bulk_import_rejects_a_bad_envelope_with_400_and_queues_nothing() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        list_id = await create_list(client, "A")
        row = {"email": mail("x"), "status": "active"}
        for envelope, field_name in [({"subscribers": [row]}, "lists"),
                                     ({"lists": [], "subscribers": [row]}, "lists"),
                                     ({"lists": ["unknown"], "subscribers": [row]}, "lists"),
                                     ({"lists": [list_id]}, "subscribers"),
                                     ({"lists": [list_id], "subscribers": []}, "subscribers")]:
            answer = await client.post(api.BULK_IMPORT_PATH, json=envelope)
            assert answer.status_code == 400, envelope
            assert field_name in answer.json()
        too_many = [row] * (api.BULK_MAX_SUBSCRIBERS + 1)
        assert (await client.post(api.BULK_IMPORT_PATH, json={"lists": [list_id], "subscribers": too_many})
                ).status_code == 400

    sb = make_sandbox()
    run(sb, scenario)
    assert sb.process_pending_jobs() == 0


def test_bulk_import_is_applied_on_the_nth_poll_and_reports_bad_rows_without_failing() -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        list_id = await create_list(client, "Toplu")
        await upsert(client, mail("ahmet"), [], first_name="Eski")
        queued = await client.post(api.BULK_IMPORT_PATH, json={"lists": [list_id], "subscribers": [
            {"email": mail("yeni"), "status": "active", "first_name": "Yeni"},
            {"email": mail("ahmet"), "status": "active", "first_name": "Ahmet", "update": True},
            {"email": "bozuk-adres", "status": "active"},
            {"email": mail("kayip"), "status": "kayıp"},
        ]})
        assert queued.status_code == 202
        assert queued.json() == {"id": queued.json()["id"], "status": "queued", "detail": "İşlem sıraya alındı."}
        job_path = api.BULK_JOB_PATH.format(id=queued.json()["id"])
        first = (await client.get(job_path)).json()
        assert (first["status"], first["results"], first["total"]) == ("processing", [], 4)
        assert (await client.get(api.SUBSCRIBERS_FILTER_PATH, params={"lists": list_id})).json()["count"] == 0
        done = (await client.get(job_path)).json()
        assert done["status"] in api.BULK_JOB_FINAL_STATES
        assert (done["created"], done["updated"], done["failed_count"]) == (1, 1, 2)
        results = {row["email"]: row for row in done["results"]}
        assert results[mail("yeni")]["result"] == "created"
        assert results[mail("ahmet")]["result"] == "updated"
        assert results["bozuk-adres"] == {"email": "bozuk-adres", "id": None, "result": "error",
                                          "detail": "email: Enter a valid email address."}
        assert "status" in results[mail("kayip")]["detail"]
        members = (await client.get(api.SUBSCRIBERS_FILTER_PATH, params={"lists": list_id})).json()
        assert sorted(row["email"] for row in members["results"]) == [mail("ahmet"), mail("yeni")]
        assert (await client.get(api.BULK_JOB_PATH.format(id=999))).status_code == 404

    run(make_sandbox(job_polls_until_done=2), scenario)


def test_bulk_import_with_zero_polls_applies_at_once_and_process_pending_jobs_applies_the_rest() -> None:
    immediate, deferred = make_sandbox(job_polls_until_done=0), make_sandbox(job_polls_until_done=5)

    async def scenario(client: httpx.AsyncClient) -> None:
        list_id = await create_list(client, "A")
        answer = await client.post(api.BULK_IMPORT_PATH, json={
            "lists": [list_id], "subscribers": [{"email": mail("toplu"), "status": "active"}]})
        assert answer.json()["status"] == "queued"

    run(immediate, scenario)
    assert immediate.find_subscriber("acme", mail("toplu")) is not None
    run(deferred, scenario)
    assert deferred.find_subscriber("acme", mail("toplu")) is None
    assert deferred.process_pending_jobs() == 1
    found = deferred.find_subscriber("acme", mail("toplu"))
    assert found is not None
    assert found["lists"][0]["title"] == "A"


# --- campaigns and reports -------------------------------------------------------------------


def seeded_campaign(seed: int, subscribers: int = 300) -> tuple[PostacellSandbox, str, str]:
    """A sandbox with one list of active subscribers and a simulated campaign to it."""
    sb = make_sandbox(seed=seed, clock=FakeClock())
    list_ids: list[str] = []

    async def scenario(client: httpx.AsyncClient) -> None:
        list_ids.append(await create_list(client, "Kampanya"))
        rows = [{"email": f"uye{n:03}@example.com", "status": "active"} for n in range(subscribers)]
        await client.post(api.BULK_IMPORT_PATH, json={"lists": list_ids, "subscribers": rows})

    run(sb, scenario)
    sb.process_pending_jobs()
    return sb, list_ids[0], sb.simulate_campaign("acme", subject="Yaz İndirimi")


def test_campaign_simulation_is_deterministic_by_seed_and_changes_subscriber_statuses() -> None:
    sb, _, cmp_id = seeded_campaign(seed=7)
    again, _, again_id = seeded_campaign(seed=7)
    other, _, other_id = seeded_campaign(seed=8)
    report = {rule: sb.campaign_report("acme", cmp_id, rule) for rule in api.REPORT_RULES}
    assert report == {rule: again.campaign_report("acme", again_id, rule) for rule in api.REPORT_RULES}
    assert report["opened"] != other.campaign_report("acme", other_id, "opened")
    assert len(report["subscribers"]) == 300
    assert 80 <= len(report["opened"]) <= 160  # ~40 %
    assert report["clicked"]
    assert {row["link"] for row in report["clicked"]} <= set(CAMPAIGN_LINKS)
    assert {row["email"] for row in report["clicked"]} <= {row["email"] for row in report["opened"]}
    assert {row["bounce_type"] for row in report["bounced"]} <= {"HARDBOUNCE", "SOFTBOUNCE"}
    expected = {"unsubscribed": "unsubscribed", "complaint": "spam_complaint"}
    for rule, status in expected.items():
        for row in report[rule]:
            assert (sb.find_subscriber("acme", row["email"]) or {})["status"] == status
    for row in report["bounced"]:
        status = "hard_bounce" if row["bounce_type"] == "HARDBOUNCE" else "soft_bounce"
        assert (sb.find_subscriber("acme", row["email"]) or {})["status"] == status
    changed = len(report["unsubscribed"]) + len(report["complaint"]) + len(report["bounced"])
    assert changed > 0


def test_campaign_reaches_only_active_subscribers_of_the_chosen_lists() -> None:
    clock = FakeClock()
    sb = make_sandbox(clock=clock)
    ids: dict[str, str] = {}

    async def scenario(client: httpx.AsyncClient) -> None:
        ids["a"], ids["b"] = await create_list(client, "A"), await create_list(client, "B")
        await upsert(client, mail("aktif"), [ids["a"]])
        await upsert(client, mail("cikmis"), [ids["a"]], status="unsubscribed")
        await upsert(client, mail("baska"), [ids["b"]])

    run(sb, scenario)
    clock.now += 3600
    cmp_id = sb.simulate_campaign("acme", [ids["a"]], rates={"bounce": 0, "complaint": 0, "unsubscribe": 1})
    assert [row["email"] for row in sb.campaign_report("acme", cmp_id, "subscribers")] == [mail("aktif")]
    found = sb.find_subscriber("acme", mail("aktif")) or {}
    assert found["status"] == "unsubscribed"
    assert found["update_date"] > found["create_date"]
    draft = sb.simulate_campaign("acme", status="draft")
    assert sb.campaign_report("acme", draft, "subscribers") == []


def test_cmp_filter_pages_campaigns_newest_first_and_orders_by_subject() -> None:
    clock = FakeClock()
    sb = make_sandbox(clock=clock)
    for subject in ("Bahar", "Ara", "Cuma"):
        sb.simulate_campaign("acme", subject=subject)
        clock.now += 60

    async def scenario(client: httpx.AsyncClient) -> None:
        newest = (await client.get(api.CAMPAIGN_FILTER_PATH)).json()
        assert newest["count"] == 3
        assert [row["subject"] for row in newest["results"]] == ["Cuma", "Ara", "Bahar"]
        assert newest["results"][0]["status"] == api.CAMPAIGN_SENT_STATUS
        by_subject = (await client.get(api.CAMPAIGN_FILTER_PATH, params={"ordering": "subject"})).json()
        assert [row["subject"] for row in by_subject["results"]] == ["Ara", "Bahar", "Cuma"]

    run(sb, scenario)


def test_report_export_is_listed_after_n_polls_and_its_csv_downloads_without_auth() -> None:
    sb, _, cmp_id = seeded_campaign(seed=3, subscribers=120)
    sb.export_polls_until_ready = 2

    async def scenario(client: httpx.AsyncClient) -> None:
        queued = await client.post(api.REPORT_EXPORT_PATH, json={"id": cmp_id, "rule": "opened"})
        assert queued.status_code == 202
        assert queued.json() == {"detail": {"id": cmp_id, "user_id": 1, "rule": "opened"}}
        listing = {"cmp_id": cmp_id, "ordering": "-create_date"}
        assert (await client.get(api.REPORT_EXPORT_FILTER_PATH, params=listing)).json()["count"] == 0
        ready = (await client.get(api.REPORT_EXPORT_FILTER_PATH, params=listing)).json()
        assert ready["count"] == 1
        export = ready["results"][0]
        assert (export["cmp_id"], export["rule"]) == (cmp_id, "opened")
        assert export["file"].startswith("http://sandbox/media/")
        async with httpx.AsyncClient(transport=sandbox_transport(sb.app)) as anonymous:
            download = await anonymous.get(export["file"])
        assert download.status_code == 200
        assert download.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(download.content.decode("utf-8"))))
        assert list(rows[0]) == list(api.REPORT_CSV_COLUMNS["opened"])
        assert rows == sb.campaign_report("acme", cmp_id, "opened")

    run(sb, scenario)


def test_report_export_rejects_an_unknown_campaign_or_rule_with_400() -> None:
    sb = make_sandbox()
    cmp_id = sb.simulate_campaign("acme")

    async def scenario(client: httpx.AsyncClient) -> None:
        unknown = await client.post(api.REPORT_EXPORT_PATH, json={"id": "5fa29d777af8092595bcbac7", "rule": "opened"})
        assert (unknown.status_code, list(unknown.json())) == (400, ["id"])
        bad_rule = await client.post(api.REPORT_EXPORT_PATH, data={"id": cmp_id, "rule": "everything"})
        assert (bad_rule.status_code, list(bad_rule.json())) == (400, ["rule"])

    run(sb, scenario)


# --- faults --------------------------------------------------------------------------------


def test_fault_plan_from_spec_parses_settings_and_rejects_unknown_or_bad_ones() -> None:
    plan = FaultPlan.from_spec("error_rate=0.1, rate_limit_every=7,seed=3,retry_after_s=0.5")
    assert plan == FaultPlan(seed=3, error_rate=0.1, rate_limit_every=7, retry_after_s=0.5)
    assert FaultPlan.from_spec("") == FaultPlan()
    for spec in ("nonsense=1", "error_rate", "seed=x", "error_rate=2"):
        with pytest.raises(ValueError):
            FaultPlan.from_spec(spec)


def statuses_under(plan: FaultPlan, calls: int = 40) -> list[int]:
    """The status of ``calls`` list-filter calls under ``plan`` (0 for a dropped call)."""
    sb = make_sandbox(faults=plan)
    statuses: list[int] = []

    async def scenario(client: httpx.AsyncClient) -> None:
        for _ in range(calls):
            try:
                statuses.append((await client.get(api.LIST_FILTER_PATH)).status_code)
            except httpx.RemoteProtocolError:
                statuses.append(0)

    run(sb, scenario)
    return statuses


def test_error_rate_answers_5xx_in_the_same_places_for_the_same_seed() -> None:
    plan = FaultPlan(seed=3, error_rate=0.3)
    statuses = statuses_under(plan)
    assert statuses == statuses_under(plan)
    assert statuses != statuses_under(FaultPlan(seed=4, error_rate=0.3))
    assert set(statuses) <= {200, 500, 502, 503}
    assert 4 <= sum(status >= 500 for status in statuses) <= 20


def test_rate_limit_answers_every_nth_api_call_429_with_retry_after() -> None:
    sb = make_sandbox(faults=FaultPlan(rate_limit_every=3, retry_after_s=2))

    async def scenario(client: httpx.AsyncClient) -> None:
        answers = [await client.get(api.LIST_FILTER_PATH) for _ in range(6)]
        assert [answer.status_code for answer in answers] == [200, 200, 429, 200, 200, 429]
        assert answers[2].headers["Retry-After"] == "2"
        assert "throttled" in answers[2].json()["detail"]

    run(sb, scenario)


def test_dropped_call_raises_remote_protocol_error_deterministically_and_is_logged_unanswered() -> None:
    plan = FaultPlan(seed=11, drop_rate=0.25)
    statuses = statuses_under(plan)
    assert statuses == statuses_under(plan)
    assert 0 in statuses
    assert set(statuses) == {0, 200}
    sb = make_sandbox(faults=FaultPlan(drop_rate=1.0))

    async def scenario(client: httpx.AsyncClient) -> None:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await client.post(api.LIST_PATH, json={"title": "never"})

    run(sb, scenario)
    assert sb.request_log[-1] == ("POST", "/api/v1/" + api.LIST_PATH, 0)


def test_access_token_stops_working_after_n_authenticated_calls() -> None:
    sb = make_sandbox(faults=FaultPlan(token_expire_after=2))

    async def scenario(client: httpx.AsyncClient) -> None:
        statuses = [(await client.get(api.LIST_FILTER_PATH)).status_code for _ in range(3)]
        assert statuses == [200, 200, 401]
        tokens = (await client.post(api.TOKEN_PATH, json={"username": "acme", "password": "s3cret"})).json()
        fresh = {"Authorization": f"Bearer {tokens['access']}"}
        assert (await client.get(api.LIST_FILTER_PATH, headers=fresh)).status_code == 200

    run(sb, scenario)


def test_latency_delays_every_api_call() -> None:
    sb = make_sandbox(faults=FaultPlan(latency_s=0.05))

    async def scenario(client: httpx.AsyncClient) -> None:
        started = time.monotonic()
        for _ in range(3):
            await client.get(api.LIST_FILTER_PATH)
        assert time.monotonic() - started >= 0.15

    run(sb, scenario)


def test_token_calls_and_csv_downloads_are_exempt_from_faults() -> None:
    sb = make_sandbox(faults=FaultPlan(rate_limit_every=2, retry_after_s=0))
    cmp_id = sb.simulate_campaign("acme")

    async def until_answered(call: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
        while (answer := await call()).status_code == 429:
            pass
        return answer

    async def scenario(client: httpx.AsyncClient) -> None:
        await until_answered(lambda: client.post(api.REPORT_EXPORT_PATH, json={"id": cmp_id, "rule": "subscribers"}))
        listing = await until_answered(lambda: client.get(api.REPORT_EXPORT_FILTER_PATH))
        file_url = listing.json()["results"][0]["file"]
        for _ in range(4):
            assert (await client.get(file_url)).status_code == 200
            login = await client.post(api.TOKEN_PATH, json={"username": "acme", "password": "s3cret"})
            assert login.status_code == 200

    run(sb, scenario)


# --- instrumentation, table, serving ---------------------------------------------------------


def test_write_requests_counts_writes_but_not_token_calls_and_reset_log_clears() -> None:
    sb = make_sandbox()

    async def scenario(client: httpx.AsyncClient) -> None:
        list_id = await create_list(client, "A")
        await client.patch(api.LIST_ITEM_PATH.format(id=list_id), json={"title": "B"})
        await client.get(api.LIST_FILTER_PATH)
        await client.delete(api.LIST_ITEM_PATH.format(id=list_id))

    run(sb, scenario)
    assert sb.request_log[0] == ("POST", "/api/v1/" + api.TOKEN_PATH, 200)
    assert sb.write_requests() == 3
    sb.reset_log()
    assert (sb.request_log, sb.write_requests()) == ([], 0)


def test_sandboxes_table_names_the_postacell_sandbox() -> None:
    assert SANDBOXES["postacell"] is PostacellSandbox


def test_served_sandbox_answers_over_tcp_and_a_drop_closes_the_connection_unanswered() -> None:
    sb = make_sandbox(faults=FaultPlan(rate_limit_every=2))
    dropping = make_sandbox(faults=FaultPlan(drop_rate=1.0))
    for sandbox, expect_drop in ((sb, False), (dropping, True)):
        with serve_in_thread(sandbox.app) as url, httpx.Client(base_url=url + "/api/v1/", timeout=5) as client:
            login = client.post(api.TOKEN_PATH, json={"username": "acme", "password": "s3cret"})
            assert login.status_code == 200
            client.headers["Authorization"] = f"Bearer {login.json()['access']}"
            if expect_drop:
                with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                    client.get(api.LIST_FILTER_PATH)
                assert sandbox.request_log[-1][2] == 0
            else:
                assert client.get(api.LIST_FILTER_PATH).json()["count"] == 0
                assert client.get(api.LIST_FILTER_PATH).status_code == 429


def test_the_status_index_follows_every_way_a_status_changes() -> None:
    """The status filter reads the account's status index; it must agree with the subscribers
    after a load, a web unsubscribe, a campaign's complaints and a delete."""
    sandbox = PostacellSandbox({"acme": "pw-123456"})
    sandbox.load_subscribers("acme", [(f"uye{n}@ornek.com.tr", "active" if n % 3 else "unsubscribed")
                                      for n in range(60)])
    sandbox.set_status("acme", "uye1@ornek.com.tr", "hard_bounce")
    sandbox.set_status("acme", "uye3@ornek.com.tr", "active")
    sandbox.set_status("acme", "uye9@ornek.com.tr", "active")
    acc = sandbox._accounts["acme"]
    acc.remove(acc.subscriber_by_email("uye6@ornek.com.tr"))
    for sub in list(acc.subscribers.values())[:5]:
        sub.status = "spam_complaint"          # as a campaign's complaint sets it
    for status in api.SUBSCRIBER_STATUSES:
        scanned = {sub.id for sub in acc.subscribers.values() if sub.status == status}
        assert set(acc.by_status.ids.get(status, {})) == scanned, status
