"""Steps 2 and 2b of a connection's run: statuses and İYS consents pulled from the provider, and
the suppressions planning reads back.

Unsubscribes, bounces and complaints go into member_statuses (``record_statuses``), İYS states of
a provider that is the tenant's İYS integrator into iys_consents. ``load_suppressions`` is what
planning reads of them, for every provider of the tenant.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from sync.emails import email_digest
from sync.engine.bulk import upsert
from sync.engine.context import (
    CONSENTS_STREAM,
    MEMBER_STATUSES,
    STATUSES_STREAM,
    SUPPRESSIONS_SEEN_MARGIN,
    SUPPRESSIONS_SEEN_STREAM,
    RunContext,
    Suppression,
    chunks,
)
from sync.engine.state import set_watermark, watermark_for
from sync.models import EMAIL, ID, Erasure, IysConsent, MemberLink, MemberStatus, utcnow
from sync.providers.base import SUPPRESSION_RANK, RemoteConsent, RemoteStatus

#: Statuses that stop a member from being pushed as active; a soft bounce is only information.
BLOCKING = frozenset({"unsubscribed", "complaint", "hard_bounce"})
#: An İYS RET pulled from the tenant's İYS integrator (iys_consents), as a suppression.
IYS_RET = "iys_ret"
#: Pulled statuses stored per transaction while a pull streams in.
STATUS_CHUNK = 5000


async def pull_statuses(ctx: RunContext) -> None:
    """Unsubscribes, bounces and complaints into member_statuses (see record_statuses)."""
    since = ctx.read_since(STATUSES_STREAM)
    if ctx.status_api is None:
        return
    if not ctx.options.dry_run:
        await _store_pulled_statuses(ctx, ctx.status_api.pull_statuses(since))
        return
    pulled = [status async for status in ctx.status_api.pull_statuses(since)]
    ctx.counts["statuses_seen"] += len(pulled)
    # Plan with what the real run would store, and store nothing: the plan then equals
    # the run that follows.
    with ctx.sessions() as session:
        changed = record_statuses(ctx, session, pulled)
        for part in chunks(sorted(changed)):
            for row in session.scalars(sa.select(MemberStatus).where(
                    MemberStatus.connection_id == ctx.connection_id, MemberStatus.email.in_(part))):
                ctx.dry_statuses[(row.email, row.remote_list_id)] = Suppression(
                    ctx.connection_id, row.status, row.occurred_at, row.remote_list_id)
        ctx.dry_cleared.update(changed)
        session.rollback()


async def _store_pulled_statuses(ctx: RunContext, pulled: AsyncIterator[RemoteStatus]) -> None:
    """Store a pull as it streams in, ``STATUS_CHUNK`` statuses per transaction (memory flat in
    the size of a full scan); the watermark moves in the last transaction, after all of them
    (storing a status again is a no-op, so a crash in between only repeats work)."""
    newest: dt.datetime | None = None
    chunk: list[RemoteStatus] = []

    def store(rows: list[RemoteStatus], *, last: bool) -> None:
        with ctx.sessions.begin() as session:
            record_statuses(ctx, session, rows)
            if last and newest is not None:
                previous = watermark_for(session, ctx.connection_id, STATUSES_STREAM)
                set_watermark(session, ctx.connection_id, STATUSES_STREAM, max(newest, previous or newest))
            ctx.checkpoint(session)

    async for status in pulled:
        ctx.counts["statuses_seen"] += 1
        newest = status.occurred_at if newest is None else max(newest, status.occurred_at)
        chunk.append(status)
        if len(chunk) >= STATUS_CHUNK:
            store(chunk, last=False)
            chunk = []
    store(chunk, last=True)
    ctx.refresh_statistics(final=True)


def record_statuses(ctx: RunContext, session: Session, pulled: Sequence[RemoteStatus]) -> set[str]:
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
    # e-mail -> our pushes to it: (remote id, status pushed, pushed at) of each link with that address
    pushes: dict[str, list[tuple[str | None, str, dt.datetime]]] = {}
    # e-mail -> (remote lists, pushed at) of its links pushed "active", where an undated status came
    pushed_active: dict[str, list[tuple[tuple[str, ...], dt.datetime]]] = {}
    columns = ("email", "remote_list_id", "remote_id", "status", "occurred_at", "pulled_at")
    for part in chunks(emails):
        existing.update(((row.email, row.remote_list_id), dict(row._mapping)) for row in session.execute(
            sa.select(*(MEMBER_STATUSES.c[name] for name in columns)).where(
                MEMBER_STATUSES.c.connection_id == ctx.connection_id, ctx.one_of(MEMBER_STATUSES.c.email, part))))
        for email, remote_id, remote_lists, pushed_at, status_pushed in session.execute(sa.select(
                MemberLink.email, MemberLink.remote_id, MemberLink.remote_lists, MemberLink.pushed_at,
                MemberLink.status_pushed).where(
                MemberLink.connection_id == ctx.connection_id, ctx.one_of(MemberLink.email, part),
                MemberLink.status_pushed.in_(("active", "unsubscribed")))):
            pushes.setdefault(email, []).append((remote_id, status_pushed, pushed_at))
            if status_pushed == "active":
                pushed_active.setdefault(email, []).append((tuple(remote_lists or ()), pushed_at))
    def may_echo(status: RemoteStatus) -> bool:
        # An unsubscribe over nothing stored, or over a soft bounce (information only): our own
        # push coming back is no news. Over a stored opt-out it changes nothing that blocks.
        if status.status != "unsubscribed":
            return False
        row = existing.get((status.email, status.remote_list[:ID]))
        return row is None or row["status"] not in BLOCKING

    erased = _erased_by_unsubscribing(ctx, session, [
        s for s in pulled if s.remote_id not in (None, "") and may_echo(s) and not _our_echo(s, pushes.get(s.email))])
    changed: set[str] = set()
    writes: dict[tuple[str, str], dict[str, Any]] = {}
    now = utcnow()
    for status in pulled:
        # Only an unsubscribe can be one list's; a complaint or a hard bounce blocks everything.
        scope = status.remote_list[:ID] if status.status == "unsubscribed" else ""
        key = (status.email, scope)
        if may_echo(status) and (_our_echo(status, pushes.get(status.email))
                                 or (str(status.remote_id), email_digest(status.email)) in erased):
            ctx.counts["status_echoes_ignored"] += 1
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
        if later and status.status not in BLOCKING and row["status"] in BLOCKING:
            # A soft bounce (information only) after a stored opt-out is no newer opt-out: dated
            # by it, a complaint looked newer than the CRM consent given after it (found by make
            # fuzz FUZZ_SEED=20261209 FUZZ_EXAMPLES=20 FUZZ_STEPS=40 -k postacell, and euromsg).
            later = False
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
    upsert(session, MEMBER_STATUSES, [{"tenant_id": ctx.tenant_id, "connection_id": ctx.connection_id, **row}
                                      for row in writes.values()],
           key=("connection_id", "email", "remote_list_id"), update=("status", "occurred_at", "pulled_at"))
    ctx.rows_written += len(writes)
    ctx.counts["statuses_pulled"] += len(changed)
    for part in chunks(sorted(changed)):
        session.execute(sa.update(MemberLink).where(
            MemberLink.connection_id == ctx.connection_id, MemberLink.email.in_(part))
            .values(payload_hash="", source_digest=None).execution_options(synchronize_session=False))
    return changed


def _erased_by_unsubscribing(ctx: RunContext, session: Session,
                             statuses: Sequence[RemoteStatus]) -> set[tuple[str, str]]:
    """(remote id, address digest) of the records among ``statuses`` that we unsubscribed for a
    KVKK erasure (the ``erasures`` audit): a provider that removes by unsubscribing keeps the
    erased member's record, and its link is gone with the member, so its "unsubscribed" pulled
    back is our own echo by the audit, not by a link. Stored as the recipient's it would block
    whoever holds the address next (at a provider keyed by our member id, a member with its own
    record there). One read, only for unsubscribes that are neither stored nor a link's echo."""
    if not statuses:
        return set()
    found: set[tuple[str, str]] = set()
    remote_ids = sorted({str(s.remote_id) for s in statuses})
    for part in chunks(remote_ids):
        found.update((str(remote_id), digest) for remote_id, digest in session.execute(
            sa.select(Erasure.remote_id, Erasure.email_sha256).where(
                Erasure.connection_id == ctx.connection_id, Erasure.action == "unsubscribed",
                ctx.one_of(Erasure.remote_id, part))))
    return found


def _our_echo(status: RemoteStatus, pushes: list[tuple[str | None, str, dt.datetime]] | None) -> bool:
    """Is this pulled "unsubscribed" our own push coming back? Yes when OUR LAST push to that
    contact was an unsubscribe: the contact is the one with the status's remote id where both know
    one (at a provider keyed by our member id two members' contacts share an address), and the
    last push is the latest of the links with that address (another member's earlier RET, or a
    removed contact's, says nothing about a contact we pushed active since). Matching by address
    alone dropped recipients' unsubscribes as echoes: they were never stored, so never blocked."""
    if not pushes:
        return False
    # (ids compared as text: a provider may answer a number in one call and a string in another)
    remote_id = str(status.remote_id) if status.remote_id not in (None, "") else None
    mine = [push for push in pushes if not (remote_id and push[0] and str(push[0]) != remote_id)]
    if not mine:
        return False
    return max(mine, key=lambda push: push[2])[1] == "unsubscribed"


async def pull_consents(ctx: RunContext) -> None:
    """İYS states from a provider that is the tenant's İYS integrator, into iys_consents. A
    state only moves to a newer consent date; a RET blocks the e-mail channel at every provider
    of the tenant until the CRM records a newer ONAY (see load_suppressions)."""
    if ctx.consent_api is None:
        return
    pulled = [consent async for consent in ctx.consent_api.pull_consents(ctx.read_since(CONSENTS_STREAM))]
    ctx.counts["consents_seen"] += len(pulled)
    if ctx.options.dry_run:
        _plan_consents(ctx, pulled)
        return
    if not pulled:
        return
    with ctx.sessions.begin() as session:
        existing: dict[tuple[str, str, str], IysConsent] = {}
        for part in chunks(sorted({c.recipient for c in pulled})):
            for found in session.scalars(sa.select(IysConsent).where(
                    IysConsent.connection_id == ctx.connection_id, IysConsent.recipient.in_(part))):
                existing[(found.recipient, found.consent_type, found.recipient_type)] = found
        for consent in pulled:
            key = (consent.recipient[:EMAIL], consent.channel, consent.recipient_type)
            row = existing.get(key)
            if row is None:
                existing[key] = IysConsent(
                    tenant_id=ctx.tenant_id, connection_id=ctx.connection_id, recipient=key[0],
                    consent_type=consent.channel, recipient_type=consent.recipient_type, status=consent.status,
                    consent_date=consent.consent_date, source=consent.source)
                session.add(existing[key])
            elif consent.consent_date > row.consent_date:
                row.status, row.consent_date, row.source = consent.status, consent.consent_date, consent.source
                row.pulled_at = utcnow()
            else:
                continue
            ctx.counts["consents_pulled"] += 1
        newest = max(c.consent_date for c in pulled)
        previous = watermark_for(session, ctx.connection_id, CONSENTS_STREAM)
        set_watermark(session, ctx.connection_id, CONSENTS_STREAM, max(newest, previous or newest))
        ctx.checkpoint(session)


def _plan_consents(ctx: RunContext, pulled: Sequence[RemoteConsent]) -> None:
    """(dry run) The İYS consents the real run would store (``pull_consents``), kept in
    ``ctx.dry`` for planning: nothing is written."""
    latest: dict[tuple[str, str, str], dt.datetime] = {}
    with ctx.sessions() as session:
        for part in chunks(sorted({c.recipient[:EMAIL] for c in pulled})):
            for recipient, consent_type, recipient_type, consent_date in session.execute(
                    sa.select(IysConsent.recipient, IysConsent.consent_type, IysConsent.recipient_type,
                              IysConsent.consent_date).where(
                        IysConsent.connection_id == ctx.connection_id, IysConsent.recipient.in_(part))):
                latest[(recipient, consent_type, recipient_type)] = consent_date
    for consent in pulled:
        key = (consent.recipient[:EMAIL], consent.channel, consent.recipient_type)
        known = latest.get(key)
        if known is not None and consent.consent_date <= known:
            continue
        latest[key] = consent.consent_date
        ctx.counts["consents_pulled"] += 1
        if consent.channel == "EPOSTA":
            ctx.dry.consents[(key[0], key[2])] = (consent.status, consent.consent_date)


def members_with_new_suppressions(ctx: RunContext, session: Session) -> list[str]:
    """Linked members of this connection whose address got a suppression or an İYS state at
    ANY provider of the tenant since this connection last looked: they are planned again, so
    an unsubscribe at one provider reaches the others without waiting for a CRM change."""
    mark = watermark_for(session, ctx.connection_id, SUPPRESSIONS_SEEN_STREAM)
    if mark is None:
        return []
    since = mark - SUPPRESSIONS_SEEN_MARGIN
    emails = set(session.scalars(sa.select(MemberStatus.email).where(
        MemberStatus.tenant_id == ctx.tenant_id, MemberStatus.pulled_at > since,
        MemberStatus.status.in_(sorted(BLOCKING)))))
    emails.update(session.scalars(sa.select(IysConsent.recipient).where(
        IysConsent.tenant_id == ctx.tenant_id, IysConsent.pulled_at > since, IysConsent.status == "RET")))
    if ctx.options.dry_run:     # what the real runs before this one (and its own pull) would have stored
        for dry in ctx.dry_pulled.of_tenant(ctx.tenant_id).values():
            emails.update(dry.changed)
            emails.update(recipient for (recipient, _), (status, _) in dry.consents.items() if status == "RET")
    found: set[str] = set()
    for part in chunks(sorted(emails)):
        found.update(session.scalars(sa.select(MemberLink.crm_member_id).where(
            MemberLink.connection_id == ctx.connection_id, MemberLink.email.in_(part))))
    return sorted(found)


def load_suppressions(ctx: RunContext, session: Session, emails: Iterable[str]) -> dict[str, list[Suppression]]:
    found: dict[str, list[Suppression]] = defaultdict(list)
    # A dry run plans on what the real runs would have stored: its own pull, and those of the
    # tenant's connections dry-run before it in the same invocation (stored rows they replace
    # are left out).
    dry = ctx.dry_pulled.of_tenant(ctx.tenant_id) if ctx.options.dry_run else {}
    for part in chunks(sorted(set(emails))):
        for row in session.execute(sa.select(MemberStatus.email, MemberStatus.connection_id, MemberStatus.status,
                                             MemberStatus.occurred_at, MemberStatus.remote_list_id).where(
                MemberStatus.tenant_id == ctx.tenant_id, ctx.one_of(MemberStatus.email, part))):
            if row.status in BLOCKING and not (row.connection_id in dry
                                               and (row.email, row.remote_list_id) in dry[row.connection_id].statuses):
                found[row.email].append(Suppression(row.connection_id, row.status, row.occurred_at,
                                                    row.remote_list_id))
        # İYS RET pulled from the tenant's İYS integrator: the e-mail channel is refused at
        # every provider of the tenant until the CRM records a newer ONAY.
        # A RET that is not newer than our own "unsubscribed" push to that provider is the echo
        # of the CRM's own earlier RET (we push the CRM's consent fields), not the recipient's.
        pushed_unsubscribed = {(row.connection_id, row.email): row.pushed_at for row in session.execute(
            sa.select(MemberLink.connection_id, MemberLink.email, MemberLink.pushed_at).where(
                ctx.one_of(MemberLink.email, part), MemberLink.status_pushed == "unsubscribed",
                sa.or_(MemberLink.connection_id.in_(sa.select(IysConsent.connection_id).where(
                    IysConsent.tenant_id == ctx.tenant_id).scalar_subquery()),
                    MemberLink.connection_id.in_(sorted(cid for cid, d in dry.items() if d.consents)))))}
        wanted_part = set(part)
        refused = [(recipient, connection_id, consent_date) for recipient, connection_id, recipient_type, consent_date
                   in session.execute(sa.select(IysConsent.recipient, IysConsent.connection_id,
                                                IysConsent.recipient_type, IysConsent.consent_date).where(
                       IysConsent.tenant_id == ctx.tenant_id, ctx.one_of(IysConsent.recipient, part),
                       IysConsent.consent_type == "EPOSTA", IysConsent.status == "RET"))
                   if not (connection_id in dry and (recipient, recipient_type) in dry[connection_id].consents)]
        refused += [(recipient, connection_id, consent_date) for connection_id, d in dry.items()
                    for (recipient, _), (status, consent_date) in d.consents.items()
                    if status == "RET" and recipient in wanted_part]
        for recipient, connection_id, consent_date in refused:
            echo_until = pushed_unsubscribed.get((connection_id, recipient))
            if echo_until is not None and consent_date <= echo_until:
                continue
            found[recipient].append(Suppression(connection_id, IYS_RET, consent_date))
    wanted = set(emails)
    for d in dry.values():
        for (email, _), suppression in d.statuses.items():
            if email in wanted and suppression.status in BLOCKING:
                found[email].append(suppression)
    return found
