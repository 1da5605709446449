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

import datetime as dt
import json
import re
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import httpx
import structlog

from sync.emails import normalize_email
from sync.errors import AuthenticationError, FatalError, RejectedRow, UnknownReadingError
from sync.http import Auth, ProviderHTTP, Verdict
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
    refuse_bad_address,
    refuse_too_long,
)
from sync.providers.postatr import answers, api
from sync.providers.readings import ReadingLog

log = structlog.get_logger(__name__)

#: One StartProcess per ListId and batch (``per_list``: one link per (list, member)); Memberid is our
#: member id (``crm_id``: an e-mail change is an update). No delete, no unsubscribe, no status pull.
CAPABILITIES = Capabilities(
    max_batch=api.MAX_MEMBERS_PER_PROCESS, async_bulk_import=False, lists="mapped", supports_list_rename=False,
    supports_list_delete=False, pushes_members=True, supports_unsubscribe=False, member_removal="none",
    member_key="crm_id", membership_model="per_list", concurrency=2, rate_per_s=None, status_pull="none",
    pulls_consents=False, has_campaign_reports=True, custom_fields=True,
)
Clock = Callable[[], float]


# --- answers ---------------------------------------------------------------------------------------

def check_member(values: Mapping[str, str], columns: Mapping[str, str]) -> None:
    """RejectedRow (code "validation") for a Member Postatr's document does not allow or that is
    over our bounds (api.py, "field contents"): the reason names the field and the limit. Nothing
    is ever cut to fit."""
    refuse_bad_address(values["Email"], "Postatr", utf8_local=api.ADDRESS_UTF8_LOCAL, idn=api.ADDRESS_IDN,
                       source=api.ADDRESS_SOURCE)
    for name, crm_name in (("FName", "first_name"), ("LName", "last_name")):
        refuse_too_long(f"{crm_name} ({name})", values[name], api.MAX_NAME_LENGTH, "Postatr", api.LENGTH_SOURCE)
    for column, value in columns.items():
        refuse_too_long(f"MyColumns {column}", value, api.MAX_COLUMN_LENGTH, "Postatr", api.LENGTH_SOURCE)


def classify(response: httpx.Response) -> Verdict | None:
    """This provider's answer classifier (``ProviderHTTP.classifier``): the answer's ErrorCode inside
    an HTTP 200, in any reading (``answers.answer_error``), read with THE table (``api.ERROR_CODES``).
    Codes about one member, campaign or chunk (``item``) are returned to the client (None), which
    makes them that item's reject; so is an answer it cannot read (the caller reads it again and
    says so)."""
    if response.status_code >= 300:
        return None
    try:
        code = answers.answer_error(json.loads(response.content))
    except (ValueError, UnicodeDecodeError, UnknownReadingError):
        return None
    action = api.action_of(code)
    if code == api.NO_ERROR or action == "item":
        return None
    reason = api.describe_error(code)
    if action == "auth":
        reason += ": check the connection's credentials and that Postatr allows this server's IP address"
    return Verdict(action, reason, str(code), maybe_applied=False)


def _decoded(response: httpx.Response, what: str) -> Any:
    """The JSON body of a call's answer (only ``item`` codes get here: the classifier took the rest)."""
    if response.status_code >= 300:
        raise FatalError(f"{what}: Postatr answered HTTP {response.status_code}", status_code=response.status_code,
                         provider_code=str(response.status_code))
    return answers.decode(response, what)


def _mentions(text: str, token: str) -> bool:
    """``text`` names ``token`` (a member id or an e-mail) as a whole word, without case."""
    return bool(token) and re.search(rf"(?<![\w.@-]){re.escape(token)}(?![\w@-]|\.\w)", text, re.IGNORECASE) is not None


def parse_time(value: Any) -> dt.datetime | None:
    """A Postatr date in UTC (``answers.read_time``); None when empty or unreadable."""
    try:
        return answers.read_time("date", value)
    except UnknownReadingError:
        return None


# --- the token -------------------------------------------------------------------------------------

class TokenSlot(dict[str, Any]):
    """The dict of a request body that carries ``Token`` (a dict subclass so it can be held weakly).
    ``login``: StartProcess's MyData, which also carries the example's Username/Password/EncryptedId
    where the service wants them (``PostatrAuth.credentials_in_body``)."""

    login: bool = False


class PostatrAuth(Auth):
    """Authenticate (Username, Password, EncryptedId) -> a token valid 10 minutes.

    ASMX takes the token as a body parameter, not a header: every request body carries a
    :class:`TokenSlot` made by :meth:`slot`, and before every attempt (``headers``, which the HTTP layer
    calls each time) the current token is written into every slot in flight. So a re-login on error
    code 1 resends the request with the NEW token. The token is renewed ``api.TOKEN_RENEW_MARGIN_S``
    before its 10 minutes are over, on an injected clock.

    StartProcess is logged in two ways by the document (its parameter list: ``Token``; its example:
    Username, Password and EncryptedId in MyData). Token first; once the service refuses the token
    there (error 1 right after a fresh login: nothing was applied), ``credentials_in_body`` makes
    every StartProcess carry the example's three fields as well.
    """

    def __init__(self, username: str, password: str, encrypted_id: str, clock: Clock = time.monotonic,
                 readings: ReadingLog | None = None) -> None:
        SECRETS.register(password, encrypted_id)
        self._credentials = {"Username": username, "Password": password, "EncryptedId": encrypted_id}
        self._clock = clock
        self._token: str | None = None
        self._issued_at = 0.0
        #: id -> every body slot still in flight (held weakly: a finished request's body goes away).
        self._slots: weakref.WeakValueDictionary[int, TokenSlot] = weakref.WeakValueDictionary()
        self.logins = 0
        self.credentials_in_body = False
        self.readings = readings if readings is not None else ReadingLog()

    def slot(self, *, login: bool = False) -> TokenSlot:
        found = TokenSlot()
        found.login = login
        self._slots[id(found)] = found
        return found

    def _expired(self) -> bool:
        return self._clock() - self._issued_at >= api.TOKEN_LIFETIME_S - api.TOKEN_RENEW_MARGIN_S

    async def headers(self, http: ProviderHTTP) -> Mapping[str, str]:
        if self._token is None or self._expired():
            await self._login(http)
        for slot in list(self._slots.values()):
            slot[api.TOKEN_FIELD] = self._token
            if slot.login and self.credentials_in_body:
                slot.update(self._credentials)
        return {}

    async def _login(self, http: ProviderHTTP) -> None:
        issued = self._clock()
        response = await http.request("POST", api.AUTHENTICATE, json=self._credentials, authenticated=False,
                                      idempotent=True)
        if response.status_code >= 300:
            raise FatalError(f"Postatr Authenticate answered HTTP {response.status_code}",
                             status_code=response.status_code, provider_code=str(response.status_code))
        token, reading = answers.read_token(response)
        self.readings.note(api.AUTHENTICATE, reading)
        if token in api.ZERO_TOKENS:
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
                 capabilities: Capabilities = CAPABILITIES, columns: Mapping[str, Any] | None = None,
                 fields: Mapping[str, Any] | None = None) -> None:
        self.http = http
        if http is not None:    # None: built without a network, for its capabilities and mappings
            http.classifier = classify
        self.auth = auth
        self.capabilities = capabilities
        #: Endpoint -> the reading its answers came in (``sync.providers.readings``; api.py's table).
        self.readings = auth.readings
        self._lists = ListIds(account, api.parse_list_settings("lists", lists or {}))
        #: CRM contract column (phone, city) -> the Postatr database column it is sent in (MyColumns):
        #: the ``columns`` setting over ``api.DEFAULT_COLUMNS`` (``api.member_columns``).
        self.columns = api.member_columns(api.parse_column_settings("columns", columns or {}), fields or {})
        self._groups_by_list: dict[str, str] = {}
        #: ReportMembers chunk size where the call without ids is refused (93); halved whenever 93 still comes.
        self.report_chunk = api.REPORT_MEMBERS_CHUNK

    @classmethod
    def create(cls, http_factory: Callable[[Capabilities, Auth], ProviderHTTP], credentials: Mapping[str, str],
               settings: Mapping[str, Any], integrator: Mapping[str, str] | None = None,
               clock: Clock = time.monotonic) -> PostatrProvider:
        columns = api.parse_column_settings("columns", settings.get("columns") or {})
        fields = settings.get("fields") or {}
        api.member_columns(columns, fields)          # a column named twice: refused before anything is sent
        auth = PostatrAuth(credentials["username"], credentials["password"], credentials["encrypted_id"], clock)
        return cls(http_factory(CAPABILITIES, auth), auth, credentials["username"], settings.get("lists") or {},
                   columns=columns, fields=fields)

    async def _call(self, method: str, body: dict[str, Any]) -> httpx.Response:
        """POST one method; the token is written into the body's slot before every attempt.
        Every Postatr call may be repeated: reads, and StartProcess upserts by Memberid."""
        return await self.http.request("POST", method, json=body, idempotent=True)

    def _note_rows(self, endpoint: str, rows: answers.Rows) -> None:
        """Note a report's reading, unless the answer held no rows in a shape that tells none (an
        empty array, which an id-keyed server may also write; null; ErrorCode alone): an empty
        answer must not flag a change when rows come (readings.py)."""
        if rows.rows or not (rows.reading.startswith("array")
                             or any(word in rows.reading for word in ("null", "ErrorCode"))):
            self.readings.note(endpoint, rows.reading)

    def _note(self, notes: answers.Notes) -> None:
        for what, reading in notes.seen.items():
            self.readings.note(what, reading)

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
        status the engine wants (hashed, never sent: a DataOnly member has no status field).

        The e-mail goes as the CRM wrote it but for its domain (``api.outgoing_email``). The engine
        hands a snapshot its normalised (lower-cased) address and the address as written
        (``email_as_written``): the written one goes where it normalises to the same address and
        its local part differs from ours only in ASCII case (``AYSE.CETİN`` is not ``ayse.cetin`` to
        a mail server: a Turkish dotted capital goes folded, as the address we keep)."""
        written = (member.email_as_written or "").strip()
        local = written.rpartition("@")[0]
        keep = bool(written) and local.isascii() and normalize_email(written) == member.email
        values = {"FName": member.first_name or "", "LName": member.last_name or "",
                  "Email": api.outgoing_email(written if keep else member.email)}
        check_member(values, columns := self.my_columns(member))
        return values | {"MyColumns": columns, "status": member.status}

    def my_columns(self, member: MemberSnapshot) -> dict[str, str]:
        """``MyColumns``: the connection's custom fields (``fields`` setting, sync/fields.py) and the
        contract's phone and city under their Postatr columns (``self.columns``; "" when the CRM has
        none, so a value removed in the CRM is removed at Postatr too); database column -> value, as
        text like the document's example."""
        found = {name: ("1" if value else "0") if isinstance(value, bool) else str(value)
                 for name, value in member.fields.items()}
        for column, target in self.columns.items():
            value = getattr(member, column)
            found[target] = " ".join(str(value).split()) if value is not None else ""
        return dict(sorted(found.items()))

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
                                 str(payload.get("LName") or ""), str(payload.get("Email") or item.email),
                                 dict(payload.get("MyColumns") or {}))

    async def _send_start_process(self, body: dict[str, Any]) -> httpx.Response:
        """POST StartProcess, logged in as the service wants (``PostatrAuth``): the token first; on
        error 1 right after a fresh login (refused, so nothing applied) once more with the example's
        Username/Password/EncryptedId in MyData, for the rest of the session."""
        try:
            response = await self._call(api.START_PROCESS, body)
        except AuthenticationError as exc:
            if exc.provider_code != str(api.RELOGIN) or self.auth.credentials_in_body:
                raise
            self.auth.credentials_in_body = True
            log.warning("postatr.start_process_login", reading="the example's Username/Password/EncryptedId in "
                        "MyData", reason="the token in MyData was refused right after a fresh login (error 1)")
            try:
                response = await self._call(api.START_PROCESS, body)
            except AuthenticationError as again:
                if again.provider_code != str(api.RELOGIN):
                    raise
                raise AuthenticationError(
                    "Postatr StartProcess refused both the token in MyData (the document's parameter list) and "
                    "the example's Username/Password/EncryptedId in MyData (error 1, login or token invalid): "
                    "check the connection's credentials and that Postatr allows this server's IP address",
                    provider_code=str(api.RELOGIN)) from again
        self.readings.note(f"{api.START_PROCESS} login", "Username/Password/EncryptedId in MyData (the example)"
                           if self.auth.credentials_in_body else "Token in MyData (the parameter list)")
        return response

    async def _start_process(self, list_id: str, items: list[MemberUpsert]) -> list[PushOutcome]:
        """One StartProcess; a code about the request's members (92, 97 without details), or members
        ignored that no detail names, is narrowed down by halves to the member it concerns (an
        upsert by Memberid may be sent again)."""
        body = api.build_start_process(self.auth.slot(login=True), list_id, self._groups_of(list_id),
                                       [self._member(item) for item in items])
        what = f"StartProcess (DataOnly) of {len(items)} member(s) to ListId {list_id}"
        answer = answers.read_process(api.START_PROCESS, _decoded(await self._send_start_process(body), what))
        self.readings.note(api.START_PROCESS, answer.reading)
        if answer.details.reading is not None:
            self.readings.note(f"{api.START_PROCESS} ignored_details", answer.details.reading)
        ignored, unexplained = self._ignored(answer, items)
        code = answer.error
        if (code != api.NO_ERROR and not (code == api.NOTHING_PROCESSED and ignored)) or unexplained:
            if len(items) > 1:
                half = len(items) // 2
                return [*await self._start_process(list_id, items[:half]),
                        *await self._start_process(list_id, items[half:])]
            if code != api.NO_ERROR and not unexplained:
                return [PushOutcome(items[0].key, rejected=RejectedRow(
                    f"Postatr refused the member: {api.describe_error(code)}", provider_code=str(code)))]
            ignored = {items[0].key.crm_member_id: unexplained[0] if unexplained[0] else answers.readable_reason("")}
        if answer.campid:        # never: DataOnly starts none. Loud, because it must not pass silently
            log.error("postatr.campaign_started", campid=answer.campid[:40], list_id=list_id)
        outcomes = []
        for item in items:
            reason = ignored.get(item.key.crm_member_id)
            if reason is None:
                outcomes.append(PushOutcome(item.key, remote_id=item.key.crm_member_id))
            else:
                outcomes.append(PushOutcome(item.key, rejected=RejectedRow(
                    f"Postatr ignored the member: {reason}", provider_code="ignored")))
        counted = answer.inserted + answer.updated + (answer.ignored or 0)
        if counted != len(items) and code == api.NO_ERROR:
            log.warning("postatr.counts_differ", sent=len(items), inserted=answer.inserted, updated=answer.updated,
                        ignored=answer.ignored)
        return outcomes

    @staticmethod
    def _ignored(answer: answers.ProcessAnswer, items: Sequence[MemberUpsert]) -> tuple[dict[str, str], list[str]]:
        """Memberid -> readable reason of each member ``ignored_details`` names (by Memberid, by
        e-mail, or by a text naming exactly one member of the request); and one reason ("" for none)
        per member counted in ``ignored`` that no detail names (the texts naming no member first)."""
        details = answer.details
        ids = {item.key.crm_member_id for item in items}
        by_email = {normalize_email(item.email): item.key.crm_member_id for item in items}
        found = {member_id: reason for member_id, reason in details.by_id.items() if member_id in ids}
        found |= {by_email[email]: reason for email, reason in details.by_email.items() if email in by_email}
        unnamed = []
        for text, reason in details.unnamed:
            named = {m for m in ids if _mentions(text, m)} | {m for e, m in by_email.items() if _mentions(text, e)}
            if len(named) == 1:
                found[named.pop()] = reason
            else:
                unnamed.append(reason)
        counted = answer.ignored if answer.ignored is not None else len(found) + len(unnamed)
        missing = max(0, counted - len(found))
        return found, (unnamed + [""] * missing)[:missing]

    async def delete_members(self, batch: Sequence[MemberDelete]) -> list[PushOutcome]:
        """Postatr has no delete (``member_removal="none"``: the engine does not call this); if called,
        every item is a reject saying what a person must do."""
        return [PushOutcome(item.key, rejected=RejectedRow(
            f"Postatr cannot remove members through its API: remove {item.email} ({item.reason}) in its panel",
            provider_code="removal_unsupported")) for item in batch]

    # --- reports -------------------------------------------------------------------------------

    async def _report_campaign(self, camp_id: str | None) -> tuple[list[answers.CampaignInfo], str]:
        """ReportCampaign: every campaign (no CampId) or one; the campaigns and the answer's reading."""
        body: dict[str, Any] = self.auth.slot()
        if camp_id is not None:
            body["CampId"] = camp_id
        endpoint = api.REPORT_CAMPAIGN if camp_id is None else f"{api.REPORT_CAMPAIGN} by CampId"
        what = f"ReportCampaign{'' if camp_id is None else f' {camp_id}'}"
        rows = answers.read_rows(endpoint, _decoded(await self._call(api.REPORT_CAMPAIGN, body), what),
                                 api.CAMPAIGN_ROW_KEYS, api.answer_key("CampId"))
        code = rows.error
        if rows.single and code == api.NO_ERROR:   # one campaign object: its ErrorCode is the answer's
            code = answers.code_of(rows.rows[0].get(api.answer_key(api.ERROR_CODE)), endpoint)
        if code == api.NO_CAMPAIGN and camp_id is None and not rows.rows:
            # the listing answered "Kampanya yok" (no campaign): the account has none yet
            return [], rows.reading.replace("ErrorCode", f"ErrorCode {code} (no campaign)", 1)
        if code != api.NO_ERROR:
            raise RejectedRow(f"{what}: {api.describe_error(code)}", provider_code=str(code))
        self._note_rows(endpoint, rows)
        notes = answers.Notes()
        found = answers.campaigns(endpoint, rows.rows, camp_id, notes)
        self._note(notes)
        return found, rows.reading

    @staticmethod
    def _campaign(info: answers.CampaignInfo, now: dt.datetime) -> RemoteCampaign:
        final = info.completed and info.sent_at is not None and \
            now - info.sent_at > dt.timedelta(days=api.FINAL_AFTER_DAYS)
        return RemoteCampaign(info.camp_id, info.name, info.status, info.sent_at, info.last_open or info.sent_at,
                              final)

    @staticmethod
    def _merged(listed: answers.CampaignInfo, details: answers.CampaignInfo) -> answers.CampaignInfo:
        """A campaign of the listing with what its own ReportCampaign says over it."""
        default_name = details.name == f"Postatr campaign {details.camp_id}"
        return answers.CampaignInfo(listed.camp_id, listed.name if default_name else details.name,
                                    details.status or listed.status, details.sent_at or listed.sent_at,
                                    details.last_open or listed.last_open,
                                    details.completed if details.status else listed.completed)

    async def pull_campaigns(self) -> AsyncIterator[RemoteCampaign]:
        """Every campaign (ReportCampaign without CampId), then, for each not final, its own details
        (ReportCampaign by CampId: its latest open, which tells the engine whether it changed). A
        campaign whose details cannot be read is yielded with the list's information."""
        now = dt.datetime.now(dt.UTC)
        listing, _ = await self._report_campaign(None)
        for listed in listing:
            info = listed
            if not self._campaign(listed, now).final:
                try:
                    details, _ = await self._report_campaign(listed.camp_id)
                except RejectedRow as exc:
                    log.warning("postatr.campaign_details_unreadable", campaign=listed.camp_id, reason=exc.reason)
                    details = []
                if details:
                    info = self._merged(listed, details[0])
            yield self._campaign(info, now)

    async def pull_campaign_results(self, campaign: RemoteCampaign,
                                    context: ReportContext) -> AsyncIterator[list[RecipientResult]]:
        """ReportMembers WITHOUT Memberids: "Göndermezseniz kampanyadaki tüm alıcıları raporlar" (left
        out, every recipient is reported), one call per campaign, handed on in pages of
        ``api.REPORT_PAGE``. Where the service refuses that with 93 (too many at once), our linked
        member ids are asked in chunks small enough to avoid it; a chunk that still gets 93 is
        halved (and so are the chunks after it)."""
        everyone = await self._report_members(campaign.remote_id, None)
        if everyone is not None:
            self.readings.note(f"{api.REPORT_MEMBERS} without Memberids", "every recipient in one answer")
            for start in range(0, len(everyone), api.REPORT_PAGE):
                yield everyone[start:start + api.REPORT_PAGE]
            return
        self.readings.note(f"{api.REPORT_MEMBERS} without Memberids", "refused with 93: asked by our member ids")
        log.info("postatr.report_by_member_ids", campaign=campaign.remote_id, chunk=self.report_chunk)
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

    async def _report_members(self, camp_id: str, member_ids: list[str] | None) -> list[RecipientResult] | None:
        """One ReportMembers (every recipient when ``member_ids`` is None); None on 93."""
        body: dict[str, Any] = self.auth.slot()
        body["CampId"] = camp_id
        if member_ids is not None:
            body["Memberids"] = list(member_ids)
        what = f"ReportMembers {camp_id}" + ("" if member_ids is None else f" ({len(member_ids)} member id(s))")
        rows = answers.read_rows(api.REPORT_MEMBERS, _decoded(await self._call(api.REPORT_MEMBERS, body), what),
                                 api.MEMBER_ROW_KEYS, api.answer_key("Memberid"))
        if rows.error == api.TOO_MANY_TO_REPORT:
            return None
        if rows.error != api.NO_ERROR:
            raise RejectedRow(f"{what}: {api.describe_error(rows.error)}", provider_code=str(rows.error))
        self._note_rows(api.REPORT_MEMBERS, rows)
        notes = answers.Notes()
        found = answers.recipients(api.REPORT_MEMBERS, rows.rows, notes)
        self._note(notes)
        return found

    # --- connection test -------------------------------------------------------------------------

    async def connection_probe(self) -> list[str]:
        """The read-only calls a run makes, with real parameters: the login, every campaign, the
        latest campaign's own report and its recipients (without Memberids, as a run asks). One line
        each, naming the reading its answer came in. Never writes: StartProcess is not tried."""
        await self.auth.headers(self.http)
        lines = [f"{api.AUTHENTICATE}: token issued (reading: {self.readings.seen.get(api.AUTHENTICATE, '?')})"]
        listing, reading = await self._report_campaign(None)
        lines.append(f"{api.REPORT_CAMPAIGN}: {len(listing)} campaign(s) (reading: {reading})")
        if listing:
            oldest = dt.datetime.min.replace(tzinfo=dt.UTC)
            latest = max(listing, key=lambda info: (info.sent_at or oldest, info.camp_id))
            details, reading = await self._report_campaign(latest.camp_id)
            status = details[0].status if details else latest.status
            lines.append(f"{api.REPORT_CAMPAIGN} CampId {latest.camp_id}: status {status or '(none)'} "
                         f"(reading: {reading})")
            found = await self._report_members(latest.camp_id, None)
            if found is None:
                lines.append(f"{api.REPORT_MEMBERS} CampId {latest.camp_id} without Memberids: refused "
                             f"({api.describe_error(api.TOO_MANY_TO_REPORT)}); a run asks by our linked member "
                             f"ids, {self.report_chunk} at a time")
            else:
                failed = sum(1 for result in found if result.bounce_type == api.FAILED_RECIPIENT)
                lines.append(f"{api.REPORT_MEMBERS} CampId {latest.camp_id}: {len(found)} recipient(s), {failed} "
                             f"failed (reading: {self.readings.seen.get(api.REPORT_MEMBERS, '?')})")
        lines.append(f"{api.START_PROCESS}: not tried (a write); sent with the token in MyData, and with the "
                     "example's Username/Password/EncryptedId if the service refuses the token there")
        sent = ", ".join(f"{column} as {target!r}" + (" (default)" if api.DEFAULT_COLUMNS.get(column) == target
                                                       else "") for column, target in self.columns.items())
        unsent = [column for column in api.CONTRACT_COLUMNS if column not in self.columns]
        lines.append("MyColumns: " + "; ".join(part for part in (
            f"CRM {sent}" if sent else "", f"not sent: {', '.join(unsent)}" if unsent else "") if part)
            + " (the columns setting names the account's own columns)")
        return lines


__all__ = ["CAPABILITIES", "ListIds", "PostatrAuth", "PostatrProvider", "TokenSlot", "classify", "parse_time"]
