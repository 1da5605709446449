"""Acting on rejects without SQL: find them, retry them, dismiss them (who, when and why).

The engine retries a member's open reject by itself (ours on every run, the provider's after an
exponential backoff: ``sync.engine.rejects.rejects_due``). ``retry`` makes a reject due at the next
run by moving its last attempt back past the longest backoff; ``dismiss`` records an operator's
decision and sets ``resolved_at`` too, so the engine, which only retries open rejects, stops.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from sync.engine.connection_sync import REJECT_BACKOFF_MAX, TOO_LONG
from sync.errors import InvalidInputError, NotFoundError
from sync.models import Connection, Reject, Tenant, utcnow
from sync.ops.status import iso, select_connections

#: ``--state`` of ``rejects list``.
STATES = ("open", "dismissed", "resolved", "all")


@dataclass(frozen=True)
class RejectFilter:
    """Which rejects a command acts on: explicit ids and/or filters (all of them must match)."""

    ids: tuple[int, ...] = ()
    tenant: str | None = None
    provider: str | None = None
    code: str | None = None
    reason: str | None = None       # a case-insensitive substring of the reason
    state: str = "open"

    @property
    def selects_something(self) -> bool:
        """True when the filter narrows the rejects down (a bulk action needs at least one)."""
        return bool(self.ids or self.tenant or self.provider or self.code or self.reason)


def state_of(reject: Reject) -> str:
    if reject.resolved_at is None:
        return "open"
    return "dismissed" if reject.dismissed_at is not None else "resolved"


def _query(session: Session, selection: RejectFilter) -> sa.Select[Reject, str, str]:
    if selection.state not in STATES:
        raise InvalidInputError(f"state must be one of {', '.join(STATES)}: {selection.state!r}")
    connection_ids = [c.id for c, _ in select_connections(session, selection.tenant, selection.provider)]
    query = (sa.select(Reject, Tenant.slug, Connection.provider)
             .join(Connection, Connection.id == Reject.connection_id).join(Tenant, Tenant.id == Connection.tenant_id)
             .where(Reject.connection_id.in_(connection_ids)).order_by(Reject.id))
    if selection.ids:
        query = query.where(Reject.id.in_(selection.ids))
    if selection.code is not None:
        query = query.where(Reject.provider_code == selection.code)
    if selection.reason:
        query = query.where(sa.func.lower(Reject.reason).contains(selection.reason.lower(), autoescape=True))
    if selection.state == "open":
        query = query.where(Reject.resolved_at.is_(None))
    elif selection.state == "dismissed":
        query = query.where(Reject.resolved_at.is_not(None), Reject.dismissed_at.is_not(None))
    elif selection.state == "resolved":
        query = query.where(Reject.resolved_at.is_not(None), Reject.dismissed_at.is_(None))
    return query


def reject_view(reject: Reject, tenant: str, provider: str) -> dict[str, Any]:
    """One reject as plain data (``rejects list --json``, ``rejects show``)."""
    return {
        "id": reject.id, "tenant": tenant, "provider": provider, "state": state_of(reject),
        "kind": "list" if reject.crm_member_id == "" else "member",
        "crm_member_id": reject.crm_member_id, "crm_list_id": reject.crm_list_id, "email": reject.email,
        "code": reject.provider_code, "reason": reject.reason, "attempts": reject.attempts,
        "first_seen_at": iso(reject.first_seen_at), "last_seen_at": iso(reject.last_seen_at),
        "resolved_at": iso(reject.resolved_at), "dismissed_at": iso(reject.dismissed_at),
        "dismissed_by": reject.dismissed_by, "dismiss_reason": reject.dismiss_reason,
    }


def find_rejects(session: Session, selection: RejectFilter, limit: int | None = None) -> list[dict[str, Any]]:
    query = _query(session, selection)
    if limit is not None:
        query = query.limit(limit)
    return [reject_view(r, tenant, provider) for r, tenant, provider in session.execute(query)]


def get_reject(session: Session, reject_id: int) -> dict[str, Any]:
    found = session.execute(
        sa.select(Reject, Tenant.slug, Connection.provider).join(Connection, Connection.id == Reject.connection_id)
        .join(Tenant, Tenant.id == Connection.tenant_id).where(Reject.id == reject_id)).first()
    if found is None:
        raise NotFoundError(f"no reject {reject_id} (see `crm-esp-sync rejects list`)")
    reject, tenant, provider = found
    return reject_view(reject, tenant, provider)


@dataclass
class RetryOutcome:
    queued: list[int]
    #: Rejects the next run would not pick by a retry: lists (re-tried on every run anyway) and
    #: over-long values (re-tried when the CRM row changes).
    not_queued: list[tuple[int, str]]
    connection_ids: list[int]


def retry_rejects(session: Session, selection: RejectFilter, now: dt.datetime | None = None) -> RetryOutcome:
    """Make the selected open (or dismissed) rejects due at the next run of their connection.

    A dismissed reject is reopened: the dismissal is undone (who and why are cleared). A
    resolved reject has nothing to retry and is not selected.
    """
    now = now or utcnow()
    due_at = now - REJECT_BACKOFF_MAX - dt.timedelta(seconds=1)     # past the longest backoff
    if selection.state not in ("open", "dismissed", "all"):
        raise InvalidInputError("only open or dismissed rejects can be retried")
    outcome = RetryOutcome([], [], [])
    for reject, _tenant, _provider in session.execute(_query(session, selection)).all():
        if reject.resolved_at is not None and reject.dismissed_at is None:
            continue                          # resolved by a run: nothing to retry
        if reject.crm_member_id == "":
            outcome.not_queued.append((reject.id, "a list is tried again on every run"))
            continue
        if reject.provider_code == TOO_LONG:
            outcome.not_queued.append((reject.id, "an over-long CRM value is tried again when the row changes"))
            continue
        reject.last_seen_at = min(reject.last_seen_at, due_at)
        reject.resolved_at = reject.dismissed_at = reject.dismissed_by = reject.dismiss_reason = None
        outcome.queued.append(reject.id)
        if reject.connection_id not in outcome.connection_ids:
            outcome.connection_ids.append(reject.connection_id)
    return outcome


def dismiss_rejects(session: Session, selection: RejectFilter, *, by: str, reason: str,
                    now: dt.datetime | None = None) -> list[int]:
    """Dismiss the selected open rejects: record who and why, and resolve them so the engine
    stops retrying. A dismissed row the engine meets again (its member changed, a backfill) is
    open again, keeps the record of the dismissal, and does not make that run ``partial``."""
    if not reason.strip():
        raise InvalidInputError("--reason must say why the rejects are dismissed")
    if not by.strip():
        raise InvalidInputError("--by must name who dismisses them")
    now = now or utcnow()
    dismissed = []
    for reject, _tenant, _provider in session.execute(_query(session, RejectFilter(
            selection.ids, selection.tenant, selection.provider, selection.code, selection.reason, "open"))).all():
        reject.dismissed_at = reject.resolved_at = now
        reject.dismissed_by, reject.dismiss_reason = by.strip()[:128], reason.strip()
        dismissed.append(reject.id)
    return dismissed
