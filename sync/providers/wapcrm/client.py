"""WapCRM: a pull-only source of activity (conversations, WhatsApp messages) keyed by phone.

Every path, parameter, guess and reading lives in :mod:`sync.providers.wapcrm.api`; this module
only speaks it. The secret key travels in one header (the connection's ``secret_header`` setting,
documented default ``X-CIB-SecretKey``) and is registered with the log redaction.

Requests follow the connection's ``request_reading`` (api.REQUEST_READINGS: POST with the JSON
model, the document's reading and the default, or GET with query parameters). Answers are read
tolerantly where the document shows no answer (api.READINGS): the envelope's keys in any casing,
``data`` as an array, an id-keyed object or JSON text, the dates in every reasonable format. Each
reading met is noted in :attr:`WapcrmProvider.readings`; an answer in none of them is
:class:`~sync.errors.UnknownReadingError`, never an empty pull or a default.

Errors come inside the documented envelope (``status: false`` with a message, a ``statusCode``
and a ``requestID``): :func:`classify` reads them for the HTTP layer (an unknown key is an
authentication error, a transient code is retried, anything else stops the connection) except
on the per-phone message list, where a refused phone is that phone's reject.

Read-only by construction: the only request this provider can build goes to one of
:data:`api.READ_PATHS` (:meth:`WapcrmProvider._send`) with the method of the request reading;
there is no method that sends a WhatsApp message or saves a call result, and the builder refuses
those paths whatever the method.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import re
import zoneinfo
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import httpx
import structlog

from sync.errors import ConfigurationError, FatalError, MalformedAnswerError, RejectedRow
from sync.http import Auth, ProviderHTTP, Verdict, json_of
from sync.logs import SECRETS
from sync.phones import UnusablePhone, is_mobile, normalize_phone, phone_or_none
from sync.providers.base import (
    ActivityWindow,
    Capabilities,
    ReferenceItem,
    RemoteConversation,
    RemoteMessage,
)
from sync.providers.readings import ReadingLog, unknown_reading
from sync.providers.wapcrm import api

log = structlog.get_logger(__name__)

#: Pull-only: no lists, no members pushed, no statuses; activity pulled. No documented rate limit;
#: four requests in flight per connection (message lists are asked phone by phone).
CAPABILITIES = Capabilities(
    max_batch=50, async_bulk_import=False, lists="none", supports_list_rename=False, supports_list_delete=False,
    pushes_members=False, supports_unsubscribe=False, member_removal="none", member_key="crm_id",
    membership_model="contact", concurrency=4, rate_per_s=None, status_pull="none", pulls_consents=False,
    has_campaign_reports=False, pulls_activity=True,
)
#: Defaults of the connection settings that shape the activity window (specs.py offers them).
#: All ours, none from the document (it documents no change feed, no paging, no date filter on
#: messages): see docs/providers/wapcrm.md for what each costs.
DEFAULT_FIRST_DAYS = 30
DEFAULT_LOOKBACK_DAYS = 2
DEFAULT_REFRESH_PER_RUN = 100
#: Issue 22 item 18: every day of the last ``conversations_reread_days`` is read again at least
#: every ``conversations_reread_every_days`` days, so a call saved back-dated (``addconversation``
#: takes the call's own time) by up to that many days is read within that period.
DEFAULT_REREAD_DAYS = 30
DEFAULT_REREAD_EVERY_DAYS = 7
#: Issue 22 item 19: every tracked phone's messages are read again at least every this many days.
DEFAULT_MESSAGES_REFRESH_DAYS = 7
#: The document's own example ``chatPhoneNumber``, asked by ``connection_probe`` only when the
#: account has no conversation and no mobile instance number to ask about.
EXAMPLE_PHONE = "908504900290"
_TZ = zoneinfo.ZoneInfo(api.SERVICE_TIME_ZONE)
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$")
_TURKISH = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})(?:[ T]+(\d{1,2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?)?$")
_ASPNET = re.compile(r"^/Date\((-?\d+)(?:[+-]\d{4})?\)/$")
_UNIX = re.compile(r"^-?\d{9,13}(?:\.\d+)?$")
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?$")
_MILLISECONDS_FROM = 10**11          # a Unix time this large is in milliseconds (year 5138 in seconds)


class ForbiddenRequest(ConfigurationError):
    """This daemon only reads WapCRM: the request asked for would change something there."""


class SecretHeaderAuth(Auth):
    """The tenant's secret key in the connection's header, on every request (documented)."""

    def __init__(self, header: str, secret_key: str) -> None:
        SECRETS.register(secret_key)
        self._headers = {header: secret_key}

    async def headers(self, http: ProviderHTTP) -> Mapping[str, str]:
        return self._headers

    def invalidate(self) -> None:
        """Nothing cached: a key refused twice is final (ProviderHTTP raises it)."""


# --- readings of keys ---------------------------------------------------------------------------

def _casing(documented: str, given: str) -> str:
    if given == documented:
        return api.READING_DOCUMENTED_KEYS
    if given == documented[:1].upper() + documented[1:]:
        return api.READING_PASCAL_KEYS
    return api.READING_OTHER_KEYS


def canonical(row: Mapping[str, Any], names: Sequence[str]) -> tuple[dict[str, Any], str | None]:
    """The documented ``names`` of ``row`` found in any casing, under their documented spelling,
    and the casing they came in (None when none is present)."""
    lowered: dict[str, str] = {}
    for key in row:
        lowered.setdefault(str(key).lower(), str(key))
    found: dict[str, Any] = {}
    casings: set[str] = set()
    for name in names:
        given = lowered.get(name.lower())
        if given is not None:
            found[name] = row[given]
            casings.add(_casing(name, given))
    if not casings:
        return found, None
    return found, casings.pop() if len(casings) == 1 else api.READING_OTHER_KEYS


def _first_key(row: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    """The key of ``row`` that is the first of ``keys`` present (in any casing)."""
    lowered = {str(key).lower(): str(key) for key in row}
    for key in keys:
        if key.lower() in lowered:
            return lowered[key.lower()]
    return None


def _status_of(value: Any) -> bool | None:
    """``status`` as JSON true/false or the text "true"/"false"; None for anything else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _envelope_of(response: httpx.Response) -> dict[str, Any] | None:
    """The envelope of an answer under the documented key spellings, or None when the body is not
    a JSON object with a ``status`` in any casing."""
    try:
        body = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict):
        return None
    envelope, _ = canonical(body, api.ENVELOPE_KEYS)
    return envelope if "status" in envelope else None


def _failure_text(envelope: Mapping[str, Any]) -> str:
    message = " ".join(str(envelope.get("message") or "no message").split())[:200]
    code = str(envelope.get("statusCode") or "").strip()
    request_id = str(envelope.get("requestID") or "").strip()[:64]
    return (f"WapCRM: {message}" + (f" (statusCode {code})" if code else "")
            + (f" (requestID {request_id})" if request_id else ""))


def classify(response: httpx.Response) -> Verdict | None:
    """THE error table of WapCRM, for the HTTP layer: an envelope with ``status: false`` ->
    what to do (api.CODE_*). None: the answer is what it looks like (a success, or a refused
    phone on the per-phone message list, which the client turns into that phone's reject)."""
    envelope = _envelope_of(response)
    if envelope is None or _status_of(envelope.get("status")) is not False:
        return None
    code = str(envelope.get("statusCode") or "").strip()
    reason = SECRETS.scrub(_failure_text(envelope))
    if code == api.CODE_UNAUTHORIZED:
        return Verdict("auth", f"{reason}: check the connection's secret key (`crm-esp-sync connection rotate`) "
                       "and its secret_header setting", provider_code=code)
    if code in api.TRANSIENT_CODES:
        return Verdict("retry", reason, provider_code=code)
    if code == api.CODE_BAD_REQUEST and response.request.url.path.rstrip("/").endswith("/" + api.MESSAGES_PATH):
        return None
    return Verdict("fatal", reason, provider_code=code or None)


# --- readings of values ---------------------------------------------------------------------------

def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _local(moment: dt.datetime) -> dt.datetime:
    return (moment if moment.tzinfo else moment.replace(tzinfo=_TZ)).astimezone(_TZ)


def read_time(value: Any, what: str) -> tuple[dt.datetime | None, str | None]:
    """A WapCRM date and time in Turkey's local time (aware), and the reading it came in
    (api.DATE_READINGS); (None, None) for an empty value; UnknownReadingError for anything else."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, None
    text = str(value).strip()
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise unknown_reading(what, api.DATE_READINGS, value)
    if isinstance(value, int | float) or _UNIX.match(text):
        number = float(text)
        millis = abs(number) >= _MILLISECONDS_FROM
        moment = dt.datetime.fromtimestamp(number / 1000 if millis else number, dt.UTC)
        return moment.astimezone(_TZ), api.DATE_UNIX_MILLISECONDS if millis else api.DATE_UNIX_SECONDS
    if (iso := _ISO.match(text)) is not None:
        try:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is not None:
            return _local(parsed), api.DATE_ISO_OFFSET if iso[1] else api.DATE_ISO_LOCAL
    if (turkish := _TURKISH.match(text)) is not None:
        day, month, year, hour, minute, second = (int(part) if part else 0 for part in turkish.groups())
        try:
            return dt.datetime(year, month, day, hour, minute, second, tzinfo=_TZ), api.DATE_TURKISH
        except ValueError:
            pass
    if (aspnet := _ASPNET.match(text)) is not None:
        return dt.datetime.fromtimestamp(int(aspnet[1]) / 1000, dt.UTC).astimezone(_TZ), api.DATE_ASPNET
    raise unknown_reading(what, api.DATE_READINGS, value)


def parse_time(value: Any, what: str = "WapCRM createDate") -> dt.datetime | None:
    """A WapCRM date and time (any api.DATE_READINGS; Turkey's local time unless it says otherwise)
    in UTC; None for an empty value."""
    moment, _ = read_time(value, what)
    return None if moment is None else moment.astimezone(dt.UTC)


def read_sent(date_value: Any, time_value: Any, what: str = "WapCRM messagelistforphone"
              ) -> tuple[dt.datetime | None, str | None, str | None]:
    """A message's ``sentdate`` + ``senttime`` in UTC, with the readings of each: the date in any
    createDate reading (its own time used when ``senttime`` is empty), the time as
    HH:MM[:SS[.fraction]]."""
    moment, date_reading = read_time(date_value, f"{what} sentdate")
    if moment is None:
        return None, None, None
    time_text = _text(time_value)
    if time_text is None:
        return moment.astimezone(dt.UTC), date_reading, None
    clock = _CLOCK.match(time_text)
    if clock is None or int(clock[1]) > 23 or int(clock[2]) > 59 or int(clock[3] or 0) > 59:
        raise unknown_reading(f"{what} senttime", (api.TIME_CLOCK,), time_value)
    at = dt.time(int(clock[1]), int(clock[2]), int(clock[3] or 0))
    return dt.datetime.combine(moment.date(), at, _TZ).astimezone(dt.UTC), date_reading, api.TIME_CLOCK


def parse_sent(date_value: Any, time_value: Any) -> dt.datetime | None:
    """A message's ``sentdate`` + ``senttime`` in UTC (see :func:`read_sent`)."""
    return read_sent(date_value, time_value)[0]


def read_seconds(value: Any, what: str) -> tuple[int | None, str | None]:
    """A duration in whole seconds: a number (or its digits), or "HH:MM:SS"/"MM:SS"."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return round(value), api.DURATION_SECONDS
    text = str(value).strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return round(float(text)), api.DURATION_SECONDS
    parts = text.split(".")[0].split(":")
    if 2 <= len(parts) <= 3 and all(part.isdigit() for part in parts):
        seconds = 0
        for part in parts:
            seconds = seconds * 60 + int(part)
        return seconds, api.DURATION_CLOCK
    raise unknown_reading(what, (api.DURATION_SECONDS, api.DURATION_CLOCK, "MM:SS"), value)


def read_direction(value: Any, what: str) -> int | None:
    """conversationResultDirection: the documented number (or its digits) or its Turkish name."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    text = str(value).strip()
    if text.isdigit() and int(text) in api.DIRECTIONS and not isinstance(value, bool):
        return int(text)
    names = {name.casefold(): number for number, name in api.DIRECTIONS.items()}
    if text.casefold() in names:
        return names[text.casefold()]
    raise unknown_reading(what, [f"{number} ({name})" for number, name in api.DIRECTIONS.items()], value)


def read_flag(value: Any, what: str) -> bool:
    """transferredCall: true/false, "true"/"false", 1/0, evet/hayır; null is false."""
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().casefold()
    if text in ("true", "1", "evet", "yes"):
        return True
    if text in ("false", "0", "hayır", "no", ""):
        return False
    raise unknown_reading(what, ("true/false", "1/0", "evet/hayır"), value)


def message_key(row: Mapping[str, Any], occurrence: int) -> str:
    """The identity of a message the document gives no id for: a hash of every documented field
    (``row`` under the documented spellings), and its occurrence among identical rows of one
    answer (the same text sent twice in one second is two messages). Stable across answers as long
    as the provider keeps the order of equal rows."""
    fields = [str(row.get(name) or "").strip() for name in api.MESSAGE_FIELDS]
    digest = hashlib.sha256(json.dumps([*fields, occurrence], ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()


def _masked(phone: str) -> str:
    return phone[:5] + "*" * max(len(phone) - 7, 0) + phone[-2:]


class WapcrmProvider:
    """The WapCRM side of a connection: reference data, conversations by day, messages by phone."""

    name: ClassVar[str] = "wapcrm"
    #: The request readings ``connection test`` tries in turn on 404/405, the document's first.
    request_fallbacks: ClassVar[Mapping[str, Sequence[str]]] = {
        api.REQUEST_READING_SETTING: tuple(api.REQUEST_READINGS)}

    def __init__(self, http: ProviderHTTP, *, instance_id: int = 0, window: ActivityWindow | None = None,
                 capabilities: Capabilities = CAPABILITIES,
                 request_reading: str = api.DEFAULT_REQUEST_READING) -> None:
        self.http = http
        self.capabilities = capabilities
        self.instance_id = instance_id
        self.activity_window = window or ActivityWindow(
            api.SERVICE_TIME_ZONE, DEFAULT_FIRST_DAYS, DEFAULT_LOOKBACK_DAYS, DEFAULT_REFRESH_PER_RUN,
            DEFAULT_REREAD_DAYS, DEFAULT_REREAD_EVERY_DAYS, DEFAULT_MESSAGES_REFRESH_DAYS)
        self.request_reading = api.parse_request_reading(api.REQUEST_READING_SETTING, request_reading)
        self.readings = ReadingLog()

    @classmethod
    def create(cls, http_factory: Callable[[Capabilities, Auth], ProviderHTTP], credentials: Mapping[str, str],
               settings: Mapping[str, Any], integrator: Mapping[str, str] | None = None) -> WapcrmProvider:
        header = api.parse_header_name("secret_header", settings.get("secret_header") or api.SECRET_HEADER)
        request_reading = api.parse_request_reading(
            api.REQUEST_READING_SETTING, settings.get(api.REQUEST_READING_SETTING) or api.DEFAULT_REQUEST_READING)
        http = http_factory(CAPABILITIES, SecretHeaderAuth(header, credentials["secret_key"]))
        if http is not None:        # None: built only to read its capabilities (the provider suite)
            http.classifier = classify

        def number(key: str, default: int) -> int:
            value = settings.get(key, default)
            return default if value is None else int(value)
        window = ActivityWindow(
            api.SERVICE_TIME_ZONE, number("first_days", DEFAULT_FIRST_DAYS),
            number("lookback_days", DEFAULT_LOOKBACK_DAYS), number("messages_refresh_per_run", DEFAULT_REFRESH_PER_RUN),
            reread_days=number("conversations_reread_days", DEFAULT_REREAD_DAYS),
            reread_every_days=number("conversations_reread_every_days", DEFAULT_REREAD_EVERY_DAYS),
            messages_refresh_days=number("messages_refresh_days", DEFAULT_MESSAGES_REFRESH_DAYS))
        return cls(http, instance_id=int(settings.get("instance_id", 0) or 0), window=window,
                   request_reading=request_reading)

    # --- the one request builder ----------------------------------------------------------

    @property
    def method(self) -> str:
        """The HTTP method of the connection's request reading (GET or POST, both documented)."""
        return api.REQUEST_READINGS[self.request_reading]

    async def _send(self, path: str, model: Mapping[str, Any] | None = None) -> httpx.Response:
        """THE request builder: ``path`` with its request model, in the connection's request reading
        (POST with the model as JSON, or GET with it as query parameters). Refuses any path but
        api.READ_PATHS before anything is sent: this daemon sends no message and saves no call result."""
        method = self.method
        if path not in api.READ_PATHS or method not in ("GET", "POST"):
            raise ForbiddenRequest(f"refused to send {method} {path}: this daemon only reads WapCRM "
                                   f"({', '.join(sorted(api.READ_PATHS))})")
        fields = dict(model or {})
        query = {key: str(value) for key, value in fields.items()} if method == "GET" else None
        return await self.http.request(method, path, params=query or None,
                                       json=fields if method == "POST" else None, idempotent=True)

    def _data(self, response: httpx.Response, path: str) -> Any:
        """The envelope's ``data`` of a successful answer (the classifier has seen the failures)."""
        what = f"WapCRM {path}"
        if response.status_code >= 300:     # not the envelope: a wrong base URL, a proxy, a request reading
            hint = ""
            if response.status_code in (404, 405):
                others = [name for name in api.REQUEST_READINGS if name != self.request_reading]
                hint = (f" or its {api.REQUEST_READING_SETTING} setting ({self.request_reading}: {self.method}; "
                        f"the other: {', '.join(others)}; `connection test` tries each)")
            raise FatalError(f"{what}: {self.method} answered HTTP {response.status_code} instead of the envelope; "
                             f"check the connection's base URL{hint}", status_code=response.status_code)
        try:
            body = json.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            json_of(response, what)     # raises the one-line MalformedAnswerError (truncated, HTML, empty)
            raise
        envelope, casing = canonical(body, api.ENVELOPE_KEYS) if isinstance(body, dict) else ({}, None)
        status = _status_of(envelope.get("status"))
        if status is None or (status and "data" not in envelope):
            raise unknown_reading(what, ["the documented envelope {data, status, message, statusCode, requestID} "
                                         "in any key casing, status true/false"], body)
        if casing is not None:
            self.readings.note("envelope", casing)
        if not isinstance(envelope["status"], bool):
            self.readings.note("envelope status", "text true/false")
        if status is not True:
            raise MalformedAnswerError(f"{what}: {_failure_text(envelope)}", status_code=response.status_code)
        return envelope["data"]

    async def _read(self, path: str, model: Mapping[str, Any] | None = None) -> Any:
        return self._data(await self._send(path, model), path)

    def _rows(self, path: str, data: Any, id_keys: Sequence[str]) -> list[dict[str, Any]]:
        """``data`` of a list as rows, in any reading (api.READINGS): an array of objects, an object
        keyed by id (the key becomes the id of a row without one), either as JSON text; empty as
        [], {}, "" or null. Notes the shape under ``path`` (not for an empty answer)."""
        expected = ("an array of objects", "an object keyed by id whose values are objects",
                    "either as JSON text", 'empty: [], {}, "" or null')
        prefix = ""
        if isinstance(data, str) and data.strip()[:1] in ("[", "{"):
            try:
                data = json.loads(data)
            except ValueError:
                raise unknown_reading(f"WapCRM {path}", expected, data) from None
            prefix = api.READING_TEXT_PREFIX
        if data is None or (isinstance(data, str | list | dict) and not data):
            return []
        if isinstance(data, list) and all(isinstance(item, Mapping) for item in data):
            self.readings.note(path, prefix + api.READING_ARRAY)
            return [dict(item) for item in data]
        if isinstance(data, Mapping) and all(isinstance(item, Mapping) for item in data.values()):
            rows: list[dict[str, Any]] = []
            for key, item in data.items():
                row = dict(item)
                if _first_key(row, id_keys) is None:     # the key is the id, in the casing of the row's keys
                    pascal = bool(row) and all(str(name)[:1].isupper() for name in row)
                    row[id_keys[0][:1].upper() + id_keys[0][1:] if pascal else id_keys[0]] = key
                rows.append(row)
            self.readings.note(path, prefix + api.READING_ID_KEYED)
            return rows
        raise unknown_reading(f"WapCRM {path}", expected, data)

    def _fields(self, path: str, row: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
        found, casing = canonical(row, names)
        if casing is not None:
            self.readings.note(f"{path} fields", casing)
        return found

    async def health_check(self) -> bool:
        """The secret key opens the user list (``connection test``)."""
        await self._read(api.USERS_PATH)
        return True

    # --- reference data -------------------------------------------------------------------

    async def pull_reference(self) -> list[ReferenceItem]:
        users, instances, results = await asyncio.gather(
            self._read(api.USERS_PATH), self._read(api.INSTANCES_PATH), self._read(api.CALL_RESULTS_PATH))
        items = self._named_items("user", api.USERS_PATH, self._rows(api.USERS_PATH, users, api.USER_ID_KEYS),
                                  api.USER_ID_KEYS, api.USER_NAME_KEYS, ())
        items += self._named_items("instance", api.INSTANCES_PATH,
                                   self._rows(api.INSTANCES_PATH, instances, api.INSTANCE_ID_KEYS),
                                   api.INSTANCE_ID_KEYS, api.INSTANCE_NAME_KEYS, api.INSTANCE_PHONE_KEYS)
        result_rows = self._rows(api.CALL_RESULTS_PATH, results, (api.RESULT_ID,))
        items.extend(self._call_results(result_rows, None))
        return items

    def _named_items(self, kind: Any, path: str, rows: list[dict[str, Any]], id_keys: Sequence[str],
                     name_keys: Sequence[str], phone_keys: Sequence[str]) -> list[ReferenceItem]:
        """Users or instances (their fields ASSUMED: api.*_KEYS, in any casing). A non-empty answer
        in which no row has an id key is in no reading we know."""
        items: list[ReferenceItem] = []
        spellings: set[str] = set()
        for row in rows:
            id_key, name_key = _first_key(row, id_keys), _first_key(row, name_keys)
            phone_key = _first_key(row, phone_keys) if phone_keys else None
            remote_id = _text(row.get(id_key)) if id_key else None
            if remote_id is None:
                continue
            spellings.add(", ".join(key for key in (id_key, name_key, phone_key) if key))
            used = {id_key, name_key, phone_key}
            name = (_text(row.get(name_key)) if name_key else None) or ""
            items.append(ReferenceItem(kind, remote_id, name, phone=_text(row.get(phone_key)) if phone_key else None,
                                       attributes={k: v for k, v in row.items() if k not in used}))
        if rows and not items:
            raise unknown_reading(f"WapCRM {path}", [f"rows with an id ({' or '.join(id_keys)}, any casing)"], rows)
        if len(rows) > len(items):
            log.warning("wapcrm.rows_without_id", path=path, rows=len(rows) - len(items))
        if spellings:
            self.readings.note(f"{path} fields", " | ".join(sorted(spellings)))
        return items

    def _call_results(self, rows: Iterable[Mapping[str, Any]], parent: str | None) -> list[ReferenceItem]:
        """The documented two-level tree, flattened: a top result (``parentID`` 0) and its children."""
        items: list[ReferenceItem] = []
        for raw in rows:
            row = self._fields(api.CALL_RESULTS_PATH, raw, api.RESULT_FIELDS)
            remote_id = _text(row.get(api.RESULT_ID))
            if remote_id is None:
                continue
            given_parent = _text(row.get(api.RESULT_PARENT))
            parent_id = parent if parent is not None else (None if given_parent in (None, "0") else given_parent)
            items.append(ReferenceItem("call_result", remote_id, _text(row.get(api.RESULT_NAME)) or "",
                                       parent_id=parent_id))
            children = row.get(api.RESULT_CHILDREN)
            if isinstance(children, list) and parent is None:
                items.extend(self._call_results([c for c in children if isinstance(c, Mapping)], remote_id))
        return items

    # --- conversations --------------------------------------------------------------------

    async def pull_conversations(self, day: dt.date) -> list[RemoteConversation]:
        """One day's conversation reports (startDate = enddate = day, both inclusive: ASSUMED)."""
        stamp = day.strftime(api.DATE_FORMAT)
        data = await self._read(api.CONVERSATIONS_PATH, {api.START_DATE_PARAM: stamp, api.END_DATE_PARAM: stamp})
        rows = self._rows(api.CONVERSATIONS_PATH, data, ("id",))
        found: dict[str, RemoteConversation] = {}
        for raw in rows:
            conversation = self._conversation(self._fields(api.CONVERSATIONS_PATH, raw, api.CONVERSATION_FIELDS))
            if conversation is not None:
                found[conversation.remote_id] = conversation     # the same id twice: the later row
        if rows and not found:
            raise unknown_reading(f"WapCRM {api.CONVERSATIONS_PATH}", ["rows with an id (any casing)"], rows)
        if len(rows) > len(found):
            log.warning("wapcrm.rows_without_id", path=api.CONVERSATIONS_PATH, rows=len(rows) - len(found))
        return list(found.values())

    def _conversation(self, row: Mapping[str, Any]) -> RemoteConversation | None:
        remote_id = _text(row.get("id"))
        if remote_id is None:
            return None
        what = f"WapCRM {api.CONVERSATIONS_PATH}"
        occurred, date_reading = read_time(row.get("createDate"), f"{what} createDate")
        if date_reading is not None:
            self.readings.note(f"{api.CONVERSATIONS_PATH} createDate", date_reading)
        ring, ring_reading = read_seconds(row.get("ringTime"), f"{what} ringTime")
        call, call_reading = read_seconds(row.get("callTime"), f"{what} callTime")
        if ring_reading or call_reading:
            self.readings.note(f"{api.CONVERSATIONS_PATH} ringTime", str(ring_reading or call_reading))
        raw_phone = _text(row.get("phoneNumber"))
        details = {key: row.get(key) for key in ("phoneNumber", "note", "customerFullName", "callGuidId",
                                                   "targetNumber", "pbxPhoneNumber", "pbxQueue", "instanceName",
                                                   "createDate")
                   if row.get(key) not in (None, "")}
        return RemoteConversation(
            remote_id=remote_id, occurred_at=None if occurred is None else occurred.astimezone(dt.UTC),
            phone=phone_or_none(raw_phone), direction=read_direction(
                row.get("conversationResultDirection"), f"{what} conversationResultDirection"),
            ring_seconds=ring, call_seconds=call, transferred=read_flag(row.get("transferredCall"),
                                                                        f"{what} transferredCall"),
            transferred_to=_text(row.get("tuUser")), result=_text(row.get("callResultParent")),
            sub_result=_text(row.get("callResultChild")), user_name=_text(row.get("userName")),
            list_name=_text(row.get("dataListName")), details=details)

    # --- messages -------------------------------------------------------------------------

    async def pull_messages(self, phone: str) -> list[RemoteMessage]:
        """Every message of a normalised mobile number (a landline has no WhatsApp: nothing is
        asked). A phone WapCRM refuses (``status: false``, api.CODE_BAD_REQUEST) is RejectedRow."""
        try:
            phone = normalize_phone(phone)
        except UnusablePhone as exc:
            raise RejectedRow(exc.reason, provider_code="phone_invalid") from None
        if not is_mobile(phone):
            return []
        return await self._messages(phone)

    async def _messages(self, phone: str) -> list[RemoteMessage]:
        """The message list of a normalised phone, asked whatever the kind of number."""
        model: dict[str, Any] = {api.PHONE_PARAM: phone}
        if self.instance_id:
            model[api.INSTANCE_PARAM] = self.instance_id       # a number, as in the document's example
        response = await self._send(api.MESSAGES_PATH, model)
        envelope = _envelope_of(response)
        if response.status_code < 300 and envelope is not None and _status_of(envelope.get("status")) is False:
            raise RejectedRow(_failure_text(envelope), status_code=response.status_code,
                              provider_code=str(envelope.get("statusCode") or "") or None)
        rows = self._rows(api.MESSAGES_PATH, self._data(response, api.MESSAGES_PATH), ("id",))
        seen: Counter[tuple[str, ...]] = Counter()
        messages: list[RemoteMessage] = []
        what = f"WapCRM {api.MESSAGES_PATH}"
        for raw in rows:
            row = self._fields(api.MESSAGES_PATH, raw, api.MESSAGE_FIELDS)
            if not row:
                raise unknown_reading(what, [f"rows with the documented fields ({', '.join(api.MESSAGE_FIELDS)})"],
                                      raw)
            fields = tuple(str(row.get(name) or "").strip() for name in api.MESSAGE_FIELDS)
            occurrence = seen[fields]
            seen[fields] += 1
            sent_at, date_reading, time_reading = read_sent(row.get("sentdate"), row.get("senttime"), what)
            if date_reading is not None:
                self.readings.note(f"{api.MESSAGES_PATH} sentdate", date_reading)
            if time_reading is not None:
                self.readings.note(f"{api.MESSAGES_PATH} senttime", time_reading)
            source = _text(row.get("messagesource")) or ""
            messages.append(RemoteMessage(
                key=message_key(row, occurrence), phone=phone,       # the list asked for: that phone's
                direction=source.upper(), text=_text(row.get("message")), sent_at=sent_at,
                channel=_text(row.get("channelnumber"))))
        return messages

    # --- connection test ------------------------------------------------------------------

    def _readings_of(self, path: str) -> str:
        noted = [f"{endpoint.removeprefix(path).strip() or 'data'}: {reading}"
                 for endpoint, reading in self.readings.as_dict().items() if endpoint.startswith(path)]
        return "; ".join(noted) or "empty: no reading to tell"

    async def connection_probe(self) -> list[str]:
        """The read-only calls a run makes, with real parameters: users, instances, call results,
        yesterday's and today's conversations, and one phone's messages (a mobile phone from those
        conversations, else an instance's number, else the document's example number). One line
        each, with the reading its answer came in. Raises on the first call that fails."""
        verb = self.method
        lines = [f"request reading {self.request_reading} ({verb} with the request model "
                 f"{'as JSON' if verb == 'POST' else 'as query parameters'})"]
        items = await self.pull_reference()
        counts: Counter[str] = Counter(item.kind for item in items)
        envelope = self.readings.seen.get("envelope", "?")
        for path, kind in ((api.USERS_PATH, "user"), (api.INSTANCES_PATH, "instance"),
                           (api.CALL_RESULTS_PATH, "call_result")):
            lines.append(f"{verb} {path}: {counts[kind]} {kind.replace('_', ' ')}(s) "
                         f"(envelope keys {envelope}; {self._readings_of(path)})")
        today = dt.datetime.now(_TZ).date()
        phones: list[str] = []
        for day in (today - dt.timedelta(days=1), today):
            found = await self.pull_conversations(day)
            outside = sum(1 for item in found if item.occurred_at is not None
                          and abs((item.occurred_at.astimezone(_TZ).date() - day).days) > 1)
            phones += [item.phone for item in sorted(found, key=lambda c: c.occurred_at or dt.datetime.min.replace(
                tzinfo=dt.UTC), reverse=True) if item.phone and is_mobile(item.phone)]
            lines.append(f"{verb} {api.CONVERSATIONS_PATH} {day.isoformat()}: {len(found)} conversation(s) "
                         f"({self._readings_of(api.CONVERSATIONS_PATH)})"
                         + (f"; {outside} dated outside the day asked: the server may not read the request's "
                            "dates in this request reading" if outside else ""))
        instance_phones = (phone_or_none(item.phone) for item in items if item.kind == "instance")
        phones += [number for number in instance_phones if number is not None]
        phone = phones[0] if phones else EXAMPLE_PHONE
        try:
            messages = await self._messages(phone)
        except RejectedRow as exc:
            lines.append(f"{verb} {api.MESSAGES_PATH} {_masked(phone)}: the number refused ({exc.reason}); the "
                         "request was read")
        else:
            lines.append(f"{verb} {api.MESSAGES_PATH} {_masked(phone)}: {len(messages)} message(s) "
                         f"({self._readings_of(api.MESSAGES_PATH)})")
        return lines
