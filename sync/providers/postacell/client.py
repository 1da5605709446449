"""Postacell: lists, subscribers (async bulk import), statuses, campaigns and CSV report exports.

Every path, lifetime and guess lives in :mod:`sync.providers.postacell.api`; this module
only speaks it. One contact holds a set of lists, so the engine hands over whole sets.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import csv
import datetime as dt
import io
import itertools
import json
import time
from collections import Counter, defaultdict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Any, ClassVar, TypeVar

import httpx
import structlog

from sync.emails import normalize_email
from sync.errors import AnswerLostError, AuthenticationError, FatalError, ProviderError, RejectedRow, RetriableError
from sync.http import Auth, ProviderHTTP, describe, json_of
from sync.logs import SECRETS
from sync.providers.base import (
    Capabilities,
    MemberDelete,
    MemberKey,
    MemberSnapshot,
    MemberUpsert,
    PushOutcome,
    RecipientResult,
    RemoteCampaign,
    RemoteList,
    RemoteStatus,
    ReportContext,
    refuse_bad_address,
    refuse_too_long,
)
from sync.providers.postacell import api

log = structlog.get_logger(__name__)
#: Recipient results given to the engine per page.
RESULT_PAGE = 1000
T = TypeVar("T")

CAPABILITIES = Capabilities(
    max_batch=api.BULK_MAX_SUBSCRIBERS, async_bulk_import=True, lists="create",
    supports_list_rename=True, supports_list_delete=True, supports_unsubscribe=True,
    member_removal="delete", member_key="email", has_campaign_reports=True, membership_model="contact",
    concurrency=4, rate_per_s=10.0, status_pull="full_scan", custom_fields=True,
    # 25 requests' worth of members between two checkpoints: grouped by exact list set, a first
    # sync then sends about 1.5 x the documented minimum of bulk imports (one per 1,000 members;
    # 1.2 x with windows of 50,000), where batches of 1,000 took one request per list each
    # (about 1.9 x, with 4 lists). The next window is planned while one is pushed (sync/engine/
    # push.py, _Pipeline), so two are in memory: two of 25,000 hold less than one of 50,000 did
    # with the planning after it (200,000 members, PostgreSQL, 30 ms, 10 requests/s: 86 s and
    # 232 MB peak, against 107 s and 261 MB; docs/performance.md).
    push_window=25 * api.BULK_MAX_SUBSCRIBERS,
)
#: Every API call asks for JSON: two endpoints refuse anything else (api.JSON_ONLY_PATHS).
ACCEPT_JSON: Mapping[str, str] = {"Accept": "application/json"}
#: Postacell subscriber status -> our suppression status.
PULLED_STATUSES: Mapping[str, str] = {
    "unsubscribed": "unsubscribed", "spam_complaint": "complaint",
    "hard_bounce": "hard_bounce", "soft_bounce": "soft_bounce",
}
#: Postacell statuses an update must not overwrite with ``active`` (unless the engine re-subscribes).
BLOCKING_REMOTE = frozenset({"unsubscribed", "hard_bounce", "spam_complaint"})
#: How long to wait for a bulk job or a report export before giving up until the next run.
JOB_TIMEOUT_S = 900.0
POLL_DELAYS_S = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0)
#: How many times a list create is posted when its answers are lost and the list is not there.
CREATE_ATTEMPTS = 3


def _check(response: httpx.Response, what: str) -> None:
    """THE error table of Postacell: status -> what the caller does (one place)."""
    status = response.status_code
    if status < 300:
        return
    reason = f"{what}: {describe(response)}"
    if status in (400, 409, 422):
        raise RejectedRow(reason, status_code=status, provider_code=str(status))
    if status in (401, 403):
        raise AuthenticationError(f"Postacell refused access ({status}): check the username/password "
                                  "and that the account has API rights", status_code=status)
    if status == 404:
        raise ProviderError(reason, status_code=404, provider_code="404")
    raise FatalError(reason, status_code=status, provider_code=str(status))


def _as_reject(exc: ProviderError) -> RejectedRow:
    """A provider error on ONE row, as that row's reject (retried by a later run)."""
    if isinstance(exc, RejectedRow):
        return exc
    return RejectedRow(f"{exc.message} (will retry)", status_code=exc.status_code,
                       provider_code=exc.provider_code or type(exc).__name__)


def parse_time(value: str | None) -> dt.datetime | None:
    """Postacell ISO 8601 (with or without ``Z``, naive means UTC)."""
    if not value:
        return None
    parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _jwt_expiry(token: str, fallback_lifetime: float, now: float) -> float:
    """The ``exp`` claim of a JWT (unverified: we only schedule refreshes with it)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, KeyError, ValueError, TypeError, binascii.Error):
        return now + fallback_lifetime


class PostacellAuth(Auth):
    """Access/refresh JWTs, refreshed before expiry; a new login when the refresh token is gone."""

    def __init__(self, username: str, password: str, clock: Callable[[], float] = time.time) -> None:
        self._login = {"email" if "@" in username else "username": username, "password": password}
        self._clock = clock
        self._access: str | None = None
        self._access_exp = 0.0
        self._refresh: str | None = None
        self._refresh_exp = 0.0
        self._lock = asyncio.Lock()

    async def headers(self, http: ProviderHTTP) -> Mapping[str, str]:
        async with self._lock:
            now = self._clock()
            if self._access is None or now >= self._access_exp - api.TOKEN_REFRESH_MARGIN_S:
                await self._renew(http, now)
            return {"Authorization": f"{api.AUTH_SCHEME} {self._access}"}

    def invalidate(self) -> None:
        self._access = None

    async def _renew(self, http: ProviderHTTP, now: float) -> None:
        if self._refresh is not None and now < self._refresh_exp - api.TOKEN_REFRESH_MARGIN_S:
            try:
                response = await http.request("POST", api.TOKEN_REFRESH_PATH, json={"refresh": self._refresh},
                                              authenticated=False, idempotent=True)
            except AuthenticationError:
                response = None
            if response is not None and response.status_code == 200:
                self._set_access(json_of(response, "Postacell token refresh", required=("access",))["access"], now)
                return
            self._refresh = None
        try:
            response = await http.request("POST", api.TOKEN_PATH, json=self._login, authenticated=False,
                                          idempotent=True)  # a second login only issues another token
        except AuthenticationError as exc:
            raise AuthenticationError("Postacell login failed (401): check the connection's username and "
                                      "password (`crm-esp-sync connection rotate`)", status_code=401) from exc
        if response.status_code != 200:
            raise AuthenticationError(f"Postacell login failed ({response.status_code}): {describe(response)}",
                                      status_code=response.status_code)
        body = json_of(response, "Postacell login", required=("access", "refresh"))
        self._set_access(body["access"], now)
        self._refresh = body["refresh"]
        SECRETS.register(self._refresh)
        self._refresh_exp = _jwt_expiry(body["refresh"], api.REFRESH_TOKEN_LIFETIME_S, now)

    def _set_access(self, token: str, now: float) -> None:
        SECRETS.register(token)
        self._access = token
        self._access_exp = _jwt_expiry(token, api.ACCESS_TOKEN_LIFETIME_S, now)


class PostacellProvider:
    """The Postacell side of a connection."""

    name: ClassVar[str] = "postacell"

    def __init__(self, http: ProviderHTTP, capabilities: Capabilities = CAPABILITIES,
                 sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        self.http = http
        self.capabilities = capabilities
        self._sleep = sleep
        #: normalised e-mail -> Postacell status, for every contact the service holds as not
        #: active: the last full status pull, kept current by ``refresh_statuses``.
        self._suppressed: dict[str, str] = {}
        #: remote list id -> counts of suppressed statuses when its suppressions were last read.
        self._list_counts: dict[str, dict[str, int]] = {}

    @classmethod
    def create(cls, http_factory: Callable[[Capabilities, Auth], ProviderHTTP], credentials: Mapping[str, str],
               settings: Mapping[str, Any], integrator: Mapping[str, str] | None = None) -> PostacellProvider:
        caps = replace(CAPABILITIES, concurrency=int(settings.get("concurrency", CAPABILITIES.concurrency)),
                       rate_per_s=float(settings.get("rate_per_s") or 0) or None)
        auth = PostacellAuth(credentials["username"], credentials["password"])
        return cls(http_factory(caps, auth), caps)

    async def _api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One API call, always with ``Accept: application/json``."""
        return await self.http.request(method, path, headers=ACCEPT_JSON, **kwargs)

    # --- paging ---------------------------------------------------------------------------

    async def _pages(self, path: str, params: Mapping[str, Any], what: str) -> AsyncIterator[dict[str, Any]]:
        url: str | None = path
        query: Mapping[str, Any] | None = params
        while url:
            response = await self._api("GET", url, params=query)
            _check(response, what)
            body = json_of(response, what, required=("results",))
            for row in body["results"]:
                yield row
            url, query = body.get("next"), None

    async def _page(self, path: str, params: Mapping[str, Any], what: str, page: int) -> dict[str, Any] | None:
        """Page ``page`` of a ``*-filter`` query (the documented ``page`` parameter; page 1 is asked
        without it, as the document's links show). None for a page past the end ("Invalid page.",
        404): the query shrank since its first page was read."""
        response = await self._api("GET", path, params={**params, "page": page} if page > 1 else params)
        if page > 1 and response.status_code == 404:
            return None
        _check(response, what)
        body: dict[str, Any] = json_of(response, what, required=("results",))
        return body

    async def _in_order(self, calls: Iterable[Callable[[], Awaitable[T]]]) -> AsyncGenerator[T, None]:
        """The answers of ``calls`` in their order, with up to ``capabilities.concurrency`` of them
        under way: the HTTP layer still holds every request to the connection's concurrency and
        rate (``rate_per_s``). Calls not yet answered are cancelled when the caller stops early."""
        window = max(1, self.capabilities.concurrency)
        pending: list[asyncio.Task[T]] = []
        upcoming = iter(calls)
        try:
            while True:
                while len(pending) < window and (call := next(upcoming, None)) is not None:
                    pending.append(asyncio.ensure_future(call()))
                if not pending:
                    return
                yield await pending.pop(0)
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _paged_queries(self, path: str, queries: Sequence[Mapping[str, Any]],
                             what: str) -> AsyncIterator[tuple[int, dict[str, Any]]]:
        """(query index, row) for every row of several queries of one ``*-filter`` endpoint, in
        order: query by query, page by page, as following the ``next`` links would give them.

        The pages are fetched concurrently. The document's paging is DRF page numbers: every answer
        carries ``count`` (the query's total) and takes ``page``. So the first pages of all queries
        go out together; a first page's ``count`` and row count give the query's last page, and its
        other pages are asked by number, a few at a time (``_in_order``). A query that grew meanwhile
        (its predicted last page still has a ``next``) is followed by its links from there; one that
        shrank ends at the first page without ``next``, or at "Invalid page."."""
        firsts = [body async for body in self._in_order(
            partial(self._page, path, query, what, 1) for query in queries)]
        ended: set[int] = set()

        def numbered(index: int, page: int) -> Callable[[], Awaitable[tuple[int, dict[str, Any] | None]]]:
            async def call() -> tuple[int, dict[str, Any] | None]:
                return index, await self._page(path, queries[index], what, page)
            return call

        def plan() -> Iterator[Callable[[], Awaitable[tuple[int, dict[str, Any] | None]]]]:
            for index, first in enumerate(firsts):
                size, count = len(first["results"]) if first else 0, first.get("count") if first else None
                if not first or not first.get("next") or not size or not isinstance(count, int):
                    continue
                for page in range(2, -(-count // size) + 1):
                    if index in ended:
                        break
                    yield numbered(index, page)

        pages = self._in_order(plan())
        try:
            ahead: tuple[int, dict[str, Any] | None] | None = None
            for index, first in enumerate(firsts):
                assert first is not None        # page 1 is never "Invalid page."
                for row in first["results"]:
                    yield index, row
                url = first.get("next")
                while True:
                    if ahead is None:
                        ahead = await anext(pages, None)
                    if ahead is None or ahead[0] != index:
                        break
                    body, ahead = ahead[1], None
                    if not url:
                        continue                # the query ended before this page: its rows are not ours
                    url = body.get("next") if body is not None else None
                    if not url:
                        ended.add(index)        # plan() asks no further page of it
                    for row in body["results"] if body is not None else ():
                        yield index, row
                ended.add(index)
                while url:                      # grown since its first page, or no count: by the links
                    response = await self._api("GET", url)
                    _check(response, what)
                    body = json_of(response, what, required=("results",))
                    for row in body["results"]:
                        yield index, row
                    url = body.get("next")
        finally:
            await pages.aclose()

    # --- lists ----------------------------------------------------------------------------

    async def find_lists(self, name: str) -> list[RemoteList]:
        """``list-filter`` has no documented filter, so every list is read and matched here."""
        return [found for found in await self.all_lists() if found.name == name]

    async def all_lists(self) -> list[RemoteList]:
        return [RemoteList(str(row["id"]), str(row["title"]))
                async for row in self._pages(api.LIST_FILTER_PATH, {"ordering": "create_date"}, "list index")]

    async def create_list(self, name: str) -> RemoteList:
        """``POST email/lists`` is not idempotent: a create whose answer was lost may have made
        the list. Before posting again we look for a list of that name that was not there before
        the first attempt (an older same-named list is someone else's), and take it if it is."""
        what = f"create list {name!r}"
        before = {found.remote_id for found in await self.find_lists(name)}
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            try:
                response = await self._api("POST", api.LIST_PATH, json={"title": name})
            except AnswerLostError as exc:
                made = [found for found in await self.find_lists(name) if found.remote_id not in before]
                if made:
                    log.info("list.create_answer_lost", list=name, remote_id=made[0].remote_id, found=True)
                    return made[0]
                log.info("list.create_answer_lost", list=name, found=False, attempt=attempt)
                if attempt == CREATE_ATTEMPTS:
                    raise AnswerLostError(f"{exc.message} ({what}, tried {attempt} times)",
                                          status_code=exc.status_code) from exc
                continue
            _check(response, what)
            body = json_of(response, what, required=("id",))
            return RemoteList(str(body["id"]), str(body.get("title") or name))
        raise AssertionError("unreachable")

    async def rename_list(self, remote_id: str, name: str) -> None:
        response = await self._api("PATCH", api.LIST_ITEM_PATH.format(id=remote_id), json={"title": name})
        _check(response, f"rename list {remote_id}")

    async def delete_list(self, remote_id: str) -> None:
        response = await self._api("DELETE", api.LIST_ITEM_PATH.format(id=remote_id))
        if response.status_code != 404:
            _check(response, f"delete list {remote_id}")

    # --- members --------------------------------------------------------------------------

    def build_payload(self, member: MemberSnapshot) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "email": normalize_email(member.email),
            "first_name": member.first_name or "",
            "last_name": member.last_name or "",
            "phone": member.phone or "",
            "status": "active" if member.status == "active" else "unsubscribed",
        }
        if member.fields:   # custom fields by id (GET email/fields), values as the document shows them: text
            payload["fields"] = [{"value": _field_text(value), "field": field_id}
                                 for field_id, value in sorted(member.fields.items())]
        check_subscriber(payload)
        return payload

    async def upsert_members(self, batch: Sequence[MemberUpsert]) -> list[PushOutcome]:
        """Create or update; never turn a contact the service holds as unsubscribed, bounced or
        complained back to active unless the engine says so (``item.resubscribe``).

        - A **create** (no remote id) goes through the bulk import with ``"update": false`` for its
          first list: a contact that already exists is left exactly as it is (api.py, "exists").
          Contacts that the job created ride in the requests of their other lists with
          ``"update": true`` (they are ours, made a moment ago). An "exists" row is read back
          (GET, its status and lists) and then updated only if its status allows it.
        - An **update** carries the status the service holds now (``self._suppressed``: the last
          status pull and the engine's ``refresh_statuses`` right before the batch), so a soft
          bounce stays a soft bounce and a suppressed contact is reported, not overwritten.
          Grown or unchanged list sets go through the bulk import (it ADDS lists); a shrunk set
          needs a PATCH (it REPLACES them).

        Requests are grouped whichever way needs fewer of them (``_run_bulk``): by exact list set
        (each member in ONE request carrying all its lists; the requests run concurrently, their
        jobs are polled concurrently) or, when a small batch has many distinct sets, one request
        per LIST (at most n requests for n lists instead of up to 2^n - 1; a member counts as
        pushed only when every request carrying it accepted it).
        """
        outcomes: list[PushOutcome] = []
        bulk: list[tuple[MemberUpsert, list[str]]] = []
        creates: list[MemberUpsert] = []
        patch: list[MemberUpsert] = []
        unconfirmed = [item for item in batch if item.remote_id is None and item.unconfirmed and item.remote_lists]
        if unconfirmed:
            creates += await self._recover(unconfirmed, bulk, outcomes)
        for item in batch:
            if item.remote_id is None and item.unconfirmed and item.remote_lists:
                continue        # looked up by _recover: confirmed, queued as an update, or a create
            if item.remote_id is None:
                creates.append(item)
                continue
            blocked = self._blocked(item)
            if blocked is not None:
                outcomes.append(blocked)
                continue
            shrinks = bool(set(item.previous_remote_lists) - set(item.remote_lists)) or not item.remote_lists
            if shrinks:
                patch.append(item)
            else:       # lists it does not have yet; an unchanged set still needs one request
                added = sorted(set(item.remote_lists) - set(item.previous_remote_lists))
                bulk.append((item, added or sorted(item.remote_lists)[:1]))
        patched = await asyncio.gather(*(self._patch(item) for item in patch))
        outcomes += [outcome for outcome in patched if outcome is not None]
        creates += [item for item, outcome in zip(patch, patched, strict=True) if outcome is None]  # gone: re-create
        existing = await self._run_bulk(creates, bulk, outcomes)
        outcomes += await asyncio.gather(*(self._update_existing(item, remote_id) for item, remote_id in existing))
        return outcomes

    # --- recovery: contacts an earlier run sent without our commit of the answer ----------------

    async def _recover(self, items: Sequence[MemberUpsert], bulk: list[tuple[MemberUpsert, list[str]]],
                       outcomes: list[PushOutcome]) -> list[MemberUpsert]:
        """Unconfirmed upserts (``MemberUpsert.unconfirmed``: a provisional link, the provider may hold
        the contact): find each one at the service (``_locate``), read back what it holds (``GET
        subscribers/<id>``, the only documented answer with names, phone, fields and lists) and
        compare it with what we would send (``_differs``).

        - The same: a confirmed outcome, nothing written.
        - Suppressed at the service (read just now) and we would make it active without the
          engine's re-subscribe: reported as suppressed, nothing written.
        - Different: appended to ``bulk`` as an update (the bulk import with ``"update": true``:
          it sets the fields and ADDS the lists it is missing; lists made in the panel stay).
        - Not found: returned, to be created (``"update": false`` never touches a contact that
          exists after all).
        """
        located = await self._locate(items)
        creates = [item for item in items if normalize_email(item.email) not in located]
        found = [(item, located[normalize_email(item.email)]) for item in items
                 if normalize_email(item.email) in located]

        def read(remote_id: str) -> Callable[[], Awaitable[httpx.Response]]:
            return partial(self._api, "GET", api.SUBSCRIBER_ITEM_PATH.format(id=remote_id))

        answers = self._in_order(read(remote_id) for _, remote_id in found)
        try:
            for unconfirmed, remote_id in found:
                response = await anext(answers)
                if response.status_code == 404:         # deleted since the lookup: create it
                    creates.append(unconfirmed)
                    continue
                try:
                    _check(response, "read subscriber")
                    current = json_of(response, "read subscriber", required=("id",))
                except FatalError:
                    raise
                except ProviderError as exc:
                    outcomes.append(PushOutcome(unconfirmed.key, rejected=_as_reject(exc)))
                    continue
                email = normalize_email(unconfirmed.email)
                status = str(current.get("status") or "active")
                if status in api.SUPPRESSED_STATUSES:
                    self._suppressed[email] = status
                else:
                    self._suppressed.pop(email, None)   # read just now: older knowledge is stale
                item = replace(unconfirmed, remote_id=remote_id)
                blocked = self._blocked(item, status)
                if blocked is not None:
                    outcomes.append(blocked)
                    continue
                held = {str(entry["id"] if isinstance(entry, dict) else entry) for entry in current.get("lists") or []}
                if (held & set(item.previous_remote_lists)) - set(item.remote_lists):
                    # It leaves a list it is in (its link's list went missing, and it left another):
                    # the bulk import only adds lists, so it is read and patched.
                    outcomes.append(await self._update_existing(item, remote_id))
                    continue
                if not self._differs(item, current, status, held):
                    outcomes.append(PushOutcome(item.key, remote_id=remote_id, confirmed=True))
                    continue
                missing = sorted(set(item.remote_lists) - held)
                bulk.append((item, missing or sorted(item.remote_lists)[:1]))
        finally:
            await answers.aclose()
        return creates

    async def _locate(self, items: Sequence[MemberUpsert]) -> dict[str, str]:
        """normalised e-mail -> subscriber id of the items the service holds, by the cheapest lookup
        the document offers (api.RECOVERY_LOOKUP): the ``subscribers-filter`` pages of the items'
        lists (``lists=<id>``, api.PAGE_SIZE rows a request) when their documented counters
        (``counter/list/<id>``, one request a list, asked only when there are more items than
        lists) say that takes fewer requests than one e-mail search (``email=<address>``, a
        "contains" match) per item; otherwise those searches (which also find a contact that is
        in none of our lists yet)."""
        wanted = {normalize_email(item.email) for item in items}
        lists = sorted({remote_list for item in items for remote_list in item.remote_lists})
        pages = 0
        if len(lists) < len(items):
            counters = self._in_order(partial(self._api, "GET", api.LIST_COUNTER_PATH.format(id=remote_list))
                                      for remote_list in lists)
            try:
                async for response in counters:
                    if response.status_code == 404:
                        continue        # the list is gone: nobody to find in it
                    _check(response, "list counter")
                    total = sum(int(row.get("count") or 0) for row in json_of(response, "list counter", shape=list))
                    pages += max(1, -(-total // api.PAGE_SIZE))
            finally:
                await counters.aclose()
        located: dict[str, str] = {}
        if lists and len(lists) < len(items) and pages < len(items):
            queries = [{"lists": remote_list} for remote_list in lists]
            async for _, row in self._paged_queries(api.SUBSCRIBERS_FILTER_PATH, queries, "subscriber lookup"):
                email = normalize_email(str(row.get("email") or ""))
                if email in wanted:
                    located[email] = str(row["id"])
            return located
        searches = self._in_order(partial(self._find_subscriber, item.email) for item in items)
        try:
            for item in items:
                remote_id = await anext(searches)
                if remote_id is not None:
                    located[normalize_email(item.email)] = remote_id
        finally:
            await searches.aclose()
        return located

    def _differs(self, item: MemberUpsert, current: Mapping[str, Any], status: str, held: set[str]) -> bool:
        """Would an update change what the service holds? Names and phone (an absent value is ""),
        the custom fields we send (others are the panel's), the status and our lists (lists only
        the service has stay: ``_update_existing`` adds ours to them the same way)."""
        for name in api.TEXT_LIMITS:
            if (item.payload.get(name) or "") != (current.get(name) or ""):
                return True
        values = {str(entry["field"]["id"] if isinstance(entry.get("field"), dict) else entry.get("field")):
                  _field_text(entry.get("value")) for entry in current.get("fields") or () if isinstance(entry, dict)}
        if any(values.get(str(entry["field"])) != entry["value"] for entry in item.payload.get("fields") or ()):
            return True
        wanted = self._status_to_send(item)
        # An opt-out the service holds (unsubscribed, hard bounced, complained) is never overwritten
        # by our "unsubscribed": it already says what we would say, and erasing its kind would lose it.
        if wanted != status and not (wanted == "unsubscribed" and status in api.OPT_OUT_STATUSES):
            return True
        return not set(item.remote_lists) <= held

    async def _run_bulk(self, creates: Sequence[MemberUpsert], updates: Sequence[tuple[MemberUpsert, list[str]]],
                        outcomes: list[PushOutcome]) -> list[tuple[MemberUpsert, str]]:
        """The batch's bulk requests, grouped by exact list set or by list (whichever takes fewer
        requests); returns the creates that found an existing contact."""
        for item in creates:
            if not item.remote_lists:
                outcomes.append(PushOutcome(item.key, rejected=RejectedRow(
                    "a Postacell import needs at least one list", provider_code="no_list")))
        creates = [item for item in creates if item.remote_lists]
        by_set: dict[tuple[str, ...], list[tuple[MemberUpsert, bool]]] = defaultdict(list)
        for item in creates:
            by_set[tuple(sorted(item.remote_lists))].append((item, False))
        for item, lists in updates:
            by_set[tuple(sorted(lists))].append((item, True))
        per_list: Counter[str] = Counter()
        for key, rows in by_set.items():
            for remote_list in key:
                per_list[remote_list] += len(rows)
        size = api.BULK_MAX_SUBSCRIBERS
        if sum(-(-len(rows) // size) for rows in by_set.values()) > sum(-(-n // size) for n in per_list.values()):
            return await self._run_bulk_per_list(creates, updates, outcomes)
        requests = [(list(key), rows[start:start + size]) for key, rows in sorted(by_set.items())
                    for start in range(0, len(rows), size)]
        # Concurrent, and each job polled while the others run; the connection's concurrency cap
        # and rate limit (sync/http.py) pace the requests, and this gate keeps the bodies being
        # built to as many as may be in flight (a window of 25 requests is 25,000 rows).
        gate = asyncio.Semaphore(self.capabilities.concurrency)

        async def one(lists: list[str], rows: Sequence[tuple[MemberUpsert, bool]]) -> list[tuple[PushOutcome, str]]:
            async with gate:
                return await self._bulk_import(lists, rows)

        answers = await asyncio.gather(*(one(lists, rows) for lists, rows in requests))
        existing: list[tuple[MemberUpsert, str]] = []
        for (_, rows), answer in zip(requests, answers, strict=True):
            for (item, update), (outcome, result) in zip(rows, answer, strict=True):
                if not update and outcome.rejected is None and result == "exists":
                    existing.append((item, str(outcome.remote_id)))
                elif outcome.rejected is not None:
                    outcomes.append(outcome)
                else:
                    outcomes.append(PushOutcome(item.key, remote_id=outcome.remote_id or item.remote_id))
        return existing

    async def _run_bulk_per_list(self, creates: Sequence[MemberUpsert],
                                 updates: Sequence[tuple[MemberUpsert, list[str]]],
                                 outcomes: list[PushOutcome]) -> list[tuple[MemberUpsert, str]]:
        """One bulk request per list, lists in order. A create rides in its first list's request
        with ``"update": false``; once that created it, it rides in its other lists' requests with
        ``"update": true``, beside the updates. Returns the creates that found an existing contact."""
        first = {item.key: sorted(item.remote_lists)[0] for item in creates if item.remote_lists}
        results: dict[MemberKey, list[PushOutcome]] = defaultdict(list)
        created: dict[MemberKey, MemberUpsert] = {}
        existing: list[tuple[MemberUpsert, str]] = []
        every_list = sorted({*first.values(), *(lst for item in creates for lst in item.remote_lists),
                             *(lst for _, lists in updates for lst in lists)})
        for remote_list in every_list:
            rows = [(item, False) for item in creates if first.get(item.key) == remote_list]
            rows += [(item, True) for item in created.values()
                     if remote_list in item.remote_lists and first[item.key] != remote_list]
            rows += [(item, True) for item, lists in updates if remote_list in lists]
            for start in range(0, len(rows), api.BULK_MAX_SUBSCRIBERS):
                for (item, update), (outcome, result) in zip(
                        rows[start:start + api.BULK_MAX_SUBSCRIBERS],
                        await self._bulk_import([remote_list], rows[start:start + api.BULK_MAX_SUBSCRIBERS]),
                        strict=True):
                    if not update and outcome.rejected is None and result == "exists":
                        existing.append((item, str(outcome.remote_id)))
                        continue
                    if not update and outcome.rejected is None:
                        created[item.key] = replace(item, remote_id=outcome.remote_id)
                    results[item.key].append(outcome)
        for item in [*(created.get(c.key, c) for c in creates if c.key in results), *(u for u, _ in updates)]:
            parts = results.pop(item.key, [])
            refused = next((part for part in parts if part.rejected is not None), None) if parts else \
                PushOutcome(item.key, rejected=RejectedRow("no bulk import carried this subscriber",
                                                            provider_code="not_sent"))
            outcomes.append(refused or PushOutcome(item.key, remote_id=next(
                (part.remote_id for part in parts if part.remote_id), item.remote_id)))
        return existing

    def _blocked(self, item: MemberUpsert, status: str | None = None) -> PushOutcome | None:
        """The outcome of an update that must not be written: the contact is suppressed at the
        service (now) and the engine did not decide to re-subscribe it."""
        current = status or self._suppressed.get(normalize_email(item.email))
        if item.payload.get("status") != "active" or item.resubscribe or current not in BLOCKING_REMOTE:
            return None
        return PushOutcome(item.key, remote_id=item.remote_id, suppressed=RemoteStatus(
            normalize_email(item.email), PULLED_STATUSES[current], dt.datetime.now(dt.UTC),  # type: ignore[arg-type]
            item.remote_id))

    def _status_to_send(self, item: MemberUpsert) -> str:
        """The ``status`` field of an update: what we decided, but a soft bounce the service set
        stays a soft bounce where we want the contact active (we do not own it), and our
        "unsubscribed" leaves an opt-out the service holds as it is (a complaint or a hard bounce
        is an opt-out of its own kind; a soft bounce is none: found by make fuzz
        FUZZ_SEED=20261209 FUZZ_EXAMPLES=15 FUZZ_STEPS=40 -k postacell-sqlite, where a member's RET
        left its soft-bounced contact receiving)."""
        wanted = str(item.payload.get("status"))
        current = self._suppressed.get(normalize_email(item.email))
        if wanted == "active" and current == "soft_bounce":
            return current
        return current if wanted == "unsubscribed" and current in api.OPT_OUT_STATUSES else wanted

    def _row(self, item: MemberUpsert, update: bool) -> dict[str, Any]:
        return dict(item.payload) | {"status": self._status_to_send(item), "update": update}

    async def _update_existing(self, item: MemberUpsert, remote_id: str) -> PushOutcome:
        """A create found the e-mail already at the service (a crash before our commit, or a
        contact made in the panel): read its status and lists, then update it unless suppressed.
        Lists made in the panel stay; ours are added, and those the member leaves
        (``previous_remote_lists`` not in ``remote_lists``) taken off."""
        try:
            response = await self._api("GET", api.SUBSCRIBER_ITEM_PATH.format(id=remote_id))
            _check(response, "read subscriber")
            current = json_of(response, "read subscriber", required=("id",))
            status = str(current.get("status") or "active")
            if status in api.SUPPRESSED_STATUSES:
                self._suppressed[normalize_email(item.email)] = status
            blocked = self._blocked(replace(item, remote_id=remote_id), status)
            if blocked is not None:
                return blocked
            lists = [str(entry["id"] if isinstance(entry, dict) else entry) for entry in current.get("lists") or []]
            lists = [x for x in lists if x not in item.previous_remote_lists or x in item.remote_lists]
            merged = replace(item, remote_id=remote_id, remote_lists=tuple(dict.fromkeys([*lists, *item.remote_lists])))
            outcome = await self._patch(merged)
        except FatalError:
            raise
        except ProviderError as exc:
            return PushOutcome(item.key, rejected=_as_reject(exc))
        return replace(outcome, remote_id=remote_id) if outcome is not None else PushOutcome(
            item.key, rejected=RejectedRow("the subscriber vanished while it was updated (will retry)",
                                           provider_code="vanished"))

    async def _patch(self, item: MemberUpsert) -> PushOutcome | None:
        """PATCH one subscriber; None when it no longer exists (the caller re-creates it).
        A provider error on this one row becomes its reject, never the whole batch's failure."""
        try:
            remote_id = item.remote_id or await self._find_subscriber(item.email)
            if remote_id is None:
                return None
            body = {k: v for k, v in item.payload.items() if k != "email"} | {
                "status": self._status_to_send(item), "lists": list(item.remote_lists)}
            response = await self._api("PATCH", api.SUBSCRIBER_ITEM_PATH.format(id=remote_id), json=body)
            if response.status_code == 404:
                return None
            _check(response, "update subscriber")
        except FatalError:
            raise
        except ProviderError as exc:
            return PushOutcome(item.key, rejected=_as_reject(exc))
        return PushOutcome(item.key, remote_id=remote_id)

    async def _find_subscriber(self, email: str) -> str | None:
        wanted = normalize_email(email)
        async for row in self._pages(api.SUBSCRIBERS_FILTER_PATH, {"email": email}, "subscriber search"):
            if normalize_email(row["email"]) == wanted:
                return str(row["id"])
        return None

    async def _bulk_import(self, lists: list[str], rows: Sequence[tuple[MemberUpsert, bool]]
                           ) -> list[tuple[PushOutcome, str]]:
        """One bulk request and its job; (outcome, job row result) per (item, update flag), in order."""
        items = [item for item, _ in rows]
        body = {"lists": lists, "subscribers": [self._row(item, update) for item, update in rows]}
        # idempotent: the import upserts by e-mail, so one sent twice (its answer lost) makes no duplicate
        response = await self._api("POST", api.BULK_IMPORT_PATH, json=body, idempotent=True)
        try:
            _check(response, "bulk import")
        except RejectedRow as exc:
            if len(items) == 1:
                return [(PushOutcome(items[0].key, rejected=exc), "error")]
            # The whole request was refused: halve it until the offending rows stand alone.
            half = len(rows) // 2
            return [*await self._bulk_import(lists, rows[:half]), *await self._bulk_import(lists, rows[half:])]
        job_id = json_of(response, "bulk import", required=("id",))["id"]
        job = await self._wait_for_job(job_id)
        if job["status"] == "failed":
            reason = RejectedRow(f"bulk job {job_id} failed: {job.get('detail') or 'no detail'}",
                                 provider_code="job_failed")
            return [(PushOutcome(item.key, rejected=reason), "error") for item in items]
        by_email = {normalize_email(str(row["email"])): row for row in job.get("results") or []}
        outcomes: list[tuple[PushOutcome, str]] = []
        for item in items:
            row = by_email.get(normalize_email(str(item.payload["email"])))
            if row is None:
                outcomes.append((PushOutcome(item.key, rejected=RejectedRow(
                    f"bulk job {job_id} did not report this subscriber", provider_code="job_missing_row")), "error"))
            elif row.get("result") == "error":
                outcomes.append((PushOutcome(item.key, rejected=RejectedRow(
                    str(row.get("detail") or "refused by Postacell"), provider_code="job_row_error")), "error"))
            else:
                outcomes.append((PushOutcome(item.key, remote_id=str(row["id"])), str(row.get("result"))))
        return outcomes

    async def _wait_for_job(self, job_id: object) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            response = await self._api("GET", api.BULK_JOB_PATH.format(id=job_id))
            _check(response, f"bulk job {job_id}")
            job: dict[str, Any] = json_of(response, f"bulk job {job_id}", required=("status",))
            return job if job["status"] in api.BULK_JOB_FINAL_STATES else None

        return await self._poll(probe, f"bulk job {job_id}")

    async def _poll(self, probe: Callable[[], Awaitable[T | None]], what: str) -> T:
        """Call ``probe`` with growing pauses until it has an answer, or give up (retriable)."""
        waited = 0.0
        for delay in itertools.chain(POLL_DELAYS_S, itertools.repeat(POLL_DELAYS_S[-1])):
            answer = await probe()
            if answer is not None:
                return answer
            if waited + delay > JOB_TIMEOUT_S:
                break
            await self._sleep(delay)
            waited += delay
        raise RetriableError(f"{what} not ready after {waited:.0f} s")

    async def delete_members(self, batch: Sequence[MemberDelete]) -> list[PushOutcome]:
        return list(await asyncio.gather(*(self._delete(item) for item in batch)))

    async def _delete(self, item: MemberDelete) -> PushOutcome:
        """Delete by stored id; if that id is gone, by e-mail (the contact may have been re-created)."""
        try:
            remote_id = item.remote_id or await self._find_subscriber(item.email)
            if remote_id is not None and await self._delete_id(remote_id) == 404 and item.remote_id is not None:
                current = await self._find_subscriber(item.email)
                if current is not None and current != remote_id:
                    await self._delete_id(current)
        except FatalError:
            raise
        except ProviderError as exc:
            return PushOutcome(item.key, rejected=_as_reject(exc))
        return PushOutcome(item.key, remote_id=remote_id)

    async def _delete_id(self, remote_id: str) -> int:
        response = await self._api("DELETE", api.SUBSCRIBER_ITEM_PATH.format(id=remote_id))
        if response.status_code != 404:
            _check(response, "delete subscriber")
        return response.status_code

    # --- pulls ----------------------------------------------------------------------------

    async def pull_statuses(self, since: dt.datetime | None) -> AsyncIterator[RemoteStatus]:
        """A full scan (capability ``status_pull="full_scan"``): every subscriber whose status is
        not active, through the documented ``status`` filter. The document offers no ordering by
        ``update_date``, so there is no safe place to stop early; ``since`` is ignored. The four
        status queries and their pages are fetched concurrently (``_paged_queries``), and the
        statuses come out in the order a page-by-page scan gives them."""
        seen: dict[str, str] = {}
        async for status in self._scan([{"status": remote_status} for remote_status in PULLED_STATUSES], seen):
            yield status
        self._suppressed = seen

    async def refresh_statuses(self, remote_lists: Sequence[str]) -> AsyncIterator[RemoteStatus]:
        """Before an update: the documented per-list counter (``counter/list/<id>``, one cheap
        request a list) tells whether a list's unsubscribed/bounced/complained counts moved since
        we last read them; only then are that list's suppressed subscribers read again. The counters
        are asked concurrently, and so are the pages of the lists that moved."""
        lists = sorted(set(remote_lists))

        def counter(remote_list: str) -> Callable[[], Awaitable[httpx.Response]]:
            return partial(self._api, "GET", api.LIST_COUNTER_PATH.format(id=remote_list))

        queries: list[dict[str, str]] = []
        responses = self._in_order(counter(remote_list) for remote_list in lists)
        try:
            for remote_list in lists:
                response = await anext(responses)
                if response.status_code == 404:
                    continue        # the list is gone; the engine's list check repairs the link
                _check(response, f"counter of list {remote_list}")
                counts = {str(row["_id"]): int(row["count"])
                          for row in json_of(response, f"counter of list {remote_list}", shape=list)
                          if str(row.get("_id")) in PULLED_STATUSES}
                if self._list_counts.get(remote_list) == counts:
                    continue
                self._list_counts[remote_list] = counts
                queries += [{"status": remote_status, "lists": remote_list} for remote_status in sorted(counts)]
        finally:
            await responses.aclose()
        async for status in self._scan(queries, self._suppressed):
            yield status

    async def _scan(self, queries: Sequence[Mapping[str, str]], into: dict[str, str]) -> AsyncIterator[RemoteStatus]:
        """The subscribers of ``queries`` (each with one ``status``) as statuses; ``into`` learns
        each e-mail's Postacell status."""
        async for index, row in self._paged_queries(api.SUBSCRIBERS_FILTER_PATH, queries, "status pull"):
            remote_status = queries[index]["status"]
            email = normalize_email(str(row["email"]))
            into[email] = remote_status
            changed = parse_time(row.get("update_date")) or dt.datetime.now(dt.UTC)
            yield RemoteStatus(email, PULLED_STATUSES[remote_status], changed,  # type: ignore[arg-type]
                               str(row["id"]))

    async def pull_campaigns(self) -> AsyncIterator[RemoteCampaign]:
        settle = dt.datetime.now(dt.UTC) - dt.timedelta(days=api.CAMPAIGN_SETTLE_DAYS)
        async for row in self._pages(api.CAMPAIGN_FILTER_PATH, {}, "campaign list"):
            updated = parse_time(row.get("updated_date"))
            sent = row.get("status") == api.CAMPAIGN_SENT_STATUS
            yield RemoteCampaign(
                remote_id=str(row["id"]), name=row.get("subject") or "", status=row.get("status") or "",
                sent_at=updated if sent else None, updated_at=updated,
                final=sent and updated is not None and updated < settle,
            )

    async def pull_campaign_results(self, campaign: RemoteCampaign,
                                    context: ReportContext) -> AsyncIterator[list[RecipientResult]]:
        """Request one export per rule, wait for the new files, download and merge them. The
        document gives one file per rule, so a recipient's row is complete only once every file is
        read: the merged campaign is held (one small record per recipient), then given in pages."""
        if campaign.status not in (api.CAMPAIGN_SENT_STATUS, "sending", "pause"):
            return
        merged = await self._merged_results(campaign)
        for start in range(0, len(merged), RESULT_PAGE):
            yield merged[start:start + RESULT_PAGE]

    async def _merged_results(self, campaign: RemoteCampaign) -> list[RecipientResult]:
        seen = {row["file"] async for row in self._exports(campaign.remote_id)}
        for rule in api.REPORT_RULES:
            response = await self._api("POST", api.REPORT_EXPORT_PATH, idempotent=True,  # a second export is
                                       json={"id": campaign.remote_id, "rule": rule})  # only another file
            _check(response, f"report export {rule}")
        files = await self._wait_for_exports(campaign.remote_id, seen)
        results: dict[str, RecipientResult] = {}
        for rule, url in files.items():
            response = await self.http.request("GET", url, authenticated=False)  # a public S3-style link
            _check(response, f"report file {rule}")
            merge_report_csv(results, rule, response.content)
        return list(results.values())

    async def _exports(self, campaign_id: str) -> AsyncIterator[dict[str, Any]]:
        params = {"cmp_id": campaign_id, "ordering": "-create_date"}
        async for row in self._pages(api.REPORT_EXPORT_FILTER_PATH, params, "report export list"):
            yield row

    async def _wait_for_exports(self, campaign_id: str, seen: set[str]) -> dict[str, str]:
        wanted = set(api.REPORT_RULES)

        async def probe() -> dict[str, str] | None:
            files = {row["rule"]: row["file"] async for row in self._exports(campaign_id)
                     if row["file"] not in seen and row["rule"] in wanted}
            return files if set(files) == wanted else None

        return await self._poll(probe, f"report exports of campaign {campaign_id}")


def check_subscriber(payload: Mapping[str, Any]) -> None:
    """RejectedRow (code "validation") for a subscriber Postacell's document does not allow or that
    is over our bounds (api.py, "field contents"): the reason names the field and the limit. Nothing
    is ever cut to fit."""
    refuse_bad_address(str(payload["email"]), "Postacell", utf8_local=api.ADDRESS_UTF8_LOCAL, idn=api.ADDRESS_IDN,
                       source=api.ADDRESS_SOURCE)
    for name, limit in api.TEXT_LIMITS.items():
        refuse_too_long(name, payload.get(name) or "", limit, "Postacell", api.LENGTH_SOURCE)
    for item in payload.get("fields") or ():
        refuse_too_long(f"custom field {item['field']}", item["value"], api.MAX_FIELD_VALUE_LENGTH, "Postacell",
                        api.LENGTH_SOURCE)


def _field_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def merge_report_csv(results: dict[str, RecipientResult], rule: str, content: bytes) -> int:
    """Fold one export file (columns per api.REPORT_CSV_COLUMNS) into per-recipient results."""
    reader = csv.DictReader(io.StringIO(content.decode("utf-8-sig")))
    missing = set(api.REPORT_CSV_COLUMNS[rule]) - set(reader.fieldnames or ())
    if missing:
        raise FatalError(f"report file {rule} lacks column(s) {', '.join(sorted(missing))}")
    count = 0
    for row in reader:
        email = normalize_email(row.get("email"))
        if not email:
            continue
        when = parse_time(row.get("date"))
        result = results.setdefault(email, RecipientResult(email))
        _apply(result, rule, row, when)
        count += 1
    return count


def _apply(result: RecipientResult, rule: str, row: Mapping[str, str], when: dt.datetime | None) -> None:
    if rule == "subscribers":
        result.sent_at = when
    elif rule == "opened":
        result.opened_at = when
        result.open_count = int(row.get("count") or 1)
    elif rule == "clicked":
        result.clicked_at, result.clicked_link = when, row.get("link") or None
    elif rule == "bounced":
        result.bounce_type = "hard" if (row.get("bounce_type") or "").upper() == "HARDBOUNCE" else "soft"
        result.bounce_reason = row.get("diagnostic_code") or None
    elif rule == "unsubscribed":
        result.unsubscribed_at = when
    elif rule == "complaint":
        result.complained_at = when

