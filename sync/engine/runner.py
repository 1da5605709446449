"""Runs connections: lease, run record, phases with timings, one summary line per run.

``run_connection`` is the plain function the CLI, the scheduler and the tests all call.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session, sessionmaker

from sync import db, registry
from sync.config import Settings
from sync.crm import CrmReader
from sync.crypto import Vault
from sync.engine.connection_sync import (
    MAX_DELETE_MEMBERS,
    MAX_DELETE_PERCENT,
    ConnectionSync,
    DryPulled,
    Plan,
    RunOptions,
)
from sync.engine.state import LeaseKeeper, close_orphaned_runs, set_watermark, watermark_for
from sync.errors import ConfigurationError, LeaseHeldError, LeaseLostError, StopRequested, SyncError
from sync.fields import field_maps
from sync.http import Auth, HttpPolicy, ProviderHTTP
from sync.logs import SECRETS, bind_context, clear_context
from sync.models import Connection, Reject, SyncRun, Tenant, utcnow
from sync.providers.base import IMPLEMENTATIONS, Capabilities, build_provider
from sync.providers.readings import merged_readings, reading_changes, readings_of
from sync.providers.specs import get_spec
from sync.sql import crm_now
from sync.stopping import STOP

log = structlog.get_logger(__name__)

TransportFactory = Callable[[Connection], httpx.AsyncBaseTransport | None]
ProgressCallback = Callable[[str, int, int], None]
DEFAULT_OPTIONS = RunOptions()
#: Outcomes that make ``once``/``backfill`` exit 1: the run did not do its work.
#: ``blocked``: another worker's live lease; ``lost_lease``: taken over (or not confirmable) mid-run.
FAILING_STATUSES = frozenset({"failed", "blocked", "lost_lease"})
#: The run did its work, but rows were rejected that were not open before it (new, or resolved
#: once and failing again): someone should look. ``once``/``backfill`` exit 3.
NEW_REJECTS_STATUS = "partial"
#: The run did its work; ``succeeded_with_rejects``: only rows already open before it are still
#: rejected (a known typo does not page anyone every night).
SUCCESS_STATUSES = frozenset({"succeeded", "succeeded_with_rejects", "skipped"})
#: Stopped when asked (SIGTERM, Ctrl-C: sync/stopping.py): what was done is committed, the rest
#: waits for the next run. ``once``/``backfill`` exit 128 + the signal's number.
INTERRUPTED_STATUS = "interrupted"
#: Every outcome a finished run can have (``crashed``: closed when its lease was taken over).
RUN_STATUSES = (*sorted(SUCCESS_STATUSES), NEW_REJECTS_STATUS, *sorted(FAILING_STATUSES), INTERRUPTED_STATUS,
                "crashed")


@dataclass
class RunResult:
    connection_id: int
    tenant: str
    provider: str
    run_uid: str
    status: str                       # one of RUN_STATUSES
    counts: dict[str, float] = field(default_factory=dict)   # ints, but the learnt rate
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    plan: Plan | None = None
    http_requests: int = 0


def select_connections(engine: sa.Engine, tenant: str | None = None, provider: str | None = None) -> list[int]:
    """Enabled connections matching the filters, in a stable order."""
    if provider is not None:
        get_spec(provider)
    with db.session_factory(engine)() as session:
        if tenant is not None:
            registry.get_tenant(session, tenant)
        query = (sa.select(Connection.id).join(Tenant).where(Connection.enabled.is_(True))
                 .order_by(Tenant.slug, Connection.provider))
        if tenant is not None:
            query = query.where(Tenant.slug == tenant)
        if provider is not None:
            query = query.where(Connection.provider == provider)
        return list(session.scalars(query))


async def run_connection(settings: Settings, engine: sa.Engine, crm_engine: sa.Engine, connection_id: int,
                         options: RunOptions = DEFAULT_OPTIONS, *, transport_factory: TransportFactory | None = None,
                         on_progress: ProgressCallback | None = None,
                         http_policy: HttpPolicy | None = None, dry_pulled: DryPulled | None = None) -> RunResult:
    """One run of one connection. Never raises for a provider, data or credential problem:
    the outcome is in the returned RunResult and in the sync_runs table. ``dry_pulled``: what
    the dry runs of the same invocation before this one pulled (a dry run plans on it)."""
    sessions = db.session_factory(engine)
    with sessions() as session:
        connection = session.get_one(Connection, connection_id)
        tenant = connection.tenant
    kind = "dry-run" if options.dry_run else ("backfill" if options.backfill else "sync")
    result = RunResult(connection_id, tenant.slug, connection.provider, str(uuid.uuid4()), "failed")
    with sessions.begin() as session:
        run = SyncRun(run_uid=result.run_uid, connection_id=connection_id, kind=kind, status="running",
                      worker=settings.worker_id)
        session.add(run)
        session.flush()
        run_id = run.id
    bind_context(run_id=result.run_uid, tenant=tenant.slug, provider=connection.provider)
    log.info("run.started", kind=kind)
    started = time.monotonic()
    # One owner per run: two runs of one connection in the same process exclude each other too.
    owner = f"{settings.worker_id}/{result.run_uid[:8]}"
    keeper: LeaseKeeper | None = None       # set once the lease is ours; guards every provider write
    heartbeat: asyncio.Task[None] | None = None
    client = httpx.AsyncClient(transport=transport_factory(connection) if transport_factory else None,
                               timeout=HttpPolicy().timeout, follow_redirects=True)
    https: list[ProviderHTTP] = []

    with sessions() as session:
        learnt, steady = learnt_pace(session, connection_id)

    def http_factory(caps: Capabilities, auth: Auth | None) -> ProviderHTTP:
        policy = http_policy or HttpPolicy()
        http = ProviderHTTP(client, provider=connection.provider, base_url=connection.base_url,
                            policy=replace(policy, concurrency=caps.concurrency, rate_per_s=caps.rate_per_s,
                                           start_rate_per_s=policy.start_rate_per_s or learnt,
                                           start_steady_share=policy.start_steady_share or steady), auth=auth,
                            write_guard=keeper.guard if keeper is not None else None)
        https.append(http)
        return http

    sync: ConnectionSync | None = None
    provider: Any = None
    task, loop = asyncio.current_task(), asyncio.get_running_loop()
    try:
        if task is not None:        # a second SIGTERM/Ctrl-C cancels this run wherever it waits
            STOP.set_cancel(lambda: loop.call_soon_threadsafe(task.cancel))
        STOP.check()
        if connection.provider not in IMPLEMENTATIONS:
            result.status = "skipped"
            result.error = f"{connection.provider}: no sync implementation in this version"
            return result
        vault = Vault(settings.require_master_keys())
        with sessions() as session:
            credentials = vault.decrypt(connection.credentials_encrypted)
            integrator = registry.integrator_credentials(session, vault, connection.provider) \
                if get_spec(connection.provider).integrator_credentials else None
        if not options.dry_run:
            lease = LeaseKeeper(sessions, connection_id, owner, settings.lease_seconds)
            grant = lease.acquire()
            keeper = lease
            heartbeat = asyncio.create_task(keeper.heartbeat())
            with sessions.begin() as session:
                closed = close_orphaned_runs(session, connection_id, run_id, owner)
            if closed or grant.taken_from:
                log.warning("lease.taken_over", previous_owner=grant.taken_from, crashed_runs_closed=closed)
            if options.tick is not None and not claim_tick(sessions, connection_id, options.tick):
                result.status = "skipped"
                result.error = f"the scheduled run of {iso_tick(options.tick)} was made by another worker"
                return result
        provider = build_provider(connection.provider, http_factory, credentials, connection.settings, integrator)
        fields = field_maps(connection.settings)
        if fields and not provider.capabilities.custom_fields:
            raise ConfigurationError(f"{connection.provider} has no custom fields: remove the connection's "
                                     "fields setting")
        crm = CrmReader(crm_engine, settings.crm, tenant.crm_tenant_id, [f.column for f in fields])
        sync = ConnectionSync(
            sessions=sessions, crm=crm, provider=provider, fields=fields, plan_salt=_settings_digest(connection),
            connection_id=connection_id, tenant_id=tenant.id, run_id=run_id, lease_owner=owner,
            lease_seconds=settings.lease_seconds, lookback=dt.timedelta(seconds=settings.lookback_seconds),
            until=crm_now(crm_engine), options=options, on_progress=on_progress,
            report_refresh=dt.timedelta(seconds=settings.report_refresh_seconds),
            vanished_check=dt.timedelta(seconds=settings.vanished_check_seconds),
            mass_delete_limits=(int(connection.settings.get("max_delete_members", MAX_DELETE_MEMBERS)),
                                float(connection.settings.get("max_delete_percent", MAX_DELETE_PERCENT))),
            dry_pulled=dry_pulled)
        open_before = open_reject_ids(sessions, connection_id)
        # (STOP.check(): a stop asked for by SIGTERM or Ctrl-C is made here, between phases, and by
        # the members phase before each chunk it plans)
        await _timed(result, "pull_statuses", sync.pull_statuses())     # a dry run stores nothing
        STOP.check()
        await _timed(result, "pull_consents", sync.pull_consents())
        STOP.check()
        sync.check_mass_delete()
        list_map = await _timed(result, "lists", sync.sync_lists())
        STOP.check()
        await _timed(result, "members", sync.push_members(list_map))
        STOP.check()
        if not options.dry_run:
            await _timed(result, "reports", sync.pull_reports())
        sync.counts["rejects_new"], sync.counts["rejects_open"] = rejects_of_run(
            sessions, connection_id, run_id, open_before)
        result.status = outcome_of(sync.counts["rejects_new"], sync.counts["rejects_open"])
    except StopRequested as exc:
        result.status, result.error = INTERRUPTED_STATUS, exc.message
    except asyncio.CancelledError:
        if not STOP.requested:
            raise               # not ours: the caller's cancellation goes on, after the finally below
        assert STOP.signal is not None
        result.status, result.error = INTERRUPTED_STATUS, f"stopped at once by a second {STOP.signal.name}"
    except LeaseLostError as exc:
        result.status, result.error = "lost_lease", exc.message
    except LeaseHeldError as exc:
        result.status, result.error = "blocked", exc.message
    except SyncError as exc:
        result.status, result.error = "failed", SECRETS.scrub(exc.message)
    except Exception as exc:  # run isolation: one connection's bug must not stop the others
        result.status, result.error = "failed", SECRETS.scrub(f"internal error: {type(exc).__name__}: {exc}")
        log.exception("run.crashed")
    finally:
        STOP.set_cancel(None)
        if heartbeat is not None:
            heartbeat.cancel()
        await client.aclose()
        if keeper is not None:
            keeper.release()            # only if still ours: a lease taken over is left alone
        if sync is not None:
            result.counts = dict(sync.counts)
            result.plan = sync.plan
        result.http_requests = sum(h.stats.requests for h in https)
        result.counts["http_requests"] = result.http_requests     # `status` shows it per run
        if https:   # the adaptive limit's level at the end of the run, and how often a refusal halved it
            result.counts["http_concurrency"] = max(h.stats.concurrency for h in https)
            result.counts["http_concurrency_cuts"] = sum(h.stats.concurrency_cuts for h in https)
            # the pace learnt from 429s at the end (sync.http.AdaptiveRate), where one was set or learnt
            rates = [h.stats.rate_per_s for h in https if h.stats.rate_per_s is not None]
            if rates:
                result.counts["http_rate_per_s"] = round(min(rates), 2)
            result.counts["http_rate_cuts"] = sum(h.stats.rate_cuts for h in https)
            # the share of refusals found to come whatever the pace (the next run tolerates it)
            shares = [h.stats.steady_share for h in https if h.stats.steady_share is not None]
            if shares:
                result.counts["http_steady_share"] = round(max(shares), 4)
        result.timings["total"] = round(time.monotonic() - started, 3)
        with sessions.begin() as session:
            run = session.get_one(SyncRun, run_id)
            run.status, run.counts, run.timings = result.status, result.counts, result.timings
            run.error, run.finished_at = result.error, utcnow()
            _record_readings(session, connection_id, provider, store=not options.dry_run)
        log.info("run.finished", status=result.status, counts=result.counts, timings=result.timings,
                 http_requests=result.http_requests, error=result.error)
        clear_context(["run_id", "tenant", "provider"])
    return result


#: How long the request rate a run learnt from 429s is where the next run of its connection starts.
LEARNT_RATE_KEPT = dt.timedelta(days=7)


def learnt_pace(session: Session, connection_id: int) -> tuple[float | None, float | None]:
    """What the connection's last finished run learnt of its provider, if it finished within
    ``LEARNT_RATE_KEPT``: the request rate it ended at (``http_rate_per_s`` in its counts: learnt
    from 429s, or the documented one; the next run starts paced there,
    ``HttpPolicy.start_rate_per_s``) and the share of refusals it found to come whatever its pace
    (``http_steady_share``; the next run tolerates it from its first request,
    ``HttpPolicy.start_steady_share``)."""
    counts = session.scalars(sa.select(SyncRun.counts).where(
        SyncRun.connection_id == connection_id, SyncRun.finished_at.is_not(None),
        SyncRun.finished_at >= utcnow() - LEARNT_RATE_KEPT).order_by(SyncRun.finished_at.desc()).limit(1)).first()
    rate = (counts or {}).get("http_rate_per_s")
    share = (counts or {}).get("http_steady_share")
    return (float(rate) if isinstance(rate, int | float) and rate > 0 else None,
            float(share) if isinstance(share, int | float) and 0 < share < 1 else None)


def _record_readings(session: Session, connection_id: int, provider: Any, *, store: bool) -> None:
    """One ``provider.reading_changed`` warning per endpoint whose answers came in another reading
    than the one stored on the connection (or changed within the run); then the readings seen,
    merged over the stored ones (not by a dry run, which stores nothing)."""
    seen = readings_of(provider)
    connection = session.get(Connection, connection_id) if seen is not None and seen.seen else None
    if seen is None or connection is None:     # nothing read, or the connection was removed meanwhile
        return
    for change in reading_changes(connection.readings, seen):
        log.warning("provider.reading_changed", endpoint=change.endpoint, was=change.was, now=change.now)
    merged = merged_readings(connection.readings, seen.as_dict())
    if store and merged != (connection.readings or {}):
        connection.readings = merged


#: The last scheduled fire time a worker ran (claimed under the connection's lease).
TICK_STREAM = "scheduled_tick"


def claim_tick(sessions: sessionmaker[Session], connection_id: int, tick: dt.datetime) -> bool:
    """Claim a scheduled fire time for this run, under the lease (so two replicas cannot both claim
    it): False when some worker already ran this tick or a later one."""
    with sessions.begin() as session:
        last = watermark_for(session, connection_id, TICK_STREAM)
        if last is not None and last >= tick:
            return False
        set_watermark(session, connection_id, TICK_STREAM, tick)
    return True


def iso_tick(tick: dt.datetime) -> str:
    return tick.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def open_reject_ids(sessions: sessionmaker[Session], connection_id: int) -> set[int]:
    """The connection's open rejects before a run: what is already known to be bad."""
    with sessions() as session:
        return set(session.scalars(sa.select(Reject.id).where(
            Reject.connection_id == connection_id, Reject.resolved_at.is_(None))))


def rejects_of_run(sessions: sessionmaker[Session], connection_id: int, run_id: int,
                   open_before: set[int]) -> tuple[int, int]:
    """(new, open) rejects after a run, read from the database rather than from the engine's
    counter (which counts every reject written, old ones too).

    New: open, last written by this run, and not open before it; that includes a row resolved
    earlier that fails again. A row an operator dismissed and the engine met again (the member
    changed, a backfill) is open again but not new: someone already decided about it.
    """
    with sessions() as session:
        touched = session.execute(sa.select(Reject.id, Reject.dismissed_at).where(
            Reject.connection_id == connection_id, Reject.run_id == run_id, Reject.resolved_at.is_(None))).all()
        still_open = session.scalar(sa.select(sa.func.count()).select_from(Reject).where(
            Reject.connection_id == connection_id, Reject.resolved_at.is_(None)))
    new = sum(1 for reject_id, dismissed_at in touched if reject_id not in open_before and dismissed_at is None)
    return new, int(still_open or 0)


def outcome_of(new_rejects: int, open_rejects: int) -> str:
    """The outcome of a run that did its work, by its rejects."""
    if new_rejects:
        return NEW_REJECTS_STATUS
    return "succeeded_with_rejects" if open_rejects else "succeeded"


async def _timed(result: RunResult, phase: str, work: Any) -> Any:
    started = time.monotonic()
    try:
        return await work
    finally:
        result.timings[phase] = round(time.monotonic() - started, 3)


def run_once(settings: Settings, engine: sa.Engine, crm_engine: sa.Engine, *, tenant: str | None = None,
             provider: str | None = None, options: RunOptions = DEFAULT_OPTIONS,
             transport_factory: TransportFactory | None = None,
             on_progress: ProgressCallback | None = None,
             http_policy: HttpPolicy | None = None) -> list[RunResult]:
    """Run every matching enabled connection now, one after the other (after a stop request,
    no further one starts)."""
    results = []
    # Dry runs store nothing they pull; a later connection of the tenant plans on it as it would on
    # what the real run of an earlier one stored (the plan then equals the `once` that follows).
    dry_pulled = DryPulled()
    for connection_id in select_connections(engine, tenant, provider):
        if STOP.requested:
            break
        results.append(asyncio.run(run_connection(settings, engine, crm_engine, connection_id, options,
                                                  transport_factory=transport_factory, on_progress=on_progress,
                                                  http_policy=http_policy, dry_pulled=dry_pulled)))
    return results


def _settings_digest(connection: Connection) -> str:
    """The connection's provider and settings (no credentials), as part of every member's source
    digest: a changed setting (a field mapping, say) makes the next backfill plan every member."""
    text = json.dumps({"provider": connection.provider, "settings": connection.settings}, sort_keys=True, default=str)
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()
