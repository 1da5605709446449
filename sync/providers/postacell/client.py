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
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar, TypeVar

import httpx
import structlog

from sync.errors import AuthenticationError, FatalError, ProviderError, RejectedRow, RetriableError
from sync.http import Auth, ProviderHTTP, describe
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
)
from sync.providers.postacell import api

log = structlog.get_logger(__name__)
T = TypeVar("T")

CAPABILITIES = Capabilities(
    max_batch=api.BULK_MAX_SUBSCRIBERS, async_bulk_import=True, supports_list_create=True,
    supports_list_rename=True, supports_list_delete=True, supports_unsubscribe=True,
    supports_member_delete=True, has_campaign_reports=True, membership_model="contact",
    concurrency=4, rate_per_s=10.0,
)
#: Postacell subscriber status -> our suppression status.
PULLED_STATUSES: Mapping[str, str] = {
    "unsubscribed": "unsubscribed", "spam_complaint": "complaint",
    "hard_bounce": "hard_bounce", "soft_bounce": "soft_bounce",
}
#: How long to wait for a bulk job or a report export before giving up until the next run.
JOB_TIMEOUT_S = 900.0
POLL_DELAYS_S = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0)


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
                                              authenticated=False)
            except AuthenticationError:
                response = None
            if response is not None and response.status_code == 200:
                self._set_access(response.json()["access"], now)
                return
            self._refresh = None
        try:
            response = await http.request("POST", api.TOKEN_PATH, json=self._login, authenticated=False)
        except AuthenticationError as exc:
            raise AuthenticationError("Postacell login failed (401): check the connection's username and "
                                      "password (`crm-esp-sync connection rotate`)", status_code=401) from exc
        if response.status_code != 200:
            raise AuthenticationError(f"Postacell login failed ({response.status_code}): {describe(response)}",
                                      status_code=response.status_code)
        body = response.json()
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

    @classmethod
    def create(cls, http_factory: Callable[[Capabilities, Auth], ProviderHTTP], credentials: Mapping[str, str],
               settings: Mapping[str, Any], integrator: Mapping[str, str] | None = None) -> PostacellProvider:
        caps = replace(CAPABILITIES, concurrency=int(settings.get("concurrency", CAPABILITIES.concurrency)),
                       rate_per_s=float(settings.get("rate_per_s") or 0) or None)
        auth = PostacellAuth(credentials["username"], credentials["password"])
        return cls(http_factory(caps, auth), caps)

    # --- paging ---------------------------------------------------------------------------

    async def _pages(self, path: str, params: Mapping[str, Any], what: str) -> AsyncIterator[dict[str, Any]]:
        url: str | None = path
        query: Mapping[str, Any] | None = params
        while url:
            response = await self.http.request("GET", url, params=query)
            _check(response, what)
            body = response.json()
            for row in body["results"]:
                yield row
            url, query = body.get("next"), None

    # --- lists ----------------------------------------------------------------------------

    async def find_lists(self, name: str) -> list[RemoteList]:
        return [RemoteList(row["id"], row["title"])
                async for row in self._pages(api.LIST_FILTER_PATH, {"title": name}, "list search")
                if row["title"] == name]

    async def create_list(self, name: str) -> RemoteList:
        response = await self.http.request("POST", api.LIST_PATH, json={"title": name})
        _check(response, f"create list {name!r}")
        body = response.json()
        return RemoteList(body["id"], body["title"])

    async def rename_list(self, remote_id: str, name: str) -> None:
        response = await self.http.request("PATCH", api.LIST_ITEM_PATH.format(id=remote_id), json={"title": name})
        _check(response, f"rename list {remote_id}")

    async def delete_list(self, remote_id: str) -> None:
        response = await self.http.request("DELETE", api.LIST_ITEM_PATH.format(id=remote_id))
        if response.status_code != 404:
            _check(response, f"delete list {remote_id}")

    # --- members --------------------------------------------------------------------------

    def build_payload(self, member: MemberSnapshot) -> dict[str, Any]:
        return {
            "email": member.email.strip().lower(),
            "first_name": member.first_name or "",
            "last_name": member.last_name or "",
            "phone": member.phone or "",
            "status": "active" if member.status == "active" else "unsubscribed",
        }

    async def upsert_members(self, batch: Sequence[MemberUpsert]) -> list[PushOutcome]:
        """Grown or new list sets go through the bulk import (it ADDS lists); a shrunk set needs
        a PATCH (it REPLACES them), see api.py.

        One bulk request per LIST, not per distinct list set: a member joining lists A and B rides
        in A's request and in B's. With n lists that is at most n requests per batch instead of up
        to 2^n - 1, and a member counts as pushed only when every request carrying it accepted it.
        """
        bulk: list[tuple[MemberUpsert, list[str]]] = []
        patch: list[MemberUpsert] = []
        for item in batch:
            shrinks = bool(set(item.previous_remote_lists) - set(item.remote_lists)) or not item.remote_lists
            if shrinks:
                patch.append(item)
            else:       # lists it does not have yet; an unchanged set still needs one request
                added = sorted(set(item.remote_lists) - set(item.previous_remote_lists))
                bulk.append((item, added or sorted(item.remote_lists)[:1]))
        patched = await asyncio.gather(*(self._patch(item) for item in patch))
        outcomes = [outcome for outcome in patched if outcome is not None]
        bulk += [(item, sorted(item.remote_lists)) for item, outcome in zip(patch, patched, strict=True)
                 if outcome is None and item.remote_lists]        # gone at Postacell: create it again
        by_list: dict[str, list[MemberUpsert]] = defaultdict(list)
        for item, lists in bulk:
            for remote_list in lists:
                by_list[remote_list].append(item)
        results: dict[MemberKey, list[PushOutcome]] = defaultdict(list)
        for remote_list, items in sorted(by_list.items()):
            for start in range(0, len(items), api.BULK_MAX_SUBSCRIBERS):
                for outcome in await self._bulk_import([remote_list], items[start:start + api.BULK_MAX_SUBSCRIBERS]):
                    results[outcome.key].append(outcome)
        for item, _ in bulk:
            parts = results.pop(item.key, [])
            refused = next((part for part in parts if part.rejected is not None), None) if parts else \
                PushOutcome(item.key, rejected=RejectedRow("no bulk import carried this subscriber",
                                                            provider_code="not_sent"))
            outcomes.append(refused or PushOutcome(item.key, remote_id=next(
                (part.remote_id for part in parts if part.remote_id), None)))
        return outcomes

    async def _patch(self, item: MemberUpsert) -> PushOutcome | None:
        """PATCH one subscriber; None when it no longer exists (the caller re-creates it).
        A provider error on this one row becomes its reject, never the whole batch's failure."""
        try:
            remote_id = item.remote_id or await self._find_subscriber(item.email)
            if remote_id is None:
                return None
            body = {k: v for k, v in item.payload.items() if k != "email"} | {"lists": list(item.remote_lists)}
            response = await self.http.request("PATCH", api.SUBSCRIBER_ITEM_PATH.format(id=remote_id), json=body)
            if response.status_code == 404:
                return None
            _check(response, "update subscriber")
        except FatalError:
            raise
        except ProviderError as exc:
            return PushOutcome(item.key, rejected=_as_reject(exc))
        return PushOutcome(item.key, remote_id=remote_id)

    async def _find_subscriber(self, email: str) -> str | None:
        async for row in self._pages(api.SUBSCRIBERS_FILTER_PATH, {"email": email}, "subscriber search"):
            if row["email"].lower() == email.lower():
                return str(row["id"])
        return None

    async def _bulk_import(self, lists: list[str], items: Sequence[MemberUpsert]) -> list[PushOutcome]:
        body = {"lists": lists, "subscribers": [dict(item.payload) | {"update": True} for item in items]}
        response = await self.http.request("POST", api.BULK_IMPORT_PATH, json=body)
        try:
            _check(response, "bulk import")
        except RejectedRow as exc:
            if len(items) == 1:
                return [PushOutcome(items[0].key, rejected=exc)]
            # The whole request was refused: halve it until the offending rows stand alone.
            half = len(items) // 2
            return [*await self._bulk_import(lists, items[:half]), *await self._bulk_import(lists, items[half:])]
        job_id = response.json()["id"]
        job = await self._wait_for_job(job_id)
        if job["status"] == "failed":
            reason = RejectedRow(f"bulk job {job_id} failed: {job.get('detail') or 'no detail'}",
                                 provider_code="job_failed")
            return [PushOutcome(item.key, rejected=reason) for item in items]
        by_email = {str(row["email"]).lower(): row for row in job.get("results") or []}
        outcomes = []
        for item in items:
            row = by_email.get(str(item.payload["email"]))
            if row is None:
                outcomes.append(PushOutcome(item.key, rejected=RejectedRow(
                    f"bulk job {job_id} did not report this subscriber", provider_code="job_missing_row")))
            elif row.get("result") == "error":
                outcomes.append(PushOutcome(item.key, rejected=RejectedRow(
                    str(row.get("detail") or "refused by Postacell"), provider_code="job_row_error")))
            else:
                outcomes.append(PushOutcome(item.key, remote_id=str(row["id"])))
        return outcomes

    async def _wait_for_job(self, job_id: object) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            response = await self.http.request("GET", api.BULK_JOB_PATH.format(id=job_id))
            _check(response, f"bulk job {job_id}")
            job: dict[str, Any] = response.json()
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
        response = await self.http.request("DELETE", api.SUBSCRIBER_ITEM_PATH.format(id=remote_id))
        if response.status_code != 404:
            _check(response, "delete subscriber")
        return response.status_code

    # --- pulls ----------------------------------------------------------------------------

    async def pull_statuses(self, since: dt.datetime | None) -> AsyncIterator[RemoteStatus]:
        for remote_status, status in PULLED_STATUSES.items():
            params = {"status": remote_status, "ordering": "-update_date"}
            descending, previous, seen = True, None, 0
            async for row in self._pages(api.SUBSCRIBERS_FILTER_PATH, params, "status pull"):
                changed = parse_time(row.get("update_date")) or dt.datetime.now(dt.UTC)
                # Stop at the watermark only once the ASSUMED ordering is visibly honoured (two rows
                # or more, all descending); a service that ignores it gets a full scan instead of
                # silently missed rows.
                descending = descending and (previous is None or changed <= previous)
                previous, seen = changed, seen + 1
                if since is not None and changed <= since:
                    if descending and seen > 1:
                        break
                    continue
                yield RemoteStatus(str(row["email"]).strip().lower(), status,  # type: ignore[arg-type]
                                   changed, str(row["id"]))

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

    async def pull_campaign_results(self, campaign: RemoteCampaign) -> list[RecipientResult]:
        """Request one export per rule, wait for the new files, download and merge them."""
        if campaign.status not in (api.CAMPAIGN_SENT_STATUS, "sending", "pause"):
            return []
        seen = {row["file"] async for row in self._exports(campaign.remote_id)}
        for rule in api.REPORT_RULES:
            response = await self.http.request("POST", api.REPORT_EXPORT_PATH,
                                               json={"id": campaign.remote_id, "rule": rule})
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


def merge_report_csv(results: dict[str, RecipientResult], rule: str, content: bytes) -> int:
    """Fold one export file (columns per api.REPORT_CSV_COLUMNS) into per-recipient results."""
    reader = csv.DictReader(io.StringIO(content.decode("utf-8-sig")))
    missing = set(api.REPORT_CSV_COLUMNS[rule]) - set(reader.fieldnames or ())
    if missing:
        raise FatalError(f"report file {rule} lacks column(s) {', '.join(sorted(missing))}")
    count = 0
    for row in reader:
        email = (row.get("email") or "").strip().lower()
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

