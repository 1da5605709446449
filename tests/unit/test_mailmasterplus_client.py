"""MailMasterPlus client against its in-process sandbox: the bare-number rule and every reading in
every dialect, consent and opt-outs, lost answers, the error table, the list mapping, and no secret
in URLs or errors."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest

from sync.errors import AuthenticationError, ConfigurationError, FatalError, RejectedRow, UnknownReadingError
from sync.http import HttpPolicy, ProviderHTTP
from sync.providers.base import (
    MemberDelete,
    MemberKey,
    MemberSnapshot,
    MemberUpsert,
    PushOutcome,
    RemoteStatus,
    check_provider,
    provider_class,
)
from sync.providers.mailmasterplus import api
from sync.providers.mailmasterplus.client import BasicAuth, MailMasterPlusProvider, _check, parse_time
from sync.providers.mailmasterplus.sandbox import DIALECTS as SANDBOX_DIALECTS
from sync.providers.specs import get_spec
from sync.sandbox import MailMasterPlusSandbox, sandbox_transport

T = TypeVar("T")
USER, PASSWORD = "acme-mmp", "MMP-gizli-şifre-9"
BASE = "http://mmp.sandbox/"
FAST = HttpPolicy(backoff_base_s=0.001, backoff_max_s=0.002, max_attempts=4)
LISTS = {"L1": {"nl_id": 101, "subscribe_form": 201, "update_form": 301, "name": "Müşteri Listesi"}}
DIALECTS = pytest.mark.parametrize("dialect", SANDBOX_DIALECTS)


def sandbox_for(dialect: str = "document", unique: bool = True) -> MailMasterPlusSandbox:
    sandbox = MailMasterPlusSandbox({USER: PASSWORD}, dialect=dialect)
    sandbox.add_list(USER, 101, "Müşteri Listesi", subscribe_form=201, update_form=301, unique=unique)
    return sandbox


class DropFirst(httpx.AsyncBaseTransport):
    """Applies the first request of ``method`` and loses its answer (the sandbox's state changes)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, method: str) -> None:
        self.inner, self.method, self.dropped = inner, method, False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == self.method and not self.dropped:
            self.dropped = True
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        return response


def run(sandbox: MailMasterPlusSandbox | None, scenario: Callable[[MailMasterPlusProvider], Awaitable[T]], *,
        transport: httpx.AsyncBaseTransport | None = None, password: str = PASSWORD,
        lists: dict[str, Any] | None = None, custom_fields: tuple[str, ...] = ()) -> T:
    async def go() -> T:
        inner = transport or sandbox_transport(sandbox.app)  # type: ignore[union-attr]
        async with httpx.AsyncClient(transport=inner) as client:
            http = ProviderHTTP(client, provider="mailmasterplus", base_url=BASE, policy=FAST,
                                auth=BasicAuth(USER, password))
            return await scenario(MailMasterPlusProvider(http, lists or LISTS, custom_fields=custom_fields))
    return asyncio.run(go())


def upsert(provider: MailMasterPlusProvider, email: str, *, status: str = "active", remote_id: str | None = None,
           resubscribe: bool = False, first_name: str = "Ayşe", nl_id: str = "101") -> MemberUpsert:
    member = MemberSnapshot(email, first_name, "Çelik", "905321112233", "İzmir", status)  # type: ignore[arg-type]
    try:
        payload = provider.build_payload(member)
    except RejectedRow:   # an address the client refuses itself ("ayse@ornek"): sent unchecked, to see the answer
        payload = {**provider.build_payload(dataclasses.replace(member, email="x@ornek.com.tr")), "email": email}
    return MemberUpsert(MemberKey("M1", f"L{int(nl_id) - 100}"), email, payload, (nl_id,), remote_id=remote_id,
                        resubscribe=resubscribe)


async def push(provider: MailMasterPlusProvider, *items: MemberUpsert) -> list[PushOutcome]:
    return await provider.upsert_members(list(items))


def one(provider: MailMasterPlusProvider, email: str, **kwargs: Any) -> Callable[[], Awaitable[PushOutcome]]:
    async def go() -> PushOutcome:
        return (await push(provider, upsert(provider, email, **kwargs)))[0]
    return go


# --- the bare-number rule ------------------------------------------------------------------


@DIALECTS
def test_record_ids_1_and_2_are_told_from_the_codes_by_reading_the_address_back(dialect: str) -> None:
    """A fresh list's first records get ids 1 and 2, which are also codes: each is read back by
    e-mail and taken as the record; id 3 and above are ids without a question."""
    sandbox = sandbox_for(dialect)

    async def scenario(provider: MailMasterPlusProvider) -> list[str | None]:
        ids = []
        for email in ("ayse@ornek.com.tr", "mehmet@ornek.com.tr", "can@ornek.com.tr"):
            outcome = (await push(provider, upsert(provider, email)))[0]
            assert outcome.rejected is None and outcome.suppressed is None
            ids.append(outcome.remote_id)
        return ids

    assert run(sandbox, scenario) == ["1", "2", "3"]
    assert len(sandbox.records(USER, 101)) == 3
    reads_back = [path for method, path, _ in sandbox.request_log if "/field/email/value/" in path]
    # after each ambiguous answer only: the list is read whole once (the run's cache), not per create
    assert len(reads_back) == 2
    assert [path for _, path, _ in sandbox.request_log].count("/list/101") == 1


@DIALECTS
@pytest.mark.parametrize("existing_id", [1, 2, 4])
def test_exists_on_a_unique_list_adopts_the_record_found_by_email(dialect: str, existing_id: int) -> None:
    """The address appears after the status scan (made in the panel): the subscribe answers
    "exists" (1 or -1), the record is read back and updated, never duplicated; also when the
    record's own id is 1 or 2."""
    sandbox = sandbox_for(dialect)

    async def scenario(provider: MailMasterPlusProvider) -> PushOutcome:
        [_ async for _ in provider.pull_statuses(None)]            # indexes the (empty) list
        for n in range(1, existing_id):
            await _subscribe_in_the_panel(sandbox, f"other{n}@ornek.com.tr")
        await _subscribe_in_the_panel(sandbox, "ayse@ornek.com.tr")
        return (await push(provider, upsert(provider, "ayse@ornek.com.tr", first_name="Yeni")))[0]

    outcome = run(sandbox, scenario)
    assert outcome.rejected is None and outcome.remote_id == str(existing_id)
    rows = [row for row in sandbox.records(USER, 101) if row["email"] == "ayse@ornek.com.tr"]
    assert len(rows) == 1 and rows[0]["mssys_firstname"] == "Yeni"
    answers = [path for method, path, _ in sandbox.request_log if method == "POST"]
    assert len(answers) == existing_id + 1          # the panel's subscribes and our one


async def _subscribe_in_the_panel(sandbox: MailMasterPlusSandbox, email: str) -> None:
    async with httpx.AsyncClient(transport=sandbox_transport(sandbox.app), auth=(USER, PASSWORD)) as client:
        await client.post(BASE + "subscribe/101/form/201", json={"email": email})


@DIALECTS
def test_a_malformed_address_is_a_reject_in_both_dialects(dialect: str) -> None:
    outcome = run(sandbox_for(dialect), lambda p: one(p, "ayse@ornek")())
    assert outcome.rejected is not None and outcome.rejected.provider_code == "malformed_email"


def test_answer_0_is_a_reject_retried_later() -> None:
    sandbox = sandbox_for()
    sandbox.refused.add("ayse@ornek.com.tr")
    outcome = run(sandbox, lambda p: one(p, "ayse@ornek.com.tr")())
    assert outcome.rejected is not None and outcome.rejected.provider_code == "subscribe_0"


def _fake(subscribe_answer: str) -> httpx.MockTransport:
    """A service that answers a subscribe with ``subscribe_answer`` and finds no record."""
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(200, text=subscribe_answer)
        return httpx.Response(200, content=b"")
    return httpx.MockTransport(handler)


@pytest.mark.parametrize(("answer", "code"), [("1", "exists_not_found"), ("-1", "exists_not_found"),
                                              ("2", "malformed_email"), ("-2", "malformed_email"),
                                              ('"-2"', "malformed_email"), ("0", "subscribe_0"),
                                              ("-7", "MalformedAnswerError")])
def test_a_code_whose_address_is_not_found_is_read_as_the_code(answer: str, code: str) -> None:
    outcome = run(None, lambda p: one(p, "ayse@ornek.com.tr")(), transport=_fake(answer))
    assert outcome.rejected is not None and outcome.rejected.provider_code == code


@pytest.mark.parametrize("answer", ["ok", '{"id": 5}', "[5]"])
def test_a_subscribe_answer_in_no_reading_stops_the_run_naming_the_endpoint(answer: str) -> None:
    with pytest.raises(UnknownReadingError, match=r"POST subscribe/<nl_id>/form/<ns_id>"):
        run(None, lambda p: one(p, "ayse@ornek.com.tr")(), transport=_fake(answer))


# --- consent ---------------------------------------------------------------------------------


def test_an_unsubscribed_record_is_reported_not_reactivated() -> None:
    sandbox = sandbox_for()
    created = run(sandbox, lambda p: one(p, "ayse@ornek.com.tr")())
    sandbox.unsubscribe(USER, 101, "ayse@ornek.com.tr")
    sandbox.reset_log()
    outcome = run(sandbox, lambda p: one(p, "ayse@ornek.com.tr", remote_id=created.remote_id, first_name="X")())
    assert outcome.suppressed is not None and outcome.rejected is None
    assert (outcome.suppressed.status, outcome.suppressed.remote_list) == ("unsubscribed", "101")
    assert sandbox.write_requests() == 0
    assert sandbox.records(USER, 101)[0]["active"] == "0"


def test_a_create_that_finds_an_unsubscribed_record_reports_it() -> None:
    sandbox = sandbox_for()
    run(sandbox, lambda p: one(p, "ayse@ornek.com.tr")())
    sandbox.unsubscribe(USER, 101, "ayse@ornek.com.tr")
    sandbox.reset_log()
    outcome = run(sandbox, lambda p: one(p, "ayse@ornek.com.tr")())      # links lost: no remote id
    assert outcome.suppressed is not None and sandbox.write_requests() == 0


def test_resubscribe_recreates_the_record_active() -> None:
    sandbox = sandbox_for()
    created = run(sandbox, lambda p: one(p, "ayse@ornek.com.tr")())
    sandbox.unsubscribe(USER, 101, "ayse@ornek.com.tr")
    outcome = run(sandbox, lambda p: one(p, "ayse@ornek.com.tr", remote_id=created.remote_id, resubscribe=True)())
    assert outcome.rejected is None and outcome.suppressed is None and outcome.remote_id != created.remote_id
    (row,) = sandbox.records(USER, 101)
    assert row["active"] == "1" and row["id"] == outcome.remote_id


def test_pushing_unsubscribed_updates_then_unsubscribes_and_never_creates() -> None:
    sandbox = sandbox_for()
    created = run(sandbox, lambda p: one(p, "ayse@ornek.com.tr")())
    outcome = run(sandbox, lambda p: one(p, "ayse@ornek.com.tr", remote_id=created.remote_id, status="unsubscribed")())
    assert outcome.rejected is None
    assert sandbox.records(USER, 101)[0]["active"] == "0"
    sandbox.reset_log()
    refused = run(sandbox, lambda p: one(p, "yeni@ornek.com.tr", status="unsubscribed")())
    assert refused.rejected is not None and refused.rejected.provider_code == "not_created_unsubscribed"
    assert sandbox.write_requests() == 0


def test_a_record_deleted_in_the_panel_is_created_again() -> None:
    sandbox = sandbox_for()
    created = run(sandbox, lambda p: one(p, "ayse@ornek.com.tr")())
    run(sandbox, lambda p: p._delete_record("101", str(created.remote_id), "ayse@ornek.com.tr"))
    outcome = run(sandbox, lambda p: one(p, "ayse@ornek.com.tr", remote_id=created.remote_id)())
    assert outcome.rejected is None and outcome.remote_id == "2"
    assert len(sandbox.records(USER, 101)) == 1


# --- lost answers ----------------------------------------------------------------------------


def test_a_subscribe_whose_answer_was_lost_is_found_not_repeated() -> None:
    sandbox = sandbox_for()
    transport = DropFirst(sandbox_transport(sandbox.app), "POST")
    outcome = run(sandbox, lambda p: one(p, "ayse@ornek.com.tr")(), transport=transport)
    assert transport.dropped and outcome.rejected is None and outcome.remote_id == "1"
    assert len(sandbox.records(USER, 101)) == 1


def test_a_delete_whose_answer_was_lost_counts_as_done() -> None:
    sandbox = sandbox_for()
    created = run(sandbox, lambda p: one(p, "ayse@ornek.com.tr")())
    transport = DropFirst(sandbox_transport(sandbox.app), "DELETE")

    async def scenario(provider: MailMasterPlusProvider) -> list[PushOutcome]:
        return await provider.delete_members([MemberDelete(MemberKey("M1", "L1"), "ayse@ornek.com.tr",
                                                           created.remote_id, ("101",), "deleted in the CRM")])

    (outcome,) = run(sandbox, scenario, transport=transport)
    assert transport.dropped and outcome.rejected is None and outcome.action == "deleted"
    assert sandbox.records(USER, 101) == []


def test_a_delete_without_a_remote_id_finds_the_record_by_email() -> None:
    sandbox = sandbox_for()
    run(sandbox, lambda p: one(p, "ayse@ornek.com.tr")())

    async def scenario(provider: MailMasterPlusProvider) -> list[PushOutcome]:
        return await provider.delete_members([MemberDelete(MemberKey("M1", "L1"), "AYSE@ornek.com.tr", None)])

    assert run(sandbox, scenario)[0].rejected is None
    assert sandbox.records(USER, 101) == []


# --- statuses --------------------------------------------------------------------------------


def test_the_status_scan_yields_each_unsubscribed_record_with_its_list() -> None:
    sandbox = sandbox_for("negative")                # a reading with mssys_last_statuschange_date
    sandbox.clock = lambda: 1_800_000_000.0
    run(sandbox, lambda p: push(p, upsert(p, "ayse@ornek.com.tr"), upsert(p, "can@ornek.com.tr")))
    sandbox.unsubscribe(USER, 101, "can@ornek.com.tr")

    async def scenario(provider: MailMasterPlusProvider) -> list[RemoteStatus]:
        return [status async for status in provider.pull_statuses(None)]

    (status,) = run(sandbox, scenario)
    assert (status.email, status.status, status.remote_list) == ("can@ornek.com.tr", "unsubscribed", "101")
    assert status.occurred_at == dt.datetime.fromtimestamp(1_800_000_000, dt.UTC)


def test_dates_are_read_in_the_services_time_zone() -> None:
    assert parse_time("2026-07-01 12:00:00") == dt.datetime(2026, 7, 1, 10, 0, tzinfo=dt.UTC)
    assert parse_time("0000-00-00 00:00:00") is None and parse_time("") is None


# --- errors and secrets ----------------------------------------------------------------------


@pytest.mark.parametrize(("status", "error"), [(401, AuthenticationError), (404, FatalError), (405, FatalError),
                                               (406, RejectedRow), (500, FatalError)])
def test_the_error_table_maps_the_documented_statuses(status: int, error: type[Exception]) -> None:
    response = httpx.Response(status, text="hiba", request=httpx.Request("GET", BASE + "list/101"))
    with pytest.raises(error):
        _check(response, "read list 101")


def test_a_wrong_password_fails_without_showing_it_and_never_puts_it_in_a_url() -> None:
    sandbox = sandbox_for()
    with pytest.raises(AuthenticationError) as caught:
        run(sandbox, lambda p: one(p, "ayse@ornek.com.tr")(), password="yanlis-sifre-77")
    assert "yanlis-sifre-77" not in str(caught.value)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=[])
    run(None, lambda p: p.check_lists(), transport=httpx.MockTransport(handler))
    assert seen and all(PASSWORD not in str(request.url) and "@" not in request.url.netloc.decode()
                        for request in seen)
    assert seen[0].headers["Authorization"].startswith("Basic ")


def test_an_unknown_list_is_reported_by_check_lists() -> None:
    sandbox = sandbox_for()
    sandbox.delete_list(USER, 101)
    problems = run(sandbox, lambda p: p.check_lists())
    assert len(problems) == 1 and "MMP list 101" in problems[0]


# --- mapping, payload, capabilities --------------------------------------------------------------


def test_the_list_mapping_is_validated_when_the_connection_is_set() -> None:
    spec = get_spec("mailmasterplus")
    checked = spec.validate_settings({"lists": '{"L1": {"nl_id": 101, "subscribe_form": "201", "update_form": 301, '
                                               '"fields": {"city": "varos", "phone": null}}}'})["lists"]
    assert checked["L1"]["nl_id"] == "101" and checked["L1"]["fields"]["city"] == "varos"
    assert checked["L1"]["fields"]["phone"] is None
    assert spec.validate_settings({"lists": checked})["lists"] == checked       # a second check keeps it
    for bad, message in [({"L1": {"nl_id": 1}}, "missing"), ({"L1": {"nl_id": "x", "subscribe_form": 1,
                                                                      "update_form": 2}}, "whole number"),
                         ({"L1": {"nl_id": 1, "subscribe_form": 2, "update_form": 3, "form": 4}}, "unknown key"),
                         ({"L1": {"nl_id": 1, "subscribe_form": 2, "update_form": 3},
                           "L2": {"nl_id": 1, "subscribe_form": 4, "update_form": 5}}, "both map"),
                         ({"L1": {"nl_id": 1, "subscribe_form": 2, "update_form": 3,
                                  "fields": {"email": "x"}}}, "unknown CRM column"),
                         ({"L1": {"nl_id": 1, "subscribe_form": 2, "update_form": 3,
                                  "fields": {"city": "active"}}}, "system field")]:
        with pytest.raises(ConfigurationError, match=message):
            spec.validate_settings({"lists": bad})


def test_each_list_gets_its_own_field_names_and_mapped_lists_carry_the_forms() -> None:
    sandbox = MailMasterPlusSandbox({USER: PASSWORD})
    sandbox.add_list(USER, 101, "A", subscribe_form=201, update_form=301, fields=("ad", "sehir"))
    lists = {"L1": {"nl_id": 101, "subscribe_form": 201, "update_form": 301,
                    "fields": {"first_name": "ad", "city": "sehir", "last_name": None, "phone": None}}}
    outcome = run(sandbox, lambda p: one(p, "ayse@ornek.com.tr")(), lists=lists)
    assert outcome.rejected is None
    row = sandbox.records(USER, 101)[0]
    assert (row["ad"], row["sehir"]) == ("Ayşe", "İzmir")
    mapped = run(sandbox, lambda p: asyncio.sleep(0, p.mapped_lists()), lists=lists)
    assert mapped["L1"].remote_id == "101" and mapped["L1"].attributes["update_form"] == "301"


def test_a_wrongly_named_field_is_a_visible_reject() -> None:
    sandbox = MailMasterPlusSandbox({USER: PASSWORD})
    sandbox.add_list(USER, 101, "A", subscribe_form=201, update_form=301, fields=("ad",))
    outcome = run(sandbox, lambda p: one(p, "ayse@ornek.com.tr")())       # default names: mssys_*
    assert outcome.rejected is not None and outcome.rejected.provider_code == "406"


def test_the_provider_declares_what_it_implements() -> None:
    cls = provider_class("mailmasterplus")
    provider = cls.create(lambda caps, auth: None, {"username": USER, "password": PASSWORD}, {"lists": LISTS})
    assert check_provider(provider) is provider
    caps = provider.capabilities
    assert (caps.lists, caps.membership_model, caps.member_removal, caps.status_pull, caps.has_campaign_reports) == (
        "mapped", "per_list", "delete", "full_scan", False)
    assert get_spec("mailmasterplus").default_base_url == api.DEFAULT_BASE_URL


# --- issue 22: readings, states, opt-outs ---------------------------------------------------

TWO_LISTS = {"L1": {"nl_id": 101, "subscribe_form": 201, "update_form": 301, "name": "Müşteri Listesi"},
             "L2": {"nl_id": 102, "subscribe_form": 202, "update_form": 302, "name": "Bülten"}}
#: dialect -> the reading ``GET list/<nl_id>`` answers in (sandbox.py's dialects)
LIST_READINGS = {"document": api.READ_ID_KEYED, "negative": api.READ_ARRAY, "typed": api.READ_ID_KEYED}


def two_lists(dialect: str = "document") -> MailMasterPlusSandbox:
    sandbox = sandbox_for(dialect)
    sandbox.add_list(USER, 102, "Bülten", subscribe_form=202, update_form=302)
    return sandbox


def serving(routes: dict[str, str | bytes]) -> httpx.MockTransport:
    """A service answering each GET path (after the base URL) with the given body, 200."""
    def handler(request: httpx.Request) -> httpx.Response:
        body = routes.get(request.url.path.lstrip("/"))
        if body is None:
            return httpx.Response(404, text="unknown resource")
        return httpx.Response(200, content=body.encode() if isinstance(body, str) else body,
                              headers={"content-type": "application/json"})
    return httpx.MockTransport(handler)


async def statuses(provider: MailMasterPlusProvider) -> list[RemoteStatus]:
    return [status async for status in provider.pull_statuses(None)]


@DIALECTS
def test_every_dialects_whole_list_is_read_and_its_reading_noted(dialect: str) -> None:
    """Item 8: the list answered as an array or as an object keyed by record id (PHP json_encode)
    is read alike; the client notes which."""
    sandbox = sandbox_for(dialect)
    run(sandbox, lambda p: push(p, upsert(p, "ayse@ornek.com.tr"), upsert(p, "can@ornek.com.tr")))
    sandbox.unsubscribe(USER, 101, "can@ornek.com.tr")

    async def scenario(provider: MailMasterPlusProvider) -> tuple[list[RemoteStatus], dict[str, str]]:
        return await statuses(provider), provider.readings.as_dict()

    found, readings = run(sandbox, scenario)
    assert [(s.email, s.remote_list) for s in found] == [("can@ornek.com.tr", "101")]
    assert readings[api.LIST_ENDPOINT] == LIST_READINGS[dialect]


@pytest.mark.parametrize(("body", "reading"), [
    ('{"7": {"email": "a@ornek.com.tr", "active": "0"}, "9": {"id": "9", "email": "b@ornek.com.tr", "active": 1}}',
     api.READ_ID_KEYED),
    ('[{"id": 7, "email": "a@ornek.com.tr", "active": false}]', api.READ_ARRAY),
])
def test_a_record_without_its_own_id_takes_the_key_and_numbers_are_ids_too(body: str, reading: str) -> None:
    async def scenario(provider: MailMasterPlusProvider) -> tuple[list[RemoteStatus], str]:
        return await statuses(provider), provider.readings.seen[api.LIST_ENDPOINT]

    found, seen = run(None, scenario, transport=serving({"list/101": body}))
    assert [(s.email, s.remote_id) for s in found] == [("a@ornek.com.tr", "7")] and seen == reading


@pytest.mark.parametrize("body", [
    '{"id": "1", "email": "a@ornek.com.tr", "active": "1"}',          # a bare record: maybe one of many
    '{"data": [{"id": "1", "email": "a@ornek.com.tr", "active": "1"}]}',   # an envelope the document never shows
    '"1"', "0", "false", "null", '[["a@ornek.com.tr"]]',
])
def test_a_whole_list_in_no_reading_stops_the_pull_naming_the_endpoint(body: str) -> None:
    """Never an empty pull: an answer in none of the readings is one line naming the endpoint."""
    with pytest.raises(UnknownReadingError, match=r"GET list/<nl_id> \(read list 101\)") as caught:
        run(None, statuses, transport=serving({"list/101": body}))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("empty", ["", "[]", "{}"])
def test_an_empty_list_in_any_reading_is_no_records_noted_apart(empty: str) -> None:
    async def scenario(provider: MailMasterPlusProvider) -> tuple[list[RemoteStatus], dict[str, str]]:
        return await statuses(provider), provider.readings.as_dict()

    found, readings = run(None, scenario, transport=serving({"list/101": empty}))
    assert found == [] and api.LIST_ENDPOINT not in readings
    assert readings[api.LIST_EMPTY_ENDPOINT] == (empty or api.READ_EMPTY_BODY)


@pytest.mark.parametrize("active", [None, "", "2", "unsubscribed", "yes", "true", 2, [], "missing"])
def test_a_record_without_a_readable_active_is_an_error_never_unsubscribed(active: Any) -> None:
    """Item 9: a missing or unknown ``active`` fails the pull naming the endpoint; no status is
    invented for the member."""
    row: dict[str, Any] = {"id": "3", "email": "gizli.kisi@ornek.com.tr", "mssys_firstname": "X"}
    if active != "missing":
        row["active"] = active
    with pytest.raises(UnknownReadingError, match=r"GET list/<nl_id>.*active") as caught:
        run(None, statuses, transport=serving({"list/101": json.dumps([row])}))
    assert "gizli.kisi" not in str(caught.value)        # the member's address is not in the error


@pytest.mark.parametrize("active", [None, "2", "missing"])
def test_a_push_that_reads_a_record_without_a_readable_active_stops_the_run(active: Any) -> None:
    """Item 9, on the push side: an update looks its record up first (in the run's cache: the list
    read whole); a record without a readable ``active`` stops the run (not a reject of one row, and
    nothing is written)."""
    row: dict[str, Any] = {"id": "3", "email": "ayse@ornek.com.tr"}
    if active != "missing":
        row["active"] = active
    writes: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method != "GET":
            writes.append(request.url.path)
        if request.url.path == "/list/101":
            return httpx.Response(200, json=[row])
        if request.url.path == "/list/101/record/3":
            return httpx.Response(200, json=row)
        return httpx.Response(200, text="1")

    with pytest.raises(UnknownReadingError, match=r"GET list/<nl_id> \(read list 101\).*active"):
        run(None, lambda p: one(p, "ayse@ornek.com.tr", remote_id="3")(), transport=httpx.MockTransport(handler))
    assert writes == []


def test_the_erasure_reason_is_the_engines() -> None:
    """Only a KVKK erasure deletes an unsubscribed record: the reason the engine gives it must be
    the one the client recognises (a drift would keep records, never delete them)."""
    from sync.engine.connection_sync import ERASED

    assert api.ERASURE_REASON == ERASED


@pytest.mark.parametrize(("active", "unsubscribed", "reading"), [
    ("1", False, "text 1/0"), ("0", True, "text 1/0"), (" 0 ", True, "text 1/0"), (1, False, "number 1/0"),
    (0, True, "number 1/0"), (True, False, "boolean true/false"), (False, True, "boolean true/false")])
def test_every_accepted_spelling_of_active_is_read(active: Any, unsubscribed: bool, reading: str) -> None:
    body = json.dumps([{"id": "3", "email": "a@ornek.com.tr", "active": active}])

    async def scenario(provider: MailMasterPlusProvider) -> tuple[list[RemoteStatus], str]:
        return await statuses(provider), provider.readings.seen[api.ACTIVE_ENDPOINT]

    found, seen = run(None, scenario, transport=serving({"list/101": body}))
    assert bool(found) == unsubscribed and seen == reading


@pytest.mark.parametrize(("path", "body"), [
    ("list/101/record/3", '{"email": "a@ornek.com.tr", "active": "1"}'),
    ("list/101/record/3", '[{"id": "3", "email": "a@ornek.com.tr", "active": "1"}]'),
    ("list/101/record/3", '{"3": {"email": "a@ornek.com.tr", "active": "1"}}'),
])
def test_one_record_is_read_as_an_object_an_array_or_an_id_keyed_object(path: str, body: str) -> None:
    async def scenario(provider: MailMasterPlusProvider) -> Any:
        return await provider._read_record("101", "3")

    record = run(None, scenario, transport=serving({path: body}))
    assert record is not None and (record.id, record.email, record.active) == ("3", "a@ornek.com.tr", True)


@pytest.mark.parametrize("none", ["", "[]", "false", "0"])
def test_no_record_in_any_reading_is_none(none: str) -> None:
    async def scenario(provider: MailMasterPlusProvider) -> Any:
        return (await provider._read_record("101", "3"), await provider._read_by_email("101", "a@ornek.com.tr"))

    assert run(None, scenario, transport=serving({"list/101/record/3": none,
                                                  "list/101/field/email/value/a@ornek.com.tr": none})) == (None, None)


def test_an_undated_unsubscribe_is_dated_by_the_read_never_earlier_and_flagged_undated() -> None:
    """Item 10: without ``mssys_last_statuschange_date`` the unsubscribe's time is the read's (an
    older CRM consent never beats it), and flagged undated where the engine's RemoteStatus has the
    flag (so the engine keeps the time it first saw it)."""
    sandbox = sandbox_for("document")              # the document names no status time
    run(sandbox, lambda p: one(p, "ayse@ornek.com.tr")())
    sandbox.unsubscribe(USER, 101, "ayse@ornek.com.tr")
    before = dt.datetime.now(dt.UTC)
    (status,) = run(sandbox, statuses)
    assert status.occurred_at >= before
    assert getattr(status, "dated", False) is False
    dated = sandbox_for("typed")
    dated.clock = lambda: 1_800_000_000.0
    run(dated, lambda p: one(p, "ayse@ornek.com.tr")())
    dated.unsubscribe(USER, 101, "ayse@ornek.com.tr")
    (status,) = run(dated, statuses)
    assert status.occurred_at == dt.datetime.fromtimestamp(1_800_000_000, dt.UTC)
    assert getattr(status, "dated", True) is True


@DIALECTS
def test_an_update_the_record_holds_already_is_not_sent(dialect: str) -> None:
    """Item 10: a member pushed again with the values its record holds (the engine re-plans every
    member whose suppression it re-dated) sends no write, in every reading; a changed value is sent
    once and a repeat of it is not."""
    sandbox = two_lists(dialect)

    async def first(provider: MailMasterPlusProvider) -> list[PushOutcome]:
        return await push(provider, upsert(provider, "ayse@ornek.com.tr"), upsert(provider, "ayse@ornek.com.tr",
                                                                                  nl_id="102"))

    created = run(sandbox, first, lists=TWO_LISTS)
    sandbox.unsubscribe(USER, 101, "ayse@ornek.com.tr")
    sandbox.reset_log()

    async def again(provider: MailMasterPlusProvider) -> list[PushOutcome]:
        await statuses(provider)
        return await push(provider, upsert(provider, "ayse@ornek.com.tr", remote_id=created[0].remote_id),
                          upsert(provider, "ayse@ornek.com.tr", remote_id=created[1].remote_id, nl_id="102"))

    for _ in range(2):
        outcomes = run(sandbox, again, lists=TWO_LISTS)
        assert outcomes[0].suppressed is not None and outcomes[1].rejected is None and outcomes[1].suppressed is None
    assert sandbox.write_requests() == 0
    changed = run(sandbox, lambda p: one(p, "ayse@ornek.com.tr", remote_id=created[1].remote_id, nl_id="102",
                                         first_name="Yeni")(), lists=TWO_LISTS)
    assert changed.rejected is None and sandbox.write_requests() == 1
    assert sandbox.find(USER, 102, "ayse@ornek.com.tr")["mssys_firstname"] == "Yeni"  # type: ignore[index]
    run(sandbox, lambda p: one(p, "ayse@ornek.com.tr", remote_id=created[1].remote_id, nl_id="102",
                               first_name="Yeni")(), lists=TWO_LISTS)
    assert sandbox.write_requests() == 1


def test_an_update_answered_0_after_our_read_is_nothing_changed_not_a_failure() -> None:
    """MySQL counts affected rows: an update that changes nothing answers 0 (the ``document``
    dialect does); the record was just read, so 0 is success."""
    sandbox = sandbox_for("document")
    created = run(sandbox, lambda p: one(p, "ayse@ornek.com.tr")())

    async def scenario(provider: MailMasterPlusProvider) -> PushOutcome:
        record = await provider._read_record("101", str(created.remote_id))
        assert record is not None
        stale = dataclasses.replace(record, fields={})          # as if the read had not shown the values
        item = upsert(provider, "ayse@ornek.com.tr", remote_id=created.remote_id)
        return await provider._update(provider._by_nl["101"], item, stale)

    outcome = run(sandbox, scenario)
    assert outcome.rejected is None and outcome.remote_id == created.remote_id


def test_an_unsubscribe_answered_false_is_read_back() -> None:
    """``typed`` answers ``false`` for a record that is unsubscribed already: done, not a reject."""
    sandbox = sandbox_for("typed")
    created = run(sandbox, lambda p: one(p, "ayse@ornek.com.tr")())
    sandbox.unsubscribe(USER, 101, "ayse@ornek.com.tr")
    run(sandbox, lambda p: p._unsubscribe("101", str(created.remote_id)))
    missing = sandbox_for("typed")
    with pytest.raises(RejectedRow, match="answered 0"):
        run(missing, lambda p: p._unsubscribe("101", "5"))


@DIALECTS
def test_check_lists_names_a_mapped_field_no_record_shows(dialect: str) -> None:
    """Item 11: the defaults (mssys_*) come from the public C# client, not the document; where the
    list has records, ``connection test`` names a mapped field they do not show (custom fields
    too). An empty list cannot be checked: the probe says so."""
    sandbox = MailMasterPlusSandbox({USER: PASSWORD}, dialect=dialect)
    sandbox.add_list(USER, 101, "A", subscribe_form=201, update_form=301, fields=("mssys_firstname", "sadakat"))
    assert run(sandbox, lambda p: p.check_lists(), custom_fields=("sadakat",)) == []
    lines = run(sandbox, _checked_probe, custom_fields=("sadakat",))
    assert "fields not checked: the list has no record yet" in lines[0]
    asyncio.run(_subscribe_in_the_panel(sandbox, "ayse@ornek.com.tr"))
    problems = run(sandbox, lambda p: p.check_lists(), custom_fields=("sadakat", "puan"))
    assert len(problems) == 1 and problems[0].startswith("CRM list L1 -> MMP list 101: ")
    assert "mssys_lastname, mssys_mobile, puan" in problems[0] and "mssys_firstname" not in problems[0]
    assert sandbox.write_requests() == 1                 # the panel's subscribe only


async def _checked_probe(provider: MailMasterPlusProvider) -> list[str]:
    await provider.check_lists()
    return await provider.connection_probe()


@DIALECTS
def test_the_probe_reads_each_list_and_one_record_in_the_runs_readings_and_writes_nothing(dialect: str) -> None:
    """Item 8: ``connection test`` reads each mapped list's records (and its first record by id and
    by e-mail, as a run does) and says which reading each answer came in."""
    sandbox = two_lists(dialect)
    run(sandbox, lambda p: push(p, upsert(p, "ayse@ornek.com.tr"), upsert(p, "can@ornek.com.tr")), lists=TWO_LISTS)
    sandbox.unsubscribe(USER, 101, "can@ornek.com.tr")
    sandbox.reset_log()

    async def scenario(provider: MailMasterPlusProvider) -> tuple[list[str], list[str], dict[str, str]]:
        return await provider.check_lists(), await provider.connection_probe(), provider.readings.as_dict()

    problems, lines, readings = run(sandbox, scenario, lists=TWO_LISTS)
    assert problems == [] and len(lines) == 2
    assert lines[0].startswith(f"GET list/101 (CRM list L1): 2 record(s), 1 unsubscribed (reading: "
                               f"{LIST_READINGS[dialect]}")
    assert "GET list/101/record/<id>: " in lines[0] and "GET list/101/field/email/value/<e-mail>: " in lines[0]
    assert "fields found in its records: mssys_firstname, mssys_lastname, mssys_mobile" in lines[0]
    assert lines[1].startswith("GET list/102 (CRM list L2): 0 record(s)")
    assert {api.LIST_ENDPOINT, api.RECORD_ENDPOINT, api.FIND_ENDPOINT, api.ACTIVE_ENDPOINT} <= set(readings)
    assert sandbox.write_requests() == 0
    assert [path for _, path, _ in sandbox.request_log].count("/list/101") == 1       # read once, not twice


def test_a_list_in_no_reading_fails_its_own_list_check() -> None:
    """Item 8: a shape problem shows in ``connection test`` on that list, not in the first nightly run."""
    transport = serving({"list/101": '{"data": []}'})
    problems = run(None, lambda p: p.check_lists(), transport=transport)
    assert len(problems) == 1 and problems[0].startswith("CRM list L1 -> MMP list 101: GET list/<nl_id>")
    assert run(None, _checked_probe, transport=transport) == []        # left to the list's own line


@DIALECTS
def test_an_address_unsubscribed_in_one_list_is_not_created_in_another(dialect: str) -> None:
    """Item 12: the never-re-subscribe promise is address-wide at MMP: a member who unsubscribed
    in list 101 and whom the CRM adds to list 102 gets no record there (nothing written), whether
    the lists were read this session or not; a re-subscribe the engine decided (a newer CRM
    consent) creates it."""
    sandbox = two_lists(dialect)
    run(sandbox, lambda p: one(p, "ayse@ornek.com.tr")(), lists=TWO_LISTS)
    sandbox.unsubscribe(USER, 101, "ayse@ornek.com.tr")
    sandbox.reset_log()

    async def after_pull(provider: MailMasterPlusProvider) -> PushOutcome:
        await statuses(provider)
        return (await push(provider, upsert(provider, "ayse@ornek.com.tr", nl_id="102")))[0]

    async def without_pull(provider: MailMasterPlusProvider) -> PushOutcome:
        return (await push(provider, upsert(provider, "ayse@ornek.com.tr", nl_id="102")))[0]

    for scenario in (after_pull, without_pull):
        outcome = run(sandbox, scenario, lists=TWO_LISTS)
        assert outcome.suppressed is not None and outcome.rejected is None
        assert (outcome.suppressed.status, outcome.suppressed.remote_list) == ("unsubscribed", "101")
        assert sandbox.find(USER, 102, "ayse@ornek.com.tr") is None and sandbox.write_requests() == 0
    created = run(sandbox, lambda p: one(p, "ayse@ornek.com.tr", nl_id="102", resubscribe=True)(), lists=TWO_LISTS)
    assert created.rejected is None and created.suppressed is None
    assert sandbox.find(USER, 102, "ayse@ornek.com.tr")["active"] == "1"  # type: ignore[index]
    assert sandbox.find(USER, 101, "ayse@ornek.com.tr")["active"] == "0"  # type: ignore[index]


@DIALECTS
def test_a_create_is_withheld_while_another_mapped_list_cannot_be_read(dialect: str) -> None:
    """Item 12: the opt-out is address-wide, so an unreadable mapped list (406: deleted in the
    panel, or not the account's) is not "no unsubscribe there": the create is a reject, retried
    later, and nothing is written; the status pull skips that list and goes on."""
    sandbox = two_lists(dialect)
    broken = {**TWO_LISTS, "L3": {"nl_id": 103, "subscribe_form": 203, "update_form": 303}}

    async def after_pull(provider: MailMasterPlusProvider) -> PushOutcome:
        await statuses(provider)            # 103 is logged and skipped: the pull goes on
        return (await push(provider, upsert(provider, "ayse@ornek.com.tr", nl_id="102")))[0]

    for outcome in (run(sandbox, after_pull, lists=broken),
                    run(sandbox, lambda p: one(p, "ayse@ornek.com.tr", nl_id="102")(), lists=broken)):
        assert outcome.rejected is not None and outcome.rejected.provider_code == api.OPT_OUT_UNCHECKED
        assert "MMP list 103 (CRM list L3) cannot be read" in outcome.rejected.reason
    assert sandbox.write_requests() == 0 and sandbox.find(USER, 102, "ayse@ornek.com.tr") is None
    assert run(sandbox, lambda p: one(p, "ayse@ornek.com.tr", nl_id="102")(), lists=TWO_LISTS).rejected is None


def test_a_newer_consent_that_re_subscribes_one_list_lets_the_others_be_created_in_the_same_batch() -> None:
    sandbox = two_lists()
    run(sandbox, lambda p: one(p, "ayse@ornek.com.tr")(), lists=TWO_LISTS)
    sandbox.unsubscribe(USER, 101, "ayse@ornek.com.tr")

    async def scenario(provider: MailMasterPlusProvider) -> list[PushOutcome]:
        await statuses(provider)
        return await push(provider, upsert(provider, "ayse@ornek.com.tr", remote_id="1", resubscribe=True),
                          upsert(provider, "ayse@ornek.com.tr", nl_id="102"))

    outcomes = run(sandbox, scenario, lists=TWO_LISTS)
    assert all(o.rejected is None and o.suppressed is None for o in outcomes)
    assert {row["active"] for nl in (101, 102) for row in sandbox.records(USER, nl)} == {"1"}


@DIALECTS
@pytest.mark.parametrize("reason", ["left the list", "e-mail changed", "left every list"])
def test_a_removal_leaves_an_unsubscribed_record_as_it_is(dialect: str, reason: str) -> None:
    """Item 12b: a list leave or an address change never deletes an unsubscribed record (the
    provider's proof of the opt-out): it stays, unsubscribed, and nothing is written."""
    sandbox = sandbox_for(dialect)
    created = run(sandbox, lambda p: one(p, "ayse@ornek.com.tr")())
    sandbox.unsubscribe(USER, 101, "ayse@ornek.com.tr")
    sandbox.reset_log()
    for remote_id in (created.remote_id, None):       # by the link's id, and found by e-mail
        (outcome,) = run(sandbox, lambda p, rid=remote_id: p.delete_members([MemberDelete(  # type: ignore[misc]
            MemberKey("M1", "L1"), "ayse@ornek.com.tr", rid, ("101",), reason)]))
        assert outcome.rejected is None and outcome.action == api.LEFT_UNSUBSCRIBED
        (row,) = sandbox.records(USER, 101)
        assert row["active"] == "0" and sandbox.write_requests() == 0


@DIALECTS
def test_a_kvkk_erasure_deletes_even_an_unsubscribed_record_and_a_leave_deletes_an_active_one(dialect: str) -> None:
    sandbox = sandbox_for(dialect)
    kept = run(sandbox, lambda p: one(p, "ayse@ornek.com.tr")())
    left = run(sandbox, lambda p: one(p, "can@ornek.com.tr")())
    sandbox.unsubscribe(USER, 101, "ayse@ornek.com.tr")

    async def scenario(provider: MailMasterPlusProvider) -> list[PushOutcome]:
        return await provider.delete_members([
            MemberDelete(MemberKey("M1", "L1"), "ayse@ornek.com.tr", kept.remote_id, ("101",), api.ERASURE_REASON),
            MemberDelete(MemberKey("M2", "L1"), "can@ornek.com.tr", left.remote_id, ("101",), "left the list")])

    assert [o.action for o in run(sandbox, scenario)] == ["deleted", "deleted"]
    assert sandbox.records(USER, 101) == []


def test_a_removal_without_a_list_touches_other_lists_only_for_an_erasure() -> None:
    """A provisional link of an unmapped CRM list: a leave touches no list, an erasure every list."""
    sandbox = two_lists()
    run(sandbox, lambda p: push(p, upsert(p, "ayse@ornek.com.tr"), upsert(p, "ayse@ornek.com.tr", nl_id="102")),
        lists=TWO_LISTS)

    def remove(reason: str) -> Callable[[MailMasterPlusProvider], Awaitable[list[PushOutcome]]]:
        return lambda p: p.delete_members([MemberDelete(MemberKey("M1", "L9"), "ayse@ornek.com.tr", None, (), reason)])

    run(sandbox, remove("left the list"), lists=TWO_LISTS)
    assert len(sandbox.records(USER, 101)) == len(sandbox.records(USER, 102)) == 1
    run(sandbox, remove(api.ERASURE_REASON), lists=TWO_LISTS)
    assert sandbox.records(USER, 101) == sandbox.records(USER, 102) == []


# --- the per-run cache (issue 26): each list read once per run, every lookup answered from it ----


def _gets(sandbox: MailMasterPlusSandbox) -> list[str]:
    return [path for method, path, _ in sandbox.request_log if method == "GET" and not path.startswith("/unsubscribe/")]


@DIALECTS
@pytest.mark.parametrize("pulled", [True, False], ids=["after the pull", "without a pull"])
def test_each_list_is_read_once_per_run_and_every_members_lookup_uses_it(dialect: str, pulled: bool) -> None:
    """Six updates in two lists and one removal cost their writes, two whole-list reads and the one
    fresh read a delete makes (a delete is for good): no member is looked up by itself. Before
    the cache each update read its record by id first (one GET per member)."""
    sandbox = two_lists(dialect)
    emails = ("ayse@ornek.com.tr", "can@ornek.com.tr", "deniz@ornek.com.tr")

    async def create(provider: MailMasterPlusProvider) -> list[PushOutcome]:
        return await push(provider, *(upsert(provider, email, nl_id=nl) for nl in ("101", "102") for email in emails))

    created = run(sandbox, create, lists=TWO_LISTS)
    sandbox.reset_log()

    async def again(provider: MailMasterPlusProvider) -> tuple[list[PushOutcome], list[PushOutcome]]:
        if pulled:
            await statuses(provider)
        removed = await provider.delete_members([MemberDelete(
            MemberKey("M9", "L1"), "deniz@ornek.com.tr", created[2].remote_id, ("101",), "left the list")])
        pairs = [(nl, email) for nl in ("101", "102") for email in emails]
        updated = await push(provider, *(upsert(provider, email, nl_id=nl, first_name="Yeni",
                                                remote_id=created[n].remote_id)
                                         for n, (nl, email) in enumerate(pairs)
                                         if (nl, email) != ("101", "deniz@ornek.com.tr")))
        return removed, updated

    removed, updated = run(sandbox, again, lists=TWO_LISTS)
    assert removed[0].action == "deleted" and all(o.rejected is None and o.suppressed is None for o in updated)
    assert sorted(_gets(sandbox)) == ["/list/101", f"/list/101/record/{created[2].remote_id}", "/list/102"]
    assert sandbox.write_requests() == 5 + 1
    assert {row["mssys_firstname"] for nl in (101, 102) for row in sandbox.records(USER, nl)} == {"Yeni"}


def test_the_cache_follows_the_clients_own_writes() -> None:
    """Within one run: a record made, changed, deleted and made again is known from the cache
    (no read), so a repeat sends nothing and a create after the delete subscribes anew."""
    sandbox = sandbox_for("negative")

    async def scenario(provider: MailMasterPlusProvider) -> list[PushOutcome]:
        made = (await push(provider, upsert(provider, "ayse@ornek.com.tr")))[0]
        await push(provider, upsert(provider, "ayse@ornek.com.tr", remote_id=made.remote_id))           # same values
        await push(provider, upsert(provider, "ayse@ornek.com.tr", remote_id=made.remote_id, first_name="Yeni"))
        await push(provider, upsert(provider, "ayse@ornek.com.tr", remote_id=made.remote_id, first_name="Yeni"))
        await provider.delete_members([MemberDelete(MemberKey("M1", "L1"), "ayse@ornek.com.tr", made.remote_id,
                                                    ("101",), "left the list")])
        return await push(provider, upsert(provider, "ayse@ornek.com.tr", remote_id=made.remote_id))

    (again,) = run(sandbox, scenario)
    assert again.rejected is None and again.remote_id == "2"
    methods = [(method, path) for method, path, _ in sandbox.request_log]
    assert methods == [("GET", "/list/101"), ("POST", "/subscribe/101/form/201"),
                       ("GET", "/list/101/field/email/value/ayse@ornek.com.tr"),   # answer 1: a code or the id
                       ("PUT", "/update/101/form/301/record/1"),
                       ("GET", "/list/101/record/1"), ("DELETE", "/delete/101/record/1"),
                       ("POST", "/subscribe/101/form/201"),
                       ("GET", "/list/101/field/email/value/ayse@ornek.com.tr")]   # answer 2: the same
    assert [row["mssys_firstname"] for row in sandbox.records(USER, 101)] == ["Ayşe"]


@DIALECTS
def test_an_unsubscribe_after_the_runs_read_is_not_overwritten_and_the_next_run_reports_it(dialect: str) -> None:
    """The cache says active, the recipient unsubscribed since: the update sends the list fields
    only (the update form cannot change ``active``), the record stays unsubscribed, and the next
    run's read reports it (nothing written)."""
    sandbox = sandbox_for(dialect)
    created = run(sandbox, lambda p: one(p, "ayse@ornek.com.tr")())

    async def scenario(provider: MailMasterPlusProvider) -> PushOutcome:
        await statuses(provider)
        sandbox.unsubscribe(USER, 101, "ayse@ornek.com.tr")          # the recipient's link, mid-run
        return (await push(provider, upsert(provider, "ayse@ornek.com.tr", remote_id=created.remote_id,
                                            first_name="Yeni")))[0]

    outcome = run(sandbox, scenario)
    assert outcome.rejected is None
    (row,) = sandbox.records(USER, 101)
    assert row["active"] == "0" and row["mssys_firstname"] == "Yeni"
    sandbox.reset_log()
    later = run(sandbox, lambda p: one(p, "ayse@ornek.com.tr", remote_id=created.remote_id, first_name="Yeni")())
    assert later.suppressed is not None and later.suppressed.remote_list == "101"
    assert sandbox.write_requests() == 0 and sandbox.records(USER, 101)[0]["active"] == "0"


@DIALECTS
def test_a_record_deleted_in_the_panel_after_the_runs_read_is_created_again(dialect: str) -> None:
    """The cache holds a record the panel deleted since: the update answers the documented failure
    (an empty body), the record is read back, and, gone, it is made again by a create."""
    sandbox = sandbox_for(dialect)
    created = run(sandbox, lambda p: one(p, "ayse@ornek.com.tr")())

    async def scenario(provider: MailMasterPlusProvider) -> PushOutcome:
        await statuses(provider)
        sandbox.delete_in_panel(USER, 101, "ayse@ornek.com.tr")
        return (await push(provider, upsert(provider, "ayse@ornek.com.tr", remote_id=created.remote_id,
                                            first_name="Yeni")))[0]

    outcome = run(sandbox, scenario)
    assert outcome.rejected is None and outcome.suppressed is None and outcome.remote_id == "2"
    (row,) = sandbox.records(USER, 101)
    assert (row["id"], row["active"], row["mssys_firstname"]) == ("2", "1", "Yeni")


@pytest.mark.parametrize("since", ["unsubscribed again", "active again", "deleted"])
def test_a_resubscribe_reads_the_record_fresh_and_never_replaces_a_newer_unsubscribe(since: str) -> None:
    """A re-subscribe deletes the record (for good) and makes it anew: it reads the record fresh
    first. Unsubscribed again after the unsubscribe the engine decided on: reported, nothing
    written. Active again (the panel): updated, not replaced. Deleted: made anew."""
    sandbox = sandbox_for("negative")                    # a reading with mssys_last_statuschange_date
    clock = [1_800_000_000.0]
    sandbox.clock = lambda: clock[0]
    created = run(sandbox, lambda p: one(p, "ayse@ornek.com.tr")())
    clock[0] += 60
    sandbox.unsubscribe(USER, 101, "ayse@ornek.com.tr")

    async def scenario(provider: MailMasterPlusProvider) -> PushOutcome:
        await statuses(provider)                        # the cache: unsubscribed at +60 s
        clock[0] += 60
        if since == "deleted":
            sandbox.delete_in_panel(USER, 101, "ayse@ornek.com.tr")
        else:
            sandbox.reactivate_in_panel(USER, 101, "ayse@ornek.com.tr")
        if since == "unsubscribed again":
            clock[0] += 60
            sandbox.unsubscribe(USER, 101, "ayse@ornek.com.tr")
        sandbox.reset_log()
        return (await push(provider, upsert(provider, "ayse@ornek.com.tr", remote_id=created.remote_id,
                                            resubscribe=True)))[0]

    outcome = run(sandbox, scenario)
    (row,) = sandbox.records(USER, 101)
    if since == "unsubscribed again":
        assert outcome.suppressed is not None and outcome.suppressed.occurred_at == dt.datetime.fromtimestamp(
            clock[0], dt.UTC)
        assert (row["id"], row["active"]) == (created.remote_id, "0") and sandbox.write_requests() == 0
    elif since == "active again":
        assert outcome.rejected is None and outcome.suppressed is None
        assert (row["id"], row["active"]) == (created.remote_id, "1") and sandbox.write_requests() == 0
    else:
        assert outcome.rejected is None and outcome.remote_id == row["id"] != created.remote_id
        assert row["active"] == "1" and [m for m, _, _ in sandbox.request_log if m == "DELETE"] == []


def test_a_removal_reads_its_record_fresh_and_a_record_gone_since_the_runs_read_is_not_deleted_again() -> None:
    """A delete is for good: the record found in the cache is read fresh first. Gone since the
    read (the panel), nothing is sent, and the cache forgets it (a later create subscribes anew)."""
    sandbox = sandbox_for()
    created = run(sandbox, lambda p: one(p, "ayse@ornek.com.tr")())

    async def scenario(provider: MailMasterPlusProvider) -> tuple[list[PushOutcome], PushOutcome]:
        await statuses(provider)
        sandbox.delete_in_panel(USER, 101, "ayse@ornek.com.tr")
        sandbox.reset_log()
        removed = await provider.delete_members([MemberDelete(MemberKey("M1", "L1"), "ayse@ornek.com.tr",
                                                              created.remote_id, ("101",), "left the list")])
        again = (await push(provider, upsert(provider, "ayse@ornek.com.tr")))[0]
        return removed, again

    removed, again = run(sandbox, scenario)
    assert removed[0].rejected is None and again.rejected is None and again.remote_id == "2"
    assert [(m, p) for m, p, _ in sandbox.request_log] == [
        ("GET", f"/list/101/record/{created.remote_id}"), ("POST", "/subscribe/101/form/201"),
        ("GET", "/list/101/field/email/value/ayse@ornek.com.tr")]        # answer 2: a code or the id
