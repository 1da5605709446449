"""In-memory simulator of the MailMasterPlus REST API, for tests and the demo.

It follows ``shared/esp-docs/mailmasterplus.txt`` and, where the document is silent, the ASSUMED
choices in ``sync.providers.mailmasterplus.api`` (the one wire contract shared with the client).
Each username/password is an account with lists made "in the panel" (:meth:`add_list`): a list
has its own field names, subscribe forms and update forms, and may take each e-mail only once
(``unique``). Record ids start at 1 within each list, so a list's first records have the ids
that also are the subscribe answer's codes.

Where the document does not show an answer, the sandbox answers in one of the readings api.py's
table accepts, chosen by ``dialect`` (:data:`DIALECTS`, the default first); every accepted reading
is served by at least one dialect:

- ``document`` (the document's literal reading): codes 1/2/0, bare numbers as text, an update
  counts the records it changed; the whole list as an object keyed by record id (the document's
  "asszociatív JSON tömb", PHP's ``json_encode``), an empty list and a missing record as an empty
  body ("üres"), one record by e-mail as an object; ``active`` as text "1"/"0"; no field the
  document does not name (no status time, no subdate/lastupdate).
- ``negative`` (the public clients' reading): codes -1/-2/0, numbers as JSON; an update counts the
  records it matched; the whole list and a record found by e-mail as arrays, ``[]`` for none;
  ``active`` as a number 1/0; ``mssys_last_statuschange_date``, ``subdate``, ``lastupdate`` and
  ``mssys_sub_status`` as the C# client's model has them.
- ``typed`` (a service that keeps JSON types): numbers as JSON strings, unsubscribe and delete as
  ``true``/``false`` (``false`` when nothing changed); the whole list and a record found by e-mail
  as objects keyed by id whose records carry no ``id``; ``{}`` for an empty list, ``false`` for a
  missing record by id, ``0`` by e-mail; ``active`` as a boolean; the status time in ISO 8601.

Only what the document offers is accepted: HTTP basic auth on every call (401 otherwise), the
documented paths and methods (404 unknown path, 405 wrong method), and 406 for parameters the
document does not allow (api.STATUS_BAD_PARAMETERS). The order, VCC, global-variable and product
calls are documented but not simulated (404): the daemon does not use them.

Faults from a ``FaultPlan`` apply to every call (there is no token endpoint); ``GET unsubscribe``
counts as a write, because it is one. ``token_expire_after`` does not apply (no tokens).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import json
import re
import time
import zoneinfo
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sync.emails import address_problem, normalize_email
from sync.providers.mailmasterplus import api
from sync.sandbox.faults import Fault, FaultInjector, FaultPlan
from sync.sandbox.transport import SandboxApp, answer

#: The field names a list has unless :meth:`MailMasterPlusSandbox.add_list` says otherwise.
DEFAULT_LIST_FIELDS = tuple(api.DEFAULT_FIELDS.values())


@dataclass(frozen=True)
class _Reading:
    """How one dialect answers where the document leaves the answer open (api.py's table)."""

    codes: Mapping[str, int]
    numbers: Literal["text", "json", "quoted"]
    #: unsubscribe and delete answer ``true``/``false`` (``false`` when nothing changed)
    booleans: bool
    #: an update answers the number of records it changed, or of those it matched
    update_counts: Literal["changed", "matched"]
    whole_list: Literal["id_keyed", "array"]
    empty_list: bytes
    by_email: Literal["object", "array", "id_keyed"]
    no_record_by_id: bytes
    no_record_by_email: bytes
    active: Literal["text", "number", "boolean"]
    status_time: Literal["none", "local", "iso"]
    ids_in_records: bool
    #: subdate, lastupdate and mssys_sub_status (the C# client's model)
    system_fields: bool


_READINGS: dict[str, _Reading] = {
    "document": _Reading({"exists": 1, "malformed": 2, "failed": 0}, "text", False, "changed", "id_keyed", b"",
                         "object", b"", b"", "text", "none", True, False),
    "negative": _Reading({"exists": -1, "malformed": -2, "failed": 0}, "json", False, "matched", "array", b"[]",
                         "array", b"[]", b"[]", "number", "local", True, True),
    "typed": _Reading({"exists": 1, "malformed": 2, "failed": 0}, "quoted", True, "changed", "id_keyed", b"{}",
                      "id_keyed", b"false", b"0", "boolean", "iso", False, False),
}
#: The readings this sandbox serves, the document's literal one first (``sandbox serve --dialect``).
DIALECTS: tuple[str, ...] = tuple(_READINGS)
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

_ID = re.compile(r"^[1-9][0-9]{0,18}$")
_TZ = zoneinfo.ZoneInfo(api.SERVICE_TIME_ZONE)
_ERROR_PAGES = {
    500: "<html><body><h1>500 Internal Server Error</h1></body></html>",
    502: "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>",
    503: "<html><head><title>503 Service Unavailable</title></head>"
         "<body><h1>503 Service Unavailable</h1></body></html>",
}


def _malformed(email: str) -> bool:
    """Answer 2 ("Szintaktikailag hibás e mail cím"), by api.py's reading of an address (``ADDRESS_*``)."""
    return address_problem(email, utf8_local=api.ADDRESS_UTF8_LOCAL, idn=api.ADDRESS_IDN) is not None


class _BadParameters(Exception):
    """Answered 406 ("hibás paraméterek")."""


class _Unauthorized(Exception):
    """Answered 401."""


@dataclass
class _Record:
    id: int
    email: str
    active: bool
    fields: dict[str, str]
    subscribed_at: float
    updated_at: float
    status_changed_at: float


@dataclass
class _List:
    nl_id: str
    name: str
    unique: bool
    fields: tuple[str, ...]
    subscribe_forms: frozenset[str]
    update_forms: frozenset[str]
    records: dict[int, _Record] = field(default_factory=dict)
    next_id: int = 1

    def by_email(self, email: str) -> list[_Record]:
        wanted = normalize_email(email)
        return [record for _, record in sorted(self.records.items()) if normalize_email(record.email) == wanted]


@dataclass
class _Account:
    username: str
    password: str
    lists: dict[str, _List] = field(default_factory=dict)


Handler = Callable[[Request, _Account], Awaitable[Response]]


def _empty() -> Response:
    return Response(b"", 200, headers={"content-type": api.NUMBER_CONTENT_TYPE})


def _raw_json(content: bytes) -> Response:
    """A "no record" answer as the dialect gives it (an empty body as text, like the numbers)."""
    return Response(content, 200, headers={"content-type": "application/json" if content
                                           else api.NUMBER_CONTENT_TYPE})


class MailMasterPlusSandbox:
    """A stateful, in-memory MailMasterPlus; ``.app`` is the Starlette app to mount or serve."""

    def __init__(self, accounts: Mapping[str, str] | None = None, *, dialect: str = "document",
                 faults: FaultPlan | None = None, clock: Callable[[], float] = time.time) -> None:
        if dialect not in _READINGS:
            raise ValueError(f"unknown dialect {dialect!r}; known: {', '.join(DIALECTS)}")
        self.reading = _READINGS[dialect]
        self.codes = self.reading.codes
        self.dialect = dialect
        self.clock = clock
        self.fault_plan = faults or FaultPlan()
        self.request_log: list[tuple[str, str, int]] = []   # (method, path, status); 0 = dropped
        self._faults = FaultInjector(self.fault_plan)
        self._accounts: dict[str, _Account] = {}
        #: Addresses every subscribe refuses with "0" (a failure the service does not explain).
        self.refused: set[str] = set()
        for username, password in (accounts or {}).items():
            self.add_account(username, password)
        self.app = SandboxApp(routes=self._routes(), front=self._front)

    # --- public helpers for tests and the demo ------------------------------------------

    def add_account(self, username: str, password: str) -> None:
        self._accounts[username] = _Account(username, password)

    def add_list(self, account: str, nl_id: str | int, name: str, *, subscribe_form: str | int,
                 update_form: str | int, fields: Iterable[str] = DEFAULT_LIST_FIELDS, unique: bool = True) -> None:
        """A list made in the panel, with its fields, one subscribe form and one update form."""
        self._accounts[account].lists[str(nl_id)] = _List(
            str(nl_id), name, unique, tuple(fields), frozenset({str(subscribe_form)}), frozenset({str(update_form)}))

    def delete_list(self, account: str, nl_id: str | int) -> None:
        """The tenant deletes a list in the panel (its records go with it)."""
        del self._accounts[account].lists[str(nl_id)]

    def lists(self, account: str) -> dict[str, str]:
        """nl_id -> list name."""
        return {nl_id: item.name for nl_id, item in self._accounts[account].lists.items()}

    def records(self, account: str, nl_id: str | int) -> list[dict[str, Any]]:
        """Every record of a list, in one shape whatever the dialect: ids as text, ``active`` "1"
        or "0", every date field (for tests; the wire shape is the dialect's)."""
        mail_list = self._accounts[account].lists[str(nl_id)]
        return [self._render(mail_list, record) for _, record in sorted(mail_list.records.items())]

    def find(self, account: str, nl_id: str | int, email: str) -> dict[str, Any] | None:
        """The oldest record of ``email`` in the list (as :meth:`records` shows it), or None."""
        mail_list = self._accounts[account].lists[str(nl_id)]
        found = mail_list.by_email(email)
        return self._render(mail_list, found[0]) if found else None

    def _held(self, account: str, nl_id: str | int, email: str) -> tuple[_List, list[_Record]]:
        """The list and the address's records in it (a panel or recipient act); KeyError when none."""
        mail_list = self._accounts[account].lists[str(nl_id)]
        found = mail_list.by_email(email)
        if not found:
            raise KeyError(email)
        return mail_list, found

    def unsubscribe(self, account: str, nl_id: str | int, email: str) -> None:
        """A recipient unsubscribes (the link in a mail, or the panel): the record stays, inactive."""
        _, found = self._held(account, nl_id, email)
        for record in found:
            self._set_active(record, False)

    def delete_in_panel(self, account: str, nl_id: str | int, email: str) -> None:
        """The tenant deletes the address's records of a list in the panel (no API call)."""
        mail_list, found = self._held(account, nl_id, email)
        for record in found:
            del mail_list.records[record.id]

    def reactivate_in_panel(self, account: str, nl_id: str | int, email: str) -> None:
        """The tenant makes the address's records of a list active again in the panel (the API has
        no call for it: api.RESUBSCRIBE_BY_RECREATE)."""
        _, found = self._held(account, nl_id, email)
        for record in found:
            self._set_active(record, True)

    def write_requests(self) -> int:
        """Requests that change something: POST/PUT/DELETE and the GET unsubscribe."""
        return sum(1 for method, path, _ in self.request_log if self._is_write(method, path))

    def reset_log(self) -> None:
        self.request_log.clear()

    # --- the ASGI front ------------------------------------------------------------------

    @staticmethod
    def _is_write(method: str, path: str) -> bool:
        return method in _WRITE_METHODS or path.startswith("/unsubscribe/")

    async def _front(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        """Log the request and inject this call's fault, before Starlette's middleware."""
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        fault = await self._faults.before_api_call(write=self._is_write(scope["method"], scope["path"]))
        await answer(scope, receive, send, app, fault, _fault_response, self.request_log)

    def _routes(self) -> list[Route]:
        table: list[tuple[str, str, Handler]] = [
            (api.SUBSCRIBE_PATH, "POST", self._subscribe),
            (api.UPDATE_RECORD_PATH, "PUT", self._update_record),
            (api.UPDATE_FIELD_PATH, "PUT", self._update_by_field),
            (api.LIST_PATH, "GET", self._list_all),
            (api.LIST_RECORD_PATH, "GET", self._list_record),
            (api.LIST_FIELD_PATH, "GET", self._list_by_field),
            (api.UNSUBSCRIBE_RECORD_PATH, "GET", self._unsubscribe_record),
            (api.UNSUBSCRIBE_EMAIL_PATH, "GET", self._unsubscribe_email),
            (api.DELETE_RECORD_PATH, "DELETE", self._delete_record),
        ]
        # A url-encoded value may hold a "/" once decoded: the last parameter takes the rest.
        return [Route("/" + path.replace("{value}", "{value:path}").replace("{email}", "{email:path}"),
                      self._authenticated(handler), methods=[method]) for path, method, handler in table]

    def _authenticated(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request, self._authenticate(request))
            except _Unauthorized:
                return Response("Unauthorized", 401, headers={"WWW-Authenticate": 'Basic realm="MailMaster API"'},
                                media_type="text/plain")
            except _BadParameters as exc:
                return Response(str(exc), api.STATUS_BAD_PARAMETERS, media_type="text/plain")
        return endpoint

    def _authenticate(self, request: Request) -> _Account:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            raise _Unauthorized
        try:
            username, sep, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise _Unauthorized from None
        acc = self._accounts.get(username)
        if not sep or acc is None or not hmac.compare_digest(acc.password.encode(), password.encode()):
            raise _Unauthorized
        return acc

    # --- state helpers -------------------------------------------------------------------

    @staticmethod
    def _list_of(request: Request, acc: _Account) -> _List:
        mail_list = acc.lists.get(request.path_params["nl_id"])
        if mail_list is None:
            raise _BadParameters("unknown nl_id")
        return mail_list

    @staticmethod
    def _form(request: Request, forms: frozenset[str]) -> None:
        if request.path_params["ns_id"] not in forms:
            raise _BadParameters("unknown ns_id")

    @staticmethod
    def _record_of(request: Request, mail_list: _List) -> _Record | None:
        raw = request.path_params["id"]
        if not _ID.match(raw):
            raise _BadParameters("bad record id")
        return mail_list.records.get(int(raw))

    @staticmethod
    async def _body(request: Request, mail_list: _List, *, subscribe: bool) -> dict[str, str]:
        """The JSON object of a subscribe or update (whatever the Content-Type: the PHP examples
        send JSON as the raw body); only fields the list has, plus ``email``."""
        try:
            data = json.loads(await request.body() or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise _BadParameters("body is not JSON") from None
        if not isinstance(data, dict):
            raise _BadParameters("body is not a JSON object")
        if subscribe and not isinstance(data.get(api.EMAIL_FIELD), str):
            raise _BadParameters("email is required")
        unknown = sorted(set(data) - {api.EMAIL_FIELD, *mail_list.fields})
        if unknown:
            raise _BadParameters(f"unknown field(s) {', '.join(unknown)}")
        if any(isinstance(value, dict | list) for value in data.values()):
            raise _BadParameters("field values must be scalars")
        return {key: "" if value is None else str(value) for key, value in data.items()}

    def _stamp(self, ts: float) -> str:
        return dt.datetime.fromtimestamp(ts, _TZ).strftime(api.DATE_FORMAT)

    def _number(self, value: int) -> Response:
        """A bare-number answer in the dialect's reading."""
        if self.reading.numbers == "text":
            return Response(str(value), 200, headers={"content-type": api.NUMBER_CONTENT_TYPE})
        text = str(value) if self.reading.numbers == "json" else json.dumps(str(value))
        return Response(text, 200, headers={"content-type": "application/json"})

    def _result(self, done: bool, *, changed: bool) -> Response:
        """An unsubscribe's or a delete's answer: 1/0, or ``true`` only when something changed."""
        if self.reading.booleans:
            return Response("true" if done and changed else "false", 200, headers={"content-type": "application/json"})
        return self._number(api.SUCCESS if done else api.FAILURE)

    def _wire(self, mail_list: _List, record: _Record) -> dict[str, Any]:
        """One record as the dialect's ``GET list`` answers show it."""
        reading = self.reading
        row: dict[str, Any] = {api.RECORD_ID_FIELD: str(record.id)} if reading.ids_in_records else {}
        row[api.EMAIL_FIELD] = record.email
        row[api.ACTIVE_FIELD] = {"text": "1" if record.active else "0", "number": int(record.active),
                                 "boolean": record.active}[reading.active]
        if reading.status_time == "local":
            row[api.STATUS_CHANGED_FIELD] = self._stamp(record.status_changed_at)
        elif reading.status_time == "iso":
            row[api.STATUS_CHANGED_FIELD] = dt.datetime.fromtimestamp(record.status_changed_at, _TZ).isoformat()
        if reading.system_fields:
            row |= {api.SUBSCRIBED_AT_FIELD: self._stamp(record.subscribed_at),
                    api.UPDATED_AT_FIELD: self._stamp(record.updated_at), api.SIGNUP_STATUS_FIELD: "1"}
        return row | {name: record.fields.get(name, "") for name in mail_list.fields}

    def _many(self, mail_list: _List, records: list[_Record], shape: str) -> Any:
        if shape == "array":
            return [self._wire(mail_list, record) for record in records]
        return {str(record.id): self._wire(mail_list, record) for record in records}

    def _render(self, mail_list: _List, record: _Record) -> dict[str, Any]:
        return {api.RECORD_ID_FIELD: str(record.id), api.EMAIL_FIELD: record.email,
                api.ACTIVE_FIELD: "1" if record.active else "0",
                api.SUBSCRIBED_AT_FIELD: self._stamp(record.subscribed_at),
                api.UPDATED_AT_FIELD: self._stamp(record.updated_at),
                api.STATUS_CHANGED_FIELD: self._stamp(record.status_changed_at),
                api.SIGNUP_STATUS_FIELD: "1",
                **{name: record.fields.get(name, "") for name in mail_list.fields}}

    def _set_active(self, record: _Record, active: bool) -> None:
        if record.active != active:
            now = self.clock()
            record.active, record.status_changed_at, record.updated_at = active, now, now

    def _matching(self, request: Request, mail_list: _List) -> list[_Record]:
        """Records whose ``field_name`` has the (url-decoded) ``field_value``; 406 for a field the
        list does not have. E-mails compare normalised."""
        name, value = request.path_params["field"], request.path_params["value"]
        if name == api.EMAIL_FIELD:
            return mail_list.by_email(value)
        if name not in mail_list.fields:
            raise _BadParameters(f"unknown field {name}")
        return [record for _, record in sorted(mail_list.records.items()) if record.fields.get(name, "") == value]

    # --- handlers ------------------------------------------------------------------------

    async def _subscribe(self, request: Request, acc: _Account) -> Response:
        mail_list = self._list_of(request, acc)
        self._form(request, mail_list.subscribe_forms)
        body = await self._body(request, mail_list, subscribe=True)
        email = body.pop(api.EMAIL_FIELD).strip()
        if _malformed(email):
            return self._number(self.codes["malformed"])
        if normalize_email(email) in self.refused:
            return self._number(self.codes["failed"])
        if mail_list.unique and mail_list.by_email(email):
            return self._number(self.codes["exists"])
        now = self.clock()
        record = _Record(mail_list.next_id, email, True, body, now, now, now)
        mail_list.records[record.id] = record
        mail_list.next_id += 1
        return self._number(record.id)

    def _apply_update(self, mail_list: _List, records: list[_Record], body: dict[str, str]) -> Response:
        if not records:
            return _empty()
        new_email = body.pop(api.EMAIL_FIELD, None)
        if new_email is not None:
            if _malformed(new_email.strip()):
                return _empty()
            taken = {record.id for record in mail_list.by_email(new_email)}
            if mail_list.unique and (len(records) > 1 or taken - {records[0].id}):
                return _empty()
        now = self.clock()
        changed = 0
        for record in records:
            differs = any(record.fields.get(name, "") != value for name, value in body.items()) or (
                new_email is not None and record.email != new_email.strip())
            record.fields.update(body)
            if new_email is not None:
                record.email = new_email.strip()
            if differs:
                record.updated_at = now
                changed += 1
        return self._number(changed if self.reading.update_counts == "changed" else len(records))

    async def _update_record(self, request: Request, acc: _Account) -> Response:
        mail_list = self._list_of(request, acc)
        self._form(request, mail_list.update_forms)
        record = self._record_of(request, mail_list)
        body = await self._body(request, mail_list, subscribe=False)
        return self._apply_update(mail_list, [record] if record else [], body)

    async def _update_by_field(self, request: Request, acc: _Account) -> Response:
        mail_list = self._list_of(request, acc)
        self._form(request, mail_list.update_forms)
        records = self._matching(request, mail_list)
        body = await self._body(request, mail_list, subscribe=False)
        return self._apply_update(mail_list, records, body)

    async def _list_all(self, request: Request, acc: _Account) -> Response:
        mail_list = self._list_of(request, acc)
        records = [record for _, record in sorted(mail_list.records.items())]
        if not records:
            return _raw_json(self.reading.empty_list)
        return JSONResponse(self._many(mail_list, records, self.reading.whole_list))

    async def _list_record(self, request: Request, acc: _Account) -> Response:
        mail_list = self._list_of(request, acc)
        record = self._record_of(request, mail_list)
        return JSONResponse(self._wire(mail_list, record)) if record else _raw_json(self.reading.no_record_by_id)

    async def _list_by_field(self, request: Request, acc: _Account) -> Response:
        """Records by a field's value: "egyszerre csak egy feliratkozó adatát adja vissza" (one at a
        time) in the document's reading, every match in the others."""
        mail_list = self._list_of(request, acc)
        records = self._matching(request, mail_list)
        if not records:
            return _raw_json(self.reading.no_record_by_email)
        if self.reading.by_email == "object":
            return JSONResponse(self._wire(mail_list, records[0]))
        return JSONResponse(self._many(mail_list, records, self.reading.by_email))

    async def _unsubscribe_record(self, request: Request, acc: _Account) -> Response:
        mail_list = self._list_of(request, acc)
        record = self._record_of(request, mail_list)
        if record is None:
            return self._result(False, changed=False)
        changed = record.active
        self._set_active(record, False)
        return self._result(True, changed=changed)

    async def _unsubscribe_email(self, request: Request, acc: _Account) -> Response:
        mail_list = self._list_of(request, acc)
        records = mail_list.by_email(request.path_params["email"])
        changed = any(record.active for record in records)
        for record in records:
            self._set_active(record, False)
        return self._result(bool(records), changed=changed)

    async def _delete_record(self, request: Request, acc: _Account) -> Response:
        mail_list = self._list_of(request, acc)
        record = self._record_of(request, mail_list)
        if record is None:
            return self._result(False, changed=False)
        del mail_list.records[record.id]
        return self._result(True, changed=True)


def _fault_response(fault: Fault) -> Response:
    """A 429 with Retry-After, or a 5xx page as the web server in front would give it."""
    if fault.kind == "rate_limit":
        wait = f"{fault.retry_after_s:g}"
        return Response("Too Many Requests", 429, headers={"Retry-After": wait}, media_type="text/plain")
    return Response(_ERROR_PAGES[fault.status], fault.status, media_type="text/html")
