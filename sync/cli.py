"""The command line: ``crm-esp-sync`` (also ``python -m sync``).

Every expected failure (bad input, missing key, unreachable database) is one line on stderr
and a non-zero exit; nothing is changed by a command that fails.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import click
import sqlalchemy as sa
import structlog
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session, sessionmaker

from sync import db, registry
from sync.config import Settings, load_settings
from sync.crypto import Vault, generate_key
from sync.errors import ConfigurationError, CredentialsError, SyncError
from sync.logs import SECRETS, configure_logging
from sync.providers.specs import PROVIDERS, get_spec

EXIT_FAILURE = 1
EXIT_USAGE = 2


@dataclass
class App:
    """What a command needs, built lazily from the settings loaded at start.

    Settings are loaded (and logging configured) when a command that takes the App starts; a
    command that needs none (``keys generate``, ``sandbox serve``) works whatever they say.
    """

    config_file: str | None = None
    out: Console = field(default_factory=lambda: Console(highlight=False, width=None if sys.stdout.isatty() else 240))
    _settings: Settings | None = None
    _engine: sa.Engine | None = None

    @property
    def settings(self) -> Settings:
        return self.load_settings()

    def load_settings(self) -> Settings:
        """Load and check the settings once, register the master keys as secrets, set up logging."""
        if self._settings is None:
            settings = load_settings(config_file=self.config_file)
            SECRETS.register(*(key.reveal() for key in settings.master_keys))
            configure_logging(settings.log_level, settings.log_format)
            self._settings = settings
        return self._settings

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = db.create_engine(self.settings.database_url)
        return self._engine

    def migrated_engine(self) -> sa.Engine:
        db.require_current_schema(self.engine)
        return self.engine

    def sessions(self) -> sessionmaker[Session]:
        return db.session_factory(self.migrated_engine())

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with db.transaction(self.sessions()) as session:
            yield session

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def vault(self) -> Vault:
        return Vault(self.settings.require_master_keys())


def pass_app(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give the command the App with its settings loaded: a bad setting fails before any work."""

    @functools.wraps(command)
    def with_app(*args: Any, **kwargs: Any) -> Any:
        app = click.get_current_context().find_object(App)
        assert app is not None
        app.load_settings()
        return command(app, *args, **kwargs)

    return with_app


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_file", type=click.Path(dir_okay=False), envvar="CRM_ESP_SYNC_CONFIG",
              help="TOML settings file (also CRM_ESP_SYNC_CONFIG). Environment variables win over it.")
@click.version_option(package_name="crm-esp-sync")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None) -> None:
    """Mirror CRM mailing lists and members into email service providers, and pull back
    unsubscribes, İYS consents and campaign reports.

    Settings come from CRM_ESP_SYNC_* variables (DATABASE_URL, CRM_DATABASE_URL, MASTER_KEY or
    MASTER_KEY_FILE, LOG_FORMAT, LOG_LEVEL, ...) and an optional TOML file; see the README.
    """
    app = ctx.obj = App(config_file)
    ctx.call_on_close(app.close)


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
@click.option("--crm-tenant-id", help="check the rows of this CRM tenant id only (default: every tenant)")
@pass_app
def crm_check(app: App, crm_tenant_id: str | None) -> None:
    """Check the three CRM relations against the contract (README, "The CRM source contract"):
    relations, columns and their types, unique ids, updated_at set and not in the future,
    memberships of known lists and members, helpful indexes. One line per problem; exit
    status 2 if the contract does not hold (hints alone exit 0)."""
    from sync.crm import check_contract

    engine = db.create_engine(app.settings.crm_url)
    try:
        problems = check_contract(engine, app.settings.crm, crm_tenant_id)
    finally:
        engine.dispose()
    for problem in problems:
        click.echo(f"{problem.severity}: {problem}")
    errors = sum(p.severity == "error" for p in problems)
    c = app.settings.crm
    click.echo(f"{c.lists}, {c.members}, {c.memberships}: "
               + (f"{errors} problem(s); the daemon will not run until they are fixed" if errors
                  else "the CRM contract holds"))
    if errors:
        sys.exit(EXIT_USAGE)


def _require_contract(app: App, crm_engine: sa.Engine) -> None:
    """What `once` and `run` check at start: the relations, columns and types (a few catalogue
    queries and a read of a few rows), so a misfit is a few lines here, not an SQL error per run."""
    from sync.crm import ContractError, check_contract

    errors = [p for p in check_contract(crm_engine, app.settings.crm, data=False) if p.severity == "error"]
    if errors:
        raise ContractError(errors)


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


# --- tenants --------------------------------------------------------------------------------


@cli.group("tenant")
def tenant_group() -> None:
    """Tenants: the CRM's end users (Son Kullanıcı)."""


@tenant_group.command("add")
@click.argument("slug")
@click.option("--name", help="display name (default: the slug)")
@click.option("--crm-tenant-id", help="the tenant id its CRM rows carry (default: the slug)")
@pass_app
def tenant_add(app: App, slug: str, name: str | None, crm_tenant_id: str | None) -> None:
    """Add the tenant SLUG."""
    with app.transaction() as session:
        tenant = registry.add_tenant(session, slug, name, crm_tenant_id)
        app.out.print(f"tenant {tenant.slug} added (CRM tenant id {tenant.crm_tenant_id})")


@tenant_group.command("list")
@pass_app
def tenant_list(app: App) -> None:
    """List tenants and their connections."""
    table = Table("tenant", "name", "CRM tenant id", "providers")
    with app.transaction() as session:
        for tenant in registry.list_tenants(session):
            table.add_row(tenant.slug, tenant.name, tenant.crm_tenant_id,
                          ", ".join(sorted(c.provider for c in tenant.connections)) or "-")
    app.out.print(table)


@tenant_group.command("remove")
@click.argument("slug")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@pass_app
def tenant_remove(app: App, slug: str, yes: bool) -> None:
    """Remove the tenant SLUG with its connections and sync state (not its CRM rows)."""
    with app.transaction() as session:
        registry.get_tenant(session, slug)
        if not yes:
            click.confirm(f"remove tenant {slug} and all its connections and sync state?", abort=True)
        registry.remove_tenant(session, slug)
    app.out.print(f"tenant {slug} removed")


# --- connections ----------------------------------------------------------------------------

PROVIDER_CHOICE = click.Choice(sorted(PROVIDERS))


def _read_credentials(source: str | None, provider: str, integrator: bool = False) -> dict[str, Any]:
    """Credentials from stdin (``-``), a JSON file, or an interactive prompt; never from argv."""
    spec = get_spec(provider)
    fields = spec.integrator_credentials if integrator else spec.credentials
    if source is None:
        if not sys.stdin.isatty():
            raise CredentialsError("give the credentials with --credentials - (JSON on stdin) or --credentials FILE")
        return {f.name: click.prompt(f"{f.name} ({f.help})", hide_input=f.secret) for f in fields}
    if source == "-":
        text = sys.stdin.read()
        origin = "stdin"
    else:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise CredentialsError(f"cannot read credentials file {source}: {exc.strerror}") from None
        origin = source
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CredentialsError(f"credentials on {origin} are not valid JSON (line {exc.lineno}, column {exc.colno})")\
            from None
    if not isinstance(value, dict):
        raise CredentialsError(f"credentials on {origin} must be a JSON object of field: value")
    return value


def _parse_settings(pairs: tuple[str, ...], settings_json: str | None) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    if settings_json:
        try:
            loaded = json.loads(settings_json)
        except json.JSONDecodeError:
            raise ConfigurationError("--settings-json is not valid JSON") from None
        if not isinstance(loaded, dict):
            raise ConfigurationError("--settings-json must be a JSON object")
        settings.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigurationError(f"--setting must look like key=value: {pair!r}")
        settings[key.strip()] = value
    return settings


credentials_option = click.option(
    "--credentials", "credentials_source", metavar="-|FILE",
    help="JSON object with the provider's credential fields: `-` reads stdin, else a file. "
         "Without it you are prompted. Never pass secrets as arguments.")


@cli.group("connection")
def connection_group() -> None:
    """Connections: one tenant x one provider, with encrypted credentials.

    \b
    Credential fields per provider:
      euromsg         api_key (plus the integrator's client_name/password: `integrator set`)
      postatr         username, password, encrypted_id
      postacell       username, password
      mailmasterplus  username, password
      wapcrm          secret_key
    """


@connection_group.command("add")
@click.argument("tenant")
@click.argument("provider", type=PROVIDER_CHOICE)
@credentials_option
@click.option("--base-url", help="provider address (default: the documented one; point it at a sandbox)")
@click.option("--setting", "settings", multiple=True, metavar="KEY=VALUE", help="provider setting, repeatable")
@click.option("--settings-json", help="provider settings as one JSON object")
@click.option("--schedule", help="cron expression (5 fields) for the daemon; default: the global one")
@click.option("--disabled", is_flag=True, help="add it disabled (the daemon skips it)")
@pass_app
def connection_add(app: App, tenant: str, provider: str, credentials_source: str | None, base_url: str | None,
                   settings: tuple[str, ...], settings_json: str | None, schedule: str | None,
                   disabled: bool) -> None:
    """Connect TENANT to PROVIDER."""
    if schedule:
        _validate_cron(schedule, app.settings.timezone)
    vault = app.vault()
    parsed = _parse_settings(settings, settings_json)
    with app.transaction() as session:
        registry.get_tenant(session, tenant)
        credentials = _read_credentials(credentials_source, provider)
        connection = registry.add_connection(session, vault, tenant, provider, credentials, settings=parsed,
                                             base_url=base_url, schedule=schedule, enabled=not disabled)
        app.out.print(f"connection {tenant}/{provider} added (id {connection.id}, {connection.base_url})")


@connection_group.command("list")
@click.option("--tenant")
@pass_app
def connection_list(app: App, tenant: str | None) -> None:
    """List connections, secrets masked."""
    table = Table("id", "tenant", "provider", "enabled", "schedule", "base url", "credentials", "settings")
    vault = app.vault()
    with app.transaction() as session:
        for view in registry.list_connections(session, vault, tenant):
            table.add_row(str(view.id), view.tenant, view.provider, "yes" if view.enabled else "no",
                          view.schedule or app.settings.default_schedule, view.base_url,
                          " ".join(f"{k}={v}" for k, v in view.credentials.items()),
                          json.dumps(view.settings, ensure_ascii=False))
    app.out.print(table)


@connection_group.command("rotate")
@click.argument("tenant")
@click.argument("provider", type=PROVIDER_CHOICE)
@credentials_option
@pass_app
def connection_rotate(app: App, tenant: str, provider: str, credentials_source: str | None) -> None:
    """Replace the credentials of TENANT's PROVIDER connection."""
    vault = app.vault()
    with app.transaction() as session:
        registry.get_connection(session, tenant, provider)
        registry.rotate_connection(session, vault, tenant, provider, _read_credentials(credentials_source, provider))
    app.out.print(f"connection {tenant}/{provider}: credentials replaced")


@connection_group.command("set")
@click.argument("tenant")
@click.argument("provider", type=PROVIDER_CHOICE)
@click.option("--schedule", help="cron expression (5 fields); `default` for the global DEFAULT_SCHEDULE")
@click.option("--enable/--disable", "enabled", default=None, help="let the daemon run it, or not")
@click.option("--base-url", help="provider address")
@click.option("--setting", "settings", multiple=True, metavar="KEY=VALUE",
              help="provider setting, repeatable; checked as at `add`, the others are kept")
@pass_app
def connection_set(app: App, tenant: str, provider: str, schedule: str | None, enabled: bool | None,
                   base_url: str | None, settings: tuple[str, ...]) -> None:
    """Change TENANT's PROVIDER connection: schedule, enabled, base URL, settings (the daemon picks
    it up; the sync state is kept)."""
    if schedule and schedule != "default":
        _validate_cron(schedule, app.settings.timezone)
    parsed = _parse_settings(settings, None)
    with app.transaction() as session:
        connection = registry.update_connection(session, tenant, provider, schedule=schedule, enabled=enabled,
                                                base_url=base_url, settings=parsed)
        app.out.print(f"connection {tenant}/{provider}: schedule {connection.schedule or 'default'}, "
                      f"{'enabled' if connection.enabled else 'disabled'}, {connection.base_url}, "
                      f"settings {json.dumps(connection.settings, ensure_ascii=False, sort_keys=True)}")


@connection_group.command("remove")
@click.argument("tenant")
@click.argument("provider", type=PROVIDER_CHOICE)
@pass_app
def connection_remove(app: App, tenant: str, provider: str) -> None:
    """Remove TENANT's PROVIDER connection and its sync state."""
    with app.transaction() as session:
        registry.remove_connection(session, tenant, provider)
    app.out.print(f"connection {tenant}/{provider} removed")


@cli.group("integrator")
def integrator_group() -> None:
    """The integrator's own credentials (Euromsg's clientName/password), held once for all tenants."""


@integrator_group.command("set")
@click.argument("provider", type=click.Choice(sorted(n for n, s in PROVIDERS.items() if s.integrator_credentials)))
@credentials_option
@pass_app
def integrator_set(app: App, provider: str, credentials_source: str | None) -> None:
    """Store the integrator credentials for PROVIDER (JSON: client_name, password)."""
    vault = app.vault()
    with app.transaction() as session:
        registry.set_integrator_credentials(session, vault, provider,
                                            _read_credentials(credentials_source, provider, integrator=True))
    app.out.print(f"integrator credentials for {provider} stored")


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


def _validate_cron(expression: str, timezone: str) -> None:
    from sync.scheduler import cron_trigger

    cron_trigger(expression, timezone)


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
         allow_mass_delete: bool = False) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sync.engine.connection_sync import RunOptions
    from sync.engine.runner import run_once

    app.vault()   # a missing or malformed master key fails here, before any run starts
    engine = app.migrated_engine()
    crm_engine = db.create_engine(app.settings.crm_url) if app.settings.crm_database_url else engine
    _require_contract(app, crm_engine)
    show_progress = backfill and app.out.is_terminal
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=app.out, disable=not show_progress) as progress:
        tasks: dict[str, Any] = {}

        def on_progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = progress.add_task(phase, total=total)
            progress.update(tasks[phase], completed=done, total=total)

        results = run_once(app.settings, engine, crm_engine, tenant=tenant, provider=provider,
                           options=RunOptions(dry_run=dry_run, backfill=backfill, allow_mass_delete=allow_mass_delete),
                           on_progress=on_progress)
    if crm_engine is not engine:
        crm_engine.dispose()
    if not results:
        app.out.print("no enabled connection matches")
        return
    (_print_plan if dry_run else _print_results)(app, results)
    from sync.engine.runner import FAILING_STATUSES
    if any(r.status in FAILING_STATUSES for r in results):   # failed, blocked by a live lease, lost_lease
        sys.exit(EXIT_FAILURE)


run_filters = [
    click.option("--tenant", help="only this tenant"),
    click.option("--provider", type=PROVIDER_CHOICE, help="only this provider"),
    click.option("--dry-run", is_flag=True, help="print the plan (lists and members to create, update, remove, "
                 "blocked by suppression) and write nothing; it reads the provider (statuses, lists) so that "
                 "the plan equals the run that follows"),
    click.option("--allow-mass-delete", is_flag=True,
                 help="go on although the run would remove more members or lists than the connection's "
                 "max_delete_members / max_delete_percent settings allow (default 5000 members, 25 %%)"),
]


def _with_run_filters(command: Any) -> Any:
    for option in reversed(run_filters):
        command = option(command)
    return command


@cli.command("once")
@_with_run_filters
@pass_app
def once(app: App, tenant: str | None, provider: str | None, dry_run: bool, allow_mass_delete: bool) -> None:
    """Run every enabled connection now (incremental, from the watermarks), then exit.

    Exit status 1 when a run failed, was blocked by another worker's live lease, lost its lease,
    or stopped before a mass delete; rejected rows do not fail a run (see the rejects table).
    """
    _run(app, tenant, provider, dry_run, backfill=False, allow_mass_delete=allow_mass_delete)


@cli.command("backfill")
@_with_run_filters
@pass_app
def backfill(app: App, tenant: str | None, provider: str | None, dry_run: bool, allow_mass_delete: bool) -> None:
    """Full reconcile: compare EVERY CRM member with what was pushed (ignores watermarks,
    finds hard deletes), with progress bars. Safe to repeat: unchanged rows send nothing."""
    _run(app, tenant, provider, dry_run, backfill=True, allow_mass_delete=allow_mass_delete)


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
    _require_contract(app, crm_engine)
    SyncDaemon(app.settings, engine, crm_engine).run_forever(run_now=run_now)


# --- sandbox and demo -----------------------------------------------------------------------


@cli.group("sandbox")
def sandbox_group() -> None:
    """Local simulators of the providers (the real hosts are not needed to try or test)."""


@sandbox_group.command("serve")
@click.argument("provider", type=click.Choice(["postacell"]))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
@click.option("--account", "accounts", multiple=True, metavar="USER:PASSWORD",
              help="a sandbox login (fake credentials), repeatable; default demo:demo-password")
@click.option("--faults", default="", metavar="SPEC",
              help="deterministic faults, e.g. 'seed=3,error_rate=0.1,rate_limit_every=7,retry_after_s=1,"
                   "drop_rate=0.02,apply_then_drop_rate=0.05,token_expire_after=50,latency_s=0.05' "
                   "(apply_then_drop_rate: a write is applied, then its answer is lost)")
@click.option("--seed", default=0, show_default=True, help="seed of ids and simulated campaign results")
def sandbox_serve(provider: str, host: str, port: int, accounts: tuple[str, ...], faults: str, seed: int) -> None:
    """Serve PROVIDER's sandbox over HTTP until interrupted; point a connection's --base-url at it."""
    from sync.sandbox import SANDBOXES, FaultPlan, serve

    logins: dict[str, str] = {}
    for account in accounts:
        user, sep, password = account.partition(":")
        if not sep or not user.strip() or not password:
            raise ConfigurationError(f"--account must look like USER:PASSWORD, e.g. demo:demo-password "
                                     f"(got {'a value without a colon' if not sep else 'an empty user or password'})")
        logins[user.strip()] = password
    logins = logins or {"demo": "demo-password"}
    try:
        plan = FaultPlan.from_spec(faults) if faults else FaultPlan()
    except ValueError as exc:
        raise ConfigurationError(f"--faults: {exc}") from None
    sandbox = SANDBOXES[provider](logins, faults=plan, seed=seed)
    click.echo(f"{provider} sandbox on http://{host}:{port}/api/v1/ (accounts: {', '.join(logins)}); Ctrl-C stops")
    serve(sandbox.app, host, port)


@cli.command("demo")
@click.option("--workdir", default="demo", show_default=True, type=click.Path(file_okay=False),
              help="where the demo keeps its SQLite database and master key (recreated each time)")
@click.option("--members", default=2000, show_default=True, help="sample members per tenant")
@pass_app
def demo(app: App, workdir: str, members: int) -> None:
    """A full round trip: sample CRM on SQLite -> Postacell sandbox served on localhost -> back."""
    from sync.demo import run_demo

    run_demo(app.settings, Path(workdir), members, app.out)


# --- entry point ----------------------------------------------------------------------------


def _fail(message: str, code: int) -> NoReturn:
    """One line on stderr per line of ``message`` (a contract check may find several problems)."""
    for line in SECRETS.scrub(message).splitlines() or [""]:
        click.echo(f"crm-esp-sync: error: {line}", err=True)
    sys.exit(code)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; turn every expected failure into one line on stderr."""
    try:
        cli.main(args=argv, prog_name="crm-esp-sync", standalone_mode=False)
    except click.exceptions.Abort:
        _fail("aborted", EXIT_FAILURE)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (ConfigurationError, SyncError) as exc:
        _fail(exc.message, EXIT_USAGE if isinstance(exc, ConfigurationError) else EXIT_FAILURE)
    except sa.exc.DBAPIError as exc:    # the driver's first line; never the SQL or its parameters
        _log_traceback()
        _fail(f"database error: {_first_line(exc.orig) if exc.orig else type(exc).__name__}", EXIT_FAILURE)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:  # the entry point: a bug is still one line; its traceback is at debug level
        _log_traceback()
        _fail(f"internal error: {type(exc).__name__}: {_first_line(exc)} (LOG_LEVEL=debug shows the traceback)",
              EXIT_FAILURE)


def _log_traceback() -> None:
    """The traceback of the exception being handled, on the log at debug level (if logging is set up)."""
    if structlog.is_configured():
        structlog.get_logger(__name__).debug("cli.failed", exc_info=True)

