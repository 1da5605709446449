"""What an operator asks first: how is each connection doing? Plain functions over the daemon's tables.

``connection_statuses`` returns plain dicts in a stable shape (``STATUS_SCHEMA_VERSION``): the
CLI prints them as a table or as JSON (``status --json``, documented in docs/operating.md), and the HTTP
endpoint reads the same functions for ``/metrics`` and the status page.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from sync import registry
from sync.engine.connection_sync import LIST_PENDING
from sync.engine.runner import FAILING_STATUSES, NEW_REJECTS_STATUS
from sync.models import Connection, MemberStatus, Reject, SyncRun, Tenant, Watermark, utcnow
from sync.providers.specs import get_spec

#: Outcome of a run that found another worker's live lease (it did nothing).
BLOCKED = "blocked"
#: Outcome of a run that had nothing to do: a scheduled tick another replica already ran, or a
#: provider without sync code.
SKIPPED = "skipped"
#: Runs that say nothing about how the connection is doing.
IDLE_STATUSES = (BLOCKED, SKIPPED)
#: Bumped only when a field changes meaning or disappears; new fields may be added at any time.
STATUS_SCHEMA_VERSION = 1
#: How a connection is doing, from its last finished run (worst first).
HEALTHS = ("failing", "new_rejects", "never_run", "ok", "disabled")
#: Counts of a run that are rows pushed to, or pulled from, the provider (``/metrics``, the status page).
PUSHED = ("members_added", "members_updated", "members_removed", "lists_created", "lists_renamed", "lists_deleted")
PULLED = ("statuses_pulled", "campaigns_pulled", "campaign_results")


def iso(value: dt.datetime | None) -> str | None:
    """An aware UTC time as ISO 8601 with a ``Z``, seconds precision; None stays None."""
    if value is None:
        return None
    return value.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def age_seconds(value: dt.datetime | None, now: dt.datetime) -> int | None:
    return None if value is None else max(0, int((now - value).total_seconds()))


def age_text(seconds: int | None) -> str:
    """``3h ago`` for people (the CLI's table and the status page); ``-`` for None."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def health_of(enabled: bool, last_status: str | None) -> str:
    """``failing`` (the last run failed, was blocked, lost its lease, crashed or was interrupted:
    it did not do all its work), ``new_rejects``
    (it ended partial), ``never_run``, ``ok`` or ``disabled``."""
    if not enabled:
        return "disabled"
    if last_status is None:
        return "never_run"
    if last_status in FAILING_STATUSES or last_status in ("crashed", "interrupted"):
        return "failing"
    return "new_rejects" if last_status == NEW_REJECTS_STATUS else "ok"


def select_connections(session: Session, tenant: str | None = None,
                       provider: str | None = None) -> list[tuple[Connection, str]]:
    """Connections (enabled or not) with their tenant's slug, in a stable order; unknown names fail."""
    if provider is not None:
        get_spec(provider)
    if tenant is not None:
        registry.get_tenant(session, tenant)
    query = sa.select(Connection, Tenant.slug).join(Tenant).order_by(Tenant.slug, Connection.provider)
    if tenant is not None:
        query = query.where(Tenant.slug == tenant)
    if provider is not None:
        query = query.where(Connection.provider == provider)
    return [(connection, slug) for connection, slug in session.execute(query)]


def run_view(run: SyncRun) -> dict[str, Any]:
    seconds = run.timings.get("total") if run.timings else None
    return {
        "run_id": run.run_uid, "kind": run.kind, "status": run.status, "worker": run.worker,
        "started_at": iso(run.started_at), "finished_at": iso(run.finished_at),
        "seconds": seconds, "counts": dict(sorted((run.counts or {}).items())),
        "timings": dict(sorted((run.timings or {}).items())),
        "http_requests": (run.counts or {}).get("http_requests"),   # null for runs recorded before it was stored
        # requests in flight at the end of the run (the adaptive limit, sync.http.AdaptiveLimit)
        "http_concurrency": (run.counts or {}).get("http_concurrency"),
        # requests a second at the end of the run (learnt from 429s, sync.http.AdaptiveRate); null: not paced
        "http_rate_per_s": (run.counts or {}).get("http_rate_per_s"),
        "error": run.error,
    }


def connection_statuses(session: Session, tenant: str | None = None, provider: str | None = None, *,
                        runs: int = 5, now: dt.datetime | None = None) -> dict[str, Any]:
    """The status document of every matching connection (see docs/operating.md for its schema)."""
    now = now or utcnow()
    db_now = _database_now(session) or now
    connections = select_connections(session, tenant, provider)
    ids = [c.id for c, _ in connections]
    rejects = _open_rejects(session, ids)
    suppressions = _suppressions(session, ids)
    items = []
    for connection, slug in connections:
        recent = list(session.scalars(sa.select(SyncRun).where(SyncRun.connection_id == connection.id)
                                      .order_by(SyncRun.started_at.desc(), SyncRun.id.desc()).limit(runs)))
        finished = next((r for r in recent if r.status not in ("running", BLOCKED)), None)
        if finished is None:
            finished = last_finished_run(session, connection.id)
        last_success = session.scalar(sa.select(sa.func.max(SyncRun.finished_at)).where(
            SyncRun.connection_id == connection.id, SyncRun.kind != "dry-run",
            SyncRun.status.in_(("succeeded", "succeeded_with_rejects", NEW_REJECTS_STATUS))))
        watermarks = [
            {"stream": w.stream, "value": w.value, "updated_at": iso(w.updated_at),
             "age_seconds": age_seconds(w.updated_at, now)}
            for w in session.scalars(sa.select(Watermark).where(Watermark.connection_id == connection.id)
                                     .order_by(Watermark.stream))]
        lease_live = connection.lease_expires_at is not None and connection.lease_expires_at > db_now
        items.append({
            "id": connection.id, "tenant": slug, "provider": connection.provider, "enabled": connection.enabled,
            "schedule": connection.schedule,
            "health": health_of(connection.enabled, finished.status if finished else None),
            "last_run": run_view(finished) if finished else None,
            "last_success_at": iso(last_success), "last_success_age_seconds": age_seconds(last_success, now),
            "recent_runs": [run_view(r) for r in recent],
            "watermarks": watermarks,
            "rejects": rejects.get(connection.id, _empty_rejects()),
            "suppressions": suppressions.get(connection.id, {}),
            "readings": dict(sorted((connection.readings or {}).items())),
            "lease": {"holder": connection.lease_owner if lease_live else None,
                      "expires_at": iso(connection.lease_expires_at) if lease_live else None,
                      "last_holder": connection.lease_owner, "live": lease_live},
        })
    return {"schema_version": STATUS_SCHEMA_VERSION, "generated_at": iso(now), "connections": items}


def last_finished_run(session: Session, connection_id: int) -> SyncRun | None:
    """The connection's last finished run that tried the work. A ``blocked`` run (another worker
    held the lease, as replicas do to each other on every tick) or a ``skipped`` one (the tick was
    run by another replica) says nothing about the connection, so it counts only when there is
    nothing else."""
    newest = (sa.select(SyncRun).where(SyncRun.connection_id == connection_id, SyncRun.status != "running")
              .order_by(SyncRun.started_at.desc(), SyncRun.id.desc()).limit(1))
    return session.scalar(newest.where(SyncRun.status.not_in(IDLE_STATUSES))) or session.scalar(newest)


def _empty_rejects() -> dict[str, Any]:
    return {"open": 0, "by_code": [], "lists_without_mapping": [], "members_waiting_for_list": 0}


def _open_rejects(session: Session, connection_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Open rejects per connection: counts by code (with one example reason), the lists the
    provider does not have (rejects with an empty member id) and the members waiting for one."""
    found: dict[int, dict[str, Any]] = {}
    if not connection_ids:
        return found
    by_code: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
    for connection_id, code, count, example in session.execute(
            sa.select(Reject.connection_id, Reject.provider_code, sa.func.count(), sa.func.min(Reject.reason))
            .where(Reject.connection_id.in_(connection_ids), Reject.resolved_at.is_(None),
                   Reject.crm_member_id != "")
            .group_by(Reject.connection_id, Reject.provider_code)):
        by_code[connection_id][code or ""] = {"code": code, "count": int(count), "example_reason": example}
    lists: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in session.scalars(sa.select(Reject).where(
            Reject.connection_id.in_(connection_ids), Reject.resolved_at.is_(None), Reject.crm_member_id == "")
            .order_by(Reject.crm_list_id)):
        lists[row.connection_id].append({"crm_list_id": row.crm_list_id, "code": row.provider_code,
                                         "reason": row.reason, "since": iso(row.first_seen_at),
                                         "reject_id": row.id})
    for connection_id in set(by_code) | set(lists):
        codes = by_code.get(connection_id, {})
        found[connection_id] = {
            "open": sum(c["count"] for c in codes.values()) + len(lists.get(connection_id, [])),
            "by_code": sorted(codes.values(), key=lambda c: (-c["count"], c["code"] or "")),
            "lists_without_mapping": lists.get(connection_id, []),
            "members_waiting_for_list": codes.get(LIST_PENDING, {}).get("count", 0),
        }
    return found


def _suppressions(session: Session, connection_ids: list[int]) -> dict[int, dict[str, int]]:
    """Suppressions pulled from each connection's provider, by kind. Each one applies to every
    provider of the tenant (a member unsubscribed here is pushed as unsubscribed elsewhere)."""
    found: dict[int, dict[str, int]] = defaultdict(dict)
    if connection_ids:
        for connection_id, status, count in session.execute(
                sa.select(MemberStatus.connection_id, MemberStatus.status, sa.func.count())
                .where(MemberStatus.connection_id.in_(connection_ids))
                .group_by(MemberStatus.connection_id, MemberStatus.status)
                .order_by(MemberStatus.connection_id, MemberStatus.status)):
            found[connection_id][status] = int(count)
    return found


def _database_now(session: Session) -> dt.datetime | None:
    """The database's clock, which decides lease expiry (see ``sync.engine.state``)."""
    from sync.engine.state import db_now

    return db_now(session)


def nightly_totals(session: Session, nights: int = 30, *, now: dt.datetime | None = None,
                   timezone: str = "UTC") -> list[dict[str, Any]]:
    """Rows pushed, pulled and rejected per night (the local date a run started, in ``timezone``)
    over the last ``nights`` nights, oldest first; a night without runs has zeros. Dry runs
    and running runs are left out."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(timezone)
    today = (now or utcnow()).astimezone(zone).date()
    first = today - dt.timedelta(days=nights - 1)
    totals = {first + dt.timedelta(days=n): {"pushed": 0, "pulled": 0, "rejected": 0, "runs": 0}
              for n in range(nights)}
    since = dt.datetime.combine(first, dt.time(), zone).astimezone(dt.UTC)
    for started_at, stored in session.execute(
            sa.select(SyncRun.started_at, SyncRun.counts)
            .where(SyncRun.started_at >= since, SyncRun.kind != "dry-run", SyncRun.status != "running")):
        night = totals.get(started_at.astimezone(zone).date())
        if night is None:
            continue                       # started "tomorrow" by a clock ahead of ours
        counts = stored or {}
        night["pushed"] += sum(int(counts.get(k, 0)) for k in PUSHED)
        night["pulled"] += sum(int(counts.get(k, 0)) for k in PULLED)
        night["rejected"] += int(counts.get("rejected", 0))
        night["runs"] += 1
    return [{"night": night.isoformat(), **values} for night, values in totals.items()]


def runs_with_errors(session: Session, limit: int = 20) -> list[dict[str, Any]]:
    """The latest finished runs that did not do their work or left an error, newest first,
    each with its tenant and provider. ``blocked`` runs are left out: replicas block each other
    on every tick, and the run that held the lease has its own row."""
    query = (sa.select(SyncRun, Tenant.slug, Connection.provider)
             .join(Connection, Connection.id == SyncRun.connection_id).join(Tenant, Tenant.id == Connection.tenant_id)
             .where(SyncRun.status.not_in(("running", *IDLE_STATUSES)),
                    sa.or_(SyncRun.error.is_not(None), SyncRun.status.in_((*FAILING_STATUSES, "crashed"))))
             .order_by(SyncRun.started_at.desc(), SyncRun.id.desc()).limit(limit))
    return [{"tenant": slug, "provider": provider, **run_view(run)} for run, slug, provider in session.execute(query)]


def tenant_names(session: Session) -> dict[str, str]:
    """Tenant slug -> display name (user input: whoever shows it escapes it)."""
    return {slug: name for slug, name in session.execute(sa.select(Tenant.slug, Tenant.name))}
