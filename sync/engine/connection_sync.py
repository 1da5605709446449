"""One connection's run: pull statuses, lists, members, reports (DESIGN.md, "The data flow").

The provider is seen only through ``sync.providers.base.Provider`` and its Capabilities.

Crash safety: before a batch goes out, a *provisional* link (no remote id, empty hash) is
committed for every member the provider has not seen from us yet, so a crash after the
provider accepted but before our commit still leaves a trace to delete or update later.
After the batch, ONE transaction commits the links, the rejects, the statuses, the lease
renewal and the watermark. Creates never touch an existing contact (the provider's client
creates with its "do not update" switch and reads an existing contact back before changing it).

Consent: a push never turns a contact the provider holds as unsubscribed, bounced or complained
back to active. Statuses are pulled first; right before a batch updates existing contacts, the
provider is asked for suppressions that appeared since (``refresh_statuses``) and the batch is
planned again if there are any; a contact the provider reports as suppressed while we push is
recorded, not overwritten. Our own "unsubscribed" push, pulled back, is an echo, not a suppression.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, sessionmaker

from sync.crm import CrmMember, CrmReader, source_digest
from sync.emails import email_digest, normalize_email, valid_email
from sync.engine.activity import pull_activity
from sync.engine.ahead import read_ahead
from sync.engine.bulk import analyze, one_of, update_by_key, upsert
from sync.engine.reports import pull_reports
from sync.engine.state import position_for, renew_lease, set_position, set_watermark, watermark_for
from sync.errors import FatalError, ProviderError, RejectedRow
from sync.fields import FieldMap, convert
from sync.models import (
    EMAIL,
    ID,
    Erasure,
    IysConsent,
    ListLink,
    MemberLink,
    MemberStatus,
    Reject,
    utcnow,
)
from sync.providers.base import (
    LEFT_UNSUBSCRIBED,
    SUPPRESSION_RANK,
    ConsentPull,
    ListPush,
    MappedLists,
    MemberDelete,
    MemberKey,
    MemberPush,
    MemberSnapshot,
    MemberUpsert,
    Provider,
    PushOutcome,
    RemoteStatus,
    ReportPull,
    StatusPull,
    payload_hash,
)
from sync.providers.specs import COMMON_SETTINGS
from sync.sql import text_array

log = structlog.get_logger(__name__)
T = TypeVar("T")

MEMBERS_STREAM = "members"
STATUSES_STREAM = "statuses"
#: When the CRM was last searched for member ids deleted without a trace.
VANISHED_STREAM = "vanished_check"
CONSENTS_STREAM = "consents"
#: ``crm_change_xid`` mode: the CRM transaction id from which the next run reads changes.
MEMBERS_XID_STREAM = "members_xid"
#: Up to when this connection has re-planned members whose suppressions (from any provider of the
#: tenant) or İYS states changed; read with a margin for the clocks of other workers.
SUPPRESSIONS_SEEN_STREAM = "suppressions_seen"
SUPPRESSIONS_SEEN_MARGIN = dt.timedelta(minutes=5)
#: Statuses that stop a member from being pushed as active; a soft bounce is only information.
BLOCKING = frozenset({"unsubscribed", "complaint", "hard_bounce"})
#: An İYS RET pulled from the tenant's İYS integrator (iys_consents), as a suppression.
IYS_RET = "iys_ret"
#: A row the PROVIDER refused is retried after 1 h, 2 h, 4 h ... at most a day (unless it changes).
REJECT_BACKOFF_MAX = dt.timedelta(hours=24)
#: A row we refuse before sending (bad address, e-mail held by another member, a field value the
#: provider cannot take). It is planned again when the member changes, when another member
#: releases the address it waits for (``_load_chunk``), and otherwise with the provider backoff:
#: an unchanged row would be refused the same way, and re-planning every such row on every run
#: made a run with no change O(rejects) (4,000 members at 1,000,000).
VALIDATION = "validation"
#: A member waits for a list that does not exist at the provider yet (refused or failed create).
LIST_PENDING = "list_pending"
#: A CRM value longer than our tables hold: reported once, retried when the row changes.
TOO_LONG = "too_long"
#: Reject codes of our own re-checked on every run (the others back off).
EVERY_RUN = frozenset({LIST_PENDING})
#: The reason of a removal because the member is in no list any more.
LEFT_EVERY_LIST = "left every list"
#: ``status_pushed`` of a link whose record the provider keeps unsubscribed after the member left
#: its list: not removed again; only a KVKK erasure deletes it.
LEFT_KEPT = "left_kept"
#: A member deleted in the CRM (soft or hard delete): a KVKK erasure, audited (``erasures``).
ERASED = "deleted in the CRM"
#: The reject of a removal the provider cannot make (``member_removal == "none"``).
REMOVAL_UNSUPPORTED = "removal_unsupported"
#: Longest list name the daemon stores and sends.
LIST_NAME_MAX = 255
#: Pulled statuses stored per transaction while a pull streams in.
STATUS_CHUNK = 5000
#: Values per IN (...) list: one query per batch of the largest providers (1,000).
IN_CHUNK = 1000
MEMBER_LINKS = cast(sa.Table, MemberLink.__table__)
MEMBER_STATUSES = cast(sa.Table, MemberStatus.__table__)
#: Our tables whose planner statistics a large load makes stale (sync.engine.bulk.analyze).
LOADED_TABLES = (MEMBER_LINKS, MEMBER_STATUSES, cast(sa.Table, Reject.__table__))
#: Statistics are refreshed once this many rows were written since the last refresh, and (in the
#: middle of a run) the rows written since then at least equal all those written before it: a
#: first sync of N members analyzes O(log N) times, a small run never.
ANALYZE_MIN_ROWS = 10_000
#: The unique key of a link, and the part of it that varies within a connection.
LINK_KEY = ("connection_id", "crm_member_id", "crm_list_id")
LINK_MATCH = ("crm_member_id", "crm_list_id")
#: What the provider's answer writes into a link.
ANSWER_COLUMNS = ("email", "payload_hash", "remote_id", "remote_lists", "pushed_at", "status_pushed", "source_digest")
#: Part of every member's source digest (sync.crm.source_digest): bump it when planning changes
#: what it makes of the same CRM row, so that the next backfill plans every member again.
PLAN_VERSION = "1"
#: A member_links row as planning reads it: plain columns (id, email, remote_id, remote_lists,
#: payload_hash, status_pushed, ...), no ORM object per row.
LinkRow = sa.Row[Any]


@dataclass(frozen=True)
class RunOptions:
    dry_run: bool = False
    #: Ignore watermarks: compare every CRM row with its link (also finds hard deletes). Members
    #: whose CRM row and lists are those their links were last reconciled from are not planned.
    backfill: bool = False
    #: (backfill) Plan every member, also those whose CRM row is unchanged.
    replan_all: bool = False
    #: Go on although the run would remove more than the connection's mass-delete limits.
    allow_mass_delete: bool = False
    #: The scheduled fire time this run is for (the daemon's jobs): a tick another replica has
    #: already run is skipped (runner.claim_tick).
    tick: dt.datetime | None = None


#: Default limits of the mass-delete guard (connection settings ``max_delete_members`` and
#: ``max_delete_percent``, sync.providers.specs.COMMON_SETTINGS): a run that would remove more
#: stops before it sends anything.
MAX_DELETE_MEMBERS = int(COMMON_SETTINGS["max_delete_members"].default)
MAX_DELETE_PERCENT = float(COMMON_SETTINGS["max_delete_percent"].default)
#: Below this many linked members (or lists) the percentage limit does not apply.
MASS_DELETE_MIN_BASE = 100


class MassDeleteRefused(FatalError):
    """The run would remove more members or lists than the connection allows."""


@dataclass
class Plan:
    """What a run does (or, dry, would do)."""

    lists_create: list[str] = field(default_factory=list)
    lists_rename: list[tuple[str, str]] = field(default_factory=list)
    lists_delete: list[str] = field(default_factory=list)
    lists_rejected: list[tuple[str, str]] = field(default_factory=list)
    members_add: list[str] = field(default_factory=list)
    members_update: list[str] = field(default_factory=list)
    members_remove: list[str] = field(default_factory=list)
    blocked_by_suppression: list[str] = field(default_factory=list)
    invalid: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class _Suppression:
    connection_id: int
    status: str
    occurred_at: dt.datetime
    #: "" for the whole account (and so every provider of the tenant); else one remote list only.
    remote_list: str = ""


@dataclass
class _Chunk:
    ids: list[str] = field(default_factory=list)
    upserts: list[MemberUpsert] = field(default_factory=list)
    deletes: list[MemberDelete] = field(default_factory=list)
    invalid: list[tuple[MemberKey, str | None, str, str]] = field(default_factory=list)  # key, email, reason, code
    links: dict[MemberKey, LinkRow] = field(default_factory=dict)
    hashes: dict[MemberKey, str] = field(default_factory=dict)
    statuses: dict[MemberKey, str] = field(default_factory=dict)
    #: Links whose lists changed only because a list went away at the provider: fixed locally.
    rehash: list[dict[str, Any]] = field(default_factory=list)
    #: (member, list) waiting for a list that does not exist at the provider; and those no longer waiting.
    pending: list[tuple[MemberKey, str | None, str]] = field(default_factory=list)
    unpend: list[MemberKey] = field(default_factory=list)
    #: Members gone from the CRM: their open rejects are resolved.
    gone: list[str] = field(default_factory=list)
    #: Members planned to the end, with the source digest their links get once the push is done;
    #: and (member, link id, digest) of their existing links whose stored digest differs.
    sources: dict[str, str] = field(default_factory=dict)
    settled: list[tuple[str, int, str]] = field(default_factory=list)


def _merge(into: _Chunk, plan: _Chunk) -> None:
    """Add one planned chunk to a window's plan, keeping only the links a push or its commit
    reads (those of the members it upserts or removes), so a window of unchanged members holds
    little more than their ids."""
    into.ids += plan.ids
    into.upserts += plan.upserts
    into.deletes += plan.deletes
    into.invalid += plan.invalid
    touched = {item.key for item in plan.upserts} | {item.key for item in plan.deletes}
    into.links.update((key, link) for key, link in plan.links.items() if key in touched)
    into.hashes.update(plan.hashes)
    into.statuses.update(plan.statuses)
    into.rehash += plan.rehash
    into.pending += plan.pending
    into.unpend += plan.unpend
    into.gone += plan.gone
    into.sources.update(plan.sources)
    into.settled += plan.settled


@dataclass
class _Window:
    """Planned chunks waiting to be pushed together (``Capabilities.push_window``): a provider
    that groups a push into its own requests sends fewer, fuller ones from a larger window."""

    plan: _Chunk = field(default_factory=_Chunk)
    #: The planned chunks' member ids, each with the newest change it covers.
    chunks: list[tuple[Sequence[str], dt.datetime | None]] = field(default_factory=list)
    covered_until: dt.datetime | None = None
    members: int = 0
    _planned: set[str] = field(default_factory=set)
    _emails: set[str] = field(default_factory=set)

    def overlaps(self, plan: _Chunk) -> bool:
        """The chunk was planned without what the window will write: it needs a member the window
        holds, or pushes an address the window pushes or removes (two CRM rows with one address,
        the second planned before the first one's link exists)."""
        return not self._planned.isdisjoint(plan.ids) or not self._emails.isdisjoint(_addresses(plan))

    def add(self, chunk_ids: Sequence[str], plan: _Chunk, covered_until: dt.datetime | None) -> None:
        _merge(self.plan, plan)
        self.chunks.append((chunk_ids, covered_until))
        self._planned.update(plan.ids)
        self._emails.update(_addresses(plan))
        self.members += len(chunk_ids)
        if covered_until is not None and (self.covered_until is None or covered_until > self.covered_until):
            self.covered_until = covered_until

    def full(self, push_window: int, max_batch: int) -> bool:
        """Enough to push (``push_window`` upserts and removals), or as many members planned as
        a window may hold (so a window of unchanged members is committed too)."""
        work = len(self.plan.upserts) + len(self.plan.deletes)
        return work >= push_window or self.members >= max(push_window, max_batch)

    def clear(self) -> None:
        self.plan, self.chunks, self.covered_until, self.members = _Chunk(), [], None, 0
        self._planned, self._emails = set(), set()


def _addresses(plan: _Chunk) -> set[str]:
    return {item.email for item in plan.upserts} | {normalize_email(item.email) for item in plan.deletes}


def _chunks(items: Sequence[Any], size: int = IN_CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class ConnectionSync:
    """Runs the phases of one connection. Built by the runner, called once."""

    def __init__(self, *, sessions: sessionmaker[Session], crm: CrmReader, provider: Provider,
                 connection_id: int, tenant_id: int, run_id: int, lease_owner: str, lease_seconds: int,
                 lookback: dt.timedelta, until: dt.datetime, options: RunOptions,
                 report_refresh: dt.timedelta = dt.timedelta(hours=6),
                 vanished_check: dt.timedelta | None = dt.timedelta(hours=20),
                 mass_delete_limits: tuple[int, float] = (MAX_DELETE_MEMBERS, MAX_DELETE_PERCENT),
                 fields: tuple[FieldMap, ...] = (), plan_salt: str = "",
                 on_progress: Callable[[str, int, int], None] | None = None) -> None:
        self.sessions = sessions
        self.fields = fields
        #: What shapes a plan besides the CRM row (settings, planner version): in every source digest.
        self._salt = f"{PLAN_VERSION}:{plan_salt}"
        self.crm = crm
        self.provider = provider
        self.caps = caps = provider.capabilities
        # The provider seen through the capability protocols it declares (check_provider verified them).
        self.list_api = cast(ListPush, provider) if caps.lists == "create" else None
        self.mapped_api = cast(MappedLists, provider) if caps.lists == "mapped" else None
        self.member_api = cast(MemberPush, provider) if caps.pushes_members else None
        self.status_api = cast(StatusPull, provider) if caps.status_pull != "none" else None
        self.report_api = cast(ReportPull, provider) if caps.has_campaign_reports else None
        self.consent_api = cast(ConsentPull, provider) if caps.pulls_consents else None
        #: This run's start by the worker's clock (the clock that stamps member_statuses.pulled_at).
        self.started_at = utcnow()
        self.connection_id = connection_id
        self.tenant_id = tenant_id
        self.run_id = run_id
        self.lease_owner = lease_owner
        self.lease_seconds = lease_seconds
        self.lookback = lookback
        self.until = until
        self.options = options
        self.report_refresh = report_refresh
        self.vanished_check = vanished_check
        self.mass_delete_limits = mass_delete_limits
        self.on_progress = on_progress
        #: The CRM reads of the members phase, made once (the mass-delete guard reads them first).
        self._changed: list[tuple[dt.datetime, str]] | None = None
        self._xid_mark: int | None = None
        self._vanished: tuple[bool, list[str]] | None = None
        self.counts: Counter[str] = Counter()
        self.plan = Plan()
        #: CRM lists whose members must be planned again this run (list created, re-created, deleted).
        self._requeue_lists: set[str] = set()
        #: Remote lists that went away (deleted by us, or missing at the provider): a link that
        #: differs only by them is corrected locally, without a write.
        self._gone_remote: set[str] = set()
        #: Remote lists that were missing at the provider: their contacts are pushed again even
        #: when their hash is unchanged (the provider may have lost them, or reuse the list id).
        self._lost_remote: set[str] = set()
        #: Dry run only: the statuses a real run would store, and the e-mails whose hash it would clear.
        self._dry_statuses: dict[tuple[str, str], _Suppression] = {}
        self._dry_cleared: set[str] = set()
        #: The CRM's live lists (set by sync_lists): a membership of a deleted list waits for nothing.
        self._crm_lists: set[str] | None = None
        #: Rows written to our own link and status tables since their statistics were last refreshed.
        self._rows_written = 0
        self._rows_at_analyze = 0
        #: Our database's dialect: lookups by many keys are written for it (sync.engine.bulk.one_of).
        bind = sessions.kw.get("bind")
        self._dialect = bind.dialect.name if bind is not None else ""
        #: Address -> members with an open validation reject on it (see _waiting_for).
        self._waiting: dict[str, set[str]] | None = None

    # --- helpers --------------------------------------------------------------------------

    def _in(self, column: Any, values: Sequence[Any]) -> Any:
        return one_of(self._dialect, column, values)

    def _checkpoint(self, session: Session) -> None:
        if not self.options.dry_run:
            renew_lease(session, self.connection_id, self.lease_owner, self.lease_seconds)

    def _refresh_statistics(self, *, final: bool) -> None:
        """ANALYZE our tables after a large load, so that the next lookups (this run's next
        chunks, the next run) do not plan a scan on a table the planner still thinks is small:
        a server behind on autovacuum, or with it off, keeps stale statistics indefinitely."""
        fresh = self._rows_written - self._rows_at_analyze
        if self.options.dry_run or fresh < ANALYZE_MIN_ROWS or (not final and fresh < self._rows_at_analyze):
            return
        with self.sessions() as session:
            analyze(session, LOADED_TABLES, reason="end of run" if final else "large load", rows=fresh)
        self._rows_at_analyze = self._rows_written
        self.counts["statistics_refreshed"] += 1

    def _read_since(self, stream: str) -> dt.datetime | None:
        if self.options.backfill:
            return None
        with self.sessions() as session:
            mark = watermark_for(session, self.connection_id, stream)
        return None if mark is None else mark - self.lookback

    # --- 2. pull statuses -----------------------------------------------------------------

    async def pull_statuses(self) -> None:
        """Unsubscribes, bounces and complaints into member_statuses (see _record_statuses)."""
        since = self._read_since(STATUSES_STREAM)
        if self.status_api is None:
            return
        if not self.options.dry_run:
            await self._store_pulled_statuses(self.status_api.pull_statuses(since))
            return
        pulled = [status async for status in self.status_api.pull_statuses(since)]
        self.counts["statuses_seen"] += len(pulled)
        # Plan with what the real run would store, and store nothing: the plan then equals
        # the run that follows.
        with self.sessions() as session:
            changed = self._record_statuses(session, pulled)
            for part in _chunks(sorted(changed)):
                for row in session.scalars(sa.select(MemberStatus).where(
                        MemberStatus.connection_id == self.connection_id, MemberStatus.email.in_(part))):
                    self._dry_statuses[(row.email, row.remote_list_id)] = _Suppression(
                        self.connection_id, row.status, row.occurred_at, row.remote_list_id)
            self._dry_cleared.update(changed)
            session.rollback()

    async def _store_pulled_statuses(self, pulled: AsyncIterator[RemoteStatus]) -> None:
        """Store a pull as it streams in, ``STATUS_CHUNK`` statuses per transaction (memory flat in
        the size of a full scan); the watermark moves in the last transaction, after all of them
        (storing a status again is a no-op, so a crash in between only repeats work)."""
        newest: dt.datetime | None = None
        chunk: list[RemoteStatus] = []

        def store(rows: list[RemoteStatus], *, last: bool) -> None:
            with self.sessions.begin() as session:
                self._record_statuses(session, rows)
                if last and newest is not None:
                    previous = watermark_for(session, self.connection_id, STATUSES_STREAM)
                    set_watermark(session, self.connection_id, STATUSES_STREAM, max(newest, previous or newest))
                self._checkpoint(session)

        async for status in pulled:
            self.counts["statuses_seen"] += 1
            newest = status.occurred_at if newest is None else max(newest, status.occurred_at)
            chunk.append(status)
            if len(chunk) >= STATUS_CHUNK:
                store(chunk, last=False)
                chunk = []
        store(chunk, last=True)
        self._refresh_statistics(final=True)

    def _record_statuses(self, session: Session, pulled: Sequence[RemoteStatus]) -> set[str]:
        """Store pulled statuses; return the e-mails whose status was new or changed.

        The stored time only moves forward and the stored status only gets stronger, so a later
        unsubscribe after a complaint still beats an older CRM consent. An "unsubscribed" for a
        contact whose last push from us was "unsubscribed" is our own echo and is not stored:
        what the recipient did and what we pushed stay distinct. Only contacts whose status
        changed lose their link hash (a full-scan provider returns every suppressed contact on
        every pull; the unchanged ones must not be pushed again).
        """
        emails = sorted({s.email for s in pulled})
        # (email, scope) -> the stored row's columns, as plain dicts: a full-scan pull sees every
        # suppressed contact of the account, and no ORM object is built per row.
        existing: dict[tuple[str, str], dict[str, Any]] = {}
        echoes: set[str] = set()
        # e-mail -> (remote lists, pushed at) of its links pushed "active", where an undated status came
        undated = any(not s.dated for s in pulled)
        pushed_active: dict[str, list[tuple[tuple[str, ...], dt.datetime]]] = {}
        columns = ("email", "remote_list_id", "remote_id", "status", "occurred_at", "pulled_at")
        for part in _chunks(emails):
            existing.update(((row.email, row.remote_list_id), dict(row._mapping)) for row in session.execute(
                sa.select(*(MEMBER_STATUSES.c[name] for name in columns)).where(
                    MEMBER_STATUSES.c.connection_id == self.connection_id, self._in(MEMBER_STATUSES.c.email, part))))
            echoes.update(session.scalars(sa.select(MemberLink.email).where(
                MemberLink.connection_id == self.connection_id, self._in(MemberLink.email, part),
                MemberLink.status_pushed == "unsubscribed")))
            if undated:
                for email, remote_lists, pushed_at in session.execute(sa.select(
                        MemberLink.email, MemberLink.remote_lists, MemberLink.pushed_at).where(
                        MemberLink.connection_id == self.connection_id, self._in(MemberLink.email, part),
                        MemberLink.status_pushed == "active")):
                    pushed_active.setdefault(email, []).append((tuple(remote_lists or ()), pushed_at))
        changed: set[str] = set()
        writes: dict[tuple[str, str], dict[str, Any]] = {}
        now = utcnow()
        for status in pulled:
            # Only an unsubscribe can be one list's; a complaint or a hard bounce blocks everything.
            scope = status.remote_list[:ID] if status.status == "unsubscribed" else ""
            key = (status.email, scope)
            if status.status == "unsubscribed" and status.email in echoes and key not in existing:
                self.counts["status_echoes_ignored"] += 1
                continue
            row = existing.get(key)
            if row is None:
                existing[key] = writes[key] = {
                    "email": status.email, "remote_list_id": scope, "remote_id": status.remote_id,
                    "status": status.status, "occurred_at": status.occurred_at, "pulled_at": now}
                if status.status in BLOCKING:     # a soft bounce is stored as information only
                    changed.add(status.email)
                continue
            stronger = SUPPRESSION_RANK[status.status] > SUPPRESSION_RANK[row["status"]]
            later = status.occurred_at > row["occurred_at"]
            if later and not status.dated:
                # An undated status (its time is this pull's) seen again keeps the time first seen,
                # unless we pushed the contact active after it (a re-subscribe): then it is a new one.
                later = any(pushed_at > row["occurred_at"] and (not scope or scope in lists)
                            for lists, pushed_at in pushed_active.get(status.email, ()))
            if stronger or later:
                row["status"] = status.status if stronger else row["status"]
                row["occurred_at"] = max(row["occurred_at"], status.occurred_at)
                # A soft bounce seen again with a later time is no news (our own update of the
                # contact moves the provider's update date); only a blocking status's time matters
                # (it is compared with the CRM's consent date).
                if stronger or row["status"] in BLOCKING:
                    row["pulled_at"] = now
                    changed.add(status.email)
                writes[key] = row
        upsert(session, MEMBER_STATUSES, [{"tenant_id": self.tenant_id, "connection_id": self.connection_id, **row}
                                          for row in writes.values()],
               key=("connection_id", "email", "remote_list_id"), update=("status", "occurred_at", "pulled_at"))
        self._rows_written += len(writes)
        self.counts["statuses_pulled"] += len(changed)
        for part in _chunks(sorted(changed)):
            session.execute(sa.update(MemberLink).where(
                MemberLink.connection_id == self.connection_id, MemberLink.email.in_(part))
                .values(payload_hash="", source_digest=None).execution_options(synchronize_session=False))
        return changed

    # --- 2b. İYS consents -----------------------------------------------------------------

    async def pull_consents(self) -> None:
        """İYS states from a provider that is the tenant's İYS integrator, into iys_consents. A
        state only moves to a newer consent date; a RET blocks the e-mail channel at every provider
        of the tenant until the CRM records a newer ONAY (see _load_suppressions)."""
        if self.consent_api is None:
            return
        pulled = [consent async for consent in self.consent_api.pull_consents(self._read_since(CONSENTS_STREAM))]
        self.counts["consents_seen"] += len(pulled)
        if self.options.dry_run or not pulled:
            return
        with self.sessions.begin() as session:
            existing: dict[tuple[str, str, str], IysConsent] = {}
            for part in _chunks(sorted({c.recipient for c in pulled})):
                for found in session.scalars(sa.select(IysConsent).where(
                        IysConsent.connection_id == self.connection_id, IysConsent.recipient.in_(part))):
                    existing[(found.recipient, found.consent_type, found.recipient_type)] = found
            for consent in pulled:
                key = (consent.recipient[:EMAIL], consent.channel, consent.recipient_type)
                row = existing.get(key)
                if row is None:
                    existing[key] = IysConsent(
                        tenant_id=self.tenant_id, connection_id=self.connection_id, recipient=key[0],
                        consent_type=consent.channel, recipient_type=consent.recipient_type, status=consent.status,
                        consent_date=consent.consent_date, source=consent.source)
                    session.add(existing[key])
                elif consent.consent_date > row.consent_date:
                    row.status, row.consent_date, row.source = consent.status, consent.consent_date, consent.source
                    row.pulled_at = utcnow()
                else:
                    continue
                self.counts["consents_pulled"] += 1
            newest = max(c.consent_date for c in pulled)
            previous = watermark_for(session, self.connection_id, CONSENTS_STREAM)
            set_watermark(session, self.connection_id, CONSENTS_STREAM, max(newest, previous or newest))
            self._checkpoint(session)

    def _members_with_new_suppressions(self, session: Session) -> list[str]:
        """Linked members of this connection whose address got a suppression or an İYS state at
        ANY provider of the tenant since this connection last looked: they are planned again, so
        an unsubscribe at one provider reaches the others without waiting for a CRM change."""
        mark = watermark_for(session, self.connection_id, SUPPRESSIONS_SEEN_STREAM)
        if mark is None:
            return []
        since = mark - SUPPRESSIONS_SEEN_MARGIN
        emails = set(session.scalars(sa.select(MemberStatus.email).where(
            MemberStatus.tenant_id == self.tenant_id, MemberStatus.pulled_at > since,
            MemberStatus.status.in_(sorted(BLOCKING)))))
        emails.update(session.scalars(sa.select(IysConsent.recipient).where(
            IysConsent.tenant_id == self.tenant_id, IysConsent.pulled_at > since, IysConsent.status == "RET")))
        found: set[str] = set()
        for part in _chunks(sorted(emails)):
            found.update(session.scalars(sa.select(MemberLink.crm_member_id).where(
                MemberLink.connection_id == self.connection_id, MemberLink.email.in_(part))))
        return sorted(found)

    # --- the mass-delete guard ------------------------------------------------------------

    def _changed_members(self) -> list[tuple[dt.datetime, str]]:
        if self._changed is None:
            since_xid = None
            if self.crm.change_xid and not self.options.backfill:
                with self.sessions() as session:
                    since_xid = position_for(session, self.connection_id, MEMBERS_XID_STREAM)
            self._xid_mark = self.crm.change_xid_mark()     # before the read: see CrmReader
            self._changed = self.crm.changed_member_ids(self._read_since(MEMBERS_STREAM), self.until, since_xid)
        return self._changed

    def _vanished_members_due(self) -> tuple[bool, list[str]]:
        if self._vanished is None:
            with self.sessions() as session:
                # A backfill looks for them too (and its mass-delete guard counts them).
                due = self.options.backfill or self._vanished_check_due(session)
                self._vanished = (due, [m for page in self._vanished_pages() for m in page] if due else [])
        return self._vanished

    def check_mass_delete(self) -> None:
        """Before anything is sent: count what the run would remove and stop above the limits.

        Counted: linked members whose CRM row vanished (when the vanished check is due), linked
        members among the changed ones whose row is soft-deleted, and linked lists the CRM no
        longer has. This is what a broken CRM view looks like (no rows, or every row deleted). A
        member leaving one list is not counted. Raises MassDeleteRefused (one line: the numbers,
        the limits, and how to go on)."""
        limit, percent = self.mass_delete_limits
        with self.sessions() as session:
            # Whether anything is linked: one indexed row, not a count of every link (O(N) on a run
            # that changes nothing); the count is made only when there is something to remove.
            any_linked = session.scalar(sa.select(MemberLink.id).where(
                MemberLink.connection_id == self.connection_id).limit(1)) is not None
            linked_lists = set(session.scalars(sa.select(ListLink.crm_list_id).where(
                ListLink.connection_id == self.connection_id)))
            with_links = [] if self.options.backfill else [m for _, m in self._changed_members()]
        if not any_linked and not linked_lists:
            return
        vanished = self._vanished_members_due()[1]
        with self.sessions() as session:
            if self.options.backfill:    # every member changed: one read of the soft-deleted ones instead
                deleted = self._linked_among(session, self.crm.soft_deleted_member_ids())
            else:
                deleted = self.crm.deleted_member_ids(self._linked_among(session, with_links))
        removals = len(set(vanished) | set(deleted))
        live_lists = {item.id for item in self.crm.lists() if not item.deleted}
        lists_gone = len(linked_lists - live_lists)
        self.counts["members_to_remove"] = removals
        linked = 0
        if removals or lists_gone:
            with self.sessions() as session:
                linked = session.scalar(sa.select(sa.func.count(sa.distinct(MemberLink.crm_member_id))).where(
                    MemberLink.connection_id == self.connection_id)) or 0
        too_many = removals > limit or (linked >= MASS_DELETE_MIN_BASE and 100.0 * removals / linked > percent)
        too_many_lists = lists_gone > 1 and 100.0 * lists_gone / max(len(linked_lists), 1) > percent
        if not (too_many or too_many_lists) or self.options.allow_mass_delete:
            return
        if self.options.dry_run:
            self.plan.invalid.append(("(mass delete)", f"a real run would stop: {removals} members and "
                                                       f"{lists_gone} lists to remove"))
            return
        share = 100.0 * removals / linked if linked else 0.0
        raise MassDeleteRefused(
            f"this run would remove {removals} of {linked} members ({share:.0f} %) and {lists_gone} of "
            f"{len(linked_lists)} lists, above the connection's limits (max_delete_members={limit}, "
            f"max_delete_percent={percent:g}); nothing was sent. Check the CRM views (`crm-esp-sync crm check`), "
            "then run `crm-esp-sync once --allow-mass-delete` if the removals are meant")

    def _linked_among(self, session: Session, member_ids: Sequence[str]) -> list[str]:
        found: list[str] = []
        for part in _chunks(sorted(set(member_ids))):
            found += session.scalars(sa.select(MemberLink.crm_member_id).distinct().where(
                MemberLink.connection_id == self.connection_id, MemberLink.crm_member_id.in_(part)))
        return found

    # --- 3. lists -------------------------------------------------------------------------

    async def sync_lists(self) -> dict[str, str]:
        """Create, rename and delete lists; return CRM list id -> remote list id.

        A linked list that no longer exists at the provider (deleted in its panel, or a provider
        that lost its state) loses its link and is created or adopted again, and its members are
        planned again. A problem with one list is that list's reject; the other lists go on.
        """
        if self.caps.lists == "none":
            return {}
        crm_lists = {item.id: item for item in self.crm.lists() if not item.deleted}
        self._crm_lists = set(crm_lists)
        with self.sessions() as session:
            links = {link.crm_list_id: link for link in session.scalars(
                sa.select(ListLink).where(ListLink.connection_id == self.connection_id))}
        if self.mapped_api is not None:
            return self._sync_mapped_lists(self.mapped_api, crm_lists, links)
        assert self.list_api is not None
        if links:
            await self._drop_links_of_missing_lists(self.list_api, links)
        mapping: dict[str, str] = {}
        taken = {link.remote_list_id for link in links.values()}     # incl. lists about to be deleted
        for crm_id, item in sorted(crm_lists.items()):
            link = links.get(crm_id)
            problem = self._list_problem(item.name) if len(crm_id) <= ID else \
                f"the CRM list id is {len(crm_id)} characters long; at most {ID} fit"
            if problem is not None:
                self._list_reject(crm_id, problem, VALIDATION)
                continue
            try:
                if link is None and self.caps.supports_list_create:
                    self.plan.lists_create.append(item.name)
                    if self.options.dry_run:
                        mapping[crm_id] = f"(new list {crm_id})"
                        self._requeue_lists.add(crm_id)
                        continue
                    found = [r for r in await self.list_api.find_lists(item.name) if r.remote_id not in taken]
                    remote = found[0] if found else await self.list_api.create_list(item.name)
                    with self.sessions.begin() as session:
                        session.add(ListLink(connection_id=self.connection_id, crm_list_id=crm_id,
                                             remote_list_id=remote.remote_id, name_pushed=item.name,
                                             adopted=bool(found)))
                        self._resolve_list_reject(session, crm_id)
                        self._checkpoint(session)
                    taken.add(remote.remote_id)
                    self._requeue_lists.add(crm_id)
                    self.counts["lists_adopted" if found else "lists_created"] += 1
                    link_remote = remote.remote_id
                elif link is not None:
                    link_remote = link.remote_list_id
                    if link.name_pushed != item.name and self.caps.supports_list_rename:
                        self.plan.lists_rename.append((link.name_pushed, item.name))
                        if not self.options.dry_run:
                            await self.list_api.rename_list(link.remote_list_id, item.name)
                            with self.sessions.begin() as session:
                                session.get_one(ListLink, link.id).name_pushed = item.name
                                self._resolve_list_reject(session, crm_id)
                                self._checkpoint(session)
                            self.counts["lists_renamed"] += 1
                else:
                    continue
            except FatalError:
                raise
            except ProviderError as exc:   # its members wait for the list; everything else goes on
                self._list_reject(crm_id, f"list {item.name!r}: {exc.message}", exc.provider_code or "provider")
                if link is None:
                    continue
                link_remote = link.remote_list_id
            mapping[crm_id] = link_remote
        for crm_id, link in sorted(links.items()):
            if crm_id in crm_lists:
                continue
            self.plan.lists_delete.append(link.name_pushed)
            if self.options.dry_run:    # plan exactly what the real run will do after the delete
                if not link.adopted:
                    self._gone_remote.add(link.remote_list_id)
                self._requeue_lists.add(crm_id)
                continue
            try:
                # Only what we created is deleted; an adopted list is emptied of our members at most.
                if self.caps.supports_list_delete and not link.adopted:
                    await self.list_api.delete_list(link.remote_list_id)
            except FatalError:
                raise
            except ProviderError as exc:
                self._list_reject(crm_id, f"delete list {link.name_pushed!r}: {exc.message}",
                                  exc.provider_code or "provider")
                continue
            if not link.adopted:
                self._gone_remote.add(link.remote_list_id)
            self._requeue_lists.add(crm_id)
            with self.sessions.begin() as session:
                session.execute(sa.delete(ListLink).where(ListLink.id == link.id))
                self._resolve_list_reject(session, crm_id)
                self._checkpoint(session)
            self.counts["lists_deleted"] += 1
        return mapping

    def _sync_mapped_lists(self, api: MappedLists, crm_lists: dict[str, Any], links: dict[str, ListLink]
                           ) -> dict[str, str]:
        """Lists made in the provider's panel: the connection maps CRM lists to them. A CRM list
        without a mapping is that list's reject (its members wait, visibly); a mapping that
        changed moves the list's members; a remote list is never created, renamed or deleted."""
        mapped = api.mapped_lists()
        mapping: dict[str, str] = {}
        for crm_id, item in sorted(crm_lists.items()):
            remote, link = mapped.get(crm_id), links.get(crm_id)
            if remote is None:
                self._list_reject(crm_id, f"CRM list {crm_id} ({item.name!r}) has no mapping to a provider list; "
                                  "add it to the connection's `lists` setting", "unmapped")
                if link is not None:
                    self._forget_list_link(link)
                continue
            mapping[crm_id] = remote.remote_id
            if link is not None and link.remote_list_id == remote.remote_id:
                continue
            self._requeue_lists.add(crm_id)
            self.counts["lists_mapped"] += 1
            if self.options.dry_run:
                continue
            with self.sessions.begin() as session:
                if link is not None:
                    session.execute(sa.delete(ListLink).where(ListLink.id == link.id))
                session.add(ListLink(connection_id=self.connection_id, crm_list_id=crm_id,
                                     remote_list_id=remote.remote_id, name_pushed=item.name[:LIST_NAME_MAX],
                                     adopted=True))
                self._resolve_list_reject(session, crm_id)
                self._checkpoint(session)
        for crm_id, link in sorted(links.items()):
            if crm_id not in crm_lists:      # only unlinked: a mapped list is never deleted
                self._forget_list_link(link)
        return mapping

    def _forget_list_link(self, link: ListLink) -> None:
        """Drop a link without touching the remote list; its members are planned again (they
        leave that list)."""
        self._requeue_lists.add(link.crm_list_id)
        if self.options.dry_run:
            return
        with self.sessions.begin() as session:
            session.execute(sa.delete(ListLink).where(ListLink.id == link.id))
            self._checkpoint(session)

    async def _drop_links_of_missing_lists(self, api: ListPush, links: dict[str, ListLink]) -> None:
        present = {remote.remote_id for remote in await api.all_lists()}
        for crm_id, link in sorted(links.items()):
            if link.remote_list_id in present:
                continue
            log.warning("list.missing_at_provider", crm_list_id=crm_id, remote_list_id=link.remote_list_id)
            self.counts["lists_missing_at_provider"] += 1
            self._gone_remote.add(link.remote_list_id)
            self._lost_remote.add(link.remote_list_id)
            self._requeue_lists.add(crm_id)
            del links[crm_id]
            if not self.options.dry_run:
                with self.sessions.begin() as session:
                    session.execute(sa.delete(ListLink).where(ListLink.id == link.id))
                    self._checkpoint(session)

    @staticmethod
    def _list_problem(name: str | None) -> str | None:
        if not (name or "").strip():
            return "the list has an empty name"
        if len(name or "") > LIST_NAME_MAX:
            return f"the list name is {len(name or '')} characters long; at most {LIST_NAME_MAX} fit"
        return None

    def _list_reject(self, crm_list_id: str, reason: str, code: str) -> None:
        """A list's problem, as a reject row with an empty member id (one per list)."""
        self.counts["lists_rejected"] += 1
        self.plan.lists_rejected.append((crm_list_id, reason))
        log.warning("list.rejected", crm_list_id=crm_list_id, reason=reason)
        if self.options.dry_run:
            return
        with self.sessions.begin() as session:
            rejects = self._open_rejects(session, [""], lists=[crm_list_id[:ID]])
            self._reject(session, rejects, MemberKey("", crm_list_id[:ID]), None,
                         RejectedRow(reason, provider_code=code))

    def _resolve_list_reject(self, session: Session, crm_list_id: str) -> None:
        session.execute(sa.update(Reject).where(
            Reject.connection_id == self.connection_id, Reject.crm_member_id == "",
            Reject.crm_list_id == crm_list_id, Reject.resolved_at.is_(None)).values(resolved_at=utcnow())
            .execution_options(synchronize_session=False))

    # --- 4/5. members, with a checkpoint per batch ---------------------------------------

    async def push_members(self, list_map: dict[str, str]) -> None:
        if self.member_api is None:
            return
        changed = [] if self.options.backfill else self._changed_members()
        vanished_due, vanished = self._vanished_members_due()
        with self.sessions() as session:
            retry = self._rejects_due(session)
            requeued = self._requeued_members(session)
            suppressed = self._members_with_new_suppressions(session)
        changed_at = {member_id: at for at, member_id in changed}
        # Changed members first, oldest change first: each chunk's watermark then covers every
        # change before it. Retries, re-planned list members and vanished ids come after the
        # changes. A backfill then streams every CRM member, page by page (flat memory).
        ordered = list(dict.fromkeys([*(m for _, m in changed), *retry, *requeued, *suppressed, *vanished]))
        total = len(ordered) + (self.crm.member_count() if self.options.backfill else 0)
        considered = 0
        done = 0
        window = _Window()
        for chunk_ids in self._member_chunks(ordered):
            if chunk_ids:
                considered += len(chunk_ids)
                covered = max((changed_at[m] for m in chunk_ids if m in changed_at), default=None)
                done += await self._add_chunk(window, chunk_ids, covered, list_map)
            if self.on_progress:
                skipped = self.counts["members_skipped_unchanged"]
                self.on_progress("members", min(done + window.members + skipped, total),
                                 max(total, considered + skipped))
        done += await self._flush(window, list_map)
        self.counts["members_considered"] = considered
        self.counts["members_vanished"] = len(vanished)
        if not self.options.dry_run:
            with self.sessions.begin() as session:
                if not self.options.backfill:
                    current = watermark_for(session, self.connection_id, MEMBERS_STREAM)
                    set_watermark(session, self.connection_id, MEMBERS_STREAM, max(self.until, current or self.until))
                if vanished_due or self.options.backfill:
                    current = watermark_for(session, self.connection_id, VANISHED_STREAM)
                    set_watermark(session, self.connection_id, VANISHED_STREAM, max(self.until, current or self.until))
                if self._xid_mark is not None:
                    set_position(session, self.connection_id, MEMBERS_XID_STREAM, self._xid_mark)
                current = watermark_for(session, self.connection_id, SUPPRESSIONS_SEEN_STREAM)
                set_watermark(session, self.connection_id, SUPPRESSIONS_SEEN_STREAM,
                              max(self.started_at, current or self.started_at))
                self._checkpoint(session)
            self._refresh_statistics(final=True)
        self.counts["link_and_status_rows_written"] = self._rows_written

    def _vanished_check_due(self, session: Session) -> bool:
        if self.options.backfill or self.vanished_check is None:
            return False
        mark = watermark_for(session, self.connection_id, VANISHED_STREAM)
        return mark is None or self.until - mark >= self.vanished_check

    def _member_chunks(self, ordered: list[str]) -> Iterator[Sequence[str]]:
        """The run's members in chunks of ``max_batch``: ``ordered`` (with the vanished ones), then
        (backfill) every CRM member whose CRM state differs from the one its links were last
        reconciled from, streamed (an empty chunk: a page compared, nothing to plan in it)."""
        size = self.caps.max_batch
        yield from _chunks(ordered, size)
        if not self.options.backfill:
            return
        head = set(ordered)
        if self.options.replan_all:
            for ids in self.crm.member_id_pages():
                yield from _chunks([m for m in ids if m not in head], size)
            return
        for sources in self._ahead(self.crm.member_source_pages(self._salt), "crm-digest-pages"):
            differing = self._differing([entry for entry in sources if entry[0] not in head])
            yield from _chunks(differing, size) if differing else [()]

    def _ahead(self, pages: Iterator[T], name: str) -> Iterator[T]:
        """``pages`` with the next one read by a thread while this one is compared (the CRM's server
        and ours work at once); not on SQLite, whose connections stay in their thread."""
        if "sqlite" in (self._dialect, self.crm.engine.dialect.name):
            return pages
        return read_ahead(pages, name=name)

    def _differing(self, page: Sequence[tuple[str, str, bool]]) -> list[str]:
        """The members of a page of (id, source digest, in a live list?) that must be planned: every
        link of a member holds the digest of its current CRM state, or it is planned; a member
        with no link is planned when it is in a list (it may be new, or refused for a reason that
        is gone). PostgreSQL compares on the server (``_differing_by_server``); elsewhere our
        database answers one row a member: the least and the greatest of its links' digests
        (both equal to the CRM's digest, or the member differs)."""
        if self._dialect == "postgresql":
            differing = self._differing_by_server(page)
            self.counts["members_skipped_unchanged"] += len(page) - len(differing)
            return differing
        stored: dict[str, tuple[str, str]] = {}
        ids = [member_id for member_id, _, _ in page]
        links = MEMBER_LINKS.c
        held = sa.func.coalesce(links.source_digest, "")
        with self.sessions() as session:
            connection = session.connection()      # (core rows: no ORM loading for 10,000 of them)
            for part in _chunks(ids, IN_CHUNK):
                for member_id, least, greatest in connection.execute(
                        sa.select(links.crm_member_id, sa.func.min(held), sa.func.max(held)).where(
                            links.connection_id == self.connection_id, self._in(links.crm_member_id, part))
                        .group_by(links.crm_member_id)).all():
                    stored[member_id] = (least, greatest)
        differing = []
        for member_id, digest, in_a_list in page:
            found = stored.get(member_id)
            if (found is None and not in_a_list) or found == (digest, digest):
                self.counts["members_skipped_unchanged"] += 1
            else:
                differing.append(member_id)
        return differing

    def _differing_by_server(self, page: Sequence[tuple[str, str, bool]]) -> list[str]:
        """``_differing`` on PostgreSQL: the page goes to the server as three arrays and only the
        members that differ come back (a few per cent of a page, not a row for each member)."""
        if not page:
            return []
        text = postgresql.ARRAY(sa.String())
        crm = sa.func.unnest(text_array([member_id for member_id, _, _ in page], text),
                             text_array([digest for _, digest, _ in page], text),
                             text_array(["t" if in_a_list else "f" for _, _, in_a_list in page], text)
                             ).table_valued("id", "digest", "in_a_list").render_derived(name="crm")
        links = MEMBER_LINKS.alias("links")
        # (one probe of the links' index a member, for both questions: 30 % less than two EXISTS)
        held = sa.select(sa.func.count().label("links"),
                         sa.func.count().filter(links.c.source_digest.is_distinct_from(crm.c.digest)).label("stale")
                         ).where(links.c.connection_id == self.connection_id, links.c.crm_member_id == crm.c.id
                                 ).lateral("held")
        query = sa.select(crm.c.id).select_from(crm.join(held, sa.true())).where(
            sa.or_(held.c.stale > 0, sa.and_(held.c.links == 0, crm.c.in_a_list == "t")))
        with self.sessions() as session:
            found = set(session.connection().scalars(query).all())
        return [member_id for member_id, _, _ in page if member_id in found]

    def _linked_id_pages(self, size: int = 10_000) -> Iterator[list[str]]:
        """The ids of this connection's linked members, ``size`` at a time, by keyset."""
        last: str | None = None
        while True:
            links = MEMBER_LINKS.c
            query = sa.select(links.crm_member_id).distinct().where(links.connection_id == self.connection_id)
            if last is not None:
                query = query.where(links.crm_member_id > last)
            with self.sessions() as session:
                page = list(session.connection().scalars(query.order_by(links.crm_member_id).limit(size)).all())
            if page:
                yield page
            if len(page) < size:
                return
            last = page[-1]

    def _vanished_pages(self) -> Iterator[list[str]]:
        """Linked members whose CRM row is gone without a trace (a hard delete), page by page: each
        page of our linked ids is looked up in the CRM (ids only, flat memory)."""
        for page in self._ahead(self._linked_id_pages(), "linked-id-pages"):
            if self.crm.all_exist(page):
                continue
            existing = self.crm.existing_member_ids(page)
            gone = [member_id for member_id in page if member_id not in existing]
            if gone:
                yield gone

    def _requeued_members(self, session: Session) -> list[str]:
        """Members of lists created, re-created or deleted this run: their lists changed."""
        if not self._requeue_lists:
            return []
        found = set(self.crm.member_ids_in_lists(sorted(self._requeue_lists)))
        for part in _chunks(sorted(self._requeue_lists)):
            found.update(session.scalars(sa.select(MemberLink.crm_member_id).where(
                MemberLink.connection_id == self.connection_id, MemberLink.crm_list_id.in_(part))))
        as_text = sa.type_coerce(MemberLink.remote_lists, sa.Text)
        for remote_id in sorted(self._gone_remote):
            found.update(session.scalars(sa.select(MemberLink.crm_member_id).where(
                MemberLink.connection_id == self.connection_id, as_text.like(f'%"{remote_id}"%'))))
        return sorted(found)

    def _rejects_due(self, session: Session) -> list[str]:
        """Members with an open reject to try again: those waiting for a list every run, the others
        (the provider's refusals, our validation) with an exponential backoff."""
        due = []
        for member_id, code, attempts, last_seen in session.execute(
                sa.select(Reject.crm_member_id, Reject.provider_code, Reject.attempts, Reject.last_seen_at).where(
                    Reject.connection_id == self.connection_id, Reject.resolved_at.is_(None),
                    Reject.crm_member_id != "")):
            if code == TOO_LONG:
                continue
            wait = min(dt.timedelta(hours=2 ** max(attempts - 1, 0)), REJECT_BACKOFF_MAX)
            # (a backfill tries every one again: it compares no CRM digest for them)
            if code in EVERY_RUN or last_seen + wait <= self.until or self.options.backfill:
                due.append(member_id)
        return list(dict.fromkeys(due))

    def _load_suppressions(self, session: Session, emails: Iterable[str]) -> dict[str, list[_Suppression]]:
        found: dict[str, list[_Suppression]] = defaultdict(list)
        for part in _chunks(sorted(set(emails))):
            for row in session.execute(sa.select(MemberStatus.email, MemberStatus.connection_id, MemberStatus.status,
                                                 MemberStatus.occurred_at, MemberStatus.remote_list_id).where(
                    MemberStatus.tenant_id == self.tenant_id, self._in(MemberStatus.email, part))):
                if row.status in BLOCKING and not (row.connection_id == self.connection_id
                                                   and (row.email, row.remote_list_id) in self._dry_statuses):
                    found[row.email].append(_Suppression(row.connection_id, row.status, row.occurred_at,
                                                         row.remote_list_id))
            # İYS RET pulled from the tenant's İYS integrator: the e-mail channel is refused at
            # every provider of the tenant until the CRM records a newer ONAY.
            # A RET that is not newer than our own "unsubscribed" push to that provider is the echo
            # of the CRM's own earlier RET (we push the CRM's consent fields), not the recipient's.
            pushed_unsubscribed = {(row.connection_id, row.email): row.pushed_at for row in session.execute(
                sa.select(MemberLink.connection_id, MemberLink.email, MemberLink.pushed_at).where(
                    self._in(MemberLink.email, part), MemberLink.status_pushed == "unsubscribed",
                    MemberLink.connection_id.in_(sa.select(IysConsent.connection_id).where(
                        IysConsent.tenant_id == self.tenant_id).scalar_subquery())))}
            for recipient, connection_id, consent_date in session.execute(
                    sa.select(IysConsent.recipient, IysConsent.connection_id, IysConsent.consent_date).where(
                        IysConsent.tenant_id == self.tenant_id, self._in(IysConsent.recipient, part),
                        IysConsent.consent_type == "EPOSTA", IysConsent.status == "RET")):
                echo_until = pushed_unsubscribed.get((connection_id, recipient))
                if echo_until is not None and consent_date <= echo_until:
                    continue
                found[recipient].append(_Suppression(connection_id, IYS_RET, consent_date))
        wanted = set(emails)
        for (email, _), suppression in self._dry_statuses.items():
            if email in wanted and suppression.status in BLOCKING:
                found[email].append(suppression)
        return found

    def _status_for(self, member: CrmMember, suppressions: Sequence[_Suppression]) -> tuple[str, str | None, bool]:
        """(status to push, why it must not be pushed at all, re-subscribe). A suppression stands
        unless the CRM holds a consent dated after it; one that no longer stands at THIS provider
        means the push deliberately makes the contact active again."""
        refused = (member.consent_status or "").upper() == "RET"
        onay = (member.consent_status or "").upper() == "ONAY"
        standing = [s for s in suppressions if not s.remote_list and (
            member.consent_date is None or member.consent_date <= s.occurred_at or (s.status == IYS_RET and not onay))]
        if any(s.connection_id == self.connection_id for s in standing):
            return "unsubscribed", "suppressed at this provider", False
        if standing and not self.caps.supports_unsubscribe:
            return "unsubscribed", "suppressed at another provider; this one cannot unsubscribe", False
        status = "unsubscribed" if refused or standing else "active"
        superseded = any(s.connection_id == self.connection_id and not s.remote_list for s in suppressions)
        return status, None, status == "active" and superseded

    def _blocked_lists(self, member: CrmMember, suppressions: Sequence[_Suppression]) -> set[str]:
        """Remote lists of this provider the member unsubscribed from (a per-list unsubscribe):
        they block that list only, until a newer CRM consent."""
        return {s.remote_list for s in suppressions if s.remote_list and s.connection_id == self.connection_id
                and (member.consent_date is None or member.consent_date <= s.occurred_at)}

    def _link_holders(self, session: Session, emails: Iterable[str]) -> set[str]:
        """Which CRM members hold these e-mails in their links at this provider."""
        found: set[str] = set()
        for part in _chunks(sorted(set(emails))):
            found.update(session.scalars(sa.select(MemberLink.crm_member_id).where(
                MemberLink.connection_id == self.connection_id, self._in(MemberLink.email, part))))
        return found

    def _waiting_for(self, session: Session, emails: Iterable[str]) -> set[str]:
        """Members refused because another member held one of these addresses (an open validation
        reject on it): planned with the members that hold or held it, so a released address
        reaches its next owner in the same run."""
        if self._waiting is None:     # read once a run (they are few), then kept up by _reject
            self._waiting = defaultdict(set)
            for member_id, email in session.execute(sa.select(Reject.crm_member_id, Reject.email).where(
                    Reject.connection_id == self.connection_id, Reject.resolved_at.is_(None),
                    Reject.provider_code == VALIDATION, Reject.crm_member_id != "", Reject.email.is_not(None))):
                self._waiting[str(email)].add(member_id)
        return {member_id for email in emails for member_id in self._waiting.get(email, ())}

    def _load_chunk(self, session: Session, chunk_ids: Sequence[str]
                    ) -> tuple[list[str], dict[str, CrmMember], dict[str, dict[str, LinkRow]]]:
        """The chunk's CRM rows and links, plus every member whose link holds an address one of
        them now has, and every member waiting for an address one of them has or had (e-mail
        swaps and moves converge in one run because both sides are planned together, from the
        CRM's current state)."""
        ids = list(dict.fromkeys(chunk_ids))
        members: dict[str, CrmMember] = {}
        links_of: dict[str, dict[str, LinkRow]] = defaultdict(dict)
        fresh = ids
        for _ in range(4):
            members.update((m.id, m) for m in self.crm.members(fresh))
            for part in _chunks(fresh):
                for found in session.execute(sa.select(MEMBER_LINKS).where(
                        MEMBER_LINKS.c.connection_id == self.connection_id,
                        self._in(MEMBER_LINKS.c.crm_member_id, part))):
                    links_of[found.crm_member_id][found.crm_list_id] = found
            emails = {normalize_email(members[m].email) for m in fresh if m in members} - {""}
            held = {link.email for m in fresh for link in links_of.get(m, {}).values()}
            known = set(ids)
            fresh = sorted((self._link_holders(session, emails) | self._waiting_for(session, emails | held)) - known)
            if not fresh:
                break
            ids += fresh
        return ids, members, links_of

    def _plan_chunk(self, session: Session, chunk_ids: Sequence[str], list_map: dict[str, str]) -> _Chunk:
        ids, members, links_of = self._load_chunk(session, chunk_ids)
        plan = _Chunk(ids=ids)
        for links in links_of.values():
            for found in links.values():
                plan.links[MemberKey(found.crm_member_id, found.crm_list_id)] = found
        emails = {m.id: normalize_email(m.email) for m in members.values()}
        old_emails = {link.email for links in links_of.values() for link in links.values()}
        suppressions = self._load_suppressions(session, [*emails.values(), *old_emails])
        owner = self._owners(ids, members, emails, links_of)
        per_list = self.caps.membership_model == "per_list"
        for member_id in ids:
            member = members.get(member_id)
            links = links_of.get(member_id, {})
            if member is None or member.deleted:
                for gone in links.values():
                    self._delete(plan, gone, ERASED)
                plan.gone.append(member_id)
                continue
            if len(member_id) > ID:
                plan.invalid.append((MemberKey(member_id[:ID]), member.email,
                                     f"the CRM member id is {len(member_id)} characters long; at most {ID} fit",
                                     TOO_LONG))
                continue
            email = emails[member_id]
            if not valid_email(email):
                if links or member.list_ids:
                    plan.invalid.append((MemberKey(member_id), member.email, "invalid e-mail address", VALIDATION))
                continue
            if owner.get(email) != member_id:
                plan.invalid.append((MemberKey(member_id), email,
                                     f"e-mail also belongs to CRM member {owner.get(email)}; "
                                     "the provider keeps one contact per e-mail", VALIDATION))
                continue
            previous_emails = {link.email for link in links.values()}
            own = [s for e in {email, *previous_emails} for s in suppressions.get(e, ())]
            status, blocked, resubscribe = self._status_for(member, own)
            if blocked is not None:
                if member.list_ids:
                    self.plan.blocked_by_suppression.append(email)
                self._settle(plan, member, links)
                continue
            for crm_list in sorted(member.list_ids):
                if crm_list in list_map or (self._crm_lists is not None and crm_list not in self._crm_lists):
                    plan.unpend.append(MemberKey(member_id, crm_list))
                else:
                    plan.pending.append((MemberKey(member_id, crm_list), email,
                                         f"waits for list {crm_list}, which does not exist at the provider yet"))
            if status == "unsubscribed" and not links:
                continue    # never create a contact for someone who refused or unsubscribed
            try:
                snapshot = MemberSnapshot(
                    email=email, first_name=member.first_name, last_name=member.last_name, phone=member.phone,
                    city=member.city, status=status,  # type: ignore[arg-type]
                    consent_status=member.consent_status, consent_date=member.consent_date,
                    consent_source=member.consent_source, recipient_type=member.recipient_type,
                    fields=convert(self.fields, member.extra) if self.fields else {}, email_as_written=member.email)
                assert self.member_api is not None
                payload = self.member_api.build_payload(snapshot)
            except RejectedRow as exc:
                plan.invalid.append((MemberKey(member_id), email, exc.reason, exc.provider_code or VALIDATION))
                continue
            wanted = sorted(crm_list for crm_list in member.list_ids if crm_list in list_map)
            if per_list:
                unsubscribed_from = self._blocked_lists(member, own)
                superseded_lists = {s.remote_list for s in own if s.remote_list
                                    and s.connection_id == self.connection_id} - unsubscribed_from
                for crm_list in wanted:
                    link = links.get(crm_list)
                    if list_map[crm_list] in unsubscribed_from:   # left alone: not re-subscribed, not removed
                        self.plan.blocked_by_suppression.append(email)
                        continue
                    if link is not None and link.email != email and self.caps.member_key == "email":
                        self._delete(plan, link, "e-mail changed")
                        link = None
                    if status == "unsubscribed" and link is None:
                        continue    # never create a record for someone who refused or unsubscribed
                    self._upsert(plan, MemberKey(member_id, crm_list), email, payload, (list_map[crm_list],),
                                 link, status, resubscribe or (status == "active"
                                                               and list_map[crm_list] in superseded_lists))
                for crm_list, stale in links.items():
                    if crm_list not in wanted and stale.status_pushed != LEFT_KEPT:
                        self._delete(plan, stale, "left the list")
                self._settle(plan, member, links)
            else:
                link = links.get("")
                if link is not None and link.email != email and self.caps.member_key == "email":
                    self._delete(plan, link, "e-mail changed")
                    link = None
                if not wanted:
                    # Leaving the last list is a removal, as never having been in one (once: a link
                    # kept as "unsubscribed, no lists" is that removal already done).
                    if link is not None and not (link.status_pushed == "unsubscribed" and not link.remote_lists):
                        self._delete(plan, link, LEFT_EVERY_LIST)
                    self._settle(plan, member, links)
                    continue
                self._upsert(plan, MemberKey(member_id), email, payload, tuple(list_map[c] for c in wanted), link,
                             status, resubscribe)
                self._settle(plan, member, links)
        return plan

    def _settle(self, plan: _Chunk, member: CrmMember, links: dict[str, LinkRow]) -> None:
        """The member is planned to the end: once its push is done without a refusal, its links
        hold the digest of the CRM state it was planned from (the next backfill skips it)."""
        digest = source_digest(member.row_digest, member.list_ids, self._salt)
        plan.sources[member.id] = digest
        plan.settled += [(member.id, link.id, digest) for link in links.values() if link.source_digest != digest]

    @staticmethod
    def _owners(ids: Sequence[str], members: dict[str, CrmMember], emails: dict[str, str],
                links_of: dict[str, dict[str, LinkRow]]) -> dict[str, str]:
        """e-mail -> the one CRM member it belongs to, from the CRM's CURRENT state: among the live
        members that now have it, the one whose link already holds it, else the first by id."""
        claims: dict[str, list[str]] = defaultdict(list)
        for member_id in ids:
            member = members.get(member_id)
            if member is not None and not member.deleted and emails.get(member_id):
                claims[emails[member_id]].append(member_id)
        owner = {}
        for email, claimants in claims.items():
            holding = [m for m in claimants if any(link.email == email for link in links_of.get(m, {}).values())]
            owner[email] = (holding or sorted(claimants))[0]
        return owner

    def _upsert(self, plan: _Chunk, key: MemberKey, email: str, payload: dict[str, Any],
                remote_lists: tuple[str, ...], link: LinkRow | None, status: str, resubscribe: bool) -> None:
        digest = payload_hash(payload, remote_lists)
        lost = link is not None and bool(self._lost_remote.intersection(link.remote_lists))
        if link is not None and link.email == email and link.payload_hash == digest and not lost \
                and link.email not in self._dry_cleared:
            self.counts["members_unchanged"] += 1
            return
        if link is not None and link.email == email and link.remote_id and self._gone_remote and not lost \
                and set(remote_lists) <= set(link.remote_lists) \
                and set(link.remote_lists) - set(remote_lists) <= self._gone_remote \
                and payload_hash(payload, link.remote_lists) == link.payload_hash:
            # Only lists that went away at the provider differ: the provider already agrees.
            self.counts["members_rehashed"] += 1
            plan.rehash.append({"id": link.id, "remote_lists": list(remote_lists), "payload_hash": digest})
            return
        # A provider keyed by our member id keeps the contact through an address change (an update).
        known = link is not None and (link.email == email or self.caps.member_key == "crm_id")
        # Making active again a contact that only OUR push had unsubscribed is not a re-subscribe
        # over the recipient's will: the provider's "unsubscribed" is our own echo.
        resubscribe = resubscribe or (status == "active" and known and link is not None
                                      and link.status_pushed == "unsubscribed")
        (self.plan.members_update if known and link and link.remote_id else self.plan.members_add).append(email)
        plan.hashes[key] = digest
        plan.statuses[key] = status
        plan.upserts.append(MemberUpsert(key, email, payload, remote_lists,
                                         tuple(r for r in link.remote_lists if r not in self._lost_remote)
                                         if known and link else (),
                                         link.remote_id if known and link else None, resubscribe=resubscribe))

    def _delete(self, plan: _Chunk, link: LinkRow, why: str) -> None:
        self.plan.members_remove.append(f"{link.email} ({why})")
        plan.deletes.append(MemberDelete(MemberKey(link.crm_member_id, link.crm_list_id), link.email,
                                         link.remote_id, tuple(link.remote_lists), reason=why))

    async def _remove(self, plan: _Chunk) -> list[PushOutcome]:
        """Removals, as far as the provider can do them (``capabilities.member_removal``): deleted,
        or unsubscribed (and anonymised where it allows) by the provider; where it can do neither,
        each removal stays an open reject saying what a person must do in the provider's panel."""
        if self.caps.member_removal == "none":
            return [PushOutcome(item.key, rejected=RejectedRow(
                f"{self.provider.name} cannot remove members through its API: remove {item.email} "
                f"({item.reason}) in its panel", provider_code=REMOVAL_UNSUPPORTED)) for item in plan.deletes]
        assert self.member_api is not None
        outcomes = await self.member_api.delete_members(plan.deletes)
        for outcome in outcomes:
            if outcome.rejected is None and outcome.suppressed is None:
                self.counts[f"members_{outcome.action}"] += 1
        return outcomes

    async def _refresh_before_updates(self, plan: _Chunk) -> bool:
        """Ask the provider for suppressions that appeared since the pull, in the lists of the
        contacts this batch updates; True when some were new (the batch is planned again)."""
        lists = sorted({remote for item in plan.upserts if item.remote_id
                        for remote in (*item.remote_lists, *item.previous_remote_lists)})
        if not lists:
            return False
        if self.status_api is None:
            return False
        fresh = [status async for status in self.status_api.refresh_statuses(lists)]
        if not fresh:
            return False
        with self.sessions.begin() as session:
            changed = self._record_statuses(session, fresh)
            self._checkpoint(session)
        self.counts["statuses_refreshed"] += len(changed)
        return bool(changed)

    async def _add_chunk(self, window: _Window, chunk_ids: Sequence[str], covered: dt.datetime | None,
                         list_map: dict[str, str], *, refresh: bool = True) -> int:
        """Plan one chunk into the window, pushing the window first when the chunk depends on what
        it holds, and after when it is full; return how many members were pushed."""
        with self.sessions() as session:
            plan = self._plan_chunk(session, chunk_ids, list_map)
        pushed = 0
        if window.overlaps(plan):
            # A member this chunk needs (an address it takes or releases) is planned already and
            # not pushed yet: push the window first, then plan the chunk on its result.
            pushed += await self._flush(window, list_map, refresh=refresh)
            with self.sessions() as session:
                plan = self._plan_chunk(session, chunk_ids, list_map)
        window.add(chunk_ids, plan, covered)
        if window.full(self.caps.push_window or self.caps.max_batch, self.caps.max_batch):
            pushed += await self._flush(window, list_map, refresh=refresh)
        return pushed

    async def _flush(self, window: _Window, list_map: dict[str, str], *, refresh: bool = True) -> int:
        """Push and commit what the window holds (one checkpoint); return how many members it
        covered and empty it."""
        if not window.chunks:
            return 0
        if refresh and not self.options.dry_run and await self._refresh_before_updates(window.plan):
            # Suppressions appeared since the pull: plan the window's members again, on them.
            chunks = window.chunks
            window.clear()
            again = _Window()
            pushed = 0
            for chunk_ids, covered in chunks:
                pushed += await self._add_chunk(again, chunk_ids, covered, list_map, refresh=False)
            return pushed + await self._flush(again, list_map, refresh=False)
        plan, covered_until, members = window.plan, window.covered_until, window.members
        window.clear()
        self.plan.invalid += [(str(email), reason) for _, email, reason, _ in plan.invalid]
        self.plan.invalid += [(str(email), reason) for _, email, reason in plan.pending]
        if not self.options.dry_run:
            await self._push(plan, covered_until)
            self._refresh_statistics(final=False)
        return members

    async def _push(self, plan: _Chunk, covered_until: dt.datetime | None) -> None:
        """The provisional links, the removals and the upserts of a window, then ONE transaction
        recording the answers, the rejects, the watermark and the lease."""
        self._write_provisional_links(plan)
        assert self.member_api is not None
        deleted = await self._remove(plan) if plan.deletes else []
        upserted = await self.member_api.upsert_members(plan.upserts) if plan.upserts else []
        by_key = {item.key: item for item in plan.upserts}
        with self.sessions.begin() as session:
            open_rejects = self._open_rejects(session, plan.ids)
            resolved: list[int] = []
            removed = [o.key for o in deleted if o.rejected is None]
            self._audit_erasures(session, plan.deletes, deleted, open_rejects)
            self.counts["members_removed"] += len(removed)
            # A member who left every list at a provider that can only unsubscribe keeps its link,
            # marked as our "unsubscribed" push with no lists: the status pulled back is then our
            # echo, and rejoining a list makes the contact active again.
            reasons = {item.key: item.reason for item in plan.deletes}
            kept = [o.key for o in deleted if o.rejected is None and o.action == "unsubscribed"
                    and reasons.get(o.key) == LEFT_EVERY_LIST and o.key not in by_key]
            if kept:
                session.execute(sa.update(MemberLink), [
                    {"id": plan.links[key].id, "remote_lists": [], "payload_hash": "",
                     "status_pushed": "unsubscribed", "pushed_at": utcnow()} for key in kept])
            # A record the provider keeps unsubscribed (its proof of the opt-out: never deleted but
            # for a KVKK erasure) keeps its link too, marked LEFT_KEPT: not removed again, and a
            # later erasure of the member still reaches it.
            left_kept = [o.key for o in deleted if o.rejected is None and o.action == LEFT_UNSUBSCRIBED
                         and reasons.get(o.key) != ERASED and o.key not in by_key]
            if left_kept:
                session.execute(sa.update(MemberLink), [
                    {"id": plan.links[key].id, "payload_hash": "", "status_pushed": LEFT_KEPT,
                     "pushed_at": utcnow()} for key in left_kept if key in plan.links])
            removed = [key for key in removed
                       if key not in by_key and key not in kept and key not in left_kept]  # an e-mail change re-points
            for part in _chunks(removed):
                session.execute(sa.delete(MemberLink).where(
                    MemberLink.connection_id == self.connection_id,
                    sa.tuple_(MemberLink.crm_member_id, MemberLink.crm_list_id).in_(
                        [(k.crm_member_id, k.crm_list_id) for k in part])).execution_options(
                    synchronize_session=False))
            updates: list[dict[str, Any]] = []
            remote_ids: list[dict[str, Any]] = []
            now = utcnow()
            suppressed: list[RemoteStatus] = []
            # Members the provider refused or holds suppressed, in part: their links keep the digest
            # they had, so a backfill plans them again.
            unsettled = {o.key.crm_member_id for o in deleted + upserted
                         if o.rejected is not None or o.suppressed is not None}
            for outcome in deleted + upserted:
                item = by_key.get(outcome.key)
                if outcome.rejected is not None:
                    self._reject(session, open_rejects, outcome.key, item.email if item else None, outcome.rejected)
                    continue
                if outcome.suppressed is not None:    # nothing was written: the provider holds it suppressed
                    suppressed.append(outcome.suppressed)
                    self.counts["members_suppressed_at_provider"] += 1
                    known = plan.links.get(item.key) if item is not None else None
                    if item is not None and outcome.remote_id and (known is None or not known.remote_id):
                        remote_ids.append({"crm_member_id": item.key.crm_member_id,
                                           "crm_list_id": item.key.crm_list_id, "remote_id": outcome.remote_id})
                    continue
                if open_rejects:
                    if outcome.key in open_rejects and open_rejects[outcome.key].provider_code != LIST_PENDING:
                        resolved.append(open_rejects[outcome.key].id)
                    member_wide = MemberKey(outcome.key.crm_member_id)      # a per-list record's member reject
                    if outcome.key != member_wide and member_wide in open_rejects \
                            and open_rejects[member_wide].provider_code != TOO_LONG:
                        resolved.append(open_rejects[member_wide].id)
                if item is None:
                    continue
                # (no link loaded: its provisional row was written just before the push)
                link = plan.links.get(item.key)
                known_remote = link.remote_id if link is not None else None
                self.counts["members_added" if known_remote is None else "members_updated"] += 1
                updates.append({"crm_member_id": item.key.crm_member_id, "crm_list_id": item.key.crm_list_id,
                                "email": item.email, "payload_hash": plan.hashes[item.key],
                                "remote_id": outcome.remote_id or known_remote,
                                "remote_lists": list(item.remote_lists), "pushed_at": now,
                                "status_pushed": plan.statuses[item.key],
                                "source_digest": None if item.key.crm_member_id in unsettled
                                else plan.sources.get(item.key.crm_member_id)})
            update_by_key(session, MEMBER_LINKS, remote_ids, key={"connection_id": self.connection_id},
                          match=LINK_MATCH)
            # Every answered link exists (the provisional row, or the link it updates): an upsert by
            # the unique key is that UPDATE, in multi-row statements instead of one per row.
            # (one row per key, the upsert's answer last: a removal of the same key, an address
            # change, comes first; one statement must not touch a row twice)
            answered = {(row["crm_member_id"], row["crm_list_id"]): row for row in updates}
            upsert(session, MEMBER_LINKS, [{"connection_id": self.connection_id, **row} for row in answered.values()],
                   key=LINK_KEY, update=ANSWER_COLUMNS)
            self._rows_written += len(updates)
            if plan.rehash:
                session.execute(sa.update(MemberLink), plan.rehash)
            gone_links = {plan.links[item.key].id for item in plan.deletes if item.key in plan.links}
            settled = {link_id: digest for member_id, link_id, digest in plan.settled
                       if member_id not in unsettled and link_id not in gone_links}
            update_by_key(session, MEMBER_LINKS, [{"id": link_id, "source_digest": digest}
                                                  for link_id, digest in settled.items()],
                          key={"connection_id": self.connection_id}, match=("id",))
            if suppressed:
                self._record_statuses(session, suppressed)
            for key, email, reason, code in plan.invalid:
                self._reject(session, open_rejects, key, email, RejectedRow(reason, provider_code=code))
            for key, email, reason in plan.pending:
                self._reject(session, open_rejects, key, email, RejectedRow(reason, provider_code=LIST_PENDING))
            resolved += [open_rejects[key].id for key in plan.unpend
                         if key in open_rejects and open_rejects[key].provider_code == LIST_PENDING]
            gone = set(plan.gone)
            # A removal the provider cannot make stays open until a person removes the member in
            # its panel and dismisses the reject; the member's other rejects are moot now.
            resolved += [row.id for key, row in open_rejects.items() if key.crm_member_id in gone
                         and row.provider_code != REMOVAL_UNSUPPORTED]
            # (a reject this transaction added has no id yet and stands: e.g. the old address of a
            # member whose new address was just pushed, at a provider that cannot remove it)
            for part in _chunks(sorted({reject_id for reject_id in resolved if reject_id is not None})):
                session.execute(sa.update(Reject).where(Reject.id.in_(part), Reject.resolved_at.is_(None))
                                .values(resolved_at=utcnow()).execution_options(synchronize_session=False))
            if covered_until is not None and not self.options.backfill:
                current = watermark_for(session, self.connection_id, MEMBERS_STREAM)
                if current is None or covered_until > current:
                    set_watermark(session, self.connection_id, MEMBERS_STREAM, min(covered_until, self.until))
            self._checkpoint(session)

    def _write_provisional_links(self, plan: _Chunk) -> None:
        """Record, BEFORE the provider sees them, every member it may create, so that a crash
        after its answer and before our commit still leaves a link to update or delete.

        That is the one write of a new link before the push; the one after it (``update_by_key``
        in ``_push``) records the provider's answer (remote id, hash) and cannot be folded
        into this one without losing the crash guarantee."""
        fresh = [item for item in plan.upserts if item.key not in plan.links]
        if not fresh:
            return
        now = utcnow()
        rows: list[dict[str, Any]] = [{"connection_id": self.connection_id, "crm_member_id": item.key.crm_member_id,
                 "crm_list_id": item.key.crm_list_id, "email": item.email, "remote_id": None,
                 "remote_lists": [], "payload_hash": "", "pushed_at": now, "status_pushed": None,
                 "source_digest": None}
                for item in fresh]
        with self.sessions.begin() as session:
            # One multi-row statement; the rows are found again by their unique key afterwards.
            upsert(session, MEMBER_LINKS, rows, key=LINK_KEY, update=("email",))
            self._checkpoint(session)
        self._rows_written += len(rows)

    def _open_rejects(self, session: Session, member_ids: Sequence[str],
                      lists: Sequence[str] | None = None) -> dict[MemberKey, Reject]:
        found: dict[MemberKey, Reject] = {}
        for part in _chunks(member_ids):
            query = sa.select(Reject).where(Reject.connection_id == self.connection_id,
                                            self._in(Reject.crm_member_id, [m[:ID] for m in part]))
            if lists is not None:
                query = query.where(Reject.crm_list_id.in_(lists))
            for row in session.scalars(query):
                found[MemberKey(row.crm_member_id, row.crm_list_id)] = row
        return found

    def _reject(self, session: Session, rejects: dict[MemberKey, Reject], key: MemberKey, email: str | None,
                error: RejectedRow) -> None:
        self.counts["rejected"] += 1
        email = None if email is None else email[:EMAIL]
        if self._waiting is not None and email and key.crm_member_id and error.provider_code == VALIDATION:
            self._waiting[email].add(key.crm_member_id)
        reason = error.reason[:2000]
        row = rejects.get(key)
        if row is None:
            rejects[key] = row = Reject(connection_id=self.connection_id, run_id=self.run_id,
                                        crm_member_id=key.crm_member_id, crm_list_id=key.crm_list_id, email=email,
                                        provider_code=error.provider_code, reason=reason)
            session.add(row)
            return
        # (attempts is None on a row added earlier in this transaction: one key rejected twice)
        row.attempts = (row.attempts or 0) + 1 if row.resolved_at is None else 1
        row.run_id, row.email, row.provider_code, row.reason = self.run_id, email, error.provider_code, reason
        row.last_seen_at, row.resolved_at = utcnow(), None

    def _audit_erasures(self, session: Session, deletes: Sequence[MemberDelete], outcomes: Sequence[PushOutcome],
                        open_rejects: dict[MemberKey, Reject]) -> None:
        """One ``erasures`` row per KVKK erasure sent (or found impossible) at this provider, in the
        transaction that records its outcome. An erasure the provider cannot do is recorded once,
        not again on every run while its reject stays open."""
        asked = {item.key: item for item in deletes if item.reason == ERASED}
        for outcome in outcomes:
            item = asked.get(outcome.key)
            if item is None or outcome.suppressed is not None:
                continue
            rejected = outcome.rejected
            if rejected is not None and rejected.provider_code == REMOVAL_UNSUPPORTED:
                known = open_rejects.get(outcome.key)
                if known is not None and known.resolved_at is None and known.provider_code == REMOVAL_UNSUPPORTED:
                    continue
                action = "not_supported"
            else:
                action = outcome.action if rejected is None else "failed"
            session.add(Erasure(tenant_id=self.tenant_id, connection_id=self.connection_id, run_id=self.run_id,
                                provider=self.provider.name, crm_member_id=item.key.crm_member_id,
                                crm_list_id=item.key.crm_list_id, email_sha256=email_digest(item.email),
                                remote_id=item.remote_id, action=action[:16],
                                answer="" if rejected is None else rejected.reason[:2000]))
            self.counts["erasures_recorded"] += 1

    # --- 6. reports (sync/engine/reports.py) ---------------------------------------------

    async def pull_reports(self) -> None:
        if self.caps.pulls_activity:     # conversations and messages by phone (sync/engine/activity.py)
            await pull_activity(self.provider, sessions=self.sessions, crm=self.crm, connection_id=self.connection_id,
                                run_id=self.run_id, until=self.until, lookback=self.lookback,
                                backfill=self.options.backfill, counts=self.counts, checkpoint=self._checkpoint)
        if self.report_api is None:
            return
        await pull_reports(self.report_api, self.sessions, self.connection_id, until=self.until,
                           refresh=self.report_refresh, counts=self.counts, checkpoint=self._checkpoint)
