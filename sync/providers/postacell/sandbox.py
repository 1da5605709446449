"""In-memory simulator of the Postacell e-mail API, for tests and the demo.

It follows ``shared/esp-docs/postacell.txt`` and, where the document is silent, the
ASSUMED choices in ``sync.providers.postacell.api`` (the one wire contract shared with the
client). Every username/password is an account with its own lists, subscribers, fields,
campaigns, bulk jobs and report exports. Asynchronous work (bulk imports, report exports)
completes after a configurable number of polls, so a client's polling loop is exercised.

Tokens are JWT-shaped (HS256 with a per-sandbox random key) and expire on the injectable
clock. Faults from a ``FaultPlan`` apply to the API calls only: not to the token endpoints,
not to the export file downloads (see ``sync.sandbox.faults``).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import json
import math
import random
import re
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain
from operator import attrgetter
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qs, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sync.emails import address_problem, normalize_email
from sync.providers.postacell import api
from sync.sandbox.faults import Fault, FaultInjector, FaultPlan
from sync.sandbox.transport import SandboxApp, answer

#: Where the API is mounted: the path of the documented base URL ("/api/v1").
API_PREFIX = urlsplit(api.DEFAULT_BASE_URL).path.rstrip("/")
#: Export files are served by the sandbox itself, without auth, on the layout of the
#: document's S3 links (``.../media/public/user/13/export/<cmp_id>/<name>.csv``).
EXPORT_FILE_PATH = "/media/public/user/{user_id}/export/{cmp_id}/{name}"
#: Campaign simulation rates: a fraction of recipients, except ``click`` (of openers) and
#: ``hard_bounce_share`` (of bounces).
DEFAULT_RATES: Mapping[str, float] = {
    "open": 0.40, "click": 0.10, "bounce": 0.03, "hard_bounce_share": 1 / 3,
    "unsubscribe": 0.02, "complaint": 0.005,
}
CAMPAIGN_LINKS = ("https://example.com.tr/kampanya", "https://example.com.tr/indirim",
                  "https://example.com.tr/yeni-sezon")
SENDER_EMAIL = "@".join(("kampanya", "sandbox.postacell.test"))  # the from address of simulated campaigns
FIELD_TYPES = ("text", "number", "date")  # documented under POST email/fields
#: How many distinct ``subscribers-filter`` queries an account keeps answered (see _Account.filtered).
FILTER_CACHE_QUERIES = 32

REQUIRED = "This field is required."
_ACCESS_NOT_VALID = "Given token not valid for any token type"
_WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
_TOKEN_PATHS = frozenset({api.TOKEN_PATH.strip("/"), api.TOKEN_REFRESH_PATH.strip("/")})
_I_VARIANTS = str.maketrans({"İ": "i", "I": "i", "ı": "i"})
_TO_ASCII = str.maketrans("çğıöşüÇĞİÖŞÜ", "cgiosuCGIOSU")
_ERROR_PAGES = {
    500: "<h1>Server Error (500)</h1>",
    502: "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>",
    503: "<html><head><title>503 Service Temporarily Unavailable</title></head>"
         "<body><h1>503 Service Temporarily Unavailable</h1></body></html>",
}

T = TypeVar("T")
Upsert = Literal["created", "updated", "unchanged"]


# --- helpers ---------------------------------------------------------------------------


def _fold(text: str) -> str:
    """Case-fold for "contains" searches; Turkish dotted/dotless i match either i."""
    return text.translate(_I_VARIANTS).casefold()


def _iso(ts: float, *, zulu: bool = True) -> str:
    """ISO 8601 in UTC with microseconds, as the document shows (with or without ``Z``)."""
    text = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return text + "Z" if zulu else text


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _error_text(errors: Mapping[str, Any]) -> str:
    """A DRF error body as one readable line (for bulk job rows)."""
    return "; ".join(f"{key}: {' '.join(map(str, value)) if isinstance(value, list) else value}"
                     for key, value in errors.items())


class _ApiError(Exception):
    """An error answer, DRF-shaped: ``{"field": ["message"]}`` or ``{"detail": "message"}``."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body

    def response(self) -> Response:
        return JSONResponse(self.body, self.status)


def _lookup(items: Mapping[str, T], request: Request) -> T:
    """The object the path's ``{id}`` names, or 404 as DRF answers."""
    found = items.get(request.path_params["id"])
    if found is None:
        raise _ApiError(404, {"detail": "Not found."})
    return found


def _token_not_valid(detail: str) -> _ApiError:
    """SimpleJWT's answer to an expired, forged or wrong-type token."""
    return _ApiError(401, {"detail": detail, "code": "token_not_valid"})


def _raise_if(errors: dict[str, list[str]]) -> None:
    if errors:
        raise _ApiError(400, errors)


# --- state -----------------------------------------------------------------------------


@dataclass
class _MailList:
    id: str
    title: str
    create_date: float
    update_date: float


@dataclass
class _Subscriber:
    id: str
    email: str
    status: str
    create_date: float
    update_date: float
    source_ip: str
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    lists: list[str] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)  # field id -> value

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name == "status":        # keep the account's status index (the status filter) true
            index = self.__dict__.get("_index")
            if index is not None:
                index.moved(self)


class _StatusIndex:
    """Subscriber ids by status, in creation order: a ``status`` filter reads only its own
    subscribers (O(matches), not O(account)), as the real service's database index would."""

    def __init__(self) -> None:
        self.ids: dict[str, dict[str, None]] = defaultdict(dict)
        self.status_of: dict[str, str] = {}

    def moved(self, sub: _Subscriber) -> None:
        old = self.status_of.get(sub.id)
        if old == sub.status:
            return
        if old is not None:
            self.ids[old].pop(sub.id, None)
        self.ids[sub.status][sub.id] = None
        self.status_of[sub.id] = sub.status

    def remove(self, sub: _Subscriber) -> None:
        old = self.status_of.pop(sub.id, None)
        if old is not None:
            self.ids[old].pop(sub.id, None)


@dataclass
class _Field:
    id: str
    title: str
    type: str
    merge_tag: str


@dataclass
class _Campaign:
    id: str
    subject: str
    status: str
    created_date: float
    updated_date: float
    report: dict[str, list[dict[str, str]]]  # rule -> CSV rows


@dataclass
class _Export:
    token: str
    cmp_id: str
    rule: str
    create_date: float
    polls: int = 0


@dataclass
class _Job:
    id: int
    list_ids: list[str]
    rows: list[Any]
    source_ip: str
    polls: int = 0
    done: bool = False
    results: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Account:
    username: str
    password: str
    user_id: int
    lists: dict[str, _MailList] = field(default_factory=dict)
    subscribers: dict[str, _Subscriber] = field(default_factory=dict)
    ids_by_email: dict[str, str] = field(default_factory=dict)  # normalize_email(e-mail) -> id
    fields: dict[str, _Field] = field(default_factory=dict)
    campaigns: dict[str, _Campaign] = field(default_factory=dict)
    exports: list[_Export] = field(default_factory=list)
    jobs: dict[str, _Job] = field(default_factory=dict)  # str(job id) -> job
    #: ``subscribers-filter`` answers by (email, status, lists, ordering): the filtered, ordered
    #: subscribers, so that paging through one query costs O(page) per page, not O(subscribers).
    #: Emptied by ``touch`` on every change to a subscriber (created, deleted, status, lists).
    filtered: dict[tuple[str, str, str, str], list[_Subscriber]] = field(default_factory=dict)
    by_status: _StatusIndex = field(default_factory=_StatusIndex)
    #: Subscribers per (list id, status) (a list's ``valid`` and its ``counter``): counted once,
    #: then kept by the changed subscribers alone (``dirty``, applied at COUNT_BATCH of them or
    #: when a bulk job ends), so that a count after a write costs O(changes), not O(account), as
    #: the real service's counters would. None: count again from every subscriber (after a change
    #: to many at once).
    list_counts: Counter[tuple[str, str]] | None = None
    dirty: dict[str, tuple[_Subscriber, tuple[tuple[str, str], ...]]] = field(default_factory=dict)

    def subscriber_by_email(self, email: str) -> _Subscriber | None:
        sub_id = self.ids_by_email.get(normalize_email(email))
        return self.subscribers[sub_id] if sub_id else None

    def touch(self, sub: _Subscriber | None = None) -> None:
        """``sub`` changed (created, deleted, status, lists), or many did (None): every cached
        ``subscribers-filter`` answer is stale; after a change to many, so are the list counts
        (a change to one is told before it is made: ``changing``)."""
        self.filtered.clear()
        if sub is None:
            self.list_counts = None
            self.dirty.clear()
        elif len(self.dirty) >= COUNT_BATCH:
            self.counts()

    def changing(self, sub: _Subscriber, *, created: bool = False) -> None:
        """``sub`` is about to change (or was just created): what it counts for now is kept, so
        that the next count replaces it by what it counts for then."""
        if self.list_counts is not None and sub.id not in self.dirty:
            self.dirty[sub.id] = (sub, () if created else _counted(sub))

    def counts(self) -> Counter[tuple[str, str]]:
        """Subscribers per (list id, status), brought up to date from the changed subscribers."""
        if self.list_counts is None:
            self.list_counts = Counter((list_id, sub.status) for sub in self.subscribers.values()
                                       for list_id in sub.lists)
            self.dirty.clear()
        if self.dirty:
            changed = self.dirty.values()
            self.list_counts.subtract(chain.from_iterable(before for _, before in changed))
            self.list_counts.update(chain.from_iterable(_counted(sub) for sub, _ in changed
                                                        if self.subscribers.get(sub.id) is sub))
            self.dirty.clear()
        return self.list_counts

    def add(self, sub: _Subscriber) -> None:
        self.subscribers[sub.id] = sub
        self.ids_by_email[normalize_email(sub.email)] = sub.id
        object.__setattr__(sub, "_index", self.by_status)
        self.by_status.moved(sub)

    def remove(self, sub: _Subscriber) -> None:
        del self.subscribers[sub.id]
        del self.ids_by_email[normalize_email(sub.email)]
        self.by_status.remove(sub)


def _counted(sub: _Subscriber) -> tuple[tuple[str, str], ...]:
    """What ``sub`` adds to its account's list counts: one (list id, status) per list."""
    return tuple((list_id, sub.status) for list_id in sub.lists)


#: Changed subscribers counted together (``_Account.counts``): a list read waits for at most so many.
COUNT_BATCH = 1000

Handler = Callable[[Request, _Account], Awaitable[Response]]


# --- the sandbox -----------------------------------------------------------------------


class PostacellSandbox:
    """A stateful, in-memory Postacell; ``.app`` is the Starlette app to mount or serve.

    The API lives under ``/api/v1/`` (the path of ``api.DEFAULT_BASE_URL``), the export
    files under ``/media/``.
    """

    def __init__(self, accounts: Mapping[str, str] | None = None, *, faults: FaultPlan | None = None,
                 seed: int = 0, job_polls_until_done: int = 1, export_polls_until_ready: int = 1,
                 clock: Callable[[], float] = time.time) -> None:
        self.seed = seed
        self.job_polls_until_done = job_polls_until_done
        self.export_polls_until_ready = export_polls_until_ready
        self.clock = clock
        self.fault_plan = faults or FaultPlan()
        self.request_log: list[tuple[str, str, int]] = []  # (method, path, status); 0 = dropped
        self._faults = FaultInjector(self.fault_plan)
        self._accounts: dict[str, _Account] = {}
        self._signing_key = secrets.token_bytes(32)
        self._oid_machine = f"{random.Random(seed).getrandbits(40):010x}"
        self._oid_counter = 0
        self._job_counter = 0
        self._campaign_counter = 0
        self._exports_by_token: dict[str, tuple[_Account, _Export]] = {}
        for username, password in (accounts or {}).items():
            self.add_account(username, password)
        self.app = SandboxApp(routes=[
            Mount(API_PREFIX, routes=self._api_routes()),
            Route(EXPORT_FILE_PATH, self._download_export, methods=["GET"]),
        ], front=self._front)

    # --- public helpers for tests and the demo ------------------------------------------

    def add_account(self, username: str, password: str) -> None:
        """Add a login; it gets its own empty lists, subscribers, fields and campaigns."""
        self._accounts[username] = _Account(username, password, user_id=len(self._accounts) + 1)

    def write_requests(self) -> int:
        """How many POST/PATCH/PUT/DELETE requests were made, token calls excluded."""
        return sum(1 for method, path, _ in self.request_log
                   if method in _WRITE_METHODS and self._api_relative(path) not in _TOKEN_PATHS)

    def reset_log(self) -> None:
        self.request_log.clear()

    def process_pending_jobs(self) -> int:
        """Apply every queued bulk import now; returns how many were applied."""
        pending = [(acc, job) for acc in self._accounts.values() for job in acc.jobs.values()
                   if not job.done]
        for acc, job in pending:
            self._run_job(acc, job)
        return len(pending)

    def find_subscriber(self, account: str, email: str) -> dict[str, Any] | None:
        """The subscriber as ``GET email/subscribers/{id}`` shows it, or None."""
        acc = self._accounts[account]
        sub = acc.subscriber_by_email(email)
        return self._subscriber_detail(acc, sub) if sub else None

    def subscribers(self, account: str) -> list[dict[str, Any]]:
        """Every subscriber of ``account``, shaped like ``GET email/subscribers/{id}``."""
        acc = self._accounts[account]
        return [self._subscriber_detail(acc, sub) for sub in acc.subscribers.values()]

    def lists(self, account: str) -> dict[str, str]:
        """List id -> title of ``account``."""
        return {mail_list.id: mail_list.title for mail_list in self._accounts[account].lists.values()}

    def create_field(self, account: str, title: str, field_type: str = "text") -> str:
        """Make a custom field as the tenant would in the panel; returns its id."""
        assert field_type in FIELD_TYPES
        acc = self._accounts[account]
        custom_field = _Field(self._new_id(), title, field_type, f"field_{len(acc.fields) + 1}")
        acc.fields[custom_field.id] = custom_field
        return custom_field.id

    def field_values(self, account: str, email: str) -> dict[str, str]:
        """A subscriber's custom field values by field title."""
        acc = self._accounts[account]
        sub = acc.subscriber_by_email(email)
        return {} if sub is None else {acc.fields[fid].title: value for fid, value in sub.fields.items()}

    def create_list(self, account: str, title: str) -> str:
        """Make a list as the tenant would in the panel; returns its id."""
        now = self.clock()
        mail_list = _MailList(self._new_id(), title, now, now)
        self._accounts[account].lists[mail_list.id] = mail_list
        return mail_list.id

    def delete_list(self, account: str, list_id: str) -> None:
        """Delete a list as the tenant would in the panel; its subscribers stay."""
        acc = self._accounts[account]
        del acc.lists[list_id]
        for sub in acc.subscribers.values():
            if list_id in sub.lists:
                sub.lists.remove(list_id)
        acc.touch()

    def set_status(self, account: str, email: str, status: str) -> None:
        """Change a subscriber's status as the service would (e.g. a web unsubscribe)."""
        if status not in api.SUBSCRIBER_STATUSES:
            raise ValueError(f"unknown status {status!r}")
        acc = self._accounts[account]
        sub = acc.subscriber_by_email(email)
        if sub is None:
            raise KeyError(email)
        acc.changing(sub)
        sub.status, sub.update_date = status, self.clock()
        acc.touch(sub)

    def load_subscribers(self, account: str, rows: Iterable[tuple[str, str]]) -> int:
        """Put subscribers straight into ``account`` (no HTTP), for a benchmark that needs a large
        account fast: each row is (e-mail, status), in no list. An e-mail already there is left
        alone. Returns how many were added."""
        acc = self._accounts[account]
        added = 0
        now = self.clock()
        for email, status in rows:
            if status not in api.SUBSCRIBER_STATUSES:
                raise ValueError(f"unknown status {status!r}")
            key = normalize_email(email)
            if key in acc.ids_by_email:
                continue
            acc.add(_Subscriber(self._new_id(), email, status, now, now, "127.0.0.1"))
            added += 1
        acc.touch()
        return added

    def simulate_campaign(self, account: str, list_ids: Iterable[str] | None = None,
                          subject: str = "Sandbox campaign", status: str = "send",
                          rates: Mapping[str, float] | None = None) -> str:
        """Send a campaign to the active subscribers of ``list_ids`` (all lists if None).

        Per-recipient events are drawn from the sandbox seed and the campaign's sequence
        number, so the same seed and data give the same report. Bounces, complaints and
        unsubscribes change the subscriber's status and ``update_date`` as the service would.
        A campaign whose status is not ``send``/``sending`` reaches nobody.
        """
        acc = self._accounts[account]
        if status not in api.CAMPAIGN_STATUSES:
            raise ValueError(f"unknown campaign status {status!r}")
        if unknown := set(rates or {}) - set(DEFAULT_RATES):
            raise ValueError(f"unknown rates {sorted(unknown)}; known: {sorted(DEFAULT_RATES)}")
        rate = {**DEFAULT_RATES, **(rates or {})}
        wanted = set(acc.lists) if list_ids is None else set(list_ids)
        if missing := wanted - set(acc.lists):
            raise KeyError(f"unknown lists {sorted(missing)}")
        now = self.clock()  # the campaign went out an hour ago; its events are all in the past
        self._campaign_counter += 1
        rng = random.Random(f"{self.seed}:campaign:{self._campaign_counter}")
        campaign = _Campaign(self._new_id(), subject, status, created_date=now - 3600, updated_date=now,
                             report={rule: [] for rule in api.REPORT_RULES})
        acc.campaigns[campaign.id] = campaign
        if status not in ("send", "sending"):
            return campaign.id
        recipients = sorted((sub for sub in acc.subscribers.values()
                             if sub.status == "active" and wanted.intersection(sub.lists)),
                            key=attrgetter("email"))
        for sub in recipients:
            self._simulate_recipient(campaign, sub, rng, rate, now)
        acc.touch()
        return campaign.id

    def campaign_report(self, account: str, campaign_id: str, rule: str) -> list[dict[str, str]]:
        """The rows an export of ``rule`` contains: the truth a report import should match."""
        return [dict(row) for row in self._accounts[account].campaigns[campaign_id].report[rule]]

    # --- the ASGI front ------------------------------------------------------------------

    async def _front(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        """Log the request and inject this call's fault, before Starlette's middleware."""
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        path = scope["path"]
        is_api_call = path.startswith(API_PREFIX + "/") and self._api_relative(path) not in _TOKEN_PATHS
        fault = await self._faults.before_api_call(write=scope["method"] in _WRITE_METHODS) if is_api_call else None
        await answer(scope, receive, send, app, fault, _fault_response, self.request_log)

    @staticmethod
    def _api_relative(path: str) -> str:
        return path.removeprefix(API_PREFIX).strip("/")

    def _api_routes(self) -> list[BaseRoute]:
        table: list[tuple[str, str, Handler]] = [
            (api.LIST_FILTER_PATH, "GET", self._list_filter),
            (api.LIST_PATH, "POST", self._create_list),
            (api.LIST_ITEM_PATH, "GET", self._get_list),
            (api.LIST_ITEM_PATH, "PATCH", self._patch_list),
            (api.LIST_ITEM_PATH, "DELETE", self._delete_list),
            (api.LIST_COUNTER_PATH, "GET", self._list_counter),
            (api.SUBSCRIBERS_FILTER_PATH, "GET", self._subscriber_filter),
            (api.SUBSCRIBERS_PATH, "POST", self._post_subscriber),
            (api.BULK_IMPORT_PATH, "POST", self._bulk_import),
            (api.BULK_JOB_PATH, "GET", self._bulk_job),
            (api.SUBSCRIBER_ITEM_PATH, "GET", self._get_subscriber),
            (api.SUBSCRIBER_ITEM_PATH, "PATCH", self._patch_subscriber),
            (api.SUBSCRIBER_ITEM_PATH, "DELETE", self._delete_subscriber),
            (api.FIELDS_PATH, "GET", self._field_index),
            (api.FIELDS_PATH, "POST", self._create_field),
            (api.FIELD_ITEM_PATH, "GET", self._get_field),
            (api.FIELD_ITEM_PATH, "PATCH", self._patch_field),
            (api.FIELD_ITEM_PATH, "DELETE", self._delete_field),
            (api.CAMPAIGN_FILTER_PATH, "GET", self._campaign_filter),
            (api.REPORT_EXPORT_PATH, "POST", self._report_export),
            (api.REPORT_EXPORT_FILTER_PATH, "GET", self._report_export_filter),
        ]
        endpoints = [(api.TOKEN_PATH, "POST", _catching(self._token)),
                     (api.TOKEN_REFRESH_PATH, "POST", _catching(self._token_refresh))]
        endpoints += [(path, method, self._authenticated(handler)) for path, method, handler in table]
        # Only the spellings the document shows answer (api.BOTH_SPELLINGS): a client that adds or
        # drops a trailing slash elsewhere gets the 404 the real service would give.
        return [Route(variant, endpoint, methods=[method])
                for path, method, endpoint in endpoints
                for variant in ("/" + path.strip("/"), *(("/" + path.strip("/") + "/",)
                                                        if path.strip("/") in api.BOTH_SPELLINGS else ()))]

    def _authenticated(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def call(request: Request) -> Response:
            return await handler(request, self._authenticate(request))
        return _catching(call)

    # --- tokens ------------------------------------------------------------------------

    def _issue(self, acc: _Account, token_type: str, lifetime_s: int) -> str:
        now = int(self.clock())
        claims = {"token_type": token_type, "exp": now + lifetime_s, "iat": now,
                  "jti": secrets.token_hex(16), "user_id": acc.user_id, "user": acc.username}
        signing_input = ".".join(_b64(json.dumps(part, separators=(",", ":")).encode())
                                 for part in ({"alg": "HS256", "typ": "JWT"}, claims))
        return f"{signing_input}.{_b64(self._sign(signing_input))}"

    def _sign(self, signing_input: str) -> bytes:
        return hmac.new(self._signing_key, signing_input.encode(), hashlib.sha256).digest()

    def _account_for_token(self, token: str, token_type: str, detail: str) -> _Account:
        """The account a valid, unexpired token of ``token_type`` belongs to; else 401."""
        invalid = _token_not_valid(detail)
        try:
            header, payload, signature = token.split(".")
            if not hmac.compare_digest(_unb64(signature), self._sign(f"{header}.{payload}")):
                raise invalid
            claims = json.loads(_unb64(payload))
        except ValueError:  # wrong number of parts, bad base64, bad JSON
            raise invalid from None
        if not isinstance(claims, dict) or claims.get("token_type") != token_type:
            raise invalid
        acc = self._accounts.get(str(claims.get("user")))
        exp = claims.get("exp")
        if acc is None or not isinstance(exp, int) or exp <= self.clock():
            raise invalid
        return acc

    def _authenticate(self, request: Request) -> _Account:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme != api.AUTH_SCHEME or not token.strip():
            raise _ApiError(403, {"detail": "Authentication credentials were not provided."})
        token = token.strip()
        acc = self._account_for_token(token, "access", _ACCESS_NOT_VALID)
        if not self._faults.use_token(token):  # FaultPlan.token_expire_after
            raise _token_not_valid(_ACCESS_NOT_VALID)
        return acc

    async def _token(self, request: Request) -> Response:
        body = await _body(request)
        login, password = body.get("username") or body.get("email"), body.get("password")
        errors: dict[str, list[str]] = {}
        if not login:
            errors["username"] = [REQUIRED]
        if not password:
            errors["password"] = [REQUIRED]
        _raise_if(errors)
        acc = self._accounts.get(str(login))
        if acc is None or not hmac.compare_digest(acc.password.encode(), str(password).encode()):
            raise _ApiError(401, {"detail": "No active account found with the given credentials"})
        return JSONResponse({"access": self._issue(acc, "access", api.ACCESS_TOKEN_LIFETIME_S),
                             "refresh": self._issue(acc, "refresh", api.REFRESH_TOKEN_LIFETIME_S)})

    async def _token_refresh(self, request: Request) -> Response:
        refresh = (await _body(request)).get("refresh")
        if not refresh:
            raise _ApiError(400, {"refresh": [REQUIRED]})
        acc = self._account_for_token(str(refresh), "refresh", "Token is invalid or expired")
        return JSONResponse({"access": self._issue(acc, "access", api.ACCESS_TOKEN_LIFETIME_S)})

    # --- lists -------------------------------------------------------------------------

    def _list_json(self, acc: _Account, mail_list: _MailList, active: Mapping[str, int]) -> dict[str, Any]:
        return {"id": mail_list.id, "title": mail_list.title, "user_id": acc.user_id,
                "valid": active.get(mail_list.id, 0), "update_date": _iso(mail_list.update_date),
                "create_date": _iso(mail_list.create_date)}

    @staticmethod
    def _active_counts(acc: _Account) -> dict[str, int]:
        """Active subscribers per list id: a list's ``valid``."""
        return {list_id: count for (list_id, status), count in acc.counts().items() if status == "active"}

    async def _list_filter(self, request: Request, acc: _Account) -> Response:
        lists = list(acc.lists.values())   # the document offers no filter here, only ordering and page
        active = self._active_counts(acc)
        ordered = _ordered(request, lists, ("title", "create_date"), "create_date")
        return _page(request, ordered, lambda item: self._list_json(acc, item, active))

    async def _create_list(self, request: Request, acc: _Account) -> Response:
        title = _required_text(await _body(request), "title")
        now = self.clock()
        mail_list = _MailList(self._new_id(), title, now, now)
        acc.lists[mail_list.id] = mail_list
        return JSONResponse(self._list_json(acc, mail_list, {}), 201)

    async def _get_list(self, request: Request, acc: _Account) -> Response:
        return JSONResponse(self._list_json(acc, _lookup(acc.lists, request), self._active_counts(acc)))

    async def _patch_list(self, request: Request, acc: _Account) -> Response:
        mail_list = _lookup(acc.lists, request)
        mail_list.title = _required_text(await _body(request), "title")
        mail_list.update_date = self.clock()
        return JSONResponse(self._list_json(acc, mail_list, self._active_counts(acc)))

    async def _delete_list(self, request: Request, acc: _Account) -> Response:
        """Delete a list; its subscribers stay (documented), only their membership goes."""
        mail_list = _lookup(acc.lists, request)
        del acc.lists[mail_list.id]
        for sub in acc.subscribers.values():
            if mail_list.id in sub.lists:
                sub.lists.remove(mail_list.id)
        acc.touch()
        return Response(status_code=204)

    async def _list_counter(self, request: Request, acc: _Account) -> Response:
        list_id = _lookup(acc.lists, request).id
        counts = acc.counts()
        return JSONResponse([{"_id": status, "count": counts[list_id, status]}
                             for status in api.SUBSCRIBER_STATUSES if counts[list_id, status] > 0])

    # --- subscribers -------------------------------------------------------------------

    @staticmethod
    def _subscriber_row(sub: _Subscriber) -> dict[str, Any]:
        """A ``subscribers-filter`` row: no lists, dates without ``Z`` (as documented)."""
        return {"id": sub.id, "email": sub.email, "create_date": _iso(sub.create_date, zulu=False),
                "update_date": _iso(sub.update_date, zulu=False), "status": sub.status, "verify": 2}

    @staticmethod
    def _subscriber_base(acc: _Account, sub: _Subscriber) -> dict[str, Any]:
        return {"id": sub.id, "email": sub.email, "first_name": sub.first_name,
                "last_name": sub.last_name, "phone": sub.phone, "create_date": _iso(sub.create_date),
                "update_date": _iso(sub.update_date), "status": sub.status, "user_id": acc.user_id,
                "verify": 2, "source": "api", "source_ip": sub.source_ip}

    def _subscriber_written(self, acc: _Account, sub: _Subscriber) -> dict[str, Any]:
        """The POST/PATCH answer: lists and fields by id."""
        return {**self._subscriber_base(acc, sub), "lists": list(sub.lists),
                "fields": [{"value": value, "field": field_id} for field_id, value in sub.fields.items()]}

    def _subscriber_detail(self, acc: _Account, sub: _Subscriber) -> dict[str, Any]:
        """The GET item answer: lists with titles, fields with their definitions."""
        return {**self._subscriber_base(acc, sub),
                "lists": [{"id": list_id, "title": acc.lists[list_id].title} for list_id in sub.lists],
                "fields": [{"value": value, "field": _field_json(acc.fields[field_id])}
                           for field_id, value in sub.fields.items()]}

    async def _subscriber_filter(self, request: Request, acc: _Account) -> Response:
        params = request.query_params
        email, status, list_id = params.get("email", ""), params.get("status", ""), params.get("lists", "")
        key = (email, status, list_id, params.get("ordering", ""))
        ordered = acc.filtered.get(key)
        if ordered is None:     # the first page of this query since the last change
            subs: Iterable[_Subscriber] = acc.subscribers.values() if not status else \
                [acc.subscribers[sub_id] for sub_id in acc.by_status.ids.get(status, {})]
            if email:
                subs = [sub for sub in subs if _fold(email) in _fold(sub.email)]
            if status:
                subs = [sub for sub in subs if sub.status == status]
            if list_id:
                subs = [sub for sub in subs if list_id in sub.lists]
            orderings = tuple(name for name in api.SUBSCRIBER_ORDERINGS if not name.startswith("-"))
            ordered = _ordered(request, list(subs), orderings, "create_date")
            if len(acc.filtered) >= FILTER_CACHE_QUERIES:
                del acc.filtered[next(iter(acc.filtered))]      # the oldest query
            acc.filtered[key] = ordered
        return _page(request, ordered, self._subscriber_row)

    async def _get_subscriber(self, request: Request, acc: _Account) -> Response:
        return JSONResponse(self._subscriber_detail(acc, _lookup(acc.subscribers, request)))

    async def _post_subscriber(self, request: Request, acc: _Account) -> Response:
        body = await _body(request, json_only=True)
        sub, outcome = self._upsert(acc, body, extra_lists=(), source_ip=_client_ip(request))
        return JSONResponse(self._subscriber_written(acc, sub), 201 if outcome == "created" else 200)

    async def _patch_subscriber(self, request: Request, acc: _Account) -> Response:
        """Update a subscriber; ``status`` is required (documented), ``lists`` replaces the set."""
        sub = _lookup(acc.subscribers, request)
        body = await _body(request)
        errors: dict[str, list[str]] = {}
        status = _clean_status(body.get("status"), errors)
        lists = _clean_lists(acc, body["lists"], errors) if "lists" in body else None
        values = _clean_field_values(acc, body.get("fields", []), errors)
        names = _clean_names(body, errors)
        _raise_if(errors)
        acc.changing(sub)
        self._apply(sub, status, names, values)
        if lists is not None:
            sub.lists = list(dict.fromkeys(lists))
        acc.touch(sub)
        return JSONResponse(self._subscriber_written(acc, sub))

    async def _delete_subscriber(self, request: Request, acc: _Account) -> Response:
        sub = _lookup(acc.subscribers, request)
        acc.changing(sub)
        acc.remove(sub)
        acc.touch(sub)
        return Response(status_code=204)

    def _upsert(self, acc: _Account, data: Mapping[str, Any], extra_lists: Sequence[str],
                source_ip: str) -> tuple[_Subscriber, Upsert]:
        """POST email/subscribers (and one bulk row): create, or update when ``update`` is true.

        Lists are ADDED to the subscriber's own (api.py); an existing e-mail with
        ``update`` false is left unchanged.
        """
        errors: dict[str, list[str]] = {}
        email = _clean_email(data.get("email"), errors)
        status = _clean_status(data.get("status"), errors)
        lists = _clean_lists(acc, data.get("lists", []), errors)
        values = _clean_field_values(acc, data.get("fields", []), errors)
        names = _clean_names(data, errors)
        update = data.get("update", False)
        if not isinstance(update, bool):
            errors["update"] = ["Must be a valid boolean."]
        _raise_if(errors)
        sub = acc.subscriber_by_email(email)
        outcome: Upsert = "updated"
        if sub is None:
            now = self.clock()
            sub = _Subscriber(self._new_id(), email, status, now, now, source_ip)
            acc.add(sub)
            acc.changing(sub, created=True)
            outcome = "created"
        elif not update:
            return sub, "unchanged"
        else:
            acc.changing(sub)
        self._apply(sub, status, names, values)
        sub.lists.extend(list_id for list_id in dict.fromkeys([*lists, *extra_lists])
                         if list_id not in sub.lists)
        acc.touch(sub)
        return sub, outcome

    def _apply(self, sub: _Subscriber, status: str, names: Mapping[str, str | None],
               values: Mapping[str, str]) -> None:
        sub.status = status
        for name, value in names.items():
            setattr(sub, name, value)
        sub.fields.update(values)
        sub.update_date = self.clock()

    # --- bulk import -------------------------------------------------------------------

    async def _bulk_import(self, request: Request, acc: _Account) -> Response:
        """Validate the envelope and queue the job; rows are checked when it runs."""
        body = await _body(request, json_only=True)
        errors: dict[str, list[str]] = {}
        list_ids: list[str] = []
        if not body.get("lists"):
            errors["lists"] = [REQUIRED if "lists" not in body else "This list may not be empty."]
        else:
            list_ids = _clean_lists(acc, body["lists"], errors)
        rows: Any = body.get("subscribers")
        if rows is None:
            errors["subscribers"] = [REQUIRED]
        elif not isinstance(rows, list):
            errors["subscribers"] = [f'Expected a list of items but got type "{type(rows).__name__}".']
        elif not rows:
            errors["subscribers"] = ["This list may not be empty."]
        elif len(rows) > api.BULK_MAX_SUBSCRIBERS:
            errors["subscribers"] = [f"Ensure this field has no more than {api.BULK_MAX_SUBSCRIBERS} elements."]
        _raise_if(errors)
        self._job_counter += 1
        job = _Job(self._job_counter, list_ids, list(rows), _client_ip(request))
        acc.jobs[str(job.id)] = job
        if self.job_polls_until_done == 0:
            self._run_job(acc, job)
        return JSONResponse({"id": job.id, "status": "queued", "detail": "İşlem sıraya alındı."}, 202)

    async def _bulk_job(self, request: Request, acc: _Account) -> Response:
        """Job status; the Nth poll (N = job_polls_until_done) applies the job."""
        job = _lookup(acc.jobs, request)
        job.polls += 1
        if not job.done and job.polls >= self.job_polls_until_done:
            self._run_job(acc, job)
        outcomes = Counter(row["result"] for row in job.results)
        return JSONResponse({"id": job.id, "status": "done" if job.done else "processing",
                             "total": len(job.rows), "created": outcomes["created"],
                             "updated": outcomes["updated"], "failed_count": outcomes["error"],
                             "results": job.results})

    def _run_job(self, acc: _Account, job: _Job) -> None:
        """Apply a bulk job row by row; a bad row becomes an error result, never a failed job."""
        lists = [list_id for list_id in job.list_ids if list_id in acc.lists]  # may be deleted since
        for row in job.rows:
            email = row.get("email") if isinstance(row, dict) else None
            result: dict[str, Any] = {"email": email if isinstance(email, str) else None, "id": None}
            try:
                if not isinstance(row, dict):
                    raise _ApiError(400, {"non_field_errors": ["Invalid data. Expected a dictionary."]})
                sub, outcome = self._upsert(acc, row, lists, job.source_ip)
            except _ApiError as error:
                result.update(result="error", detail=_error_text(error.body))
            else:
                result.update(id=sub.id, result="exists" if outcome == "unchanged" else outcome,
                              detail="Exists; not changed because update is false."
                              if outcome == "unchanged" else None)
            job.results.append(result)
        job.done = True
        acc.counts()        # a job's changes counted once it is done: a list read after it is O(lists)

    # --- fields ------------------------------------------------------------------------

    async def _field_index(self, request: Request, acc: _Account) -> Response:
        return JSONResponse([_field_json(item) for item in acc.fields.values()])

    async def _get_field(self, request: Request, acc: _Account) -> Response:
        return JSONResponse(_field_json(_lookup(acc.fields, request)))

    async def _create_field(self, request: Request, acc: _Account) -> Response:
        body = await _body(request)
        errors: dict[str, list[str]] = {}
        title = str(body.get("title") or "").strip()
        if not title:
            errors["title"] = [REQUIRED]
        field_type = body.get("type")
        if field_type not in FIELD_TYPES:
            errors["type"] = [f'"{field_type}" is not a valid choice.' if field_type else REQUIRED]
        _raise_if(errors)
        base = re.sub(r"[^a-z0-9]+", "_", title.translate(_TO_ASCII).lower()).strip("_") or "field"
        taken = {item.merge_tag for item in acc.fields.values()}
        merge_tag, n = base, 1
        while merge_tag in taken:
            n += 1
            merge_tag = f"{base}_{n}"
        custom_field = _Field(self._new_id(), title, str(field_type), merge_tag)
        acc.fields[custom_field.id] = custom_field
        return JSONResponse(_field_json(custom_field), 201)

    async def _patch_field(self, request: Request, acc: _Account) -> Response:
        """Only the title can change (documented)."""
        custom_field = _lookup(acc.fields, request)
        custom_field.title = _required_text(await _body(request), "title")
        return JSONResponse(_field_json(custom_field))

    async def _delete_field(self, request: Request, acc: _Account) -> Response:
        """Delete a field and its values on every subscriber (documented)."""
        custom_field = _lookup(acc.fields, request)
        del acc.fields[custom_field.id]
        for sub in acc.subscribers.values():
            sub.fields.pop(custom_field.id, None)
        return Response(status_code=204)

    # --- campaigns and reports ---------------------------------------------------------

    def _simulate_recipient(self, campaign: _Campaign, sub: _Subscriber, rng: random.Random,
                            rate: Mapping[str, float], now: float) -> None:
        report, sent = campaign.report, campaign.created_date

        def event(**extra: str) -> dict[str, str]:
            return {"email": sub.email, "date": _iso(sent + rng.uniform(60, 3500)), **extra}

        report["subscribers"].append({"email": sub.email, "date": _iso(sent)})
        new_status = None
        if rng.random() < rate["bounce"]:
            hard = rng.random() < rate["hard_bounce_share"]
            report["bounced"].append(event(
                bounce_type="HARDBOUNCE" if hard else "SOFTBOUNCE",
                diagnostic_code="smtp; 550 5.1.1 user unknown" if hard else "smtp; 452 4.2.2 mailbox full"))
            new_status = "hard_bounce" if hard else "soft_bounce"
        else:
            if rng.random() < rate["open"]:
                report["opened"].append(event(count=str(rng.randint(1, 5))))
                if rng.random() < rate["click"]:
                    report["clicked"].append(event(link=rng.choice(CAMPAIGN_LINKS)))
            if rng.random() < rate["complaint"]:
                report["complaint"].append(event())
                new_status = "spam_complaint"
            elif rng.random() < rate["unsubscribe"]:
                report["unsubscribed"].append(event())
                new_status = "unsubscribed"
        if new_status:
            sub.status, sub.update_date = new_status, now

    async def _campaign_filter(self, request: Request, acc: _Account) -> Response:
        campaigns = _ordered(request, list(acc.campaigns.values()),
                             ("subject", "created_date", "updated_date"), "-created_date")
        return _page(request, campaigns, lambda item: {
            "id": item.id, "subject": item.subject, "from_name": "Sandbox",
            "from_email": SENDER_EMAIL, "updated_date": _iso(item.updated_date),
            "created_date": _iso(item.created_date), "status": item.status})

    async def _report_export(self, request: Request, acc: _Account) -> Response:
        """Queue a report export; it is listed once the listing was polled enough times."""
        body = await _body(request)
        errors: dict[str, list[str]] = {}
        cmp_id, rule = body.get("id"), body.get("rule")
        if not cmp_id:
            errors["id"] = [REQUIRED]
        elif not isinstance(cmp_id, str) or cmp_id not in acc.campaigns:
            errors["id"] = [f'Campaign "{cmp_id}" does not exist.']
        if rule not in api.REPORT_RULES:
            errors["rule"] = [f'"{rule}" is not a valid choice.' if rule else REQUIRED]
        _raise_if(errors)
        export = _Export(secrets.token_hex(5).upper(), str(cmp_id), str(rule), self.clock())
        acc.exports.append(export)
        self._exports_by_token[export.token] = (acc, export)
        return JSONResponse({"detail": {"id": cmp_id, "user_id": acc.user_id, "rule": rule}}, 202)

    async def _report_export_filter(self, request: Request, acc: _Account) -> Response:
        cmp_id = request.query_params.get("cmp_id")
        matching = [export for export in acc.exports if cmp_id is None or export.cmp_id == cmp_id]
        for export in matching:
            export.polls += 1
        ready = [export for export in matching if export.polls >= self.export_polls_until_ready]
        origin = f"{request.url.scheme}://{request.url.netloc}"
        return _page(request, _ordered(request, ready, ("create_date",), "-create_date"), lambda item: {
            "cmp_id": item.cmp_id, "rule": item.rule, "create_date": _iso(item.create_date),
            "file": origin + EXPORT_FILE_PATH.format(user_id=acc.user_id, cmp_id=item.cmp_id,
                                                     name=f"{item.token}.csv")})

    async def _download_export(self, request: Request) -> Response:
        """The export file: public like the S3 link it stands for, UTF-8 CSV with a header."""
        params = request.path_params
        found = self._exports_by_token.get(params["name"].removesuffix(".csv"))
        if (found is None or not params["name"].endswith(".csv") or found[1].cmp_id != params["cmp_id"]
                or str(found[0].user_id) != params["user_id"]):
            return Response("Not Found", 404, media_type="text/plain")
        acc, export = found
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=api.REPORT_CSV_COLUMNS[export.rule], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(acc.campaigns[export.cmp_id].report[export.rule])
        return Response(out.getvalue(), media_type="text/csv")

    # --- ids ---------------------------------------------------------------------------

    def _new_id(self) -> str:
        """A MongoDB-style ObjectId: clock seconds, a seeded "machine" part, a counter."""
        self._oid_counter += 1
        return f"{int(self.clock()) & 0xFFFFFFFF:08x}{self._oid_machine}{self._oid_counter & 0xFFFFFF:06x}"


# --- request parsing, validation, paging (module level: no sandbox state) ---------------


def _catching(call: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Turn an ``_ApiError`` raised by ``call`` into its JSON answer."""
    async def endpoint(request: Request) -> Response:
        try:
            return await call(request)
        except _ApiError as error:
            return error.response()
    return endpoint


def _fault_response(fault: Fault) -> Response:
    """A 429 as DRF throttling answers it, or a 5xx page as Django or the nginx in front would."""
    if fault.kind == "rate_limit":
        wait = f"{fault.retry_after_s:g}"
        return JSONResponse({"detail": f"Request was throttled. Expected available in {wait} seconds."},
                            429, headers={"Retry-After": wait})
    return Response(_ERROR_PAGES[fault.status], fault.status, media_type="text/html")


async def _body(request: Request, *, json_only: bool = False) -> dict[str, Any]:
    """The request body as a dict: JSON, or (where the document allows it) a urlencoded form.

    ``json_only`` endpoints are those the document says take only ``Accept: application/json``
    (api.JSON_ONLY_PATHS): any other Accept header, ``*/*`` included, is answered 406.
    """
    if json_only and "application/json" not in request.headers.get("accept", "").lower():
        raise _ApiError(406, {"detail": "Could not satisfy the request Accept header."})
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    raw = await request.body()
    if not raw:
        return {}
    if content_type == "application/json":
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise _ApiError(400, {"detail": f"JSON parse error - {exc}"}) from None
    elif content_type == "application/x-www-form-urlencoded" and not json_only:
        pairs = parse_qs(raw.decode("utf-8"), keep_blank_values=True)
        data = {key: values[0] if len(values) == 1 else values for key, values in pairs.items()}
    else:
        raise _ApiError(415, {"detail": f'Unsupported media type "{content_type}" in request.'})
    if not isinstance(data, dict):
        raise _ApiError(400, {"non_field_errors": [
            f"Invalid data. Expected a dictionary, but got {type(data).__name__}."]})
    return data


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def _required_text(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise _ApiError(400, {name: [REQUIRED if value is None else "This field may not be blank."]})
    return value.strip()


def _clean_email(value: Any, errors: dict[str, list[str]]) -> str:
    if not value:
        errors["email"] = [REQUIRED]
    elif not isinstance(value, str) or address_problem(value.strip(), utf8_local=api.ADDRESS_UTF8_LOCAL,
                                                       idn=api.ADDRESS_IDN):
        errors["email"] = ["Enter a valid email address."]   # by api.py's reading of an address
    return str(value or "").strip()


def _clean_status(value: Any, errors: dict[str, list[str]]) -> str:
    if not value:
        errors["status"] = [REQUIRED]
    elif value not in api.SUBSCRIBER_STATUSES:
        errors["status"] = [f'"{value}" is not a valid choice.']
    return str(value)


def _clean_lists(acc: _Account, value: Any, errors: dict[str, list[str]]) -> list[str]:
    """List ids, all of which must exist in the account (``lists=<id>`` in a form is one id)."""
    ids = [value] if isinstance(value, str) else value
    if not isinstance(ids, list):
        errors["lists"] = [f'Expected a list of items but got type "{type(value).__name__}".']
        return []
    if bad := [list_id for list_id in ids if not isinstance(list_id, str) or list_id not in acc.lists]:
        errors["lists"] = [f'Invalid pk "{list_id}" - object does not exist.' for list_id in bad]
    return [str(list_id) for list_id in ids]


def _clean_field_values(acc: _Account, value: Any, errors: dict[str, list[str]]) -> dict[str, str]:
    """``[{"field": <id>, "value": ...}]`` -> {field id: value as text}."""
    if not isinstance(value, list):
        errors["fields"] = [f'Expected a list of items but got type "{type(value).__name__}".']
        return {}
    values: dict[str, str] = {}
    for item in value:
        field_id = item.get("field") if isinstance(item, dict) else None
        if not isinstance(field_id, str) or field_id not in acc.fields:
            errors.setdefault("fields", []).append(f'Invalid pk "{field_id}" - object does not exist.')
        else:
            values[field_id] = "" if item.get("value") is None else str(item["value"])
    return values


def _clean_names(data: Mapping[str, Any], errors: dict[str, list[str]]) -> dict[str, str | None]:
    """first_name, last_name and phone, where given."""
    names: dict[str, str | None] = {}
    for name in ("first_name", "last_name", "phone"):
        if name in data:
            if data[name] is None or isinstance(data[name], str):
                names[name] = data[name]
            else:
                errors[name] = ["Not a valid string."]
    return names


def _field_json(custom_field: _Field) -> dict[str, Any]:
    return {"id": custom_field.id, "title": custom_field.title, "type": custom_field.type,
            "merge_tag": custom_field.merge_tag}


def _ordered(request: Request, items: list[T], names: Sequence[str], default: str) -> list[T]:
    """Sort by ``?ordering=name|-name`` (one of ``names``); an unknown ordering is ignored, as in DRF."""
    ordering = request.query_params.get("ordering", default)
    if ordering.lstrip("-") not in names:
        ordering = default
    return sorted(items, key=attrgetter(ordering.lstrip("-")), reverse=ordering.startswith("-"))


def _page(request: Request, items: Sequence[T], render: Callable[[T], dict[str, Any]]) -> Response:
    """DRF page-number paging: {count, next, previous, results}, absolute links, api.PAGE_SIZE rows."""
    try:
        page = int(request.query_params.get("page", "1"))
    except ValueError:
        page = 0
    last = max(1, math.ceil(len(items) / api.PAGE_SIZE))
    if not 1 <= page <= last:
        raise _ApiError(404, {"detail": "Invalid page."})

    def link(number: int) -> str:
        url = request.url
        return str(url.remove_query_params("page") if number == 1 else url.include_query_params(page=number))

    start = (page - 1) * api.PAGE_SIZE
    return JSONResponse({"count": len(items), "next": link(page + 1) if page < last else None,
                         "previous": link(page - 1) if page > 1 else None,
                         "results": [render(item) for item in items[start:start + api.PAGE_SIZE]]})
