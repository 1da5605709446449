"""dlt's ``rest_api`` source pulling Postacell's non-active subscribers: the other half of pull_vs_dlt.py.

This file runs under the separate venv that ``bench/pull_vs_dlt.py`` makes (``bench/.dlt-venv``),
never under the project's: dlt is not a dependency of crm-esp-sync. It reads one JSON argument
(base URL, login, statuses, where to write), logs in, runs one pipeline into a fresh duckdb file,
and prints one JSON line: wall seconds, rows per table, peak RSS.

Authentication: the Postacell login (``POST token`` with username and password, answered with
an ``access`` JWT; see sync/providers/postacell/api.py) is made here with ``requests``, inside the
timed window, and dlt gets the access token as a ``bearer`` auth config. dlt has no built-in
"log in with a JSON body" auth; the token lives 300 s, far longer than the pull.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Any


def peak_rss_mb() -> float:
    """VmHWM of this process, MB (as bench/sync_throughput.py measures the daemon)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    spec: dict[str, Any] = json.loads(sys.argv[1])
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")     # no network here but localhost
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING")
    import dlt
    import requests
    from dlt.sources.rest_api import rest_api_source

    before = peak_rss_mb()
    started = time.perf_counter()
    login = requests.post(spec["base_url"] + spec["token_path"], timeout=30,
                          json={"username": spec["username"], "password": spec["password"]},
                          headers={"Accept": "application/json"})
    login.raise_for_status()
    token = login.json()["access"]
    source = rest_api_source({
        "client": {
            "base_url": spec["base_url"],
            "auth": {"type": "bearer", "token": token},
            "headers": {"Accept": "application/json"},
            # The documented paging: {count, next, previous, results}, follow ``next``.
            "paginator": {"type": "json_link", "next_url_path": "next"},
        },
        "resource_defaults": {
            "endpoint": {"data_selector": "results"},
            "write_disposition": "append",      # a fresh database: nothing to merge with
            "parallelized": spec["parallelized"],
        },
        "resources": [
            {"name": f"subscribers_{status}",
             "endpoint": {"path": spec["path"], "params": {"status": status}}}
            for status in spec["statuses"]
        ],
    })
    pipeline = dlt.pipeline(pipeline_name="postacell_statuses", pipelines_dir=spec["workdir"],
                            destination=dlt.destinations.duckdb(spec["database"]), dataset_name="postacell")
    pipeline.run(source, loader_file_format=spec["loader_file_format"] or None)
    seconds = time.perf_counter() - started
    peak = peak_rss_mb()
    trace = pipeline.last_trace
    steps = {step.step: round((step.finished_at - step.started_at).total_seconds(), 3)
             for step in trace.steps if step.finished_at is not None}
    with pipeline.sql_client() as client:
        rows = {f"subscribers_{status}": client.execute_sql(
            f"SELECT count(*) FROM subscribers_{status}")[0][0] for status in spec["statuses"]}  # noqa: S608
    print(json.dumps({"seconds": seconds, "rows": rows, "steps": steps, "rss_before_mb": before,
                      "peak_rss_mb": peak, "dlt": dlt.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
