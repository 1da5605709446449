"""MailMasterPlus client against its in-process sandbox: the bare-number rule in both dialects,
consent, lost answers, the error table, the list mapping, and no secret in URLs or errors."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest

from sync.errors import AuthenticationError, ConfigurationError, FatalError, RejectedRow
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
from sync.providers.specs import get_spec
from sync.sandbox import MailMasterPlusSandbox, sandbox_transport

T = TypeVar("T")
USER, PASSWORD = "acme-mmp", "MMP-gizli-şifre-9"
BASE = "http://mmp.sandbox/"
FAST = HttpPolicy(backoff_base_s=0.001, backoff_max_s=0.002, max_attempts=4)
LISTS = {"L1": {"nl_id": 101, "subscribe_form": 201, "update_form": 301, "name": "Müşteri Listesi"}}
DIALECTS = pytest.mark.parametrize("dialect", ["document", "negative"])


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
        lists: dict[str, Any] | None = None) -> T:
    async def go() -> T:
        inner = transport or sandbox_transport(sandbox.app)  # type: ignore[union-attr]
        async with httpx.AsyncClient(transport=inner) as client:
            http = ProviderHTTP(client, provider="mailmasterplus", base_url=BASE, policy=FAST,
                                auth=BasicAuth(USER, password))
            return await scenario(MailMasterPlusProvider(http, lists or LISTS))
    return asyncio.run(go())


def upsert(provider: MailMasterPlusProvider, email: str, *, status: str = "active", remote_id: str | None = None,
           resubscribe: bool = False, first_name: str = "Ayşe") -> MemberUpsert:
    payload = provider.build_payload(MemberSnapshot(email, first_name, "Çelik", "905321112233", "İzmir",
                                                    status))  # type: ignore[arg-type]
    return MemberUpsert(MemberKey("M1", "L1"), email, payload, ("101",), remote_id=remote_id,
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
    # before each create (the list was not read this session) and after each ambiguous answer
    assert len(reads_back) == 3 + 2


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
                                              ("0", "subscribe_0"), ("-7", "MalformedAnswerError"),
                                              ("ok", "MalformedAnswerError")])
def test_a_code_whose_address_is_not_found_is_read_as_the_code(answer: str, code: str) -> None:
    outcome = run(None, lambda p: one(p, "ayse@ornek.com.tr")(), transport=_fake(answer))
    assert outcome.rejected is not None and outcome.rejected.provider_code == code


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
    sandbox = sandbox_for()
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
