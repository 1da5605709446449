"""One connection's run: pull statuses, lists, members, reports (DESIGN.md, "The data flow").

The provider is seen only through ``sync.providers.base.Provider`` and its Capabilities.

Crash safety: before a batch goes out, a *provisional* link (no remote id, empty hash) is
committed for every member the provider has not seen from us yet, so a crash after the
provider accepted but before our commit still leaves a trace to delete or update later.
After the batch, ONE transaction commits the links, the rejects, the lease renewal and the
watermark. Creates are idempotent at the provider (upsert by e-mail, lists adopted by name).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session, sessionmaker

from sync.crm import CrmMember, CrmReader
from sync.engine.state import renew_lease, set_watermark, watermark_for
from sync.errors import FatalError, ProviderError, RejectedRow
from sync.models import EMAIL, Campaign, CampaignResult, ListLink, MemberLink, MemberStatus, Reject, utcnow
from sync.providers.base import (
    SUPPRESSION_RANK,
    MemberDelete,
    MemberKey,
    MemberSnapshot,
    MemberUpsert,
    Provider,
    payload_hash,
)

log = structlog.get_logger(__name__)

MEMBERS_STREAM = "members"
STATUSES_STREAM = "statuses"
#: Statuses that stop a member from being pushed as active; a soft bounce is only information.
BLOCKING = frozenset({"unsubscribed", "complaint", "hard_bounce"})
#: Re-pull statuses before a batch when the last pull is older than this (a long run).
STATUS_REPULL_S = 60.0
#: A row the PROVIDER refused is retried after 1 h, 2 h, 4 h ... at most a day (unless it changes).
REJECT_BACKOFF_MAX = dt.timedelta(hours=24)
IN_CHUNK = 500
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class RunOptions:
    dry_run: bool = False
    #: Ignore watermarks: compare every CRM row with its link (also finds hard deletes).
    backfill: bool = False


@dataclass
class Plan:
    """What a run does (or, dry, would do)."""

    lists_create: list[str] = field(default_factory=list)
    lists_rename: list[tuple[str, str]] = field(default_factory=list)
    lists_delete: list[str] = field(default_factory=list)
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


@dataclass
class _Chunk:
    upserts: list[MemberUpsert] = field(default_factory=list)
    deletes: list[MemberDelete] = field(default_factory=list)
    invalid: list[tuple[MemberKey, str | None, str]] = field(default_factory=list)
    links: dict[MemberKey, MemberLink] = field(default_factory=dict)
    hashes: dict[MemberKey, str] = field(default_factory=dict)


def valid_email(email: str | None) -> bool:
    return bool(email) and len(email or "") <= EMAIL and _EMAIL.match(email or "") is not None


def _chunks(items: Sequence[Any], size: int = IN_CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class ConnectionSync:
    """Runs the phases of one connection. Built by the runner, called once."""

    def __init__(self, *, sessions: sessionmaker[Session], crm: CrmReader, provider: Provider,
                 connection_id: int, tenant_id: int, run_id: int, lease_owner: str, lease_seconds: int,
                 lookback: dt.timedelta, until: dt.datetime, options: RunOptions,
                 report_refresh: dt.timedelta = dt.timedelta(hours=6),
                 on_progress: Callable[[str, int, int], None] | None = None) -> None:
        self.sessions = sessions
        self.crm = crm
        self.provider = provider
        self.caps = provider.capabilities
        self.connection_id = connection_id
        self.tenant_id = tenant_id
        self.run_id = run_id
        self.lease_owner = lease_owner
        self.lease_seconds = lease_seconds
        self.lookback = lookback
        self.until = until
        self.options = options
        self.report_refresh = report_refresh
        self.on_progress = on_progress
        self.counts: Counter[str] = Counter()
        self.plan = Plan()
        self._statuses_pulled_at = 0.0

    # --- helpers --------------------------------------------------------------------------

    def _checkpoint(self, session: Session) -> None:
        if not self.options.dry_run:
            renew_lease(session, self.connection_id, self.lease_owner, self.lease_seconds)

    def _read_since(self, stream: str) -> dt.datetime | None:
        if self.options.backfill:
            return None
        with self.sessions() as session:
            mark = watermark_for(session, self.connection_id, stream)
        return None if mark is None else mark - self.lookback

    # --- 2. pull statuses -----------------------------------------------------------------

    async def pull_statuses(self) -> None:
        """Unsubscribes, bounces and complaints into member_statuses.

        The stored time only moves forward and the stored status only gets stronger, so a later
        unsubscribe after a complaint still beats an older CRM consent.
        """
        since = self._read_since(STATUSES_STREAM)
        pulled = [status async for status in self.provider.pull_statuses(since)]
        self._statuses_pulled_at = time.monotonic()
        newest = max((s.occurred_at for s in pulled), default=None)
        with self.sessions.begin() as session:
            emails = sorted({s.email for s in pulled})
            existing: dict[str, MemberStatus] = {}
            for part in _chunks(emails):
                existing.update((row.email, row) for row in session.scalars(sa.select(MemberStatus).where(
                    MemberStatus.connection_id == self.connection_id, MemberStatus.email.in_(part))))
            for status in pulled:
                row = existing.get(status.email)
                if row is None:
                    existing[status.email] = row = MemberStatus(
                        tenant_id=self.tenant_id, connection_id=self.connection_id, email=status.email,
                        remote_id=status.remote_id, status=status.status, occurred_at=status.occurred_at)
                    session.add(row)
                    self.counts["statuses_pulled"] += 1
                    continue
                stronger = SUPPRESSION_RANK[status.status] > SUPPRESSION_RANK[row.status]
                later = status.occurred_at > row.occurred_at
                if stronger or later:
                    self.counts["statuses_pulled"] += 1
                    row.status = status.status if stronger else row.status
                    row.occurred_at = max(row.occurred_at, status.occurred_at)
                    row.pulled_at = utcnow()
            # The provider's copy diverged from what we last pushed: forget the hash, so that a
            # later push (e.g. after a newer CRM consent) is not mistaken for "unchanged".
            for part in _chunks(emails):
                session.execute(sa.update(MemberLink).where(
                    MemberLink.connection_id == self.connection_id, MemberLink.email.in_(part))
                    .values(payload_hash="").execution_options(synchronize_session=False))
            if newest is not None:
                previous = watermark_for(session, self.connection_id, STATUSES_STREAM)
                set_watermark(session, self.connection_id, STATUSES_STREAM, max(newest, previous or newest))
            self._checkpoint(session)

    # --- 3. lists -------------------------------------------------------------------------

    async def sync_lists(self) -> dict[str, str]:
        """Create, rename and delete lists; return CRM list id -> remote list id."""
        crm_lists = {item.id: item for item in self.crm.lists() if not item.deleted}
        with self.sessions() as session:
            links = {link.crm_list_id: link for link in session.scalars(
                sa.select(ListLink).where(ListLink.connection_id == self.connection_id))}
        mapping = {crm_id: link.remote_list_id for crm_id, link in links.items() if crm_id in crm_lists}
        taken = {link.remote_list_id for link in links.values()}     # incl. lists about to be deleted
        for crm_id, item in sorted(crm_lists.items()):
            link = links.get(crm_id)
            try:
                if link is None and self.caps.supports_list_create:
                    self.plan.lists_create.append(item.name)
                    if self.options.dry_run:
                        mapping[crm_id] = f"(new list {crm_id})"
                        continue
                    found = [r for r in await self.provider.find_lists(item.name) if r.remote_id not in taken]
                    remote = found[0] if found else await self.provider.create_list(item.name)
                    with self.sessions.begin() as session:
                        session.add(ListLink(connection_id=self.connection_id, crm_list_id=crm_id,
                                             remote_list_id=remote.remote_id, name_pushed=item.name))
                        self._checkpoint(session)
                    mapping[crm_id] = remote.remote_id
                    taken.add(remote.remote_id)
                    self.counts["lists_created"] += 1
                elif link is not None and link.name_pushed != item.name and self.caps.supports_list_rename:
                    self.plan.lists_rename.append((link.name_pushed, item.name))
                    if not self.options.dry_run:
                        await self.provider.rename_list(link.remote_list_id, item.name)
                        with self.sessions.begin() as session:
                            session.get_one(ListLink, link.id).name_pushed = item.name
                            self._checkpoint(session)
                        self.counts["lists_renamed"] += 1
            except RejectedRow as exc:   # its members wait for the list; everything else goes on
                self.counts["lists_rejected"] += 1
                log.warning("list.rejected", crm_list_id=crm_id, reason=exc.reason)
        for crm_id, link in sorted(links.items()):
            if crm_id in crm_lists:
                continue
            self.plan.lists_delete.append(link.name_pushed)
            if self.options.dry_run:
                continue
            if self.caps.supports_list_delete:
                await self.provider.delete_list(link.remote_list_id)
            with self.sessions.begin() as session:
                session.execute(sa.delete(ListLink).where(ListLink.id == link.id))
                self._checkpoint(session)
            self.counts["lists_deleted"] += 1
        return mapping

    # --- 4/5. members, with a checkpoint per batch ---------------------------------------

    async def push_members(self, list_map: dict[str, str]) -> None:
        since = self._read_since(MEMBERS_STREAM)
        changed = self.crm.changed_member_ids(since, self.until)
        with self.sessions() as session:
            retry = self._rejects_due(session)
            linked = list(session.scalars(sa.select(MemberLink.crm_member_id).distinct().where(
                MemberLink.connection_id == self.connection_id))) if self.options.backfill else []
        changed_at = {member_id: at for at, member_id in changed}
        # Changed members first, oldest change first: each chunk's watermark then covers every
        # change before it. Retries and (backfill) linked members come after the changes.
        ordered = list(dict.fromkeys([*(m for _, m in changed), *retry, *sorted(linked)]))
        self.counts["members_considered"] = len(ordered)
        done = 0
        for chunk_ids in _chunks(ordered, self.caps.max_batch):
            await self._push_chunk(chunk_ids, list_map,
                                   max((changed_at[m] for m in chunk_ids if m in changed_at), default=None))
            done += len(chunk_ids)
            if self.on_progress:
                self.on_progress("members", done, len(ordered))
        if not self.options.dry_run and not self.options.backfill:
            with self.sessions.begin() as session:
                current = watermark_for(session, self.connection_id, MEMBERS_STREAM)
                set_watermark(session, self.connection_id, MEMBERS_STREAM, max(self.until, current or self.until))
                self._checkpoint(session)

    def _rejects_due(self, session: Session) -> list[str]:
        """Members with an open reject to try again: ours (validation) every run, the
        provider's with an exponential backoff."""
        due = []
        for member_id, code, attempts, last_seen in session.execute(
                sa.select(Reject.crm_member_id, Reject.provider_code, Reject.attempts, Reject.last_seen_at).where(
                    Reject.connection_id == self.connection_id, Reject.resolved_at.is_(None))):
            wait = min(dt.timedelta(hours=2 ** max(attempts - 1, 0)), REJECT_BACKOFF_MAX)
            if code == "validation" or last_seen + wait <= self.until:
                due.append(member_id)
        return list(dict.fromkeys(due))

    def _load_suppressions(self, session: Session, emails: Iterable[str]) -> dict[str, list[_Suppression]]:
        found: dict[str, list[_Suppression]] = defaultdict(list)
        for part in _chunks(sorted(set(emails))):
            for row in session.execute(sa.select(MemberStatus.email, MemberStatus.connection_id, MemberStatus.status,
                                                 MemberStatus.occurred_at).where(
                    MemberStatus.tenant_id == self.tenant_id, MemberStatus.email.in_(part))):
                if row.status in BLOCKING:
                    found[row.email].append(_Suppression(row.connection_id, row.status, row.occurred_at))
        return found

    def _status_for(self, member: CrmMember, suppressions: Sequence[_Suppression]) -> tuple[str, str | None]:
        """(status to push, why it must not be pushed at all). A suppression stands unless the
        CRM holds a consent dated after it."""
        refused = (member.consent_status or "").upper() == "RET"
        standing = [s for s in suppressions if member.consent_date is None or member.consent_date <= s.occurred_at]
        if any(s.connection_id == self.connection_id for s in standing):
            return "unsubscribed", "suppressed at this provider"
        if standing and not self.caps.supports_unsubscribe:
            return "unsubscribed", "suppressed at another provider; this one cannot unsubscribe"
        return ("unsubscribed" if refused or standing else "active"), None

    def _plan_chunk(self, session: Session, chunk_ids: Sequence[str], list_map: dict[str, str]) -> _Chunk:
        members = {m.id: m for m in self.crm.members(chunk_ids)}
        plan = _Chunk()
        links_of: dict[str, dict[str, MemberLink]] = defaultdict(dict)
        for part in _chunks(chunk_ids):
            for found in session.scalars(sa.select(MemberLink).where(
                    MemberLink.connection_id == self.connection_id, MemberLink.crm_member_id.in_(part))):
                links_of[found.crm_member_id][found.crm_list_id] = found
                plan.links[MemberKey(found.crm_member_id, found.crm_list_id)] = found
        new_emails = {m.id: (m.email or "").strip().lower() for m in members.values()}
        old_emails = {link.email for links in links_of.values() for link in links.values()}
        suppressions = self._load_suppressions(session, [*new_emails.values(), *old_emails])
        owners = self._email_owners(session, [e for e in new_emails.values() if e])
        per_list = self.caps.membership_model == "per_list"
        for member_id in chunk_ids:
            member = members.get(member_id)
            links = links_of.get(member_id, {})
            if member is None or member.deleted:
                for gone in links.values():
                    self._delete(plan, gone, "deleted in the CRM")
                continue
            email = new_emails[member_id]
            if not valid_email(email):
                if links or member.list_ids:
                    plan.invalid.append((MemberKey(member_id), member.email, "invalid e-mail address"))
                continue
            other = owners.get(email, set()) - {member_id}
            if other:
                plan.invalid.append((MemberKey(member_id), email,
                                     f"e-mail also belongs to CRM member {sorted(other)[0]}; "
                                     "the provider keeps one contact per e-mail"))
                continue
            owners.setdefault(email, set()).add(member_id)
            previous_emails = {link.email for link in links.values()}
            status, blocked = self._status_for(
                member, [s for e in {email, *previous_emails} for s in suppressions.get(e, ())])
            if blocked is not None:
                if member.list_ids:
                    self.plan.blocked_by_suppression.append(email)
                continue
            if status == "unsubscribed" and not links:
                continue    # never create a contact for someone who refused or unsubscribed
            snapshot = MemberSnapshot(
                email=email, first_name=member.first_name, last_name=member.last_name, phone=member.phone,
                city=member.city, status=status,  # type: ignore[arg-type]
                consent_status=member.consent_status, consent_date=member.consent_date,
                consent_source=member.consent_source, recipient_type=member.recipient_type)
            payload = self.provider.build_payload(snapshot)
            wanted = sorted(crm_list for crm_list in member.list_ids if crm_list in list_map)
            if per_list:
                for crm_list in wanted:
                    self._upsert(plan, MemberKey(member_id, crm_list), email, payload, (list_map[crm_list],),
                                 links.get(crm_list))
                for crm_list, stale in links.items():
                    if crm_list not in wanted:
                        self._delete(plan, stale, "left the list")
            else:
                link = links.get("")
                if link is not None and link.email != email:
                    self._delete(plan, link, "e-mail changed")
                    link = None
                if not wanted and link is None:
                    continue
                self._upsert(plan, MemberKey(member_id), email, payload, tuple(list_map[c] for c in wanted), link)
        return plan

    def _email_owners(self, session: Session, emails: Sequence[str]) -> dict[str, set[str]]:
        """Which CRM members already own these e-mails at this provider (one contact per e-mail)."""
        owners: dict[str, set[str]] = defaultdict(set)
        for part in _chunks(sorted(set(emails))):
            for email, member_id in session.execute(sa.select(MemberLink.email, MemberLink.crm_member_id).where(
                    MemberLink.connection_id == self.connection_id, MemberLink.email.in_(part))):
                owners[email].add(member_id)
        return owners

    def _upsert(self, plan: _Chunk, key: MemberKey, email: str, payload: dict[str, Any],
                remote_lists: tuple[str, ...], link: MemberLink | None) -> None:
        digest = payload_hash(payload, remote_lists)
        if link is not None and link.email == email and link.payload_hash == digest:
            self.counts["members_unchanged"] += 1
            return
        known = link is not None and link.email == email
        (self.plan.members_update if known and link and link.remote_id else self.plan.members_add).append(email)
        plan.hashes[key] = digest
        plan.upserts.append(MemberUpsert(key, email, payload, remote_lists,
                                         tuple(link.remote_lists) if known and link else (),
                                         link.remote_id if known and link else None))

    def _delete(self, plan: _Chunk, link: MemberLink, why: str) -> None:
        self.plan.members_remove.append(f"{link.email} ({why})")
        plan.deletes.append(MemberDelete(MemberKey(link.crm_member_id, link.crm_list_id), link.email,
                                         link.remote_id, tuple(link.remote_lists)))

    async def _push_chunk(self, chunk_ids: Sequence[str], list_map: dict[str, str],
                          covered_until: dt.datetime | None) -> None:
        if not self.options.dry_run and time.monotonic() - self._statuses_pulled_at > STATUS_REPULL_S:
            await self.pull_statuses()      # a long run: catch unsubscribes made since the start
        with self.sessions() as session:
            plan = self._plan_chunk(session, chunk_ids, list_map)
        self.plan.invalid += [(str(email), reason) for _, email, reason in plan.invalid]
        if self.options.dry_run:
            return
        self._write_provisional_links(plan)
        deleted = await self.provider.delete_members(plan.deletes) if plan.deletes else []
        upserted = await self.provider.upsert_members(plan.upserts) if plan.upserts else []
        by_key = {item.key: item for item in plan.upserts}
        with self.sessions.begin() as session:
            open_rejects = self._open_rejects(session, chunk_ids)
            resolved: list[int] = []
            removed = [o.key for o in deleted if o.rejected is None]
            self.counts["members_removed"] += len(removed)
            removed = [key for key in removed if key not in by_key]   # an e-mail change re-points the link
            for part in _chunks(removed):
                session.execute(sa.delete(MemberLink).where(
                    MemberLink.connection_id == self.connection_id,
                    sa.tuple_(MemberLink.crm_member_id, MemberLink.crm_list_id).in_(
                        [(k.crm_member_id, k.crm_list_id) for k in part])).execution_options(
                    synchronize_session=False))
            updates = []
            for outcome in deleted + upserted:
                item = by_key.get(outcome.key)
                if outcome.rejected is not None:
                    self._reject(session, open_rejects, outcome.key, item.email if item else None, outcome.rejected)
                    continue
                if outcome.key in open_rejects:
                    resolved.append(open_rejects[outcome.key].id)
                if item is None:
                    continue
                link = plan.links[item.key]
                self.counts["members_added" if link.remote_id is None else "members_updated"] += 1
                updates.append({"id": link.id, "email": item.email, "payload_hash": plan.hashes[item.key],
                                "remote_id": outcome.remote_id or link.remote_id,
                                "remote_lists": list(item.remote_lists), "pushed_at": utcnow()})
            if updates:
                session.execute(sa.update(MemberLink), updates)
            for key, email, reason in plan.invalid:
                self._reject(session, open_rejects, key, email, RejectedRow(reason, provider_code="validation"))
            for part in _chunks(resolved):
                session.execute(sa.update(Reject).where(Reject.id.in_(part)).values(resolved_at=utcnow())
                                .execution_options(synchronize_session=False))
            if covered_until is not None and not self.options.backfill:
                current = watermark_for(session, self.connection_id, MEMBERS_STREAM)
                if current is None or covered_until > current:
                    set_watermark(session, self.connection_id, MEMBERS_STREAM, min(covered_until, self.until))
            self._checkpoint(session)

    def _write_provisional_links(self, plan: _Chunk) -> None:
        """Record, BEFORE the provider sees them, every member it may create, so that a crash
        after its answer and before our commit still leaves a link to update or delete."""
        fresh = [item for item in plan.upserts if item.key not in plan.links]
        if not fresh:
            return
        with self.sessions.begin() as session:
            rows = [MemberLink(connection_id=self.connection_id, crm_member_id=item.key.crm_member_id,
                               crm_list_id=item.key.crm_list_id, email=item.email, remote_id=None,
                               remote_lists=[], payload_hash="") for item in fresh]
            session.add_all(rows)
            session.flush()
            for row in rows:
                plan.links[MemberKey(row.crm_member_id, row.crm_list_id)] = row
            self._checkpoint(session)

    def _open_rejects(self, session: Session, member_ids: Sequence[str]) -> dict[MemberKey, Reject]:
        found: dict[MemberKey, Reject] = {}
        for part in _chunks(member_ids):
            for row in session.scalars(sa.select(Reject).where(
                    Reject.connection_id == self.connection_id, Reject.crm_member_id.in_(part))):
                found[MemberKey(row.crm_member_id, row.crm_list_id)] = row
        return found

    def _reject(self, session: Session, rejects: dict[MemberKey, Reject], key: MemberKey, email: str | None,
                error: RejectedRow) -> None:
        self.counts["rejected"] += 1
        email = None if email is None else email[:EMAIL]
        reason = error.reason[:2000]
        row = rejects.get(key)
        if row is None:
            rejects[key] = row = Reject(connection_id=self.connection_id, run_id=self.run_id,
                                        crm_member_id=key.crm_member_id, crm_list_id=key.crm_list_id, email=email,
                                        provider_code=error.provider_code, reason=reason)
            session.add(row)
            return
        row.attempts = row.attempts + 1 if row.resolved_at is None else 1
        row.run_id, row.email, row.provider_code, row.reason = self.run_id, email, error.provider_code, reason
        row.last_seen_at, row.resolved_at = utcnow(), None

    # --- 6. reports -----------------------------------------------------------------------

    async def pull_reports(self) -> None:
        """Campaigns, and per-recipient results of those not final yet. One campaign's failure
        is logged and retried next run; it does not stop the others."""
        if not self.caps.has_campaign_reports:
            return
        async for campaign in self.provider.pull_campaigns():
            with self.sessions.begin() as session:
                row = session.scalar(sa.select(Campaign).where(
                    Campaign.connection_id == self.connection_id, Campaign.remote_id == campaign.remote_id))
                if row is None:
                    row = Campaign(connection_id=self.connection_id, remote_id=campaign.remote_id,
                                   name=campaign.name[:512], status=campaign.status)
                    session.add(row)
                if row.final:
                    continue
                fresh = (row.results_pulled_at is not None and row.remote_updated_at == campaign.updated_at
                         and self.until - row.results_pulled_at < self.report_refresh and not campaign.final)
                if fresh:       # asked recently and unchanged since: spare the provider an export
                    continue
                row.name, row.status = campaign.name[:512], campaign.status
                row.sent_at, row.remote_updated_at = campaign.sent_at, campaign.updated_at
                self.counts["campaigns_pulled"] += 1
            try:
                results = await self.provider.pull_campaign_results(campaign)
            except FatalError:
                raise
            except (ProviderError, ValueError) as exc:
                self.counts["campaigns_failed"] += 1
                log.warning("campaign.report_failed", campaign=campaign.remote_id, reason=str(exc))
                continue
            with self.sessions.begin() as session:
                row = session.scalar(sa.select(Campaign).where(
                    Campaign.connection_id == self.connection_id, Campaign.remote_id == campaign.remote_id))
                if row is None:     # removed by `connection remove` while we fetched
                    return
                existing = {r.email: r for r in session.scalars(
                    sa.select(CampaignResult).where(CampaignResult.campaign_id == row.id))}
                for result in results:
                    target = existing.get(result.email[:EMAIL])
                    if target is None:
                        existing[result.email[:EMAIL]] = target = CampaignResult(campaign_id=row.id,
                                                                                 email=result.email[:EMAIL])
                        session.add(target)
                    for name in ("sent_at", "opened_at", "clicked_at", "unsubscribed_at", "complained_at",
                                 "bounce_type"):
                        value = getattr(result, name)
                        if value is not None:
                            setattr(target, name, value)
                    if result.bounce_reason:
                        target.bounce_reason = result.bounce_reason[:1024]
                    if result.clicked_link:
                        target.clicked_link = result.clicked_link[:1024]
                    target.open_count = max(target.open_count or 0, result.open_count)
                self.counts["campaign_results"] += len(results)
                row.results_pulled_at = utcnow()
                row.final = campaign.final
                self._checkpoint(session)
