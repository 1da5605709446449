"""``crm-esp-sync status``: how each connection is doing, as a table or as stable JSON."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from sync.cli.app import PROVIDER_CHOICE, App, cli, pass_app


@cli.command("status")
@click.option("--tenant", help="only this tenant")
@click.option("--provider", type=PROVIDER_CHOICE, help="only this provider")
@click.option("--runs", default=5, show_default=True, type=click.IntRange(1, 100), help="recent runs per connection")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document (schema in docs/operating.md)")
@pass_app
def status(app: App, tenant: str | None, provider: str | None, runs: int, as_json: bool) -> None:
    """Per connection: health, the last runs (outcome, counts, timings, HTTP requests), watermarks and their age,
    open rejects by code, lists the provider does not have, members waiting for a list,
    suppressions by kind, who holds the lease until when, and the reading each endpoint's answers
    last came in (stored by `connection test` and the runs).

    \b
    health: failing (last run failed, blocked, lost its lease or crashed), new_rejects (it ended
    partial), never_run, ok, disabled.
    """
    from sync.ops.status import connection_statuses

    with app.transaction() as session:
        document = connection_statuses(session, tenant, provider, runs=runs)
    if as_json:
        click.echo(json.dumps(document, ensure_ascii=False, indent=2, sort_keys=True))
        return
    if not document["connections"]:
        app.out.print("no connection matches")
        return
    table = Table("tenant", "provider", "health", "last run", "when", "added", "updated", "removed",
                  "new rejects", "requests", "open rejects", "lists unmapped", "waiting for a list", "suppressions",
                  "lease")
    for c in document["connections"]:
        run = c["last_run"] or {}
        counts = run.get("counts", {})
        rejects = c["rejects"]
        lease = c["lease"]
        table.add_row(
            escape(c["tenant"]), c["provider"], c["health"], run.get("status", "-"),
            run.get("finished_at") or run.get("started_at") or "-",
            *(str(counts.get(k, 0)) for k in ("members_added", "members_updated", "members_removed", "rejects_new")),
            "-" if run.get("http_requests") is None else str(run["http_requests"]) + (
                f" ({run['http_concurrency']} in flight" + (
                    f", {run['http_rate_per_s']:g}/s" if run.get("http_rate_per_s") else "") + ")"
                if run.get("http_concurrency") else ""),
            str(rejects["open"]), str(len(rejects["lists_without_mapping"])), str(rejects["members_waiting_for_list"]),
            ", ".join(f"{k}={v}" for k, v in c["suppressions"].items()) or "-",
            f"{escape(lease['holder'])} until {lease['expires_at']}" if lease["live"] else "free")
    app.out.print(table)
    for c in document["connections"]:
        _print_details(app, c)


def _print_details(app: App, c: dict[str, Any]) -> None:
    from sync.ops.status import age_text as _age

    lines = []
    for w in c["watermarks"]:
        lines.append(f"watermark {w['stream']}: {w['value']} (updated {_age(w['age_seconds'])})")
    for code in c["rejects"]["by_code"]:
        lines.append(f"{code['count']} open reject(s) {code['code'] or '-'}: e.g. {code['example_reason']}")
    for lst in c["rejects"]["lists_without_mapping"]:
        lines.append(f"list {lst['crm_list_id']} has no twin at the provider: {lst['reason']}")
    if c["readings"]:
        lines.append("readings: " + "; ".join(f"{endpoint}={reading}" for endpoint, reading in c["readings"].items()))
    run = c["last_run"]
    if run and run.get("error"):
        lines.append(f"last run {run['status']}: {run['error']}")
    if lines:
        app.out.print(f"[bold]{escape(c['tenant'])}/{c['provider']}[/bold]")
        for line in lines:
            app.out.print(f"  {escape(line)}")
