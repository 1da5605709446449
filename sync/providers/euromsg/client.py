"""Euromsg Express (Related Digital) CRM/ERP gateway: lists, member cards with İYS fields,
statuses and İYS consents (a nightly full scan), campaigns and per-recipient reports.

Every path, shape and guess lives in :mod:`sync.providers.euromsg.api`; this module only speaks
it. The integrator's clientName/password give a token; each connection takes its OWN token and
identifies it with its tenant's API key, so one tenant's key never touches another's data.
One member card holds a set of lists (the contact model, see api.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

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
)
from sync.http import Auth, ProviderHTTP, json_of
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
)
from sync.providers.euromsg import api

log = structlog.get_logger(__name__)
#: Recipient results given to the engine per page.
RESULT_PAGE = 1000

CAPABILITIES = Capabilities(
    max_batch=api.MAX_BATCH, async_bulk_import=False, lists="create", supports_list_rename=True,
    supports_list_delete=True, pushes_members=True, supports_unsubscribe=True, member_removal="delete",
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


@dataclass(frozen=True)
class ErrorRule:
    """What one provider error code means for the caller, and what to tell a person."""

    error: type[ProviderError]
    hint: str = ""


#: THE error table of Euromsg: the gateway's own codes first (they come inside HTTP 200 answers
#: too), then the HTTP status for anything without a known code.
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


def _envelope(response: httpx.Response, what: str) -> dict[str, Any]:
    body = json_of(response, what, required=("isSuccess",)) if response.status_code < 300 else None
    if body is not None:
        return body  # type: ignore[no-any-return]
    try:
        parsed = response.json()
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {}


def check(response: httpx.Response, what: str) -> Any:
    """The ``data`` of a successful answer, or the error the table says (HTTP 200 included)."""
    status = response.status_code
    body = _envelope(response, what)
    if status < 300 and body.get("isSuccess") is True:
        return body.get("data")
    code = str(body.get("errorCode") or "") or None
    message = " ".join(str(body.get("message") or response.reason_phrase or f"HTTP {status}").split())[:200]
    rule = ERROR_CODES.get(code or "")
    if rule is not None:
        error = rule.error
        text = f"{what}: {rule.hint + ': ' if rule.hint and error is not RejectedRow else ''}{message} ({code})"
        if rule.hint == "İYS":
            text = f"{what}: İYS: {message} ({code})"
    else:
        error = STATUS_ERRORS.get(status, RetriableError if status >= 500 else (
            RejectedRow if status < 300 else FatalError))
        text = f"{what}: {message} ({code or f'HTTP {status}'})"
    if error is RejectedRow:
        raise RejectedRow(text, status_code=status, provider_code=code or str(status))
    if error is RetriableError:
        raise RetriableError(text, status_code=status, provider_code=code)
    raise error(text, status_code=status, provider_code=code or str(status))


def _as_reject(exc: ProviderError) -> RejectedRow:
    """A provider error on ONE row, as that row's reject (retried by a later run)."""
    if isinstance(exc, RejectedRow):
        return exc
    return RejectedRow(f"{exc.message} (will retry)", status_code=exc.status_code,
                       provider_code=exc.provider_code or type(exc).__name__)


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
    unsubscribe is never lost to a rounding)."""
    when = parse_time(row.get("statusDate")) or parse_time(row.get("updateDate"))
    if when is None:
        return dt.datetime.now(dt.UTC)
    return when + dt.timedelta(microseconds=999_999) if when.microsecond == 0 else when


def turkey_text(value: dt.datetime) -> str:
    """A datetime (naive = UTC, as the CRM's are) as api.DATE_FORMAT in Turkey's time."""
    aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return aware.astimezone(api.TURKEY).strftime(api.DATE_FORMAT)


def iys_fields(member: MemberSnapshot, now: dt.datetime) -> dict[str, str]:
    """The İYS fields of a member, checked by the İYS registry's rules; RejectedRow says why not."""
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
    fields = {api.IYS_RECIPIENT_TYPE: recipient_type, api.IYS_STATUS: status}
    individual = recipient_type == "BIREYSEL"
    if member.consent_date is None:
        if individual:
            raise refuse("consent date is missing (required for BIREYSEL)")
    else:
        when = turkey_text(member.consent_date)
        local = dt.datetime.strptime(when, api.DATE_FORMAT)
        if local < api.IYS_EARLIEST:
            raise refuse(f"consent date {when} is before 2015-05-01 00:00:00 (older consents are HS_2015 "
                         "dated 2015-05-01 00:00:00)")
        if local > dt.datetime.strptime(turkey_text(now), api.DATE_FORMAT):
            raise refuse(f"consent date {when} (Turkey time) is in the future")
        if source == api.IYS_2015_SOURCE and local != api.IYS_EARLIEST:
            raise refuse(f"source HS_2015 needs the date 2015-05-01 00:00:00, not {when}")
        fields[api.IYS_DATE] = when
    if not source:
        if individual:
            raise refuse("consent source is missing (required for BIREYSEL, e.g. HS_WEB)")
    elif source not in api.IYS_SOURCES:
        raise refuse(f"consent source {member.consent_source!r} is not an İYS source "
                     f"({', '.join(api.IYS_SOURCES)})")
    else:
        if source == api.IYS_2015_SOURCE and member.consent_date is None:
            raise refuse("source HS_2015 needs the date 2015-05-01 00:00:00")
        fields[api.IYS_SOURCE] = source
    return fields


class EuromsgAuth(Auth):
    """The integrator's token for ONE tenant: logged in with clientName/password, identified with
    that tenant's API key, renewed before ``expireTime`` and once on a 401."""

    def __init__(self, integrator: Mapping[str, str] | None, api_key: str,
                 clock: Callable[[], float] = time.time) -> None:
        self._login = None if integrator is None else {"clientName": integrator["client_name"],
                                                       "password": integrator["password"]}
        self._api_key = api_key
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
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
        now = self._clock()
        try:   # a second login only issues another token: safe to repeat
            response = await http.request("POST", api.TOKEN_PATH, json=self._login, authenticated=False,
                                          idempotent=True)
        except AuthenticationError as exc:
            raise AuthenticationError("Euromsg login failed (401): check the integrator's client_name/password "
                                      "(`crm-esp-sync integrator set euromsg`)", status_code=401,
                                      provider_code=api.ERROR_INVALID_CREDENTIALS) from exc
        if response.status_code != 200:
            check(response, "Euromsg login")
            raise AuthenticationError(f"Euromsg login failed (HTTP {response.status_code})",
                                      status_code=response.status_code)
        body = json_of(response, "Euromsg login", required=("tokenValue", "expireTime"))
        token = str(body["tokenValue"])
        SECRETS.register(token)
        expires = parse_time(body["expireTime"])
        if expires is None:
            log.warning("euromsg.token_expiry_unreadable", assumed_lifetime_s=api.TOKEN_LIFETIME_S)
        self._expires_at = expires.timestamp() if expires else now + api.TOKEN_LIFETIME_S
        response = await http.request("PUT", api.IDENTIFICATION_PATH, params={api.API_KEY_PARAM: self._api_key},
                                      headers={"Authorization": f"{api.AUTH_SCHEME} {token}"},
                                      authenticated=False)
        check(response, "Euromsg API key identification")
        self._token = token


class EuromsgProvider:
    """The Euromsg side of a connection (one tenant)."""

    name: ClassVar[str] = "euromsg"

    def __init__(self, http: ProviderHTTP, capabilities: Capabilities = CAPABILITIES, *, iys: bool = False,
                 now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self.http = http
        self.capabilities = capabilities
        self.iys = iys
        self._now = now
        #: Set once the account refused a member write for want of a sending package: the rest of
        #: the run stops at once instead of asking again for every member.
        self._no_package: FatalError | None = None
        #: The last full scan's member rows (e-mail -> row), shared by the status and consent pulls.
        self._scan: dict[str, dict[str, Any]] | None = None
        #: Members in work at once. Each takes two or three sequential requests; without this cap a
        #: whole batch would wait in ProviderHTTP's queue holding one token, which may expire for all.
        self._slots = asyncio.Semaphore(max(1, capabilities.concurrency))

    @classmethod
    def create(cls, http_factory: Callable[[Capabilities, Auth], ProviderHTTP], credentials: Mapping[str, str],
               settings: Mapping[str, Any], integrator: Mapping[str, str] | None = None) -> EuromsgProvider:
        """Missing integrator credentials are reported at the first call, not here: the engine reads
        capabilities without any credentials."""
        iys = bool(settings.get("iys", False))
        caps = replace(CAPABILITIES, pulls_consents=iys)
        auth = EuromsgAuth(integrator, credentials.get("api_key", ""))
        return cls(http_factory(caps, auth), caps, iys=iys)

    async def _call(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        return check(await self.http.request(method, path, **kwargs), what)

    async def _pages(self, path: str, params: Mapping[str, Any], what: str) -> AsyncIterator[dict[str, Any]]:
        page = 1
        while True:
            data = await self._call("GET", path, what, params={**params, api.PAGE_PARAM: page,
                                                               api.PAGE_SIZE_PARAM: api.MAX_PAGE_SIZE})
            if not isinstance(data, dict) or not isinstance(data.get("items"), list):
                raise MalformedAnswerError(f"{what}: the answer has no page of items")
            for row in data["items"]:
                yield row
            total = int(data.get("totalCount") or 0)
            if not data["items"] or page * api.MAX_PAGE_SIZE >= total:
                return
            page += 1

    # --- account ------------------------------------------------------------------------

    async def health_check(self) -> bool:
        """The gateway's health check (no auth): True when it answers "Healthy"."""
        response = await self.http.request("GET", api.HEALTH_PATH, authenticated=False)
        return response.status_code == 200 and response.text.strip() == api.HEALTHY

    async def account(self) -> dict[str, Any]:
        """The tenant's account (logs in and identifies the key: a full credentials test)."""
        data = await self._call("GET", api.ACCOUNT_PATH, "account")
        if not isinstance(data, dict):
            raise MalformedAnswerError("account: the answer has no account")
        return data

    # --- lists ----------------------------------------------------------------------------

    async def all_lists(self) -> list[RemoteList]:
        return [RemoteList(str(row["id"]), str(row.get("name") or ""))
                async for row in self._pages(api.EMAIL_LIST_PATH, {}, "list index")]

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
                data = await self._call("POST", api.EMAIL_LIST_PATH, what, json={"name": name})
            except AnswerLostError as exc:
                made = [found for found in await self.find_lists(name) if found.remote_id not in before]
                if made:
                    log.info("list.create_answer_lost", list=name, remote_id=made[0].remote_id, found=True)
                    return made[0]
                if attempt == CREATE_ATTEMPTS:
                    raise AnswerLostError(f"{exc.message} ({what}, tried {attempt} times)",
                                          status_code=exc.status_code) from exc
                continue
            if not isinstance(data, dict) or data.get("id") is None:
                raise MalformedAnswerError(f"{what}: the answer has no list id")
            return RemoteList(str(data["id"]), str(data.get("name") or name))
        raise AssertionError("unreachable")

    async def rename_list(self, remote_id: str, name: str) -> None:
        await self._call("PATCH", api.EMAIL_LIST_ITEM_PATH.format(id=remote_id), f"rename list {remote_id}",
                         json={"name": name})

    async def delete_list(self, remote_id: str) -> None:
        """Documented: the members stay at the provider. A list already gone is fine."""
        try:
            await self._call("DELETE", api.EMAIL_LIST_ITEM_PATH.format(id=remote_id), f"delete list {remote_id}")
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
        if self.iys:
            payload.update(iys_fields(member, self._now()))
        return payload

    async def upsert_members(self, batch: Sequence[MemberUpsert]) -> list[PushOutcome]:
        """Create or update each member card; never turn a card the service holds as unsubscribed,
        bounced or complained back to Active unless the engine says so (``item.resubscribe``).

        - A **create** posts the card with its first list; an e-mail that already has a card is
          refused by the service untouched (api.py), then read and updated like any other.
        - An **update** reads the card by e-mail right before the PATCH (the document offers no
          "do not resubscribe" switch, and an unsubscribe shows at the provider at once), so a
          suppression made a moment ago is reported as ``suppressed`` and nothing is written. A soft
          bounce stays the service's. Lists made in the panel stay on the card.
        """
        return list(await asyncio.gather(*(self._upsert(item) for item in batch)))

    async def _upsert(self, item: MemberUpsert) -> PushOutcome:
        async with self._slots:
            return await _again_after_401(lambda: self._upsert_one(item))

    async def _upsert_one(self, item: MemberUpsert) -> PushOutcome:
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
        except ProviderError as exc:
            return PushOutcome(item.key, rejected=_as_reject(exc))

    def _fields(self, item: MemberUpsert) -> dict[str, Any]:
        return {key: value for key, value in item.payload.items() if key != "email"}

    async def _create(self, item: MemberUpsert) -> PushOutcome:
        if not item.remote_lists:
            return PushOutcome(item.key, rejected=RejectedRow("no list to add the member to", provider_code="no_list"))
        body = {"emailListId": int(item.remote_lists[0]), "email": item.payload["email"], **self._fields(item)}
        try:   # idempotent: a second post of the same e-mail is refused as existing, never duplicated
            data = await self._call("POST", api.MEMBER_PATH, "add member", json=body, idempotent=True)
        except RejectedRow as exc:
            if exc.provider_code != api.ERROR_MEMBER_EXISTS:
                raise
            current = await self._find(item.email)
            if current is None:
                raise RejectedRow("the member exists at Euromsg but cannot be found by e-mail (will retry)",
                                  provider_code="vanished") from exc
            return await self._update(item, current)
        member_id = _member_id(data, "add member")
        if len(item.remote_lists) > 1:
            await self._call("PATCH", api.MEMBER_ITEM_PATH.format(id=member_id), "add member to its lists",
                             json={"emailListIds": [int(x) for x in item.remote_lists]})
        return PushOutcome(item.key, remote_id=member_id)

    async def _update(self, item: MemberUpsert, current: Mapping[str, Any]) -> PushOutcome:
        member_id = _member_id(current, "read member")
        status = str(current.get("status") or "Active")
        wanted = str(item.payload.get("status") or "Active")
        if wanted == "Active" and status in api.SUPPRESSED_STATUSES and not item.resubscribe:
            return PushOutcome(item.key, remote_id=member_id, suppressed=RemoteStatus(
                normalize_email(item.email), PULLED_STATUSES[status], status_time(current),  # type: ignore[arg-type]
                member_id))
        body = self._fields(item)
        keep_status = (wanted == status or (wanted == "Active" and status == "SoftBounced")
                       or (wanted == "Unsubscribed" and status in ("HardBounced", "Spam")))
        if keep_status:
            body.pop("status", None)
        theirs = [str(x) for x in current.get("emailListIds") or []]
        lists = dict.fromkeys([*(x for x in theirs if x not in item.previous_remote_lists), *item.remote_lists])
        body["emailListIds"] = [int(x) for x in lists]
        try:
            await self._call("PATCH", api.MEMBER_ITEM_PATH.format(id=member_id), "update member", json=body)
        except ProviderError as exc:
            if exc.provider_code != api.ERROR_MEMBER_NOT_FOUND:
                raise
            return await self._create(replace(item, remote_id=None))   # deleted meanwhile: add again
        return PushOutcome(item.key, remote_id=member_id)

    async def _find(self, email: str) -> dict[str, Any] | None:
        """The member card of this e-mail (the documented single-member query), or None."""
        wanted = normalize_email(email)
        async for row in self._pages(api.MEMBER_PATH, {"email": wanted}, "read member"):
            if normalize_email(str(row.get("email"))) == wanted:
                return row
        return None

    async def delete_members(self, batch: Sequence[MemberDelete]) -> list[PushOutcome]:
        """Delete the member card (documented: hidden, kept for three years under KVKK)."""
        return list(await asyncio.gather(*(self._delete(item) for item in batch)))

    async def _delete(self, item: MemberDelete) -> PushOutcome:
        async with self._slots:
            return await _again_after_401(lambda: self._delete_one(item))

    async def _delete_one(self, item: MemberDelete) -> PushOutcome:
        try:
            remote_id = item.remote_id
            if remote_id is None or not await self._delete_id(remote_id):
                current = await self._find(item.email)     # a provisional link, or re-created since
                if current is not None:
                    remote_id = _member_id(current, "read member")
                    await self._delete_id(remote_id)
        except FatalError:
            raise
        except ProviderError as exc:
            return PushOutcome(item.key, rejected=_as_reject(exc))
        log.info("euromsg.member_deleted", reason=item.reason, remote_id=remote_id)
        return PushOutcome(item.key, remote_id=remote_id, action="deleted")

    async def _delete_id(self, remote_id: str) -> bool:
        """Delete one card; False when it was not there."""
        try:
            await self._call("DELETE", api.MEMBER_ITEM_PATH.format(id=remote_id), "delete member")
        except ProviderError as exc:
            if exc.provider_code == api.ERROR_MEMBER_NOT_FOUND:
                return False
            raise
        return True

    # --- pulls ----------------------------------------------------------------------------

    async def _full_scan(self) -> dict[str, dict[str, Any]]:
        """Every member card of every list, once per run (documented: "her gece ... bir defa toplu
        olarak sorgulanabilir"). Cards in no list are not reachable this way."""
        if self._scan is None:
            rows: dict[str, dict[str, Any]] = {}
            for remote_list in await self.all_lists():
                async for row in self._pages(api.MEMBER_PATH, {"emailListId": remote_list.remote_id},
                                             f"members of list {remote_list.remote_id}"):
                    rows[normalize_email(str(row.get("email")))] = row
            self._scan = rows
        return self._scan

    async def pull_statuses(self, since: dt.datetime | None) -> AsyncIterator[RemoteStatus]:
        """A full scan (``status_pull="full_scan"``): the document offers no "changed since" query,
        so ``since`` is ignored; each card's ``statusDate`` dates its status."""
        self._scan = None
        for email, row in (await self._full_scan()).items():
            status = PULLED_STATUSES.get(str(row.get("status")))
            if status is None or not email:
                continue
            yield RemoteStatus(email, status, status_time(row), str(row.get("memberId")))  # type: ignore[arg-type]

    async def refresh_statuses(self, remote_lists: Sequence[str]) -> AsyncIterator[RemoteStatus]:
        """Nothing cheaper than the full scan exists; instead every update reads its card right
        before writing it (``_update``), which closes the same window member by member."""
        for _ in ():
            yield _

    async def pull_consents(self, since: dt.datetime | None) -> AsyncIterator[RemoteConsent]:
        """İYS states of every scanned card ("İzin durumlarının Entegratöre aktarılması gecelik sorguda
        döner"); the scan of this run's status pull is reused. A state without a date is dated by
        the card's ``updateDate``."""
        for email, row in (await self._full_scan()).items():
            status, recipient_type = row.get(api.IYS_STATUS), row.get(api.IYS_RECIPIENT_TYPE)
            if status not in api.IYS_STATUSES or recipient_type not in api.IYS_RECIPIENT_TYPES or not email:
                continue
            when = parse_time(row.get(api.IYS_DATE)) or parse_time(row.get("updateDate"))
            if when is None or (since is not None and when < since):
                continue
            yield RemoteConsent(email, "EPOSTA", recipient_type, status, when,
                                row.get(api.IYS_SOURCE) or None)

    async def pull_campaigns(self) -> AsyncIterator[RemoteCampaign]:
        settle = dt.datetime.now(dt.UTC) - dt.timedelta(days=api.CAMPAIGN_SETTLE_DAYS)
        async for row in self._pages(api.CAMPAIGN_PATH, {}, "campaign list"):
            status = str(row.get("status") or "")
            sent = parse_time(row.get("sendDate"))
            yield RemoteCampaign(
                remote_id=str(row["id"]), name=str(row.get("name") or ""), status=status, sent_at=sent,
                updated_at=parse_time(row.get("updateDate")),
                final=status == "Error" or (status == "Sent" and sent is not None and sent < settle))

    async def campaign_summary(self, campaign_id: str) -> list[dict[str, Any]]:
        """campaign-report: the delivery state of the campaign's lists, per list."""
        data = await self._call("GET", api.CAMPAIGN_REPORT_PATH, f"report of campaign {campaign_id}",
                                params={"campaignId": campaign_id})
        if not isinstance(data, list):
            raise MalformedAnswerError(f"report of campaign {campaign_id}: the answer is not a list")
        return data

    async def pull_campaign_results(self, campaign: RemoteCampaign,
                                    context: ReportContext) -> AsyncIterator[list[RecipientResult]]:
        """campaign-report-detail, every recipient (no filter), given page by page as it comes."""
        if campaign.status not in api.CAMPAIGN_WITH_RESULTS:
            return
        page: dict[str, RecipientResult] = {}
        async for row in self._pages(api.CAMPAIGN_REPORT_DETAIL_PATH, {"campaignId": campaign.remote_id},
                                     f"detailed report of campaign {campaign.remote_id}"):
            email = normalize_email(str(row.get("email") or ""))
            if email:
                page[email] = recipient_result(email, row)
            if len(page) >= RESULT_PAGE:
                yield list(page.values())
                page = {}
        if page:
            yield list(page.values())


def recipient_result(email: str, row: Mapping[str, Any]) -> RecipientResult:
    """One campaign-report-detail row as a neutral result."""
    status = str(row.get("status") or "")
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


def _member_id(data: Any, what: str) -> str:
    if not isinstance(data, dict) or data.get("memberId") is None:
        raise MalformedAnswerError(f"{what}: the answer has no memberId")
    return str(data["memberId"])
