"""The daemon's opt-in HTTP endpoint (``HTTP_ADDRESS``, loopback by default): ``/healthz``,
``/metrics`` in Prometheus text format, and ``/``, a read-only status page.

The page is rendered on the server (Jinja2 with autoescaping: tenant names, reject reasons and
run errors are user or provider input) from the same ``sync.ops.status`` functions as
``crm-esp-sync status``; it needs no JavaScript, and its Content-Security-Policy forbids any.

Served by a small threaded ``http.server`` beside the scheduler. It only reads: the scheduler's
state (last tick of its loop, running syncs) and the daemon's tables. What every replica sees
alike (runs by outcome, last success, open rejects, lease takeovers) is read from the database
at scrape time, so any replica answers for all; what one process did (rows, HTTP requests)
is counted in that process.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import jinja2
import sqlalchemy as sa
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sync import db, http
from sync.config import parse_http_address
from sync.errors import SyncError
from sync.logs import SECRETS
from sync.models import Connection, Reject, SyncRun, Tenant
from sync.ops.status import (
    HEALTHS,
    PULLED,
    PUSHED,
    age_text,
    connection_statuses,
    nightly_totals,
    runs_with_errors,
    tenant_names,
)

if TYPE_CHECKING:
    from sync.daemon_state import DaemonState
    from sync.engine.runner import RunResult

log = structlog.get_logger(__name__)
#: /healthz fails when the scheduler's loop has not ticked for this long (it ticks every 15 s at most).
STALE_TICK_SECONDS = 60.0
#: Nights in the status page's chart, and at most this many open rejects and failed runs listed.
CHART_NIGHTS, PAGE_REJECTS, PAGE_ERRORS = 30, 100, 20
#: The page runs no script, and may load nothing but its own inline style.
PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'none'"
_TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("sync", "templates"), autoescape=True,
                                undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


class _DatabaseCollector(Collector):
    """Metrics every replica reads alike from the daemon's tables, at scrape time."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("crm_esp_sync_database_up", "1 if the daemon's database answered this scrape")
        try:
            metrics = self._read()
        except (sa.exc.SQLAlchemyError, SyncError) as exc:
            log.warning("metrics.database_unreachable", error=SECRETS.scrub(type(exc).__name__))
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from metrics

    def _read(self) -> list[Metric]:
        runs = CounterMetricFamily("crm_esp_sync_runs", "Finished runs by provider and outcome (all workers)",
                                   labels=["provider", "status"])
        takeovers = CounterMetricFamily("crm_esp_sync_lease_takeovers",
                                        "Runs closed as crashed because another worker took their lease over")
        last_success = GaugeMetricFamily("crm_esp_sync_last_success_timestamp_seconds",
                                         "End of the connection's last run that did its work (Unix time)",
                                         labels=["tenant", "provider"])
        open_rejects = GaugeMetricFamily("crm_esp_sync_open_rejects", "Open rejects of the connection",
                                         labels=["tenant", "provider"])
        with self.engine.connect() as conn:
            crashed = 0
            for provider, status, count in conn.execute(
                    sa.select(Connection.provider, SyncRun.status, sa.func.count())
                    .join(Connection, Connection.id == SyncRun.connection_id)
                    .where(SyncRun.status != "running", SyncRun.kind != "dry-run")
                    .group_by(Connection.provider, SyncRun.status)):
                runs.add_metric([provider, status], int(count))
                crashed += int(count) if status == "crashed" else 0
            takeovers.add_metric([], crashed)
            successes = (sa.select(SyncRun.connection_id, sa.func.max(SyncRun.finished_at).label("at"))
                         .where(SyncRun.kind != "dry-run",
                                SyncRun.status.in_(("succeeded", "succeeded_with_rejects", "partial")))
                         .group_by(SyncRun.connection_id).subquery())
            from sync.models import UTCDateTime

            at = sa.type_coerce(successes.c.at, UTCDateTime())
            for tenant, provider, when in conn.execute(
                    sa.select(Tenant.slug, Connection.provider, at).join(Connection, Connection.tenant_id == Tenant.id)
                    .join(successes, successes.c.connection_id == Connection.id)):
                if when is not None:
                    last_success.add_metric([tenant, provider], when.timestamp())
            for tenant, provider, count in conn.execute(
                    sa.select(Tenant.slug, Connection.provider, sa.func.count(Reject.id))
                    .join(Connection, Connection.tenant_id == Tenant.id)
                    .outerjoin(Reject, sa.and_(Reject.connection_id == Connection.id, Reject.resolved_at.is_(None)))
                    .group_by(Tenant.slug, Connection.provider)):
                open_rejects.add_metric([tenant, provider], int(count))
        return [runs, takeovers, last_success, open_rejects]


class _DaemonCollector(Collector):
    """The scheduler of this process: is its loop turning, how many syncs run."""

    def __init__(self, state: DaemonState | None) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        if self.state is None:
            return
        age = self.state.tick_age()
        tick = GaugeMetricFamily("crm_esp_sync_scheduler_tick_age_seconds",
                                 "Seconds since the scheduler's loop last ticked (-1: not yet)")
        tick.add_metric([], -1 if age is None else age)
        yield tick
        with self.state.lock:
            running = len(self.state.running)
        syncs = GaugeMetricFamily("crm_esp_sync_running_syncs", "Syncs this process runs now")
        syncs.add_metric([], running)
        yield syncs


class Metrics:
    """The registry behind ``/metrics``; ``observe`` counts a finished run of this process."""

    def __init__(self, engine: sa.Engine, state: DaemonState | None = None) -> None:
        self.registry = CollectorRegistry()
        self.rows = Counter("crm_esp_sync_rows", "Rows this process pushed, pulled or had rejected",
                            ["provider", "direction"], registry=self.registry)
        self.requests = Counter("crm_esp_sync_http_requests", "HTTP requests this process sent to providers",
                                ["provider"], registry=self.registry)
        self.process_runs = Counter("crm_esp_sync_process_runs", "Runs this process finished, by outcome",
                                    ["provider", "status"], registry=self.registry)
        self.latency = Histogram("crm_esp_sync_http_request_seconds",
                                 "Provider request latency of this process, by provider and status class",
                                 ["provider", "status_class"], registry=self.registry)
        self.retries = Counter("crm_esp_sync_http_retries", "Provider requests this process retried",
                               ["provider"], registry=self.registry)
        self.throttled = Counter("crm_esp_sync_http_throttled", "HTTP 429 answers this process got",
                                 ["provider"], registry=self.registry)
        self.concurrency = Gauge("crm_esp_sync_http_concurrency",
                                 "Requests in flight the adaptive limit allowed at the end of this process's last run",
                                 ["provider"], registry=self.registry)
        self.concurrency_cuts = Counter("crm_esp_sync_http_concurrency_cuts",
                                        "Halvings of the adaptive limit on a 429, 5xx or timeout in this process",
                                        ["provider"], registry=self.registry)
        self.rate = Gauge("crm_esp_sync_http_rate_per_s",
                          "Requests a second the rate learnt from 429s allows now (+Inf: no limit), "
                          "set at each change in this process", ["provider"], registry=self.registry)
        self.registry.register(_DatabaseCollector(engine))
        self.registry.register(_DaemonCollector(state))
        http.ATTEMPT_OBSERVERS.append(self._on_attempt)
        http.RATE_OBSERVERS.append(self._on_rate)

    def _on_attempt(self, provider: str, kind: str, outcome: int | str, seconds: float) -> None:
        """One provider request attempt (sync.http): latency, retries, 429s."""
        if kind == "retry":
            self.retries.labels(provider).inc()
            return
        status_class = f"{outcome // 100}xx" if isinstance(outcome, int) else "error"
        self.latency.labels(provider, status_class).observe(seconds)
        if outcome == 429:
            self.throttled.labels(provider).inc()

    def _on_rate(self, provider: str, rate_per_s: float | None) -> None:
        """A connection's learnt rate changed (sync.http.AdaptiveRate)."""
        self.rate.labels(provider).set(math.inf if rate_per_s is None else rate_per_s)

    def close(self) -> None:
        """Stop observing requests (the endpoint closed)."""
        if self._on_attempt in http.ATTEMPT_OBSERVERS:
            http.ATTEMPT_OBSERVERS.remove(self._on_attempt)
        if self._on_rate in http.RATE_OBSERVERS:
            http.RATE_OBSERVERS.remove(self._on_rate)

    def observe(self, result: RunResult) -> None:
        counts = result.counts
        self.process_runs.labels(result.provider, result.status).inc()
        self.rows.labels(result.provider, "pushed").inc(sum(counts.get(k, 0) for k in PUSHED))
        self.rows.labels(result.provider, "pulled").inc(sum(counts.get(k, 0) for k in PULLED))
        self.rows.labels(result.provider, "rejected").inc(counts.get("rejected", 0))
        self.requests.labels(result.provider).inc(result.http_requests)
        if "http_concurrency" in counts:
            self.concurrency.labels(result.provider).set(counts["http_concurrency"])
            self.concurrency_cuts.labels(result.provider).inc(counts.get("http_concurrency_cuts", 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def health(engine: sa.Engine, state: DaemonState | None, scheduler_running: Callable[[], bool]) -> dict[str, Any]:
    """``/healthz``: the scheduler runs, its loop ticked lately, the database answers."""
    age = state.tick_age() if state is not None else None
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        database = "ok"
    except SyncError as exc:                  # sync.db says why it cannot connect (no password in it)
        database = SECRETS.scrub(f"error: {exc.message.splitlines()[0]}")
    except sa.exc.SQLAlchemyError as exc:
        database = SECRETS.scrub(f"error: {type(exc).__name__}")
    running = scheduler_running()
    healthy = running and database == "ok" and age is not None and age <= STALE_TICK_SECONDS
    return {"status": "ok" if healthy else "unhealthy", "scheduler_running": running,
            "last_tick_age_seconds": None if age is None else round(age, 3), "database": database}


def nightly_chart(nights: list[dict[str, Any]], timezone: str) -> dict[str, Any]:
    """Geometry of the inline SVG bar chart: per night, one bar each for pushed, pulled and
    rejected, on one scale (the page's template draws it)."""
    series = ("pushed", "pulled", "rejected")
    left, top, base, bar, gap = 48, 26, 206, 6, 6
    step = len(series) * bar + gap
    maximum = max((night[name] for night in nights for name in series), default=0)
    scale = (base - top) / maximum if maximum else 0.0
    bars, labels = [], []
    for index, night in enumerate(nights):
        x0 = left + gap + index * step
        for offset, name in enumerate(series):
            height = round(night[name] * scale, 1)
            if night[name] and height < 1:
                height = 1.0                  # a night with a few rows still shows a bar
            bars.append({"series": name, "night": night["night"], "value": night[name], "x": x0 + offset * bar,
                         "y": round(base - height, 1), "width": bar, "height": height})
        if index % 5 == 0 or index == len(nights) - 1:
            labels.append({"x": x0 + len(series) * bar / 2, "text": night["night"][5:]})
    width = left + gap + len(nights) * step + 10
    legend = [{"series": name, "x": left + 10 + i * 130, "total": sum(night[name] for night in nights)}
              for i, name in enumerate(series)]
    return {"nights": nights, "timezone": timezone, "bars": bars, "labels": labels, "legend": legend,
            "maximum": maximum, "left": left, "top": top, "base": base, "width": width, "height": base + 22}


def status_page(engine: sa.Engine, *, timezone: str = "UTC", now: dt.datetime | None = None) -> str:
    """The status page's HTML: every connection's health at a glance, rows per night, open
    rejects with their reasons, and the latest runs that failed."""
    from sync.models import utcnow
    from sync.ops.rejects import RejectFilter, find_rejects

    now = now or utcnow()
    with db.session_factory(engine)() as session:
        document = connection_statuses(session, runs=1, now=now)
        names = tenant_names(session)
        nights = nightly_totals(session, CHART_NIGHTS, now=now, timezone=timezone)
        rejects = find_rejects(session, RejectFilter(), limit=PAGE_REJECTS)
        errors = runs_with_errors(session, PAGE_ERRORS)
    connections = []
    for c in document["connections"]:
        run = c["last_run"] or {}
        counts = run.get("counts", {})
        when = run.get("finished_at") or run.get("started_at")
        connections.append({
            "tenant": c["tenant"], "tenant_name": names.get(c["tenant"], c["tenant"]), "provider": c["provider"],
            "health": c["health"], "last_status": run.get("status", "-"), "last_run_at": when or "",
            "last_run_age": age_text(None if when is None else int((now - dt.datetime.fromisoformat(when))
                                                                   .total_seconds())),
            "last_success_at": c["last_success_at"], "last_success_age": age_text(c["last_success_age_seconds"]),
            "pushed": sum(counts.get(k, 0) for k in PUSHED), "pulled": sum(counts.get(k, 0) for k in PULLED),
            "rejected": counts.get("rejected", 0),
            "requests": "-" if run.get("http_requests") is None else run["http_requests"],
            "open_rejects": c["rejects"]["open"], "lease_live": c["lease"]["live"],
            "lease_holder": c["lease"]["holder"], "lease_expires_at": c["lease"]["expires_at"]})
    healths = [c["health"] for c in document["connections"]]
    return _TEMPLATES.get_template("status.html").render(
        generated_at=document["generated_at"], connections=connections,
        tenant_count=len({c["tenant"] for c in connections}),
        health_counts=[(h, healths.count(h)) for h in HEALTHS if h in healths],
        open_reject_total=sum(c["rejects"]["open"] for c in document["connections"]),
        chart=nightly_chart(nights, timezone), rejects=rejects, errors=errors)


class HttpEndpoint:
    """``/``, ``/healthz`` and ``/metrics`` on ``address``, served from a thread until ``close``.
    ``timezone`` is the one the status page's nights are counted in (the schedules' one)."""

    def __init__(self, address: str, engine: sa.Engine, state: DaemonState | None,
                 scheduler_running: Callable[[], bool], metrics: Metrics | None = None, *,
                 timezone: str = "UTC") -> None:
        self.engine, self.state, self.scheduler_running = engine, state, scheduler_running
        self.timezone = timezone
        self.metrics = metrics or Metrics(engine, state)
        host, port = parse_http_address(address)
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    report = health(endpoint.engine, endpoint.state, endpoint.scheduler_running)
                    self._answer(200 if report["status"] == "ok" else 503, "application/json",
                                 json.dumps(report, sort_keys=True).encode())
                elif path == "/metrics":
                    self._answer(200, CONTENT_TYPE_LATEST, endpoint.metrics.render())
                elif path in ("/", "/index.html"):
                    self._status_page()
                else:
                    self._answer(404, "text/plain; charset=utf-8", b"not found: try /, /healthz or /metrics\n")

            def _status_page(self) -> None:
                try:
                    page = status_page(endpoint.engine, timezone=endpoint.timezone)
                except (sa.exc.SQLAlchemyError, SyncError) as exc:
                    log.warning("status_page.database_unreachable", error=SECRETS.scrub(type(exc).__name__))
                    self._answer(503, "text/plain; charset=utf-8",
                                 b"the daemon's database does not answer; see /healthz\n")
                    return
                self._answer(200, "text/html; charset=utf-8", page.encode(),
                             {"Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff",
                              "Cache-Control": "no-store"})

            def _answer(self, code: int, content_type: str, body: bytes,
                        headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http.request", line=format % args)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="http-endpoint", daemon=True)

    @property
    def url(self) -> str:
        host, port = str(self.server.server_address[0]), int(self.server.server_address[1])
        return f"http://{host if ':' not in host else f'[{host}]'}:{port}"

    def start(self) -> HttpEndpoint:
        self.thread.start()
        log.info("http.listening", url=self.url)
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.metrics.close()
