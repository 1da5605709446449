"""MailMasterPlus (MMP): records per list through forms, bare-number answers, a full status scan.

Every path, answer and reading lives in :mod:`sync.providers.mailmasterplus.api`; this module only
speaks it. Lists are made in MMP's panel and mapped per connection (``lists`` setting); one MMP
record exists per (list, member), so the engine sends one item per list (``per_list``).

Answers the document does not show are read tolerantly (``records_of``, ``one_record``,
``number_answer``: every reading in api.py's table) and the reading seen is noted in
``self.readings``; an answer in none of them is ``UnknownReadingError`` naming the endpoint. A
record without a readable ``active`` is such an error, never "unsubscribed".

Opt-outs (docs/providers/mailmasterplus.md):

- An update looks its record up first, in the run's cache of its list (each list is read whole
  once per run, see ``MailMasterPlusProvider``): an unsubscribed record is reported
  (``PushOutcome.suppressed``, nothing written) unless the engine decided to re-subscribe
  (``MemberUpsert.resubscribe``; the record is then read fresh before it is replaced).
- A create never makes an address active in a list while one of the connection's mapped lists
  holds it unsubscribed (address-wide), unless the engine re-subscribes it: the recipient told
  this sender "no", and a CRM list join is not a new consent. A mapped list that cannot be read
  (406) withholds the create as a reject (``api.OPT_OUT_UNCHECKED``), retried later.
- A removal never deletes an unsubscribed record (the provider's proof of the opt-out), except a
  KVKK erasure; the record stays, unsubscribed (``api.LEFT_UNSUBSCRIBED``).
- An update whose values the record holds already is not sent: a no-change run writes nothing.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import json
import re
import zoneinfo
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
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
    UnknownReadingError,
)
from sync.http import Auth, ProviderHTTP, describe
from sync.logs import SECRETS
from sync.providers.base import (
    Capabilities,
    MemberDelete,
    MemberSnapshot,
    MemberUpsert,
    PushOutcome,
    RemoteList,
    RemoteStatus,
    refuse_bad_address,
    refuse_too_long,
)
from sync.providers.mailmasterplus import api
from sync.providers.readings import ReadingLog, unknown_reading

log = structlog.get_logger(__name__)

#: No batch endpoint: every record is its own request, so a batch is only a checkpoint (api.py's
#: limits). No documented rate limit (rate_per_s None); ``concurrency`` requests in flight at most.
CAPABILITIES = Capabilities(
    max_batch=api.MAX_BATCH, push_window=api.PUSH_WINDOW,
    async_bulk_import=False, lists="mapped", supports_list_rename=False,
    supports_list_delete=False, pushes_members=True, supports_unsubscribe=True, member_removal="delete",
    member_key="email", membership_model="per_list", concurrency=api.CONCURRENCY, rate_per_s=None,
    status_pull="full_scan", pulls_consents=False, has_campaign_reports=False, custom_fields=True,
)
_TZ = zoneinfo.ZoneInfo(api.SERVICE_TIME_ZONE)
_WHOLE_NUMBER = re.compile(r"^-?[0-9]{1,19}$")
_QUOTED_NUMBER = re.compile(r'^"\s*(-?[0-9]{1,19})\s*"$')
_RECORD_ID = re.compile(r"^[1-9][0-9]{0,18}$")
#: The engine's "no time" flag on a status, where its ``RemoteStatus`` has one (``dated``): the
#: engine then keeps the time it first saw the state instead of this pull's. Without the flag the
#: time is this pull's (never earlier than the truth, so never beaten by an older consent).
_UNDATED: dict[str, Any] = {"dated": False} if "dated" in {f.name for f in dataclasses.fields(RemoteStatus)} else {}


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


def _body_text(response: httpx.Response, what: str) -> str:
    """The answer's text, stripped; an HTML page (a proxy's error page) is a transient fault."""
    content = response.content.strip()
    if content[:1] == b"<":
        raise MalformedAnswerError(f"{what}: {response.request.method} answered HTTP {response.status_code} with "
                                   "an HTML page", status_code=response.status_code)
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedAnswerError(f"{what}: the answer is not UTF-8 text (the document: UTF-8)",
                                   status_code=response.status_code) from None


def number_answer(response: httpx.Response, what: str, endpoint: str, readings: ReadingLog, *,
                  booleans: bool = False) -> int | None:
    """A bare-number answer as an int (api.py's table: ``5``, ``"5"``; ``true``/``false`` where
    ``booleans``); None for the documented empty body."""
    text = _body_text(response, what)
    if not text:
        return None
    if _WHOLE_NUMBER.match(text):
        readings.note(endpoint, api.READ_BARE_NUMBER)
        return int(text)
    quoted = _QUOTED_NUMBER.match(text)
    if quoted:
        readings.note(endpoint, api.READ_QUOTED_NUMBER)
        return int(quoted[1])
    if booleans and text in ("true", "false"):
        readings.note(endpoint, api.READ_BOOLEAN)
        return api.SUCCESS if text == "true" else api.FAILURE
    expected = [api.READ_BARE_NUMBER, api.READ_QUOTED_NUMBER, *([api.READ_BOOLEAN] if booleans else []),
                f"{api.READ_EMPTY_BODY} (documented failure)"]
    raise unknown_reading(endpoint, expected, text)


def _json(text: str, what: str, response: httpx.Response) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise MalformedAnswerError(f"{what}: {response.request.method} answered HTTP {response.status_code} with "
                                   f"truncated or invalid JSON ({exc})", status_code=response.status_code) from None


def _text(value: Any) -> str:
    """A field value as the text a list field holds (the document: values are UTF-8 text)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def active_of(value: Any) -> tuple[bool, str] | None:
    """``active`` as (subscribed?, its reading), or None when it is in no accepted reading."""
    if isinstance(value, bool):
        return value, api.ACTIVE_READINGS[2]
    if isinstance(value, int) and value in (0, 1):
        return bool(value), api.ACTIVE_READINGS[1]
    if isinstance(value, str) and value.strip() in api.ACTIVE_TEXT:
        return api.ACTIVE_TEXT[value.strip()], api.ACTIVE_READINGS[0]
    return None


def time_of(value: Any) -> tuple[dt.datetime | None, str | None]:
    """An MMP date (``api.DATE_FORMAT`` in ``api.SERVICE_TIME_ZONE``, or ISO 8601) in UTC, with its
    reading; (None, None) when absent or MySQL's zero date; (None, "") when unreadable."""
    text = _text(value).strip()
    if not text or text.startswith("0000"):
        return None, None
    try:
        parsed, reading = dt.datetime.strptime(text, api.DATE_FORMAT), "YYYY-MM-DD HH:MM:SS, Budapest time"
    except ValueError:
        try:
            parsed, reading = dt.datetime.fromisoformat(text.replace("Z", "+00:00")), "ISO 8601"
        except ValueError:
            return None, ""
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=_TZ)).astimezone(dt.UTC), reading


def parse_time(value: Any) -> dt.datetime | None:
    """An MMP date in UTC, or None (absent, zero or unreadable)."""
    return time_of(value)[0]


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


@dataclass(frozen=True, slots=True)
class Record:
    """One MMP record, normalised: ``changed_at`` None when the service gives no time;
    ``fields`` the values (as text) of the fields we send to its list, where the record has them."""

    id: str
    email: str
    active: bool
    changed_at: dt.datetime | None
    fields: Mapping[str, str] = field(default_factory=dict)


@dataclass
class ListRecords:
    """The run's cache of one list: its records as one whole-list read showed them, by id and by
    e-mail (of several records of an address, the oldest), kept current by the client's own writes.

    What it may miss (a recipient's or the panel's change after the read) and why no write of ours
    can then overwrite an unsubscribe: ``MailMasterPlusProvider`` ("the per-run cache")."""

    by_id: dict[str, Record] = field(default_factory=dict)
    by_email: dict[str, Record] = field(default_factory=dict)

    @classmethod
    def of(cls, records: Iterable[Record]) -> ListRecords:
        cache = cls()
        for record in sorted(records, key=lambda r: _sort_id(r.id)):
            cache.by_id[record.id] = record
            cache.by_email.setdefault(record.email, record)   # a non-unique list: the oldest record stands
        return cache

    def lookup(self, email: str, record_id: str | None) -> Record | None:
        """The member's record: the one of its link's id while that still holds its address, else
        the (oldest) one holding its address; None when the list held neither."""
        address = normalize_email(email)
        record = self.by_id.get(record_id) if record_id else None
        if record is not None and record.email == address:
            return record
        return self.by_email.get(address)

    def put(self, record: Record) -> None:
        self.by_id[record.id] = record
        self.by_email[record.email] = record

    def drop(self, record_id: str, email: str) -> None:
        self.by_id.pop(record_id, None)
        held = self.by_email.get(normalize_email(email))
        if held is not None and held.id == record_id:
            del self.by_email[held.email]


@dataclass
class ListScan:
    """What one read of a whole list showed (for ``connection test`` and the readings)."""

    records: int = 0
    unsubscribed: int = 0
    reading: str = ""
    #: Field names we send to this list that no record of it shows (None: the list has no record).
    missing_fields: list[str] | None = None
    first: Record | None = None
    #: The readings of ``active`` and of the status time its records came in ("" when none).
    active: str = ""
    status_time: str = ""


class _RecordReader:
    """Turns the rows of one answer into Records, collecting the readings of ``active`` and of the
    status time (noted once per answer, not once per record)."""

    def __init__(self, endpoint: str, wanted: Sequence[str]) -> None:
        self.endpoint = endpoint
        self.wanted = wanted
        self.active_readings: set[str] = set()
        self.time_readings: set[str] = set()

    def record(self, row: Mapping[str, Any], known_id: str | None = None) -> Record:
        raw_id = row.get(api.RECORD_ID_FIELD)
        record_id = known_id if raw_id is None or raw_id == "" else _text(raw_id).strip()
        email = row.get(api.EMAIL_FIELD)
        state = active_of(row.get(api.ACTIVE_FIELD))
        if record_id is None or not _RECORD_ID.match(record_id) or not isinstance(email, str) or state is None:
            # one line naming the endpoint and what was wrong, without the member's data
            shown = {"id": raw_id if raw_id is not None else known_id,
                     api.ACTIVE_FIELD: row.get(api.ACTIVE_FIELD, "(missing)"),
                     api.EMAIL_FIELD: "(text)" if isinstance(email, str) else email, "keys": sorted(row)[:12]}
            raise unknown_reading(self.endpoint, [
                "a record with a whole-number id (its own, or its key, or the one in the path)",
                f"{api.EMAIL_FIELD} as text",
                f"{api.ACTIVE_FIELD} as {', '.join(api.ACTIVE_READINGS)} (a missing or other value is no state)"],
                shown)
        active, reading = state
        self.active_readings.add(reading)
        changed_at = None
        if not active:
            changed_at, time_reading = time_of(row.get(api.STATUS_CHANGED_FIELD))
            if time_reading == "":
                raise unknown_reading(self.endpoint, [f"{api.STATUS_CHANGED_FIELD} as YYYY-MM-DD HH:MM:SS, ISO 8601, "
                                                      "empty or absent"],
                                      {"id": record_id, api.STATUS_CHANGED_FIELD: row.get(api.STATUS_CHANGED_FIELD)})
            self.time_readings.add(time_reading or api.READ_UNDATED)
        fields = {name: _text(row[name]) for name in self.wanted if name in row}
        return Record(record_id, normalize_email(email), active, changed_at, fields)

    @property
    def active(self) -> str:
        return " + ".join(sorted(self.active_readings))

    @property
    def status_time(self) -> str:
        return " + ".join(sorted(self.time_readings))

    def note(self, readings: ReadingLog) -> None:
        if self.active_readings:
            readings.note(api.ACTIVE_ENDPOINT, self.active)
        if self.time_readings:
            readings.note(api.STATUS_TIME_ENDPOINT, self.status_time)


def _is_record(value: Any) -> bool:
    return isinstance(value, dict) and api.EMAIL_FIELD in value


def _compact(value: Any) -> str:
    """A JSON value's compact text (how api.py names the "no record" answers); "" for no body."""
    return "" if value is _NO_BODY else json.dumps(value, separators=(",", ":"))


#: The value of an empty body (JSON has no such value).
_NO_BODY: Any = object()


def records_of(value: Any, text: str, endpoint: str) -> tuple[list[tuple[str | None, dict[str, Any]]], str]:
    """The rows of a whole-list answer (``value``: its JSON, or ``_NO_BODY``) as (key, row), with
    the reading (api.py's table); an answer in no reading is UnknownReadingError."""
    if (isinstance(value, list | dict) and not value) or value is _NO_BODY:
        empty = _compact(value)
        if empty in api.LIST_NO_RECORDS:
            return [], empty or api.READ_EMPTY_BODY
    if isinstance(value, list) and all(isinstance(row, dict) for row in value):
        return [(None, row) for row in value], api.READ_ARRAY
    if isinstance(value, dict) and value and all(isinstance(row, dict) for row in value.values()):
        return [(str(key), row) for key, row in value.items()], api.READ_ID_KEYED
    raise unknown_reading(endpoint, [api.READ_ARRAY, api.READ_ID_KEYED,
                                     "no records: " + ", ".join(t or api.READ_EMPTY_BODY for t in api.LIST_NO_RECORDS)],
                          text)


def one_record(value: Any, text: str, endpoint: str) -> tuple[list[tuple[str | None, dict[str, Any]]], str] | None:
    """The rows of a one-record answer (``value``: its JSON, or ``_NO_BODY``) as (key, row), with
    the reading; None for "no record" (api.ONE_NO_RECORD)."""
    if value is _NO_BODY or (not isinstance(value, dict | list) and _compact(value) in api.ONE_NO_RECORD) \
            or value == []:
        return None
    if _is_record(value):
        return [(None, value)], api.READ_OBJECT
    if isinstance(value, list) and value and all(isinstance(row, dict) for row in value):
        return [(None, row) for row in value], api.READ_ARRAY
    if isinstance(value, dict) and value and all(isinstance(row, dict) for row in value.values()):
        return [(str(key), row) for key, row in value.items()], api.READ_ID_KEYED
    raise unknown_reading(endpoint, [api.READ_OBJECT, api.READ_ARRAY, api.READ_ID_KEYED,
                                     "no record: " + ", ".join(t or api.READ_EMPTY_BODY for t in api.ONE_NO_RECORD)],
                          text)


def _sort_id(value: str) -> tuple[int, str]:
    return (int(value), "") if value.isdigit() else (1 << 62, value)


def _differs(held: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    """Whether an update would change the record (a field the record does not show counts as empty:
    a service may leave empty fields out of its answer)."""
    return any(held.get(name, "") != value for name, value in wanted.items())


class MailMasterPlusProvider:
    """The MailMasterPlus side of a connection (one instance per run).

    **The per-run cache** (issue 26). The document's only way to read many records is the whole
    list (``GET list/<nl_id>``: "a listában lévő összes rekordot visszaadja"; it has no paging and
    no filter by date), and one record costs one request. So each mapped list is read ONCE per run
    (by the status pull, or by the first member that needs it), kept by id and by e-mail
    (``ListRecords``), updated with every write of ours, and every member's lookup is answered from
    it: an update, an unsubscribe pushed and a create cost their writes only. Memory: one
    ``Record`` per record of the mapped lists (about 0.6 KB with three mapped fields: see
    docs/providers/mailmasterplus.md), for the run's length.

    What the cache may miss, and why it overwrites no one (a recipient or the panel acting after
    the read, during the run):

    - **an unsubscribe**: the cache says active, and an update sends the list fields only; the
      update form cannot change ``active`` (a system field, api.SYSTEM_FIELDS), so the unsubscribe
      stays and the next run's pull reports it. A re-subscribe (delete + subscribe anew) and a
      removal (delete) are irreversible: each reads its record fresh first and keeps the
      guarantees (an unsubscribed record is deleted only for a re-subscribe the engine decided on
      the unsubscribe it knew, or for a KVKK erasure; an unsubscribe NEWER than the cache's is
      reported, not re-subscribed).
    - **a record created** (a sign-up form): the cache says absent, the subscribe answers "exists"
      (a unique list) and the address is read back and updated as before
      (``resolve_subscribe_answer``); in a list that takes an address twice a second record is
      made, as a create trusting the pull did before.
    - **a record deleted**: the update answers the documented failure (an empty body); the record
      is read back and, gone, made again by a create (with its opt-out checks).
    - **a field changed in the panel**: compared with the cache's value, a CRM value equal to the
      value read is not sent again, so the panel's newer value stays until the CRM changes it.
    """

    name: ClassVar[str] = "mailmasterplus"
    #: What `connection test` says of a passing login and list (sync/ops/connection_test.py).
    login_detail: ClassVar[str] = "HTTP basic auth accepted"
    list_detail: ClassVar[str] = "read, its mapped fields found (its forms are only checked by a write)"

    def __init__(self, http: ProviderHTTP, lists: Mapping[str, Mapping[str, Any]],
                 capabilities: Capabilities = CAPABILITIES, custom_fields: Iterable[str] = ()) -> None:
        self.http = http
        self.capabilities = capabilities
        self._lists = {crm_list: MappedList(crm_list, str(entry["nl_id"]), str(entry["subscribe_form"]),
                                            str(entry["update_form"]), str(entry["name"]),
                                            {column: name for column, name in entry["fields"].items() if name})
                       for crm_list, entry in api.parse_list_mapping("lists", lists).items()}
        self._by_nl = {mapped.nl_id: mapped for mapped in self._lists.values()}
        self._custom_fields = tuple(sorted(set(custom_fields)))
        #: The per-run cache: nl_id -> its records, from the one whole-list read of this run (the
        #: status pull's, else the first member's), kept current by our own writes. Every member's
        #: lookup uses it (``_lookup``); see the class docstring for what it may miss.
        self._cache: dict[str, ListRecords] = {}
        #: One whole-list read per list at a time (the members of a batch are pushed concurrently).
        self._reading: dict[str, asyncio.Lock] = {}
        #: nl_id -> what its last full read showed, or the error it ended with.
        self._scans: dict[str, ListScan | ProviderError] = {}
        #: Endpoint -> the reading its answers came in (sync.providers.readings).
        self.readings = ReadingLog()

    @classmethod
    def create(cls, http_factory: Callable[[Capabilities, Auth], ProviderHTTP], credentials: Mapping[str, str],
               settings: Mapping[str, Any], integrator: Mapping[str, str] | None = None) -> MailMasterPlusProvider:
        auth = BasicAuth(credentials["username"], credentials["password"])
        custom = [spec.get("field") if isinstance(spec, Mapping) else spec
                  for spec in (settings.get("fields") or {}).values()]
        caps = replace(CAPABILITIES, concurrency=int(settings.get(api.CONCURRENCY_SETTING) or api.CONCURRENCY))
        return cls(http_factory(caps, auth), settings.get("lists") or {}, caps,
                   custom_fields=[name for name in custom if isinstance(name, str) and name])

    # --- lists ----------------------------------------------------------------------------

    def mapped_lists(self) -> Mapping[str, RemoteList]:
        return {crm_list: RemoteList(mapped.nl_id, mapped.name, {
                    "subscribe_form": mapped.subscribe_form, "update_form": mapped.update_form,
                    "fields": dict(mapped.fields)})
                for crm_list, mapped in self._lists.items()}

    def _wanted(self, nl_id: str) -> tuple[str, ...]:
        """The field names we send to this list: its mapped columns' and the custom fields'."""
        mapped = self._by_nl.get(nl_id)
        return tuple(dict.fromkeys([*(mapped.fields.values() if mapped else ()), *self._custom_fields]))

    async def check_lists(self) -> list[str]:
        """One line per mapped list the service does not give us, whose answer is in no reading we
        accept, or whose records show no field of a name we send (for ``connection test``). The
        document has no call that lists a list's fields, so they are checked against the keys of
        its records (not at all while it has none). Form ids cannot be checked without writing a
        record, so they are not."""
        problems = []
        for mapped in sorted(self._lists.values(), key=lambda m: m.crm_list):
            where = f"CRM list {mapped.crm_list} -> MMP list {mapped.nl_id}"
            try:
                await self._read_list(mapped.nl_id)
            except (RejectedRow, UnknownReadingError) as exc:
                problems.append(f"{where}: {exc.message}")
                continue
            scan = self._scans[mapped.nl_id]
            assert isinstance(scan, ListScan)
            if scan.missing_fields:
                problems.append(f"{where}: no record of the list shows the field(s) {', '.join(scan.missing_fields)}, "
                                "and MMP refuses a field the list does not have (406); map the CRM column to the "
                                "list's own field name, or to null, in the `lists` setting's \"fields\"")
        return problems

    async def connection_probe(self) -> list[str]:
        """The read-only calls a run makes, with real parameters, one line per mapped list: the
        whole list (the status pull), and its first record by id and by e-mail (an update's and a
        create's read). Lists ``check_lists`` found unreadable are left to its lines. Never writes."""
        lines = []
        for mapped in sorted(self._lists.values(), key=lambda m: m.crm_list):
            scan = self._scans.get(mapped.nl_id)
            if isinstance(scan, ProviderError):
                continue
            if scan is None:
                await self._read_list(mapped.nl_id)
                scan = self._scans[mapped.nl_id]
            assert isinstance(scan, ListScan)
            seen = self.readings.seen
            parts = [f"GET list/{mapped.nl_id} (CRM list {mapped.crm_list}): {scan.records} record(s), "
                     f"{scan.unsubscribed} unsubscribed (reading: {scan.reading}"
                     + (f"; active: {scan.active}" if scan.active else "")
                     + (f"; status time: {scan.status_time}" if scan.status_time else "") + ")"]
            wanted = self._wanted(mapped.nl_id)
            if scan.first is None:
                parts.append("fields not checked: the list has no record yet, and the document has no call that "
                             "lists a list's fields")
            else:
                if wanted:
                    found = [name for name in wanted if name not in (scan.missing_fields or ())]
                    parts.append(f"fields found in its records: {', '.join(found) or 'none'}"
                                 + (f"; missing: {', '.join(scan.missing_fields)}" if scan.missing_fields else ""))
                first = scan.first
                by_id = await self._read_record(mapped.nl_id, first.id)
                parts.append(f"GET list/{mapped.nl_id}/record/<id>: "
                             + (seen.get(api.RECORD_ENDPOINT, "?") if by_id is not None else "no record"))
                if first.email:
                    by_email = await self._read_by_email(mapped.nl_id, first.email)
                    parts.append(f"GET list/{mapped.nl_id}/field/email/value/<e-mail>: "
                                 + (seen.get(api.FIND_ENDPOINT, "?") if by_email is not None else "no record"))
            lines.append("; ".join(parts))
        return lines

    # --- reading --------------------------------------------------------------------------

    async def _read_list(self, nl_id: str) -> list[Record]:
        """Every record of a list (``GET list/<nl_id>``), kept as the run's cache of that list."""
        what = f"read list {nl_id}"
        try:
            response = await self.http.request("GET", api.LIST_PATH.format(nl_id=nl_id))
            _check(response, what)
            text = _body_text(response, what)
            value = _json(text, what, response) if text else _NO_BODY
            rows, reading = records_of(value, text, f"{api.LIST_ENDPOINT} ({what})")
        except ProviderError as exc:
            self._scans[nl_id] = exc
            raise
        reader = _RecordReader(f"{api.LIST_ENDPOINT} ({what})", self._wanted(nl_id))
        try:
            records = [reader.record(row, key) for key, row in rows]
        except UnknownReadingError as exc:
            self._scans[nl_id] = exc
            raise
        reader.note(self.readings)
        self.readings.note(api.LIST_ENDPOINT if rows else api.LIST_EMPTY_ENDPOINT, reading)
        self._cache[nl_id] = ListRecords.of(records)
        unseen = set(self._wanted(nl_id))
        for _, row in rows:
            if not unseen:
                break
            unseen.difference_update(row)
        self._scans[nl_id] = ListScan(
            len(records), sum(not record.active for record in records), reading,
            sorted(unseen) if rows else None, next((r for r in sorted(records, key=lambda r: _sort_id(r.id))
                                                   if r.email), None), reader.active, reader.status_time)
        return records

    async def _read_one(self, path: str, what: str, endpoint: str, nl_id: str, *, record_id: str | None = None,
                        email: str | None = None) -> Record | None:
        """One record (by id, or the oldest with ``email``), in any one-record reading; None when
        the service has none."""
        response = await self.http.request("GET", path)
        _check(response, what)
        text = _body_text(response, what)
        value = _json(text, what, response) if text else _NO_BODY
        found = one_record(value, text, f"{endpoint} ({what})")
        if found is None:
            self.readings.note(f"{endpoint} {api.NO_RECORD_SUFFIX}", _compact(value) or api.READ_EMPTY_BODY)
            return None
        rows, reading = found
        reader = _RecordReader(f"{endpoint} ({what})", self._wanted(nl_id))
        records = [reader.record(row, key if key is not None else record_id if reading == api.READ_OBJECT else None)
                   for key, row in rows]
        reader.note(self.readings)
        self.readings.note(endpoint, reading)
        if record_id is not None:
            matching = [record for record in records if record.id == record_id]
            if not matching:
                raise unknown_reading(f"{endpoint} ({what})", [f"the record {record_id} asked for"],
                                      {"ids": [record.id for record in records][:10]})
        else:
            wanted = normalize_email(email or "")
            matching = [record for record in records if record.email == wanted]
        return min(matching, key=lambda r: _sort_id(r.id)) if matching else None

    async def _read_record(self, nl_id: str, record_id: str) -> Record | None:
        return await self._read_one(api.LIST_RECORD_PATH.format(nl_id=nl_id, id=quote(record_id, safe="")),
                                    f"read record {record_id} of list {nl_id}", api.RECORD_ENDPOINT, nl_id,
                                    record_id=record_id)

    async def _read_by_email(self, nl_id: str, email: str) -> Record | None:
        return await self._read_one(api.LIST_FIELD_PATH.format(nl_id=nl_id, field=api.EMAIL_FIELD,
                                                               value=quote(email, safe="")),
                                    f"find {api.EMAIL_FIELD} in list {nl_id}", api.FIND_ENDPOINT, nl_id, email=email)

    async def _cached(self, nl_id: str) -> ListRecords | None:
        """The run's cache of a list, read whole the first time a run needs it; None when that read
        failed on a transient fault (the caller then asks record by record, as many requests as
        before the cache and no more). A list the service refuses (406) is that refusal for each
        member, without asking again; an answer in no reading stops the run (UnknownReadingError)."""
        if nl_id not in self._cache and nl_id not in self._scans:
            async with self._reading.setdefault(nl_id, asyncio.Lock()):
                if nl_id not in self._cache and nl_id not in self._scans:
                    try:
                        await self._read_list(nl_id)
                    except FatalError:
                        raise
                    except ProviderError as exc:
                        log.warning("mmp.list_read_failed", remote_list=nl_id, reason=exc.message)
        scan = self._scans.get(nl_id)
        if nl_id not in self._cache and isinstance(scan, RejectedRow):
            raise RejectedRow(scan.reason, status_code=scan.status_code, provider_code=scan.provider_code)
        return self._cache.get(nl_id)

    async def _lookup(self, nl_id: str, email: str, record_id: str | None = None) -> Record | None:
        """The member's record in a list (``ListRecords.lookup``): from the run's cache, else (the
        list could not be read whole) asked, by the link's id, then by e-mail."""
        cache = await self._cached(nl_id)
        if cache is not None:
            return cache.lookup(email, record_id)
        record = await self._read_record(nl_id, record_id) if record_id else None
        if record is not None and record.email == normalize_email(email):
            return record
        return await self._read_by_email(nl_id, email)

    async def _find(self, nl_id: str, email: str) -> Record | None:
        """The record holding ``email`` (see ``_lookup``)."""
        return await self._lookup(nl_id, email)

    def _remember(self, nl_id: str, record: Record | None, email: str, *, gone: str | None = None) -> None:
        """Our own write, into the run's cache: ``record`` as it now is, or the record ``gone``
        (its id) deleted."""
        cache = self._cache.get(nl_id)
        if cache is None:
            return
        if record is not None:
            cache.put(record)
        elif gone is not None:
            cache.drop(gone, email)

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
        payload |= {"email": normalize_email(member.email),
                    "status": "active" if member.status == "active" else "unsubscribed"}
        check_record(payload)
        return payload

    @staticmethod
    def _fields_for(mapped: MappedList, payload: Mapping[str, Any]) -> dict[str, str]:
        return {field_name: _text(payload.get(column)) for column, field_name in mapped.fields.items()} | dict(
            payload.get("custom_fields") or {})

    async def upsert_members(self, batch: Sequence[MemberUpsert]) -> list[PushOutcome]:
        # (address, list) the engine re-subscribes in this batch: an unsubscribed record there does
        # not withhold the address's creation in its other lists (the same newer consent covers it)
        resubscribing = frozenset((normalize_email(item.email), remote) for item in batch if item.resubscribe
                                  for remote in item.remote_lists)
        return list(await asyncio.gather(*(self._upsert_one(item, resubscribing) for item in batch)))

    async def _upsert_one(self, item: MemberUpsert, resubscribing: frozenset[tuple[str, str]]) -> PushOutcome:
        try:
            if len(item.remote_lists) != 1 or item.remote_lists[0] not in self._by_nl:
                return PushOutcome(item.key, rejected=RejectedRow(
                    f"MMP list {', '.join(item.remote_lists) or '(none)'} is not in the connection's `lists` setting",
                    provider_code="unmapped"))
            mapped = self._by_nl[item.remote_lists[0]]
            # (the link's id while it holds the member's address, else the record of the address)
            record = await self._lookup(mapped.nl_id, item.email, item.remote_id)
            if record is None:
                return await self._create(mapped, item, resubscribing)
            return await self._update(mapped, item, record, cached=mapped.nl_id in self._cache)
        except FatalError:
            raise
        except ProviderError as exc:
            return PushOutcome(item.key, rejected=_as_reject(exc))

    async def _unsubscribed_elsewhere(self, mapped: MappedList, email: str,
                                      resubscribing: frozenset[tuple[str, str]]) -> tuple[MappedList, Record] | None:
        """A record of ``email`` that another mapped list holds unsubscribed (and this batch does not
        re-subscribe): from the run's cache of each list (``_lookup``). A mapped list
        the service refuses to read (406) is a reject of this create, retried later: an opt-out
        that cannot be seen is not an absent one."""
        address = normalize_email(email)
        for other in sorted(self._by_nl.values(), key=lambda m: _sort_id(m.nl_id)):
            if other.nl_id == mapped.nl_id or (address, other.nl_id) in resubscribing:
                continue
            try:
                found = await self._find(other.nl_id, email)
            except RejectedRow as exc:
                raise RejectedRow(
                    f"not created in MMP list {mapped.nl_id}: MMP list {other.nl_id} (CRM list {other.crm_list}) "
                    f"cannot be read, so an unsubscribe of the address there cannot be ruled out ({exc.reason}; "
                    "will retry)", status_code=exc.status_code, provider_code=api.OPT_OUT_UNCHECKED) from exc
            if found is not None and not found.active:
                return other, found
        return None

    async def _create(self, mapped: MappedList, item: MemberUpsert, resubscribing: frozenset[tuple[str, str]], *,
                      check_other_lists: bool = True) -> PushOutcome:
        """Subscribe an address the list does not hold. Never for someone to be unsubscribed (a
        record is not created only to unsubscribe it, the rule for RET in docs/crm-contract.md), and never while
        another mapped list holds the address unsubscribed, unless the engine re-subscribes it."""
        if item.payload.get("status") != "active":
            return PushOutcome(item.key, rejected=RejectedRow(
                f"not created in MMP list {mapped.nl_id}: the member is to be unsubscribed and the list does not "
                "hold the address", provider_code="not_created_unsubscribed"))
        if check_other_lists and not item.resubscribe:
            blocking = await self._unsubscribed_elsewhere(mapped, item.email, resubscribing)
            if blocking is not None:
                other, record = blocking
                log.info("mmp.create_withheld", remote_list=mapped.nl_id, unsubscribed_in=other.nl_id,
                         record=record.id)
                return PushOutcome(item.key, suppressed=self._suppression(other, record))
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
            answer = number_answer(response, what, api.SUBSCRIBE_ENDPOINT, self.readings)
            if answer is None:
                raise MalformedAnswerError(f"{what}: an empty answer where a record id or a code was expected")
            return await self.resolve_subscribe_answer(mapped, item, answer)
        raise AssertionError("unreachable")

    async def resolve_subscribe_answer(self, mapped: MappedList, item: MemberUpsert, answer: int) -> PushOutcome:
        """THE RULE for a subscribe's bare-number answer (api.SUBSCRIBE_*).

        - ``answer >= 3``: the new record's id. No code is 3 or more, in either reading.
        - ``0``: another failure: a reject, retried by a later run.
        - ``1, 2, -1, -2``: ambiguous. In the document's reading 1 = "already on this unique
          list" and 2 = "malformed e-mail", in the public clients' reading those are -1 and -2,
          and 1 and 2 are also the ids of a list's first two records. The address is read back
          (``list/<nl_id>/field/email/value/<email>``):
            - found: the list holds the address under the id read (just created by us, or there
              before); it is treated as an existing record: its state is checked, and it is
              updated unless it is unsubscribed (then reported, nothing written). For a record
              we have just created the values are there already, so nothing more is sent.
            - not found: the answer was a code. 2/-2: "MMP finds the e-mail malformed", a reject.
              1/-1: "exists" yet not found, a reject retried by a later run.
        - anything else (-3 and below): an answer the document does not have: retried later.
        """
        email = normalize_email(item.email)
        if answer >= 3:
            body = self._fields_for(mapped, item.payload)
            record = Record(str(answer), email, True, None, body)
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
            self.readings.note(api.SUBSCRIBE_ENDPOINT + " (codes)", api.CODES_DOCUMENT if answer > 0
                               else api.CODES_NEGATIVE)
            if answer in api.SUBSCRIBE_MALFORMED_CODES:
                return PushOutcome(item.key, rejected=RejectedRow(
                    f"MMP finds the e-mail address malformed (answer {answer})", provider_code="malformed_email"))
            return PushOutcome(item.key, rejected=RejectedRow(
                f"MMP list {mapped.nl_id} says it holds the address already (answer {answer}) but no record has it "
                "(will retry)", provider_code="exists_not_found"))
        raise MalformedAnswerError(f"subscribe to list {mapped.nl_id}: answer {answer} is not a documented code")

    async def _update(self, mapped: MappedList, item: MemberUpsert, record: Record, *,
                      cached: bool = False) -> PushOutcome:
        """An existing record: report it if it is unsubscribed and the engine does not re-subscribe;
        re-subscribe by delete + subscribe (api.RESUBSCRIBE_BY_RECREATE); else update the fields
        that differ (nothing is sent when none does) and, when the engine pushes "unsubscribed",
        unsubscribe it. ``cached``: ``record`` comes from the run's cache, not from a read just made
        (an update that fails is then read back: the record may be gone since)."""
        wanted = item.payload.get("status")
        if wanted == "active" and not record.active:
            if not item.resubscribe:
                return PushOutcome(item.key, remote_id=record.id, suppressed=self._suppression(mapped, record))
            fresh = await self._read_record(mapped.nl_id, record.id)
            if fresh is None or not fresh.active:
                return await self._resubscribe(mapped, item, record, fresh)
            record = fresh          # active again since the cache's read: an update as any other
        body = self._fields_for(mapped, item.payload)
        if _differs(record.fields, body):
            what = f"update record {record.id} of list {mapped.nl_id}"
            response = await self.http.request("PUT", api.UPDATE_RECORD_PATH.format(
                nl_id=mapped.nl_id, ns_id=mapped.update_form, id=quote(record.id, safe="")), json=body)
            _check(response, what)
            changed = number_answer(response, what, api.UPDATE_ENDPOINT, self.readings)
            if changed is None:                   # the documented failure: an empty body
                if cached and await self._read_record(mapped.nl_id, record.id) is None:
                    # deleted (in the panel) since the cache's read: made again, with a create's checks
                    log.info("mmp.record_gone_since_read", remote_list=mapped.nl_id, record=record.id)
                    self._remember(mapped.nl_id, None, record.email, gone=record.id)
                    return await self._create(mapped, replace(item, remote_id=None), frozenset())
                return PushOutcome(item.key, rejected=RejectedRow(f"{what}: MMP answered nothing (will retry)",
                                                                  provider_code="update_failed"))
            # (0 after our own read of the record: nothing changed, as a service counting affected rows says)
            record = replace(record, fields={**record.fields, **body})
        if wanted != "active" and record.active:
            await self._unsubscribe(mapped.nl_id, record.id)
            record = replace(record, active=False)
        self._remember(mapped.nl_id, record, item.email)
        return PushOutcome(item.key, remote_id=record.id)

    async def _resubscribe(self, mapped: MappedList, item: MemberUpsert, record: Record,
                           fresh: Record | None) -> PushOutcome:
        """The engine re-subscribes an unsubscribed record (api.RESUBSCRIBE_BY_RECREATE): delete it
        and subscribe the address anew. A delete is for good, so the record was read ``fresh`` (the
        cache is as old as this run's read of the list): gone or holding another address, it is
        only created; unsubscribed again after the unsubscribe the engine decided on (a later
        status time), it is reported, not replaced."""
        if fresh is None or fresh.email != record.email:
            self._remember(mapped.nl_id, None, record.email, gone=record.id)
            return await self._create(mapped, replace(item, remote_id=None, resubscribe=False), frozenset(),
                                      check_other_lists=False)
        if fresh.changed_at is not None and record.changed_at is not None and fresh.changed_at > record.changed_at:
            self._remember(mapped.nl_id, fresh, item.email)
            log.info("mmp.resubscribe_refused_newer_unsubscribe", remote_list=mapped.nl_id, record=fresh.id)
            return PushOutcome(item.key, remote_id=fresh.id, suppressed=self._suppression(mapped, fresh))
        log.info("mmp.resubscribe_replaces_record", remote_list=mapped.nl_id, record=fresh.id,
                 unsubscribed_at=fresh.changed_at.isoformat() if fresh.changed_at else None)
        await self._delete_record(mapped.nl_id, fresh.id, item.email)
        return await self._create(mapped, replace(item, remote_id=None, resubscribe=False), frozenset(),
                                  check_other_lists=False)

    async def _unsubscribe(self, nl_id: str, record_id: str) -> None:
        """``GET unsubscribe/<nl_id>/record/<id>``; a "0" is success when the record reads back
        unsubscribed (it was already, or a repeat of a call whose answer was lost)."""
        what = f"unsubscribe record {record_id} of list {nl_id}"
        response = await self.http.request("GET", api.UNSUBSCRIBE_RECORD_PATH.format(
            nl_id=nl_id, id=quote(record_id, safe="")))
        _check(response, what)
        if number_answer(response, what, api.UNSUBSCRIBE_ENDPOINT, self.readings, booleans=True) == api.SUCCESS:
            return
        found = await self._read_record(nl_id, record_id)
        if found is None or found.active:
            raise RejectedRow(f"{what}: MMP answered 0 (will retry)", provider_code="unsubscribe_0")

    @staticmethod
    def _suppression(mapped: MappedList, record: Record) -> RemoteStatus:
        """An unsubscribed record as that list's suppression, dated by the service where it gives a
        time; without one, by this read and flagged undated (see ``_UNDATED``)."""
        status = RemoteStatus(record.email, "unsubscribed", record.changed_at or dt.datetime.now(dt.UTC),
                              remote_id=record.id, remote_list=mapped.nl_id)
        return status if record.changed_at is not None else replace(status, **_UNDATED)

    # --- removals -------------------------------------------------------------------------

    async def delete_members(self, batch: Sequence[MemberDelete]) -> list[PushOutcome]:
        return list(await asyncio.gather(*(self._delete_one(item) for item in batch)))

    async def _delete_one(self, item: MemberDelete) -> PushOutcome:
        """Delete the member's record in each of its lists: by the stored id, else (a crash left no
        id, or the id now holds another address) the record found by e-mail. An unsubscribed record
        is left as it is (the provider's proof of the opt-out) unless this is a KVKK erasure.

        The record is found in the run's cache (no request where the list holds none), then read
        fresh: a delete is for good, and the cache is as old as this run's read of the list."""
        erasure = item.reason == api.ERASURE_REASON
        left: list[str] = []
        try:
            for nl_id in self._lists_of(item, erasure=erasure):
                found = await self._lookup(nl_id, item.email, item.remote_id)
                record = found if found is None or nl_id not in self._cache \
                    else await self._read_record(nl_id, found.id)
                if found is not None and record is None:
                    self._remember(nl_id, None, found.email, gone=found.id)    # deleted since the read
                elif found is not None and record is not None and record.email != normalize_email(item.email):
                    self._remember(nl_id, None, found.email, gone=found.id)    # the id holds another address now
                    self._remember(nl_id, record, record.email)
                    record = None
                if record is None:
                    continue
                if not record.active and not erasure:
                    log.info("mmp.unsubscribed_record_kept", remote_list=nl_id, record=record.id, reason=item.reason)
                    left.append(nl_id)
                    continue
                await self._delete_record(nl_id, record.id, item.email)
        except FatalError:
            raise
        except ProviderError as exc:
            return PushOutcome(item.key, rejected=_as_reject(exc))
        return PushOutcome(item.key, remote_id=item.remote_id, action=api.LEFT_UNSUBSCRIBED if left else "deleted")

    def _lists_of(self, item: MemberDelete, *, erasure: bool) -> tuple[str, ...]:
        """The MMP lists a removal concerns: the link's, else (a provisional link has none yet) the
        one its CRM list maps to, else, for a KVKK erasure only, every mapped list."""
        if item.remote_lists:
            return tuple(item.remote_lists)
        mapped = self._lists.get(item.key.crm_list_id)
        if mapped is not None:
            return (mapped.nl_id,)
        return tuple(sorted(self._by_nl, key=_sort_id)) if erasure else ()

    async def _delete_record(self, nl_id: str, record_id: str, email: str) -> None:
        """``DELETE delete/<nl_id>/record/<id>``; a "0" is success when the record is gone (a
        repeat of a delete whose answer was lost), a reject when it is still there."""
        what = f"delete record {record_id} of list {nl_id}"
        response = await self.http.request("DELETE", api.DELETE_RECORD_PATH.format(
            nl_id=nl_id, id=quote(record_id, safe="")))
        _check(response, what)
        if number_answer(response, what, api.DELETE_ENDPOINT, self.readings, booleans=True) != api.SUCCESS \
                and await self._read_record(nl_id, record_id) is not None:
            raise RejectedRow(f"{what}: MMP answered 0 and the record is still there (will retry)",
                              provider_code="delete_0")
        self._remember(nl_id, None, email, gone=record_id)

    # --- pulls ----------------------------------------------------------------------------

    async def pull_statuses(self, since: dt.datetime | None) -> AsyncIterator[RemoteStatus]:
        """A full scan (``status_pull="full_scan"``): every record of every mapped list
        (``GET list/<nl_id>``); each unsubscribed record is one suppression of that list
        (``remote_list``). ``since`` is ignored: the document offers no filter by date. A list the
        service refuses (406: not the account's) is logged and skipped; its members' pushes
        become rejects that say so. An answer in no reading stops the run (UnknownReadingError)."""
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
        """Nothing: MMP cannot tell cheaply what changed (one record per request, or the whole list
        again). An unsubscribe made since this run's read of a list is not overwritten by anything
        the run sends (the class docstring, "the per-run cache") and the next run's pull reports it."""
        return
        yield  # an async generator that yields nothing


def check_record(payload: Mapping[str, Any]) -> None:
    """RejectedRow (code "validation") for a record MailMasterPlus's document does not allow or that
    is over our bounds (api.py, "field contents"): the reason names the field and the limit. Nothing
    is ever cut to fit."""
    refuse_bad_address(str(payload["email"]), "MailMasterPlus", utf8_local=api.ADDRESS_UTF8_LOCAL,
                       idn=api.ADDRESS_IDN, source=api.ADDRESS_SOURCE)
    values = [(column, _text(payload.get(column))) for column in api.CRM_COLUMNS if column in payload]
    values += [(f"custom field {name}", text) for name, text in (payload.get("custom_fields") or {}).items()]
    for name, text in values:
        refuse_too_long(name, text, api.MAX_FIELD_LENGTH, "MailMasterPlus", api.LENGTH_SOURCE)


def _custom_text(value: Any) -> str:
    """A custom field's value as list field text (the document: values are UTF-8 text)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)
