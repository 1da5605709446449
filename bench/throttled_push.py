"""A first sync against a sandbox that answers late and refuses one call in N with 429: how much
of the fault-free rate a connection keeps, with the adaptive limit (AIMD, sync/http.py) and with
a fixed concurrency whose 429 holds back the whole connection (the behaviour before 2026-12-05).

    .venv/bin/python bench/throttled_push.py --provider euromsg --members 2000 --latency-ms 30

For each mode it runs the same first sync twice, without faults and with every ``--every``-th
call answered 429 (Retry-After ``--retry-after`` seconds), and prints requests, wall time,
requests per second and the throttled run's share of the fault-free rate. The sandbox sits behind
the httpx ASGI transport in this process, so its latency is an ``asyncio.sleep``. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from sync import db, registry
from sync.config import CrmSource, Secret, Settings
from sync.crm import create_reference_schema
from sync.crypto import Vault, generate_key
from sync.engine.runner import run_connection
from sync.http import HttpPolicy
from sync.logs import configure_logging
from sync.providers.euromsg.sandbox import EuromsgSandbox
from sync.providers.mailmasterplus.sandbox import MailMasterPlusSandbox
from sync.sample import seed_crm
from sync.sandbox import FaultPlan

TENANT = "acme"
EUROMSG_KEY = "bench-euromsg-key"
INTEGRATOR = {"client_name": "bench-integrator", "password": "bench-integrator-pw"}
MMP_ACCOUNT = {"username": "bench-mmp", "password": "bench-mmp-pw"}


def _sandbox(provider: str, faults: FaultPlan) -> tuple[Any, dict[str, Any], dict[str, str]]:
    """(sandbox, connection settings, credentials)."""
    if provider == "euromsg":
        sandbox = EuromsgSandbox({INTEGRATOR["client_name"]: INTEGRATOR["password"]}, {EUROMSG_KEY: "Bench"},
                                 faults=faults, seed=3)
        return sandbox, {"iys": False}, {"api_key": EUROMSG_KEY}
    sandbox = MailMasterPlusSandbox({MMP_ACCOUNT["username"]: MMP_ACCOUNT["password"]}, faults=faults)
    lists = {}
    for n in range(1, 6):       # the seeded CRM's lists L1..L5, each mapped to a panel list
        sandbox.add_list(MMP_ACCOUNT["username"], 100 + n, f"Liste {n}", subscribe_form=200 + n, update_form=300 + n)
        lists[f"L{n}"] = {"nl_id": 100 + n, "subscribe_form": 200 + n, "update_form": 300 + n, "name": f"Liste {n}"}
    return sandbox, {"lists": lists}, dict(MMP_ACCOUNT)


def one_run(provider: str, members: int, faults: FaultPlan, policy: HttpPolicy) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        engine = db.create_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
        db.upgrade(engine)
        create_reference_schema(engine, CrmSource())
        seed_crm(engine, CrmSource(), [TENANT], members, seed=7)
        settings = Settings(database_url=str(engine.url), master_keys=(Secret(generate_key()),), worker_id="bench")
        sandbox, connection_settings, credentials = _sandbox(provider, faults)
        with db.transaction(db.session_factory(engine)) as session:
            registry.add_tenant(session, TENANT)
            connection = registry.add_connection(session, Vault(settings.master_keys), TENANT, provider, credentials,
                                                 settings=connection_settings, base_url="http://sandbox.bench/")
            if provider == "euromsg":
                registry.set_integrator_credentials(session, Vault(settings.master_keys), provider, INTEGRATOR)
        started = time.perf_counter()
        result = asyncio.run(run_connection(
            settings, engine, engine, connection.id,
            transport_factory=lambda _: httpx.ASGITransport(app=sandbox.app), http_policy=policy))
        seconds = time.perf_counter() - started
        engine.dispose()
    return {"status": result.status, "requests": result.http_requests, "seconds": seconds,
            "rate": result.http_requests / seconds, "concurrency": result.counts.get("http_concurrency"),
            "cuts": result.counts.get("http_concurrency_cuts", 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--provider", choices=("euromsg", "mailmasterplus"), default="euromsg")
    parser.add_argument("--members", type=int, default=2000, help="CRM members (default 2000)")
    parser.add_argument("--latency-ms", type=float, default=30.0, help="the sandbox's delay per API call (default 30)")
    parser.add_argument("--every", type=int, default=7, help="every N-th API call is answered 429 (default 7)")
    parser.add_argument("--retry-after", type=float, default=1.0, help="its Retry-After in seconds (default 1)")
    args = parser.parse_args()
    configure_logging("error", "console", sys.stderr)
    latency = args.latency_ms / 1000
    base = HttpPolicy(backoff_base_s=0.05, backoff_max_s=2.0)
    modes = {"adaptive (AIMD)": base, "fixed, 429 holds all": dataclasses.replace(base, adaptive=False)}
    print(f"{args.provider}, {args.members} members, {args.latency_ms:g} ms per call, "
          f"429 every {args.every}th call with Retry-After {args.retry_after:g} s")
    print(f"{'mode':24} {'faults':8} {'status':10} {'requests':>8} {'seconds':>8} {'req/s':>7} "
          f"{'in flight':>9} {'cuts':>5} {'share':>6}")
    for name, policy in modes.items():
        clean = one_run(args.provider, args.members, FaultPlan(latency_s=latency), policy)
        throttled = one_run(args.provider, args.members, FaultPlan(latency_s=latency, rate_limit_every=args.every,
                                                                     retry_after_s=args.retry_after), policy)
        for label, row in (("none", clean), (f"1 in {args.every}", throttled)):
            share = f"{100 * row['rate'] / clean['rate']:.0f} %" if row is throttled else ""
            print(f"{name:24} {label:8} {row['status']:10} {row['requests']:>8} {row['seconds']:>8.1f} "
                  f"{row['rate']:>7.1f} {row['concurrency'] or '-':>9} {row['cuts']:>5} {share:>6}")


if __name__ == "__main__":
    main()
