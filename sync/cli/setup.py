"""Commands that set the daemon up: ``db``, ``crm``, ``keys``."""

from __future__ import annotations

import sys

import click

from sync import db, registry
from sync.cli.app import (
    EXIT_FAILURE,
    EXIT_USAGE,
    App,
    cli,
    pass_app,
)
from sync.crypto import generate_key

# --- db -------------------------------------------------------------------------------------


@cli.group("db")
def db_group() -> None:
    """Migrate the daemon's own tables (alembic)."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@pass_app
def db_upgrade(app: App, revision: str) -> None:
    """Apply migrations up to REVISION."""
    db.upgrade(app.engine, revision)
    app.out.print(f"database at revision {db.current_revision(app.engine)}")


@db_group.command("downgrade")
@click.option("--revision", required=True, help="target revision, `base` to drop every table")
@pass_app
def db_downgrade(app: App, revision: str) -> None:
    """Revert migrations down to REVISION."""
    db.downgrade(app.engine, revision)
    app.out.print(f"database at revision {db.current_revision(app.engine) or 'base'}")


@db_group.command("current")
@pass_app
def db_current(app: App) -> None:
    """Print the database's migration revision."""
    app.out.print(db.current_revision(app.engine) or "base (not migrated)")


# --- crm ------------------------------------------------------------------------------------


@cli.group("crm")
def crm_group() -> None:
    """The CRM source relations (reference schema, sample data)."""


@crm_group.command("init-reference")
@pass_app
def crm_init_reference(app: App) -> None:
    """Create the reference CRM tables in the CRM database (never needed for views over a real CRM)."""
    from sync.crm import create_reference_schema

    engine = db.create_engine(app.settings.crm_url)
    create_reference_schema(engine, app.settings.crm)
    engine.dispose()
    c = app.settings.crm
    app.out.print(f"reference CRM tables ready: {c.lists}, {c.members}, {c.memberships}")


@crm_group.command("check")
@click.option("--crm-tenant-id", help="check the rows of this CRM tenant id only, and measure the plans with it "
                                      "(default: every tenant's rows; the plans of the tenant with the most members)")
@pass_app
def crm_check(app: App, crm_tenant_id: str | None) -> None:
    """Check the three CRM relations against the contract (docs/crm-contract.md):
    relations, columns and their types, unique ids, updated_at set and not in the future,
    memberships of known lists and members. Then, on PostgreSQL and MariaDB, EXPLAIN the reads
    a run and a backfill make and warn where a lookup by key scans instead of using an index
    (a cast or a function in a view, a missing index), and, with crm_change_xid, name each table
    a view reads that no trigger-kept change column covers (docs/crm-check.md).

    \b
    One line per problem. Exit status:
      0  the contract holds (hints and notes only)
      1  it holds, with warnings
      2  it does not hold: the daemon will not run until the errors are fixed
    """
    from sync.crm import check_contract

    engine = db.create_engine(app.settings.crm_url)
    try:
        problems = check_contract(engine, app.settings.crm, crm_tenant_id, plans=True)
    finally:
        engine.dispose()
    for problem in problems:
        click.echo(f"{problem.severity}: {problem}")
    errors = sum(p.severity == "error" for p in problems)
    warnings = sum(p.severity == "warning" for p in problems)
    c = app.settings.crm
    click.echo(f"{c.lists}, {c.members}, {c.memberships}: "
               + (f"{errors} problem(s); the daemon will not run until they are fixed" if errors
                  else f"the CRM contract holds, with {warnings} warning(s)" if warnings
                  else "the CRM contract holds"))
    if errors:
        sys.exit(EXIT_USAGE)
    if warnings:
        sys.exit(EXIT_FAILURE)


@crm_group.command("seed")
@click.option("--tenant", "tenants", multiple=True, default=("acme", "anadolu", "bosphorus"), show_default=True)
@click.option("--members", default=2000, show_default=True, help="members per tenant")
@click.option("--seed", default=42, show_default=True)
@pass_app
def crm_seed(app: App, tenants: tuple[str, ...], members: int, seed: int) -> None:
    """Fill the reference CRM tables with sample data (replaces those tenants' CRM rows)."""
    from sync.crm import create_reference_schema
    from sync.sample import seed_crm

    engine = db.create_engine(app.settings.crm_url)
    create_reference_schema(engine, app.settings.crm)
    summary = seed_crm(engine, app.settings.crm, tenants, members, seed=seed)
    engine.dispose()
    app.out.print(
        f"seeded {summary.tenants} tenants: {summary.lists} lists, {summary.members} members, "
        f"{summary.memberships} list memberships ({summary.invalid_emails} invalid e-mails, "
        f"{summary.refused_consent} with İYS RET)"
    )


# --- keys -----------------------------------------------------------------------------------


@cli.group("keys")
def keys_group() -> None:
    """Master keys that encrypt the stored credentials (Fernet)."""


@keys_group.command("generate")
def keys_generate() -> None:
    """Print a new master key (store it in a secret manager or a 0600 file)."""
    click.echo(generate_key())


@keys_group.command("rotate")
@pass_app
def keys_rotate(app: App) -> None:
    """Re-encrypt every credential under the FIRST master key.

    \b
    Without downtime:
      1. give every worker CRM_ESP_SYNC_MASTER_KEY="NEW,OLD" (they read both, write NEW)
      2. run `crm-esp-sync keys rotate`
      3. drop OLD: CRM_ESP_SYNC_MASTER_KEY="NEW"
    """
    vault = app.vault()
    with app.transaction() as session:
        count = registry.rotate_master_keys(session, vault)
    app.out.print(f"re-encrypted {count} credential(s) under the first master key")

