"""Postatr: a 10-minute token, members upserted through StartProcess (DataOnly only), campaign reports.

Every method, answer shape, limit, error code and guess lives in :mod:`sync.providers.postatr.api`;
this module only speaks it. Postatr answers errors inside HTTP 200 (``ErrorCode``): the
:func:`classify` function is this provider's answer classifier in the HTTP layer (re-login on code 1,
retries, fatal codes); codes about one member or one campaign are this module's business.

What Postatr cannot do (its document has no call for it) is declared, not faked: no member or list
delete (``member_removal="none"``: the engine records each removal as an open reject), no
unsubscribe (a member to be unsubscribed is a reject saying what to do in the panel), no status
pull. A campaign is never started: the one request builder (``api.build_start_process``) cannot
express a ProcessType other than DataOnly.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
import weakref
import zoneinfo
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import httpx
import structlog

from sync.emails import normalize_email
from sync.errors import AuthenticationError, FatalError, MalformedAnswerError, RejectedRow
from sync.http import Auth, ProviderHTTP, Verdict, json_of
from sync.logs import SECRETS
from sync.providers.base import (
    Capabilities,
    MemberDelete,
    MemberSnapshot,
    MemberUpsert,
    PushOutcome,
    RecipientResult,
    RemoteCampaign,
    RemoteList,
    ReportContext,
)
from sync.providers.postatr import api

log = structlog.get_logger(__name__)

#: One StartProcess per ListId and batch (``per_list``: one link per (list, member)); Memberid is our
#: member id (``crm_id``: an e-mail change is an update). No delete, no unsubscribe, no status pull.
CAPABILITIES = Capabilities(
    max_batch=api.MAX_MEMBERS_PER_PROCESS, async_bulk_import=False, lists="mapped", supports_list_rename=False,
    supports_list_delete=False, pushes_members=True, supports_unsubscribe=False, member_removal="none",
    member_key="crm_id", membership_model="per_list", concurrency=2, rate_per_s=None, status_pull="none",
    pulls_consents=False, has_campaign_reports=True, custom_fields=True,
)
_TZ = zoneinfo.ZoneInfo(api.SERVICE_TIME_ZONE)
Clock = Callable[[], float]


# --- answers ---------------------------------------------------------------------------------------

def _json_answer(response: httpx.Response) -> Any:
    """The JSON answer unwrapped from ``{"d": ...}``, or None when the body is not JSON."""
    try:
        return api.unwrap_answer(json.loads(response.content))
    except (ValueError, UnicodeDecodeError):
        return None


def error_code_of(body: Any) -> int:
    """The answer's ErrorCode (api.NO_ERROR when there is none)."""
    if not isinstance(body, dict):
        return api.NO_ERROR
    value = body.get(api.ERROR_CODE)
    if value in (None, ""):
        return api.NO_ERROR
    try:
        return int(str(value).strip())
    except ValueError:
        raise MalformedAnswerError(f"Postatr answered an ErrorCode that is not a number: {str(value)[:40]!r}") \
            from None


def classify(response: httpx.Response) -> Verdict | None:
    """This provider's answer classifier (``ProviderHTTP.classifier``): an ErrorCode inside an HTTP 200
    answer, read with THE table (``api.ERROR_CODES``). Codes about one member, campaign or chunk
    (``item``) are returned to the client (None), which makes them that item's reject."""
    code = api.NO_ERROR
    if response.status_code < 300:
        with contextlib.suppress(MalformedAnswerError):     # read again, and reported, by the caller
            code = error_code_of(_json_answer(response))
    action = api.action_of(code)
    if code == api.NO_ERROR or action == "item":
        return None
    reason = api.describe_error(code)
    if action == "auth":
        reason += ": check the connection's credentials and that Postatr allows this server's IP address"
    return Verdict(action, reason, str(code), maybe_applied=False)


def _answer(response: httpx.Response, what: str) -> tuple[dict[str, Any], int]:
    """A JSON object answer and its ErrorCode (only ``item`` codes get here: the classifier took the rest)."""
    if response.status_code >= 300:
        raise FatalError(f"{what}: Postatr answered HTTP {response.status_code}", status_code=response.status_code,
                         provider_code=str(response.status_code))
    body = api.unwrap_answer(json_of(response, what))
    if not isinstance(body, dict):
        raise MalformedAnswerError(f"{what}: Postatr's answer is not a JSON object")
    return body, error_code_of(body)


def _int(value: Any) -> int:
    try:
        return int(str(value).strip()) if value not in (None, "") else 0
    except ValueError:
        return 0


def parse_time(value: Any) -> dt.datetime | None:
    """A Postatr date (``api.DATE_FORMATS`` in Turkey's time, or ISO 8601) in UTC; None when empty."""
    text = "" if value is None else str(value).strip()
    if not text:
        return None
    for pattern in api.DATE_FORMATS:
        try:
            return dt.datetime.strptime(text, pattern).replace(tzinfo=_TZ).astimezone(dt.UTC)
        except ValueError:
            continue
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=_TZ)).astimezone(dt.UTC)


# --- the token -------------------------------------------------------------------------------------

class TokenSlot(dict[str, Any]):
    """The dict of a request body that carries ``Token`` (a dict subclass so it can be held weakly)."""


class PostatrAuth(Auth):
    """Authenticate (Username, Password, EncryptedId) -> a token valid 10 minutes.

    ASMX takes the token as a body parameter, not a header: every request body carries a
    :class:`TokenSlot` made by :meth:`slot`, and before every attempt (``headers``, which the HTTP layer
    calls each time) the current token is written into every slot in flight. So a re-login on error
    code 1 resends the request with the NEW token. The token is renewed ``api.TOKEN_RENEW_MARGIN_S``
    before its 10 minutes are over, on an injected clock.
    """

    def __init__(self, username: str, password: str, encrypted_id: str, clock: Clock = time.monotonic) -> None:
        SECRETS.register(password, encrypted_id)
        self._credentials = {"Username": username, "Password": password, "EncryptedId": encrypted_id}
        self._clock = clock
        self._token: str | None = None
        self._issued_at = 0.0
        #: id -> every body slot still in flight (held weakly: a finished request's body goes away).
        self._slots: weakref.WeakValueDictionary[int, TokenSlot] = weakref.WeakValueDictionary()
        self.logins = 0

    def slot(self) -> TokenSlot:
        found = TokenSlot()
        self._slots[id(found)] = found
        return found

    def _expired(self) -> bool:
        return self._clock() - self._issued_at >= api.TOKEN_LIFETIME_S - api.TOKEN_RENEW_MARGIN_S

    async def headers(self, http: ProviderHTTP) -> Mapping[str, str]:
        if self._token is None or self._expired():
            await self._login(http)
        for slot in list(self._slots.values()):
            slot[api.TOKEN_FIELD] = self._token
        return {}

    async def _login(self, http: ProviderHTTP) -> None:
        issued = self._clock()
        response = await http.request("POST", api.AUTHENTICATE, json=self._credentials, authenticated=False,
                                      idempotent=True)
        if response.status_code >= 300:
            raise FatalError(f"Postatr Authenticate answered HTTP {response.status_code}",
                             status_code=response.status_code, provider_code=str(response.status_code))
        match = api.TOKEN_ANSWER.match(response.text)
        if match is None:
            raise MalformedAnswerError("Postatr Authenticate answered something other than <string>token</string>",
                                       status_code=response.status_code)
        token = match.group(1)
        if token == api.ZERO_GUID:
            raise AuthenticationError("Postatr refused the user name, password or EncryptedId (Authenticate "
                                      "answered the all-zero token): check the connection's credentials "
                                      "(`crm-esp-sync connection rotate`)", provider_code="zero_token")
        SECRETS.register(token)
        self._token, self._issued_at = token, issued
        self.logins += 1
        log.debug("postatr.token_issued")

    def invalidate(self) -> None:
        self._token = None


# --- lists -----------------------------------------------------------------------------------------

class ListIds(Mapping[str, RemoteList]):
    """CRM list id -> its Postatr ListId. Every CRM list has one (the sender chooses ListIds:
    ``api.derived_list_id``), so a lookup of any list id succeeds; iterating gives the lists the
    ``lists`` setting names (their own ListId or MemberGroups)."""

    def __init__(self, account: str, configured: Mapping[str, Mapping[str, str]]) -> None:
        self._account = account
        self._configured = configured

    def __getitem__(self, crm_list: str) -> RemoteList:
        entry = self._configured.get(crm_list, {})
        list_id = entry.get("list_id") or api.derived_list_id(self._account, crm_list)
        return RemoteList(list_id, api.list_label(list_id),
                          {"member_groups": entry.get("member_groups", api.NO_GROUPS)})

    def __contains__(self, crm_list: object) -> bool:
        return isinstance(crm_list, str) and bool(crm_list)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._configured))

    def __len__(self) -> int:
        return len(self._configured)


# --- the provider ----------------------------------------------------------------------------------

class PostatrProvider:
    """The Postatr side of a connection."""

    name: ClassVar[str] = "postatr"
    #: The sender chooses ListIds (every CRM list gets a derived one): no mapping is needed, and
    #: what `connection test` says of its lists (sync/ops/connection_test.py).
    requires_list_mapping: ClassVar[bool] = False
    login_detail: ClassVar[str] = "token issued (Authenticate)"
    list_detail: ClassVar[str] = "configured (Postatr has no call to read a list back)"
    unmapped_detail: ClassVar[str] = ("every CRM list gets its own ListId, derived from the account and the list "
                                      "(the `lists` setting may name one or add MemberGroups)")

    def __init__(self, http: ProviderHTTP, auth: PostatrAuth, account: str,
                 lists: Mapping[str, Mapping[str, Any]] | None = None,
                 capabilities: Capabilities = CAPABILITIES) -> None:
        self.http = http
        if http is not None:    # None: built without a network, for its capabilities and mappings
            http.classifier = classify
        self.auth = auth
        self.capabilities = capabilities
        self._lists = ListIds(account, api.parse_list_settings("lists", lists or {}))
        self._groups_by_list: dict[str, str] = {}
        #: ReportMembers chunk size; halved (for the rest of the session) whenever 93 still comes.
        self.report_chunk = api.REPORT_MEMBERS_CHUNK

    @classmethod
    def create(cls, http_factory: Callable[[Capabilities, Auth], ProviderHTTP], credentials: Mapping[str, str],
               settings: Mapping[str, Any], integrator: Mapping[str, str] | None = None,
               clock: Clock = time.monotonic) -> PostatrProvider:
        auth = PostatrAuth(credentials["username"], credentials["password"], credentials["encrypted_id"], clock)
        return cls(http_factory(CAPABILITIES, auth), auth, credentials["username"], settings.get("lists") or {})

    def _request_body(self) -> TokenSlot:
        return self.auth.slot()

    async def _call(self, method: str, body: dict[str, Any]) -> httpx.Response:
        """POST one method; the token is written into the body's slot before every attempt.
        Every Postatr call may be repeated: reads, and StartProcess upserts by Memberid."""
        return await self.http.request("POST", method, json=body, idempotent=True)

    # --- lists ---------------------------------------------------------------------------------

    def mapped_lists(self) -> Mapping[str, RemoteList]:
        return self._lists

    async def check_lists(self) -> list[str]:
        """Postatr cannot read a list back (no call for it): the check is the login itself."""
        await self.auth.headers(self.http)
        return []

    def _groups_of(self, list_id: str) -> str:
        if not self._groups_by_list:
            self._groups_by_list = {self._lists[crm].remote_id: self._lists[crm].attributes["member_groups"]
                                    for crm in self._lists}
        return self._groups_by_list.get(list_id, api.NO_GROUPS)

    # --- members -------------------------------------------------------------------------------

    def build_payload(self, member: MemberSnapshot) -> dict[str, Any]:
        """FName, LName, Email and MyColumns of one ``Member`` (Memberid is the link's key), plus the
        status the engine wants (hashed, never sent: a DataOnly member has no status field)."""
        values = {"FName": member.first_name or "", "LName": member.last_name or "",
                  "Email": normalize_email(member.email)}
        for field_name, value in values.items():
            if len(value) > api.MAX_FIELD_LENGTH:
                raise RejectedRow(f"{field_name} is {len(value)} characters long; Postatr takes at most "
                                  f"{api.MAX_FIELD_LENGTH} (assumed)", provider_code="too_long")
        return values | {"MyColumns": self.my_columns(member), "status": member.status}

    @staticmethod
    def my_columns(member: MemberSnapshot) -> dict[str, str]:
        """The connection's custom fields (``fields`` setting, sync/fields.py) as Postatr ``MyColumns``:
        database field name -> value, as text like the document's example."""
        return {name: ("1" if value else "0") if isinstance(value, bool) else str(value)
                for name, value in sorted(member.fields.items())}

    async def upsert_members(self, batch: Sequence[MemberUpsert]) -> list[PushOutcome]:
        """One StartProcess (DataOnly) per ListId and up to ``api.MAX_MEMBERS_PER_PROCESS`` members;
        every ignored member is that member's reject, never the request's failure."""
        outcomes: dict[int, PushOutcome] = {}
        by_list: dict[str, list[tuple[int, MemberUpsert]]] = {}
        for index, item in enumerate(batch):
            if item.payload.get("status") != "active":
                outcomes[index] = PushOutcome(item.key, remote_id=item.remote_id, rejected=RejectedRow(
                    f"Postatr cannot unsubscribe through its API (a DataOnly member has no status): unsubscribe "
                    f"{item.email} in the Postatr panel", provider_code="unsubscribe_unsupported"))
            elif len(item.remote_lists) != 1:
                outcomes[index] = PushOutcome(item.key, rejected=RejectedRow(
                    f"a Postatr member is pushed to one ListId at a time, not {len(item.remote_lists)}",
                    provider_code="list_count"))
            else:
                by_list.setdefault(item.remote_lists[0], []).append((index, item))
        for list_id, items in sorted(by_list.items()):
            for start in range(0, len(items), api.MAX_MEMBERS_PER_PROCESS):
                chunk = items[start:start + api.MAX_MEMBERS_PER_PROCESS]
                for (index, _), outcome in zip(chunk, await self._start_process(list_id, [i for _, i in chunk]),
                                               strict=True):
                    outcomes[index] = outcome
        return [outcomes[index] for index in range(len(batch))]

    @staticmethod
    def _member(item: MemberUpsert) -> api.PostatrMember:
        payload = item.payload
        return api.PostatrMember(item.key.crm_member_id, str(payload.get("FName") or ""),
                                 str(payload.get("LName") or ""), normalize_email(item.email),
                                 dict(payload.get("MyColumns") or {}))

    async def _start_process(self, list_id: str, items: list[MemberUpsert]) -> list[PushOutcome]:
        """One StartProcess; a code about the request's members (92, 97 without details) is narrowed
        down by halves to the member it concerns."""
        body = api.build_start_process(self._request_body(), list_id, self._groups_of(list_id),
                                       [self._member(item) for item in items])
        what = f"StartProcess (DataOnly) of {len(items)} member(s) to ListId {list_id}"
        response = await self._call(api.START_PROCESS, body)
        answer, code = _answer(response, what)
        ignored = self._ignored(answer)
        if code != api.NO_ERROR and not (code == api.NOTHING_PROCESSED and ignored):
            if len(items) > 1:
                half = len(items) // 2
                return [*await self._start_process(list_id, items[:half]),
                        *await self._start_process(list_id, items[half:])]
            return [PushOutcome(items[0].key, rejected=RejectedRow(
                f"Postatr refused the member: {api.describe_error(code)}", provider_code=str(code)))]
        if answer.get("campid"):        # never: DataOnly starts none. Loud, because it must not pass silently
            log.error("postatr.campaign_started", campid=str(answer.get("campid"))[:40], list_id=list_id)
        outcomes = []
        for item in items:
            reason = ignored.get(item.key.crm_member_id)
            if reason is None:
                outcomes.append(PushOutcome(item.key, remote_id=item.key.crm_member_id))
            else:
                outcomes.append(PushOutcome(item.key, rejected=RejectedRow(
                    f"Postatr ignored the member: {reason}", provider_code="ignored")))
        counted = _int(answer.get("inserted")) + _int(answer.get("updated")) + _int(answer.get("ignored"))
        if counted != len(items):
            log.warning("postatr.counts_differ", sent=len(items), inserted=_int(answer.get("inserted")),
                        updated=_int(answer.get("updated")), ignored=_int(answer.get("ignored")))
        return outcomes

    @staticmethod
    def _ignored(answer: Mapping[str, Any]) -> dict[str, str]:
        """Memberid -> readable reason, from ``ignored_details`` (Turkish reason translated)."""
        details = answer.get("ignored_details") or []
        found: dict[str, str] = {}
        if not isinstance(details, list):
            return found
        for entry in details:
            if not isinstance(entry, dict):
                continue
            member_id = str(entry.get("Memberid") or "").strip()
            turkish = " ".join(str(entry.get("Reason") or "").split())[:200]
            english = api.IGNORED_REASONS.get(turkish)
            found[member_id] = (f"{english} (\"{turkish}\")" if english else
                                f"\"{turkish}\"" if turkish else "no reason given")
        return found

    async def delete_members(self, batch: Sequence[MemberDelete]) -> list[PushOutcome]:
        """Postatr has no delete (``member_removal="none"``: the engine does not call this); if called,
        every item is a reject saying what a person must do."""
        return [PushOutcome(item.key, rejected=RejectedRow(
            f"Postatr cannot remove members through its API: remove {item.email} ({item.reason}) in its panel",
            provider_code="removal_unsupported")) for item in batch]

    # --- reports -------------------------------------------------------------------------------

    async def _report_campaign(self, camp_id: str | None) -> list[dict[str, Any]]:
        body: dict[str, Any] = self._request_body()
        if camp_id is not None:
            body["CampId"] = camp_id
        what = f"ReportCampaign{'' if camp_id is None else f' {camp_id}'}"
        answer, code = _answer(await self._call(api.REPORT_CAMPAIGN, body), what)
        if code != api.NO_ERROR:
            raise RejectedRow(f"{what}: {api.describe_error(code)}", provider_code=str(code))
        rows = answer.get(api.CAMPAIGNS_FIELD) or []
        if not isinstance(rows, list):
            raise MalformedAnswerError(f"{what}: {api.CAMPAIGNS_FIELD} is not a list")
        return [row for row in rows if isinstance(row, dict) and str(row.get("CampId") or "").strip()]

    @staticmethod
    def _campaign(row: Mapping[str, Any], now: dt.datetime) -> RemoteCampaign:
        sent_at = parse_time(row.get("SentDate"))
        status = str(row.get("Status") or "")
        final = status == api.CAMPAIGN_COMPLETED and sent_at is not None and \
            now - sent_at > dt.timedelta(days=api.FINAL_AFTER_DAYS)
        name = str(row.get("MailDescription") or row.get("MailSubject") or f"Postatr campaign {row['CampId']}")
        return RemoteCampaign(str(row["CampId"]).strip(), name, status, sent_at,
                              parse_time(row.get("LastOpenDate")) or sent_at, final)

    async def pull_campaigns(self) -> AsyncIterator[RemoteCampaign]:
        """Every campaign (ReportCampaign without CampId), then, for each not final, its own details
        (ReportCampaign by CampId: its latest open, which tells the engine whether it changed). A
        campaign whose details cannot be read is yielded with the list's information."""
        now = dt.datetime.now(dt.UTC)
        for row in await self._report_campaign(None):
            campaign = self._campaign(row, now)
            if not campaign.final:
                try:
                    details = await self._report_campaign(campaign.remote_id)
                except RejectedRow as exc:
                    log.warning("postatr.campaign_details_unreadable", campaign=campaign.remote_id, reason=exc.reason)
                    details = []
                if details:
                    campaign = self._campaign({**row, **details[0]}, now)
            yield campaign

    async def pull_campaign_results(self, campaign: RemoteCampaign,
                                    context: ReportContext) -> AsyncIterator[list[RecipientResult]]:
        """ReportMembers for our linked member ids, in chunks small enough to avoid error 93; a chunk
        that still gets 93 is halved (and so are the chunks after it)."""
        for chunk in context.member_ids(self.report_chunk):
            pending = [chunk]
            while pending:
                ids = pending.pop(0)
                if len(ids) > self.report_chunk:
                    pending[:0] = [ids[i:i + self.report_chunk] for i in range(0, len(ids), self.report_chunk)]
                    continue
                rows = await self._report_members(campaign.remote_id, ids)
                if rows is None:            # 93: too many at once
                    if len(ids) == 1:
                        raise RejectedRow(f"ReportMembers {campaign.remote_id}: {api.describe_error(93)} even for "
                                          "one member", provider_code="93")
                    self.report_chunk = max(1, len(ids) // 2)
                    log.info("postatr.report_chunk_halved", campaign=campaign.remote_id, size=self.report_chunk)
                    pending.insert(0, ids)
                    continue
                if rows:
                    yield rows

    async def _report_members(self, camp_id: str, member_ids: list[str]) -> list[RecipientResult] | None:
        body: dict[str, Any] = self._request_body()
        body.update({"CampId": camp_id, "Memberids": list(member_ids)})
        what = f"ReportMembers {camp_id} ({len(member_ids)} member id(s))"
        answer, code = _answer(await self._call(api.REPORT_MEMBERS, body), what)
        if code == api.TOO_MANY_TO_REPORT:
            return None
        if code != api.NO_ERROR:
            raise RejectedRow(f"{what}: {api.describe_error(code)}", provider_code=str(code))
        rows = answer.get(api.MEMBERS_FIELD) or []
        if not isinstance(rows, list):
            raise MalformedAnswerError(f"{what}: {api.MEMBERS_FIELD} is not a list")
        return [result for row in rows if isinstance(row, dict) and (result := recipient_result(row)) is not None]


def recipient_result(row: Mapping[str, Any]) -> RecipientResult | None:
    """One ReportMembers row: Ulaştı (delivered), Açtı (opened), Tıkladı (clicked, which implies an open).
    ASSUMED: no click date is documented, so a click is dated by the latest open (LastOpenDate)."""
    email = normalize_email(str(row.get("Email") or ""))
    if not email:
        return None
    status = str(row.get("Status") or "").strip()
    open_count = _int(row.get("OpenCount"))
    last_open = parse_time(row.get("LastOpenDate"))
    opened = status in ("Açtı", "Tıkladı") or open_count > 0
    member_id = str(row.get("Memberid") or "").strip() or None
    return RecipientResult(email=email, crm_member_id=member_id, sent_at=parse_time(row.get("SentDate")),
                           opened_at=last_open if opened else None, open_count=open_count,
                           clicked_at=last_open if status == "Tıkladı" else None, extra={"status": status})


__all__ = ["CAPABILITIES", "ListIds", "PostatrAuth", "PostatrProvider", "TokenSlot", "classify", "parse_time",
           "recipient_result"]
