"""The run after a crash in a first Postacell sync: its requests and writes.

A first sync commits its links once per push window (50,000 members), so a crash anywhere in a
first sync of fewer members leaves every link it wrote *provisional* (no remote id, no hash),
even when the provider applied every request. This script builds that state without a process to
kill: a full first sync of ``--members`` CRM members into the Postacell sandbox (in process,
behind the ASGI transport), then every member link put back as the crash would have left it
(remote id, hash, lists, pushed status and source digest cleared; watermarks gone). With
``--applied F`` below 1, the provider then forgets the contacts of ``1 - F`` of the members (the
creates the crash cut off). The recovering run (``once``) is measured: all its requests, its write
requests (POST, PATCH, DELETE, token calls excluded) and what it counted. Then one more run, which
must write nothing.

Prints figures, asserts nothing.

    .venv/bin/python bench/postacell_recovery.py --members 20000
    .venv/bin/python bench/postacell_recovery.py --members 20000 --applied 0.5
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import sqlalchemy as sa

from sync import db, registry
from sync.config import CrmSource, Secret, Settings
from sync.crm import create_reference_schema
from sync.crypto import Vault, generate_key
from sync.engine.connection_sync import RunOptions
from sync.engine.runner import RunResult, run_connection
from sync.http import HttpPolicy
from sync.logs import configure_logging
from sync.models import MemberLink, Watermark
from sync.sample import seed_crm
from sync.sandbox import PostacellSandbox, sandbox_transport

TENANT, USERNAME, PASSWORD = "acme", "bench-api", "Postacell-şifre-123"
BASE_URL = "http://postacell.sandbox/api/v1/"
POLICY = HttpPolicy(backoff_base_s=0.001, backoff_max_s=0.01)
WRITES = frozenset({"POST", "PATCH", "PUT", "DELETE"})


def run(settings: Settings, engine: sa.Engine, connection_id: int, sandbox: PostacellSandbox) -> RunResult:
    return asyncio.run(run_connection(settings, engine, engine, connection_id, RunOptions(),
                                      transport_factory=lambda _: sandbox_transport(sandbox.app),
                                      http_policy=POLICY))


def shapes(sandbox: PostacellSandbox) -> str:
    """The requests of the log by method and endpoint (ids folded), most frequent first."""
    counted: Counter[str] = Counter()
    for method, path, _ in sandbox.request_log:
        parts = path.split("/api/v1/", 1)[-1].strip("/").split("/")
        counted[f"{method} {'/'.join('{id}' if len(p) >= 20 or p.isdigit() else p for p in parts)}"] += 1
    return ", ".join(f"{n} {shape}" for shape, n in counted.most_common(6))


def make_provisional(engine: sa.Engine) -> int:
    """Every member link as a crash before the first window's commit leaves it."""
    with engine.begin() as conn:
        changed = conn.execute(sa.update(MemberLink).values(
            remote_id=None, payload_hash="", remote_lists=[], status_pushed=None, source_digest=None)).rowcount
        conn.execute(sa.delete(Watermark))
    return int(changed)


def forget(sandbox: PostacellSandbox, share: float) -> int:
    """The provider loses the contacts of ``share`` of the subscribers (every k-th one)."""
    if share <= 0:
        return 0
    rows = sandbox.subscribers(USERNAME)
    step = max(1, round(1 / share))
    gone = [row for index, row in enumerate(rows) if index % step == 0]
    acc = sandbox._accounts[USERNAME]          # the sandbox keeps no public delete helper
    for row in gone:
        sub = acc.subscribers[row["id"]]
        acc.changing(sub)
        acc.remove(sub)
        acc.touch(sub)
    return len(gone)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--applied", type=float, default=1.0,
                        help="share of the first sync the provider kept (default 1: fully applied)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database-url", help="an admin URL of a server database (default: a SQLite file)")
    args = parser.parse_args(argv)
    configure_logging("warning", "console", sys.stderr)
    workdir = tempfile.mkdtemp(prefix="crm-esp-sync-recovery-")
    try:
        if args.database_url:
            scratch = db.scratch_database(args.database_url, prefix="bench")
            url = scratch.__enter__()
        else:
            scratch, url = None, f"sqlite:///{Path(workdir) / 'bench.db'}"
        engine = db.create_engine(url)
        db.upgrade(engine)
        create_reference_schema(engine, CrmSource())
        settings = Settings(database_url=url, master_keys=(Secret(generate_key()),), lookback_seconds=300,
                            worker_id="bench-worker")
        seed_crm(engine, CrmSource(), [TENANT], args.members, seed=args.seed)
        with db.transaction(db.session_factory(engine)) as session:
            registry.add_tenant(session, TENANT)
            connection_id = registry.add_connection(session, Vault(settings.master_keys), TENANT, "postacell",
                                                    {"username": USERNAME, "password": PASSWORD},
                                                    settings={"rate_per_s": 0}, base_url=BASE_URL).id
        sandbox = PostacellSandbox({USERNAME: PASSWORD}, seed=3)
        started = time.perf_counter()
        first = run(settings, engine, connection_id, sandbox)
        print(f"first sync: {args.members:,} CRM members, {first.status}, {len(sandbox.request_log):,} requests, "
              f"{sandbox.write_requests():,} writes, {time.perf_counter() - started:.1f} s")
        links = make_provisional(engine)
        forgotten = forget(sandbox, 1 - args.applied)
        print(f"crash: {links:,} links provisional, {forgotten:,} contacts forgotten by the provider "
              f"(applied {args.applied:.0%}), {len(sandbox.subscribers(USERNAME)):,} held")
        for name in ("recovering run", "next run"):
            sandbox.reset_log()
            started = time.perf_counter()
            result = run(settings, engine, connection_id, sandbox)
            seconds = time.perf_counter() - started
            counts = {k: v for k, v in sorted(result.counts.items()) if k.startswith("members_") and v}
            print(f"{name}: {result.status}, {len(sandbox.request_log):,} requests, "
                  f"{sandbox.write_requests():,} writes, {seconds:.1f} s; {counts}")
            print(f"  requests: {shapes(sandbox)}")
        engine.dispose()
        if scratch is not None:
            scratch.__exit__(None, None, None)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
