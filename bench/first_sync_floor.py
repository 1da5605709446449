"""The floor under a first sync: what its unavoidable parts cost on this machine, measured apart.

Prints figures, asserts nothing. A first sync of N new members must at least

1. read N CRM rows and their memberships (``CrmReader.members``, 1,000 ids per batch),
2. write each new link twice (the provisional row before the push: the crash guarantee; the
   provider's answer after it), as the engine does (multi-row upserts by the link's unique key),
3. push N contacts through the Postacell client to the sandbox, which runs every bulk job
   (served on localhost by this process; the push runs in a process of its own, as in
   ``sync_throughput.py``), in windows of ``push_window`` members.

Each part is timed on its own, with nothing else of the engine around it (no planning, no
suppressions, no rejects), and the sum is compared with a first sync's wall time and its goal.
Figures are linear in N (``sync_throughput.py`` measured k = 1.04 between 100,000 and 1,000,000),
so ``--members 200000`` is extrapolated to 1,000,000 and says so.

    .venv/bin/python bench/first_sync_floor.py --database-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from sync import db, registry
from sync.config import CrmSource, Secret
from sync.crm import CrmReader, create_reference_schema, crm_tables
from sync.crypto import Vault, generate_key
from sync.engine.bulk import analyze, upsert
from sync.engine.connection_sync import ANSWER_COLUMNS, LINK_KEY, MEMBER_LINKS
from sync.http import HttpPolicy, ProviderHTTP
from sync.logs import configure_logging
from sync.models import utcnow
from sync.providers.base import MemberKey, MemberSnapshot, MemberUpsert, build_provider
from sync.sample import seed_crm
from sync.sandbox import PostacellSandbox
from sync.sandbox.transport import serve_in_thread

TENANT, USERNAME, PASSWORD = "floor", "floor-api", "Postacell-şifre-123"
POLICY = HttpPolicy(backoff_base_s=0.001, backoff_max_s=0.01)
GOAL_S, AT = 120.0, 1_000_000


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def crm_read(engine: Any, members: int, tenant: str = TENANT) -> tuple[float, list[Any]]:
    reader = CrmReader(engine, CrmSource(), tenant)
    ids = [member_id for page in reader.member_id_pages() for member_id in page]
    started = time.perf_counter()
    rows = []
    for start in range(0, len(ids), 1000):
        rows += reader.members(ids[start:start + 1000])
    assert len(rows) == members, len(rows)
    return time.perf_counter() - started, rows


def link_writes(engine: Any, rows: list[Any], connection_id: int) -> float:
    sessions = db.session_factory(engine)
    now = utcnow()
    started = time.perf_counter()
    for start in range(0, len(rows), 50_000):       # one push window per pair of transactions
        window = rows[start:start + 50_000]
        with sessions.begin() as session:
            upsert(session, MEMBER_LINKS, [
                {"connection_id": connection_id, "crm_member_id": m.id, "crm_list_id": "", "email": m.email or "",
                 "remote_id": None, "remote_lists": [], "payload_hash": "", "pushed_at": now,
                 "status_pushed": None, "source_digest": None} for m in window], key=LINK_KEY, update=("email",))
        with sessions.begin() as session:
            upsert(session, MEMBER_LINKS, [
                {"connection_id": connection_id, "crm_member_id": m.id, "crm_list_id": "", "email": m.email or "",
                 "payload_hash": "0" * 64, "remote_id": f"r{m.id}", "remote_lists": ["1"], "pushed_at": now,
                 "status_pushed": "active", "source_digest": m.row_digest} for m in window],
                key=LINK_KEY, update=ANSWER_COLUMNS)
    return time.perf_counter() - started


def push(spec: dict[str, Any]) -> dict[str, Any]:
    """In a process of its own: log in, make the lists, push every member in windows."""
    configure_logging("warning", "console", sys.stderr)
    async def go() -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=POLICY.timeout) as client:
            def http_factory(caps: Any, auth: Any) -> ProviderHTTP:
                return ProviderHTTP(client, provider="postacell", base_url=spec["base_url"], auth=auth,
                                    policy=replace(POLICY, concurrency=caps.concurrency, rate_per_s=None))
            provider: Any = build_provider("postacell", http_factory, {"username": USERNAME, "password": PASSWORD},
                                           {"rate_per_s": 0})
            lists = [await provider.create_list(f"Floor {n}") for n in range(4)]
            items = []
            for n, (member_id, email, first, last) in enumerate(spec["members"]):
                snapshot = MemberSnapshot(email=email, first_name=first, last_name=last, phone=None, city=None,
                                          status="active")
                chosen = tuple(lists[i].remote_id for i in range(n % 3 + 1))
                items.append(MemberUpsert(MemberKey(member_id), email, provider.build_payload(snapshot), chosen))
            window = provider.capabilities.push_window or provider.capabilities.max_batch
            before, started = cpu_s(), time.perf_counter()
            pushed = 0
            for start in range(0, len(items), window):
                outcomes = await provider.upsert_members(items[start:start + window])
                pushed += sum(1 for outcome in outcomes if outcome.rejected is None)
            return {"seconds": time.perf_counter() - started, "cpu_s": cpu_s() - before, "pushed": pushed}
    return asyncio.run(go())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=200_000, metavar="N", help="members (default 200000)")
    parser.add_argument("--database-url", required=True, metavar="URL",
                        help="PostgreSQL or MariaDB server: a scratch database is made there and dropped")
    args = parser.parse_args(argv)
    configure_logging("warning", "console", sys.stderr)
    err = Console(stderr=True)
    with db.scratch_database(args.database_url, prefix="floor") as url:
        engine = db.create_engine(url)
        db.upgrade(engine)
        create_reference_schema(engine, CrmSource())
        err.print(f"[floor] seeding {args.members} members ...")
        seed_crm(engine, CrmSource(), [TENANT], args.members, seed=7)
        with db.session_factory(engine)() as session:
            analyze(session, crm_tables(CrmSource()).metadata.sorted_tables, reason="floor: CRM seeded",
                    rows=args.members)
        with db.transaction(db.session_factory(engine)) as session:
            registry.add_tenant(session, TENANT)
            connection = registry.add_connection(session, Vault((Secret(generate_key()),)), TENANT, "postacell",
                                                 {"username": USERNAME, "password": PASSWORD})
            connection_id = connection.id
        err.print("[floor] 1/3 reading the CRM ...")
        read_s, rows = crm_read(engine, args.members)
        err.print("[floor] 2/3 writing every link twice ...")
        write_s = link_writes(engine, rows, connection_id)
        valid = [(m.id, m.email, m.first_name, m.last_name) for m in rows if m.email and "@" in m.email]
        del rows
        engine.dispose()
        sandbox = PostacellSandbox({USERNAME: PASSWORD}, seed=3)
        err.print(f"[floor] 3/3 pushing {len(valid)} contacts to the served sandbox ...")
        with serve_in_thread(sandbox.app) as served, \
                ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            before = cpu_s()
            done = pool.submit(push, {"base_url": f"{served}/api/v1/", "members": valid}).result()
            sandbox_cpu = cpu_s() - before
    scale = AT / args.members
    parts = [("read the CRM rows (members(), 1,000 ids a batch)", read_s, None),
             ("write each link twice (provisional + answer)", write_s, None),
             ("push through the client to the sandbox", done["seconds"],
              f"client {done['cpu_s']:.1f} s CPU, sandbox {sandbox_cpu:.1f} s CPU")]
    table = Table(title=f"First-sync floor: {args.members:,} members, extrapolated to {AT:,} (linear)")
    for column in ("part", "s", "µs/member", f"s at {AT:,}", "note"):
        table.add_column(column, justify="left" if column in ("part", "note") else "right")
    for name, seconds, note in parts:
        table.add_row(name, f"{seconds:.1f}", f"{seconds / args.members * 1e6:.0f}", f"{seconds * scale:.0f}",
                      note or "")
    total = sum(seconds for _, seconds, _ in parts)
    table.add_row("sum (the engine does them one after another)", f"{total:.1f}",
                  f"{total / args.members * 1e6:.0f}", f"{total * scale:.0f}", f"goal {GOAL_S:.0f} s")
    Console().print(table)
    print(f"pushed {done['pushed']:,} of {len(valid):,}; {time.strftime('%Y-%m-%dT%H:%M:%S%z')}", file=sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
