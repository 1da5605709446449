"""In-memory simulator of Postatr's api.asmx, for tests and the demo.

It follows ``shared/esp-docs/postatr.txt`` and, where the document is silent, the ASSUMED choices in
``sync.providers.postatr.api`` (the one wire contract shared with the client). An account is a user
name, password and EncryptedId; ``Authenticate`` gives a token valid 10 minutes on the sandbox's
clock (``<string>`` XML, the all-zero GUID for wrong credentials). Errors come inside HTTP 200 as
``ErrorCode`` with the document's numbers: 1 for a missing, unknown or expired token, 7 for an empty
SegmentationFilter, 40/41 for a campaign that is not there or not the account's, 93 for more member
ids than ``report_members_limit``, 95/96 for JSON it cannot read, 97 when no member was processed,
101/102 for the ProcessType.

Members are kept per account by Memberid (api: one member per Memberid, remembering every ListId
and group it was sent with). ``DataOnly`` upserts them and answers inserted / updated / ignored /
ignored_details (an invalid e-mail is ignored with its reason, the rest of the request goes on;
invalid by api.py's reading of an address, ``ADDRESS_*``; no length is refused: the document states none).
``ThisOnly`` and ``AllDatabase`` really start a campaign here, so a test can prove the daemon never
sends them: every ProcessType received is recorded (``process_types``) and every campaign a request
started too (``campaigns_started_by_requests``). A recipient's unsubscribe (:meth:`unsubscribe`)
stays: a DataOnly update never re-activates a member (nothing documented does).

Faults from a ``FaultPlan`` apply to every call but Authenticate (see sync.sandbox.faults); a
``StartProcess`` is the only write.

Readings (``dialect``, :data:`DIALECTS`): the document shows no answer but Authenticate's, so the
sandbox serves each reading of ``api.py``'s table the client accepts, one dialect at a time, and is
as strict as the document elsewhere. ``document`` (the default): ``<string xmlns=...>`` token, ASMX's
``{"d": {...}}`` with rows under ``Campaigns`` / ``Members`` and ASMX's ``"__type"`` in every object.
``bare``: ``<string>`` without namespace, bare arrays (one object for a campaign asked by CampId,
``CampaignId``), a report's error as the array's one empty row, ``yyyy-MM-dd HH:mm:ss`` dates, and
StartProcess logged in only by the example's Username/Password/EncryptedId in MyData. ``d-array``:
``{"d": "token"}``, arrays in ``d`` (``null`` when empty), ``/Date(ms)/`` dates, ignored members as
texts, and ReportMembers without Memberids refused with 93 above ``report_members_limit``.
``d-json-text``: a bare JSON string token, ``{"d": "<JSON text>"}`` with rows under ``Data``, en-US
.NET dates (``1/27/2018 2:07:00 PM``). ``lowercase``: a plain-text token, bare objects with camelCase
keys (``errorCode``, ``campId``, ``memberId``, ``reason``), rows nested as the request nests
``Members.Member`` (``{"members": {"member": [...]}}``), statuses without Turkish letters, ISO 8601
dates. ``id-keyed``: rows as objects keyed by CampId / Memberid, ignored members as an object keyed
by Memberid, ``dd/MM/yyyy HH:mm:ss`` dates, and error 40 ("Kampanya yok") for the listing of an
account without a campaign. Every dialect puts an ErrorCode on a failed recipient's row
(``simulate_campaign`` fails about one recipient in twenty with 92).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import time
import uuid
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sync.emails import address_problem, normalize_email
from sync.providers.postatr import api
from sync.sandbox.faults import Fault, FaultInjector, FaultPlan
from sync.sandbox.transport import SandboxApp, answer

_GROUPS = re.compile(r"^\s*[0-9]{1,10}(\s*,\s*[0-9]{1,10})*\s*$")
_TZ = zoneinfo.ZoneInfo(api.SERVICE_TIME_ZONE)
_ERROR_PAGES = {
    500: "<html><body><h1>Server Error in '/' Application.</h1></body></html>",
    502: "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>",
    503: "<html><head><title>Service Unavailable</title></head><body><h2>Service Unavailable</h2></body></html>",
}


@dataclass(frozen=True)
class _Dialect:
    """How one reading of the document answers (see the module's docstring)."""

    login_answer: Literal["xml-ns", "xml", "d-string", "json-string", "text"] = "xml-ns"
    envelope: Literal["d", "bare", "d-text"] = "d"
    rows: Literal["keyed", "array", "id-keyed"] = "keyed"
    row_keys: tuple[str, str] = (api.CAMPAIGNS_FIELD, api.MEMBERS_FIELD)
    campaign_id: str = "CampId"
    camel: bool = False
    ascii_status: bool = False
    dates: Literal["tr", "iso", "iso-t", "ms", "us", "slash"] = "tr"
    single_details: bool = False
    zero_error_on_rows: bool = True
    ignored: Literal["list", "id-keyed", "texts"] = "list"
    failed_status: str = ""
    credentials_only: bool = False
    everyone_limited: bool = False
    #: ASMX ScriptService's ``"__type"`` in every object it writes.
    type_hints: bool = False
    #: Rows nested once more, as the document's request nests ``Members.Member``: ``{"Members": {"Member": [...]}}``.
    nested: bool = False
    #: A report's error as the array's one row, every field empty (a list method's error).
    error_row: bool = False
    #: No rows is ``null`` (a list method returning nothing).
    null_when_empty: bool = False
    #: ReportCampaign without CampId for an account without a campaign: ErrorCode 40 ("Kampanya yok").
    no_campaign_error: bool = False


_DIALECTS: dict[str, _Dialect] = {
    "document": _Dialect(type_hints=True),
    "bare": _Dialect(login_answer="xml", envelope="bare", rows="array", campaign_id="CampaignId", dates="iso",
                     single_details=True, failed_status="Ulaşmadı", credentials_only=True, error_row=True),
    "d-array": _Dialect(login_answer="d-string", rows="array", dates="ms", ignored="texts", everyone_limited=True,
                        null_when_empty=True),
    "d-json-text": _Dialect(login_answer="json-string", envelope="d-text", row_keys=("Data", "Data"), dates="us"),
    "lowercase": _Dialect(login_answer="text", envelope="bare", row_keys=("campaigns", "members"), camel=True,
                          ascii_status=True, dates="iso-t", zero_error_on_rows=False, nested=True),
    "id-keyed": _Dialect(rows="id-keyed", ignored="id-keyed", dates="slash", no_campaign_error=True),
}
#: The .NET type names the ``document`` dialect writes as ``__type`` (ASMX's ScriptService does).
_TYPE_NAMES = ("Postatr.Api.CampaignReport", "Postatr.Api.MemberReport")
_NESTED_KEYS = {"campaigns": "campaign", "members": "member", "Campaigns": "Campaign", "Members": "Member"}
#: The readings this sandbox serves (``dialect=``), the first the default.
DIALECTS: tuple[str, ...] = tuple(_DIALECTS)
_CAMEL = {"ErrorCode": "errorCode", "CampId": "campId", "CampaignId": "campaignId",
          "MailDescription": "mailDescription", "MailSubject": "mailSubject", "Status": "status",
          "SentDate": "sentDate", "OpenCount": "openCount",
          "LastOpenDate": "lastOpenDate", "Memberid": "memberId", "Email": "email", "Reason": "reason"}
_ASCII = str.maketrans({"ş": "s", "ı": "i", "ç": "c", "ğ": "g", "ü": "u", "ö": "o", "Ş": "S", "İ": "I", "Ç": "C",
                        "Ğ": "G", "Ü": "U", "Ö": "O"})
#: About this share of a simulated campaign's recipients fail (ErrorCode 92 on their row).
FAILED_SHARE = 0.05
FAILED_CODE = 92
#: The reason an address the account refuses (``refused_emails``) is ignored with: error 92's text.
REFUSED_REASON = "Bu email adresi belirtilen işlemi yapamıyor"


class _Refused(Exception):
    """Answered with an ErrorCode (HTTP 200)."""

    def __init__(self, code: int, extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.extra = dict(extra or {})


@dataclass
class _Member:
    member_id: str
    email: str
    first_name: str
    last_name: str
    columns: dict[str, str]
    lists: set[str] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)
    active: bool = True
    updated_at: float = 0.0


@dataclass
class _Recipient:
    member_id: str
    email: str
    status: str = "Ulaştı"
    open_count: int = 0
    last_open: float | None = None
    error_code: int = api.NO_ERROR


@dataclass
class _Campaign:
    camp_id: str
    account: str
    description: str
    subject: str
    status: str
    sent_at: float
    recipients: dict[str, _Recipient] = field(default_factory=dict)   # Memberid -> recipient


@dataclass
class _Account:
    username: str
    password: str
    encrypted_id: str
    members: dict[str, _Member] = field(default_factory=dict)        # Memberid -> member
    by_email: dict[str, set[str]] = field(default_factory=dict)      # normalised e-mail -> Memberids


class PostatrSandbox:
    """A stateful, in-memory Postatr; ``.app`` is the Starlette app to mount or serve."""

    def __init__(self, accounts: Mapping[str, tuple[str, str]] | None = None, *, faults: FaultPlan | None = None,
                 clock: Callable[[], float] = time.time, report_members_limit: int = api.REPORT_MEMBERS_LIMIT,
                 seed: int = 0, dialect: str = DIALECTS[0]) -> None:
        if dialect not in _DIALECTS:
            raise ValueError(f"unknown Postatr sandbox dialect {dialect!r}; valid: {', '.join(DIALECTS)}")
        self.dialect = dialect
        self._dialect = _DIALECTS[dialect]
        self.clock = clock
        self.fault_plan = faults or FaultPlan()
        self.report_members_limit = report_members_limit
        self.request_log: list[tuple[str, str, int]] = []   # (method, path, status); 0 = dropped
        #: The ProcessType of every StartProcess received, as sent (None: missing).
        self.process_types: list[str | None] = []
        #: CampIds of campaigns a request started (ThisOnly / AllDatabase).
        self.campaigns_started_by_requests: list[str] = []
        #: The Memberids of every ReportMembers call (to see the chunks a client sends).
        self.report_member_requests: list[int] = []
        self._faults = FaultInjector(self.fault_plan)
        self._rng = random.Random(seed)
        self._accounts: dict[str, _Account] = {}
        self._tokens: dict[str, tuple[str, float]] = {}      # token -> (account, issued at)
        self._campaigns: dict[str, _Campaign] = {}
        #: Normalised addresses the accounts refuse (ignored with REFUSED_REASON, as a blacklist would).
        self.refused_emails: set[str] = set()
        self._next_campaign = 10041
        for username, (password, encrypted_id) in (accounts or {}).items():
            self.add_account(username, password, encrypted_id)
        self.app = SandboxApp(routes=self._routes(), front=self._front)

    # --- public helpers for tests and the demo ------------------------------------------

    def add_account(self, username: str, password: str, encrypted_id: str) -> None:
        self._accounts[username] = _Account(username, password, encrypted_id)

    def members(self, account: str) -> list[dict[str, Any]]:
        """Every member of the account, by Memberid."""
        return [self._render(member) for _, member in sorted(self._accounts[account].members.items())]

    def member(self, account: str, member_id: str) -> dict[str, Any] | None:
        found = self._accounts[account].members.get(member_id)
        return None if found is None else self._render(found)

    def find(self, account: str, email: str) -> list[dict[str, Any]]:
        acc = self._accounts[account]
        return [self._render(acc.members[m]) for m in sorted(acc.by_email.get(normalize_email(email), ()))]

    def list_ids(self, account: str) -> set[str]:
        """Every ListId some member of the account was sent with."""
        return {list_id for member in self._accounts[account].members.values() for list_id in member.lists}

    def unsubscribe(self, account: str, email: str) -> None:
        """A recipient uses the unsubscribe link of a mail: every member with the address stops receiving."""
        acc = self._accounts[account]
        found = acc.by_email.get(normalize_email(email))
        if not found:
            raise KeyError(email)
        for member_id in found:
            acc.members[member_id].active = False

    def expire_tokens(self) -> None:
        """Every token issued so far stops working (as 10 minutes later)."""
        self._tokens.clear()

    def simulate_campaign(self, account: str, subject: str = "Kampanya", *, completed: bool = True) -> str:
        """A campaign sent from the panel to every active member: each recipient delivered (Ulaştı), about
        a third opened (Açtı, 1-3 opens) and about a sixth clicked (Tıkladı)."""
        acc = self._accounts[account]
        camp_id = self._new_campaign(account, subject, subject)
        campaign = self._campaigns[camp_id]
        campaign.status = api.CAMPAIGN_COMPLETED if completed else "Gönderiliyor"
        now = self.clock()
        for member_id, member in sorted(acc.members.items()):
            if not member.active:
                continue
            recipient = _Recipient(member_id, member.email)
            draw = self._rng.random()
            if draw > 1 - FAILED_SHARE:
                recipient.status, recipient.error_code = "", FAILED_CODE
            elif draw < 0.5:
                recipient.status = "Tıkladı" if draw < 0.17 else "Açtı"
                recipient.open_count = self._rng.randint(1, 3)
                recipient.last_open = now - self._rng.randint(0, 3600)
            campaign.recipients[member_id] = recipient
        return camp_id

    def campaign_report(self, camp_id: str) -> list[dict[str, Any]]:
        """Every recipient of a campaign, as the ``document`` dialect's ReportMembers shows it (a failed
        recipient: a non-zero ErrorCode)."""
        campaign = self._campaigns[camp_id]
        return [self._render_recipient(campaign, r) for _, r in sorted(campaign.recipients.items())]

    def write_requests(self) -> int:
        """StartProcess calls (the only write Postatr has)."""
        return sum(1 for _, path, _ in self.request_log if path.rstrip("/").endswith(api.START_PROCESS))

    def reset_log(self) -> None:
        self.request_log.clear()

    # --- the ASGI front ------------------------------------------------------------------

    async def _front(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        path = scope["path"].rstrip("/")
        fault = None
        if not path.endswith(api.AUTHENTICATE):     # the token endpoint is exempt (sync.sandbox.faults)
            fault = await self._faults.before_api_call(write=path.endswith(api.START_PROCESS))
        await answer(scope, receive, send, app, fault, _fault_response, self.request_log)

    def _routes(self) -> list[Route]:
        handlers = {api.AUTHENTICATE: self._authenticate, api.REPORT_CAMPAIGN: self._report_campaign,
                    api.REPORT_MEMBERS: self._report_members, api.START_PROCESS: self._start_process}
        return [Route(f"/api.asmx/{name}", self._endpoint(handler), methods=["POST"])
                for name, handler in handlers.items()]

    def _endpoint(self, handler: Callable[[dict[str, Any]], Response]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            try:
                body = json.loads(await request.body())
            except (ValueError, UnicodeDecodeError):
                return self._error(95)
            if not isinstance(body, dict):
                return self._error(95)
            try:
                return handler(body)
            except _Refused as exc:
                return self._error(exc.code, exc.extra, report=handler != self._start_process)
        return endpoint

    # --- state helpers -------------------------------------------------------------------

    def _stamp(self, ts: float | None) -> str:
        return "" if ts is None else dt.datetime.fromtimestamp(ts, _TZ).strftime(api.DATE_FORMATS[0])

    # --- the dialect: how an answer is written ---------------------------------------------

    def _date(self, ts: float | None) -> str | None:
        kind = self._dialect.dates
        if ts is None:
            return None if kind == "ms" else ""
        if kind == "ms":
            return f"/Date({int(ts * 1000)})/"
        when = dt.datetime.fromtimestamp(ts, _TZ)
        if kind == "iso-t":
            return when.replace(microsecond=0).isoformat()
        if kind == "us":        # .NET's DateTime.ToString() in en-US
            return (f"{when.month}/{when.day}/{when.year} {(when.hour % 12) or 12}:{when:%M:%S} "
                    f"{'PM' if when.hour >= 12 else 'AM'}")
        if kind == "slash":     # .NET's DateTime.ToString() in en-GB
            return when.strftime("%d/%m/%Y %H:%M:%S")
        return when.strftime(api.DATE_FORMATS[2] if kind == "iso" else api.DATE_FORMATS[0])

    def _keys(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        return {_CAMEL.get(key, key): value for key, value in obj.items()} if self._dialect.camel else dict(obj)

    def _status(self, status: str) -> str:
        return status.translate(_ASCII) if self._dialect.ascii_status else status

    def _row(self, row: Mapping[str, Any], dates: Mapping[str, float | None]) -> dict[str, Any]:
        """A report row (canonical keys) as the dialect writes it."""
        out = dict(row)
        out.update({key: self._date(ts) for key, ts in dates.items()})
        if "CampId" in out and self._dialect.campaign_id != "CampId":
            out[self._dialect.campaign_id] = out.pop("CampId")
        code = out.get(api.ERROR_CODE, api.NO_ERROR)
        if code != api.NO_ERROR and "Email" in out:
            out["Status"] = self._dialect.failed_status
        out["Status"] = self._status(str(out.get("Status", "")))
        if code == api.NO_ERROR and not self._dialect.zero_error_on_rows:
            out.pop(api.ERROR_CODE, None)
        return self._keys(out)

    def _rows(self, kind: int, rows: list[dict[str, Any]], id_key: str, *, single: bool = False) -> Response:
        """Rows in the dialect's container (``kind``: 0 campaigns, 1 members)."""
        dialect = self._dialect
        if dialect.type_hints:
            rows = [{"__type": _TYPE_NAMES[kind], **row} for row in rows]
        if single and dialect.single_details and len(rows) == 1:
            return self._answer({api.ERROR_CODE: api.NO_ERROR, **rows[0]})
        if not rows and dialect.null_when_empty:
            return self._answer(None)
        if dialect.rows == "array":
            return self._answer(rows)
        if dialect.rows == "id-keyed":
            key = _CAMEL.get(id_key, id_key) if dialect.camel else id_key
            return self._answer({str(row[key]): {k: v for k, v in row.items() if k != key} for row in rows})
        name = dialect.row_keys[kind]
        holder: Any = {_NESTED_KEYS.get(name, name): rows} if dialect.nested else rows
        return self._answer({name: holder, api.ERROR_CODE: api.NO_ERROR})

    def _answer(self, payload: Any) -> Response:
        """A JSON answer in the dialect's envelope (ErrorCode keys written its way)."""
        if isinstance(payload, dict):
            payload = self._keys(payload)
            if self._dialect.type_hints:
                payload = {"__type": "Postatr.Api.Result", **payload}
        if self._dialect.envelope == "bare":
            return JSONResponse(payload)
        if self._dialect.envelope == "d-text":
            return JSONResponse({api.ANSWER_ENVELOPE: json.dumps(payload, ensure_ascii=False)})
        return JSONResponse({api.ANSWER_ENVELOPE: payload})

    def _ok(self, body: Mapping[str, Any]) -> Response:
        return self._answer({**body, api.ERROR_CODE: api.NO_ERROR})

    def _error(self, code: int, extra: Mapping[str, Any] | None = None, *, report: bool = False) -> Response:
        if report and self._dialect.error_row:     # a report's error as its one, empty row
            empty = {"Email": None, "Status": None, "SentDate": None, "OpenCount": 0, "LastOpenDate": None,
                     "Memberid": None}
            return self._answer([self._keys({**empty, api.ERROR_CODE: code})])
        return self._answer({**(extra or {}), api.ERROR_CODE: code})

    def _ignored_details(self, ignored: list[dict[str, str]]) -> Any:
        kind = self._dialect.ignored
        if kind == "id-keyed":
            return {entry["Memberid"]: entry["Reason"] for entry in ignored}
        if kind == "texts":
            return [f"{entry['Memberid'] or entry['Email']}: {entry['Reason']}" for entry in ignored]
        return [self._keys(entry) for entry in ignored]

    def _token_answer(self, token: str) -> Response:
        kind = self._dialect.login_answer
        if kind == "xml-ns":
            return Response(api.token_answer(token), 200, media_type="text/xml")
        if kind == "xml":
            return Response(f"<string>{token}</string>", 200, media_type="text/xml")
        if kind == "d-string":
            return JSONResponse({api.ANSWER_ENVELOPE: token})
        if kind == "json-string":
            return JSONResponse(token)
        return Response(token, 200, media_type="text/plain")

    @staticmethod
    def _render(member: _Member) -> dict[str, Any]:
        return {"Memberid": member.member_id, "Email": member.email, "FName": member.first_name,
                "LName": member.last_name, "MyColumns": dict(member.columns), "lists": sorted(member.lists),
                "groups": sorted(member.groups), "active": member.active}

    def _render_recipient(self, campaign: _Campaign, recipient: _Recipient) -> dict[str, Any]:
        return {"Memberid": recipient.member_id, "Email": recipient.email, "Status": recipient.status,
                "SentDate": self._stamp(campaign.sent_at), "OpenCount": recipient.open_count,
                "LastOpenDate": self._stamp(recipient.last_open), api.ERROR_CODE: recipient.error_code}

    def _recipient_answer_row(self, campaign: _Campaign, recipient: _Recipient) -> dict[str, Any]:
        row = self._render_recipient(campaign, recipient)
        return self._row(row, {"SentDate": campaign.sent_at, "LastOpenDate": recipient.last_open})

    def _account_of_token(self, body: Mapping[str, Any], *, credentials_allowed: bool = False,
                          credentials_only: bool = False) -> _Account:
        token = None if credentials_only else body.get(api.TOKEN_FIELD)
        if isinstance(token, str) and token in self._tokens:
            account, issued = self._tokens[token]
            if self.clock() - issued < api.TOKEN_LIFETIME_S and self._faults.use_token(token):
                return self._accounts[account]
            del self._tokens[token]
        if credentials_allowed and body.get("Username") is not None:    # the document's StartProcess example
            acc = self._check_credentials(body)
            if acc is not None:
                return acc
        raise _Refused(api.RELOGIN)

    def _check_credentials(self, body: Mapping[str, Any]) -> _Account | None:
        acc = self._accounts.get(str(body.get("Username") or ""))
        if acc is None or body.get("Password") != acc.password or body.get("EncryptedId") != acc.encrypted_id:
            return None
        return acc

    def _index(self, acc: _Account, member: _Member, old_email: str | None) -> None:
        if old_email is not None:
            acc.by_email.get(normalize_email(old_email), set()).discard(member.member_id)
        acc.by_email.setdefault(normalize_email(member.email), set()).add(member.member_id)

    def _new_campaign(self, account: str, description: str, subject: str) -> str:
        camp_id = str(self._next_campaign)
        self._next_campaign += 1
        self._campaigns[camp_id] = _Campaign(camp_id, account, description, subject, "Kuyrukta", self.clock())
        return camp_id

    def _campaign_of(self, acc: _Account, camp_id: Any) -> _Campaign:
        campaign = self._campaigns.get(str(camp_id or "").strip())
        if campaign is None:
            raise _Refused(40)
        if campaign.account != acc.username:
            raise _Refused(41)
        return campaign

    # --- methods -------------------------------------------------------------------------

    def _authenticate(self, body: dict[str, Any]) -> Response:
        acc = self._check_credentials(body)
        if acc is None:
            return self._token_answer(api.ZERO_GUID)
        token = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        self._tokens[token] = (acc.username, self.clock())
        return self._token_answer(token)

    def _report_campaign(self, body: dict[str, Any]) -> Response:
        acc = self._account_of_token(body)
        if body.get("CampId") in (None, ""):
            campaigns = [c for _, c in sorted(self._campaigns.items()) if c.account == acc.username]
            if not campaigns and self._dialect.no_campaign_error:
                raise _Refused(api.NO_CAMPAIGN)
            return self._rows(0, [self._render_campaign(c, details=False) for c in campaigns],
                              self._dialect.campaign_id)
        campaign = self._campaign_of(acc, body.get("CampId"))
        return self._rows(0, [self._render_campaign(campaign, details=True)], self._dialect.campaign_id,
                          single=True)

    def _render_campaign(self, campaign: _Campaign, *, details: bool) -> dict[str, Any]:
        row: dict[str, Any] = {"CampId": campaign.camp_id, "MailDescription": campaign.description,
                               "MailSubject": campaign.subject, "Status": campaign.status}
        dates: dict[str, float | None] = {"SentDate": campaign.sent_at}
        if details:
            opens = [r.last_open for r in campaign.recipients.values() if r.last_open is not None]
            row["OpenCount"] = sum(r.open_count for r in campaign.recipients.values())
            dates["LastOpenDate"] = max(opens) if opens else None
        return self._row(row, dates)

    def _report_members(self, body: dict[str, Any]) -> Response:
        acc = self._account_of_token(body)
        campaign = self._campaign_of(acc, body.get("CampId"))
        wanted = body.get("Memberids")
        if wanted is None:
            ids = sorted(campaign.recipients)
        elif not isinstance(wanted, list) or not all(isinstance(i, str) for i in wanted):
            raise _Refused(96)
        else:
            ids = list(dict.fromkeys(wanted))
        self.report_member_requests.append(len(ids))
        if len(ids) > self.report_members_limit and (wanted is not None or self._dialect.everyone_limited):
            raise _Refused(api.TOO_MANY_TO_REPORT)
        rows = [self._recipient_answer_row(campaign, campaign.recipients[i]) for i in ids if i in campaign.recipients]
        return self._rows(1, rows, "Memberid")

    def _start_process(self, body: dict[str, Any]) -> Response:
        data = body.get("MyData")
        if not isinstance(data, dict):
            raise _Refused(96)
        acc = self._account_of_token(data, credentials_allowed=True,
                                     credentials_only=self._dialect.credentials_only)
        process_type = data.get("ProcessType")
        self.process_types.append(process_type if isinstance(process_type, str) else None)
        if not isinstance(process_type, str) or not process_type.strip():
            raise _Refused(101)
        if process_type not in api.PROCESS_TYPES:
            raise _Refused(102)
        segmentation = data.get("SegmentationFilter")
        if not isinstance(segmentation, str) or not segmentation.strip():
            raise _Refused(7)
        list_id = data.get("ListId")
        groups = data.get("MemberGroups", api.NO_GROUPS)
        members = (data.get("Members") or {}).get("Member") if isinstance(data.get("Members"), dict) else None
        if not isinstance(list_id, str) or not api.is_guid(list_id) or not isinstance(members, list) \
                or len(members) > api.MAX_MEMBERS_PER_PROCESS or not isinstance(groups, str | int) \
                or not _GROUPS.match(str(groups)):
            raise _Refused(96)
        group_set = {g for g in api.normalize_groups(str(groups)).split(",") if g != api.NO_GROUPS}
        inserted, updated, ignored = self._upsert(acc, list_id.lower(), group_set, members)
        result: dict[str, Any] = {"campid": "", "inserted": inserted, "updated": updated, "ignored": len(ignored),
                                  "ignored_details": self._ignored_details(ignored)}
        if inserted + updated == 0:
            raise _Refused(api.NOTHING_PROCESSED, result)
        if process_type != api.DATA_ONLY:
            result["campid"] = self._start_campaign(acc, process_type, data, members)
        return self._ok(result)

    def _upsert(self, acc: _Account, list_id: str, groups: set[str], members: list[Any]
                ) -> tuple[int, int, list[dict[str, str]]]:
        inserted = updated = 0
        ignored: list[dict[str, str]] = []
        now = self.clock()
        for entry in members:
            if not isinstance(entry, dict):
                ignored.append({"Memberid": "", "Email": "", "Reason": "Gerekli veri hatalı"})
                continue
            member_id = str(entry.get("Memberid") or "").strip()
            email = str(entry.get("Email") or "").strip()
            columns = entry.get("MyColumns") or {}
            # (the document states no length: none is refused; an address is "hatalı" by api.py's reading)
            reason = ("Memberid boş" if not member_id else
                      "Email adresi hatalı" if address_problem(email, utf8_local=api.ADDRESS_UTF8_LOCAL,
                                                                idn=api.ADDRESS_IDN) else
                      REFUSED_REASON if normalize_email(email) in self.refused_emails else
                      "Gerekli veri hatalı" if not isinstance(columns, dict) else None)
            if reason is not None:
                ignored.append({"Memberid": member_id, "Email": email, "Reason": reason})
                continue
            found = acc.members.get(member_id)
            if found is None:
                found = acc.members[member_id] = _Member(member_id, email, "", "", {})
                self._index(acc, found, None)
                inserted += 1
            else:
                updated += 1
            old_email = found.email
            found.email, found.first_name, found.last_name = email, str(entry.get("FName") or ""), \
                str(entry.get("LName") or "")
            found.columns.update({str(k): "" if v is None else str(v) for k, v in columns.items()})
            found.lists.add(list_id)
            found.groups |= groups
            found.updated_at = now
            self._index(acc, found, old_email)
        return inserted, updated, ignored

    def _start_campaign(self, acc: _Account, process_type: str, data: Mapping[str, Any], members: list[Any]) -> str:
        subject = str(data.get("MailSubject") or "")
        if not subject:
            raise _Refused(71)
        if len(subject) < 3:
            raise _Refused(72)
        if process_type == "ThisOnly":
            ids = {str(m.get("Memberid")) for m in members if isinstance(m, dict)}
        elif str(data.get("SegmentationFilter")).replace(" ", "") == api.SEGMENTATION_NOBODY:
            raise _Refused(18)
        else:
            ids = set(acc.members)
        camp_id = self._new_campaign(acc.username, str(data.get("MailDescription") or ""), subject)
        campaign = self._campaigns[camp_id]
        for member_id in sorted(ids):
            member = acc.members.get(member_id)
            if member is not None and member.active:
                campaign.recipients[member_id] = _Recipient(member_id, member.email)
        self.campaigns_started_by_requests.append(camp_id)
        return camp_id



def _fault_response(fault: Fault) -> Response:
    """A 429 with Retry-After, or a 5xx page as IIS in front of the service would give it."""
    if fault.kind == "rate_limit":
        return Response("Too Many Requests", 429, headers={"Retry-After": f"{fault.retry_after_s:g}"},
                        media_type="text/plain")
    return Response(_ERROR_PAGES[fault.status], fault.status, media_type="text/html")


__all__ = ["DIALECTS", "PostatrSandbox"]
