"""Euromsg's status pull, the nightly full scan of every list's member pages, on its own: how long
it takes at a provider's latency, with and without 429s.

    .venv/bin/python bench/euromsg_scan.py --members 100000 --lists 4 --latency-ms 30 [--faults]

The sandbox is seeded in memory (no member writes go over HTTP), sits behind the httpx ASGI
transport in this process with ``--latency-ms`` before every answer (sync.sandbox.Throttle), and
the client pulls with the connection's default in-flight ceiling and the adaptive limit, as a run
does. Each member is in two of the lists (one list: in it). It prints the wall time, the requests
and the most requests in flight. Asserts nothing. The figures of 2026-12-07 are in
docs/performance.md ("Euromsg at 16 requests in flight by default; the member scan read ahead").
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import httpx

from sync.http import HttpPolicy, ProviderHTTP
from sync.logs import configure_logging
from sync.providers.euromsg import api
from sync.providers.euromsg import sandbox as euromsg_sandbox
from sync.providers.euromsg.client import EuromsgProvider
from sync.sandbox import FaultPlan, sandbox_transport
from sync.sandbox.throttle import Throttle

KEY = "bench-euromsg-key"
INTEGRATOR = {"client_name": "bench-integrator", "password": "bench-integrator-pw"}


def seeded(members: int, lists: int, faults: FaultPlan | None) -> euromsg_sandbox.EuromsgSandbox:
    """A sandbox holding ``members`` active cards in ``lists`` lists, written straight into its state."""
    sb = euromsg_sandbox.EuromsgSandbox({INTEGRATOR["client_name"]: INTEGRATOR["password"]}, {KEY: "Bench"},
                                        faults=faults)
    list_ids = [int(sb.create_list(KEY, f"Bench {n}")) for n in range(lists)]
    account = sb._accounts[KEY]
    now = time.time()
    for n in range(members):
        card = euromsg_sandbox._Member(sb._new_id(), f"member{n}@example.com.tr", "Active", now, now, now)
        account.members[card.id] = card
        account.by_email[card.email] = card.id
        account.set_lists(card, {list_ids[n % lists], list_ids[(n + 1) % lists]})
    return sb


async def pull(app: Any, concurrency: int) -> tuple[float, int, int, int]:
    async with httpx.AsyncClient(transport=sandbox_transport(app)) as client:
        def factory(caps: Any, auth: Any) -> ProviderHTTP:
            return ProviderHTTP(client, provider="euromsg", base_url="http://euromsg.bench/", auth=auth,
                                policy=HttpPolicy(concurrency=caps.concurrency, adaptive=True))
        provider = EuromsgProvider.create(factory, {"api_key": KEY}, {"concurrency": concurrency}, INTEGRATOR)
        started = time.perf_counter()
        pulled = [status async for status in provider.pull_statuses(None)]
        wall = time.perf_counter() - started
        stats = provider.http.stats
        return wall, stats.requests, stats.concurrency_peak, len(pulled)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=100_000, metavar="N",
                        help="cards in the account (default: %(default)s)")
    parser.add_argument("--lists", type=int, default=4, metavar="L",
                        help="lists; each card is in two of them, or in the one (default: %(default)s)")
    parser.add_argument("--latency-ms", type=float, default=30.0, metavar="MS",
                        help="the sandbox answers every request this much later (default: %(default)s)")
    parser.add_argument("--faults", action="store_true", help="one call in seven answered 429, Retry-After 1")
    parser.add_argument("--concurrency", type=int, default=api.CONCURRENCY, metavar="N",
                        help="the connection's `concurrency` setting (default: the provider's, %(default)s)")
    args = parser.parse_args(argv)
    if args.members < 1 or args.lists < 1 or args.latency_ms < 0 or args.concurrency < 1:
        parser.error("--members, --lists and --concurrency must be at least 1, --latency-ms not negative")
    configure_logging("error", "console", sys.stderr)
    faults = FaultPlan(rate_limit_every=7, retry_after_s=1) if args.faults else None
    print(f"[bench] seeding {args.members:,} cards in {args.lists} lists ...", file=sys.stderr)
    app = Throttle(seeded(args.members, args.lists, faults).app, latency_s=args.latency_ms / 1000)
    wall, requests, peak, pulled = asyncio.run(pull(app, args.concurrency))
    print(f"Euromsg full scan, {args.members:,} cards in {args.lists} lists, {args.latency_ms:g} ms"
          f"{', one call in seven 429' if args.faults else ''}: {wall:.2f} s, {requests} requests, "
          f"{requests / wall:.0f} requests/s, at most {peak} in flight, {pulled} statuses")
    return 0


if __name__ == "__main__":
    sys.exit(main())
