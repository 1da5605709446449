"""``crm-esp-sync erasure report``: the KVKK erasure audit."""

from __future__ import annotations

import json

import click
from rich.markup import escape
from rich.table import Table

from sync.cli.app import App, cli, pass_app


@cli.group("erasure")
def erasure_group() -> None:
    """KVKK erasures: a member deleted in the CRM is deleted (or unsubscribed and anonymised, where
    the provider cannot delete) at every provider of the tenant that holds it, and each one is
    recorded: what was sent where, when, and the provider's answer. The address is kept only as
    its SHA-256; --email finds the rows of one address.
    """


@erasure_group.command("report")
@click.option("--tenant", help="only this tenant")
@click.option("--since", help="only erasures from this date (2026-11-30) or ISO time on")
@click.option("--email", help="only erasures of this address (matched by its digest)")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1), help="at most this many rows")
@click.option("--json", "as_json", is_flag=True, help="print a JSON array of audit rows")
@pass_app
def erasure_report(app: App, tenant: str | None, since: str | None, email: str | None, limit: int,
                   as_json: bool) -> None:
    """What was erased where, when, with which answer (oldest first).

    \b
    action: deleted | unsubscribed | anonymised  the provider did it
            not_supported  the provider cannot remove members: an open reject asks a person to
                           remove the address in the provider's panel (`rejects list`)
            failed         the provider refused; the next run tries again (another row)
    """
    from sync.errors import InvalidInputError
    from sync.ops.erasures import erasure_report as report
    from sync.ops.erasures import parse_since, summary

    try:
        start = parse_since(since)
    except InvalidInputError as exc:
        raise click.UsageError(exc.message) from None
    with app.transaction() as session:
        rows = report(session, tenant=tenant, since=start, email=email, limit=limit)
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2, sort_keys=True))
        return
    table = Table("sent at", "tenant", "provider", "member", "list", "action", "remote id", "answer", "e-mail sha256")
    for r in rows:
        table.add_row(r["sent_at"], escape(r["tenant"]), r["provider"], escape(r["crm_member_id"]),
                      escape(r["crm_list_id"] or "-"), r["action"], escape(r["remote_id"] or "-"),
                      escape(r["answer"] or "-"), r["email_sha256"][:16] + "…")
    app.out.print(table)
    app.out.print(summary(rows) + (f" (the first {limit}: --limit shows more)" if len(rows) == limit else ""))
