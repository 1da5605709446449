"""Commands that run syncs: ``once``, ``backfill``, ``run`` (the daemon)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from sync import db
from sync.cli.app import (
    EXIT_FAILURE,
    EXIT_NEW_REJECTS,
    PROVIDER_CHOICE,
    App,
    cli,
    pass_app,
    require_contract,
    shown,
)
from sync.cli.pulled import OneLineUsage, _Choice
from sync.errors import SyncError

# --- runs ---------------------------------------------------------------------------------


def _print_results(app: App, results: list[Any]) -> None:
    from sync.engine.runner import RunResult

    table = Table("tenant", "provider", "status", "added", "updated", "removed", "unchanged", "rejected",
                  "blocked", "statuses", "campaigns", "results", "http", "seconds")
    for r in results:
        assert isinstance(r, RunResult)
        c = r.counts
        blocked = len(r.plan.blocked_by_suppression) if r.plan else 0
        table.add_row(r.tenant, r.provider, r.status, *(str(c.get(k, 0)) for k in (
            "members_added", "members_updated", "members_removed", "members_unchanged", "rejected")),
            str(blocked), str(c.get("statuses_pulled", 0)), str(c.get("campaigns_pulled", 0)),
            str(c.get("campaign_results", 0)), str(r.http_requests), f"{r.timings.get('total', 0):.1f}")
    app.out.print(table)
    for r in results:
        if r.error:
            app.out.print(f"{r.tenant}/{r.provider}: {r.status}: {shown(r.error)}")


def _print_plan(app: App, results: list[Any], verbose: bool) -> None:
    def sample(items: list[Any]) -> str:
        shown = ", ".join(str(i) for i in items[:5])
        return f"{len(items)}" + (f"  e.g. {shown}" + (" ..." if len(items) > 5 else "") if items else "")

    for r in results:
        app.out.print(f"[bold]{escape(r.tenant)}/{r.provider}[/bold]: dry run, nothing sent ({r.status})")
        if r.error:
            app.out.print(f"  error: {escape(r.error)}")
        if r.plan is None:
            continue
        p = r.plan
        for label, items in (("lists to create", p.lists_create),
                             ("lists to rename", [f"{a} -> {b}" for a, b in p.lists_rename]),
                             ("lists to delete", p.lists_delete),
                             ("lists rejected", [f"{a} ({why})" for a, why in p.lists_rejected]),
                             ("members to add", p.members_add),
                             ("members to update", p.members_update), ("members to remove", p.members_remove)):
            app.out.print(f"  {label:28} {escape(sample(items))}")
        left = len({entry.member_id for entry in p.left_out})
        app.out.print(f"  {'members left out':28} {left}")
        for email, why in p.invalid:
            if email == "(mass delete)":
                app.out.print(f"  {'mass delete':28} {escape(why)}")
    _print_left_out(app, results, verbose, dry_run=True)


def _print_left_out(app: App, results: list[Any], verbose: bool, *, dry_run: bool) -> None:
    """The members left out, per connection and reason (a table), and with --verbose by name."""
    from sync.ops.left_out import by_reason, left_out_rows

    counted = [(r, by_reason(r)) for r in results]
    if not any(reasons for _, reasons in counted):
        if dry_run:
            app.out.print("no member left out")
        return
    summary = Table("tenant", "provider", "reason", "members", title="members left out")
    for r, reasons in counted:
        for reason, count in sorted(reasons.items(), key=lambda item: (-item[1], item[0])):
            summary.add_row(escape(r.tenant), r.provider, reason, str(count))
    app.out.print(summary)
    if not verbose:
        app.out.print("--verbose names them; --output FILE --format csv|jsonl writes one row per member")
        return
    named = Table("tenant", "provider", "member", "email", "lists", "reason", "detail", title="left out")
    for row in left_out_rows(results):
        named.add_row(escape(row["tenant"]), row["provider"], escape(row["member_id"]), escape(row["email"] or ""),
                      escape(" ".join(row["lists"])), row["reason"], escape(row["detail"]))
    app.out.print(named)


def _check_report_options(verbose: bool, output: str | None, fmt: str | None, as_json: bool) -> str | None:
    """The format of --output (given, or from FILE's suffix); a bad combination is one line, exit 2."""
    if as_json and verbose:
        raise OneLineUsage("--json and --verbose exclude each other (--json names every left-out member)")
    if fmt is not None and output is None:
        raise OneLineUsage(f"--format {fmt} needs --output FILE")
    if output is None:
        return None
    if output == "-":
        raise OneLineUsage("--output needs a file: the table goes to stdout (--json prints everything there)")
    parent = Path(output).parent
    if not parent.is_dir():
        raise OneLineUsage(f"--output {output}: the directory {parent} does not exist")
    if fmt is None:
        suffix = Path(output).suffix.lower()
        if suffix not in (".csv", ".jsonl"):
            raise OneLineUsage(f"--output {output}: say --format csv or --format jsonl (FILE ends in neither "
                               ".csv nor .jsonl)")
        fmt = suffix[1:]
    return fmt


def _report(app: App, results: list[Any], *, dry_run: bool, verbose: bool, output: str | None, fmt: str | None,
            as_json: bool) -> None:
    from sync.ops.left_out import document, left_out_rows, write_rows
    from sync.ops.pulled import Output

    if as_json:
        click.echo(json.dumps(document(results, dry_run=dry_run), ensure_ascii=False, indent=2, default=str))
    elif dry_run:
        _print_plan(app, results, verbose)
    else:
        _print_results(app, results)
        if verbose:
            _print_left_out(app, results, verbose, dry_run=False)
    if output is not None and fmt is not None:
        rows = left_out_rows(results)
        try:
            write_rows(rows, fmt, Output(output, sys.stdout))
        except SyncError as exc:
            click.echo(f"crm-esp-sync: error: {exc.message.split(';')[0]}", err=True)
            sys.exit(EXIT_FAILURE)
        line = f"{len(rows)} left-out member row(s) written to {output}"
        if as_json:
            click.echo(line, err=True)
        else:
            app.out.print(escape(line))


def _run(app: App, tenant: str | None, provider: str | None, dry_run: bool, backfill: bool,
         allow_mass_delete: bool = False, replan_all: bool = False, *, verbose: bool = False,
         output: str | None = None, fmt: str | None = None, as_json: bool = False) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sync.engine.connection_sync import RunOptions
    from sync.engine.runner import run_once
    from sync.stopping import stop_on_signals

    fmt = _check_report_options(verbose, output, fmt, as_json)
    app.vault()   # a missing or malformed master key fails here, before any run starts
    engine = app.migrated_engine()
    crm_engine = db.create_engine(app.settings.crm_url) if app.settings.crm_database_url else engine
    require_contract(app, crm_engine)
    show_progress = backfill and app.out.is_terminal and not as_json
    # The signal handlers stay in place until the report is printed: a SIGTERM that arrives a
    # moment after the runs ended is recorded (exit 143) instead of ending the process by the
    # signal's default action before its report.
    with stop_on_signals() as stop:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=app.out, disable=not show_progress) as progress:
            tasks: dict[str, Any] = {}

            def on_progress(phase: str, done: int, total: int) -> None:
                if phase not in tasks:
                    tasks[phase] = progress.add_task(phase, total=total)
                progress.update(tasks[phase], completed=done, total=total)

            results = run_once(app.settings, engine, crm_engine, tenant=tenant, provider=provider,
                               options=RunOptions(dry_run=dry_run, backfill=backfill,
                                                  allow_mass_delete=allow_mass_delete, replan_all=replan_all,
                                                  # (names kept only where they are printed: flat memory)
                                                  itemize=verbose or as_json or output is not None),
                               on_progress=on_progress)
        if crm_engine is not engine:
            crm_engine.dispose()
        if not results:
            if as_json:
                from sync.ops.left_out import document

                click.echo(json.dumps(document([], dry_run=dry_run), indent=2))
            else:
                app.out.print(f"stopped by {stop.signal.name} before any run started" if stop.signal is not None
                              else "no enabled connection matches")
        else:
            _report(app, results, dry_run=dry_run, verbose=verbose, output=output, fmt=fmt, as_json=as_json)
    code = stop.exit_status() or exit_status([r.status for r in results])
    if code:
        sys.exit(code)


def run_connections_now(app: App, connection_ids: list[int]) -> None:
    """Run these connections now, one after the other, print the results and exit as `once` does."""
    import asyncio

    from sync.engine.connection_sync import RunOptions
    from sync.engine.runner import run_connection

    app.vault()
    engine = app.migrated_engine()
    crm_engine = db.create_engine(app.settings.crm_url) if app.settings.crm_database_url else engine
    try:
        require_contract(app, crm_engine)
        results = [asyncio.run(run_connection(app.settings, engine, crm_engine, cid, RunOptions(itemize=False)))
                   for cid in connection_ids]
    finally:
        if crm_engine is not engine:
            crm_engine.dispose()
    _print_results(app, results)
    code = exit_status([r.status for r in results])
    if code:
        sys.exit(code)


def exit_status(statuses: list[str]) -> int:
    """1 if any run failed (failed, blocked by a live lease, lost_lease), else 3 if any run
    rejected rows that were not open before it (partial), else 0."""
    from sync.engine.runner import FAILING_STATUSES, NEW_REJECTS_STATUS

    if any(status in FAILING_STATUSES for status in statuses):
        return EXIT_FAILURE
    return EXIT_NEW_REJECTS if NEW_REJECTS_STATUS in statuses else 0


EXIT_STATUS_HELP = """
    \b
    Exit status:
      0  every run succeeded: succeeded, succeeded_with_rejects (only rows already rejected
         before this run are still rejected) or skipped (no sync implementation)
      1  a run failed, was blocked by another worker's live lease, lost its lease, or stopped
         before a mass delete
      2  usage or configuration error (nothing ran)
      3  every run did its work, but one rejected rows that were not rejected before (partial):
         see `crm-esp-sync rejects list`
      130, 143  stopped by Ctrl-C or SIGTERM (128 + the signal's number): the run stopped at its
         next safe point (a second signal stops at once), committed what it had done, was
         recorded as interrupted and released its lease; the next run goes on from there
"""


run_filters = [
    click.option("--tenant", help="only this tenant"),
    click.option("--provider", type=PROVIDER_CHOICE, help="only this provider"),
    click.option("--dry-run", is_flag=True, help="print the plan (lists and members to create, update, remove, "
                 "and every member left out, with the reason) and write nothing; it reads the provider "
                 "(statuses, İYS consents, lists) so that the plan equals the run that follows"),
    click.option("--allow-mass-delete", is_flag=True,
                 help="go on although the run would remove more members or lists than the connection's "
                 "max_delete_members / max_delete_percent settings allow (default 5000 members, 25 %)"),
    click.option("--verbose", "-v", is_flag=True,
                 help="name every member left out (suppressed, İYS RET, rejected, waiting...) with the reason"),
    click.option("--output", "-o", metavar="FILE",
                 help="write one row per left-out member to FILE (replaced when complete, mode 0600)"),
    click.option("--format", "fmt", type=_Choice(["csv", "jsonl"]),
                 help="of --output FILE (default: from FILE's suffix .csv or .jsonl)"),
    click.option("--json", "as_json", is_flag=True,
                 help="print one JSON document: each run's plan or counts and its left-out members"),
]


def _with_run_filters(command: Any) -> Any:
    for option in reversed(run_filters):
        command = option(command)
    return command


@cli.command("once", epilog=EXIT_STATUS_HELP)
@_with_run_filters
@pass_app
def once(app: App, tenant: str | None, provider: str | None, dry_run: bool, allow_mass_delete: bool,
         verbose: bool, output: str | None, fmt: str | None, as_json: bool) -> None:
    """Run every enabled connection now (incremental, from the watermarks), then exit.

    Rejected rows do not fail a run; new ones give exit status 3. With --dry-run it sends nothing
    and changes nothing a run depends on, and names every member the run would leave out
    (docs/operating.md, "The dry run").
    """
    _run(app, tenant, provider, dry_run, backfill=False, allow_mass_delete=allow_mass_delete, verbose=verbose,
         output=output, fmt=fmt, as_json=as_json)


@cli.command("backfill", epilog=EXIT_STATUS_HELP)
@_with_run_filters
@click.option("--replan-all", is_flag=True,
              help="Plan every member again, also those whose CRM row, lists and connection settings "
                   "are what they were last synced from (the default skips them).")
@pass_app
def backfill(app: App, tenant: str | None, provider: str | None, dry_run: bool, allow_mass_delete: bool,
             verbose: bool, output: str | None, fmt: str | None, as_json: bool, replan_all: bool) -> None:
    """Full reconcile: compare EVERY CRM member with what was pushed (ignores watermarks,
    finds hard deletes and changes made without moving updated_at), with progress bars. A member
    whose CRM row and lists are what its links were last synced from is not planned again; every
    open reject is tried again. Safe to repeat: unchanged rows send nothing.

    Exit status as for `once`: 0 success, 1 failure, 2 usage/configuration, 3 new rejects.
    """
    _run(app, tenant, provider, dry_run, backfill=True, allow_mass_delete=allow_mass_delete,
         replan_all=replan_all, verbose=verbose, output=output, fmt=fmt, as_json=as_json)


@cli.command("run")
@click.option("--run-now", is_flag=True, help="also run every enabled connection once at start")
@pass_app
def run_daemon(app: App, run_now: bool) -> None:
    """Run as a daemon: every enabled connection on its cron schedule (connection --schedule, else
    DEFAULT_SCHEDULE, in TIMEZONE), WORKERS connections at a time. Connections added, disabled or
    rescheduled are picked up within REFRESH_SECONDS. SIGTERM lets running syncs finish, then exits.
    Under systemd (Type=notify) it reports READY and STOPPING."""
    from sync.scheduler import SyncDaemon

    app.vault()
    engine = app.migrated_engine()
    crm_engine = db.create_engine(app.settings.crm_url) if app.settings.crm_database_url else engine
    require_contract(app, crm_engine)
    SyncDaemon(app.settings, engine, crm_engine).run_forever(run_now=run_now)


