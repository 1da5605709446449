"""``crm-esp-sync rejects list|show|retry|dismiss``: rows a provider or our validation refused."""

from __future__ import annotations

import getpass
import json
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape
from rich.table import Table

from sync.cli.app import PROVIDER_CHOICE, App, cli, pass_app
from sync.errors import InvalidInputError

if TYPE_CHECKING:
    from sync.ops.rejects import RejectFilter


@cli.group("rejects")
def rejects_group() -> None:
    """Rows a provider or our validation refused: list them, show one, retry or dismiss them.

    \b
    An open reject is retried by the engine on its own: ours (validation, list_pending) on
    every run, the provider's after 1 h, 2 h, 4 h ... at most a day. A reject with an empty
    member id is a list the provider does not have; list_pending are members waiting for it.
    """


def _selection_options(command: Any) -> Any:
    for option in reversed([
        click.argument("ids", nargs=-1, type=int),
        click.option("--tenant", help="only this tenant's rejects"),
        click.option("--provider", type=PROVIDER_CHOICE, help="only this provider's rejects"),
        click.option("--code", help="only this code (validation, list_pending, too_long, or the provider's)"),
        click.option("--matching", help="only rejects whose reason contains this text (any case)"),
    ]):
        command = option(command)
    return command


def _selection(ids: tuple[int, ...], tenant: str | None, provider: str | None, code: str | None,
               matching: str | None, state: str = "open") -> RejectFilter:
    from sync.ops.rejects import RejectFilter

    return RejectFilter(ids, tenant, provider, code, matching, state)


def _require_selection(selection: RejectFilter, verb: str) -> None:
    if not selection.selects_something:
        raise click.UsageError(f"say which rejects to {verb}: give their ids or at least one of "
                               "--tenant, --provider, --code, --matching")


@rejects_group.command("list")
@_selection_options
@click.option("--state", type=click.Choice(["open", "dismissed", "resolved", "all"]), default="open",
              show_default=True)
@click.option("--limit", default=200, show_default=True, type=click.IntRange(1), help="at most this many rows")
@click.option("--json", "as_json", is_flag=True, help="print a JSON array of rejects")
@pass_app
def rejects_list(app: App, ids: tuple[int, ...], tenant: str | None, provider: str | None, code: str | None,
                 matching: str | None, state: str, limit: int, as_json: bool) -> None:
    """List rejects (IDS, if given, narrow it down), oldest first."""
    from sync.ops.rejects import find_rejects

    with app.transaction() as session:
        found = find_rejects(session, _selection(ids, tenant, provider, code, matching, state), limit=limit)
    if as_json:
        click.echo(json.dumps(found, ensure_ascii=False, indent=2, sort_keys=True))
        return
    table = Table("id", "tenant", "provider", "state", "member", "list", "e-mail", "code", "reason", "attempts",
                  "first seen", "last seen")
    for r in found:
        table.add_row(str(r["id"]), escape(r["tenant"]), r["provider"], r["state"], escape(r["crm_member_id"] or "-"),
                      escape(r["crm_list_id"] or "-"), escape(r["email"] or "-"), escape(r["code"] or "-"),
                      escape(r["reason"]), str(r["attempts"]), r["first_seen_at"], r["last_seen_at"])
    app.out.print(table)
    app.out.print(f"{len(found)} reject(s)" + (f" (the first {limit}: --limit shows more)" if len(found) == limit
                                               else ""))


@rejects_group.command("show")
@click.argument("reject_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="print it as a JSON object")
@pass_app
def rejects_show(app: App, reject_id: int, as_json: bool) -> None:
    """Everything about the reject REJECT_ID."""
    from sync.ops.rejects import get_reject

    with app.transaction() as session:
        found = get_reject(session, reject_id)
    if as_json:
        click.echo(json.dumps(found, ensure_ascii=False, indent=2, sort_keys=True))
        return
    for key, value in found.items():
        app.out.print(f"{key:15} {escape('-' if value is None else str(value))}")


@rejects_group.command("retry")
@_selection_options
@click.option("--now", "run_now", is_flag=True, help="run the affected connections now instead of waiting for "
              "their next run; exit status as for `once`")
@pass_app
def rejects_retry(app: App, ids: tuple[int, ...], tenant: str | None, provider: str | None, code: str | None,
                  matching: str | None, run_now: bool) -> None:
    """Queue the selected open rejects (and dismissed ones, which are reopened) for the next run of
    their connection, skipping the provider backoff; with --now, run those connections now."""
    from sync.ops.rejects import retry_rejects

    selection = _selection(ids, tenant, provider, code, matching, "all" if ids else "open")
    _require_selection(selection, "retry")
    with app.transaction() as session:
        outcome = retry_rejects(session, selection)
    for reject_id, why in outcome.not_queued:
        app.out.print(f"reject {reject_id} not queued: {why}")
    app.out.print(f"{len(outcome.queued)} reject(s) queued for the next run of "
                  f"{len(outcome.connection_ids)} connection(s)")
    if run_now and outcome.connection_ids:
        from sync.cli.runs import run_connections_now

        run_connections_now(app, outcome.connection_ids)


@rejects_group.command("dismiss")
@_selection_options
@click.option("--reason", required=True, help="why they need no more attempts (recorded)")
@click.option("--by", default=None, help="who dismisses them (recorded; default: the OS user)")
@pass_app
def rejects_dismiss(app: App, ids: tuple[int, ...], tenant: str | None, provider: str | None, code: str | None,
                    matching: str | None, reason: str, by: str | None) -> None:
    """Dismiss the selected open rejects: the engine stops retrying them, and who, when and why
    are recorded. `rejects retry ID` reopens one."""
    from sync.ops.rejects import dismiss_rejects

    selection = _selection(ids, tenant, provider, code, matching)
    _require_selection(selection, "dismiss")
    who = by if by is not None else getpass.getuser()
    with app.transaction() as session:
        try:
            dismissed = dismiss_rejects(session, selection, by=who, reason=reason)
        except InvalidInputError as exc:
            raise click.UsageError(exc.message) from None
    app.out.print(f"{len(dismissed)} reject(s) dismissed by {escape(who)}")
    if ids and len(dismissed) < len(set(ids)):
        missing = sorted(set(ids) - set(dismissed))
        app.out.print(f"not open (or not found): {', '.join(map(str, missing))}")

