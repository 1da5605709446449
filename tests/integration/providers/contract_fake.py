"""A contract fake: one small provider that can be configured as each provider SHAPE.

The shared suite runs against it in every push shape, so the capability protocols of
``sync.providers.base`` and the engine's capability branches are proven before the real
providers arrive. It has two halves, both honest:

- ``ContractService``: a stateful in-memory Starlette app (the "provider"), with the sandboxes'
  fault injection (``FaultPlan``/``FaultInjector`` in its ``_front``). It refuses what a strict
  provider refuses: a create never overwrites an existing contact (409 with the existing id), an
  update never turns an unsubscribed, bounced or complained contact active unless it says
  ``resubscribe``, and a shape that cannot create lists, delete or unsubscribe members answers
  405 to those calls.
- ``FakeProvider`` subclasses (one per shape): clients through ``sync.http.ProviderHTTP`` that
  implement exactly the capability protocols their shape declares, nothing more.

The shapes (``SHAPES``):

| shape | lists | membership | removal | key | status pull | also |
| --- | --- | --- | --- | --- | --- | --- |
| ``fake-contact`` | create | contact | delete | email | incremental | İYS consents, campaign reports |
| ``fake-perlist`` | mapped | per_list | delete | email | full_scan | per-list unsubscribes |
| ``fake-keyed`` | create | contact | unsubscribe | crm_id | full_scan | |
| ``fake-noremoval`` | mapped | per_list | none | email | incremental | per-list unsubscribes |
| ``fake-pullonly`` | none | (no push) | | | full_scan | |

The wire format is the fake's own (JSON under ``/api/``, a bearer token from ``POST /api/auth``);
it is written down here and nowhere else.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sync.emails import normalize_email
from sync.errors import AnswerLostError, AuthenticationError, FatalError, ProviderError, RejectedRow
from sync.http import Auth, ProviderHTTP, describe, json_of
from sync.providers import base, specs
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
)
from sync.sample import LIST_NAMES
from sync.sandbox import FaultPlan, SandboxApp
from sync.sandbox.faults import Fault, FaultInjector
from sync.sandbox.transport import answer
from tests.integration.providers.harness import SandboxHarness

if TYPE_CHECKING:
    from tests.integration.providers.harness import RemoteMember

API = "/api"
AUTH_PATH = "/api/auth"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Statuses an update must not turn back to active without ``resubscribe``.
BLOCKING = frozenset({"unsubscribed", "complaint", "hard_bounce"})
#: How many times the client posts a create whose answer was lost and that is not there.
CREATE_ATTEMPTS = 6


@dataclass(frozen=True)
class Shape:
    """A provider shape: its name (also the provider name it registers as) and its capabilities."""

    name: str
    capabilities: Capabilities


CONTACT = Shape("fake-contact", Capabilities(
    max_batch=40, lists="create", member_removal="delete", member_key="email", membership_model="contact",
    status_pull="incremental", pulls_consents=True, has_campaign_reports=True, concurrency=2))
PER_LIST = Shape("fake-perlist", Capabilities(
    max_batch=40, lists="mapped", supports_list_rename=False, supports_list_delete=False,
    member_removal="delete", member_key="email", membership_model="per_list", status_pull="full_scan",
    concurrency=2))
KEYED = Shape("fake-keyed", Capabilities(
    max_batch=40, lists="create", member_removal="unsubscribe", member_key="crm_id", membership_model="contact",
    status_pull="full_scan", concurrency=2))
NO_REMOVAL = Shape("fake-noremoval", Capabilities(
    max_batch=40, lists="mapped", supports_list_rename=False, supports_list_delete=False,
    member_removal="none", member_key="email", membership_model="per_list", status_pull="incremental",
    concurrency=2))
PULL_ONLY = Shape("fake-pullonly", Capabilities(
    lists="none", pushes_members=False, supports_unsubscribe=False, member_removal="none",
    status_pull="full_scan", concurrency=2))
SHAPES: tuple[Shape, ...] = (CONTACT, PER_LIST, KEYED, NO_REMOVAL, PULL_ONLY)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse(value: str | None) -> dt.datetime | None:
    return None if not value else dt.datetime.fromisoformat(value)


# --- the service -----------------------------------------------------------------------------


@dataclass
class _Record:
    """A contact (contact model: ``list_id`` is None and ``lists`` holds its lists) or one
    per-list record (``list_id`` is its list)."""

    id: str
    key: str
    email: str
    fields: dict[str, Any]
    status: str = "active"
    changed_at: dt.datetime = field(default_factory=_now)
    list_id: str | None = None
    lists: set[str] = field(default_factory=set)

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "key": self.key, "email": self.email, "fields": self.fields, "status": self.status,
                "changed_at": _iso(self.changed_at), "list": self.list_id or "", "lists": sorted(self.lists)}


@dataclass
class _Campaign:
    id: str
    name: str
    sent_at: dt.datetime
    results: dict[str, dict[str, Any]]


_IDS = itertools.count(1)


def _fault_answer(fault: Fault) -> ASGIApp:
    """A 429 with Retry-After, or a bare 5xx."""
    headers = {"Retry-After": f"{fault.retry_after_s:g}"} if fault.kind == "rate_limit" else {}
    return Response("fault", status_code=fault.status, headers=headers)


def _error(code: int, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=code)


class ContractService:
    """The fake provider's server side, for one shape and one account."""

    def __init__(self, shape: Shape, accounts: Mapping[str, str], faults: FaultPlan | None = None) -> None:
        self.shape = shape
        self.caps = shape.capabilities
        self.accounts = dict(accounts)
        self.fault_plan = faults or FaultPlan()
        self._faults = FaultInjector(self.fault_plan)
        self.request_log: list[tuple[str, str, int]] = []
        self.lists: dict[str, str] = {}
        self.records: dict[str, _Record] = {}
        self.consents: list[dict[str, Any]] = []
        self.campaigns: dict[str, _Campaign] = {}
        self._tokens: set[str] = set()
        routes = [
            Route(AUTH_PATH, self._auth, methods=["POST"]),
            Route(f"{API}/lists", self._list_index, methods=["GET"]),
            Route(f"{API}/lists", self._create_list, methods=["POST"]),
            Route(f"{API}/lists/{{list_id}}", self._change_list, methods=["PATCH", "DELETE"]),
            Route(f"{API}/contacts", self._find, methods=["GET"]),
            Route(f"{API}/contacts", self._create, methods=["POST"]),
            Route(f"{API}/contacts/{{record_id}}", self._update, methods=["PUT"]),
            Route(f"{API}/contacts/{{record_id}}", self._delete, methods=["DELETE"]),
            Route(f"{API}/contacts/{{record_id}}/unsubscribe", self._unsubscribe_removal, methods=["POST"]),
            Route(f"{API}/lists/{{list_id}}/records", self._find, methods=["GET"]),
            Route(f"{API}/lists/{{list_id}}/records", self._create, methods=["POST"]),
            Route(f"{API}/lists/{{list_id}}/records/{{record_id}}", self._update, methods=["PUT"]),
            Route(f"{API}/lists/{{list_id}}/records/{{record_id}}", self._delete, methods=["DELETE"]),
            Route(f"{API}/statuses", self._statuses, methods=["GET"]),
            Route(f"{API}/consents", self._consents, methods=["GET"]),
            Route(f"{API}/campaigns", self._campaign_index, methods=["GET"]),
            Route(f"{API}/campaigns/{{campaign_id}}/results", self._campaign_results, methods=["GET"]),
        ]
        self.app = SandboxApp(routes, front=self._front)

    @staticmethod
    def _new_id() -> str:
        """Ids are never reused, not even by a service restarted empty (as with a real provider)."""
        return str(next(_IDS))

    # --- front door: log, faults, authentication ------------------------------------------

    async def _front(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        if path == AUTH_PATH or not path.startswith(API + "/"):
            await answer(scope, receive, send, app, None, _fault_answer, self.request_log)
            return
        token = dict(scope["headers"]).get(b"authorization", b"").decode().removeprefix("Bearer ")
        if token not in self._tokens or not self._faults.use_token(token):
            await answer(scope, receive, send, _error(401, "token missing or expired"), None, _fault_answer,
                         self.request_log)
            return
        fault = await self._faults.before_api_call(write=method in WRITE_METHODS)
        await answer(scope, receive, send, app, fault, _fault_answer, self.request_log)

    async def _auth(self, request: Request) -> Response:
        body = await request.json()
        if self.accounts.get(str(body.get("username"))) != body.get("password"):
            return _error(401, "bad username or password")
        token = f"tok-{self._new_id()}"
        self._tokens.add(token)
        return JSONResponse({"token": token})

    # --- lists ----------------------------------------------------------------------------

    async def _list_index(self, request: Request) -> Response:
        return JSONResponse({"results": [{"id": i, "name": n} for i, n in self.lists.items()]})

    async def _create_list(self, request: Request) -> Response:
        if self.caps.lists != "create":
            return _error(405, "lists are made in the panel")
        name = str((await request.json()).get("name") or "").strip()
        if not name:
            return _error(400, "name: required")
        list_id = f"l{self._new_id()}"
        self.lists[list_id] = name
        return JSONResponse({"id": list_id, "name": name}, status_code=201)

    async def _change_list(self, request: Request) -> Response:
        if self.caps.lists != "create":
            return _error(405, "lists are made in the panel")
        list_id = request.path_params["list_id"]
        if list_id not in self.lists:
            return _error(404, "no such list")
        if request.method == "DELETE":
            self.delete_list(list_id)
            return Response(status_code=204)
        self.lists[list_id] = str((await request.json())["name"])
        return JSONResponse({"id": list_id, "name": self.lists[list_id]})

    def delete_list(self, list_id: str) -> None:
        del self.lists[list_id]
        for record_id, record in list(self.records.items()):
            record.lists.discard(list_id)
            if record.list_id == list_id:
                del self.records[record_id]

    # --- members --------------------------------------------------------------------------

    def _scope(self, request: Request) -> tuple[str | None, Response | None]:
        """The list of a per-list call (None for the contact model), or why the call is refused."""
        list_id = request.path_params.get("list_id")
        per_list = self.caps.membership_model == "per_list"
        if per_list != (list_id is not None):
            return None, _error(404, "not an endpoint of this account")
        if list_id is not None and list_id not in self.lists:
            return None, _error(404, "no such list")
        return list_id, None

    def find(self, key: str, list_id: str | None = None) -> _Record | None:
        return next((r for r in self.records.values() if r.key == key and r.list_id == list_id), None)

    async def _find(self, request: Request) -> Response:
        list_id, refused = self._scope(request)
        if refused:
            return refused
        found = self.find(request.query_params.get("key", ""), list_id)
        return JSONResponse({"results": [] if found is None else [found.as_json()]})

    def _lists_ok(self, lists: Sequence[str]) -> bool:
        return all(item in self.lists for item in lists)

    async def _create(self, request: Request) -> Response:
        """A create never touches an existing contact: 409 with its id."""
        list_id, refused = self._scope(request)
        if refused:
            return refused
        body = await request.json()
        key = str(body["key"])
        existing = self.find(key, list_id)
        if existing is not None:
            return _error(409, "exists", id=existing.id, status=existing.status)
        lists = [str(x) for x in body.get("lists") or []]
        if not self._lists_ok(lists):
            return _error(400, "lists: unknown list")
        record = _Record(self._new_id(), key, normalize_email(str(body["email"])), dict(body.get("fields") or {}),
                         str(body.get("status") or "active"), list_id=list_id, lists=set(lists))
        self.records[record.id] = record
        return JSONResponse(record.as_json(), status_code=201)

    async def _update(self, request: Request) -> Response:
        """Replace a contact's fields (and lists); refuse to make a suppressed contact active
        unless the caller says ``resubscribe``. A soft bounce is the service's: kept."""
        list_id, refused = self._scope(request)
        if refused:
            return refused
        record = self.records.get(request.path_params["record_id"])
        if record is None or record.list_id != list_id:
            return _error(404, "no such contact")
        body = await request.json()
        wanted = str(body.get("status") or "active")
        if wanted == "active" and record.status in BLOCKING and not body.get("resubscribe"):
            return _error(409, "suppressed: not re-activated without resubscribe", id=record.id,
                          status=record.status, changed_at=_iso(record.changed_at))
        lists = [str(x) for x in body.get("lists") or []]
        if not self._lists_ok(lists):
            return _error(400, "lists: unknown list")
        if wanted == "active" and record.status == "soft_bounce":
            wanted = "soft_bounce"
        if wanted != record.status:
            record.status, record.changed_at = wanted, _now()
        record.email = normalize_email(str(body.get("email") or record.email))
        record.fields = dict(body.get("fields") or {})
        if list_id is None:
            record.lists = set(lists)
        return JSONResponse(record.as_json())

    async def _delete(self, request: Request) -> Response:
        if self.caps.member_removal != "delete":
            return _error(405, "contacts cannot be deleted")
        list_id, refused = self._scope(request)
        if refused:
            return refused
        record = self.records.get(request.path_params["record_id"])
        if record is None or record.list_id != list_id:
            return _error(404, "no such contact")
        del self.records[record.id]
        return Response(status_code=204)

    async def _unsubscribe_removal(self, request: Request) -> Response:
        """A provider that cannot delete: the contact is unsubscribed, emptied and anonymised
        (its address stays, as the suppression the provider keeps)."""
        if self.caps.member_removal != "unsubscribe":
            return _error(405, "not an endpoint of this account")
        record = self.records.get(request.path_params["record_id"])
        if record is None:
            return _error(404, "no such contact")
        if record.status != "unsubscribed":
            record.status, record.changed_at = "unsubscribed", _now()
        record.fields, record.lists = {}, set()
        return JSONResponse(record.as_json())

    # --- pulls ----------------------------------------------------------------------------

    async def _statuses(self, request: Request) -> Response:
        """Every contact that is not active; ``since`` only where the shape can filter by time."""
        since = _parse(request.query_params.get("since"))
        if since is not None and self.caps.status_pull != "incremental":
            return _error(400, "since: not supported")
        rows = [r.as_json() for r in self.records.values()
                if r.status != "active" and (since is None or r.changed_at > since)]
        return JSONResponse({"results": rows, "now": _iso(_now())})

    async def _consents(self, request: Request) -> Response:
        if not self.caps.pulls_consents:
            return _error(404, "not an endpoint of this account")
        since = _parse(request.query_params.get("since"))
        rows = [c for c in self.consents if since is None or _parse(c["consent_date"]) > since]  # type: ignore[operator]
        return JSONResponse({"results": rows})

    async def _campaign_index(self, request: Request) -> Response:
        if not self.caps.has_campaign_reports:
            return _error(404, "not an endpoint of this account")
        return JSONResponse({"results": [{"id": c.id, "name": c.name, "sent_at": _iso(c.sent_at)}
                                         for c in self.campaigns.values()]})

    async def _campaign_results(self, request: Request) -> Response:
        campaign = self.campaigns.get(request.path_params["campaign_id"])
        if campaign is None or not self.caps.has_campaign_reports:
            return _error(404, "no such campaign")
        return JSONResponse({"results": [{"email": e, **r} for e, r in campaign.results.items()]})

    # --- the tenant's and the recipients' hands (tests) -----------------------------------

    def write_requests(self) -> int:
        return sum(1 for method, path, _ in self.request_log if method in WRITE_METHODS and path != AUTH_PATH)

    def reset_log(self) -> None:
        self.request_log.clear()

    def of_email(self, email: str) -> list[_Record]:
        wanted = normalize_email(email)
        return [r for r in self.records.values() if r.email == wanted]

    def set_status(self, email: str, status: str, list_id: str | None = None) -> None:
        records = [r for r in self.of_email(email) if list_id is None or r.list_id == list_id]
        if not records:
            raise KeyError(email)
        for record in records:
            record.status, record.changed_at = status, _now()

    def add_list(self, list_id: str, name: str) -> None:
        self.lists[list_id] = name

    def send_campaign(self, name: str) -> dict[str, dict[str, int]]:
        """A campaign to every active contact: every second one opens, every third clicks, every
        fifth bounces; returns email -> {rule: 1} as the truth of its report."""
        sent = _now()
        results: dict[str, dict[str, Any]] = {}
        truth: dict[str, dict[str, int]] = {}
        emails = sorted({r.email for r in self.records.values() if r.status == "active"})
        for n, email in enumerate(emails):
            row: dict[str, Any] = {"sent_at": _iso(sent)}
            rules = {"subscribers": 1}
            if n % 2 == 0:
                row["opened_at"], rules["opened"] = _iso(sent), 1
            if n % 3 == 0:
                row["clicked_at"], row["link"], rules["clicked"] = _iso(sent), "https://ornek.com.tr/", 1
            if n % 5 == 0:
                row["bounce"], rules["bounced"] = "hard", 1
            results[email], truth[email] = row, rules
        campaign = _Campaign(f"c{self._new_id()}", name, sent, results)
        self.campaigns[campaign.id] = campaign
        return truth


# --- the client ------------------------------------------------------------------------------


def _check(response: httpx.Response, what: str) -> None:
    """THE error table of the fake: status -> what the caller does."""
    status = response.status_code
    if status < 300:
        return
    reason = f"{what}: {describe(response)}"
    if status in (400, 409, 422):
        raise RejectedRow(reason, status_code=status, provider_code=str(status))
    if status in (401, 403):
        raise AuthenticationError(f"the fake refused access ({status})", status_code=status)
    if status == 404:
        raise ProviderError(reason, status_code=404, provider_code="404")
    raise FatalError(reason, status_code=status, provider_code=str(status))


def _as_reject(exc: ProviderError) -> RejectedRow:
    return exc if isinstance(exc, RejectedRow) else RejectedRow(
        f"{exc.message} (will retry)", status_code=exc.status_code, provider_code=exc.provider_code or "provider")


class TokenAuth(Auth):
    def __init__(self, username: str, password: str) -> None:
        self._login = {"username": username, "password": password}
        self._token: str | None = None

    async def headers(self, http: ProviderHTTP) -> Mapping[str, str]:
        if self._token is None:
            response = await http.request("POST", "auth", json=self._login, authenticated=False, idempotent=True)
            _check(response, "login")
            self._token = str(json_of(response, "login", required=("token",))["token"])
        return {"Authorization": f"Bearer {self._token}"}

    def invalidate(self) -> None:
        self._token = None


class FakeProvider:
    """What every shape has: a name, capabilities, the HTTP layer. The protocols come from the
    mixins below, one per capability protocol; each shape's class takes exactly its own."""

    shape: ClassVar[Shape]

    def __init__(self, http: ProviderHTTP, settings: Mapping[str, Any]) -> None:
        self.http = http
        self.name = self.shape.name
        self.capabilities = self.shape.capabilities
        self.settings = settings
        #: The status pull's position, for ``refresh_statuses`` (incremental shapes).
        self._pulled_until: dt.datetime | None = None
        #: (email, list, status) of every suppression seen, for ``refresh_statuses`` (full-scan shapes).
        self._seen: set[tuple[str, str, str]] = set()

    @classmethod
    def create(cls, http_factory: Callable[[Capabilities, Auth], ProviderHTTP], credentials: Mapping[str, str],
               settings: Mapping[str, Any], integrator: Mapping[str, str] | None = None) -> FakeProvider:
        return cls(http_factory(cls.shape.capabilities, TokenAuth(credentials["username"], credentials["password"])),
                   settings)

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return await self.http.request(method, path, **kwargs)

    async def _results(self, path: str, what: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        response = await self._call("GET", path, params=params)
        _check(response, what)
        return list(json_of(response, what, required=("results",))["results"])


class ListPushMixin(FakeProvider):
    async def find_lists(self, name: str) -> list[RemoteList]:
        return [found for found in await self.all_lists() if found.name == name]

    async def all_lists(self) -> list[RemoteList]:
        return [RemoteList(str(row["id"]), str(row["name"])) for row in await self._results("lists", "list index")]

    async def create_list(self, name: str) -> RemoteList:
        """A lost create may have made the list: look before posting again."""
        before = {found.remote_id for found in await self.find_lists(name)}
        for _ in range(CREATE_ATTEMPTS):
            try:
                response = await self._call("POST", "lists", json={"name": name})
            except AnswerLostError:
                made = [found for found in await self.find_lists(name) if found.remote_id not in before]
                if made:
                    return made[0]
                continue
            _check(response, f"create list {name!r}")
            body = json_of(response, "create list", required=("id",))
            return RemoteList(str(body["id"]), str(body["name"]))
        raise AnswerLostError(f"create list {name!r}: no answer after {CREATE_ATTEMPTS} attempts")

    async def rename_list(self, remote_id: str, name: str) -> None:
        _check(await self._call("PATCH", f"lists/{remote_id}", json={"name": name}), f"rename list {remote_id}")

    async def delete_list(self, remote_id: str) -> None:
        response = await self._call("DELETE", f"lists/{remote_id}")
        if response.status_code != 404:
            _check(response, f"delete list {remote_id}")


class MappedListsMixin(FakeProvider):
    def mapped_lists(self) -> Mapping[str, RemoteList]:
        """The connection's ``lists`` setting: CRM list id -> {"list_id", "name"}."""
        return {crm_list: RemoteList(str(entry["list_id"]), str(entry.get("name") or ""), {"list_id": entry["list_id"]})
                for crm_list, entry in (self.settings.get("lists") or {}).items()}


class MemberPushMixin(FakeProvider):
    def build_payload(self, member: MemberSnapshot) -> dict[str, Any]:
        if member.phone and not member.phone.isdigit():
            raise RejectedRow(f"phone {member.phone!r}: digits only", provider_code="phone")
        return {"email": normalize_email(member.email), "status": member.status,
                "fields": {"first_name": member.first_name or "", "last_name": member.last_name or "",
                           "phone": member.phone or "", "city": member.city or ""}}

    def _key(self, item: MemberUpsert | MemberDelete) -> str:
        return item.key.crm_member_id if self.capabilities.member_key == "crm_id" else normalize_email(item.email)

    def _base(self, remote_list: str | None) -> str:
        return "contacts" if remote_list is None else f"lists/{remote_list}/records"

    def _list_of(self, remote_lists: Sequence[str]) -> str | None:
        if self.capabilities.membership_model == "contact":
            return None
        assert len(remote_lists) == 1, remote_lists     # the engine sends one list per per-list record
        return remote_lists[0]

    async def _lookup(self, key: str, remote_list: str | None) -> dict[str, Any] | None:
        rows = await self._results(self._base(remote_list), "contact search", {"key": key})
        return rows[0] if rows else None

    async def upsert_members(self, batch: Sequence[MemberUpsert]) -> list[PushOutcome]:
        return [await self._upsert(item) for item in batch]

    async def _upsert(self, item: MemberUpsert) -> PushOutcome:
        remote_list = self._list_of(item.remote_lists)
        moved = remote_list is not None and remote_list not in item.previous_remote_lists
        try:
            if item.remote_id is None or moved:
                return await self._create(item, remote_list)
            outcome = await self._put(item, item.remote_id, remote_list)
            return outcome if outcome is not None else await self._create(item, remote_list)
        except FatalError:
            raise
        except ProviderError as exc:
            return PushOutcome(item.key, rejected=_as_reject(exc))

    def _body(self, item: MemberUpsert, remote_list: str | None) -> dict[str, Any]:
        lists = list(item.remote_lists) if remote_list is None else []
        return {"key": self._key(item), "email": item.payload["email"], "status": item.payload["status"],
                "fields": item.payload["fields"], "lists": lists}

    async def _create(self, item: MemberUpsert, remote_list: str | None) -> PushOutcome:
        """Create; an existing contact (ours from a lost answer, or the panel's) is read back and
        updated only as an update would be (never re-activated against its suppression)."""
        base_path = self._base(remote_list)
        existing: dict[str, Any] | None = None
        for _ in range(CREATE_ATTEMPTS):
            try:
                response = await self._call("POST", base_path, json=self._body(item, remote_list))
            except AnswerLostError:     # it may have been applied: look before posting again
                existing = await self._lookup(self._key(item), remote_list)
                if existing is None:
                    continue
                break
            if response.status_code != 409:
                _check(response, "create contact")
                return PushOutcome(item.key, remote_id=str(json_of(response, "create contact", required=("id",))["id"]))
            existing = await self._lookup(self._key(item), remote_list)
            break
        if existing is None:
            raise ProviderError(f"create contact: no answer after {CREATE_ATTEMPTS} attempts (will retry)")
        if remote_list is None:     # lists made in the panel stay; ours are added, those it leaves taken off
            kept = [x for x in existing["lists"] if x not in item.previous_remote_lists]
            item = replace(item, remote_lists=tuple(dict.fromkeys([*kept, *item.remote_lists])))
        outcome = await self._put(item, str(existing["id"]), remote_list)
        if outcome is None:
            raise ProviderError("the contact vanished while it was updated (will retry)")
        return outcome

    async def _put(self, item: MemberUpsert, remote_id: str, remote_list: str | None) -> PushOutcome | None:
        body = self._body(item, remote_list) | {"resubscribe": item.resubscribe}
        response = await self._call("PUT", f"{self._base(remote_list)}/{remote_id}", json=body)
        if response.status_code == 404:
            return None
        if response.status_code == 409:
            found = json_of(response, "update contact", required=("status",))
            return PushOutcome(item.key, remote_id=remote_id, suppressed=RemoteStatus(
                normalize_email(item.email), found["status"], _parse(found.get("changed_at")) or _now(),
                remote_id, remote_list or ""))
        _check(response, "update contact")
        return PushOutcome(item.key, remote_id=remote_id)

    async def delete_members(self, batch: Sequence[MemberDelete]) -> list[PushOutcome]:
        return [await self._remove(item) for item in batch]

    async def _remove(self, item: MemberDelete) -> PushOutcome:
        unsubscribe = self.capabilities.member_removal == "unsubscribe"
        remote_list = None if self.capabilities.membership_model == "contact" else (item.remote_lists or ("",))[0]
        try:
            remote_id = item.remote_id
            if remote_id is None:
                found = await self._lookup(self._key(item), remote_list)
                remote_id = None if found is None else str(found["id"])
            if remote_id is not None:
                response = await (self._call("POST", f"contacts/{remote_id}/unsubscribe") if unsubscribe
                                  else self._call("DELETE", f"{self._base(remote_list)}/{remote_id}"))
                if response.status_code != 404:
                    _check(response, "remove contact")
        except FatalError:
            raise
        except ProviderError as exc:
            return PushOutcome(item.key, rejected=_as_reject(exc))
        return PushOutcome(item.key, remote_id=remote_id, action="unsubscribed" if unsubscribe else "deleted")


class StatusPullMixin(FakeProvider):
    async def _statuses(self, since: dt.datetime | None) -> list[RemoteStatus]:
        params = {"since": since.isoformat()} if since is not None and \
            self.capabilities.status_pull == "incremental" else None
        rows = await self._results("statuses", "status pull", params)
        found = [RemoteStatus(row["email"], row["status"], _parse(row["changed_at"]) or _now(), str(row["id"]),
                              row["list"]) for row in rows]
        newest = max((s.occurred_at for s in found), default=since)
        if newest is not None and (self._pulled_until is None or newest > self._pulled_until):
            self._pulled_until = newest
        return found

    async def pull_statuses(self, since: dt.datetime | None) -> AsyncIterator[RemoteStatus]:
        for status in await self._statuses(since):
            self._seen.add((status.email, status.remote_list, status.status))
            yield status

    async def refresh_statuses(self, remote_lists: Sequence[str]) -> AsyncIterator[RemoteStatus]:
        """Incremental: what changed since the pull; full scan: the scan again, new rows only."""
        wanted = set(remote_lists)
        for status in await self._statuses(self._pulled_until):
            seen = (status.email, status.remote_list, status.status)
            if seen in self._seen or (status.remote_list and status.remote_list not in wanted):
                continue
            self._seen.add(seen)
            yield status


class ConsentPullMixin(FakeProvider):
    async def pull_consents(self, since: dt.datetime | None) -> AsyncIterator[RemoteConsent]:
        params = {"since": since.isoformat()} if since is not None else None
        for row in await self._results("consents", "consent pull", params):
            yield RemoteConsent(row["recipient"], row["channel"], row["recipient_type"], row["status"],
                                _parse(row["consent_date"]) or _now(), row.get("source"))


class ReportPullMixin(FakeProvider):
    async def pull_campaigns(self) -> AsyncIterator[RemoteCampaign]:
        for row in await self._results("campaigns", "campaign list"):
            sent = _parse(row["sent_at"])
            yield RemoteCampaign(str(row["id"]), row["name"], "sent", sent, sent, final=False)

    async def pull_campaign_results(self, campaign: RemoteCampaign,
                                    context: ReportContext) -> AsyncIterator[list[RecipientResult]]:
        rows = await self._results(f"campaigns/{campaign.remote_id}/results", "campaign results")
        yield [RecipientResult(row["email"], sent_at=_parse(row.get("sent_at")),
                                opened_at=_parse(row.get("opened_at")), open_count=1 if row.get("opened_at") else 0,
                                clicked_at=_parse(row.get("clicked_at")), clicked_link=row.get("link"),
                                bounce_type=row.get("bounce")) for row in rows]


class ContactProvider(ListPushMixin, MemberPushMixin, StatusPullMixin, ConsentPullMixin, ReportPullMixin):
    shape = CONTACT


class PerListProvider(MappedListsMixin, MemberPushMixin, StatusPullMixin):
    shape = PER_LIST


class KeyedProvider(ListPushMixin, MemberPushMixin, StatusPullMixin):
    shape = KEYED


class NoRemovalProvider(MappedListsMixin, MemberPushMixin, StatusPullMixin):
    shape = NO_REMOVAL


class PullOnlyProvider(StatusPullMixin):
    shape = PULL_ONLY


PROVIDER_CLASSES: dict[str, type[FakeProvider]] = {
    cls.shape.name: cls for cls in (ContactProvider, PerListProvider, KeyedProvider, NoRemovalProvider,
                                    PullOnlyProvider)}


def fake_spec(shape: Shape) -> specs.ProviderSpec:
    settings = {"lists": specs.SettingSpec({}, "mapping", help="CRM list id -> {list_id, name}")} \
        if shape.capabilities.lists == "mapped" else {}
    return specs.ProviderSpec(
        name=shape.name, title=f"contract fake ({shape.name})", default_base_url="http://contract.fake/api/",
        credentials=(specs.CredentialField("username", "user", secret=False), specs.CredentialField("password", "pw")),
        settings=settings)


def register(monkeypatch: pytest.MonkeyPatch, shape: Shape) -> None:
    """Make ``shape`` a provider the registry and the runner know, for one test only."""
    cls = PROVIDER_CLASSES[shape.name]
    monkeypatch.setitem(base.IMPLEMENTATIONS, shape.name, f"{__name__}:{cls.__name__}")
    monkeypatch.setitem(specs.PROVIDERS, shape.name, fake_spec(shape))


# --- the harnesses ---------------------------------------------------------------------------

#: Panel lists of the mapped shapes: CRM list -> remote list id (named as sync.sample names the CRM lists).
PANEL_LISTS: dict[str, str] = {f"L{n}": f"p{100 + n}" for n in range(1, 6)}


class ContractHarness(SandboxHarness):
    """The shared suite's view of the contract fake in one shape."""

    shape: ClassVar[Shape]
    name: ClassVar[str]
    credentials: ClassVar[dict[str, str]] = {"username": "acme-fake", "password": "Sahte-şifre-123"}
    base_url = "http://contract.fake/api/"

    def __init__(self) -> None:
        self.settings: dict[str, Any] = {}
        if self.shape.capabilities.lists == "mapped":
            self.settings = {"lists": {crm: {"list_id": remote, "name": LIST_NAMES[n]}
                                       for n, (crm, remote) in enumerate(sorted(PANEL_LISTS.items()))}}
        self._panel = itertools.count(900)

    def register(self, monkeypatch: pytest.MonkeyPatch) -> None:
        register(monkeypatch, self.shape)

    def start(self, faults: FaultPlan | None = None, clock: Any = None) -> None:
        self.sandbox = ContractService(self.shape, {self.credentials["username"]: self.credentials["password"]},
                                       faults)
        if self.shape.capabilities.lists == "mapped":
            for n, (_, remote) in enumerate(sorted(PANEL_LISTS.items())):
                self.sandbox.add_list(remote, LIST_NAMES[n])

    def members(self) -> dict[str, RemoteMember]:
        """Per-list: an address's records together, active only if every record is."""
        from tests.integration.providers.harness import RemoteMember  # harness.py imports this module
        lists: dict[str, set[str]] = {}
        statuses: dict[str, set[str]] = {}
        for record in self.sandbox.records.values():
            held = record.lists if record.list_id is None else {record.list_id}
            lists.setdefault(record.email, set()).update(self.sandbox.lists[x] for x in held if x in self.sandbox.lists)
            statuses.setdefault(record.email, set()).add(record.status)
        return {email: RemoteMember(email, "active" if statuses[email] == {"active"} else
                                    next(s for s in ("complaint", "unsubscribed", "hard_bounce", "soft_bounce")
                                         if s in statuses[email]), frozenset(names))
                for email, names in lists.items()}

    def list_statuses(self, email: str) -> dict[str, str]:
        """Per-list shapes: list name -> the status of the address's record in it."""
        return {self.sandbox.lists[r.list_id]: r.status for r in self.sandbox.of_email(email) if r.list_id}

    def list_names(self) -> set[str]:
        return set(self.sandbox.lists.values())

    def unsubscribe(self, email: str) -> None:
        self.sandbox.set_status(email, "unsubscribed")

    def unsubscribe_from_list(self, email: str, list_name: str) -> None:
        """A per-list unsubscribe: only the record in that list."""
        list_id = next(i for i, name in self.sandbox.lists.items() if name == list_name)
        self.sandbox.set_status(email, "unsubscribed", list_id)

    def complain(self, email: str) -> None:
        self.sandbox.set_status(email, "complaint")

    def soft_bounce(self, email: str) -> None:
        self.sandbox.set_status(email, "soft_bounce")

    def record_consent(self, email: str, status: str, when: dt.datetime) -> None:
        """The İYS integrator reports a consent state (EPOSTA, BIREYSEL)."""
        self.sandbox.consents.append({"recipient": normalize_email(email), "channel": "EPOSTA",
                                      "recipient_type": "BIREYSEL", "status": status, "consent_date": _iso(when),
                                      "source": "HS_WEB"})

    def used_bulk_import(self) -> bool:
        return False

    def contact_id(self, email: str) -> str | None:
        found = sorted(self.sandbox.of_email(email), key=lambda r: int(r.id))
        return found[0].id if found else None

    def create_list_at_provider(self, name: str) -> None:
        self.sandbox.add_list(f"p{next(self._panel)}", name)

    def delete_list_at_provider(self, name: str) -> None:
        self.sandbox.delete_list(next(i for i, title in self.sandbox.lists.items() if title == name))

    def forget_everything(self) -> None:
        self.start(self.sandbox.fault_plan)

    def send_campaign(self) -> dict[str, dict[str, int]]:
        return self.sandbox.send_campaign("Kasım kampanyası")


class ContactHarness(ContractHarness):
    shape = CONTACT
    name = CONTACT.name


class PerListHarness(ContractHarness):
    shape = PER_LIST
    name = PER_LIST.name


class KeyedHarness(ContractHarness):
    shape = KEYED
    name = KEYED.name


class NoRemovalHarness(ContractHarness):
    shape = NO_REMOVAL
    name = NO_REMOVAL.name


class PullOnlyHarness(ContractHarness):
    shape = PULL_ONLY
    name = PULL_ONLY.name


#: The push shapes, each running the whole shared suite.
PUSH_HARNESSES: list[type[ContractHarness]] = [ContactHarness, PerListHarness, KeyedHarness, NoRemovalHarness]
