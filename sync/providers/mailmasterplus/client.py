"""MailMasterPlus (MMP): records per list through forms, bare-number answers, a full status scan.

Every path, answer and guess lives in :mod:`sync.providers.mailmasterplus.api`; this module only
speaks it. Lists are made in MMP's panel and mapped per connection (``lists`` setting); one MMP
record exists per (list, member), so the engine sends one item per list (``per_list``).

Consent: a push never makes an unsubscribed record active again unless the engine decided so
(``MemberUpsert.resubscribe``). An update reads its record first: an unsubscribed record is
reported (``PushOutcome.suppressed``, nothing written). A create looks for the address first
(the status scan's index, else a read by e-mail), so an existing record is treated as an update.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import zoneinfo
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
import structlog

from sync.emails import normalize_email
from sync.errors import (
    AnswerLostError,
    AuthenticationError,
    FatalError,
    MalformedAnswerError,
    ProviderError,
    RejectedRow,
)
from sync.http import Auth, ProviderHTTP, describe, json_of
from sync.logs import SECRETS
from sync.providers.base import (
    Capabilities,
    MemberDelete,
    MemberSnapshot,
    MemberUpsert,
    PushOutcome,
    RemoteList,
    RemoteStatus,
)
from sync.providers.mailmasterplus import api

log = structlog.get_logger(__name__)

#: No batch endpoint: every record is its own request, so a batch is only a checkpoint.
#: No documented rate limit (rate_per_s None); four requests in flight per connection.
CAPABILITIES = Capabilities(
    max_batch=200, async_bulk_import=False, lists="mapped", supports_list_rename=False,
    supports_list_delete=False, pushes_members=True, supports_unsubscribe=True, member_removal="delete",
    member_key="email", membership_model="per_list", concurrency=4, rate_per_s=None,
    status_pull="full_scan", pulls_consents=False, has_campaign_reports=False, custom_fields=True,
)
_TZ = zoneinfo.ZoneInfo(api.SERVICE_TIME_ZONE)


def _check(response: httpx.Response, what: str) -> None:
    """THE error table of MailMasterPlus: documented status -> what the caller does (one place)."""
    status = response.status_code
    if status < 300:
        return
    if status == 401:
        raise AuthenticationError("MailMasterPlus refused the API user name or password (401): check the "
                                  "connection's credentials (`crm-esp-sync connection rotate`)", status_code=401)
    if status == 404:   # "ismeretlen erőforrás": a wrong base URL or path, for every call alike
        raise FatalError(f"{what}: MailMasterPlus does not know this resource (404); check the connection's "
                         "base URL", status_code=404, provider_code="404")
    if status == 405:   # "érvénytelen metódus": our bug, for every call alike
        raise FatalError(f"{what}: MailMasterPlus refused the HTTP method (405)", status_code=405,
                         provider_code="405")
    if status == api.STATUS_BAD_PARAMETERS:   # "hibás paraméterek": this row, or this list's mapping
        raise RejectedRow(f"{what}: MailMasterPlus refused the parameters (406): check the list and form ids "
                          f"and field names of the connection's `lists` setting ({describe(response)})",
                          status_code=406, provider_code="406")
    raise FatalError(f"{what}: {describe(response)}", status_code=status, provider_code=str(status))


def _as_reject(exc: ProviderError) -> RejectedRow:
    """A provider error on ONE row, as that row's reject (retried by a later run)."""
    if isinstance(exc, RejectedRow):
        return exc
    return RejectedRow(f"{exc.message} (will retry)", status_code=exc.status_code,
                       provider_code=exc.provider_code or type(exc).__name__)


def number_of(response: httpx.Response, what: str) -> int | None:
    """A bare-number answer as an int; None for the documented empty body (update, list)."""
    text = response.content.strip()
    if not text:
        return None
    try:
        return int(text.decode("utf-8").strip().strip('"'))
    except (UnicodeDecodeError, ValueError):
        raise MalformedAnswerError(f"{what}: {response.request.method} answered HTTP {response.status_code} "
                                   "with something that is not a number", status_code=response.status_code) from None


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def is_active(record: Mapping[str, Any]) -> bool:
    """A record's subscription state (``api.ACTIVE_FIELD``: "1"/"0", also 1/0 and booleans)."""
    value = record.get(api.ACTIVE_FIELD)
    if isinstance(value, bool):
        return value
    return _text(value).strip().lower() in ("1", "true", "yes", "y")


def parse_time(value: Any) -> dt.datetime | None:
    """An MMP date (``api.DATE_FORMAT`` in ``api.SERVICE_TIME_ZONE``, or ISO 8601) in UTC."""
    text = _text(value).strip()
    if not text or text.startswith("0000"):
        return None
    try:
        parsed = dt.datetime.strptime(text, api.DATE_FORMAT)
    except ValueError:
        try:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=_TZ)).astimezone(dt.UTC)


class BasicAuth(Auth):
    """HTTP basic auth (documented), as a header: the credentials never go into a URL."""

    def __init__(self, username: str, password: str) -> None:
        token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        SECRETS.register(password, token)
        self._header = {"Authorization": f"Basic {token}"}

    async def headers(self, http: ProviderHTTP) -> Mapping[str, str]:
        return self._header

    def invalidate(self) -> None:
        """Nothing cached to forget: a second 401 is final (ProviderHTTP raises it)."""


@dataclass(frozen=True)
class MappedList:
    """One CRM list's MMP list with its forms and field names (the connection's ``lists`` setting)."""

    crm_list: str
    nl_id: str
    subscribe_form: str
    update_form: str
    name: str
    fields: Mapping[str, str]


@dataclass(frozen=True)
class Record:
    id: str
    email: str
    active: bool
    changed_at: dt.datetime | None


def _record(row: Mapping[str, Any]) -> Record:
    return Record(_text(row.get(api.RECORD_ID_FIELD)).strip(), normalize_email(_text(row.get(api.EMAIL_FIELD))),
                  is_active(row), parse_time(row.get(api.STATUS_CHANGED_FIELD)) or parse_time(row.get(
                      api.UPDATED_AT_FIELD)))


class MailMasterPlusProvider:
    """The MailMasterPlus side of a connection."""

    name: ClassVar[str] = "mailmasterplus"
    #: What `connection test` says of a passing login and list (sync/ops/connection_test.py).
    login_detail: ClassVar[str] = "HTTP basic auth accepted"
    list_detail: ClassVar[str] = "readable (its forms are only checked by a write)"

    def __init__(self, http: ProviderHTTP, lists: Mapping[str, Mapping[str, Any]],
                 capabilities: Capabilities = CAPABILITIES) -> None:
        self.http = http
        self.capabilities = capabilities
        self._lists = {crm_list: MappedList(crm_list, str(entry["nl_id"]), str(entry["subscribe_form"]),
                                            str(entry["update_form"]), str(entry["name"]),
                                            {column: name for column, name in entry["fields"].items() if name})
                       for crm_list, entry in api.parse_list_mapping("lists", lists).items()}
        self._by_nl = {mapped.nl_id: mapped for mapped in self._lists.values()}
        #: nl_id -> normalised e-mail -> record, from the last full read of that list (the status
        #: pull), kept current by our own writes. A create trusts it to know whether the address
        #: is there already; a list not read this session is asked record by record.
        self._index: dict[str, dict[str, Record]] = {}

    @classmethod
    def create(cls, http_factory: Callable[[Capabilities, Auth], ProviderHTTP], credentials: Mapping[str, str],
               settings: Mapping[str, Any], integrator: Mapping[str, str] | None = None) -> MailMasterPlusProvider:
        auth = BasicAuth(credentials["username"], credentials["password"])
        return cls(http_factory(CAPABILITIES, auth), settings.get("lists") or {}, CAPABILITIES)

    # --- lists ----------------------------------------------------------------------------

    def mapped_lists(self) -> Mapping[str, RemoteList]:
        return {crm_list: RemoteList(mapped.nl_id, mapped.name, {
                    "subscribe_form": mapped.subscribe_form, "update_form": mapped.update_form,
                    "fields": dict(mapped.fields)})
                for crm_list, mapped in self._lists.items()}

    async def check_lists(self) -> list[str]:
        """One line per mapped list the service does not give us (for ``connection test``).
        Form ids cannot be checked without writing a record, so they are not."""
        problems = []
        for mapped in sorted(self._lists.values(), key=lambda m: m.crm_list):
            try:
                await self._read_list(mapped.nl_id)
            except RejectedRow as exc:
                problems.append(f"CRM list {mapped.crm_list} -> MMP list {mapped.nl_id}: {exc.reason}")
        return problems

    # --- reading --------------------------------------------------------------------------

    async def _read_list(self, nl_id: str) -> list[Record]:
        """Every record of a list (``GET list/<nl_id>``); indexes them by e-mail."""
        what = f"read list {nl_id}"
        response = await self.http.request("GET", api.LIST_PATH.format(nl_id=nl_id))
        _check(response, what)
        rows = [] if not response.content.strip() else json_of(response, what, shape=list)
        records = [_record(row) for row in rows if isinstance(row, dict)]
        index: dict[str, Record] = {}
        for record in sorted(records, key=lambda r: _sort_id(r.id)):
            index.setdefault(record.email, record)   # a non-unique list: the oldest record stands
        self._index[nl_id] = index
        return records

    async def _read_one(self, path: str, what: str) -> Record | None:
        response = await self.http.request("GET", path)
        _check(response, what)
        if not response.content.strip():
            return None                  # documented: an empty body when there is no such record
        return _record(json_of(response, what, required=(api.RECORD_ID_FIELD,)))

    async def _read_record(self, nl_id: str, record_id: str) -> Record | None:
        return await self._read_one(api.LIST_RECORD_PATH.format(nl_id=nl_id, id=quote(record_id, safe="")),
                                    f"read record {record_id} of list {nl_id}")

    async def _read_by_email(self, nl_id: str, email: str) -> Record | None:
        found = await self._read_one(api.LIST_FIELD_PATH.format(nl_id=nl_id, field=api.EMAIL_FIELD,
                                                                value=quote(email, safe="")),
                                     f"find {api.EMAIL_FIELD} in list {nl_id}")
        return found if found is not None and found.email == normalize_email(email) else None

    async def _find(self, nl_id: str, email: str) -> Record | None:
        """The record holding ``email``: from the index of a list read this session, else asked."""
        index = self._index.get(nl_id)
        if index is not None:
            return index.get(normalize_email(email))
        return await self._read_by_email(nl_id, email)

    def _remember(self, nl_id: str, record: Record | None, email: str) -> None:
        index = self._index.get(nl_id)
        if index is None:
            return
        if record is None:
            index.pop(normalize_email(email), None)
        else:
            index[record.email] = record

    # --- members --------------------------------------------------------------------------

    def build_payload(self, member: MemberSnapshot) -> dict[str, Any]:
        """Neutral values of the CRM columns some mapped list sends, plus e-mail and status; each
        list's own field names are applied when it is pushed (``_fields_for``)."""
        columns = sorted({column for mapped in self._lists.values() for column in mapped.fields})
        values = {column: getattr(member, column) for column in columns}
        payload: dict[str, Any] = {column: value.isoformat() if isinstance(value, dt.datetime) else value
                                   for column, value in values.items()}
        if member.fields:     # the connection's custom fields: list field name -> value, sent to every list
            payload["custom_fields"] = {name: _custom_text(value) for name, value in sorted(member.fields.items())}
        return payload | {"email": normalize_email(member.email),
                          "status": "active" if member.status == "active" else "unsubscribed"}

    @staticmethod
    def _fields_for(mapped: MappedList, payload: Mapping[str, Any]) -> dict[str, str]:
        return {field_name: _text(payload.get(column)) for column, field_name in mapped.fields.items()} | dict(
            payload.get("custom_fields") or {})

    async def upsert_members(self, batch: Sequence[MemberUpsert]) -> list[PushOutcome]:
        return list(await asyncio.gather(*(self._upsert_one(item) for item in batch)))

    async def _upsert_one(self, item: MemberUpsert) -> PushOutcome:
        try:
            if len(item.remote_lists) != 1 or item.remote_lists[0] not in self._by_nl:
                return PushOutcome(item.key, rejected=RejectedRow(
                    f"MMP list {', '.join(item.remote_lists) or '(none)'} is not in the connection's `lists` setting",
                    provider_code="unmapped"))
            mapped = self._by_nl[item.remote_lists[0]]
            record = None
            if item.remote_id:
                record = await self._read_record(mapped.nl_id, item.remote_id)
                if record is not None and record.email != normalize_email(item.email):
                    record = None        # the id now holds someone else: not ours
            if record is None:
                record = await self._find(mapped.nl_id, item.email)
            if record is None:
                return await self._create(mapped, item)
            return await self._update(mapped, item, record)
        except FatalError:
            raise
        except ProviderError as exc:
            return PushOutcome(item.key, rejected=_as_reject(exc))

    async def _create(self, mapped: MappedList, item: MemberUpsert) -> PushOutcome:
        """Subscribe an address the list does not hold. Never for someone to be unsubscribed: a
        record is not created only to unsubscribe it (the README's rule for RET)."""
        if item.payload.get("status") != "active":
            return PushOutcome(item.key, rejected=RejectedRow(
                f"not created in MMP list {mapped.nl_id}: the member is to be unsubscribed and the list does not "
                "hold the address", provider_code="not_created_unsubscribed"))
        body = {api.EMAIL_FIELD: normalize_email(item.email)} | self._fields_for(mapped, item.payload)
        path = api.SUBSCRIBE_PATH.format(nl_id=mapped.nl_id, ns_id=mapped.subscribe_form)
        what = f"subscribe to list {mapped.nl_id}"
        attempts = self.http.policy.max_attempts   # as many as the HTTP layer gives a repeatable call
        for attempt in range(1, attempts + 1):
            try:
                response = await self.http.request("POST", path, json=body)
            except AnswerLostError as exc:
                found = await self._read_by_email(mapped.nl_id, item.email)
                log.info("mmp.subscribe_answer_lost", list=mapped.nl_id, found=found is not None, attempt=attempt)
                if found is not None:
                    self._remember(mapped.nl_id, found, item.email)
                    return await self._update(mapped, item, found)
                if attempt == attempts:
                    raise AnswerLostError(f"{exc.message} ({what}, tried {attempt} times)",
                                          status_code=exc.status_code) from exc
                continue
            _check(response, what)
            answer = number_of(response, what)
            if answer is None:
                raise MalformedAnswerError(f"{what}: an empty answer where a record id or a code was expected")
            return await self.resolve_subscribe_answer(mapped, item, answer)
        raise AssertionError("unreachable")

    async def resolve_subscribe_answer(self, mapped: MappedList, item: MemberUpsert, answer: int) -> PushOutcome:
        """THE RULE for a subscribe's bare-number answer (api.SUBSCRIBE_*).

        - ``answer >= 3``: the new record's id. No code is 3 or more, in either dialect.
        - ``0``: another failure: a reject, retried by a later run.
        - ``1, 2, -1, -2``: ambiguous. In the document's dialect 1 = "already on this unique
          list" and 2 = "malformed e-mail", in the public clients' dialect those are -1 and -2,
          and 1 and 2 are also the ids of a list's first two records. The address is read back
          (``list/<nl_id>/field/email/value/<email>``):
            - found: the list holds the address under the id read (just created by us, or there
              before); it is treated as an existing record: its state is checked, and it is
              updated unless it is unsubscribed (then reported, nothing written). For a record
              we have just created that update is a harmless repeat of the same values.
            - not found: the answer was a code. 2/-2: "MMP finds the e-mail malformed", a reject.
              1/-1: "exists" yet not found, a reject retried by a later run.
        - anything else (-3 and below): an answer the document does not have: retried later.
        """
        email = normalize_email(item.email)
        if answer >= 3:
            record = Record(str(answer), email, True, dt.datetime.now(dt.UTC))
            self._remember(mapped.nl_id, record, email)
            return PushOutcome(item.key, remote_id=record.id)
        if answer == api.SUBSCRIBE_FAILED:
            return PushOutcome(item.key, rejected=RejectedRow(
                f"MMP list {mapped.nl_id} refused the subscription (answer 0: a failure the service does not "
                "explain; will retry)", provider_code="subscribe_0"))
        if answer in (*api.SUBSCRIBE_EXISTS_CODES, *api.SUBSCRIBE_MALFORMED_CODES):
            found = await self._read_by_email(mapped.nl_id, email)
            if found is not None:
                self._remember(mapped.nl_id, found, email)
                return await self._update(mapped, item, found)
            if answer in api.SUBSCRIBE_MALFORMED_CODES:
                return PushOutcome(item.key, rejected=RejectedRow(
                    f"MMP finds the e-mail address malformed (answer {answer})", provider_code="malformed_email"))
            return PushOutcome(item.key, rejected=RejectedRow(
                f"MMP list {mapped.nl_id} says it holds the address already (answer {answer}) but no record has it "
                "(will retry)", provider_code="exists_not_found"))
        raise MalformedAnswerError(f"subscribe to list {mapped.nl_id}: answer {answer} is not a documented code")

    async def _update(self, mapped: MappedList, item: MemberUpsert, record: Record) -> PushOutcome:
        """An existing record: report it if it is unsubscribed and the engine does not re-subscribe;
        re-subscribe by delete + subscribe (api.RESUBSCRIBE_BY_RECREATE); else update its fields
        and, when the engine pushes "unsubscribed", unsubscribe it."""
        wanted = item.payload.get("status")
        if wanted == "active" and not record.active:
            if not item.resubscribe:
                return PushOutcome(item.key, remote_id=record.id, suppressed=self._suppression(mapped, record))
            await self._delete_record(mapped.nl_id, record.id, item.email)
            return await self._create(mapped, replace(item, remote_id=None, resubscribe=False))
        what = f"update record {record.id} of list {mapped.nl_id}"
        response = await self.http.request("PUT", api.UPDATE_RECORD_PATH.format(
            nl_id=mapped.nl_id, ns_id=mapped.update_form, id=quote(record.id, safe="")),
            json=self._fields_for(mapped, item.payload))
        _check(response, what)
        changed = number_of(response, what)
        if not changed:                       # empty (documented failure) or 0 records
            return PushOutcome(item.key, rejected=RejectedRow(
                f"{what}: MMP answered {'nothing' if changed is None else changed} (will retry)",
                provider_code="update_failed"))
        if wanted != "active" and record.active:
            await self._unsubscribe(mapped.nl_id, record.id)
            record = replace(record, active=False)
        self._remember(mapped.nl_id, record, item.email)
        return PushOutcome(item.key, remote_id=record.id)

    async def _unsubscribe(self, nl_id: str, record_id: str) -> None:
        what = f"unsubscribe record {record_id} of list {nl_id}"
        response = await self.http.request("GET", api.UNSUBSCRIBE_RECORD_PATH.format(
            nl_id=nl_id, id=quote(record_id, safe="")))
        _check(response, what)
        if number_of(response, what) != api.SUCCESS:
            raise RejectedRow(f"{what}: MMP answered 0 (will retry)", provider_code="unsubscribe_0")

    @staticmethod
    def _suppression(mapped: MappedList, record: Record) -> RemoteStatus:
        return RemoteStatus(record.email, "unsubscribed", record.changed_at or dt.datetime.now(dt.UTC),
                            remote_id=record.id, remote_list=mapped.nl_id)

    # --- removals -------------------------------------------------------------------------

    async def delete_members(self, batch: Sequence[MemberDelete]) -> list[PushOutcome]:
        return list(await asyncio.gather(*(self._delete_one(item) for item in batch)))

    async def _delete_one(self, item: MemberDelete) -> PushOutcome:
        """Delete the member's record in each of its lists: by the stored id, else (a crash left no
        id, or the id now holds another address) the record found by e-mail."""
        try:
            for nl_id in self._lists_of(item):
                record_id = item.remote_id
                if record_id is not None:
                    record = await self._read_record(nl_id, record_id)
                    record_id = record.id if record is not None and record.email == normalize_email(item.email) \
                        else None
                if record_id is None:
                    found = await self._find(nl_id, item.email)
                    record_id = found.id if found is not None else None
                if record_id is not None:
                    await self._delete_record(nl_id, record_id, item.email)
        except FatalError:
            raise
        except ProviderError as exc:
            return PushOutcome(item.key, rejected=_as_reject(exc))
        return PushOutcome(item.key, remote_id=item.remote_id, action="deleted")

    def _lists_of(self, item: MemberDelete) -> tuple[str, ...]:
        """The MMP lists a removal concerns: the link's, else (a provisional link has none yet) the
        one its CRM list maps to, else every mapped list."""
        if item.remote_lists:
            return tuple(item.remote_lists)
        mapped = self._lists.get(item.key.crm_list_id)
        return (mapped.nl_id,) if mapped is not None else tuple(sorted(self._by_nl, key=_sort_id))

    async def _delete_record(self, nl_id: str, record_id: str, email: str) -> None:
        """``DELETE delete/<nl_id>/record/<id>``; a "0" is success when the record is gone (a
        repeat of a delete whose answer was lost), a reject when it is still there."""
        what = f"delete record {record_id} of list {nl_id}"
        response = await self.http.request("DELETE", api.DELETE_RECORD_PATH.format(
            nl_id=nl_id, id=quote(record_id, safe="")))
        _check(response, what)
        if number_of(response, what) != api.SUCCESS and await self._read_record(nl_id, record_id) is not None:
            raise RejectedRow(f"{what}: MMP answered 0 and the record is still there (will retry)",
                              provider_code="delete_0")
        self._remember(nl_id, None, email)

    # --- pulls ----------------------------------------------------------------------------

    async def pull_statuses(self, since: dt.datetime | None) -> AsyncIterator[RemoteStatus]:
        """A full scan (``status_pull="full_scan"``): every record of every mapped list
        (``GET list/<nl_id>``); each unsubscribed record is one suppression of that list
        (``remote_list``). ``since`` is ignored: the document offers no filter by date. A list the
        service refuses (406: not the account's) is logged and skipped; its members' pushes
        become rejects that say so."""
        for nl_id in sorted(self._by_nl, key=_sort_id):
            try:
                records = await self._read_list(nl_id)
            except RejectedRow as exc:
                log.warning("mmp.list_unreadable", remote_list=nl_id, reason=exc.reason)
                continue
            for record in records:
                if not record.active and record.email:
                    yield self._suppression(self._by_nl[nl_id], record)

    async def refresh_statuses(self, remote_lists: Sequence[str]) -> AsyncIterator[RemoteStatus]:
        """Nothing: MMP cannot tell cheaply what changed, and every update reads its record first
        (``_upsert_one``), reporting an unsubscribe made since the pull as ``suppressed``."""
        return
        yield  # an async generator that yields nothing


def _sort_id(value: str) -> tuple[int, str]:
    return (int(value), "") if value.isdigit() else (1 << 62, value)


def _custom_text(value: Any) -> str:
    """A custom field's value as list field text (the document: values are UTF-8 text)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)
