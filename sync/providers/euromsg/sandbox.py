"""In-memory simulator of the Euromsg Express CRM/ERP gateway, for tests and the demo.

It follows ``shared/esp-docs/euromsg-express.txt`` and, where the document is silent, the
ASSUMED choices in ``sync.providers.euromsg.api`` (the one wire contract shared with the client).
An integrator logs in with its clientName/password (``POST tokens``), then identifies each token
with ONE tenant's API key (``PUT apiKey/identification``); every later call with that token acts on
that tenant's account only. Each account has its own lists, member cards (contact model: a card
holds a set of lists and outlives a list's deletion), campaigns and reports, may be an İYS account
(its members must carry valid İYS fields, checked by the registry's rules) and may run out of its
sending package (member writes are then refused).

The document shows one answer (``tokens``); where it is silent the sandbox serves, per ``dialect``
(``DIALECTS``, first = the default), each reading the client accepts (api.py's table) and is exactly
as strict as the document elsewhere: "document" (the key as a path variable, the envelope, page
objects, an existing e-mail refused), "bare" (no envelope, errors as HTTP statuses with
ProblemDetails, the key as a query parameter, the lists at ``email-list``, arrays, lower-case
statuses, plain dates, ``id``),
"pascal" (.NET Newtonsoft: PascalCase keys, the token answer enveloped, ``{key}/identification``,
bare ids for creates, the member object by e-mail) and "post-adds" (POST on an existing e-mail adds
the card to the list and applies what was sent, id-keyed objects, ``listId``/``listIds``, a text
identification answer). Each reads only its own spelling of a request.

Tokens are opaque and expire on the injectable clock. Faults from a ``FaultPlan`` apply to the
API calls only, not to ``tokens`` nor ``health-check`` (see ``sync.sandbox.faults``). Member pages
are served from per-list sorted id indexes, so a page costs O(page).
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sync.emails import address_problem, normalize_email
from sync.providers.euromsg import api
from sync.sandbox.faults import Fault, FaultInjector, FaultPlan
from sync.sandbox.transport import SandboxApp, answer

#: Campaign simulation rates: a fraction of recipients, except ``click`` (of openers) and
#: ``hard_bounce_share`` (of bounces).
DEFAULT_RATES: Mapping[str, float] = {
    "open": 0.40, "click": 0.10, "bounce": 0.03, "hard_bounce_share": 1 / 3,
    "unsubscribe": 0.02, "spam": 0.005,
}
CAMPAIGN_LINKS = ("https://example.com.tr/kampanya", "https://example.com.tr/indirim")
_WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
#: Paths that are not API calls: no faults, not counted as writes.
_EXEMPT_PATHS = frozenset({api.TOKEN_PATH, api.HEALTH_PATH})
_ERROR_PAGES = {
    500: "<html><head><title>Runtime Error</title></head><body><h1>Server Error in '/' Application.</h1></body></html>",
    502: "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>",
    503: "<html><head><title>503 Service Unavailable</title></head><body><h1>Service Unavailable</h1></body></html>",
}

T = TypeVar("T")

#: The readings this sandbox serves, first = the default (the document's literal reading where it
#: has one, our envelope guess elsewhere).
DIALECTS: tuple[str, ...] = ("document", "bare", "pascal", "post-adds")


@dataclass(frozen=True)
class Dialect:
    """How one reading of the document answers (api.py's table lists every reading)."""

    envelope: bool = True          # {isSuccess, errorCode, message, data}; False: bare, ProblemDetails errors
    pascal: bool = False           # PascalCase keys everywhere (the envelope and the token answer included)
    token_envelope: bool = False   # the tokens answer inside the envelope
    api_key_in: str = "path"       # api.API_KEY_READINGS
    identification: str = "envelope"   # "envelope" | "empty" (204) | "text"
    health: str = "text"           # "text" | "json"
    pages: str = "page"            # "page" | "array" | "id-keyed"
    by_email: str = "page"         # "page" (a collection) | "object-404" | "object-null"
    list_create: str = "object"    # "object" | "id"
    member_create: str = "object"  # "object" | "id"
    member_id_key: str = "memberId"
    lower_statuses: bool = False
    plain_dates: bool = False      # the service's dates as YYYY-MM-DD HH:mm:ss (Turkey), not ISO 8601
    post_adds: bool = False        # POST member on an existing e-mail adds it to the list(s), applies the rest
    list_path: str = "emailList"   # api.LIST_PATHS
    list_key: str = "emailListId"  # api.LIST_ID_KEYS: the only spelling read from requests and written in answers


DIALECT_TABLE: Mapping[str, Dialect] = {
    "document": Dialect(),
    "bare": Dialect(envelope=False, api_key_in="query", identification="empty", health="json", pages="array",
                    by_email="object-404", list_create="id", member_id_key="id", lower_statuses=True,
                    plain_dates=True, list_path="email-list"),
    "pascal": Dialect(pascal=True, token_envelope=True, api_key_in="segment", health="json", by_email="object-null",
                      list_create="id", member_create="id"),
    "post-adds": Dialect(token_envelope=True, identification="text", pages="id-keyed", post_adds=True,
                         list_key="listId"),
}
#: Without the envelope, the HTTP status of each error code (ProblemDetails answers).
BARE_STATUSES: Mapping[str, int] = {
    api.ERROR_VALIDATION: 400, api.ERROR_IYS_VALIDATION: 400, api.ERROR_MEMBER_EXISTS: 409,
    api.ERROR_MEMBER_NOT_FOUND: 404, api.ERROR_LIST_NOT_FOUND: 404, api.ERROR_CAMPAIGN_NOT_FOUND: 404,
    api.ERROR_NO_PACKAGE: 402, api.ERROR_INVALID_TOKEN: 401, api.ERROR_INVALID_CREDENTIALS: 401,
    api.ERROR_INVALID_API_KEY: 403, api.ERROR_NOT_IDENTIFIED: 403, api.ERROR_ALREADY_IDENTIFIED: 409,
    "UNSUPPORTED_MEDIA_TYPE": 415,
}


def _pascal(value: Any) -> Any:
    """Every key of a JSON value in PascalCase (what .NET's Newtonsoft writes by default)."""
    if isinstance(value, dict):
        return {(key[:1].upper() + key[1:] if isinstance(key, str) else key): _pascal(item)
                for key, item in value.items()}
    if isinstance(value, list):
        return [_pascal(item) for item in value]
    return value


# --- helpers ---------------------------------------------------------------------------


def turkey_time(ts: float) -> str:
    """``YYYY-MM-DD HH:mm:ss`` in Turkey's time (api.DATE_FORMAT): İYS dates."""
    return dt.datetime.fromtimestamp(ts, api.TURKEY).strftime(api.DATE_FORMAT)


def service_time(ts: float) -> str:
    """The service's own timestamps: ISO 8601, fractional seconds, +03:00 (api.py, dates)."""
    return dt.datetime.fromtimestamp(ts, api.TURKEY).isoformat(timespec="microseconds")


class _ApiError(Exception):
    """An error answer in the gateway's envelope (HTTP 200 for business rules, see api.py)."""

    def __init__(self, code: str, message: str, status: int = 200) -> None:
        super().__init__(code, message, status)
        self.code, self.message_text, self.status = code, message, status




def _invalid(message: str) -> _ApiError:
    return _ApiError(api.ERROR_VALIDATION, message)


def _iys_invalid(message: str) -> _ApiError:
    return _ApiError(api.ERROR_IYS_VALIDATION, message)


# --- state -----------------------------------------------------------------------------


@dataclass
class _Token:
    value: str
    client_name: str
    expires_at: float
    api_key: str | None = None


@dataclass
class _EmailList:
    id: int
    name: str
    create_date: float


@dataclass
class _Member:
    id: int
    email: str
    status: str
    status_date: float
    create_date: float
    update_date: float
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    city: str | None = None
    lists: set[int] = field(default_factory=set)
    iys: dict[str, str | None] = field(default_factory=dict)


@dataclass
class _Campaign:
    id: int
    name: str
    status: str
    list_ids: list[int]
    create_date: float
    send_date: float | None
    update_date: float
    rows: list[dict[str, Any]] = field(default_factory=list)


class _SortedIds:
    """Ids in ascending order; a page is a slice (O(page)), insert/remove by bisection."""

    def __init__(self) -> None:
        self._ids: list[int] = []

    def add(self, item: int) -> None:
        at = bisect.bisect_left(self._ids, item)
        if at == len(self._ids) or self._ids[at] != item:
            self._ids.insert(at, item)

    def discard(self, item: int) -> None:
        at = bisect.bisect_left(self._ids, item)
        if at < len(self._ids) and self._ids[at] == item:
            del self._ids[at]

    def page(self, start: int, size: int) -> list[int]:
        return self._ids[start:start + size]

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Any:
        return iter(list(self._ids))


@dataclass
class _Account:
    api_key: str
    name: str
    iys: bool
    package_active: bool = True
    lists: dict[int, _EmailList] = field(default_factory=dict)
    list_order: _SortedIds = field(default_factory=_SortedIds)
    members: dict[int, _Member] = field(default_factory=dict)
    by_email: dict[str, int] = field(default_factory=dict)          # normalize_email -> member id
    list_members: dict[int, _SortedIds] = field(default_factory=dict)
    #: Members deleted through the API: hidden, kept (KVKK, three years): (e-mail, when).
    deleted: list[tuple[str, float]] = field(default_factory=list)
    campaigns: dict[int, _Campaign] = field(default_factory=dict)

    def member_by_email(self, email: str) -> _Member | None:
        member_id = self.by_email.get(normalize_email(email))
        return None if member_id is None else self.members[member_id]

    def set_lists(self, member: _Member, lists: Iterable[int]) -> None:
        wanted = set(lists)
        for gone in member.lists - wanted:
            self.list_members[gone].discard(member.id)
        for added in wanted - member.lists:
            self.list_members[added].add(member.id)
        member.lists = wanted


Handler = Callable[[Request, _Account], Awaitable[Response]]


class EuromsgSandbox:
    """A stateful, in-memory Euromsg Express gateway; ``.app`` is the Starlette app to mount or serve.

    ``integrators`` maps clientName -> password; ``accounts`` maps a tenant's API key to its
    account name (add İYS accounts with :meth:`add_account`).
    """

    def __init__(self, integrators: Mapping[str, str] | None = None, accounts: Mapping[str, str] | None = None,
                 *, iys_accounts: Iterable[str] = (), faults: FaultPlan | None = None, seed: int = 0,
                 clock: Callable[[], float] = time.time, token_lifetime_s: float = api.TOKEN_LIFETIME_S,
                 dialect: str = DIALECTS[0]) -> None:
        if dialect not in DIALECT_TABLE:
            raise ValueError(f"unknown Euromsg dialect {dialect!r} (valid: {', '.join(DIALECTS)})")
        self.dialect = dialect
        self._dialect = DIALECT_TABLE[dialect]
        #: How this dialect spells a list id and a list set (api.LIST_ID_KEYS, api.LIST_IDS_KEYS).
        self._one, self._many = self._dialect.list_key, self._dialect.list_key + "s"
        self.seed = seed
        self.clock = clock
        self.token_lifetime_s = token_lifetime_s
        self.fault_plan = faults or FaultPlan()
        self.request_log: list[tuple[str, str, int]] = []  # (method, path, status); 0 = dropped
        self._faults = FaultInjector(self.fault_plan)
        self._integrators: dict[str, str] = dict(integrators or {})
        self._accounts: dict[str, _Account] = {}
        self._tokens: dict[str, _Token] = {}
        self._ids = 1000
        self._campaign_counter = 0
        iys = set(iys_accounts)
        for api_key, name in (accounts or {}).items():
            self.add_account(api_key, name=name, iys=api_key in iys)
        self.app = SandboxApp(routes=self._routes(), front=self._front)

    # --- public helpers for tests and the demo ------------------------------------------

    def add_integrator(self, client_name: str, password: str) -> None:
        self._integrators[client_name] = password

    def add_account(self, api_key: str, *, name: str | None = None, iys: bool = False,
                    package_active: bool = True) -> None:
        """A tenant's account, reached with ``api_key``; empty lists, members and campaigns."""
        self._accounts[api_key] = _Account(api_key, name or f"account-{len(self._accounts) + 1}", iys,
                                           package_active)

    def set_package(self, api_key: str, active: bool) -> None:
        """The tenant's sending package ran out (False) or was renewed (True)."""
        self._accounts[api_key].package_active = active

    def expire_tokens(self) -> None:
        """Every token issued so far stops working at once (the service restarted its token store)."""
        self._tokens.clear()

    def write_requests(self) -> int:
        """POST/PATCH/PUT/DELETE API calls made; token and identification calls excluded."""
        return sum(1 for method, path, _ in self.request_log
                   if method in _WRITE_METHODS and path.strip("/") not in _EXEMPT_PATHS
                   and not (method == "PUT" and self.is_identification(path)))

    def identification_request(self, api_key: str) -> tuple[str, dict[str, str]]:
        """(path, query) of PUT identification in this dialect (tests build their requests with it)."""
        reading = self._dialect.api_key_in
        path = api.IDENTIFICATION_PATHS[reading].format(key=quote(api_key, safe=""))
        return path, ({api.API_KEY_PARAM: api_key} if reading == "query" else {})

    @staticmethod
    def is_identification(path: str) -> bool:
        """Whether a request path is an identification call in any reading (the key may be in it)."""
        parts = path.strip("/").split("/")
        return (parts[:2] == ["apiKey", "identification"] and len(parts) <= 3) or (
            len(parts) == 2 and parts[1] == "identification")

    def reset_log(self) -> None:
        self.request_log.clear()

    def lists(self, api_key: str) -> dict[str, str]:
        """List id -> name of the account."""
        return {str(item.id): item.name for item in self._accounts[api_key].lists.values()}

    def create_list(self, api_key: str, name: str) -> str:
        """Make a list as the tenant would in the panel; returns its id."""
        return str(self._new_list(self._accounts[api_key], name).id)

    def delete_list(self, api_key: str, list_id: str) -> None:
        """Delete a list as the tenant would in the panel; its members stay."""
        acc = self._accounts[api_key]
        self._drop_list(acc, acc.lists[int(list_id)])

    def members(self, api_key: str) -> list[dict[str, Any]]:
        """Every visible member card of the account, shaped as the "document" dialect shows it."""
        acc = self._accounts[api_key]
        return [self._member_json(member) for member in acc.members.values()]

    def find_member(self, api_key: str, email: str) -> dict[str, Any] | None:
        member = self._accounts[api_key].member_by_email(email)
        return None if member is None else self._member_json(member)

    def deleted_members(self, api_key: str) -> list[tuple[str, float]]:
        """(e-mail, when) of members deleted through the API: hidden, still kept (KVKK)."""
        return list(self._accounts[api_key].deleted)

    def set_status(self, api_key: str, email: str, status: str) -> None:
        """Change a member's status as the service would (an unsubscribe link, a bounce, a complaint)."""
        if status not in api.MEMBER_STATUSES:
            raise ValueError(f"unknown status {status!r}")
        member = self._accounts[api_key].member_by_email(email)
        if member is None:
            raise KeyError(email)
        member.status, member.status_date = status, self.clock()
        member.update_date = member.status_date

    def set_consent(self, api_key: str, email: str, status: str, *, source: str = "HS_EPOSTA",
                    recipient_type: str | None = None) -> None:
        """A recipient changed their İYS permission (e.g. RET through the registry), dated now."""
        if status not in api.IYS_STATUSES:
            raise ValueError(f"unknown İYS status {status!r}")
        member = self._accounts[api_key].member_by_email(email)
        if member is None:
            raise KeyError(email)
        member.iys.update({api.IYS_STATUS: status, api.IYS_DATE: turkey_time(self.clock()), api.IYS_SOURCE: source})
        member.iys[api.IYS_RECIPIENT_TYPE] = recipient_type or member.iys.get(api.IYS_RECIPIENT_TYPE) or "BIREYSEL"
        member.update_date = self.clock()

    def simulate_campaign(self, api_key: str, list_ids: Iterable[str] | None = None, name: str = "Sandbox campaign",
                          status: str = "Sent", rates: Mapping[str, float] | None = None) -> str:
        """Send a campaign from the panel to the Active members of ``list_ids`` (all lists if None).

        Events are drawn from the sandbox seed and the campaign's number, so the same seed and
        data give the same report. Bounces, spam complaints and unsubscribes change the member's
        status (an unsubscribe on an İYS account also records İYS RET, as the recipient's choice).
        A campaign that is not Sent/OnGoing reaches nobody.
        """
        acc = self._accounts[api_key]
        if status not in api.CAMPAIGN_STATUSES:
            raise ValueError(f"unknown campaign status {status!r}")
        if unknown := set(rates or {}) - set(DEFAULT_RATES):
            raise ValueError(f"unknown rates {sorted(unknown)}; known: {sorted(DEFAULT_RATES)}")
        rate = {**DEFAULT_RATES, **(rates or {})}
        wanted = set(acc.lists) if list_ids is None else {int(item) for item in list_ids}
        if missing := wanted - set(acc.lists):
            raise KeyError(f"unknown lists {sorted(missing)}")
        now = self.clock()
        self._campaign_counter += 1
        rng = random.Random(f"{self.seed}:campaign:{self._campaign_counter}")
        sent = status in ("Sent", "OnGoing")
        campaign = _Campaign(self._new_id(), name, status, sorted(wanted), now - 7200,
                             now - 3600 if sent else None, now)
        acc.campaigns[campaign.id] = campaign
        if not sent:
            return str(campaign.id)
        recipients = sorted((member for member in acc.members.values()
                             if member.status == "Active" and member.lists & wanted), key=lambda m: m.email)
        for member in recipients:
            self._simulate_recipient(acc, campaign, member, rng, rate, now)
        return str(campaign.id)

    def campaign_rows(self, api_key: str, campaign_id: str) -> list[dict[str, Any]]:
        """The campaign's per-recipient rows, as campaign-report-detail shows them: the truth."""
        return [dict(row) for row in self._accounts[api_key].campaigns[int(campaign_id)].rows]

    # --- the ASGI front ------------------------------------------------------------------

    async def _front(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        """Log the request and inject this call's fault, before Starlette's middleware."""
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        is_api_call = scope["path"].strip("/") not in _EXEMPT_PATHS
        fault = await self._faults.before_api_call(write=scope["method"] in _WRITE_METHODS) if is_api_call else None
        await answer(scope, receive, send, app, fault, _fault_response, self.request_log)

    def _routes(self) -> list[BaseRoute]:
        table: list[tuple[str, str, Handler]] = [
            (api.ACCOUNT_PATH, "GET", self._account),
            (self._dialect.list_path, "GET", self._list_index),
            (self._dialect.list_path, "POST", self._create_list),
            (self._dialect.list_path + "/{id}", "PATCH", self._rename_list),
            (self._dialect.list_path + "/{id}", "DELETE", self._delete_list),
            (api.MEMBER_PATH, "GET", self._member_index),
            (api.MEMBER_PATH, "POST", self._create_member),
            (api.MEMBER_ITEM_PATH, "PATCH", self._patch_member),
            (api.MEMBER_ITEM_PATH, "DELETE", self._delete_member),
            (api.CAMPAIGN_PATH, "GET", self._campaign_index),
            (api.CAMPAIGN_REPORT_PATH, "GET", self._campaign_report),
            (api.CAMPAIGN_REPORT_DETAIL_PATH, "GET", self._campaign_report_detail),
        ]
        identification = api.IDENTIFICATION_PATHS[self._dialect.api_key_in].replace("{key}", "{api_key}")
        endpoints: list[tuple[str, str, Callable[[Request], Awaitable[Response]]]] = [
            (api.TOKEN_PATH, "POST", self._catching(self._token)),
            (identification, "PUT", self._catching(self._identify)),
            (api.HEALTH_PATH, "GET", self._health),
        ]
        endpoints += [(path, method, self._authenticated(handler)) for path, method, handler in table]
        return [Route(variant, endpoint, methods=[method])
                for path, method, endpoint in endpoints
                for variant in ("/" + path.strip("/"), "/" + path.strip("/") + "/")]

    def _authenticated(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def call(request: Request) -> Response:
            token = self._token_of(request)
            if token.api_key is None:
                raise _ApiError(api.ERROR_NOT_IDENTIFIED, "identify the token with an API key first", 403)
            return await handler(request, self._accounts[token.api_key])
        return self._catching(call)

    # --- answers in the dialect ------------------------------------------------------------

    def _json(self, body: Any, status: int = 200) -> Response:
        return JSONResponse(_pascal(body) if self._dialect.pascal else body, status)

    def _ok(self, data: Any, status: int = 200) -> Response:
        if not self._dialect.envelope:
            return self._json(data, status)
        return self._json({"isSuccess": True, "errorCode": None, "message": None, "data": data}, status)

    def _error_response(self, error: _ApiError) -> Response:
        if self._dialect.envelope:
            return self._json({"isSuccess": False, "errorCode": error.code, "message": error.message_text,
                               "data": None}, error.status)
        status = BARE_STATUSES.get(error.code, error.status if error.status >= 400 else 400)
        return JSONResponse({"type": "about:blank", "title": error.message_text, "status": status,
                             "detail": error.message_text}, status, media_type="application/problem+json")

    def _catching(self, call: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                return await call(request)
            except _ApiError as error:
                return self._error_response(error)
        return endpoint

    def _page_of(self, rows: list[dict[str, Any]], start: int, size: int, total: int,
                 id_key: str | None) -> Any:
        """A page of rows in the dialect: a page object, a bare array, or an object keyed by id."""
        if self._dialect.pages == "array":
            return rows
        if self._dialect.pages == "id-keyed" and id_key is not None:
            # A list's or campaign's "id" is only the key; a member row keeps its memberId too.
            return {str(row[id_key]): {k: v for k, v in row.items() if not (k == id_key == "id")} for row in rows}
        return {"items": rows, "page": start // size + 1, "pageSize": size, "totalCount": total}

    def _time(self, ts: float) -> str:
        """The service's own timestamps in the dialect (ISO 8601 with offset, or plain Turkey time)."""
        return turkey_time(ts) if self._dialect.plain_dates else service_time(ts)

    # --- tokens and identification -------------------------------------------------------

    def _token_of(self, request: Request) -> _Token:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        token = self._tokens.get(value.strip()) if scheme == api.AUTH_SCHEME else None
        if token is None or token.expires_at <= self.clock() or not self._faults.use_token(token.value):
            raise _ApiError(api.ERROR_INVALID_TOKEN, "the token is invalid or expired", 401)
        return token

    async def _token(self, request: Request) -> Response:
        body = await _body(request)
        client_name, password = body.get("clientName"), body.get("password")
        if not isinstance(client_name, str) or not client_name or not isinstance(password, str) or not password:
            raise _invalid("clientName and password are required")
        known = self._integrators.get(client_name)
        if known is None or not secrets.compare_digest(known.encode(), password.encode()):
            raise _ApiError(api.ERROR_INVALID_CREDENTIALS, "invalid clientName or password", 401)
        token = _Token(secrets.token_urlsafe(32), client_name, self.clock() + self.token_lifetime_s)
        self._tokens[token.value] = token
        expire = dt.datetime.fromtimestamp(token.expires_at, api.TURKEY).replace(microsecond=0)
        body = {"tokenValue": token.value, "expireTime": expire.isoformat(), "roles": ["CrmIntegrator"]}
        if self._dialect.token_envelope:
            return self._ok(body)
        return self._json(body)      # the documented shape, without the envelope

    async def _identify(self, request: Request) -> Response:
        token = self._token_of(request)
        api_key = (request.query_params.get(api.API_KEY_PARAM, "") if self._dialect.api_key_in == "query"
                   else str(request.path_params.get("api_key", "")))
        if not api_key:
            raise _invalid(f"{api.API_KEY_PARAM} is required")
        if api_key not in self._accounts:
            raise _ApiError(api.ERROR_INVALID_API_KEY, "no account has this API key", 403)
        if token.api_key is not None and token.api_key != api_key:
            raise _ApiError(api.ERROR_ALREADY_IDENTIFIED, "this token is identified with another API key", 409)
        token.api_key = api_key
        acc = self._accounts[api_key]
        if self._dialect.identification == "empty":
            return Response(status_code=204)
        if self._dialect.identification == "text":
            return PlainTextResponse("OK")
        return self._ok(True if self._dialect.pascal else {"accountName": acc.name})

    async def _health(self, request: Request) -> Response:
        if self._dialect.health == "json":    # HealthChecks UI's writer
            return JSONResponse({"status": api.HEALTHY, "totalDuration": "00:00:00.0003", "entries": {}})
        return PlainTextResponse(api.HEALTHY)

    async def _account(self, request: Request, acc: _Account) -> Response:
        return self._ok({"name": acc.name, "packageActive": acc.package_active,
                    "remainingCredits": 500 if acc.package_active else 0, "packageEndDate": None,
                    "iysIntegrator": acc.iys})

    # --- lists -------------------------------------------------------------------------

    def _new_list(self, acc: _Account, name: str) -> _EmailList:
        item = _EmailList(self._new_id(), name, self.clock())
        acc.lists[item.id] = item
        acc.list_order.add(item.id)
        acc.list_members[item.id] = _SortedIds()
        return item

    def _drop_list(self, acc: _Account, item: _EmailList) -> None:
        for member_id in acc.list_members.pop(item.id):
            acc.members[member_id].lists.discard(item.id)
        del acc.lists[item.id]
        acc.list_order.discard(item.id)

    def _list_json(self, acc: _Account, item: _EmailList) -> dict[str, Any]:
        return {"id": item.id, "name": item.name, "memberCount": len(acc.list_members[item.id]),
                "createDate": self._time(item.create_date)}

    async def _list_index(self, request: Request, acc: _Account) -> Response:
        start, size = _paging(request)
        items = [self._list_json(acc, acc.lists[i]) for i in acc.list_order.page(start, size)]
        return self._ok(self._page_of(items, start, size, len(acc.list_order), "id"))

    async def _create_list(self, request: Request, acc: _Account) -> Response:
        name = _list_name(await _body(request))
        made = self._new_list(acc, name)
        return self._ok(made.id if self._dialect.list_create == "id" else self._list_json(acc, made))

    async def _rename_list(self, request: Request, acc: _Account) -> Response:
        item = _find_list(acc, request.path_params["id"])
        item.name = _list_name(await _body(request))
        return self._ok(self._list_json(acc, item))

    async def _delete_list(self, request: Request, acc: _Account) -> Response:
        """Documented: the members stay; only their membership in this list goes."""
        self._drop_list(acc, _find_list(acc, request.path_params["id"]))
        return self._ok(None)

    # --- members -----------------------------------------------------------------------

    def _member_json(self, member: _Member) -> dict[str, Any]:
        """The card as the "document" dialect shows it (the tests' and the harness's view)."""
        return {"memberId": member.id, "email": member.email, "firstName": member.first_name,
                "lastName": member.last_name, "phone": member.phone, "city": member.city,
                "status": member.status, "statusDate": service_time(member.status_date),
                "emailListIds": sorted(member.lists), "createDate": service_time(member.create_date),
                "updateDate": service_time(member.update_date),
                **{name: member.iys.get(name) for name in api.IYS_FIELDS}}

    def _member_wire(self, member: _Member) -> dict[str, Any]:
        """The card as this dialect answers it."""
        dialect = self._dialect
        row = self._member_json(member)
        row[dialect.member_id_key] = row.pop("memberId")
        row[self._many] = row.pop("emailListIds")
        if dialect.lower_statuses:
            row["status"] = member.status.lower()
        for key, ts in (("statusDate", member.status_date), ("createDate", member.create_date),
                        ("updateDate", member.update_date)):
            row[key] = self._time(ts)
        return row

    async def _member_index(self, request: Request, acc: _Account) -> Response:
        """The two documented queries: every member of a list, or one member by e-mail."""
        params = request.query_params
        start, size = _paging(request)
        if email := params.get("email"):
            member = acc.member_by_email(email)
            if self._dialect.by_email == "object-404" and member is None:
                raise _ApiError(api.ERROR_MEMBER_NOT_FOUND, "no member has this e-mail", 404)
            if self._dialect.by_email != "page":
                return self._ok(None if member is None else self._member_wire(member))
            found = [] if member is None or start > 0 else [self._member_wire(member)]
            return self._ok(self._page_of(found, start, size, 0 if member is None else 1, self._dialect.member_id_key))
        if (list_id := params.get(self._one)) is None:
            raise _invalid(f"{self._one} or email is required")
        item = _find_list(acc, list_id)
        index = acc.list_members[item.id]
        rows = [self._member_wire(acc.members[i]) for i in index.page(start, size)]
        return self._ok(self._page_of(rows, start, size, len(index), self._dialect.member_id_key))

    async def _create_member(self, request: Request, acc: _Account) -> Response:
        """Add a member to a list (``emailListId``, and ASSUMED ``emailListIds``: every list of the
        member; ``listId``/``listIds`` in the dialect that spells them so, the other spelling
        ignored). An e-mail that has a card already is refused and left untouched; in the
        "post-adds" dialect the card joins the list(s) and takes the fields and status sent."""
        body = await _body(request)
        if not acc.package_active:
            raise _ApiError(api.ERROR_NO_PACKAGE, "the account has no active sending package")
        if self._one not in body:
            raise _invalid(f"{self._one} is required")
        lists = [_find_list(acc, body[self._one]).id]
        if self._many in body:
            raw = body[self._many]
            if not isinstance(raw, list):
                raise _invalid(f"{self._many} must be an array of list ids")
            lists += [_find_list(acc, value).id for value in raw]
        email = body.get("email")
        if not isinstance(email, str) or address_problem(email.strip(), utf8_local=api.ADDRESS_UTF8_LOCAL,
                                                         idn=api.ADDRESS_IDN):
            raise _invalid("email is required and must be a valid e-mail address")   # by api.py's reading
        values = _member_values(body)
        given_status = body.get("status")
        if given_status is not None and given_status not in api.WRITABLE_STATUSES:
            raise _invalid(f"status must be one of {', '.join(api.WRITABLE_STATUSES)}")
        existing = acc.member_by_email(email)
        now = self.clock()
        if existing is not None:
            if not self._dialect.post_adds:
                raise _ApiError(api.ERROR_MEMBER_EXISTS, f"a member with this e-mail exists (memberId {existing.id})")
            given_iys: dict[str, Any] = {name: body[name] for name in api.IYS_FIELDS if name in body}
            iys = _iys_values({**existing.iys, **given_iys}, complete=acc.iys, now=now) \
                if given_iys or acc.iys else existing.iys
            for name, value in values.items():
                setattr(existing, name, value)
            if given_status is not None and given_status != existing.status:
                existing.status, existing.status_date = given_status, now
            existing.iys = iys
            acc.set_lists(existing, existing.lists | set(lists))
            existing.update_date = now
            return self._created(existing)
        iys = _iys_values(body, complete=acc.iys, now=now)
        member = _Member(self._new_id(), email.strip(), given_status or "Active", now, now, now, iys=iys)
        for name, value in values.items():
            setattr(member, name, value)
        acc.members[member.id] = member
        acc.by_email[normalize_email(member.email)] = member.id
        acc.set_lists(member, lists)
        return self._created(member)

    def _created(self, member: _Member) -> Response:
        return self._ok(member.id if self._dialect.member_create == "id" else self._member_wire(member))

    async def _patch_member(self, request: Request, acc: _Account) -> Response:
        """Update the card by member id: only the fields given; ``emailListIds`` (or ``listIds``,
        as the dialect spells it) replaces the set."""
        member = _find_member(acc, request.path_params["id"])
        body = await _body(request)
        if not acc.package_active:
            raise _ApiError(api.ERROR_NO_PACKAGE, "the account has no active sending package")
        if "email" in body and normalize_email(str(body["email"])) != normalize_email(member.email):
            raise _invalid("email cannot be changed; delete the member and add the new address")
        values = _member_values(body)
        status = body.get("status")
        if status is not None and status not in api.WRITABLE_STATUSES:
            raise _invalid(f"status must be one of {', '.join(api.WRITABLE_STATUSES)}")
        lists: list[int] | None = None
        if self._many in body:
            raw = body[self._many]
            if not isinstance(raw, list):
                raise _invalid(f"{self._many} must be an array of list ids")
            lists = [_find_list(acc, value).id for value in raw]
        given_iys: dict[str, Any] = {name: body[name] for name in api.IYS_FIELDS if name in body}
        iys = _iys_values({**member.iys, **given_iys}, complete=acc.iys, now=self.clock()) \
            if given_iys or acc.iys else member.iys
        now = self.clock()
        for name, value in values.items():
            setattr(member, name, value)
        if status is not None and status != member.status:
            member.status, member.status_date = status, now
        member.iys = iys
        if lists is not None:
            acc.set_lists(member, lists)
        member.update_date = now
        return self._ok(self._member_wire(member))

    async def _delete_member(self, request: Request, acc: _Account) -> Response:
        """Documented: hidden from the panel (gone from every list), kept for three years (KVKK)."""
        member = _find_member(acc, request.path_params["id"])
        acc.set_lists(member, [])
        del acc.members[member.id]
        del acc.by_email[normalize_email(member.email)]
        acc.deleted.append((member.email, self.clock()))
        return self._ok(None)

    # --- campaigns and reports ---------------------------------------------------------

    def _simulate_recipient(self, acc: _Account, campaign: _Campaign, member: _Member, rng: random.Random,
                            rate: Mapping[str, float], now: float) -> None:
        sent = campaign.send_date or now

        def at() -> str:
            return self._time(sent + rng.uniform(60, 3500))

        row: dict[str, Any] = {
            "email": member.email, "memberId": member.id, "status": "Sent", "sendDate": self._time(sent),
            "opened": False, "openDate": None, "openCount": 0, "clicked": False, "clickDate": None,
            "clickedUrl": None, "spam": False, "spamDate": None, "unsubscribed": False, "unsubscribeDate": None,
            "bounceReason": None}
        new_status = None
        if rng.random() < rate["bounce"]:
            hard = rng.random() < rate["hard_bounce_share"]
            row.update(status="HardBounced" if hard else "SoftBounced",
                       bounceReason="550 5.1.1 user unknown" if hard else "452 4.2.2 mailbox full")
            new_status = row["status"]
        else:
            if rng.random() < rate["open"]:
                row.update(opened=True, openDate=at(), openCount=rng.randint(1, 5))
                if rng.random() < rate["click"]:
                    row.update(clicked=True, clickDate=at(), clickedUrl=rng.choice(CAMPAIGN_LINKS))
            if rng.random() < rate["spam"]:
                row.update(spam=True, spamDate=at())
                new_status = "Spam"
            elif rng.random() < rate["unsubscribe"]:
                left = sent + rng.uniform(60, 3500)
                row.update(unsubscribed=True, unsubscribeDate=self._time(left))
                new_status = "Unsubscribed"
                if acc.iys:
                    member.iys.update({api.IYS_STATUS: "RET", api.IYS_DATE: turkey_time(left),
                                       api.IYS_SOURCE: "HS_EPOSTA"})
        campaign.rows.append(row)
        if new_status:
            member.status, member.status_date, member.update_date = new_status, now, now

    async def _campaign_index(self, request: Request, acc: _Account) -> Response:
        params = request.query_params
        campaigns: Iterable[_Campaign] = acc.campaigns.values()
        if campaign_id := params.get("campaignId"):
            campaigns = [c for c in campaigns if str(c.id) == campaign_id]
        if status := params.get("status"):
            if status not in api.CAMPAIGN_STATUSES:
                raise _invalid(f"status must be one of {', '.join(api.CAMPAIGN_STATUSES)}")
            campaigns = [c for c in campaigns if c.status == status]
        if name := params.get("name"):
            campaigns = [c for c in campaigns if name.casefold() in c.name.casefold()]
        found = sorted(campaigns, key=lambda c: c.id)
        start, size = _paging(request)
        return self._ok(self._page_of([{
            "id": c.id, "name": c.name, "status": c.status, self._many: c.list_ids,
            "createDate": self._time(c.create_date), "updateDate": self._time(c.update_date),
            "sendDate": self._time(c.send_date) if c.send_date is not None else None,
        } for c in found[start:start + size]], start, size, len(found), "id"))

    def _campaign_of(self, request: Request, acc: _Account) -> _Campaign:
        raw = request.query_params.get("campaignId")
        if not raw:
            raise _invalid("campaignId is required")
        campaign = acc.campaigns.get(int(raw)) if raw.isdigit() else None
        if campaign is None:
            raise _ApiError(api.ERROR_CAMPAIGN_NOT_FOUND, f"campaign {raw} not found", 404)
        return campaign

    async def _campaign_report(self, request: Request, acc: _Account) -> Response:
        campaign = self._campaign_of(request, acc)
        by_member = {row["memberId"]: row for row in campaign.rows}
        summary = []
        for list_id in campaign.list_ids:
            members = [acc.members[i] for i in acc.list_members.get(list_id, ())]
            rows = [by_member[m.id] for m in members if m.id in by_member]
            summary.append({self._one: list_id, "total": len(members),
                            "sent": sum(r["status"] == "Sent" for r in rows),
                            "hardBounced": sum(r["status"] == "HardBounced" for r in rows),
                            "softBounced": sum(r["status"] == "SoftBounced" for r in rows),
                            "opened": sum(r["opened"] for r in rows), "clicked": sum(r["clicked"] for r in rows),
                            "spam": sum(r["spam"] for r in rows),
                            "unsubscribed": sum(r["unsubscribed"] for r in rows)})
        return self._ok(summary)

    async def _campaign_report_detail(self, request: Request, acc: _Account) -> Response:
        campaign = self._campaign_of(request, acc)
        params = request.query_params
        rows: Sequence[dict[str, Any]] = campaign.rows
        if email := params.get("email"):
            rows = [r for r in rows if normalize_email(r["email"]) == normalize_email(email)]
        if status := params.get("status"):
            if status not in api.DETAIL_STATUSES:
                raise _invalid(f"status must be one of {', '.join(api.DETAIL_STATUSES)}")
            rows = [r for r in rows if r["status"] == status]
        for flag in ("opened", "clicked", "spam"):
            if (raw := params.get(flag)) is not None:
                if raw.lower() not in ("true", "false"):
                    raise _invalid(f"{flag} must be true or false")
                rows = [r for r in rows if r[flag] is (raw.lower() == "true")]
        start, size = _paging(request)
        return self._ok(self._page_of([dict(r) for r in rows[start:start + size]], start, size, len(rows), "memberId"))

    # --- ids ---------------------------------------------------------------------------

    def _new_id(self) -> int:
        self._ids += 1
        return self._ids


# --- request parsing and validation (module level: no sandbox state) ---------------------


def _fault_response(fault: Fault) -> Response:
    if fault.kind == "rate_limit":
        wait = f"{fault.retry_after_s:g}"
        return JSONResponse({"isSuccess": False, "errorCode": "TOO_MANY_REQUESTS", "message": "rate limited",
                             "data": None}, 429, headers={"Retry-After": wait})
    return Response(_ERROR_PAGES[fault.status], fault.status, media_type="text/html")


async def _body(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    raw = await request.body()
    if not raw:
        return {}
    if content_type != "application/json":
        raise _ApiError("UNSUPPORTED_MEDIA_TYPE", f"unsupported media type {content_type!r}", 415)
    try:
        data = json.loads(raw)
    except ValueError:
        raise _invalid("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise _invalid("the body must be a JSON object")
    return data


def _paging(request: Request) -> tuple[int, int]:
    """(offset, page size) from ``page`` and ``pageSize``; bad values are a validation error."""
    params = request.query_params
    try:
        page = int(params.get(api.PAGE_PARAM, "1"))
        size = int(params.get(api.PAGE_SIZE_PARAM, str(api.DEFAULT_PAGE_SIZE)))
    except ValueError:
        raise _invalid("page and pageSize must be whole numbers") from None
    if page < 1 or not 1 <= size <= api.MAX_PAGE_SIZE:
        raise _invalid(f"page must be at least 1 and pageSize between 1 and {api.MAX_PAGE_SIZE}")
    return (page - 1) * size, size


def _list_name(body: Mapping[str, Any]) -> str:
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _invalid("name is required")
    return name.strip()


def _find_list(acc: _Account, raw: Any) -> _EmailList:
    list_id = raw if isinstance(raw, int) and not isinstance(raw, bool) else (
        int(raw) if isinstance(raw, str) and raw.isdigit() else None)
    item = acc.lists.get(list_id) if list_id is not None else None
    if item is None:
        raise _ApiError(api.ERROR_LIST_NOT_FOUND, f"email list {raw} not found", 404)
    return item


def _find_member(acc: _Account, raw: str) -> _Member:
    member = acc.members.get(int(raw)) if raw.isdigit() else None
    if member is None:
        raise _ApiError(api.ERROR_MEMBER_NOT_FOUND, f"member {raw} not found", 404)
    return member


_VALUE_FIELDS = {"firstName": "first_name", "lastName": "last_name", "phone": "phone", "city": "city"}


def _member_values(body: Mapping[str, Any]) -> dict[str, str | None]:
    values: dict[str, str | None] = {}
    for name, attribute in _VALUE_FIELDS.items():
        if name in body:
            if body[name] is not None and not isinstance(body[name], str):
                raise _invalid(f"{name} must be a string")
            values[attribute] = body[name]
    return values


def _iys_values(body: Mapping[str, Any], *, complete: bool, now: float) -> dict[str, str | None]:
    """The İYS fields of a card, checked by the registry's rules; on an İYS account (``complete``)
    every one is required, for BIREYSEL and TACIR alike (the document: "zorunludur")."""
    values = {name: body.get(name) for name in api.IYS_FIELDS}
    for name, value in values.items():
        if value is not None and not isinstance(value, str):
            raise _iys_invalid(f"{name} must be a string")
    recipient_type, status = values[api.IYS_RECIPIENT_TYPE], values[api.IYS_STATUS]
    date, source = values[api.IYS_DATE], values[api.IYS_SOURCE]
    if complete:
        # Documented: date, source and status are all mandatory on an İYS account (TACIR included).
        missing = [name for name in api.IYS_FIELDS if not values[name]]
        if missing:
            raise _iys_invalid(f"İYS fields required: {', '.join(missing)}")
    if recipient_type is not None and recipient_type not in api.IYS_RECIPIENT_TYPES:
        raise _iys_invalid(f"{api.IYS_RECIPIENT_TYPE} must be BIREYSEL or TACIR")
    if status is not None and status not in api.IYS_STATUSES:
        raise _iys_invalid(f"{api.IYS_STATUS} must be ONAY or RET")
    if source is not None and source not in api.IYS_SOURCES:
        raise _iys_invalid(f"{api.IYS_SOURCE} {source!r} is not an İYS source")
    if date is not None:
        try:
            when = dt.datetime.strptime(date, api.DATE_FORMAT)
        except ValueError:
            raise _iys_invalid(f"{api.IYS_DATE} must be YYYY-MM-DD HH:mm:ss") from None
        if when < api.IYS_EARLIEST:
            raise _iys_invalid(f"{api.IYS_DATE} is before 2015-05-01 00:00:00")
        if when.replace(tzinfo=api.TURKEY).timestamp() > now:
            raise _iys_invalid(f"{api.IYS_DATE} is in the future")
        if source == api.IYS_2015_SOURCE and when != api.IYS_EARLIEST:
            raise _iys_invalid("HS_2015 is only valid with the date 2015-05-01 00:00:00")
    return values
