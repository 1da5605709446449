"""What the phases of one connection's run share (sync/engine/connection_sync.py runs them in order).

``RunContext`` holds what the runner hands the run (connection, tenant, run, provider, sessions,
CRM reader, options, ...), the provider seen through the capability protocols it declares, the
run's counts and dry-run ``Plan``, and the sets one phase fills and a later one reads (lists that
went away at the provider, statuses a dry run would store, ...). The streams, tables and small
helpers every phase uses live here too.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import InitVar, dataclass, field
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from sync.crm import ChangedMembers, CrmReader
from sync.engine.bulk import analyze, one_of
from sync.engine.state import renew_lease, watermark_for
from sync.fields import FieldMap
from sync.models import Connection, MemberLink, MemberStatus, Reject, utcnow
from sync.providers.base import (
    Capabilities,
    ConsentPull,
    ListPush,
    MappedLists,
    MemberPush,
    Provider,
    ReportPull,
    StatusPull,
)

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
    #: Name every member the run adds, updates, removes and leaves out in its ``Plan`` (what
    #: ``--verbose``, ``--json`` and ``--output`` print; a dry run always does). Off, a real run
    #: keeps counts only: the daemon and a plain ``once`` hold nothing a member beyond a window.
    itemize: bool = True
    #: Plan the next push window while the previous one is pushed (sync/engine/push.py,
    #: ``_Pipeline``); off, each window is planned, pushed and committed before the next is planned.
    overlap: bool = True


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
    #: Every member the run leaves out, and why (one entry per member and reason; see ``LeftOut``).
    left_out: list[LeftOut] = field(default_factory=list)
    #: False: the member lists (``members_*``, ``left_out``) stay empty (``RunOptions.itemize``).
    itemized: bool = True

    _left_keys: set[tuple[str, tuple[str, ...], str]] = field(default_factory=set, repr=False, compare=False)
    _left_members: set[str] = field(default_factory=set, repr=False, compare=False)

    def leave_out(self, entries: Iterable[LeftOut], *, pushed: Iterable[str] = ()) -> None:
        """Add a pushed window's left-out members; a member ``pushed`` in it is no longer left out
        (planned again after an earlier window released its address, say). A member planned twice
        for the same reason is named once."""
        gone = self._left_members.intersection(pushed)
        if gone:
            self.left_out = [entry for entry in self.left_out if entry.member_id not in gone]
            self._left_keys = {(entry.member_id, entry.lists, entry.reason) for entry in self.left_out}
            self._left_members -= gone
        if not self.itemized:
            return
        for entry in entries:
            key = (entry.member_id, entry.lists, entry.reason)
            if key not in self._left_keys:
                self._left_keys.add(key)
                self._left_members.add(entry.member_id)
                self.left_out.append(entry)


#: Why a run leaves a member out (``LeftOut.reason``; docs/operating.md, "The dry run").
#: Suppressed (unsubscribed, hard bounce, complaint) at this provider, in the account or in one list.
SUPPRESSED = "suppressed"
#: Suppressed at another provider of the tenant: the contact is never created here.
SUPPRESSED_ELSEWHERE = "suppressed_elsewhere"
#: An İYS RET pulled from the tenant's İYS integrator.
IYS_REFUSED = "iys_ret"
#: The CRM's own consent is RET: no contact is created for it.
CRM_REFUSED = "crm_ret"
#: Refused before sending: our check of the provider's rules, or (a real run) the provider's refusal.
REJECTED = "rejected"
#: The member's list does not exist at the provider (yet): the member waits for it.
WAITS_FOR_LIST = "waits_for_list"
#: An open reject of an earlier run that this run does not try again (its backoff runs).
REJECT_BACKOFF = "reject_backoff"
LEFT_OUT_REASONS = (SUPPRESSED, SUPPRESSED_ELSEWHERE, IYS_REFUSED, CRM_REFUSED, REJECTED, WAITS_FOR_LIST,
                    REJECT_BACKOFF)


@dataclass(frozen=True)
class LeftOut:
    """A member a run does not push (create or update) although the CRM has it in a list."""

    member_id: str
    email: str | None
    #: The CRM lists it is left out of (all its lists, unless the reason is one list's).
    lists: tuple[str, ...]
    reason: str                     # one of LEFT_OUT_REASONS
    detail: str                     # for a person: where, what and since when; a reject's reason


@dataclass
class DryConnection:
    """What a dry run pulled from one connection and a real run would have stored."""

    tenant_id: int
    #: (e-mail, remote list or "") -> the status as the real run would store it.
    statuses: dict[tuple[str, str], Suppression] = field(default_factory=dict)
    #: E-mails whose blocking status the real run would store as new or changed.
    changed: set[str] = field(default_factory=set)
    #: (recipient, recipient type) -> (status, consent date) of e-mail (EPOSTA) consents it would store.
    consents: dict[tuple[str, str], tuple[str, dt.datetime]] = field(default_factory=dict)


@dataclass
class DryPulled:
    """The statuses and İYS consents the dry runs of one ``once``/``backfill`` pulled and stored
    nothing of, shared by its connections: the connections of a tenant that run later plan on them,
    as they would on what a real run of the earlier ones had stored."""

    connections: dict[int, DryConnection] = field(default_factory=dict)

    def of(self, connection_id: int, tenant_id: int) -> DryConnection:
        return self.connections.setdefault(connection_id, DryConnection(tenant_id))

    def of_tenant(self, tenant_id: int) -> dict[int, DryConnection]:
        return {cid: dry for cid, dry in self.connections.items() if dry.tenant_id == tenant_id}


@dataclass(frozen=True)
class Suppression:
    connection_id: int
    status: str
    occurred_at: dt.datetime
    #: "" for the whole account (and so every provider of the tenant); else one remote list only.
    remote_list: str = ""


@dataclass
class RunContext:
    """One connection's run: what the runner hands it and the state its phases share. Built by
    ``ConnectionSync``, once a run."""

    sessions: sessionmaker[Session]
    crm: CrmReader
    provider: Provider
    connection_id: int
    tenant_id: int
    run_id: int
    lease_owner: str
    lease_seconds: int
    lookback: dt.timedelta
    until: dt.datetime
    options: RunOptions
    report_refresh: dt.timedelta
    vanished_check: dt.timedelta | None
    mass_delete_limits: tuple[int, float]
    fields: tuple[FieldMap, ...]
    on_progress: Callable[[str, int, int], None] | None
    plan_salt: InitVar[str]
    #: (dry run) What this invocation's dry runs pulled, shared by its connections.
    dry_pulled: DryPulled = field(default_factory=DryPulled)
    #: What shapes a plan besides the CRM row (settings, planner version): in every source digest.
    salt: str = field(init=False)
    caps: Capabilities = field(init=False)
    list_api: ListPush | None = field(init=False)
    mapped_api: MappedLists | None = field(init=False)
    member_api: MemberPush | None = field(init=False)
    status_api: StatusPull | None = field(init=False)
    report_api: ReportPull | None = field(init=False)
    consent_api: ConsentPull | None = field(init=False)
    #: This run's start by the worker's clock (the clock that stamps member_statuses.pulled_at).
    started_at: dt.datetime = field(init=False, default_factory=utcnow)
    #: The CRM reads of the members phase, made once (the mass-delete guard reads them first).
    changed: ChangedMembers | None = field(init=False, default=None)
    #: ``changed`` holds every CRM member (no watermark, no change position: a first sync).
    changed_every_member: bool = field(init=False, default=False)
    xid_mark: int | None = field(init=False, default=None)
    vanished: tuple[bool, list[str]] | None = field(init=False, default=None)
    counts: Counter[str] = field(init=False, default_factory=Counter)
    plan: Plan = field(init=False, default_factory=Plan)
    #: CRM lists whose members must be planned again this run (list created, re-created, deleted).
    requeue_lists: set[str] = field(init=False, default_factory=set)
    #: Remote lists that went away (deleted by us, or missing at the provider): a link that
    #: differs only by them is corrected locally, without a write.
    gone_remote: set[str] = field(init=False, default_factory=set)
    #: Remote lists that were missing at the provider: their contacts are pushed again even
    #: when their hash is unchanged (the provider may have lost them, or reuse the list id).
    lost_remote: set[str] = field(init=False, default_factory=set)
    #: Dry run only: the statuses a real run would store (``dry.statuses``), the e-mails whose hash
    #: it would clear (``dry.changed``) and the İYS consents it would store.
    dry: DryConnection = field(init=False)
    #: (not a backfill) Members with an open reject that waits for its backoff (``waiting_ids``) and
    #: that this run planned all the same (their CRM row changed): not left out as waiting. Only
    #: those are kept, not every member planned (a first sync plans every one).
    planned: set[str] = field(init=False, default_factory=set)
    waiting_ids: frozenset[str] = field(init=False, default=frozenset())
    #: Connection id -> "provider (connection N)", for the tenant's connections (read when needed).
    _labels: dict[int, str] | None = field(init=False, default=None)
    #: The CRM's live lists (set by sync_lists): a membership of a deleted list waits for nothing.
    crm_lists: set[str] | None = field(init=False, default=None)
    #: Rows written to our own link and status tables since their statistics were last refreshed.
    rows_written: int = field(init=False, default=0)
    rows_at_analyze: int = field(init=False, default=0)
    #: Our database's dialect: lookups by many keys are written for it (sync.engine.bulk.one_of).
    dialect: str = field(init=False)
    #: Address -> members with an open validation reject on it (see ``_waiting_for`` in sync/engine/plan.py).
    waiting: dict[str, set[str]] | None = field(init=False, default=None)
    #: Moves on after a commit that recorded suppressions while members were pushed: a window
    #: planned before it (while the window before it was pushed) is planned again (push.py).
    suppressions_epoch: int = field(init=False, default=0)
    #: Holder -> members refused because it held their address (read with ``waiting``).
    waiting_on: dict[str, set[str]] = field(init=False, default_factory=dict)

    def __post_init__(self, plan_salt: str) -> None:
        self.salt = f"{PLAN_VERSION}:{plan_salt}"
        self.plan.itemized = self.options.itemize or self.options.dry_run
        self.caps = caps = self.provider.capabilities
        # The provider seen through the capability protocols it declares (check_provider verified them).
        self.list_api = cast(ListPush, self.provider) if caps.lists == "create" else None
        self.mapped_api = cast(MappedLists, self.provider) if caps.lists == "mapped" else None
        self.member_api = cast(MemberPush, self.provider) if caps.pushes_members else None
        self.status_api = cast(StatusPull, self.provider) if caps.status_pull != "none" else None
        self.report_api = cast(ReportPull, self.provider) if caps.has_campaign_reports else None
        self.consent_api = cast(ConsentPull, self.provider) if caps.pulls_consents else None
        bind = self.sessions.kw.get("bind")
        self.dialect = bind.dialect.name if bind is not None else ""
        self.dry = self.dry_pulled.of(self.connection_id, self.tenant_id) if self.options.dry_run \
            else DryConnection(self.tenant_id)

    @property
    def dry_statuses(self) -> dict[tuple[str, str], Suppression]:
        return self.dry.statuses

    @property
    def dry_cleared(self) -> set[str]:
        return self.dry.changed

    def connection_label(self, connection_id: int) -> str:
        """``euromsg (connection 3)``: where a suppression came from, for a person."""
        if self._labels is None:
            with self.sessions() as session:
                self._labels = {cid: f"{provider} (connection {cid})" for cid, provider in session.execute(
                    sa.select(Connection.id, Connection.provider).where(Connection.tenant_id == self.tenant_id))}
        return self._labels.get(connection_id, f"connection {connection_id}")

    # --- helpers --------------------------------------------------------------------------

    def one_of(self, column: Any, values: Sequence[Any]) -> Any:
        return one_of(self.dialect, column, values)

    def checkpoint(self, session: Session) -> None:
        if not self.options.dry_run:
            renew_lease(session, self.connection_id, self.lease_owner, self.lease_seconds)

    def refresh_statistics(self, *, final: bool) -> None:
        """ANALYZE our tables after a large load, so that the next lookups (this run's next
        chunks, the next run) do not plan a scan on a table the planner still thinks is small:
        a server behind on autovacuum, or with it off, keeps stale statistics indefinitely."""
        fresh = self.rows_written - self.rows_at_analyze
        if self.options.dry_run or fresh < ANALYZE_MIN_ROWS or (not final and fresh < self.rows_at_analyze):
            return
        with self.sessions() as session:
            analyze(session, LOADED_TABLES, reason="end of run" if final else "large load", rows=fresh)
        self.rows_at_analyze = self.rows_written
        self.counts["statistics_refreshed"] += 1

    def read_since(self, stream: str) -> dt.datetime | None:
        if self.options.backfill:
            return None
        with self.sessions() as session:
            mark = watermark_for(session, self.connection_id, stream)
        return None if mark is None else mark - self.lookback


def chunks(items: Sequence[Any], size: int = IN_CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
