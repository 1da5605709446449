"""Throughput of the sync engine against a provider sandbox (Postacell by default).

Prints figures, asserts nothing. One tenant with ``--members`` CRM members goes through:

1. a first full sync (every member new),
2. a second run with no CRM change (must write nothing at the provider),
3. an incremental run after 1% of the members changed (first_name and updated_at),
4. optionally (``--backfill``) a backfill run over the unchanged state.

By default the connection has no rate limit (``rate_per_s: 0``), the sandbox answers at once and
retries back off in milliseconds, so the figures measure this code (engine, provider client, HTTP
layer, database) plus the sandbox's own CPU time, not a provider's rate policy or network latency.

``--latency-ms`` and ``--rate-per-s`` put a provider's distance and rate limit in front of the
sandbox (``sync.sandbox.Throttle``: every answer that much later, a request above the rate answered
429 with Retry-After), ``--faults`` adds the sandbox's own faults (one 429 in seven calls by
default), and the daemon's own HTTP policy is used. Each run then prints its floors: the request
floor (the requests it needed over the allowed rate, or times the latency over the connection's
concurrency) and, for the first sync, the local floor (``bench/first_sync_floor.py``'s parts), and
the ratio of the wall time to the larger one.

    .venv/bin/python bench/sync_throughput.py                      # SQLite, 20 000 members
    .venv/bin/python bench/sync_throughput.py --members 2000 --json
    .venv/bin/python bench/sync_throughput.py --database-url postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/sync_throughput.py --provider euromsg --members 10000 --latency-ms 30 --faults \
        --database-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import cProfile
import dataclasses
import datetime as dt
import io
import json
import math
import multiprocessing
import os
import platform
import pstats
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

import sync
from sync import db, registry
from sync.config import CrmSource, Secret, Settings
from sync.crm import create_reference_schema, crm_tables
from sync.crypto import Vault, generate_key
from sync.engine.bulk import analyze
from sync.engine.connection_sync import RunOptions
from sync.engine.runner import RunResult, run_connection
from sync.http import HttpPolicy, ProviderHTTP
from sync.logs import configure_logging
from sync.providers.base import Capabilities, build_provider
from sync.sample import seed_crm
from sync.sandbox import (
    EuromsgSandbox,
    FaultPlan,
    MailMasterPlusSandbox,
    PostacellSandbox,
    PostatrSandbox,
    Throttle,
    refusal_of,
    sandbox_transport,
)
from sync.sandbox.transport import serve_in_thread

sys.path.insert(0, str(Path(__file__).resolve().parent))
import first_sync_floor  # bench/ is not a package: the local floor's parts

TENANT = "bench"
PROVIDER = "postacell"
PROVIDER_NAMES = ("postacell", "euromsg", "mailmasterplus", "postatr")
USERNAME, PASSWORD = "bench-api", "Postacell-şifre-123"
BASE_URL = "http://postacell.sandbox/api/v1/"
#: Retries in milliseconds: a transient fault must not turn into seconds of sleep in a figure.
POLICY = HttpPolicy(backoff_base_s=0.001, backoff_max_s=0.01)
#: With a latency, a rate or faults: the daemon's own policy (backoff from 0.5 s, Retry-After honoured).
DAEMON_POLICY = HttpPolicy()
#: No token bucket: the connection sends as fast as the engine and the sandbox go.
CONNECTION_SETTINGS = {"rate_per_s": 0}
#: ``--faults`` without a value: one call in seven answered 429, Retry-After 1 s (issue 26).
DEFAULT_FAULTS = "rate_limit_every=7,retry_after_s=1"
PHASES = ("pull_statuses", "lists", "members", "reports")
# (as the daemon and a plain `once` run: counts kept, no member named in the plan)
SYNC, BACKFILL = RunOptions(itemize=False), RunOptions(backfill=True, itemize=False)
#: Where our code lives, as cProfile names its files.
SYNC_FILE = os.path.dirname(db.__file__) + os.sep


# --- the providers: a sandbox, its account, the connection's settings ------------------------


@dataclass
class Setup:
    """One provider's sandbox and what the bench's connection to it needs."""

    provider: str
    sandbox: Any
    credentials: dict[str, str]
    settings: dict[str, Any]
    path: str                               # of the API under the served root: "api/v1/", "api.asmx/"
    account: str                            # the sandbox's key of the account (user name or API key)
    integrator: dict[str, str] | None = None

    @property
    def in_process_url(self) -> str:
        return f"http://{self.provider}.sandbox/{self.path}"

    def records(self) -> int | None:
        """MailMasterPlus: the records the sandbox holds (one per list and member); else None."""
        if self.provider != "mailmasterplus":
            return None
        return sum(len(self.sandbox.records(self.account, nl_id)) for nl_id in self.sandbox.lists(self.account))


def make_setup(provider: str, faults: FaultPlan | None, client_rate_per_s: float) -> Setup:
    """The sandbox of ``provider`` (with ``faults``) and its connection; Postacell's connection sends
    at most ``client_rate_per_s`` requests a second (0: no limit), the others have no such setting."""
    if provider == "postacell":
        return Setup(provider, PostacellSandbox({USERNAME: PASSWORD}, seed=3, faults=faults),
                     {"username": USERNAME, "password": PASSWORD}, {"rate_per_s": client_rate_per_s}, "api/v1/",
                     USERNAME)
    if provider == "euromsg":
        integrator = {"client_name": "bench-integrator", "password": "Entegratör-şifre-1"}
        key = "bench-euromsg-anahtar-0001"
        return Setup(provider, EuromsgSandbox({integrator["client_name"]: integrator["password"]},
                                              {key: "Bench Ticaret"}, faults=faults, seed=3),
                     {"api_key": key}, {"iys": False}, "", key, integrator)
    if provider == "mailmasterplus":
        account = {"username": "bench-mmp", "password": "MMP-jelszó-123"}
        sandbox = MailMasterPlusSandbox({account["username"]: account["password"]}, faults=faults)
        lists = {}
        for n in range(1, 6):       # the seeded CRM's lists L1..L5, each mapped to a panel list
            sandbox.add_list(account["username"], 100 + n, f"Liste {n}", subscribe_form=200 + n,
                             update_form=300 + n)
            lists[f"L{n}"] = {"nl_id": 100 + n, "subscribe_form": 200 + n, "update_form": 300 + n,
                              "name": f"Liste {n}"}
        return Setup(provider, sandbox, account, {"lists": lists}, "", account["username"])
    if provider == "postatr":
        login = {"username": "bench-postatr", "password": "Postatr-şifre-123",
                 "encrypted_id": "12FD8A5F-2H34-486F-871D-5E697677BFC4"}
        sandbox = PostatrSandbox({login["username"]: (login["password"], login["encrypted_id"])}, faults=faults,
                                 seed=5)
        return Setup(provider, sandbox, login, {}, "api.asmx/", login["username"])
    raise SystemExit(f"--provider: {provider} is not one of {', '.join(PROVIDER_NAMES)}")


def capabilities(setup: Setup) -> Capabilities:
    """The connection's capabilities as its client builds them from the settings (its concurrency:
    the ceiling of the adaptive limit, sync/http.py)."""
    found: list[Capabilities] = []
    client = httpx.AsyncClient()

    def http_factory(caps: Capabilities, auth: Any) -> ProviderHTTP:
        found.append(caps)
        return ProviderHTTP(client, provider=setup.provider, base_url=setup.in_process_url, policy=POLICY,
                            auth=auth)

    build_provider(setup.provider, http_factory, setup.credentials, setup.settings, setup.integrator)
    asyncio.run(client.aclose())
    return found[0]


# --- the world: a database, a sample CRM, one tenant connected to a sandbox -----------------


@dataclass
class World:
    engine: sa.Engine
    settings: Settings
    setup: Setup
    #: The sandbox's app behind its latency and rate limit: what the client talks to.
    throttle: Throttle
    connection_id: int
    backend: str
    #: The sandbox served on localhost: each run then goes in a process of its own (peak RSS of
    #: the sync alone); None: in this process, through the ASGI transport.
    served: str | None = None
    master_key: str = ""
    #: The daemon's log level in the spawned runs (--log-level).
    log_level: str = "warning"
    #: The runs' HTTP policy: POLICY, or DAEMON_POLICY against a latency, a rate or faults.
    policy: HttpPolicy = POLICY
    #: The connection's requests in flight at most (its capabilities; the adaptive limit's ceiling).
    concurrency: int = 4
    #: RunOptions.overlap of every run (--no-overlap: off)
    overlap: bool = True

    def request_floor(self, needed: int) -> float:
        """The least time ``needed`` requests take: over the allowed rate, or each one latency with
        ``concurrency`` of them in flight, whichever is longer (0: neither is set)."""
        by_rate = needed / self.throttle.rate_per_s if self.throttle.rate_per_s else 0.0
        by_latency = needed * self.throttle.latency_s / self.concurrency
        return max(by_rate, by_latency)

    @property
    def sandbox(self) -> Any:
        return self.setup.sandbox

    def run(self, options: RunOptions = SYNC) -> RunResult:
        return asyncio.run(run_connection(
            self.settings, self.engine, self.engine, self.connection_id,
            dataclasses.replace(options, overlap=self.overlap),
            transport_factory=lambda _: sandbox_transport(self.throttle), http_policy=self.policy))

    def run_isolated(self, options: RunOptions, pool: ProcessPoolExecutor) -> dict[str, Any]:
        """One run in a fresh process (spawned, so it shares no pages with this one)."""
        spec = {"url": self.settings.database_url, "master_key": self.master_key,
                "connection_id": self.connection_id, "backfill": options.backfill,
                "log_level": self.log_level, "daemon_policy": self.policy is DAEMON_POLICY,
                "overlap": self.overlap}
        return pool.submit(isolated_run, spec).result()


    def change_members(self, fraction: float, total: int) -> int:
        """What the CRM application does: a new first_name and updated_at=now, on ``fraction`` of the
        members spread evenly (0.01 of 20 000: M000001, M000101, ...)."""
        count = round(total * fraction)
        ids = sorted({f"M{i * total // count + 1:06d}" for i in range(count)})
        members = crm_tables(CrmSource()).members
        now = dt.datetime.now(dt.UTC)
        with self.engine.begin() as conn:
            for start in range(0, len(ids), 500):
                conn.execute(members.update().where(members.c.tenant_id == TENANT,
                                                    members.c.id.in_(ids[start:start + 500]))
                             .values(first_name="Değişmiş", updated_at=now))
        return len(ids)


def isolated_run(spec: dict[str, Any]) -> dict[str, Any]:
    """The body of a spawned run: what it did, its wall time and its peak RSS (the sandbox runs
    in the parent, served on localhost, so the figure is the sync's own memory)."""
    configure_logging(spec["log_level"], "console", sys.stderr)
    settings = Settings(database_url=spec["url"], master_keys=(Secret(spec["master_key"]),),
                        lookback_seconds=300, worker_id="bench-worker")
    engine = db.create_engine(spec["url"])
    with engine.connect():      # the driver loaded and one pooled connection, as in a running daemon
        pass
    before = peak_rss_mb()
    started = time.perf_counter()
    cpu_started = time.process_time()
    try:
        result = asyncio.run(run_connection(settings, engine, engine, spec["connection_id"],
                                            dataclasses.replace(BACKFILL if spec["backfill"] else SYNC,
                                                                overlap=spec.get("overlap", True)),
                                            http_policy=DAEMON_POLICY if spec.get("daemon_policy") else POLICY))
    finally:
        engine.dispose()
    seconds = time.perf_counter() - started
    cpu_s = time.process_time() - cpu_started
    return {"seconds": seconds, "cpu_s": cpu_s, "status": result.status, "counts": dict(result.counts),
            "timings": dict(result.timings), "http_requests": result.http_requests, "error": result.error,
            "rss_before_mb": before, "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process's peak resident set, MB. Linux's VmHWM belongs to the address space, so it
    starts afresh at exec; ru_maxrss is inherited from the parent at fork and kept across exec, so
    a spawned child would report the parent's (the sandbox's) memory."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def database(url: str | None) -> Iterator[tuple[str, str]]:
    """(URL, backend) of a new empty database: a SQLite file in a fresh temporary directory,
    or ``bench_<random>`` on the server of ``url`` (dropped at the end, like tests/conftest.py)."""
    if url is None:
        workdir = tempfile.mkdtemp(prefix="crm-esp-sync-bench-")
        try:
            yield f"sqlite:///{Path(workdir) / 'bench.db'}", "sqlite"
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return
    backend = db.normalise_url(url).get_backend_name()
    if backend not in ("postgresql", "mysql", "mariadb"):
        raise SystemExit(f"--database-url: {backend} is not supported (PostgreSQL, MariaDB/MySQL)")
    with db.scratch_database(url, prefix="bench") as scratch:
        yield scratch, backend


def server_version(engine: sa.Engine) -> str:
    """"sqlite 3.40.1", "postgresql 16.4", "mariadb 10.11.6": what the figures were measured on."""
    with engine.connect():  # the dialect learns the version on the first connection
        info = engine.dialect.server_version_info or ()
    name = engine.dialect.name
    if name == "mysql" and getattr(engine.dialect, "is_mariadb", False):
        name = "mariadb"
    return f"{name} {'.'.join(str(part) for part in info if isinstance(part, int))}".strip()


def build_world(url: str, backend: str, members: int, seed: int, setup: Setup, throttle: Throttle,
                served: str | None = None) -> World:
    engine = db.create_engine(url)
    db.upgrade(engine)
    create_reference_schema(engine, CrmSource())
    master_key = generate_key()
    settings = Settings(database_url=url, master_keys=(Secret(master_key),), lookback_seconds=300,
                        worker_id="bench-worker")
    seed_crm(engine, CrmSource(), [TENANT], members, seed=seed)
    # A CRM in service has planner statistics (autovacuum, or its DBA); a table bulk-loaded a moment
    # ago on a server with autovacuum off has none, and PostgreSQL then reads a whole tenant per
    # batch of ids. The daemon analyzes only its own tables: the CRM is not its to maintain.
    with db.session_factory(engine)() as session:
        analyze(session, crm_tables(CrmSource()).metadata.sorted_tables, reason="bench: CRM seeded", rows=members)
    with db.transaction(db.session_factory(engine)) as session:
        registry.add_tenant(session, TENANT)
        vault = Vault(settings.master_keys)
        connection = registry.add_connection(session, vault, TENANT, setup.provider, setup.credentials,
                                             settings=setup.settings,
                                             base_url=f"{served}/{setup.path}" if served else setup.in_process_url)
        if setup.integrator is not None:
            registry.set_integrator_credentials(session, vault, setup.provider, setup.integrator)
        connection_id = connection.id
    if served:
        engine.dispose()        # the runs connect from their own processes
    return World(engine, settings, setup, throttle, connection_id, backend, served, master_key)


# --- measuring ------------------------------------------------------------------------------


@dataclass
class Figure:
    run: str
    seconds: float
    status: str
    considered: int
    pushed: int
    http_requests: int
    sandbox_requests: int
    sandbox_writes: int
    timings: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    note: str = ""
    #: Peak RSS of the process that ran the sync (MB), and its RSS before the run (imports done).
    peak_rss_mb: float | None = None
    rss_before_mb: float | None = None
    #: Requests the sandbox's throttle received, and the 429s (the throttle's and the faults').
    received: int = 0
    refused: int = 0
    #: The least time of the requests the run needed (sent - refused), and of the local work (first
    #: sync only: bench/first_sync_floor.py's parts); 0 / None: not set.
    request_floor_s: float = 0.0
    local_floor_s: float | None = None
    #: MailMasterPlus: records the sandbox gained in the run (one per list and member).
    records: int | None = None
    #: The adaptive limit at the end of the run, and its ceiling.
    concurrency_end: int | None = None
    concurrency: int = 0
    #: CPU seconds of the sync's own process (spawned runs only: the sandbox's CPU is the parent's).
    cpu_s: float | None = None
    #: CPU seconds of the bench's process meanwhile: the sandbox served on localhost (spawned runs only).
    sandbox_cpu_s: float | None = None

    @property
    def floor_s(self) -> float:
        return max(self.request_floor_s, self.local_floor_s or 0.0)

    @property
    def ratio(self) -> float | None:
        """Wall time over the larger floor (1.0: as fast as it can be)."""
        return self.seconds / self.floor_s if self.floor_s > 0 else None

    @property
    def refused_share(self) -> float:
        return self.refused / self.http_requests if self.http_requests else 0.0

    @property
    def records_per_s(self) -> float | None:
        return None if self.records is None or self.seconds <= 0 else self.records / self.seconds

    @property
    def rows_written(self) -> int:
        return self.counts.get("link_and_status_rows_written", 0)

    @property
    def members_per_s(self) -> float:
        return self.considered / self.seconds if self.seconds > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        return {"run": self.run, "seconds": round(self.seconds, 3), "status": self.status,
                "members_considered": self.considered, "members_pushed": self.pushed,
                "members_per_s": round(self.members_per_s, 1), "http_requests": self.http_requests,
                "sandbox_requests": self.sandbox_requests, "sandbox_write_requests": self.sandbox_writes,
                "db_rows_written": self.rows_written, "peak_rss_mb": self.peak_rss_mb,
                "rss_before_mb": self.rss_before_mb, "throttle_received": self.received,
                "refused_429": self.refused, "refused_share": round(self.refused_share, 4),
                "request_floor_s": round(self.request_floor_s, 2),
                "local_floor_s": None if self.local_floor_s is None else round(self.local_floor_s, 2),
                "wall_over_floor": None if self.ratio is None else round(self.ratio, 3),
                "records": self.records, "records_per_s": None if self.records_per_s is None
                else round(self.records_per_s, 1), "http_concurrency_end": self.concurrency_end,
                "http_concurrency_ceiling": self.concurrency,
                "sync_cpu_s": None if self.cpu_s is None else round(self.cpu_s, 2),
                "sandbox_cpu_s": None if self.sandbox_cpu_s is None else round(self.sandbox_cpu_s, 2),
                "timings": self.timings, "counts": self.counts, "error": self.error, "note": self.note}


def measure(world: World, name: str, options: RunOptions = SYNC,
            profiler: cProfile.Profile | None = None, pool: ProcessPoolExecutor | None = None) -> Figure:
    world.sandbox.reset_log()
    world.throttle.stats.reset()
    records_before = world.setup.records()
    own_before = resource.getrusage(resource.RUSAGE_SELF)
    figure = _measure(world, name, options, profiler, pool)
    own_after = resource.getrusage(resource.RUSAGE_SELF)
    if pool is not None:    # this process only serves the sandbox while a spawned run syncs
        figure.sandbox_cpu_s = (own_after.ru_utime - own_before.ru_utime) + (own_after.ru_stime - own_before.ru_stime)
    figure.received = world.throttle.stats.received
    figure.refused = world.throttle.stats.refused + sum(1 for *_, status in world.sandbox.request_log
                                                        if status == 429)
    figure.request_floor_s = world.request_floor(max(0, figure.http_requests - figure.refused))
    records_after = world.setup.records()
    if records_before is not None and records_after is not None:
        figure.records = records_after - records_before
    figure.concurrency_end = figure.counts.get("http_concurrency")
    figure.concurrency = world.concurrency
    return figure


def _measure(world: World, name: str, options: RunOptions, profiler: cProfile.Profile | None,
             pool: ProcessPoolExecutor | None) -> Figure:
    if pool is not None:
        done = world.run_isolated(options, pool)
        counts = done["counts"]
        return Figure(name, done["seconds"], done["status"], counts.get("members_considered", 0),
                      counts.get("members_added", 0) + counts.get("members_updated", 0), done["http_requests"],
                      len(world.sandbox.request_log), world.sandbox.write_requests(), done["timings"], counts,
                      done["error"], "", round(done["peak_rss_mb"], 1), round(done["rss_before_mb"], 1),
                      cpu_s=done["cpu_s"])
    started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    try:
        result = world.run(options)
    finally:
        if profiler is not None:
            profiler.disable()
    seconds = time.perf_counter() - started
    counts = dict(result.counts)
    return Figure(name, seconds, result.status, counts.get("members_considered", 0),
                  counts.get("members_added", 0) + counts.get("members_updated", 0), result.http_requests,
                  len(world.sandbox.request_log), world.sandbox.write_requests(), dict(result.timings), counts,
                  result.error, "under cProfile: slower than unprofiled" if profiler is not None else "")


def local_floor(world: World, members: int, pool: ProcessPoolExecutor | None) -> dict[str, float]:
    """The first sync's local floor, by bench/first_sync_floor.py's parts, seconds: reading the CRM
    rows, writing every link twice and, for Postacell, pushing every contact through the client to a
    sandbox that answers at once (a fresh one, served on localhost, without latency or rate).

    Measured after the runs: it overwrites the connection's links. The other providers' push is one
    request per member (or per record), bound by the request floor, so their local floor counts the
    database's parts only."""
    engine = db.create_engine(world.settings.database_url)
    try:
        read_s, rows = first_sync_floor.crm_read(engine, members, TENANT)
        write_s = first_sync_floor.link_writes(engine, rows, world.connection_id)
    finally:
        engine.dispose()
    parts = {"crm_read_s": read_s, "link_writes_s": write_s}
    if world.setup.provider == "postacell":
        valid = [(m.id, m.email, m.first_name, m.last_name) for m in rows if m.email and "@" in m.email]
        del rows
        sandbox = PostacellSandbox({first_sync_floor.USERNAME: first_sync_floor.PASSWORD}, seed=3)
        with ExitStack() as stack:
            served = stack.enter_context(serve_in_thread(sandbox.app))
            if pool is None:
                pool = stack.enter_context(ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")))
            done = pool.submit(first_sync_floor.push, {"base_url": f"{served}/api/v1/", "members": valid}).result()
        parts["push_s"] = done["seconds"]
    parts["total_s"] = sum(parts.values())
    return parts


def hotspots(profiler: cProfile.Profile, top: int) -> list[dict[str, Any]]:
    """The ``top`` functions of sync/ by cumulative time (the sandbox included: it is ours too)."""
    stats = pstats.Stats(profiler, stream=io.StringIO())
    entries: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    rows = []
    for (filename, line, function), (_cc, calls, tottime, cumtime, _callers) in entries.items():
        if filename.startswith(SYNC_FILE):
            rows.append({"function": f"{filename.removeprefix(SYNC_FILE)}:{line}({function})",
                         "calls": calls, "tottime_s": round(tottime, 3), "cumtime_s": round(cumtime, 3)})
    return sorted(rows, key=lambda row: row["cumtime_s"], reverse=True)[:top]


# --- output ---------------------------------------------------------------------------------


def header(meta: dict[str, Any]) -> str:
    where = ("served on localhost by this process, each run in a process of its own"
             if meta.get("isolated") else "in process")
    provider = meta.get("provider", PROVIDER)
    title = f"crm-esp-sync throughput: {meta['members']} members, one tenant, {provider} sandbox {where}; " \
            f"database {meta['database']}. "
    if not meta.get("realistic"):
        return title + ("No rate limit (rate_per_s=0), retries back off in ms (HttpPolicy backoff_base_s=0.001, "
                        "backoff_max_s=0.01): the figures measure our code and the sandbox's CPU, not the "
                        "provider's rate policy or network.")
    rate = meta["rate_per_s"]
    return title + (f"The sandbox answers {meta['latency_ms']:g} ms late, "
                    + (f"admits {rate:g} requests/s (more: 429, Retry-After)" if rate else "has no rate limit")
                    + (f", faults {meta['faults']}" if meta.get("faults") else "")
                    + f"; the connection: {meta['concurrency']} requests in flight at most (adaptive), "
                    + (f"its own rate limit {meta['client_rate_per_s']:g}/s, " if meta.get("client_rate_per_s")
                       else "no rate limit of its own, ")
                    + "the daemon's HTTP policy (backoff from 0.5 s, Retry-After honoured).")


def print_tables(console: Console, meta: dict[str, Any], figures: list[Figure],
                 profile: list[dict[str, Any]] | None) -> None:
    console.print(header(meta))
    console.print(f"setup (migrate + seed CRM): {meta['setup_s']:.1f} s; "
                  f"changed for the incremental run: {meta['changed_members']} members")
    table = Table(title="Runs", title_justify="left")
    for name in ("run", "wall s", "sync CPU s", "sandbox CPU s", "status",
                 "considered", "pushed", "members/s", "HTTP req",
                 "sandbox writes", "DB rows written", "peak RSS MB"):
        table.add_column(name, justify="left" if name in ("run", "status") else "right")
    for fig in figures:
        rss = "-" if fig.peak_rss_mb is None else f"{fig.peak_rss_mb:,.0f} (idle {fig.rss_before_mb:,.0f})"
        table.add_row(fig.run, f"{fig.seconds:.2f}", "-" if fig.cpu_s is None else f"{fig.cpu_s:.2f}",
                      "-" if fig.sandbox_cpu_s is None else f"{fig.sandbox_cpu_s:.2f}", fig.status,
                      str(fig.considered), str(fig.pushed),
                      f"{fig.members_per_s:,.0f}", str(fig.http_requests), str(fig.sandbox_writes),
                      str(fig.rows_written), rss)
    console.print(table)
    phases = Table(title="Phase timings (RunResult.timings, s)", title_justify="left")
    phases.add_column("run")
    for phase in (*PHASES, "total"):
        phases.add_column(phase, justify="right")
    for fig in figures:
        phases.add_row(fig.run, *(f"{fig.timings[p]:.2f}" if p in fig.timings else "-" for p in (*PHASES, "total")))
    console.print(phases)
    if meta.get("realistic"):
        unit = "records/s" if provider_of(meta) == "mailmasterplus" else "members/s"
        floors = Table(title="Requests and floors (request floor: the requests needed, sent - refused, over "
                             "the allowed rate or x latency / concurrency; local floor: bench/first_sync_floor.py)",
                       title_justify="left")
        for name in ("run", "requests sent", "429 refused", "request floor s", "local floor s", "wall s",
                     "wall / floor", unit, "in flight end/max"):
            floors.add_column(name, justify="left" if name == "run" else "right")
        for fig in figures:
            speed = fig.records_per_s if unit == "records/s" else fig.members_per_s
            floors.add_row(fig.run, f"{fig.http_requests:,}", f"{fig.refused:,} ({100 * fig.refused_share:.1f} %)",
                           f"{fig.request_floor_s:.1f}" if fig.request_floor_s else "-",
                           "-" if fig.local_floor_s is None else f"{fig.local_floor_s:.1f}",
                           f"{fig.seconds:.1f}", "-" if fig.ratio is None else f"{fig.ratio:.2f}",
                           "-" if speed is None else f"{speed:,.0f}",
                           f"{fig.concurrency_end or '-'}/{fig.concurrency}")
        console.print(floors)
        if meta.get("local_floor"):
            console.print("local floor of the first sync: " + ", ".join(
                f"{name.removesuffix('_s')} {seconds:.1f} s" for name, seconds in meta["local_floor"].items()))
    for fig in figures:
        if fig.error or fig.note:
            console.print(f"{fig.run}: " + "; ".join(filter(None, (fig.note, fig.error))))
    if profile:
        prof = Table(title=f"Top cumulative time in sync/ ({meta.get('profiled_run', 'first sync')}, cProfile)",
                     title_justify="left")
        for name in ("function", "calls", "tottime s", "cumtime s"):
            prof.add_column(name, justify="left" if name == "function" else "right")
        for row in profile:
            prof.add_row(row["function"], str(row["calls"]), f"{row['tottime_s']:.2f}", f"{row['cumtime_s']:.2f}")
        console.print(prof)
    load = meta.get("load_average")
    console.print(f"{meta['date']}: {meta['cpus']} CPUs, Python {meta['python']} ({meta['platform']}), "
                  f"SQLAlchemy {sa.__version__}, database {meta['database']}"
                  + (f", load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}" if load else ""))


def provider_of(meta: dict[str, Any]) -> str:
    return str(meta.get("provider", PROVIDER))


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/sync_throughput.py",
        description="Print throughput figures of the sync engine against a provider sandbox (Postacell by "
                    "default): a first full sync, a run with no CRM change, an incremental run, optionally a "
                    "backfill. By default the connection has no rate limit (rate_per_s=0), the sandbox answers at "
                    "once and retries back off in milliseconds, so the figures measure our code, not a provider's "
                    "policy; --latency-ms, --rate-per-s and --faults put a provider's distance, rate limit and "
                    "429s in front of the sandbox, and each run's floors and wall / floor ratio are printed. "
                    "Asserts nothing.")
    parser.add_argument("--members", type=_sizes, default=[20000], metavar="N[,N...]",
                        help="CRM members of the one tenant, about 1.9 list memberships each; with two or more "
                             "sizes (e.g. 100000,1000000) each is measured and the growth exponent of every run "
                             "between the smallest and the largest is printed (default: 20000)")
    parser.add_argument("--database-url", metavar="URL", action="append", dest="database_urls",
                        help="admin URL of a PostgreSQL or MariaDB/MySQL server, e.g. "
                             "postgresql://postgres@127.0.0.1:5432/test or mysql://root@127.0.0.1:3306/test; "
                             "a fresh database bench_<random> is created there and dropped at the end; "
                             "`sqlite` is a SQLite file in a fresh temporary directory. Repeat it to measure "
                             "several databases in one go (default: sqlite)")
    parser.add_argument("--in-process", action="store_true",
                        help="run the syncs in this process with the sandbox behind the ASGI transport, as "
                             "before (no peak RSS figure); by default the sandbox is served on localhost and "
                             "each run goes in a spawned process of its own, whose peak RSS is printed")
    parser.add_argument("--provider", default=PROVIDER, choices=PROVIDER_NAMES,
                        help="the provider whose sandbox the tenant's connection syncs into (default: %(default)s)")
    parser.add_argument("--latency-ms", type=float, default=0.0, metavar="MS",
                        help="the sandbox answers every request this much later, 429s included, as a provider "
                             "over the network (sync.sandbox.Throttle; default: %(default)s)")
    parser.add_argument("--rate-per-s", type=float, default=0.0, metavar="N",
                        help="the sandbox admits at most N requests in any second and answers the others 429 with "
                             "Retry-After in whole seconds (0: no limit; default: %(default)s)")
    parser.add_argument("--client-rate-per-s", type=float, default=None, metavar="N",
                        help="Postacell: the connection's own rate_per_s setting (default: --rate-per-s, as an "
                             "operator sets the documented limit, the ceiling of the rate learnt from 429s; 0: "
                             "none). The other providers have no such setting: their in-flight limit and the rate "
                             "learnt from 429s (sync/http.py) meet the sandbox's 429s")
    parser.add_argument("--concurrency", type=int, default=None, metavar="N",
                        help="the connection's `concurrency` setting (Postacell, Euromsg, MailMasterPlus): most "
                             "requests in flight, the adaptive limit's ceiling (default: the provider's own)")
    parser.add_argument("--faults", nargs="?", const=DEFAULT_FAULTS, default=None, metavar="SPEC",
                        help="the sandbox's own faults, a FaultPlan spec (without a value: "
                             f"{DEFAULT_FAULTS!r}, one call in seven answered 429)")
    parser.add_argument("--local-floor", action=argparse.BooleanOptionalAction, default=None,
                        help="measure the first sync's local floor after the runs (bench/first_sync_floor.py's "
                             "parts; default: on with --latency-ms, --rate-per-s or --faults)")
    parser.add_argument("--changed", type=float, default=0.01, metavar="FRACTION",
                        help="fraction of the members (evenly spread) whose first_name changes, with "
                             "updated_at=now, before the incremental run (default: %(default)s)")
    parser.add_argument("--no-overlap", action="store_true",
                        help="plan each push window only after the one before it is committed (RunOptions.overlap "
                             "off), to measure what planning under the wire saves, side by side")
    parser.add_argument("--backfill", action="store_true",
                        help="also time a backfill run (every CRM member compared with its link, watermarks "
                             "ignored) over the unchanged state")
    parser.add_argument("--json", action="store_true",
                        help="print the figures as one JSON document on stdout instead of tables "
                             "(progress lines stay on stderr)")
    parser.add_argument("--profile", metavar="FILE",
                        help="run one run (--profile-run) under cProfile, save the stats to FILE (read them "
                             "with `python -m pstats FILE`) and print the top cumulative functions of sync/; "
                             "that run is then about twice as slow as unprofiled")
    parser.add_argument("--profile-run", default="first sync", choices=RUN_NAMES,
                        help="the run --profile profiles (default: %(default)s; backfill implies --backfill)")
    parser.add_argument("--top", type=int, default=10, metavar="N",
                        help="how many functions --profile prints (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=7,
                        help="seed of the sample CRM, sync.sample.seed_crm (default: %(default)s)")
    parser.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"),
                        help="level of the daemon's own log lines, written to stderr; the daemon's default is "
                             "info, which adds two lines per run (default: %(default)s)")
    args = parser.parse_args(argv)
    args.database_urls = args.database_urls or ["sqlite"]
    if args.profile and not args.in_process:
        args.in_process = True      # cProfile sees only this process
    if args.profile and args.profile_run == "backfill":
        args.backfill = True
    if not 0 <= args.changed <= 1:
        parser.error("--changed must be between 0 and 1")
    if args.top < 1:
        parser.error("--top must be at least 1")
    if args.latency_ms < 0 or args.rate_per_s < 0:
        parser.error("--latency-ms and --rate-per-s must not be negative")
    if args.faults is not None:
        try:
            args.fault_plan = FaultPlan.from_spec(args.faults)
        except ValueError as exc:
            parser.error(f"--faults: {exc}")
    else:
        args.fault_plan = None
    if args.client_rate_per_s is None:
        args.client_rate_per_s = args.rate_per_s
    args.realistic = bool(args.latency_ms or args.rate_per_s or args.faults)
    if args.local_floor is None:
        args.local_floor = args.realistic
    return args


def _sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(part.replace("_", "")) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: whole numbers separated by commas, e.g. 100000,1000000") \
            from None
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError("at least one size, each at least 1")
    return sizes


def growth_exponents(small: tuple[int, list[Figure]], large: tuple[int, list[Figure]]) -> dict[str, float]:
    """Per run: k in time ~ N^k between two sizes (1 = linear, 0 = flat)."""
    (n1, figs1), (n2, figs2) = small, large
    found = {}
    for a in figs1:
        b = next((f for f in figs2 if f.run == a.run), None)
        if b is not None and a.seconds > 0 and b.seconds > 0 and n2 > n1:
            found[a.run] = round(math.log(b.seconds / a.seconds) / math.log(n2 / n1), 2)
    return found


#: The runs at one size, in order (--profile-run names one).
RUN_NAMES = ("first sync", "no change", "incremental", "backfill")


def measure_world(args: argparse.Namespace, url_option: str, members: int, err: Console,
                  profiler: cProfile.Profile | None) -> tuple[dict[str, Any], list[Figure]]:
    """The four runs at one size on one database."""
    setup = make_setup(args.provider, args.fault_plan,
                       args.client_rate_per_s if args.realistic else CONNECTION_SETTINGS["rate_per_s"])
    if args.concurrency is not None and args.provider in ("postacell", "euromsg", "mailmasterplus"):
        setup.settings["concurrency"] = args.concurrency
    caps = capabilities(setup)
    throttle = Throttle(setup.sandbox.app, latency_s=args.latency_ms / 1000, rate_per_s=args.rate_per_s,
                        refusal=refusal_of(setup.sandbox))
    meta: dict[str, Any] = {"members": members, "isolated": not args.in_process, "provider": args.provider,
                            "realistic": args.realistic, "latency_ms": args.latency_ms,
                            "rate_per_s": args.rate_per_s, "faults": args.faults,
                            "client_rate_per_s": caps.rate_per_s or 0, "concurrency": caps.concurrency,
                            "connection_settings": setup.settings if args.provider != "mailmasterplus"
                            else {"lists": f"{len(setup.settings['lists'])} mapped"}}
    figures: list[Figure] = []
    with ExitStack() as stack:
        url, backend = stack.enter_context(database(None if url_option == "sqlite" else url_option))
        served = None
        pool = None
        if not args.in_process:
            served = stack.enter_context(serve_in_thread(throttle))
            pool = stack.enter_context(ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1))
        meta["backend"] = backend
        err.print(f"[bench] {backend}: migrating and seeding {members} members ...")
        started = time.perf_counter()
        world = build_world(url, backend, members, args.seed, setup, throttle, served)
        world.log_level = args.log_level
        world.policy = DAEMON_POLICY if args.realistic else POLICY
        world.overlap = not args.no_overlap
        world.concurrency = caps.concurrency
        meta["setup_s"] = round(time.perf_counter() - started, 2)
        if profiler is not None:
            meta["profiled_run"] = args.profile_run
        meta["database"] = server_version(world.engine)
        try:
            def profiled(run: str) -> cProfile.Profile | None:
                return profiler if run == args.profile_run else None

            err.print("[bench] 1/4 first full sync ...")
            figures.append(measure(world, "first sync", profiler=profiled("first sync"), pool=pool))
            err.print("[bench] 2/4 second run, no CRM change ...")
            figures.append(measure(world, "no change", profiler=profiled("no change"), pool=pool))
            meta["changed_members"] = world.change_members(args.changed, members)
            err.print(f"[bench] 3/4 incremental run after changing {meta['changed_members']} members ...")
            figures.append(measure(world, "incremental", profiler=profiled("incremental"), pool=pool))
            if args.backfill:
                err.print("[bench] 4/4 backfill over the unchanged state ...")
                figures.append(measure(world, "backfill", BACKFILL, profiler=profiled("backfill"), pool=pool))
            if args.local_floor:
                err.print("[bench] the first sync's local floor (bench/first_sync_floor.py's parts) ...")
                meta["local_floor"] = {name: round(seconds, 2)
                                       for name, seconds in local_floor(world, members, pool).items()}
                figures[0].local_floor_s = meta["local_floor"]["total_s"]
        finally:
            world.engine.dispose()
    return meta, figures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The project's bytecode, as an install writes it: with PYTHONDONTWRITEBYTECODE set (as on CI
    # machines), each spawned run would otherwise compile every module it imports lazily, inside
    # its timed part (about 0.3 s, a large share of a no-change run).
    compileall.compile_dir(Path(sync.__file__).parent, quiet=1)
    configure_logging(args.log_level, "console", sys.stderr)
    console = Console(highlight=False, markup=False, width=None if sys.stdout.isatty() else 160)
    err = Console(stderr=True, highlight=False, markup=False)
    common: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
        "sqlalchemy": sa.__version__, "load_average": os.getloadavg(),
        "http_policy": {"backoff_base_s": (DAEMON_POLICY if args.realistic else POLICY).backoff_base_s,
                        "backoff_max_s": (DAEMON_POLICY if args.realistic else POLICY).backoff_max_s},
    }
    profiler = cProfile.Profile() if args.profile else None
    measured: list[dict[str, Any]] = []
    for url_option in args.database_urls:
        by_size: list[tuple[int, list[Figure]]] = []
        for members in args.members:
            meta, figures = measure_world(args, url_option, members, err, profiler if not by_size else None)
            meta.update(common)
            by_size.append((members, figures))
            measured.append({"meta": meta, "runs": figures})
            if not args.json:
                print_tables(console, meta, figures, None)
        if len(by_size) > 1:
            exponents = growth_exponents(by_size[0], by_size[-1])
            measured[-1]["growth_exponents"] = exponents
            if not args.json:
                console.print(f"growth exponent k (time ~ N^k) from {by_size[0][0]} to {by_size[-1][0]} members "
                              f"on {measured[-1]['meta']['database']}: "
                              + ", ".join(f"{run} {k:.2f}" for run, k in exponents.items()))
    profile = None
    if profiler is not None:
        profiler.dump_stats(args.profile)
        profile = hotspots(profiler, args.top)
        if not args.json:
            print_tables(console, measured[0]["meta"], [], profile)
    if args.json:
        print(json.dumps({"measurements": [{"meta": m["meta"], "runs": [f.as_json() for f in m["runs"]],
                                            **({"growth_exponents": m["growth_exponents"]}
                                               if "growth_exponents" in m else {})} for m in measured],
                          **({"profile": profile} if profile is not None else {})}, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
