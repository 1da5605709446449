"""``crm-esp-sync suppressions list|export`` and ``reports export``: pulled data handed back to the CRM.

Both read the ``pulled_*`` views (docs/pulled-data.md); an export with ``--cursor NAME`` gives a
nightly script each row once (sync/ops/pulled.py says how).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, NoReturn

import click
from rich.markup import escape
from rich.table import Table

from sync.cli.app import App, cli, pass_app
from sync.errors import InvalidInputError, NotFoundError
from sync.providers.base import SUPPRESSION_RANK
from sync.providers.specs import PROVIDERS

if TYPE_CHECKING:
    from sync.ops.pulled import Selection, Stream

STATUSES = sorted(SUPPRESSION_RANK, key=SUPPRESSION_RANK.__getitem__, reverse=True)


class OneLineUsage(click.UsageError):
    """A usage error in one line (``crm-esp-sync: error: ...``, exit status 2): what a script logs."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"crm-esp-sync: error: {self.format_message()}", err=True)


class _Choice(click.Choice):  # type: ignore[type-arg]
    """click.Choice whose refusal is one line."""

    def fail(self, message: str, param: click.Parameter | None = None, ctx: click.Context | None = None) -> NoReturn:
        name = param.opts[0] if param is not None and param.opts else "value"
        raise OneLineUsage(f"{name}: {message}")


EXPORT_HELP = """\b
Rows go to stdout, or to --output FILE: written as FILE's hidden sibling (mode 0600), synced and
renamed to FILE when complete. With --cursor, an existing FILE is never replaced (the export
fails and the cursor stays): its rows may not be loaded yet. Times are UTC ISO 8601 with Z; csv
has a header line, NULL is an empty field, booleans are true/false; jsonl is one JSON object
per line. The columns are the view's (docs/pulled-data.md).

\b
--cursor NAME: a position kept in the database. Each export with it gives the rows after it, in
(time, id) order, then moves it past them: a nightly script gets each row once (a row changed
since, e.g. a bounce become a complaint, comes again). The cursor moves only after the whole
export was written: the last row written and stdout flushed, or FILE renamed into place; a
failed write leaves it where it was, so the next export gives the same rows again. It stops
before the start of any run still pulling: those rows come with the first export after the run.
A cursor keeps the --tenant/--provider it was made with; --since only narrows. A reader of stdout
that fails after reading everything goes unseen: where a load may fail, export to --output and
load the file (docs/pulled-data.md has a nightly recipe).
"""


def _selection(tenant: str | None, provider: str | None, since: str | None, status: str | None = None) -> Selection:
    from sync.ops.erasures import parse_since
    from sync.ops.pulled import Selection

    try:
        return Selection(tenant, provider, parse_since(since), status)
    except InvalidInputError as exc:
        raise OneLineUsage(exc.message) from None


def _filter_options(time_meaning: str) -> Callable[[Any], Any]:
    def decorate(command: Any) -> Any:
        for option in reversed([
            click.option("--tenant", help="only this tenant's rows"),
            click.option("--provider", type=_Choice(sorted(PROVIDERS)), help="only this provider's rows"),
            click.option("--since", metavar="DATE|TIME",
                         help=f"only rows {time_meaning} from this date (2026-11-30, from midnight UTC) or ISO "
                              "time (2026-11-30T08:00:00Z) on"),
        ]):
            command = option(command)
        return command
    return decorate


def _export_options(command: Any) -> Any:
    for option in reversed([
        click.option("--format", "fmt", type=_Choice(["csv", "jsonl"]), default="csv", show_default=True),
        click.option("--cursor", metavar="NAME", help="give only the rows after this named cursor, then move it "
                     "(see below); 1-64 of a-z, 0-9, _ - ."),
        click.option("--output", "-o", metavar="FILE",
                     help=("write to FILE (in place when complete; with --cursor, never over an "
                           "existing FILE) instead of stdout (-)")),
    ]):
        command = option(command)
    return command


def _run_export(app: App, stream: Stream, selection: Selection, fmt: str, cursor: str | None,
                output: str | None) -> None:
    from sync.ops.pulled import Output, export_rows
    from sync.ops.status import iso

    if output == "-":
        output = None
    target = Output(output, sys.stdout, keep_existing=cursor is not None)
    try:
        outcome = export_rows(app.sessions(), stream, selection, fmt, target, cursor=cursor)
    except (InvalidInputError, NotFoundError) as exc:
        raise OneLineUsage(exc.message) from None
    if output is None:
        return      # stdout holds the rows and nothing else
    line = f"{outcome.rows} row(s) written to {output}"
    if outcome.cursor is not None:
        where = f"{iso(outcome.position[0])} #{outcome.position[1]}" if outcome.position else "the start"
        line += f"; cursor {outcome.cursor} at {where}"
        if outcome.held_back_at is not None:
            line += f" (rows from {iso(outcome.held_back_at)} on wait for a run still going)"
    app.out.print(escape(line))


# --- suppressions ---------------------------------------------------------------------------


@cli.group("suppressions")
def suppressions_group() -> None:
    """Unsubscribes, bounces and complaints pulled from the providers, for bringing them back into
    the CRM: the view pulled_suppressions (docs/pulled-data.md).

    \b
    status: unsubscribed  the recipient unsubscribed (remote_list_id: from that list only)
            complaint     marked as spam
            hard_bounce   the address does not exist
            soft_bounce   a temporary failure (information: it blocks nothing)
    Each blocks the address at every provider of the tenant (soft_bounce aside).
    """


@suppressions_group.command("list")
@_filter_options("pulled")
@click.option("--status", type=_Choice(STATUSES), help="only this status")
@click.option("--limit", default=200, show_default=True, type=click.IntRange(1), help="at most this many rows")
@click.option("--json", "as_json", is_flag=True, help="print a JSON array of the view's rows")
@pass_app
def suppressions_list(app: App, tenant: str | None, provider: str | None, since: str | None, status: str | None,
                      limit: int, as_json: bool) -> None:
    """Pulled suppressions, the most recently pulled first."""
    from sync.ops.pulled import SUPPRESSIONS, list_rows

    selection = _selection(tenant, provider, since, status)
    try:
        with app.transaction() as session:
            rows = list_rows(session, SUPPRESSIONS, selection, limit=limit)
    except (InvalidInputError, NotFoundError) as exc:
        raise OneLineUsage(exc.message) from None
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    table = Table("tenant", "provider", "e-mail", "status", "list", "occurred", "pulled")
    for r in rows:
        scope = r["crm_list_id"] or r["list_name"] or r["remote_list_id"]
        table.add_row(escape(r["tenant"]), r["provider"], escape(r["email"]), r["status"],
                      escape(scope) if scope else "all lists", r["occurred_at"], r["pulled_at"])
    app.out.print(table)
    app.out.print(f"{len(rows)} suppression(s)" + (f" (the latest {limit}: --limit shows more)"
                                                   if len(rows) == limit else ""))


@suppressions_group.command("export", epilog=EXPORT_HELP)
@_filter_options("pulled (or changed)")
@_export_options
@pass_app
def suppressions_export(app: App, tenant: str | None, provider: str | None, since: str | None, fmt: str,
                        cursor: str | None, output: str | None) -> None:
    """Every column of pulled_suppressions, oldest pulled first, as CSV or JSON lines.

    \b
    crm-esp-sync suppressions export --cursor crm --format csv \\
      | psql "$CRM_URL" -c "\\copy crm_unsubscribes FROM STDIN CSV HEADER"
    """
    from sync.ops.pulled import SUPPRESSIONS

    _run_export(app, SUPPRESSIONS, _selection(tenant, provider, since), fmt, cursor, output)


# --- reports --------------------------------------------------------------------------------


@cli.group("reports")
def reports_group() -> None:
    """Campaign results pulled from the providers, per recipient: the view pulled_campaign_results
    (docs/pulled-data.md)."""


@reports_group.command("export", epilog=EXPORT_HELP)
@_filter_options("pulled or changed")
@_export_options
@pass_app
def reports_export(app: App, tenant: str | None, provider: str | None, since: str | None, fmt: str,
                   cursor: str | None, output: str | None) -> None:
    """Every column of pulled_campaign_results (one row per campaign and recipient), oldest
    changed first (updated_at), as CSV or JSON lines."""
    from sync.ops.pulled import CAMPAIGN_RESULTS

    _run_export(app, CAMPAIGN_RESULTS, _selection(tenant, provider, since), fmt, cursor, output)
