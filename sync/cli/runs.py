"""Commands that run syncs: ``once``, ``backfill``, ``run`` (the daemon)."""

from __future__ import annotations

import sys
from typing import Any

import click
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
)

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
            app.out.print(f"{r.tenant}/{r.provider}: {r.status}: {r.error}")


def _print_plan(app: App, results: list[Any]) -> None:
    def sample(items: list[Any]) -> str:
        shown = ", ".join(str(i) for i in items[:5])
        return f"{len(items)}" + (f"  e.g. {shown}" + (" ..." if len(items) > 5 else "") if items else "")

    for r in results:
        app.out.print(f"[bold]{r.tenant}/{r.provider}[/bold]: dry run, nothing sent ({r.status})")
        if r.error:
            app.out.print(f"  error: {r.error}")
        if r.plan is None:
            continue
        p = r.plan
        for label, items in (("lists to create", p.lists_create),
                             ("lists to rename", [f"{a} -> {b}" for a, b in p.lists_rename]),
                             ("lists to delete", p.lists_delete), ("members to add", p.members_add),
                             ("members to update", p.members_update), ("members to remove", p.members_remove),
                             ("blocked by suppression", p.blocked_by_suppression),
                             ("invalid (would be rejected)", [f"{e} ({why})" for e, why in p.invalid])):
            app.out.print(f"  {label:28} {sample(items)}")


def _run(app: App, tenant: str | None, provider: str | None, dry_run: bool, backfill: bool,
         allow_mass_delete: bool = False, replan_all: bool = False) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sync.engine.connection_sync import RunOptions
    from sync.engine.runner import run_once
    from sync.stopping import stop_on_signals

    app.vault()   # a missing or malformed master key fails here, before any run starts
    engine = app.migrated_engine()
    crm_engine = db.create_engine(app.settings.crm_url) if app.settings.crm_database_url else engine
    require_contract(app, crm_engine)
    show_progress = backfill and app.out.is_terminal
    with stop_on_signals() as stop, Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                             TimeElapsedColumn(), console=app.out,
                                             disable=not show_progress) as progress:
        tasks: dict[str, Any] = {}

        def on_progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = progress.add_task(phase, total=total)
            progress.update(tasks[phase], completed=done, total=total)

        results = run_once(app.settings, engine, crm_engine, tenant=tenant, provider=provider,
                           options=RunOptions(dry_run=dry_run, backfill=backfill, allow_mass_delete=allow_mass_delete,
                                              replan_all=replan_all),
                           on_progress=on_progress)
    if crm_engine is not engine:
        crm_engine.dispose()
    stopped = stop.exit_status()
    if not results:
        app.out.print(f"stopped by {stop.signal.name} before any run started" if stop.signal is not None
                      else "no enabled connection matches")
        if stopped:
            sys.exit(stopped)
        return
    (_print_plan if dry_run else _print_results)(app, results)
    code = stopped or exit_status([r.status for r in results])
    if code:
        sys.exit(code)


def run_connections_now(app: App, connection_ids: list[int]) -> None:
    """Run these connections now, one after the other, print the results and exit as `once` does."""
    import asyncio

    from sync.engine.runner import run_connection

    app.vault()
    engine = app.migrated_engine()
    crm_engine = db.create_engine(app.settings.crm_url) if app.settings.crm_database_url else engine
    try:
        require_contract(app, crm_engine)
        results = [asyncio.run(run_connection(app.settings, engine, crm_engine, cid)) for cid in connection_ids]
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
                 "blocked by suppression) and write nothing; it reads the provider (statuses, lists) so that "
                 "the plan equals the run that follows"),
    click.option("--allow-mass-delete", is_flag=True,
                 help="go on although the run would remove more members or lists than the connection's "
                 "max_delete_members / max_delete_percent settings allow (default 5000 members, 25 %)"),
]


def _with_run_filters(command: Any) -> Any:
    for option in reversed(run_filters):
        command = option(command)
    return command


@cli.command("once", epilog=EXIT_STATUS_HELP)
@_with_run_filters
@pass_app
def once(app: App, tenant: str | None, provider: str | None, dry_run: bool, allow_mass_delete: bool) -> None:
    """Run every enabled connection now (incremental, from the watermarks), then exit.

    Rejected rows do not fail a run; new ones give exit status 3.
    """
    _run(app, tenant, provider, dry_run, backfill=False, allow_mass_delete=allow_mass_delete)


@cli.command("backfill", epilog=EXIT_STATUS_HELP)
@_with_run_filters
@click.option("--replan-all", is_flag=True,
              help="Plan every member again, also those whose CRM row, lists and connection settings "
                   "are what they were last synced from (the default skips them).")
@pass_app
def backfill(app: App, tenant: str | None, provider: str | None, dry_run: bool, allow_mass_delete: bool,
             replan_all: bool) -> None:
    """Full reconcile: compare EVERY CRM member with what was pushed (ignores watermarks,
    finds hard deletes and changes made without moving updated_at), with progress bars. A member
    whose CRM row and lists are what its links were last synced from is not planned again; every
    open reject is tried again. Safe to repeat: unchanged rows send nothing.

    Exit status as for `once`: 0 success, 1 failure, 2 usage/configuration, 3 new rejects.
    """
    _run(app, tenant, provider, dry_run, backfill=True, allow_mass_delete=allow_mass_delete,
         replan_all=replan_all)


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


