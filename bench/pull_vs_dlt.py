"""The daemon's status pull against dlt's ``rest_api`` source, on the same served Postacell sandbox.

Prints figures, asserts nothing. One run:

1. The Postacell sandbox is served on localhost (uvicorn, in a thread of this process), and
   ``--subscribers`` subscribers (100,000 by default) with non-active statuses are put straight
   into its state (``PostacellSandbox.load_subscribers``, no HTTP): a mix of unsubscribed, hard
   and soft bounces and spam complaints.
2. The daemon: one ``run_connection`` of a connection to that sandbox, in a freshly spawned process
   of its own, into a fresh database (a SQLite temp file by default, ``--database-url`` for
   PostgreSQL or MariaDB). The CRM is empty, so the run is its status pull (``pull_statuses``:
   every page of ``subscribers-filter`` per status, stored in ``member_statuses``) plus one
   campaign list request. Both the run's wall time and its ``pull_statuses`` phase are printed.
3. dlt: ``bench/dlt_pull_worker.py`` under a separate venv (``bench/.dlt-venv``, made here with
   ``python -m venv`` and ``pip install "dlt[duckdb]"``), one resource per status on the same
   endpoint, into a fresh duckdb file, in its own process.

Both processes report their wall seconds (imports excluded, login included) and their peak RSS
(Linux VmHWM). The connection has no rate limit (``rate_per_s: 0``), so the figures measure the
two clients and the sandbox's CPU, not Postacell's rate policy.

    .venv/bin/python bench/pull_vs_dlt.py                          # 100,000 subscribers, SQLite
    .venv/bin/python bench/pull_vs_dlt.py --subscribers 20000 --json
    .venv/bin/python bench/pull_vs_dlt.py --database-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sync_throughput import database, isolated_run, server_version

from sync import db, registry
from sync.config import CrmSource, Secret
from sync.crm import create_reference_schema
from sync.crypto import Vault, generate_key
from sync.logs import configure_logging
from sync.models import MemberStatus
from sync.providers.postacell import api
from sync.providers.postacell.client import PULLED_STATUSES
from sync.sandbox import FaultPlan, PostacellSandbox
from sync.sandbox.transport import serve_in_thread

HERE = Path(__file__).resolve().parent
TENANT, PROVIDER = "bench", "postacell"
USERNAME, PASSWORD = "bench-api", "Postacell-şifre-123"
#: The status mix of the loaded subscribers (Postacell statuses; none is active).
MIX = (("unsubscribed", 0.55), ("hard_bounce", 0.15), ("soft_bounce", 0.15), ("spam_complaint", 0.15))
DLT_VENV = HERE / ".dlt-venv"
DLT_REQUIREMENT = "dlt[duckdb]"
DLT_WORKER = HERE / "dlt_pull_worker.py"


def load(sandbox: PostacellSandbox, count: int, seed: int) -> dict[str, int]:
    """``count`` non-active subscribers, statuses drawn from MIX; returns how many of each."""
    rng = random.Random(seed)
    names, weights = zip(*MIX, strict=True)
    statuses = rng.choices(names, weights, k=count)
    sandbox.load_subscribers(USERNAME, ((f"abone{i:07d}@ornek.com.tr", status)
                                        for i, status in enumerate(statuses)))
    return {name: statuses.count(name) for name in names}


def daemon_world(url: str, served: str, rate_per_s: float) -> tuple[int, str]:
    """Migrate a fresh database, an empty reference CRM, one tenant with one Postacell connection."""
    engine = db.create_engine(url)
    try:
        db.upgrade(engine)
        create_reference_schema(engine, CrmSource())
        master_key = generate_key()
        with db.transaction(db.session_factory(engine)) as session:
            registry.add_tenant(session, TENANT)
            connection = registry.add_connection(
                session, Vault((Secret(master_key),)), TENANT, PROVIDER, {"username": USERNAME, "password": PASSWORD},
                settings={"rate_per_s": rate_per_s}, base_url=f"{served}/api/v1/")
            return connection.id, master_key
    finally:
        engine.dispose()


def stored_statuses(url: str) -> int:
    engine = db.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(sa.select(sa.func.count()).select_from(MemberStatus)) or 0)
    finally:
        engine.dispose()


def run_daemon(url: str, connection_id: int, master_key: str, log_level: str) -> dict[str, Any]:
    """One run_connection in a spawned process (bench/sync_throughput.isolated_run)."""
    spec = {"url": url, "master_key": master_key, "connection_id": connection_id, "backfill": False,
            "log_level": log_level}
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                             max_tasks_per_child=1) as pool:
        return pool.submit(isolated_run, spec).result()


def dlt_python(venv: Path, err: Console) -> tuple[Path | None, str]:
    """The venv's python with dlt importable (made on first use), or None and why not."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import dlt, duckdb; print(dlt.__version__)"]
    if python.exists():
        done = subprocess.run(probe, capture_output=True, text=True, check=False)  # noqa: S603
        if done.returncode == 0:
            return python, done.stdout.strip()
    err.print(f"[bench] installing {DLT_REQUIREMENT} into {venv} (once) ...")
    steps = [[sys.executable, "-m", "venv", str(venv)],
             [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", DLT_REQUIREMENT]]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)  # noqa: S603
        if done.returncode != 0:
            return None, f"`{' '.join(step)}` failed: {(done.stderr or done.stdout).strip()[-600:]}"
    done = subprocess.run(probe, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        return None, f"dlt does not import in {venv}: {done.stderr.strip()[-600:]}"
    return python, done.stdout.strip()


def run_dlt(python: Path, served: str, parallelized: bool, loader_file_format: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="crm-esp-sync-dlt-") as workdir:
        spec = {"base_url": f"{served}/api/v1/", "token_path": api.TOKEN_PATH, "username": USERNAME,
                "password": PASSWORD, "path": api.SUBSCRIBERS_FILTER_PATH, "statuses": list(PULLED_STATUSES),
                "workdir": workdir, "database": str(Path(workdir) / "statuses.duckdb"),
                "parallelized": parallelized, "loader_file_format": loader_file_format}
        done = subprocess.run([str(python), str(DLT_WORKER), json.dumps(spec)],  # noqa: S603
                              capture_output=True, text=True, check=False, cwd=workdir)
    if done.returncode != 0:
        return {"error": (done.stderr or done.stdout).strip()[-1500:]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def dlt_runs(args: argparse.Namespace, served: str, sandbox: PostacellSandbox, meta: dict[str, Any],
             err: Console) -> list[dict[str, Any]]:
    python, version = dlt_python(args.dlt_venv, err)
    meta["dlt_version"] = version if python else None
    if python is None:
        err.print(f"[bench] dlt could not be installed, so only the daemon's figures are printed: {version}")
        return [{"client": "dlt rest_api", "error": f"dlt not installed: {version}"}]
    rows: list[dict[str, Any]] = []
    for parallelized in (False, True) if args.dlt_parallelized else (False,):
        name = "dlt rest_api" + (" (parallelized)" if parallelized else "")
        err.print(f"[bench] {name}: pulling the same endpoint into duckdb ...")
        sandbox.reset_log()
        result = run_dlt(python, served, parallelized, args.dlt_loader_file_format)
        if "error" in result:
            rows.append({"client": name, "error": result["error"]})
            continue
        steps = result["steps"]
        rows.append({"client": name, "seconds": result["seconds"], "pull_seconds": steps.get("extract", 0.0),
                     "rows": sum(result["rows"].values()), "sandbox_requests": len(sandbox.request_log),
                     "peak_rss_mb": result["peak_rss_mb"], "rss_before_mb": result["rss_before_mb"],
                     "steps": steps, "note": f"pull s = the extract step; normalize {steps.get('normalize', 0):.2f} s, "
                                             f"load {steps.get('load', 0):.2f} s"})
    return rows


# --- output ---------------------------------------------------------------------------------


def print_table(console: Console, meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    console.print(f"Status pull of {meta['subscribers']:,} non-active subscribers ({meta['mix']}) from the "
                  f"Postacell sandbox served on localhost (+{meta['latency_ms']:g} ms a call); "
                  f"page size {api.PAGE_SIZE}; rate_per_s {meta['rate_per_s']:g} (0 = none). "
                  f"Daemon database: {meta['database']}; dlt {meta.get('dlt_version') or '-'} into duckdb.")
    table = Table(title="Daemon vs dlt rest_api", title_justify="left")
    for name in ("client", "wall s", "pull s", "rows stored", "rows/s", "HTTP requests", "peak RSS MB",
                 "idle RSS MB"):
        table.add_column(name, justify="left" if name == "client" else "right")
    for row in rows:
        if row.get("error"):
            table.add_row(row["client"], "-", "-", "-", "-", "-", "-", "-")
            continue
        table.add_row(row["client"], f"{row['seconds']:.2f}", f"{row['pull_seconds']:.2f}", f"{row['rows']:,}",
                      f"{row['rows'] / row['seconds']:,.0f}", str(row["sandbox_requests"]),
                      f"{row['peak_rss_mb']:.0f}", f"{row['rss_before_mb']:.0f}")
    console.print(table)
    for row in rows:
        if row.get("note"):
            console.print(f"{row['client']}: {row['note']}")
        if row.get("error"):
            console.print(f"{row['client']}: FAILED: {row['error']}")
    daemon = next((r for r in rows if r["client"] == "daemon" and not r.get("error")), None)
    for other in rows:
        if daemon is not None and other is not daemon and not other.get("error"):
            console.print(f"{other['client']} / daemon: wall {other['seconds'] / daemon['seconds']:.2f}x, "
                          f"peak RSS {other['peak_rss_mb'] / daemon['peak_rss_mb']:.2f}x")
    console.print(f"{meta['date']}: {meta['cpus']} CPUs, Python {meta['python']}, SQLAlchemy {sa.__version__}")


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/pull_vs_dlt.py",
        description="Time the daemon's Postacell status pull (run_connection with an empty CRM, into a fresh "
                    "database) against dlt's rest_api source pulling the same endpoint into a fresh duckdb, "
                    "side by side, each in its own process. Asserts nothing.")
    parser.add_argument("--subscribers", type=int, default=100_000, metavar="N",
                        help="non-active subscribers loaded into the sandbox (default: %(default)s)")
    parser.add_argument("--database-url", metavar="URL",
                        help="admin URL of a PostgreSQL or MariaDB/MySQL server for the daemon's database; a "
                             "fresh database bench_<random> is made there and dropped at the end (default: a "
                             "SQLite file in a fresh temporary directory)")
    parser.add_argument("--rate-per-s", type=float, default=0, metavar="R",
                        help="the connection's rate_per_s setting for the daemon; 0 = no limit "
                             "(default: %(default)s)")
    parser.add_argument("--latency-ms", type=float, default=0, metavar="MS",
                        help="latency the sandbox adds to every API call, as a network would (FaultPlan.latency_s; "
                             "default: %(default)s)")
    parser.add_argument("--no-dlt", action="store_true", help="time the daemon only")
    parser.add_argument("--dlt-parallelized", action="store_true",
                        help="also time dlt with parallelized=True (its resources extracted in threads)")
    parser.add_argument("--dlt-loader-file-format", default="", choices=("", "insert_values", "jsonl", "parquet"),
                        help="dlt's loader_file_format for duckdb; parquet needs pyarrow in the dlt venv "
                             "(default: dlt's own choice, insert_values for duckdb)")
    parser.add_argument("--dlt-venv", type=Path, default=DLT_VENV,
                        help="where dlt is installed (made with python -m venv + pip if missing; "
                             "default: bench/.dlt-venv)")
    parser.add_argument("--seed", type=int, default=5, help="seed of the status mix (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    parser.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"),
                        help="level of the daemon's log lines, on stderr (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.subscribers < 1:
        parser.error("--subscribers must be at least 1")
    if args.latency_ms < 0 or args.rate_per_s < 0:
        parser.error("--latency-ms and --rate-per-s must not be negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level, "console", sys.stderr)
    console = Console(highlight=False, markup=False, width=None if sys.stdout.isatty() else 160)
    err = Console(stderr=True, highlight=False, markup=False)
    meta: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
                            "python": platform.python_version(), "subscribers": args.subscribers,
                            "page_size": api.PAGE_SIZE, "rate_per_s": args.rate_per_s,
                            "latency_ms": args.latency_ms}
    rows: list[dict[str, Any]] = []
    sandbox = PostacellSandbox({USERNAME: PASSWORD}, seed=3, faults=FaultPlan(latency_s=args.latency_ms / 1000))
    started = time.perf_counter()
    counts = load(sandbox, args.subscribers, args.seed)
    meta["mix"] = ", ".join(f"{name} {n:,}" for name, n in counts.items())
    meta["load_s"] = round(time.perf_counter() - started, 2)
    with ExitStack() as stack:
        served = stack.enter_context(serve_in_thread(sandbox.app))
        url, _backend = stack.enter_context(database(args.database_url))
        connection_id, master_key = daemon_world(url, served, args.rate_per_s)
        engine = db.create_engine(url)
        meta["database"] = server_version(engine)
        engine.dispose()
        err.print(f"[bench] daemon: run_connection pulling {args.subscribers:,} statuses ...")
        sandbox.reset_log()
        done = run_daemon(url, connection_id, master_key, args.log_level)
        rows.append({"client": "daemon", "seconds": done["seconds"],
                     "pull_seconds": done["timings"].get("pull_statuses", 0.0), "rows": stored_statuses(url),
                     "sandbox_requests": len(sandbox.request_log), "peak_rss_mb": done["peak_rss_mb"],
                     "rss_before_mb": done["rss_before_mb"], "status": done["status"], "error": done["error"],
                     "timings": done["timings"], "counts": done["counts"],
                     "note": f"run {done['status']}; pull s = the run's pull_statuses phase; rows stored = "
                             "member_statuses rows after the run"})
        if not args.no_dlt:
            rows += dlt_runs(args, served, sandbox, meta, err)
    if args.json:
        print(json.dumps({"meta": meta, "runs": rows}, ensure_ascii=False, indent=2))
    else:
        print_table(console, meta, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
