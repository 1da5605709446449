"""Euromsg Express (Related Digital) CRM/ERP gateway: lists, member cards with İYS fields,
statuses and İYS consents (a nightly full scan), campaigns and per-recipient reports.

Every path, shape and guess lives in :mod:`sync.providers.euromsg.api`; this module only speaks
it. The integrator's clientName/password give a token; each connection takes its OWN token and
identifies it with its tenant's API key, so one tenant's key never touches another's data.
One member card holds a set of lists (the contact model, see api.py).

The document shows one answer (``tokens``); every answer is read through :func:`read_answer` and
the row readers below, which accept each reading of api.py's table, normalise it once and note
in ``readings`` which came. An answer in none of them is an ``UnknownReadingError``.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
import structlog

from sync.emails import normalize_email
from sync.errors import (
    AnswerLostError,
    AuthenticationError,
    ConfigurationError,
    FatalError,
    MalformedAnswerError,
    ProviderError,
    RejectedRow,
    RetriableError,
    SyncError,
)
from sync.http import Auth, ProviderHTTP, describe, safe_url
from sync.logs import SECRETS
from sync.providers.base import (
    Capabilities,
    MemberDelete,
    MemberSnapshot,
    MemberUpsert,
    PushOutcome,
    RecipientResult,
    RemoteCampaign,
    RemoteConsent,
    RemoteList,
    RemoteStatus,
    ReportContext,
    refuse_bad_address,
    refuse_too_long,
)
from sync.providers.euromsg import api
from sync.providers.readings import ReadingLog, unknown_reading

log = structlog.get_logger(__name__)
#: Recipient results given to the engine per page.
RESULT_PAGE = 1000

CAPABILITIES = Capabilities(
    max_batch=api.MAX_BATCH, push_window=api.PUSH_WINDOW,
    async_bulk_import=False, lists="create", supports_list_rename=True,
    supports_list_delete=True, pushes_members=True, supports_unsubscribe=True, member_removal="unlist",
    member_key="email", membership_model="contact", concurrency=api.CONCURRENCY, rate_per_s=None,
    status_pull="full_scan", pulls_consents=False, has_campaign_reports=True,
)
#: Euromsg member status -> our suppression status.
PULLED_STATUSES: Mapping[str, str] = {
    "Unsubscribed": "unsubscribed", "HardBounced": "hard_bounce", "SoftBounced": "soft_bounce", "Spam": "complaint",
}
#: Our member status -> the card's status.
PUSHED_STATUSES: Mapping[str, str] = {"active": "Active", "unsubscribed": "Unsubscribed"}
#: How many times a list create is posted when its answers are lost and the list is not there.
CREATE_ATTEMPTS = 3
#: Reject code of a row whose İYS fields break the registry's rules (our validation).
IYS_REJECT_CODE = "iys_invalid"
#: Reject code of a member whose card does not show its lists (we cannot change them safely).
LISTS_UNKNOWN_CODE = "lists_unknown"
#: ``MemberDelete.reason`` of a KVKK erasure (sync.engine.connection_sync.ERASED; base.py lists the
#: reasons): the only removal that DELETEs a card. Every other removal takes our lists off it.
KVKK_ERASURE = "deleted in the CRM"
#: The outcome ``action`` of a member taken off our lists, its card kept.
UNLISTED = "unlisted"
#: Lists whose first page ``connection_probe`` reads (a run reads every page of every list).
PROBE_LISTS = 25
#: An address no card has, for the probe's by-e-mail read when no list has a member yet.
PROBE_EMAIL = "connection-test@example.invalid"

# --- endpoints, as the readings log names them ------------------------------------------------
TOKENS = "POST tokens"
IDENTIFICATION = "PUT apiKey/identification"
IDENTIFICATION_REQUEST = "PUT apiKey/identification (where the API key goes)"
HEALTH = "GET health-check"
ACCOUNT = "GET account"
LIST_INDEX = "GET emailList"
LIST_CREATE = "POST emailList"
LIST_WRITE = "PATCH/DELETE emailList/{id}"
MEMBERS_OF_LIST = "GET member?emailListId"
MEMBER_BY_EMAIL = "GET member?email"
MEMBER_CREATE = "POST member"
MEMBER_WRITE = "PATCH/DELETE member/{id}"
MEMBER_STATUS = "member status values"
CAMPAIGNS = "GET campaign"
CAMPAIGN_REPORT = "GET campaign-report"
CAMPAIGN_DETAIL = "GET campaign-report-detail"

#: The readings each answer may come in (named in an UnknownReadingError).
TOKEN_READINGS = ("a bare object with tokenValue (documented)", "the same inside {isSuccess, data}")
ROW_READINGS = ("{items: [...], totalCount} (items an array or an id-keyed object)", "a bare array",
                "an id-keyed object {\"<id>\": {...}}", "any of these inside {isSuccess, data}")
HEALTH_READINGS = ("text Healthy/Degraded/Unhealthy", "a JSON string \"Healthy\"", "JSON {\"status\": \"Healthy\"}",
                   "either inside {isSuccess, data}")
ID_READINGS = ("an object with its id", "a bare id number", "either inside {isSuccess, data}")
PAGING_READINGS = ("page (from 1) and pageSize honoured", "the gateway's own smaller page size",
                   "no paging (every row at once)")
STATUS_BY_FOLD: Mapping[str, str] = {status.lower(): status for status in api.MEMBER_STATUSES}
_KNOWN_KEYS: Mapping[str, str] = {key.lower(): key for key in api.KNOWN_KEYS}
_ALIASES: Mapping[str, str] = {alias.lower(): key for alias, key in api.KEY_ALIASES.items()}
_ALIAS_SPELLING: Mapping[str, str] = {alias.lower(): alias for alias in api.KEY_ALIASES}


@dataclass(frozen=True)
class ErrorRule:
    """What one provider error code means for the caller, and what to tell a person."""

    error: type[ProviderError]
    hint: str = ""


#: THE error table of Euromsg: the gateway's own codes first (they come inside HTTP 200 answers
#: too, or are implied by a bare status: api.ERROR_BY_STATUS and each call's ``inferred``), then
#: the HTTP status for anything without a known code.
ERROR_CODES: Mapping[str, ErrorRule] = {
    api.ERROR_VALIDATION: ErrorRule(RejectedRow),
    api.ERROR_IYS_VALIDATION: ErrorRule(RejectedRow, "İYS"),
    api.ERROR_MEMBER_EXISTS: ErrorRule(RejectedRow),
    api.ERROR_MEMBER_NOT_FOUND: ErrorRule(ProviderError),
    api.ERROR_LIST_NOT_FOUND: ErrorRule(ProviderError),
    api.ERROR_CAMPAIGN_NOT_FOUND: ErrorRule(ProviderError),
    api.ERROR_NO_PACKAGE: ErrorRule(FatalError, "the tenant's Euromsg Express account has no active sending "
                                    "package, so members cannot be pushed; the next run resumes by itself once "
                                    "the tenant buys or renews a package"),
    api.ERROR_INVALID_TOKEN: ErrorRule(AuthenticationError, "the integrator token was refused"),
    api.ERROR_INVALID_CREDENTIALS: ErrorRule(AuthenticationError, "check the integrator's client_name/password "
                                             "(`crm-esp-sync integrator set euromsg`)"),
    api.ERROR_INVALID_API_KEY: ErrorRule(AuthenticationError, "the tenant's API key was refused: ask the tenant "
                                         "for a new one (Ana Sayfa > API > API Anahtarı) and "
                                         "`crm-esp-sync connection rotate`"),
    api.ERROR_NOT_IDENTIFIED: ErrorRule(AuthenticationError, "the token is not identified with the tenant's "
                                        "API key"),
    api.ERROR_ALREADY_IDENTIFIED: ErrorRule(FatalError, "the token is identified with another tenant's API key"),
    api.ERROR_INTERNAL: ErrorRule(RetriableError),
    "TOO_MANY_REQUESTS": ErrorRule(RetriableError),
}
STATUS_ERRORS: Mapping[int, type[ProviderError]] = {
    400: RejectedRow, 409: RejectedRow, 422: RejectedRow, 401: AuthenticationError, 403: AuthenticationError,
    404: ProviderError, 429: RetriableError,
}


# --- reading answers: once, at the edge --------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """An answer's value after its envelope, and the reading it came in."""

    data: Any
    reading: str


def fold_keys(value: Any) -> tuple[Any, str]:
    """``value`` with every key of api.KNOWN_KEYS spelled as the client reads it, whatever its case
    (PascalCase from a .NET serialiser), and api.KEY_ALIASES read as the key they stand for; with
    what was re-spelled, for the reading ("" when nothing). Other keys (an id-keyed object's ids)
    stay as they came."""
    respelled, aliased = False, False

    def fold(item: Any) -> Any:
        nonlocal respelled, aliased
        if isinstance(item, dict):
            out: dict[Any, Any] = {}
            for key, inner in item.items():
                name = key
                if isinstance(key, str):
                    name = _KNOWN_KEYS.get(key.lower(), key)
                    alias = _ALIASES.get(name.lower())
                    if alias is not None:
                        respelled = respelled or name != _ALIAS_SPELLING[name.lower()]
                        name, aliased = alias, True
                    else:
                        respelled = respelled or name != key
                out[name] = fold(inner)
            return out
        if isinstance(item, list):
            return [fold(inner) for inner in item]
        return item

    folded = fold(value)
    notes = [note for note, seen in (("PascalCase keys", respelled), ("listId keys", aliased)) if seen]
    return folded, ", ".join(notes)


def _body(response: httpx.Response) -> tuple[str, Any]:
    """("empty" | "html" | "json" | "text", the parsed body)."""
    content = response.content
    if not content.strip():
        return "empty", None
    if "html" in response.headers.get("Content-Type", "").lower() or content.lstrip()[:1] == b"<":
        return "html", None
    try:
        return "json", json.loads(content)
    except ValueError:      # JSONDecodeError and UnicodeDecodeError
        return "text", response.text


def _request_line(response: httpx.Response) -> str:
    try:
        return f"{response.request.method} {safe_url(response.request.url)}"
    except RuntimeError:
        return "a request"


def read_answer(response: httpx.Response, what: str, *, inferred: Mapping[int, str] | None = None) -> Answer:
    """The value of a successful answer, enveloped (``isSuccess``) or bare, keys re-spelled once;
    or the error api.py's table says (an ``isSuccess: false`` inside HTTP 200 included). A 4xx
    without an ``errorCode`` takes the code ``inferred`` gives its status for this call."""
    status = response.status_code
    kind, body = _body(response)
    respelled = ""
    if kind == "json":
        body, respelled = fold_keys(body)
    keys = f", {respelled}" if respelled else ""
    if status < 300:
        if kind == "json" and isinstance(body, dict) and "isSuccess" in body:
            if body["isSuccess"] is True or str(body["isSuccess"]).lower() == "true":
                return Answer(body.get("data"), "envelope" + keys)
            raise _error(response, what, body, inferred)
        if kind == "html":
            raise MalformedAnswerError(f"{what}: {_request_line(response)} answered HTTP {status} with an HTML page "
                                       "instead of JSON", status_code=status)
        if kind == "json":
            return Answer(body, "bare" + keys)
        return Answer(body, "empty body" if kind == "empty" else "text")
    raise _error(response, what, body if kind == "json" else None, inferred)


def _error(response: httpx.Response, what: str, body: Any, inferred: Mapping[int, str] | None) -> ProviderError:
    status = response.status_code
    code: str | None = None
    message: Any = None
    if isinstance(body, dict):
        code = str(body.get("errorCode") or "") or None
        message = body.get("message") or body.get("detail") or body.get("title")
    if code is None and status >= 300:
        code = (inferred or {}).get(status) or api.ERROR_BY_STATUS.get(status)
    text = " ".join(str(message or describe(response)).split())[:200]
    rule = ERROR_CODES.get(code or "")
    if rule is not None:
        error = rule.error
        shown = f"{what}: {rule.hint + ': ' if rule.hint and error is not RejectedRow else ''}{text} ({code})"
        if rule.hint == "İYS":
            shown = f"{what}: İYS: {text} ({code})"
    else:
        error = STATUS_ERRORS.get(status, RetriableError if status >= 500 else (
            RejectedRow if status < 300 else FatalError))
        shown = f"{what}: {text} ({code or f'HTTP {status}'})"
    if error is RejectedRow:
        return RejectedRow(shown, status_code=status, provider_code=code or str(status))
    if error is RetriableError:
        return RetriableError(shown, status_code=status, provider_code=code)
    return error(shown, status_code=status, provider_code=code or str(status))


def check(response: httpx.Response, what: str) -> Any:
    """The value of a successful answer (any reading), or the error the table says."""
    return read_answer(response, what).data


def _id_keyed(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(
        isinstance(key, str) and key.isdigit() and isinstance(row, dict) for key, row in value.items())


def _unkeyed(rows: Mapping[str, Any], id_key: str | None) -> list[dict[str, Any]]:
    """An id-keyed object's rows, each with its id (the key) where the row does not carry it."""
    if id_key is None:
        return [dict(row) for row in rows.values()]
    return [{**row, id_key: row.get(id_key, row.get("id", key))} for key, row in rows.items()]


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    return int(value) if isinstance(value, str) and value.isdigit() else None


def read_rows(data: Any, endpoint: str, id_key: str | None) -> tuple[list[dict[str, Any]], int | None, str]:
    """(rows, total when given, the reading) of a collection answer, in any reading of api.py."""
    if isinstance(data, list) and all(isinstance(row, dict) for row in data):
        return data, None, "array"
    if isinstance(data, dict):
        if "items" in data:
            items, total = data["items"], _int_or_none(data.get("totalCount"))
            if isinstance(items, list) and all(isinstance(row, dict) for row in items):
                return items, total, "page object"
            if isinstance(items, dict) and (not items or _id_keyed(items)):
                return _unkeyed(items, id_key), total, "page object, id-keyed items"
        elif not data or _id_keyed(data):
            return _unkeyed(data, id_key), None, "id-keyed object"
    raise unknown_reading(endpoint, ROW_READINGS, data)


#: Shapes an EMPTY collection cannot tell apart (``[]``, ``{}``): not noted as a reading (readings.py).
AMBIGUOUS_WHEN_EMPTY = ("array", "id-keyed object")


def _redacted(row: Mapping[str, Any], *shown: str) -> dict[str, Any]:
    """What an error may show of a member row: the named values and the keys (no address)."""
    return {**{key: row.get(key) for key in shown}, "keys": sorted(map(str, row))}


def member_row(row: Mapping[str, Any], endpoint: str) -> dict[str, Any]:
    """A member row normalised: ``memberId`` (from memberId or id) and ``email`` as text, ``status``
    in api.MEMBER_STATUSES' spelling (a missing or unknown one is an error, never a state), and
    ``emailListIds`` as text ids, None when the row does not show them."""
    member_id = row.get("memberId", row.get("id"))
    email = row.get("email")
    if member_id is None or isinstance(member_id, bool) or not isinstance(email, str):
        raise unknown_reading(endpoint, ("a member row with memberId (or id), email and status",),
                              _redacted(row, "memberId", "id"))
    raw_status = row.get("status")
    status = STATUS_BY_FOLD.get(raw_status.lower()) if isinstance(raw_status, str) else None
    if status is None:
        raise unknown_reading(endpoint, (f"a member status, one of {', '.join(api.MEMBER_STATUSES)} (any case)",),
                              _redacted(row, "status"))
    lists = row.get("emailListIds")
    if lists is not None and not (isinstance(lists, list) and all(
            isinstance(x, (int, str)) and not isinstance(x, bool) for x in lists)):
        raise unknown_reading(endpoint, ("emailListIds as an array of list ids",), _redacted(row, "emailListIds"))
    return {**row, "memberId": str(member_id), "email": email, "status": status,
            "emailListIds": None if lists is None else [str(x) for x in lists]}


#: Pages of one collection asked at once once its totalCount and page size are known (``_pages``).
PAGES_AHEAD = 8


def _consume(future: asyncio.Future[Any]) -> None:
    """Retrieve a cancelled page's outcome (an error it ended with is not needed: the read is over)."""
    if not future.cancelled():
        future.exception()


def list_key(list_id: int | str) -> dict[str, int | str]:
    """A list id as a request carries it: in both spellings (api.LIST_ID_KEYS)."""
    return {key: list_id for key in api.LIST_ID_KEYS}


def list_set(list_ids: Sequence[int | str]) -> dict[str, list[int | str]]:
    """A list set as a request carries it: in both spellings (api.LIST_IDS_KEYS)."""
    return {key: list(list_ids) for key in api.LIST_IDS_KEYS}


def _wire_id(remote_id: str) -> int | str:
    """A list id as the gateway takes it: a number ("bir id numarası"), or the text it gave."""
    return int(remote_id) if remote_id.isdigit() else remote_id


def _row_id(row: Mapping[str, Any], endpoint: str, *keys: str) -> str:
    for key in keys:
        value = row.get(key)
        if value is not None and not isinstance(value, bool) and str(value).strip():
            return str(value)
    raise unknown_reading(endpoint, (f"a row with {' or '.join(keys)}",), _redacted(row, *keys))


def _created_id(data: Any, endpoint: str, *keys: str) -> tuple[str, str]:
    """(id, reading) of a create answer: an object with its id, or the bare id number."""
    if isinstance(data, dict):
        return _row_id(data, endpoint, *keys), "the object"
    if isinstance(data, int) and not isinstance(data, bool):
        return str(data), "a bare id"
    if isinstance(data, str) and data.strip().isdigit():
        return data.strip(), "a bare id"
    raise unknown_reading(endpoint, ID_READINGS, data)


def parse_time(value: object) -> dt.datetime | None:
    """An api.DATE_FORMAT or ISO 8601 date as an aware UTC datetime (no offset: Turkey time)."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        parsed = dt.datetime.strptime(text, api.DATE_FORMAT)
    except ValueError:
        try:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=api.TURKEY)).astimezone(dt.UTC)


def status_time(row: Mapping[str, Any]) -> dt.datetime:
    """When a card's status was set. The gateway's dates have whole seconds, so the status is
    dated at the END of its second: a CRM consent from the same second never beats it (an
    unsubscribe is never lost to a rounding). A date that is there but unreadable is an error."""
    for key in ("statusDate", "updateDate"):
        raw = row.get(key)
        if raw in (None, ""):
            continue
        when = parse_time(raw)
        if when is None:
            raise unknown_reading(f"member {key}", ("YYYY-MM-DD HH:mm:ss (Turkey time)", "ISO 8601"), raw)
        return when + dt.timedelta(microseconds=999_999) if when.microsecond == 0 else when
    return dt.datetime.now(dt.UTC)     # an undated status: dated when first seen (the engine keeps it)


def turkey_text(value: dt.datetime) -> str:
    """A datetime (naive = UTC, as the CRM's are) as api.DATE_FORMAT in Turkey's time."""
    aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return aware.astimezone(api.TURKEY).strftime(api.DATE_FORMAT)


def check_member(payload: Mapping[str, Any]) -> None:
    """RejectedRow (code "validation") for a member card Euromsg's document does not allow or that
    is over our bounds (api.py, "field contents"): the reason names the field and the limit. Nothing
    is ever cut to fit."""
    refuse_bad_address(str(payload["email"]), "Euromsg", utf8_local=api.ADDRESS_UTF8_LOCAL, idn=api.ADDRESS_IDN,
                       source=api.ADDRESS_SOURCE)
    for key, (column, limit) in api.TEXT_LIMITS.items():
        refuse_too_long(f"{column} ({key})", payload.get(key) or "", limit, "Euromsg", api.LENGTH_SOURCE)


def iys_fields(member: MemberSnapshot, now: dt.datetime) -> dict[str, str]:
    """The İYS fields of a member, checked by the İYS registry's rules and the document (on an
    İYS account date and source are mandatory for every member, TACIR included); RejectedRow
    says why not."""
    def refuse(reason: str) -> RejectedRow:
        return RejectedRow(f"İYS: {reason}", provider_code=IYS_REJECT_CODE)

    recipient_type = (member.recipient_type or "").strip().upper()
    status = (member.consent_status or "").strip().upper()
    source = (member.consent_source or "").strip().upper()
    if not recipient_type:
        raise refuse("recipient type is missing (BIREYSEL or TACIR)")
    if recipient_type not in api.IYS_RECIPIENT_TYPES:
        raise refuse(f"recipient type {member.recipient_type!r} is neither BIREYSEL nor TACIR")
    if not status:
        raise refuse("consent status is missing (ONAY or RET)")
    if status not in api.IYS_STATUSES:
        raise refuse(f"consent status {member.consent_status!r} is neither ONAY nor RET")
    if member.consent_date is None:
        raise refuse(f"consent date is missing (the document makes it mandatory on an İYS account, "
                     f"{recipient_type} included)")
    if not source:
        raise refuse(f"consent source is missing (the document makes it mandatory on an İYS account, "
                     f"{recipient_type} included; e.g. HS_WEB)")
    when = turkey_text(member.consent_date)
    local = dt.datetime.strptime(when, api.DATE_FORMAT)
    if local < api.IYS_EARLIEST:
        raise refuse(f"consent date {when} is before 2015-05-01 00:00:00 (older consents are HS_2015 "
                     "dated 2015-05-01 00:00:00)")
    if local > dt.datetime.strptime(turkey_text(now), api.DATE_FORMAT):
        raise refuse(f"consent date {when} (Turkey time) is in the future")
    if source not in api.IYS_SOURCES:
        raise refuse(f"consent source {member.consent_source!r} is not an İYS source "
                     f"({', '.join(api.IYS_SOURCES)})")
    if source == api.IYS_2015_SOURCE and local != api.IYS_EARLIEST:
        raise refuse(f"source HS_2015 needs the date 2015-05-01 00:00:00, not {when}")
    return {api.IYS_RECIPIENT_TYPE: recipient_type, api.IYS_STATUS: status, api.IYS_DATE: when,
            api.IYS_SOURCE: source}


def _without_secret(exc: SyncError, secret: str) -> SyncError:
    """``exc`` with ``secret`` (and its URL-quoted form) masked in its message (a path carrying
    the API key shows in ProviderHTTP's errors)."""
    text = SECRETS.scrub(exc.message.replace(secret, "****").replace(quote(secret, safe=""), "****"))
    if text == exc.message:
        return exc
    clean = copy.copy(exc)
    clean.args = (text,)
    if isinstance(clean, RejectedRow):
        clean.reason = text
    return clean


class EuromsgAuth(Auth):
    """The integrator's token for ONE tenant: logged in with clientName/password, identified with
    that tenant's API key (where the key goes: ``api_key_in``, api.API_KEY_READINGS), renewed
    before ``expireTime`` and once on a 401."""

    def __init__(self, integrator: Mapping[str, str] | None, api_key: str,
                 clock: Callable[[], float] = time.time, *, api_key_in: str = api.API_KEY_IN_DEFAULT,
                 readings: ReadingLog | None = None) -> None:
        self._login = None if integrator is None else {"clientName": integrator["client_name"],
                                                       "password": integrator["password"]}
        self._api_key = api_key
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self.api_key_in = api.parse_api_key_in(api.API_KEY_SETTING, api_key_in)
        self.readings = readings if readings is not None else ReadingLog()
        SECRETS.register(api_key, None if integrator is None else integrator["password"])

    async def headers(self, http: ProviderHTTP) -> Mapping[str, str]:
        async with self._lock:
            if self._token is None or self._clock() >= self._expires_at - api.TOKEN_REFRESH_MARGIN_S:
                await self._renew(http)
            return {"Authorization": f"{api.AUTH_SCHEME} {self._token}"}

    def invalidate(self) -> None:
        self._token = None

    async def _renew(self, http: ProviderHTTP) -> None:
        if self._login is None:
            raise ConfigurationError("euromsg: the integrator's client_name/password are not set "
                                     "(`crm-esp-sync integrator set euromsg`)")
        self._token = None
        token, expires_at = await self._log_in(http)
        issued = await self._identify(http, token)
        self._token, self._expires_at = issued or (token, expires_at)

    async def _log_in(self, http: ProviderHTTP) -> tuple[str, float]:
        now = self._clock()
        try:   # a second login only issues another token: safe to repeat
            response = await http.request("POST", api.TOKEN_PATH, json=self._login, authenticated=False,
                                          idempotent=True)
        except AuthenticationError as exc:
            raise AuthenticationError("Euromsg login failed (401): check the integrator's client_name/password "
                                      "(`crm-esp-sync integrator set euromsg`)", status_code=401,
                                      provider_code=api.ERROR_INVALID_CREDENTIALS) from exc
        try:
            answer = read_answer(response, "Euromsg login", inferred={403: api.ERROR_INVALID_CREDENTIALS})
        except RejectedRow as exc:      # a 400 or an isSuccess false without a known code: never a member's reject
            raise AuthenticationError(f"{exc.message}: check the integrator's client_name/password "
                                      "(`crm-esp-sync integrator set euromsg`)", status_code=exc.status_code,
                                      provider_code=api.ERROR_INVALID_CREDENTIALS) from None
        body = answer.data
        token = body.get("tokenValue") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token.strip():
            # Only the keys are shown: a token answer in an unknown shape may still carry a secret.
            raise unknown_reading(TOKENS, TOKEN_READINGS, {"keys": sorted(map(str, body))} if isinstance(body, dict)
                                  else f"a JSON {type(body).__name__}" if body is not None else "")
        SECRETS.register(token)
        self.readings.note(TOKENS, answer.reading + (" (documented)" if answer.reading == "bare" else ""))
        expires = parse_time(body.get("expireTime"))
        if expires is None:
            log.warning("euromsg.token_expiry_unreadable", assumed_lifetime_s=api.TOKEN_LIFETIME_S)
        return token, expires.timestamp() if expires else now + api.TOKEN_LIFETIME_S

    async def _identify(self, http: ProviderHTTP, token: str) -> tuple[str, float] | None:
        """Identify ``token`` with the API key; a new token when the answer carries one (a reading
        in which identification issues the tenant's own token), else None."""
        reading = self.api_key_in
        what = "Euromsg API key identification"
        path = api.IDENTIFICATION_PATHS[reading].format(key=quote(self._api_key, safe=""))
        params = {api.API_KEY_PARAM: self._api_key} if reading == "query" else None
        try:
            response = await http.request("PUT", path, params=params, authenticated=False,
                                          headers={"Authorization": f"{api.AUTH_SCHEME} {token}"})
            kind, body = _body(response)
            coded = kind == "json" and isinstance(body, dict) and bool(fold_keys(body)[0].get("errorCode"))
            if response.status_code in (404, 405) and not coded:
                others = ", ".join(r for r in api.API_KEY_READINGS if r != reading)
                raise FatalError(
                    f"{what}: the API key as {api.API_KEY_READING_TEXT[reading]} was answered HTTP "
                    f"{response.status_code}: this gateway takes the key another way, or does not know this key. "
                    f"Set the connection's api_key_in to {others} (`crm-esp-sync connection set TENANT euromsg "
                    f"--setting api_key_in=...`); `crm-esp-sync connection test` tries each",
                    status_code=response.status_code, provider_code=api.ERROR_API_KEY_READING)
            answer = read_answer(response, what, inferred={403: api.ERROR_INVALID_API_KEY,
                                                           409: api.ERROR_ALREADY_IDENTIFIED})
            shape, refusal = identification_answer(answer)
            if refusal is not None:
                raise AuthenticationError(f"{what}: {ERROR_CODES[api.ERROR_INVALID_API_KEY].hint} ({refusal})",
                                          status_code=response.status_code,
                                          provider_code=api.ERROR_INVALID_API_KEY)
        except (AuthenticationError, RejectedRow) as exc:
            # A refusal without a known code (a 400, an isSuccess false in HTTP 200) is a refused
            # key too: never a member's reject (this runs inside a member's request).
            if isinstance(exc, AuthenticationError) and exc.provider_code != api.ERROR_INVALID_API_KEY:
                raise _without_secret(exc, self._api_key) from None
            others = ", ".join(r for r in api.API_KEY_READINGS if r != reading)
            raise _without_secret(AuthenticationError(
                f"{exc.message}; if the key is right, this gateway may take it another way than "
                f"{api.API_KEY_READING_TEXT[reading]}: try the connection setting api_key_in={others}",
                status_code=exc.status_code, provider_code=api.ERROR_INVALID_API_KEY), self._api_key) from None
        except SyncError as exc:
            raise _without_secret(exc, self._api_key) from None   # its cause would show the key
        self.readings.note(IDENTIFICATION, shape)
        self.readings.note(IDENTIFICATION_REQUEST, f"api_key_in={reading}")
        data = answer.data
        if isinstance(data, dict) and isinstance(data.get("tokenValue"), str) and data["tokenValue"].strip():
            SECRETS.register(data["tokenValue"])
            expires = parse_time(data.get("expireTime"))
            return data["tokenValue"], expires.timestamp() if expires else self._clock() + api.TOKEN_LIFETIME_S
        return None


#: Answers of identification that say "no" without an error status or an ``isSuccess: false``:
#: a bare JSON ``false``, the text ``false``, or an object whose flag (any of these keys, any case)
#: is false.
REFUSAL_FLAGS = ("success", "succeeded", "isSucceeded", "result", "identified")
REFUSAL_TEXTS = frozenset({"false", "0", "fail", "failed", "failure", "error"})


def identification_answer(answer: Answer) -> tuple[str, str | None]:
    """(the reading, a refusal's reason or None) of a successful identification answer (api.py:
    the document shows none): the envelope; an empty body; JSON ``true``/``false``, a text
    ``true``/``OK``/..., an object (a ``tokenValue`` in it is the token to use from then on)."""
    data, reading = answer.data, answer.reading
    refusal: str | None = None
    if reading.startswith("envelope"):
        shape, refusal = reading, ("answered false" if data is False else None)
    elif reading in ("empty body", "text") or isinstance(data, str):
        shape = reading if reading in ("empty body", "text") else f"{reading} JSON string"
        text = str(data or "").strip()
        refusal = f"answered {text[:40]!r}" if text.lower() in REFUSAL_TEXTS else None
    elif isinstance(data, bool):
        shape, refusal = f"{reading} JSON {str(data).lower()}", (None if data else "answered false")
    elif isinstance(data, dict):
        shape = f"{reading} object"
        if isinstance(data.get("tokenValue"), str):
            shape += ", a new token (used from then on)"
        flags = {str(key).lower(): value for key, value in data.items()}
        for flag in REFUSAL_FLAGS:
            if flags.get(flag.lower()) is False:
                message = flags.get("message") or flags.get("detail") or flags.get("title") or ""
                shape = f"{shape} with {flag}"
                refusal = f"{flag}: false" + (f": {str(message)[:120]}" if message else "")
                break
    else:
        shape = f"{reading} JSON {'null' if data is None else type(data).__name__}"
    return shape, refusal


class EuromsgProvider:
    """The Euromsg side of a connection (one tenant)."""

    name: ClassVar[str] = "euromsg"
    #: Request readings a connection setting picks (api.py, sync.providers.readings): ``connection
    #: test`` tries the connection's own first, then the others in this order (the document's
    #: literal reading first) while a call is answered 404/405, and stores the one that answered.
    request_fallbacks: ClassVar[Mapping[str, tuple[str, ...]]] = {
        api.API_KEY_SETTING: api.API_KEY_READINGS, api.LIST_PATH_SETTING: api.LIST_PATHS}

    def __init__(self, http: ProviderHTTP, capabilities: Capabilities = CAPABILITIES, *, iys: bool = False,
                 now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
                 auth: EuromsgAuth | None = None, readings: ReadingLog | None = None,
                 list_path: str = api.LIST_PATHS[0]) -> None:
        self.http = http
        self.capabilities = capabilities
        #: Where the email lists are (connection setting ``list_path``, api.LIST_PATHS).
        self.list_path = api.parse_list_path(api.LIST_PATH_SETTING, list_path)
        self.iys = iys
        self._now = now
        self._auth = auth
        #: Endpoint -> the reading its answers came in (``connection test`` stores it).
        self.readings = readings if readings is not None else auth.readings if auth is not None else ReadingLog()
        if auth is not None:
            auth.readings = self.readings
        #: Set once the account refused a member write for want of a sending package: the rest of
        #: the run stops at once instead of asking again for every member.
        self._no_package: FatalError | None = None
        #: Whether a create's ``emailListIds`` is taken (api.py: ASSUMED), learnt from the first card
        #: read after a create whose answer did not show its lists; None until then.
        self._list_set_honoured: bool | None = None
        #: The last full scan's member rows (e-mail -> row), shared by the status and consent pulls.
        self._scan: dict[str, dict[str, Any]] | None = None
        #: Members in work at once. Each takes one to three sequential requests; without this cap a
        #: whole batch would wait in ProviderHTTP's queue holding one token, which may expire for all.
        #: Four times the requests in flight: a member waiting out a 429's Retry-After holds a slot,
        #: and must not hold back the others (ProviderHTTP's adaptive limit is what paces requests).
        self._slots = asyncio.Semaphore(4 * max(1, capabilities.concurrency))

    @classmethod
    def create(cls, http_factory: Callable[[Capabilities, Auth], ProviderHTTP], credentials: Mapping[str, str],
               settings: Mapping[str, Any], integrator: Mapping[str, str] | None = None) -> EuromsgProvider:
        """Missing integrator credentials are reported at the first call, not here: the engine reads
        capabilities without any credentials. A bad ``api_key_in`` or ``list_path`` fails here,
        naming the valid ones."""
        iys = bool(settings.get("iys", False))
        api_key_in = api.parse_api_key_in(api.API_KEY_SETTING,
                                           settings.get(api.API_KEY_SETTING) or api.API_KEY_IN_DEFAULT)
        list_path = api.parse_list_path(api.LIST_PATH_SETTING, settings.get(api.LIST_PATH_SETTING) or api.LIST_PATHS[0])
        caps = replace(CAPABILITIES, pulls_consents=iys,
                       concurrency=int(settings.get(api.CONCURRENCY_SETTING) or api.CONCURRENCY))
        readings = ReadingLog()
        auth = EuromsgAuth(integrator, credentials.get("api_key", ""), api_key_in=api_key_in, readings=readings)
        return cls(http_factory(caps, auth), caps, iys=iys, auth=auth, readings=readings, list_path=list_path)

    @property
    def api_key_in(self) -> str | None:
        """Where the API key goes (the ``api_key_in`` setting)."""
        return None if self._auth is None else self._auth.api_key_in

    async def _call(self, method: str, path: str, endpoint: str, what: str, *,
                    inferred: Mapping[int, str] | None = None, note: bool = True, **kwargs: Any) -> Answer:
        answer = read_answer(await self.http.request(method, path, **kwargs), what, inferred=inferred)
        if note:
            self.readings.note(endpoint, answer.reading)
        return answer

    async def _page(self, path: str, params: Mapping[str, Any], endpoint: str, what: str, page: int,
                    id_key: str | None, size: int = api.MAX_PAGE_SIZE) -> tuple[list[dict[str, Any]], int | None]:
        answer = await self._call("GET", path, endpoint, what, note=False,
                                  params={**params, api.PAGE_PARAM: page, api.PAGE_SIZE_PARAM: size})
        rows, total, shape = read_rows(answer.data, endpoint, id_key)
        if rows or shape not in AMBIGUOUS_WHEN_EMPTY:
            self.readings.note(endpoint, f"{answer.reading}; {shape}")
        return rows, total

    async def _pages(self, path: str, params: Mapping[str, Any], endpoint: str, what: str,
                     id_key: str | None) -> AsyncIterator[dict[str, Any]]:
        """Every row of a collection, page by page, in whichever reading (api.py's paging entry):
        a page object ends at ``totalCount``, an array or id-keyed object at an empty page (a short
        first page may be the gateway's own page size: the next pages are asked in that size); a
        gateway that ignores paging (more rows than asked, or the same first row again) is read
        once. Rows missing for sure (a repeated page or an empty first page short of
        ``totalCount``) fail the read: never a partial pull."""
        page, size, first_before, read = 1, api.MAX_PAGE_SIZE, None, 0
        # Once page 1 gave a totalCount and the page size is known, the next pages are asked
        # ``PAGES_AHEAD`` at a time (ProviderHTTP's limit paces them) and read in their order with
        # the same checks: a page waiting out a 429 does not hold up the ones after it.
        ahead: dict[int, asyncio.Future[tuple[list[dict[str, Any]], int | None]]] = {}
        last_page: int | None = None
        try:
            while True:
                if last_page is not None:
                    for upcoming in range(page, min(page + PAGES_AHEAD, last_page + 1)):
                        if upcoming not in ahead:
                            ahead[upcoming] = asyncio.ensure_future(
                                self._page(path, params, endpoint, what, upcoming, id_key, size))
                if page in ahead:
                    rows, total = await ahead.pop(page)
                else:
                    rows, total = await self._page(path, params, endpoint, what, page, id_key, size)
                first = json.dumps(rows[0], sort_keys=True, default=str) if rows else None
                if page > 1 and first is not None and first == first_before:
                    if total is not None and read < total:
                        raise unknown_reading(f"{endpoint} paging", PAGING_READINGS,
                                              f"page {page} repeats page {page - 1}: {read} of totalCount {total} read")
                    self.readings.note(f"{endpoint} paging", "ignored: every row at once")
                    return
                if page == 1 and not rows and total:
                    raise unknown_reading(f"{endpoint} paging", PAGING_READINGS,
                                          f"page 1 (pageSize {size}) is empty, totalCount is {total}")
                for row in rows:
                    yield row
                read += len(rows)
                if not rows or (total is not None and read >= total):
                    return
                if len(rows) > size:
                    self.readings.note(f"{endpoint} paging", "ignored: every row at once")
                    return
                if len(rows) < size:
                    if page > 1:          # a short page after full ones: the end
                        return
                    size = len(rows)      # the end, or the gateway's own page size: the next page tells
                if page == 1 and total is not None:
                    last_page = -(-total // size)
                first_before, page = first, page + 1
        finally:
            for asked in ahead.values():   # the end came early, or the read failed: not needed
                asked.cancel()
                asked.add_done_callback(_consume)

    # --- account ------------------------------------------------------------------------

    async def health_check(self) -> bool:
        """The gateway's health check (no auth), as text, a JSON string, JSON ``{"status": ...}`` or
        either inside the envelope (api.py):
        True when Healthy (or Degraded: still serving), False when Unhealthy or not answered."""
        response = await self.http.request("GET", api.HEALTH_PATH, authenticated=False)
        if response.status_code >= 300:
            self.readings.note(HEALTH, f"HTTP {response.status_code}")
            return False
        kind, body = _body(response)
        text, reading = health_text(kind, fold_keys(body)[0] if kind == "json" else body)
        healthy = api.HEALTH_STATUSES.get(text.lower())
        if healthy is None:
            raise unknown_reading(HEALTH, HEALTH_READINGS, response.text)
        self.readings.note(HEALTH, reading)
        return healthy

    async def account(self) -> dict[str, Any]:
        """The tenant's account (logs in and identifies the key: a full credentials test)."""
        answer = await self._call("GET", api.ACCOUNT_PATH, ACCOUNT, "account")
        if not isinstance(answer.data, dict):
            raise unknown_reading(ACCOUNT, ("an object", "an object inside {isSuccess, data}"), answer.data)
        return answer.data

    # --- lists ----------------------------------------------------------------------------

    async def all_lists(self) -> list[RemoteList]:
        """Every list (panel-made ones too). A 404/405 without an error code means the lists are
        at another path: the error names the ``list_path`` setting and keeps its status (so that
        ``connection test`` tries the other path)."""
        lists = []
        try:
            async for row in self._pages(self.list_path, {}, LIST_INDEX, "list index", "id"):
                name = row.get("name")
                if not isinstance(name, str):
                    raise unknown_reading(LIST_INDEX, ("a list row with id and name",), _redacted(row, "id"))
                lists.append(RemoteList(_row_id(row, LIST_INDEX, "id", "emailListId"), name))
        except ProviderError as exc:
            if exc.status_code not in (404, 405) or exc.provider_code not in (None, str(exc.status_code)):
                raise
            others = ", ".join(path for path in api.LIST_PATHS if path != self.list_path)
            raise FatalError(f"list index: GET {self.list_path} was answered HTTP {exc.status_code}: the lists may be "
                             f"at another path; set the connection's {api.LIST_PATH_SETTING} to {others} "
                             "(`crm-esp-sync connection test` tries each)", status_code=exc.status_code,
                             provider_code=api.ERROR_LIST_PATH) from None
        return lists

    async def find_lists(self, name: str) -> list[RemoteList]:
        """The document offers no name filter: every list is read and matched here."""
        return [found for found in await self.all_lists() if found.name == name]

    async def create_list(self, name: str) -> RemoteList:
        """Not idempotent (two lists may share a name): after a lost answer, a list of that name
        that was not there before the first attempt is ours."""
        what = f"create list {name!r}"
        before = {found.remote_id for found in await self.find_lists(name)}
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            try:
                answer = await self._call("POST", self.list_path, LIST_CREATE, what, note=False,
                                          json={"name": name})
            except AnswerLostError as exc:
                made = [found for found in await self.find_lists(name) if found.remote_id not in before]
                if made:
                    log.info("list.create_answer_lost", list=name, remote_id=made[0].remote_id, found=True)
                    return made[0]
                if attempt == CREATE_ATTEMPTS:
                    raise AnswerLostError(f"{exc.message} ({what}, tried {attempt} times)",
                                          status_code=exc.status_code) from exc
                continue
            remote_id, shape = _created_id(answer.data, LIST_CREATE, "id", "emailListId")
            self.readings.note(LIST_CREATE, f"{answer.reading}; {shape}")
            given = answer.data.get("name") if isinstance(answer.data, dict) else None
            return RemoteList(remote_id, given if isinstance(given, str) and given else name)
        raise AssertionError("unreachable")

    async def rename_list(self, remote_id: str, name: str) -> None:
        await self._call("PATCH", f"{self.list_path}/{remote_id}", LIST_WRITE,
                         f"rename list {remote_id}", json={"name": name}, inferred={404: api.ERROR_LIST_NOT_FOUND})

    async def delete_list(self, remote_id: str) -> None:
        """Documented: the members stay at the provider. A list already gone is fine."""
        try:
            await self._call("DELETE", f"{self.list_path}/{remote_id}", LIST_WRITE,
                             f"delete list {remote_id}", inferred={404: api.ERROR_LIST_NOT_FOUND})
        except ProviderError as exc:
            if exc.provider_code != api.ERROR_LIST_NOT_FOUND:
                raise

    # --- members --------------------------------------------------------------------------

    def build_payload(self, member: MemberSnapshot) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "email": normalize_email(member.email), "firstName": member.first_name or None,
            "lastName": member.last_name or None, "phone": member.phone or None, "city": member.city or None,
            "status": PUSHED_STATUSES[member.status],
        }
        check_member(payload)
        if self.iys:
            payload.update(iys_fields(member, self._now()))
        return payload

    async def upsert_members(self, batch: Sequence[MemberUpsert]) -> list[PushOutcome]:
        """Create or update each member card; never turn a card the service holds as unsubscribed,
        bounced or complained back to Active unless the engine says so (``item.resubscribe``).

        - A **create** is ONE request where the answer shows the card: the card with every list
          of the member (``emailListIds``) and WITHOUT ``status: Active``, so that under either
          reading of a POST for an e-mail that has a card (refused, or "adds it to the list",
          api.py) no unsubscribe is revived. A card that answers suppressed is reported as such.
        - An **update** reads the card by e-mail right before the PATCH (the document offers no
          "do not resubscribe" switch, and an unsubscribe shows at the provider at once), so a
          suppression made a moment ago is reported as ``suppressed`` and nothing is written. A soft
          bounce stays the service's. Lists made in the panel stay on the card.
        """
        return await self._each(batch, self._upsert_one)

    async def _each(self, batch: Sequence[Any], one: Callable[[Any], Awaitable[PushOutcome]]) -> list[PushOutcome]:
        """One outcome per item, in the batch's order, whatever order the answers come back in.

        A member whose requests ran out of attempts on transient faults (5xx, 429, dropped
        answers: ``RetriableError``) while the others went through is not a property of the row:
        it is tried once more after the rest of the batch, on fresh attempts, and only then a
        reject with the reason (retried by a later run). Every member step is safe to repeat (the
        card is read before it is written, a create of an existing card is refused or adds it to
        the list). Before, such a member became a reject at once and waited an hour for a retry:
        under a burst of faults at the end of a batch (one request left in flight takes every
        answer of the burst) a member stayed missing from the provider after the run."""
        async def first(item: Any) -> PushOutcome | RetriableError:
            async with self._slots:
                try:
                    return await _again_after_401(lambda: one(item))
                except RetriableError as exc:
                    return exc

        async def again(item: Any, exc: RetriableError) -> PushOutcome:
            log.info("euromsg.member_tried_again", reason=exc.message)
            async with self._slots:
                try:
                    return await _again_after_401(lambda: one(item))
                except RetriableError as last:
                    return PushOutcome(item.key, rejected=_as_reject(last))

        results = list(await asyncio.gather(*(first(item) for item in batch)))
        late = [n for n, result in enumerate(results) if isinstance(result, RetriableError)]
        if late:
            retried = await asyncio.gather(*(again(batch[n], results[n]) for n in late))  # type: ignore[arg-type]
            for n, outcome in zip(late, retried, strict=True):
                results[n] = outcome
        outcomes = [result for result in results if isinstance(result, PushOutcome)]
        assert len(outcomes) == len(batch) and all(o.key == item.key for o, item in zip(outcomes, batch, strict=True))
        return outcomes

    async def _upsert_one(self, item: MemberUpsert) -> PushOutcome:
        """One member's requests; a ``RetriableError`` (attempts run out) is raised for ``_each``."""
        try:
            if self._no_package is not None:
                raise self._no_package
            if item.remote_id is None:
                return await self._create(item)
            current = await self._find(item.email)
            if current is None:       # deleted at the provider (panel, or it lost its state): add again
                return await self._create(item)
            return await self._update(item, current)
        except FatalError as exc:
            if exc.provider_code == api.ERROR_NO_PACKAGE and self._no_package is None:
                self._no_package = exc
                log.warning("euromsg.no_sending_package")
            raise
        except RetriableError:
            raise
        except ProviderError as exc:
            return PushOutcome(item.key, rejected=_as_reject(exc))

    def _fields(self, item: MemberUpsert) -> dict[str, Any]:
        return {key: value for key, value in item.payload.items() if key != "email"}

    async def _create(self, item: MemberUpsert) -> PushOutcome:
        if not item.remote_lists:
            return PushOutcome(item.key, rejected=RejectedRow("no list to add the member to", provider_code="no_list"))
        lists = [_wire_id(x) for x in item.remote_lists]
        body = {**list_key(lists[0]), "email": item.payload["email"], **self._fields(item)}
        if body.get("status") == "Active":
            del body["status"]     # a new card is active by default; sent, it could revive an existing one
        if len(lists) > 1:
            body.update(list_set(lists))
        try:   # idempotent: a second post of the same e-mail is refused as existing or adds it again
            answer = await self._call("POST", api.MEMBER_PATH, MEMBER_CREATE, "add member", note=False, json=body,
                                      idempotent=True, inferred={409: api.ERROR_MEMBER_EXISTS})
        except RejectedRow as exc:
            if exc.provider_code != api.ERROR_MEMBER_EXISTS:
                raise
            self.readings.note(f"{MEMBER_CREATE} (an e-mail with a card)", "refused, the card untouched")
            current = await self._find(item.email)
            if current is None:
                raise RejectedRow("the member exists at Euromsg but cannot be found by e-mail (will retry)",
                                  provider_code="vanished") from exc
            return await self._update(item, current)
        data = answer.data
        card = member_row(data, MEMBER_CREATE) if isinstance(data, dict) and "status" in data else None
        member_id = card["memberId"] if card is not None else _created_id(data, MEMBER_CREATE, "memberId", "id")[0]
        shown = card is not None and card["emailListIds"] is not None
        self.readings.note(MEMBER_CREATE, f"{answer.reading}; " + (
            "the card with its lists" if shown else "the card" if card is not None else "the member id"))
        if card is not None and (shown or _suppressed(item, card) is not None):
            return await self._settle(item, card, created=True)
        if len(lists) == 1 or self._list_set_honoured:
            return PushOutcome(item.key, remote_id=member_id)
        # Not shown what became of the other lists (a gateway may take only the documented
        # ``emailListId``): the card is read, once per run where it holds them all, else each time.
        card = await self._find(item.email)
        if card is None or card["emailListIds"] is None:
            return PushOutcome(item.key, remote_id=member_id)
        if self._list_set_honoured is None:
            self._list_set_honoured = {str(x) for x in item.remote_lists} <= set(card["emailListIds"])
            self.readings.note(f"{MEMBER_CREATE} (the list set)", "emailListIds taken" if self._list_set_honoured
                               else "emailListIds ignored: each card read and its lists added")
        return await self._settle(item, card, created=True)

    async def _update(self, item: MemberUpsert, current: Mapping[str, Any]) -> PushOutcome:
        return await self._settle(item, current, created=False)

    async def _settle(self, item: MemberUpsert, card: Mapping[str, Any], *, created: bool) -> PushOutcome:
        """Bring a card to the item: never back to Active from a suppression (unless
        ``resubscribe``), lists made in the panel kept. After a create (``created``) only what the
        answered card shows differently is written (usually nothing: one request per member)."""
        member_id, status = str(card["memberId"]), str(card["status"])
        wanted = str(item.payload.get("status") or "Active")
        suppressed = _suppressed(item, card)
        if suppressed is not None:
            return PushOutcome(item.key, remote_id=member_id, suppressed=suppressed)
        fields = {key: value for key, value in self._fields(item).items() if key != "status"}
        if created:   # what the answer shows otherwise (a card that existed); unshown fields went with the POST
            fields = {key: value for key, value in fields.items()
                      if key in card and (card[key] or None) != (value or None)}
        body: dict[str, Any] = dict(fields)
        keep_status = (wanted == status or (wanted == "Active" and status == "SoftBounced")
                       or (wanted == "Unsubscribed" and status in ("HardBounced", "Spam")))
        if not keep_status:
            body["status"] = wanted
        theirs: list[str] | None = card.get("emailListIds")
        # (also after a create: a card that existed, joined by the POST in a reading that adds,
        # keeps the lists the member left, which an unconfirmed item names)
        previous = item.previous_remote_lists
        if theirs is None:
            if set(item.remote_lists) != set(() if created else previous):
                return PushOutcome(item.key, remote_id=member_id, rejected=RejectedRow(
                    "the member's card does not show its lists, so they cannot be changed without dropping the "
                    "lists made in the Euromsg panel (will retry)", provider_code=LISTS_UNKNOWN_CODE))
        else:
            lists = list(dict.fromkeys([*(x for x in theirs if x not in previous), *item.remote_lists]))
            if not created or set(lists) != set(theirs):
                body.update(list_set([_wire_id(x) for x in lists]))
        if created and not body:
            return PushOutcome(item.key, remote_id=member_id)
        try:
            await self._call("PATCH", api.MEMBER_ITEM_PATH.format(id=member_id), MEMBER_WRITE, "update member",
                             json=body, inferred={404: api.ERROR_MEMBER_NOT_FOUND})
        except ProviderError as exc:
            if exc.provider_code != api.ERROR_MEMBER_NOT_FOUND or created:
                raise
            return await self._create(replace(item, remote_id=None))   # deleted meanwhile: add again
        return PushOutcome(item.key, remote_id=member_id)

    async def _find(self, email: str) -> dict[str, Any] | None:
        """The member card of this e-mail (the documented single-member query), or None: a page,
        array or id-keyed object of 0-1 rows, the member object itself, ``null`` or a 404."""
        wanted = normalize_email(email)
        try:
            answer = await self._call("GET", api.MEMBER_PATH, MEMBER_BY_EMAIL, "read member", note=False,
                                      params={"email": wanted}, inferred={404: api.ERROR_MEMBER_NOT_FOUND})
        except ProviderError as exc:
            if exc.provider_code != api.ERROR_MEMBER_NOT_FOUND:
                raise
            self.readings.note(f"{MEMBER_BY_EMAIL} (no such member)", "HTTP 404")
            return None
        data = answer.data
        if data is None:
            self.readings.note(f"{MEMBER_BY_EMAIL} (no such member)", f"{answer.reading}; null")
            return None
        if isinstance(data, dict) and "email" in data:
            rows, shape = [data], "the member object"
        else:
            rows, _, shape = read_rows(data, MEMBER_BY_EMAIL, "memberId")
        if rows or shape not in AMBIGUOUS_WHEN_EMPTY:
            self.readings.note(MEMBER_BY_EMAIL, f"{answer.reading}; {shape}")
        for row in rows:
            card = member_row(row, MEMBER_BY_EMAIL)
            if normalize_email(card["email"]) == wanted:
                return card
        return None

    async def delete_members(self, batch: Sequence[MemberDelete]) -> list[PushOutcome]:
        """A KVKK erasure deletes the card (documented: hidden, kept for three years under KVKK);
        any other removal (left every list, e-mail changed) only takes OUR lists off the card: the
        card may be in lists made in the panel, and holds the provider's record of an opt-out."""
        return await self._each(batch, self._delete_one)

    async def _delete_one(self, item: MemberDelete) -> PushOutcome:
        """One removal's requests; a ``RetriableError`` (attempts run out) is raised for ``_each``."""
        try:
            if item.reason != KVKK_ERASURE:
                remote_id = await self._unlist(item)
                log.info("euromsg.member_unlisted", reason=item.reason, remote_id=remote_id)
                return PushOutcome(item.key, remote_id=remote_id, action=UNLISTED)
            remote_id = item.remote_id
            if remote_id is None or not await self._delete_id(remote_id):
                current = await self._find(item.email)     # a provisional link, or re-created since
                if current is not None:
                    remote_id = str(current["memberId"])
                    await self._delete_id(remote_id)
        except (FatalError, RetriableError):
            raise
        except ProviderError as exc:
            return PushOutcome(item.key, rejected=_as_reject(exc))
        log.info("euromsg.member_deleted", reason=item.reason, remote_id=remote_id)
        return PushOutcome(item.key, remote_id=remote_id, action="deleted")

    async def _unlist(self, item: MemberDelete) -> str | None:
        """Take the lists we put the member in off its card; its status and other lists stay."""
        card = await self._find(item.email)
        if card is None:
            return item.remote_id
        theirs: list[str] | None = card["emailListIds"]
        if theirs is None:
            raise RejectedRow("the member's card does not show its lists, so ours cannot be taken off it "
                              "(will retry)", provider_code=LISTS_UNKNOWN_CODE)
        ours = set(item.remote_lists)
        kept = [x for x in theirs if x not in ours]
        if len(kept) != len(theirs):
            await self._call("PATCH", api.MEMBER_ITEM_PATH.format(id=card["memberId"]), MEMBER_WRITE,
                             "take the member off our lists", json=list_set([_wire_id(x) for x in kept]),
                             inferred={404: api.ERROR_MEMBER_NOT_FOUND})
        return str(card["memberId"])

    async def _delete_id(self, remote_id: str) -> bool:
        """Delete one card; False when it was not there."""
        try:
            await self._call("DELETE", api.MEMBER_ITEM_PATH.format(id=remote_id), MEMBER_WRITE, "delete member",
                             inferred={404: api.ERROR_MEMBER_NOT_FOUND})
        except ProviderError as exc:
            if exc.provider_code == api.ERROR_MEMBER_NOT_FOUND:
                return False
            raise
        return True

    # --- pulls ----------------------------------------------------------------------------

    def _members_of(self, list_id: str) -> AsyncIterator[dict[str, Any]]:
        return self._pages(api.MEMBER_PATH, list_key(list_id), MEMBERS_OF_LIST,
                           f"members of list {list_id}", "memberId")

    async def _full_scan(self) -> dict[str, dict[str, Any]]:
        """Every member card of every list, once per run (documented: "her gece ... bir defa toplu
        olarak sorgulanabilir"). Cards in no list are not reachable this way. The lists are read at
        once, each in its page order (``_pages``; ProviderHTTP's limit paces them): a page refused
        with a 429 waits its Retry-After without holding up the other lists' pages (a no-change run of 10,000 members
        with one call in seven refused spent 11 s of its 11 s reading them one list after another,
        2026-12-07). The cards are merged in the lists' order, as when read one after another."""
        if self._scan is None:
            async def cards_of(remote_list: RemoteList) -> list[dict[str, Any]]:
                return [member_row(row, MEMBERS_OF_LIST) async for row in self._members_of(remote_list.remote_id)]

            reads = [asyncio.ensure_future(cards_of(remote_list)) for remote_list in await self.all_lists()]
            try:
                per_list = await asyncio.gather(*reads)
            except BaseException:
                for read in reads:      # one list could not be read: the scan fails, the others stop
                    read.cancel()
                await asyncio.gather(*reads, return_exceptions=True)
                raise
            rows: dict[str, dict[str, Any]] = {}
            for cards in per_list:
                for card in cards:
                    rows[normalize_email(card["email"])] = card
            self._scan = rows
        return self._scan

    async def pull_statuses(self, since: dt.datetime | None) -> AsyncIterator[RemoteStatus]:
        """A full scan (``status_pull="full_scan"``): the document offers no "changed since" query,
        so ``since`` is ignored; each card's ``statusDate`` dates its status."""
        self._scan = None
        for email, row in (await self._full_scan()).items():
            status = PULLED_STATUSES.get(row["status"])
            if status is None or not email:
                continue
            yield RemoteStatus(email, status, status_time(row), row["memberId"])  # type: ignore[arg-type]

    async def refresh_statuses(self, remote_lists: Sequence[str]) -> AsyncIterator[RemoteStatus]:
        """Nothing cheaper than the full scan exists; instead every update reads its card right
        before writing it (``_update``), which closes the same window member by member."""
        for _ in ():
            yield _

    async def pull_consents(self, since: dt.datetime | None) -> AsyncIterator[RemoteConsent]:
        """İYS states of every scanned card ("İzin durumlarının Entegratöre aktarılması gecelik sorguda
        döner"); the scan of this run's status pull is reused. A state without a date is dated by
        the card's ``updateDate``. A card without İYS fields has no state; a value outside the
        registry's is an error, never skipped."""
        for email, row in (await self._full_scan()).items():
            raw_status, raw_type = row.get(api.IYS_STATUS), row.get(api.IYS_RECIPIENT_TYPE)
            if raw_status in (None, "") or not email:
                continue
            status = str(raw_status).strip().upper()
            recipient_type = str(raw_type or "").strip().upper()
            if status not in api.IYS_STATUSES or recipient_type not in api.IYS_RECIPIENT_TYPES:
                raise unknown_reading(f"{MEMBERS_OF_LIST} (İYS fields)",
                                      (f"{api.IYS_STATUS} ONAY/RET with {api.IYS_RECIPIENT_TYPE} BIREYSEL/TACIR",),
                                      _redacted(row, api.IYS_STATUS, api.IYS_RECIPIENT_TYPE))
            when = parse_time(row.get(api.IYS_DATE)) or parse_time(row.get("updateDate"))
            if when is None or (since is not None and when < since):
                continue
            yield RemoteConsent(email, "EPOSTA", recipient_type, status, when,  # type: ignore[arg-type]
                                row.get(api.IYS_SOURCE) or None)

    async def pull_campaigns(self) -> AsyncIterator[RemoteCampaign]:
        settle = dt.datetime.now(dt.UTC) - dt.timedelta(days=api.CAMPAIGN_SETTLE_DAYS)
        async for row in self._pages(api.CAMPAIGN_PATH, {}, CAMPAIGNS, "campaign list", "id"):
            raw = str(row.get("status") or "")
            status = next((known for known in api.CAMPAIGN_STATUSES if known.lower() == raw.lower()), raw)
            sent = parse_time(row.get("sendDate"))
            yield RemoteCampaign(
                remote_id=_row_id(row, CAMPAIGNS, "id", "campaignId"), name=str(row.get("name") or ""),
                status=status, sent_at=sent, updated_at=parse_time(row.get("updateDate")),
                final=status == "Error" or (status == "Sent" and sent is not None and sent < settle))

    async def campaign_summary(self, campaign_id: str) -> list[dict[str, Any]]:
        """campaign-report: the delivery state of the campaign's lists, per list."""
        answer = await self._call("GET", api.CAMPAIGN_REPORT_PATH, CAMPAIGN_REPORT, f"report of campaign {campaign_id}",
                                  note=False, params={"campaignId": campaign_id},
                                  inferred={404: api.ERROR_CAMPAIGN_NOT_FOUND})
        rows, _, shape = read_rows(answer.data, CAMPAIGN_REPORT, "emailListId")
        if rows or shape not in AMBIGUOUS_WHEN_EMPTY:
            self.readings.note(CAMPAIGN_REPORT, f"{answer.reading}; {shape}")
        return rows

    async def pull_campaign_results(self, campaign: RemoteCampaign,
                                    context: ReportContext) -> AsyncIterator[list[RecipientResult]]:
        """campaign-report-detail, every recipient (no filter), given page by page as it comes."""
        if campaign.status not in api.CAMPAIGN_WITH_RESULTS:
            return
        page: dict[str, RecipientResult] = {}
        async for row in self._pages(api.CAMPAIGN_REPORT_DETAIL_PATH, {"campaignId": campaign.remote_id},
                                     CAMPAIGN_DETAIL, f"detailed report of campaign {campaign.remote_id}", None):
            email = normalize_email(str(row.get("email") or ""))
            if email:
                page[email] = recipient_result(email, row)
            if len(page) >= RESULT_PAGE:
                yield list(page.values())
                page = {}
        if page:
            yield list(page.values())

    # --- connection test ------------------------------------------------------------------

    async def connection_probe(self) -> list[str]:
        """The read-only calls a run makes, with real parameters, one line each with the reading
        its answer came in: health check, login and API key identification (in the configured
        ``api_key_in`` reading: ``connection test`` tries the others on 404/405), the account,
        the list index, the first page of each list's members, one member by e-mail, the
        campaign index and the reports of the latest campaign with results. Never writes. The
        first failure is raised (a SyncError naming the endpoint, a 404/405 with its status);
        ``self.readings`` holds what was seen."""
        lines: list[str] = []
        healthy = await self.health_check()
        lines.append(f"{HEALTH}: {'healthy' if healthy else 'NOT healthy'} (reading: {self._seen(HEALTH)})")
        lines += await self._probe_identification()
        account = await self.account()
        lines.append(f"{ACCOUNT}: {account.get('name') or account.get('accountName') or '?'!s}"
                     f"{'' if account.get('packageActive') is not False else ', NO active sending package'} "
                     f"(reading: {self._seen(ACCOUNT)})")
        lists = await self.all_lists()
        lines.append(f"{LIST_INDEX}: {len(lists)} list(s) (reading: {self._seen(LIST_INDEX)})")
        sample_email = None
        for remote_list in lists[:PROBE_LISTS]:
            rows, total = await self._page(api.MEMBER_PATH, list_key(remote_list.remote_id), MEMBERS_OF_LIST,
                                           f"members of list {remote_list.remote_id}", 1, "memberId")
            cards = [member_row(row, MEMBERS_OF_LIST) for row in rows]
            sample_email = sample_email or next((card["email"] for card in cards), None)
            lines.append(f"GET member?emailListId={remote_list.remote_id}: {len(cards)} member(s) on the first page"
                         f"{f' of {total}' if total is not None else ''} "
                         f"(reading: {self._seen(MEMBERS_OF_LIST)})")
        if len(lists) > PROBE_LISTS:
            lines.append(f"{MEMBERS_OF_LIST}: {len(lists) - PROBE_LISTS} more list(s) not probed")
        found = await self._find(sample_email or PROBE_EMAIL)
        reading = self._seen(MEMBER_BY_EMAIL) if found else self.readings.seen.get(
            f"{MEMBER_BY_EMAIL} (no such member)") or self._seen(MEMBER_BY_EMAIL)
        if sample_email and not found:     # updates read cards so: a run would reject every one
            raise ProviderError(f"{MEMBER_BY_EMAIL}: a member of a list was not found by its e-mail (reading: "
                                f"{reading}): the gateway may filter by another parameter than email")
        lines.append(f"{MEMBER_BY_EMAIL}: {'a card read' if found else 'no such member (a made-up address)'} "
                     f"(reading: {reading})")
        latest: RemoteCampaign | None = None
        count = 0
        async for campaign in self.pull_campaigns():
            count += 1
            if campaign.status in api.CAMPAIGN_WITH_RESULTS and (
                    latest is None or _later(campaign.remote_id, latest.remote_id)):
                latest = campaign
        lines.append(f"{CAMPAIGNS}: {count} campaign(s) (reading: {self._seen(CAMPAIGNS)})")
        if latest is not None:
            summary = await self.campaign_summary(latest.remote_id)
            lines.append(f"{CAMPAIGN_REPORT}?campaignId={latest.remote_id}: {len(summary)} list row(s) "
                         f"(reading: {self._seen(CAMPAIGN_REPORT)})")
            rows, total = await self._page(api.CAMPAIGN_REPORT_DETAIL_PATH, {"campaignId": latest.remote_id},
                                           CAMPAIGN_DETAIL, f"detailed report of campaign {latest.remote_id}", 1, None)
            lines.append(f"{CAMPAIGN_DETAIL}?campaignId={latest.remote_id}: {len(rows)} recipient(s) on the first "
                         f"page (reading: {self._seen(CAMPAIGN_DETAIL)})")
        return lines

    def _seen(self, endpoint: str) -> str:
        """The reading an endpoint's answers came in, for a probe line."""
        return self.readings.seen.get(endpoint, "none shown: empty")

    async def _probe_identification(self) -> list[str]:
        """Log in and identify the key in the configured ``api_key_in`` reading (a token already
        identified is not asked again). Another reading is tried by ``connection test`` itself
        (``request_fallbacks``): a 404/405 here is raised with its status."""
        auth = self._auth
        if auth is None:
            await self.account()
            return [f"{IDENTIFICATION}: identified"]
        await auth.headers(self.http)
        return [f"{TOKENS}: token issued (reading: {self._seen(TOKENS)}); {IDENTIFICATION}: "
                f"API key identified as {api.API_KEY_READING_TEXT[auth.api_key_in]} "
                f"(reading: {self._seen(IDENTIFICATION)})"]


def health_text(kind: str, body: Any) -> tuple[str, str]:
    """(the state's text, the reading) of a health-check answer; ("", "") when in no reading."""
    reading = ""
    if kind == "json" and isinstance(body, dict) and "isSuccess" in body and "status" not in body:
        body, reading = body.get("data"), "envelope, "
    if kind == "json" and isinstance(body, dict) and isinstance(body.get("status"), str):
        return body["status"].strip(), reading + "JSON status"
    if kind == "json" and isinstance(body, str):
        return body.strip(), reading + "JSON string"
    if kind == "text" and not reading:
        return str(body).strip(), "text"
    return "", ""


def _later(remote_id: str, than: str) -> bool:
    """Campaign ids are numbers ("id numarası"): the larger is the later; text ids keep the first."""
    return remote_id.isdigit() and than.isdigit() and int(remote_id) > int(than)


def recipient_result(email: str, row: Mapping[str, Any]) -> RecipientResult:
    """One campaign-report-detail row as a neutral result."""
    raw = str(row.get("status") or "")
    status = next((known for known in api.DETAIL_STATUSES if known.lower() == raw.lower()), raw)
    return RecipientResult(
        email=email, sent_at=parse_time(row.get("sendDate")),
        opened_at=parse_time(row.get("openDate")) if row.get("opened") else None,
        open_count=int(row.get("openCount") or (1 if row.get("opened") else 0)),
        clicked_at=parse_time(row.get("clickDate")) if row.get("clicked") else None,
        clicked_link=row.get("clickedUrl") or None,
        bounce_type={"HardBounced": "hard", "SoftBounced": "soft"}.get(status),
        bounce_reason=row.get("bounceReason") or None,
        unsubscribed_at=parse_time(row.get("unsubscribeDate")) if row.get("unsubscribed") else None,
        complained_at=parse_time(row.get("spamDate")) if row.get("spam") else None,
        extra={"status": status} if status else {})


def _suppressed(item: MemberUpsert, card: Mapping[str, Any]) -> RemoteStatus | None:
    """The card's suppression where the item would make it Active and the engine did not say
    ``resubscribe``: then nothing is written and the engine hears of it."""
    status = str(card["status"])
    if str(item.payload.get("status") or "Active") != "Active" or status not in api.SUPPRESSED_STATUSES \
            or item.resubscribe:
        return None
    member_id = str(card["memberId"])
    return RemoteStatus(normalize_email(item.email), PULLED_STATUSES[status],  # type: ignore[arg-type]
                        status_time(card), member_id)


def _as_reject(exc: ProviderError) -> RejectedRow:
    """A provider error on ONE row, as that row's reject (retried by a later run)."""
    if isinstance(exc, RejectedRow):
        return exc
    return RejectedRow(f"{exc.message} (will retry)", status_code=exc.status_code,
                       provider_code=exc.provider_code or type(exc).__name__)


async def _again_after_401(work: Callable[[], Awaitable[PushOutcome]]) -> PushOutcome:
    """One member's requests, once more when a request met a SECOND expired token: ProviderHTTP
    logs in again once per request, and a request retried after a 5xx may outlive two tokens.
    Every member step is safe to repeat (the card is read before it is written)."""
    try:
        return await work()
    except AuthenticationError as exc:
        if exc.status_code != 401 or exc.provider_code is not None:   # a refused login or API key: no
            raise
        log.info("euromsg.member_retried_after_401")
        return await work()
