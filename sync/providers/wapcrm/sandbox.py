"""In-memory simulator of the WapCRM API, for tests and the demo.

It follows ``shared/esp-docs/wapcrm.txt`` and, where the document is silent, the ASSUMED choices in
``sync.providers.wapcrm.api`` (the one wire contract shared with the client). Each secret key is an
account with users, instances ("Hesap Listesi"), a two-level call-result tree, conversation
reports and messages per phone, seeded by the test or the demo (:meth:`seed_activity`,
:meth:`add_conversation`, :meth:`add_message`). Conversations are indexed by day and messages by
phone, so an answer costs what it returns.

Only what the document offers is accepted: the secret key in the header the sandbox is told
(documented ``X-CIB-SecretKey``), the documented path spellings (``Instances`` with a capital I),
GET or POST on every read with the request model as the dialect reads it (below),
``startDate``/``enddate`` as YYYY-MM-DD, ``chatPhoneNumber`` digits only and at least 9 of them,
an ``instanceID`` the account has. Every answer is the envelope; the service's own errors are
``status: false`` with a ``statusCode`` (api.CODE_*). ``chatoperation`` (send a WhatsApp message)
and ``addconversation`` (save a call result) are answered and RECORDED (:attr:`sent_messages`,
:attr:`saved_results`), so a test can prove the daemon never sends one.

Dialects (``dialect=``, :data:`DIALECTS`, the first the default): each one server's choice where
the document is silent (api.READINGS), so that every reading the client accepts is served:

- ``document``: the document read literally: the request model is the JSON body, whatever the
  method (a GET's query string is not read); the envelope and rows keyed as shown; ``data`` an
  array; ISO dates in Turkey's time (``2026-11-30T12:15:00``, ``sentdate`` YYYY-MM-DD,
  ``senttime`` HH:MM:SS).
- ``query``: as ``document``, but a GET's model is its query string (a POST's is its body).
- ``pascal``: a .NET server's PascalCase keys (``Data``, ``Status``, ``CreateDate``...),
  ``statusCode`` a number, Instances as an object keyed by id, users and instances keyed
  ``UserID``/``UserName``, ``InstanceID``/``InstanceName``, ASP.NET dates ``/Date(ms+0300)/``,
  an empty ``data`` null.
- ``turkish``: a GET's model from the query string; Turkish-culture text: ``30.11.2026 12:15:00``,
  ``sentdate`` ``30.11.2026``, ``senttime`` ``12:15``, durations ``00:01:35``, the direction as
  digits; ``data`` as JSON text (the document's model shows ``"data": ""``), an empty one "";
  Instances keyed by id, users and instances keyed ``userID``/``instanceID``.
- ``epoch``: ``createDate`` as Unix seconds (``addconversation`` takes the call time so),
  ``sentdate`` a .NET DateTime ``2026-11-30T00:00:00``, ``senttime`` a TimeSpan
  ``12:15:00.0000000``, an empty ``data`` "".
- ``get-only``: a server that answers the reads on GET only (POST: 405) with the model in the
  query string. Stricter than the document ("GET veya POST Olabilir"): it exists so that the
  request-reading fallback of ``connection test`` has something to find.

Faults from a ``FaultPlan`` apply to every call (there is no token endpoint; ``token_expire_after``
does not apply); the two write paths count as writes for ``apply_then_drop_rate``.
``envelope_failures`` makes the next N answers a transient ``status: false`` (statusCode 500).
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import random
import re
import uuid
import zoneinfo
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sync.providers.wapcrm import api
from sync.sandbox.faults import Fault, FaultInjector, FaultPlan
from sync.sandbox.transport import SandboxApp, answer

#: Where the API lives under the sandbox's address (the documented base URL's path).
PREFIX = "/api/"
_TZ = zoneinfo.ZoneInfo(api.SERVICE_TIME_ZONE)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
#: "9 hane ve üzeri" (documented): at least api.MIN_PHONE_DIGITS digits, no upper bound documented.
_DIGITS = re.compile(rf"^[0-9]{{{api.MIN_PHONE_DIGITS},}}$")
_ERROR_PAGES = {
    500: "<html><body><h1>500 Internal Server Error</h1></body></html>",
    502: "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>",
    503: "<html><head><title>503 Service Unavailable</title></head>"
         "<body><h1>503 Service Unavailable</h1></body></html>",
}


@dataclass(frozen=True)
class Dialect:
    """One server's reading of what the document leaves open (see the module docstring)."""

    request: Literal["body", "query", "get-only"]
    keys: Literal["document", "pascal"] = "document"
    dates: Literal["iso", "turkish", "epoch", "aspnet"] = "iso"
    instances_keyed: bool = False
    long_reference_keys: bool = False
    empty: Any = field(default_factory=list)
    data_as_text: bool = False
    numeric_status_code: bool = False


DIALECT_TABLE: Mapping[str, Dialect] = {
    "document": Dialect("body"),
    "query": Dialect("query"),
    "pascal": Dialect("body", keys="pascal", dates="aspnet", instances_keyed=True, long_reference_keys=True,
                      empty=None, numeric_status_code=True),
    "turkish": Dialect("query", dates="turkish", instances_keyed=True, long_reference_keys=True, empty="",
                       data_as_text=True),
    "epoch": Dialect("body", dates="epoch", empty=""),
    "get-only": Dialect("get-only"),
}
#: The readings this sandbox serves; the first is the document's literal reading (the default).
DIALECTS: tuple[str, ...] = tuple(DIALECT_TABLE)
_NOTES = ("Müşteri geri aranacak", "Fiyat bilgisi verildi", "Şikâyet iletildi", "Sipariş alındı", "")
_TEXTS = ("Merhaba, siparişim ne durumda?", "Kargonuz yarın teslim edilecek.", "Teşekkürler 🙏",
          "İade talebinizi aldık.", "Fatura bilgilerinizi paylaşır mısınız?", "Görüşmek üzere, iyi günler!")


class _Refused(Exception):
    """Answered with ``status: false`` and this statusCode."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class _Account:
    name: str
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    instances: dict[int, dict[str, Any]] = field(default_factory=dict)
    call_results: dict[int, dict[str, Any]] = field(default_factory=dict)   # top results, with childItem
    conversations: dict[int, dict[str, Any]] = field(default_factory=dict)
    by_day: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    #: customer number -> messages (each with the instance it came through)
    messages: dict[str, list[tuple[int, dict[str, Any]]]] = field(default_factory=lambda: defaultdict(list))
    next_conversation: int = 1000


Handler = Callable[[dict[str, Any], _Account], Any]


class WapcrmSandbox:
    """A stateful, in-memory WapCRM; ``.app`` is the Starlette app to mount or serve."""

    def __init__(self, accounts: Mapping[str, str] | None = None, *, secret_header: str = api.SECRET_HEADER,
                 faults: FaultPlan | None = None, seed: int = 0, dialect: str = DIALECTS[0],
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        if dialect not in DIALECT_TABLE:
            raise ValueError(f"unknown WapCRM sandbox dialect {dialect!r} (valid: {', '.join(DIALECTS)})")
        self.dialect = dialect
        self._dialect = DIALECT_TABLE[dialect]
        self.secret_header = secret_header
        self.clock = clock
        self.fault_plan = faults or FaultPlan()
        self.request_log: list[tuple[str, str, int]] = []   # (method, path, status); 0 = dropped
        #: (method, path, query/body parameters) of every request that reached a handler.
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.sent_messages: list[dict[str, Any]] = []
        self.saved_results: list[dict[str, Any]] = []
        #: The next N answers are a transient ``status: false`` (statusCode 500).
        self.envelope_failures = 0
        #: Phones whose message list the service refuses (``status: false``, statusCode 400).
        self.refused_phones: set[str] = set()
        self._rng = random.Random(seed)
        self._faults = FaultInjector(self.fault_plan)
        self._accounts: dict[str, _Account] = {}
        for key, name in (accounts or {}).items():
            self.add_account(key, name)
        self.app = SandboxApp(routes=self._routes(), front=self._front)

    # --- public helpers for tests and the demo ------------------------------------------

    def add_account(self, secret_key: str, name: str) -> None:
        """An account with one WhatsApp instance, two users and the documented call-result tree."""
        acc = self._accounts[secret_key] = _Account(name)
        acc.users = {1: {"id": 1, "name": "Ayşe Temsilci", "email": "ayse@wapcrm.example"},
                     2: {"id": 2, "name": "Mehmet Çağrı", "email": "mehmet@wapcrm.example"}}
        acc.instances = {15: {"id": 15, "name": f"{name} WhatsApp", "phoneNumber": "908504900290"},
                         16: {"id": 16, "name": f"{name} Santral", "phoneNumber": "902124900290"}}
        acc.call_results = {
            23: {"id": 23, "parentID": 0, "name": "Ulaşıldı", "childItem": [
                {"id": 21, "parentID": 23, "name": "Satış yapıldı", "childItem": None},
                {"id": 49, "parentID": 23, "name": "Bilgi verildi", "childItem": None}]},
            30: {"id": 30, "parentID": 0, "name": "Ulaşılamadı", "childItem": [
                {"id": 31, "parentID": 30, "name": "Meşgul", "childItem": None}]},
        }

    def account(self, secret_key: str) -> _Account:
        return self._accounts[secret_key]

    def add_conversation(self, secret_key: str, phone: str, when: dt.datetime, **fields: Any) -> int:
        """A conversation report row (documented fields; ``when`` in any zone, shown in Turkey's time)."""
        acc = self._accounts[secret_key]
        acc.next_conversation += 1
        conversation_id = int(fields.pop("id", acc.next_conversation))
        local = when.astimezone(_TZ).replace(tzinfo=None)
        row: dict[str, Any] = {
            "id": conversation_id, "createDate": local.isoformat(timespec="seconds"), "phoneNumber": phone,
            "note": "", "dataListName": "Kasım Arama Listesi", "customerFullName": "", "callResultParent": "Ulaşıldı",
            "callResultChild": "Bilgi verildi", "userName": "Ayşe Temsilci", "conversationResultDirection": 1,
            "callGuidId": str(uuid.UUID(int=self._rng.getrandbits(128), version=4)), "ringTime": 7,
            "callTime": 95, "transferredCall": False, "tuUser": None, "targetNumber": None,
            "pbxPhoneNumber": "902124900290", "pbxQueue": None, "instanceName": f"{acc.name} Santral",
        }
        unknown = sorted(set(fields) - set(api.CONVERSATION_FIELDS))
        if unknown:
            raise ValueError(f"not a documented conversation field: {', '.join(unknown)}")
        row.update(fields)
        self._remove_from_day(acc, conversation_id)
        acc.conversations[conversation_id] = row
        acc.by_day[row["createDate"][:10]].append(conversation_id)
        return conversation_id

    def change_conversation(self, secret_key: str, conversation_id: int, **fields: Any) -> None:
        """An agent edits a report later (a result chosen after the call)."""
        acc = self._accounts[secret_key]
        row = dict(acc.conversations[conversation_id])
        row.update(fields)
        when = dt.datetime.fromisoformat(row.pop("createDate")).replace(tzinfo=_TZ)
        phone = row.pop("phoneNumber")
        self.add_conversation(secret_key, phone, when, **row)

    def _remove_from_day(self, acc: _Account, conversation_id: int) -> None:
        old = acc.conversations.get(conversation_id)
        if old is not None:
            acc.by_day[old["createDate"][:10]].remove(conversation_id)

    def add_message(self, secret_key: str, phone: str, text: str, when: dt.datetime, *, source: str = "CUSTOMER",
                    instance_id: int = 15) -> None:
        """A WhatsApp message with ``phone`` (905...), from the customer or an agent (``ME``)."""
        if source not in api.MESSAGE_SOURCES:
            raise ValueError(f"messagesource is {' or '.join(api.MESSAGE_SOURCES)}")
        acc = self._accounts[secret_key]
        local = when.astimezone(_TZ)
        channel = acc.instances[instance_id]["phoneNumber"]
        acc.messages[phone].append((instance_id, {
            "channelnumber": channel, "sentdate": local.strftime(api.SENT_DATE_FORMAT),
            "senttime": local.strftime(api.SENT_TIME_FORMAT), "customernumber": phone, "message": text,
            "messagesource": source}))

    def seed_activity(self, secret_key: str, phones: Iterable[str], *, days: int = 3, messages: int = 3,
                      until: dt.datetime | None = None) -> None:
        """Deterministic activity for the given phones: one conversation on one of the last ``days``
        days and ``messages`` messages each (alternating customer and agent)."""
        end = until or self.clock()
        for phone in phones:
            when = end - dt.timedelta(days=self._rng.randrange(days), minutes=self._rng.randrange(1, 600))
            self.add_conversation(secret_key, phone, when, note=self._rng.choice(_NOTES),
                                  conversationResultDirection=self._rng.choice((1, 2, 3, 4)),
                                  ringTime=self._rng.randrange(2, 30), callTime=self._rng.randrange(0, 600),
                                  userName=self._rng.choice(("Ayşe Temsilci", "Mehmet Çağrı")))
            for n in range(messages):
                self.add_message(secret_key, phone, self._rng.choice(_TEXTS),
                                 when + dt.timedelta(minutes=n + 1), source="CUSTOMER" if n % 2 == 0 else "ME")

    def write_requests(self) -> int:
        """Requests that would change something at WapCRM (a message sent, a result saved)."""
        return sum(1 for _, path, _ in self.request_log if self._is_write(path))

    def reset_log(self) -> None:
        self.request_log.clear()
        self.calls.clear()

    # --- the ASGI front ------------------------------------------------------------------

    @staticmethod
    def _is_write(path: str) -> bool:
        return path.removeprefix(PREFIX) in api.WRITE_PATHS

    async def _front(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        fault = await self._faults.before_api_call(write=self._is_write(scope["path"]))
        await answer(scope, receive, send, app, fault, _fault_response, self.request_log)

    def _routes(self) -> list[Route]:
        reads = ("GET",) if self._dialect.request == "get-only" else ("GET", "POST")
        table: list[tuple[str, Handler, tuple[str, ...]]] = [
            (api.USERS_PATH, self._users, reads),
            (api.INSTANCES_PATH, self._instances, reads),
            (api.CALL_RESULTS_PATH, self._call_results, reads),
            (api.CONVERSATIONS_PATH, self._conversations, reads),
            (api.MESSAGES_PATH, self._messages, reads),
            (api.SEND_MESSAGE_PATH, self._send_message, ("POST",)),
            (api.SAVE_CALL_RESULT_PATH, self._save_result, ("GET", "POST")),
        ]
        return [Route(PREFIX + path, self._endpoint(path, handler), methods=list(methods))
                for path, handler, methods in table]

    def _envelope(self, data: Any, *, status: bool = True, message: str = "Success", code: str = "") -> Response:
        shown_code: Any = (int(code) if code.isdigit() else 0) if self._dialect.numeric_status_code else code
        body = {"data": data, "status": status, "message": message, "statusCode": shown_code,
                "requestID": str(uuid.UUID(int=self._rng.getrandbits(128), version=4))}
        return JSONResponse(self._keyed(body))

    def _endpoint(self, path: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                params = await self._params(request)
                self.calls.append((request.method, path, params))
                acc = self._authenticate(request)
                if self.envelope_failures > 0:
                    self.envelope_failures -= 1
                    raise _Refused(api.CODE_INTERNAL, "Beklenmeyen bir hata oluştu")
                return self._envelope(self._render(path, handler(params, acc)))
            except _Refused as exc:
                return self._envelope("", status=False, message=exc.message, code=exc.code)
        return endpoint

    async def _params(self, request: Request) -> dict[str, Any]:
        """The request model as the dialect reads it: the JSON body whatever the method
        (``document``), or a GET's query string and a POST's JSON body (``query`` and the others
        that read a query string)."""
        if request.method == "GET" and self._dialect.request != "body":
            return dict(request.query_params)
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except (ValueError, UnicodeDecodeError):
            raise _Refused(api.CODE_BAD_REQUEST, "Geçersiz istek modeli") from None
        if not isinstance(body, dict):
            raise _Refused(api.CODE_BAD_REQUEST, "Geçersiz istek modeli")
        return body

    # --- answers in the dialect ------------------------------------------------------------

    def _keyed(self, value: Any) -> Any:
        """Keys in the dialect's casing (PascalCase: the first letter upper), all the way down."""
        if self._dialect.keys != "pascal":
            return value
        if isinstance(value, dict):
            return {key[:1].upper() + key[1:]: self._keyed(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._keyed(item) for item in value]
        return value

    def _render(self, path: str, data: Any) -> Any:
        """A handler's rows (in the document's shapes) as the dialect answers them."""
        if not isinstance(data, list):
            return data
        dialect = self._dialect
        rows: Any
        if path == api.CONVERSATIONS_PATH:
            rows = [self._conversation_row(row) for row in data]
        elif path == api.MESSAGES_PATH:
            rows = [self._message_row(row) for row in data]
        elif path in (api.USERS_PATH, api.INSTANCES_PATH) and dialect.long_reference_keys:
            prefix = "user" if path == api.USERS_PATH else "instance"
            rows = [{(f"{prefix}ID" if key == "id" else f"{prefix}Name" if key == "name" else key): value
                     for key, value in row.items()} for row in data]
        else:
            rows = data
        if path == api.INSTANCES_PATH and dialect.instances_keyed and rows:
            id_key = "instanceID" if dialect.long_reference_keys else "id"
            rows = {str(row[id_key]): row for row in rows}
        if not rows:
            return dialect.empty
        rows = self._keyed(rows)
        return json.dumps(rows, ensure_ascii=False) if dialect.data_as_text else rows

    def _moment(self, local: dt.datetime) -> Any:
        """A date and time (Turkey's, naive) as the dialect writes ``createDate``."""
        aware = local.replace(tzinfo=_TZ)
        dates = self._dialect.dates
        if dates == "turkish":
            return local.strftime("%d.%m.%Y %H:%M:%S")
        if dates == "epoch":
            return int(aware.timestamp())
        if dates == "aspnet":
            return f"/Date({int(aware.timestamp() * 1000)}+0300)/"
        return local.isoformat(timespec="seconds")

    def _conversation_row(self, row: dict[str, Any]) -> dict[str, Any]:
        shown = dict(row)
        shown["createDate"] = self._moment(dt.datetime.fromisoformat(row["createDate"]))
        if self._dialect.dates == "turkish":
            for key in ("ringTime", "callTime"):
                if isinstance(row.get(key), int):
                    shown[key] = f"{row[key] // 3600:02d}:{row[key] // 60 % 60:02d}:{row[key] % 60:02d}"
            shown["conversationResultDirection"] = str(row["conversationResultDirection"])
        return shown

    def _message_row(self, row: dict[str, Any]) -> dict[str, Any]:
        shown = dict(row)
        day = dt.datetime.strptime(row["sentdate"], api.SENT_DATE_FORMAT)
        dates = self._dialect.dates
        if dates == "turkish":
            shown["sentdate"], shown["senttime"] = day.strftime("%d.%m.%Y"), row["senttime"][:5]
        elif dates == "epoch":
            shown["sentdate"], shown["senttime"] = day.isoformat(timespec="seconds"), row["senttime"] + ".0000000"
        elif dates == "aspnet":
            shown["sentdate"] = self._moment(day)
        return shown

    def _authenticate(self, request: Request) -> _Account:
        given = request.headers.get(self.secret_header, "")
        for key, acc in self._accounts.items():
            if given and hmac.compare_digest(key.encode(), given.encode()):
                return acc
        raise _Refused(api.CODE_UNAUTHORIZED, "Geçersiz SecretKey")

    # --- handlers ------------------------------------------------------------------------

    @staticmethod
    def _users(params: dict[str, Any], acc: _Account) -> Any:
        return [dict(user) for _, user in sorted(acc.users.items())]

    @staticmethod
    def _instances(params: dict[str, Any], acc: _Account) -> Any:
        return [dict(item) for _, item in sorted(acc.instances.items())]

    @staticmethod
    def _call_results(params: dict[str, Any], acc: _Account) -> Any:
        return [json.loads(json.dumps(item)) for _, item in sorted(acc.call_results.items())]

    @staticmethod
    def _date(params: dict[str, Any], name: str) -> dt.date:
        value = params.get(name)
        if not isinstance(value, str) or not _DATE.match(value):
            raise _Refused(api.CODE_BAD_REQUEST, f"{name} YIL-AY-GÜN formatında gönderilmelidir")
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise _Refused(api.CODE_BAD_REQUEST, f"{name} geçerli bir tarih değil") from None

    def _conversations(self, params: dict[str, Any], acc: _Account) -> Any:
        start, end = self._date(params, api.START_DATE_PARAM), self._date(params, api.END_DATE_PARAM)
        if end < start:
            raise _Refused(api.CODE_BAD_REQUEST, "enddate startDate'ten önce olamaz")
        rows: list[dict[str, Any]] = []
        day = start
        while day <= end:
            rows.extend(dict(acc.conversations[cid]) for cid in acc.by_day.get(day.isoformat(), ()))
            day += dt.timedelta(days=1)
        return rows

    def _messages(self, params: dict[str, Any], acc: _Account) -> Any:
        phone = str(params.get(api.PHONE_PARAM) or "").strip()
        if not _DIGITS.match(phone):
            raise _Refused(api.CODE_BAD_REQUEST, "chatPhoneNumber zorunlu alandır (9 hane ve üzeri, yalnız rakam)")
        if phone in self.refused_phones:
            raise _Refused(api.CODE_BAD_REQUEST, "Telefon numarası geçersiz")
        instance = params.get(api.INSTANCE_PARAM)
        wanted: int | None = None
        if instance not in (None, ""):
            if not str(instance).isdigit() or int(str(instance)) not in acc.instances:
                raise _Refused(api.CODE_BAD_REQUEST, "instanceID bulunamadı")
            wanted = int(str(instance))
        return [dict(row) for instance_id, row in acc.messages.get(phone, ()) if wanted in (None, instance_id)]

    def _send_message(self, params: dict[str, Any], acc: _Account) -> Any:
        """Documented: instanceID, chatPhoneNumber (905..., 9+ digits), messageType 1 (text) or 2 (file)."""
        phone = str(params.get(api.PHONE_PARAM) or "")
        if params.get(api.INSTANCE_PARAM) not in acc.instances or not _DIGITS.match(phone):
            raise _Refused(api.CODE_BAD_REQUEST, "instanceID ve chatPhoneNumber zorunlu alandır")
        if params.get("messageType") not in (1, 2):
            raise _Refused(api.CODE_BAD_REQUEST, "messageType 1 veya 2 olmalıdır")
        self.sent_messages.append(dict(params))
        return ""

    def _save_result(self, params: dict[str, Any], acc: _Account) -> Any:
        if not params.get("PhoneNumber"):
            raise _Refused(api.CODE_BAD_REQUEST, "PhoneNumber zorunlu alandır")
        self.saved_results.append(dict(params))
        return ""


def _fault_response(fault: Fault) -> Response:
    """A 429 with Retry-After, or a 5xx page as the web server in front would give it."""
    if fault.kind == "rate_limit":
        return Response("Too Many Requests", 429, headers={"Retry-After": f"{fault.retry_after_s:g}"},
                        media_type="text/plain")
    return Response(_ERROR_PAGES[fault.status], fault.status, media_type="text/html")
