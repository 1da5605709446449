"""WapCRM: a pull-only source of activity (conversations, WhatsApp messages) keyed by phone.

Every path, parameter and guess lives in :mod:`sync.providers.wapcrm.api`; this module only
speaks it. The secret key travels in one header (the connection's ``secret_header`` setting,
documented default ``X-CIB-SecretKey``) and is registered with the log redaction.

Errors come inside the documented envelope (``status: false`` with a message, a ``statusCode``
and a ``requestID``): :func:`classify` reads them for the HTTP layer (an unknown key is an
authentication error, a transient code is retried, anything else stops the connection) except
on the per-phone message list, where a refused phone is that phone's reject.

Read-only by construction: the only request this provider can build is ``GET`` on one of
:data:`api.READ_PATHS` (:meth:`WapcrmProvider._read`); there is no method that sends a WhatsApp
message or saves a call result, and the builder refuses those paths and any other method.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import re
import zoneinfo
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import httpx

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
from sync.providers.wapcrm import api

#: Pull-only: no lists, no members pushed, no statuses; activity pulled. No documented rate limit;
#: four requests in flight per connection (message lists are asked phone by phone).
CAPABILITIES = Capabilities(
    max_batch=50, async_bulk_import=False, lists="none", supports_list_rename=False, supports_list_delete=False,
    pushes_members=False, supports_unsubscribe=False, member_removal="none", member_key="crm_id",
    membership_model="contact", concurrency=4, rate_per_s=None, status_pull="none", pulls_consents=False,
    has_campaign_reports=False, pulls_activity=True,
)
#: Defaults of the connection settings that shape the activity window (specs.py offers them).
DEFAULT_FIRST_DAYS = 30
DEFAULT_LOOKBACK_DAYS = 2
DEFAULT_REFRESH_PER_RUN = 100
_TZ = zoneinfo.ZoneInfo(api.SERVICE_TIME_ZONE)
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")


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


def _envelope_of(response: httpx.Response) -> dict[str, Any] | None:
    """The documented envelope of an answer, or None when the body is not one."""
    try:
        body = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) and "status" in body else None


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
    if envelope is None or envelope.get("status") is not False:
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


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _int(value: Any) -> int | None:
    """A whole number, or seconds from "HH:MM:SS"/"MM:SS"; None for anything else."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value) if float(value).is_integer() else None
    text = _text(value) if isinstance(value, str) else None
    if text is not None and text.lstrip("-").isdigit():
        return int(text)
    parts = (text or "").split(":")
    if 2 <= len(parts) <= 3 and all(part.isdigit() for part in parts):
        seconds = 0
        for part in parts:
            seconds = seconds * 60 + int(part)
        return seconds
    return None


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return (_text(value) or "").lower() in ("true", "1", "yes", "evet")


def parse_time(value: Any) -> dt.datetime | None:
    """A WapCRM date and time (ISO 8601, Turkey's local time unless it says otherwise) in UTC."""
    text = _text(value)
    if text is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            parsed = dt.datetime.strptime(text, "%d.%m.%Y %H:%M:%S")
        except ValueError:
            return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=_TZ)).astimezone(dt.UTC)


def parse_sent(date_value: Any, time_value: Any) -> dt.datetime | None:
    """A message's ``sentdate`` + ``senttime`` (api.SENT_*_FORMAT, also DD.MM.YYYY and HH:MM) in UTC."""
    date_text, time_text = _text(date_value), _text(time_value) or "00:00:00"
    if date_text is None:
        return None
    day: dt.date | None = None
    for pattern in (api.SENT_DATE_FORMAT, "%d.%m.%Y"):
        try:
            day = dt.datetime.strptime(date_text[:10], pattern).date()
            break
        except ValueError:
            continue
    clock = _CLOCK.match(time_text)
    if day is None or clock is None:
        return None
    hour, minute, second = int(clock[1]), int(clock[2]), int(clock[3] or 0)
    if hour > 23 or minute > 59 or second > 59:
        return None
    return dt.datetime.combine(day, dt.time(hour, minute, second), _TZ).astimezone(dt.UTC)


def message_key(row: Mapping[str, Any], occurrence: int) -> str:
    """The identity of a message the document gives no id for: a hash of every documented field,
    and its occurrence among identical rows of one answer (the same text sent twice in one second
    is two messages). Stable across answers as long as the provider keeps the order of equal rows."""
    fields = [str(row.get(name) or "").strip() for name in api.MESSAGE_FIELDS]
    digest = hashlib.sha256(json.dumps([*fields, occurrence], ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()


class WapcrmProvider:
    """The WapCRM side of a connection: reference data, conversations by day, messages by phone."""

    name: ClassVar[str] = "wapcrm"

    def __init__(self, http: ProviderHTTP, *, instance_id: int = 0,
                 window: ActivityWindow | None = None, capabilities: Capabilities = CAPABILITIES) -> None:
        self.http = http
        self.capabilities = capabilities
        self.instance_id = instance_id
        self.activity_window = window or ActivityWindow(api.SERVICE_TIME_ZONE, DEFAULT_FIRST_DAYS,
                                                        DEFAULT_LOOKBACK_DAYS, DEFAULT_REFRESH_PER_RUN)

    @classmethod
    def create(cls, http_factory: Callable[[Capabilities, Auth], ProviderHTTP], credentials: Mapping[str, str],
               settings: Mapping[str, Any], integrator: Mapping[str, str] | None = None) -> WapcrmProvider:
        header = api.parse_header_name("secret_header", settings.get("secret_header") or api.SECRET_HEADER)
        http = http_factory(CAPABILITIES, SecretHeaderAuth(header, credentials["secret_key"]))
        if http is not None:        # None: built only to read its capabilities (the provider suite)
            http.classifier = classify
        window = ActivityWindow(api.SERVICE_TIME_ZONE,
                                int(settings.get("first_days", DEFAULT_FIRST_DAYS)),
                                int(settings.get("lookback_days", DEFAULT_LOOKBACK_DAYS)),
                                int(settings.get("messages_refresh_per_run", DEFAULT_REFRESH_PER_RUN)))
        return cls(http, instance_id=int(settings.get("instance_id", 0) or 0), window=window)

    # --- the one request builder ----------------------------------------------------------

    async def _send(self, path: str, params: Mapping[str, str] | None = None, *,
                    method: str = "GET") -> httpx.Response:
        """THE request builder: ``GET path``. Refuses any path but api.READ_PATHS and any method
        but GET, before anything is sent: this daemon sends no message and saves no call result."""
        if method != "GET" or path not in api.READ_PATHS:
            raise ForbiddenRequest(f"refused to send {method} {path}: this daemon only reads WapCRM "
                                   f"(GET {', '.join(sorted(api.READ_PATHS))})")
        return await self.http.request("GET", path, params=params)

    @staticmethod
    def _data(response: httpx.Response, path: str) -> Any:
        """The envelope's ``data`` of a successful answer (the classifier has seen the failures)."""
        what = f"WapCRM {path}"
        if response.status_code >= 300:     # not the envelope: a wrong base URL or a proxy in the way
            raise FatalError(f"{what}: answered HTTP {response.status_code} instead of the envelope; check the "
                             "connection's base URL", status_code=response.status_code)
        envelope = json_of(response, what, ("status",))
        if envelope.get("status") is not True:
            raise MalformedAnswerError(f"{what}: {_failure_text(envelope)}", status_code=response.status_code)
        return envelope.get("data")

    async def _read(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        return self._data(await self._send(path, params), path)

    @staticmethod
    def _array(data: Any, what: str) -> list[Mapping[str, Any]]:
        if data is None or data == "":
            return []
        if not isinstance(data, list) or not all(isinstance(item, Mapping) for item in data):
            raise MalformedAnswerError(f"WapCRM {what}: data is not an array of objects")
        return list(data)

    async def health_check(self) -> bool:
        """The secret key opens the user list (``connection test``)."""
        await self._read(api.USERS_PATH)
        return True

    # --- reference data -------------------------------------------------------------------

    async def pull_reference(self) -> list[ReferenceItem]:
        users, instances, results = await asyncio.gather(
            self._read(api.USERS_PATH), self._read(api.INSTANCES_PATH), self._read(api.CALL_RESULTS_PATH))
        items: list[ReferenceItem] = []
        for row in self._array(users, api.USERS_PATH):
            remote_id = _text(row.get(api.USER_ID))
            if remote_id is not None:
                items.append(ReferenceItem("user", remote_id, _text(row.get(api.USER_NAME)) or "", attributes={
                    k: v for k, v in row.items() if k not in (api.USER_ID, api.USER_NAME)}))
        for row in self._array(instances, api.INSTANCES_PATH):
            remote_id = _text(row.get(api.INSTANCE_ID))
            if remote_id is not None:
                items.append(ReferenceItem(
                    "instance", remote_id, _text(row.get(api.INSTANCE_NAME)) or "",
                    phone=_text(row.get(api.INSTANCE_PHONE)),
                    attributes={k: v for k, v in row.items()
                                if k not in (api.INSTANCE_ID, api.INSTANCE_NAME, api.INSTANCE_PHONE)}))
        items.extend(self._call_results(self._array(results, api.CALL_RESULTS_PATH), None))
        return items

    def _call_results(self, rows: list[Mapping[str, Any]], parent: str | None) -> list[ReferenceItem]:
        """The documented two-level tree, flattened: a top result (``parentID`` 0) and its children."""
        items: list[ReferenceItem] = []
        for row in rows:
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
        found: dict[str, RemoteConversation] = {}
        for row in self._array(data, api.CONVERSATIONS_PATH):
            conversation = self._conversation(row)
            if conversation is not None:
                found[conversation.remote_id] = conversation     # the same id twice: the later row
        return list(found.values())

    @staticmethod
    def _conversation(row: Mapping[str, Any]) -> RemoteConversation | None:
        remote_id = _text(row.get("id"))
        if remote_id is None:
            return None
        raw_phone = _text(row.get("phoneNumber"))
        details = {key: row.get(key) for key in ("phoneNumber", "note", "customerFullName", "callGuidId",
                                                   "targetNumber", "pbxPhoneNumber", "pbxQueue", "instanceName",
                                                   "createDate")
                   if row.get(key) not in (None, "")}
        return RemoteConversation(
            remote_id=remote_id, occurred_at=parse_time(row.get("createDate")), phone=phone_or_none(raw_phone),
            direction=_int(row.get("conversationResultDirection")), ring_seconds=_int(row.get("ringTime")),
            call_seconds=_int(row.get("callTime")), transferred=_bool(row.get("transferredCall")),
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
        params = {api.PHONE_PARAM: phone}
        if self.instance_id:
            params[api.INSTANCE_PARAM] = str(self.instance_id)
        response = await self._send(api.MESSAGES_PATH, params)
        envelope = _envelope_of(response)
        if response.status_code < 300 and envelope is not None and envelope.get("status") is False:
            raise RejectedRow(_failure_text(envelope), status_code=response.status_code,
                              provider_code=str(envelope.get("statusCode") or "") or None)
        data = self._data(response, api.MESSAGES_PATH)
        seen: Counter[tuple[str, ...]] = Counter()
        messages: list[RemoteMessage] = []
        for row in self._array(data, api.MESSAGES_PATH):
            fields = tuple(str(row.get(name) or "").strip() for name in api.MESSAGE_FIELDS)
            occurrence = seen[fields]
            seen[fields] += 1
            source = _text(row.get("messagesource")) or ""
            messages.append(RemoteMessage(
                key=message_key(row, occurrence), phone=phone,       # the list asked for: that phone's
                direction=source.upper(), text=_text(row.get("message")),
                sent_at=parse_sent(row.get("sentdate"), row.get("senttime")),
                channel=_text(row.get("channelnumber"))))
        return messages
