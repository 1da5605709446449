"""Rejects: rows the provider refused, or we refused before sending, kept open (one per member
and list, ``crm_member_id == ""`` for a list's own problem) until a later push succeeds; which of
them a run tries again (``rejects_due``), and the reject codes of our own.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from sync.engine.context import RunContext, chunks
from sync.errors import RejectedRow
from sync.models import EMAIL, ID, Reject, utcnow
from sync.providers.base import MemberKey

#: A row the PROVIDER refused is retried after 1 h, 2 h, 4 h ... at most a day (unless it changes).
REJECT_BACKOFF_MAX = dt.timedelta(hours=24)
#: A row we refuse before sending (bad address, e-mail held by another member, a field value the
#: provider cannot take). It is planned again when the member changes, when another member
#: releases the address it waits for (``_load_chunk`` in sync/engine/plan.py), and otherwise with
#: the provider backoff: an unchanged row would be refused the same way, and re-planning every such
#: row on every run made a run with no change O(rejects) (4,000 members at 1,000,000).
VALIDATION = "validation"
#: The reason of our validation reject of a member whose address another member holds.
HELD_BY = "e-mail also belongs to CRM member "


def held_by_reason(owner: str) -> str:
    return f"{HELD_BY}{owner}; the provider keeps one contact per e-mail"


def holder_named(reason: str | None) -> str | None:
    """The member a "held by another member" reject names (None: another reject)."""
    if not reason or not reason.startswith(HELD_BY):
        return None
    return reason[len(HELD_BY):].split(";", 1)[0] or None
#: A member waits for a list that does not exist at the provider yet (refused or failed create).
LIST_PENDING = "list_pending"
#: A CRM value longer than our tables hold: reported once, retried when the row changes.
TOO_LONG = "too_long"
#: Reject codes of our own re-checked on every run (the others back off).
EVERY_RUN = frozenset({LIST_PENDING})
#: The reject of a removal the provider cannot make (``member_removal == "none"``).
REMOVAL_UNSUPPORTED = "removal_unsupported"
#: Rejects that ask a person to act in the provider's panel on one ADDRESS (remove it, unsubscribe
#: it): a later successful push of the member at another address (an e-mail change) is no answer
#: to them; only a push at that same address is (the member is back there: nothing to remove).
PANEL_ACTIONS = frozenset({REMOVAL_UNSUPPORTED, "unsubscribe_unsupported"})


def reject_backoff(attempts: int) -> dt.timedelta:
    """How long a reject refused ``attempts`` times waits: 1 h, 2 h, 4 h ... at most a day. The
    exponent is capped before the power is taken: ``timedelta(hours=2 ** 35)`` raises OverflowError,
    which stopped every run of the connection on a reject's 36th attempt (about five weeks of
    nightly retries; sooner for a row tried on every run)."""
    hours = 2 ** min(max(attempts - 1, 0), 5)  # 2 ** 5 = 32 h, already over the cap
    return min(dt.timedelta(hours=hours), REJECT_BACKOFF_MAX)


@dataclass(frozen=True)
class WaitingReject:
    """An open reject this run does not try again (its backoff runs, or it waits for a change)."""

    member_id: str
    list_id: str
    email: str | None
    code: str
    reason: str
    #: When a run tries it again; None: when its CRM row changes.
    retry_at: dt.datetime | None


def rejects_due(ctx: RunContext, session: Session, waiting: list[WaitingReject] | None = None) -> list[str]:
    """Members with an open reject to try again: those waiting for a list every run, the others
    (the provider's refusals, our validation) with an exponential backoff. The others go to
    ``waiting`` when given."""
    due = []
    gone = _holders_gone(ctx, session)
    for member_id, list_id, email, code, reason, attempts, last_seen in session.execute(
            sa.select(Reject.crm_member_id, Reject.crm_list_id, Reject.email, Reject.provider_code, Reject.reason,
                      Reject.attempts, Reject.last_seen_at).where(
                Reject.connection_id == ctx.connection_id, Reject.resolved_at.is_(None),
                Reject.crm_member_id != "")):
        if code == TOO_LONG:
            if waiting is not None:
                waiting.append(WaitingReject(member_id, list_id, email, code or "", reason, None))
            continue
        wait = reject_backoff(attempts)
        # (a backfill tries every one again: it compares no CRM digest for them)
        if code in EVERY_RUN or last_seen + wait <= ctx.until or ctx.options.backfill or (
                code == VALIDATION and holder_named(reason) in gone):
            due.append(member_id)
        elif waiting is not None:
            waiting.append(WaitingReject(member_id, list_id, email, code or "", reason, last_seen + wait))
    return list(dict.fromkeys(due))


def _holders_gone(ctx: RunContext, session: Session) -> set[str]:
    """Members named by an open "held by another member" reject that the CRM no longer has (a hard
    delete, looked for when the run looks for them: ``vanished_members_due``), or has deleted: the
    member refused for them may have the address now. A holder with a link is planned as vanished
    and brings them (``_load_chunk``); one without (never pushed: a RET, one in no list) did not."""
    if not (ctx.options.backfill or (ctx.vanished is not None and ctx.vanished[0])):
        return set()
    named = {holder for (reason,) in session.execute(sa.select(Reject.reason).where(
        Reject.connection_id == ctx.connection_id, Reject.resolved_at.is_(None), Reject.provider_code == VALIDATION,
        Reject.reason.startswith(HELD_BY, autoescape=True))) if (holder := holder_named(reason))}
    if not named:
        return set()
    live = {member.id for member in ctx.crm.members(sorted(named)) if not member.deleted}
    return named - live


def load_open_rejects(ctx: RunContext, session: Session, member_ids: Sequence[str],
                      lists: Sequence[str] | None = None) -> dict[MemberKey, Reject]:
    found: dict[MemberKey, Reject] = {}
    for part in chunks(member_ids):
        query = sa.select(Reject).where(Reject.connection_id == ctx.connection_id,
                                        ctx.one_of(Reject.crm_member_id, [m[:ID] for m in part]))
        if lists is not None:
            query = query.where(Reject.crm_list_id.in_(lists))
        for row in session.scalars(query):
            found[MemberKey(row.crm_member_id, row.crm_list_id)] = row
    return found


def record_reject(ctx: RunContext, session: Session, rejects: dict[MemberKey, Reject], key: MemberKey,
                  email: str | None, error: RejectedRow) -> None:
    ctx.counts["rejected"] += 1
    email = None if email is None else email[:EMAIL]
    if ctx.waiting is not None and email and key.crm_member_id and error.provider_code == VALIDATION:
        ctx.waiting[email].add(key.crm_member_id)
        holder = holder_named(error.reason)
        if holder:
            ctx.waiting_on.setdefault(holder, set()).add(key.crm_member_id)
    reason = error.reason[:2000]
    row = rejects.get(key)
    if row is None:
        rejects[key] = row = Reject(connection_id=ctx.connection_id, run_id=ctx.run_id,
                                    crm_member_id=key.crm_member_id, crm_list_id=key.crm_list_id, email=email,
                                    provider_code=error.provider_code, reason=reason)
        session.add(row)
        return
    # (attempts is None on a row added earlier in this transaction: one key rejected twice)
    row.attempts = (row.attempts or 0) + 1 if row.resolved_at is None else 1
    row.run_id, row.email, row.provider_code, row.reason = ctx.run_id, email, error.provider_code, reason
    row.last_seen_at, row.resolved_at = utcnow(), None
