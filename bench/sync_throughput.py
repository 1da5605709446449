"""Throughput of the sync engine against the in-process Postacell sandbox.

Prints figures, asserts nothing. One tenant with ``--members`` CRM members goes through:

1. a first full sync (every member new),
2. a second run with no CRM change (must write nothing at the provider),
3. an incremental run after 1% of the members changed (first_name and updated_at),
4. optionally (``--backfill``) a backfill run over the unchanged state.

The sandbox runs in process (httpx ASGI transport), the connection has no rate limit
(``rate_per_s: 0``) and retries back off in milliseconds, so the figures measure this
code (engine, provider client, HTTP layer, database) plus the sandbox's own CPU time, not
the sandbox's rate policy or network latency.

    .venv/bin/python bench/sync_throughput.py                      # SQLite, 20 000 members
    .venv/bin/python bench/sync_throughput.py --members 2000 --json
    .venv/bin/python bench/sync_throughput.py --database-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import io
import json
import os
import platform
import pstats
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from sync import db, registry
from sync.config import CrmSource, Secret, Settings
from sync.crm import create_reference_schema, crm_tables
from sync.crypto import Vault, generate_key
from sync.engine.connection_sync import RunOptions
from sync.engine.runner import RunResult, run_connection
from sync.http import HttpPolicy
from sync.logs import configure_logging
from sync.sample import seed_crm
from sync.sandbox import PostacellSandbox, sandbox_transport

TENANT = "bench"
PROVIDER = "postacell"
USERNAME, PASSWORD = "bench-api", "Postacell-şifre-123"
BASE_URL = "http://postacell.sandbox/api/v1/"
#: Retries in milliseconds: a transient fault must not turn into seconds of sleep in a figure.
POLICY = HttpPolicy(backoff_base_s=0.001, backoff_max_s=0.01)
#: No token bucket: the connection sends as fast as the engine and the sandbox go.
CONNECTION_SETTINGS = {"rate_per_s": 0}
PHASES = ("pull_statuses", "lists", "members", "reports")
SYNC, BACKFILL = RunOptions(), RunOptions(backfill=True)
#: Where our code lives, as cProfile names its files.
SYNC_FILE = os.path.dirname(db.__file__) + os.sep


# --- the world: a database, a sample CRM, one tenant connected to a sandbox -----------------


@dataclass
class World:
    engine: sa.Engine
    settings: Settings
    sandbox: PostacellSandbox
    connection_id: int
    backend: str

    def run(self, options: RunOptions = SYNC) -> RunResult:
        return asyncio.run(run_connection(
            self.settings, self.engine, self.engine, self.connection_id, options,
            transport_factory=lambda _: sandbox_transport(self.sandbox.app), http_policy=POLICY))

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


def build_world(url: str, backend: str, members: int, seed: int) -> World:
    engine = db.create_engine(url)
    db.upgrade(engine)
    create_reference_schema(engine, CrmSource())
    settings = Settings(database_url=url, master_keys=(Secret(generate_key()),), lookback_seconds=300,
                        worker_id="bench-worker")
    seed_crm(engine, CrmSource(), [TENANT], members, seed=seed)
    with db.transaction(db.session_factory(engine)) as session:
        registry.add_tenant(session, TENANT)
        connection = registry.add_connection(session, Vault(settings.master_keys), TENANT, PROVIDER,
                                             {"username": USERNAME, "password": PASSWORD},
                                             settings=CONNECTION_SETTINGS, base_url=BASE_URL)
        connection_id = connection.id
    sandbox = PostacellSandbox({USERNAME: PASSWORD}, seed=3)
    return World(engine, settings, sandbox, connection_id, backend)


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

    @property
    def members_per_s(self) -> float:
        return self.considered / self.seconds if self.seconds > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        return {"run": self.run, "seconds": round(self.seconds, 3), "status": self.status,
                "members_considered": self.considered, "members_pushed": self.pushed,
                "members_per_s": round(self.members_per_s, 1), "http_requests": self.http_requests,
                "sandbox_requests": self.sandbox_requests, "sandbox_write_requests": self.sandbox_writes,
                "timings": self.timings, "counts": self.counts, "error": self.error, "note": self.note}


def measure(world: World, name: str, options: RunOptions = SYNC,
            profiler: cProfile.Profile | None = None) -> Figure:
    world.sandbox.reset_log()
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
    return (f"crm-esp-sync throughput: {meta['members']} members, one tenant, Postacell sandbox in process; "
            f"database {meta['database']}. No rate limit (rate_per_s=0), retries back off in ms "
            "(HttpPolicy backoff_base_s=0.001, backoff_max_s=0.01): the figures measure our code and the "
            "sandbox's CPU, not the provider's rate policy or network.")


def print_tables(console: Console, meta: dict[str, Any], figures: list[Figure],
                 profile: list[dict[str, Any]] | None) -> None:
    console.print(header(meta))
    console.print(f"setup (migrate + seed CRM): {meta['setup_s']:.1f} s; "
                  f"changed for the incremental run: {meta['changed_members']} members")
    table = Table(title="Runs", title_justify="left")
    for name in ("run", "wall s", "status", "considered", "pushed", "members/s", "HTTP req",
                 "sandbox writes"):
        table.add_column(name, justify="left" if name in ("run", "status") else "right")
    for fig in figures:
        table.add_row(fig.run, f"{fig.seconds:.2f}", fig.status, str(fig.considered), str(fig.pushed),
                      f"{fig.members_per_s:,.0f}", str(fig.http_requests), str(fig.sandbox_writes))
    console.print(table)
    phases = Table(title="Phase timings (RunResult.timings, s)", title_justify="left")
    phases.add_column("run")
    for phase in (*PHASES, "total"):
        phases.add_column(phase, justify="right")
    for fig in figures:
        phases.add_row(fig.run, *(f"{fig.timings[p]:.2f}" if p in fig.timings else "-" for p in (*PHASES, "total")))
    console.print(phases)
    for fig in figures:
        if fig.error or fig.note:
            console.print(f"{fig.run}: " + "; ".join(filter(None, (fig.note, fig.error))))
    if profile:
        prof = Table(title="Top cumulative time in sync/ (first sync, cProfile)", title_justify="left")
        for name in ("function", "calls", "tottime s", "cumtime s"):
            prof.add_column(name, justify="left" if name == "function" else "right")
        for row in profile:
            prof.add_row(row["function"], str(row["calls"]), f"{row['tottime_s']:.2f}", f"{row['cumtime_s']:.2f}")
        console.print(prof)
    console.print(f"{meta['date']}: {meta['cpus']} CPUs, Python {meta['python']} ({meta['platform']}), "
                  f"SQLAlchemy {sa.__version__}, database {meta['database']}")


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/sync_throughput.py",
        description="Print throughput figures of the sync engine against the in-process Postacell sandbox: "
                    "a first full sync, a run with no CRM change, an incremental run, optionally a backfill. "
                    "The connection has no rate limit (rate_per_s=0) and retries back off in milliseconds, "
                    "so the figures measure our code, not the sandbox's policy. Asserts nothing.")
    parser.add_argument("--members", type=int, default=20000, metavar="N",
                        help="CRM members of the one tenant, about 1.9 list memberships each (default: %(default)s)")
    parser.add_argument("--database-url", metavar="URL",
                        help="admin URL of a PostgreSQL or MariaDB/MySQL server, e.g. "
                             "postgresql://postgres@127.0.0.1:5432/test or mysql://root@127.0.0.1:3306/test; "
                             "a fresh database bench_<random> is created there and dropped at the end "
                             "(default: a SQLite file in a fresh temporary directory, removed at the end)")
    parser.add_argument("--changed", type=float, default=0.01, metavar="FRACTION",
                        help="fraction of the members (evenly spread) whose first_name changes, with "
                             "updated_at=now, before the incremental run (default: %(default)s)")
    parser.add_argument("--backfill", action="store_true",
                        help="also time a backfill run (every CRM member compared with its link, watermarks "
                             "ignored) over the unchanged state")
    parser.add_argument("--json", action="store_true",
                        help="print the figures as one JSON document on stdout instead of tables "
                             "(progress lines stay on stderr)")
    parser.add_argument("--profile", metavar="FILE",
                        help="run the first sync under cProfile, save the stats to FILE (read them with "
                             "`python -m pstats FILE`) and print the top cumulative functions of sync/; the "
                             "first sync is then about twice as slow as unprofiled")
    parser.add_argument("--top", type=int, default=10, metavar="N",
                        help="how many functions --profile prints (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=7,
                        help="seed of the sample CRM, sync.sample.seed_crm (default: %(default)s)")
    parser.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"),
                        help="level of the daemon's own log lines, written to stderr; the daemon's default is "
                             "info, which adds two lines per run (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.members < 1:
        parser.error("--members must be at least 1")
    if not 0 <= args.changed <= 1:
        parser.error("--changed must be between 0 and 1")
    if args.top < 1:
        parser.error("--top must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level, "console", sys.stderr)
    console = Console(highlight=False, markup=False, width=None if sys.stdout.isatty() else 140)
    err = Console(stderr=True, highlight=False, markup=False)
    meta: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "members": args.members,
        "cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
        "sqlalchemy": sa.__version__, "http_policy": {"backoff_base_s": POLICY.backoff_base_s,
                                                      "backoff_max_s": POLICY.backoff_max_s},
        "connection_settings": CONNECTION_SETTINGS,
    }
    profiler = cProfile.Profile() if args.profile else None
    figures: list[Figure] = []
    with database(args.database_url) as (url, backend):
        meta["backend"] = backend
        err.print(f"[bench] {backend}: migrating and seeding {args.members} members ...")
        started = time.perf_counter()
        world = build_world(url, backend, args.members, args.seed)
        meta["setup_s"] = round(time.perf_counter() - started, 2)
        meta["database"] = server_version(world.engine)
        try:
            err.print("[bench] 1/4 first full sync ...")
            figures.append(measure(world, "first sync", profiler=profiler))
            err.print("[bench] 2/4 second run, no CRM change ...")
            figures.append(measure(world, "no change"))
            meta["changed_members"] = world.change_members(args.changed, args.members)
            err.print(f"[bench] 3/4 incremental run after changing {meta['changed_members']} members ...")
            figures.append(measure(world, "incremental"))
            if args.backfill:
                err.print("[bench] 4/4 backfill over the unchanged state ...")
                figures.append(measure(world, "backfill", BACKFILL))
        finally:
            world.engine.dispose()
    profile = None
    if profiler is not None:
        profiler.dump_stats(args.profile)
        profile = hotspots(profiler, args.top)
    if args.json:
        print(json.dumps({"meta": meta, "runs": [fig.as_json() for fig in figures],
                          **({"profile": profile} if profile is not None else {})}, ensure_ascii=False, indent=2))
    else:
        print_tables(console, meta, figures, profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
