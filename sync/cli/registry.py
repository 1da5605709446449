"""Commands of the registry: ``tenant``, ``connection``, ``integrator``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from sync import registry
from sync.cli.app import (
    PROVIDER_CHOICE,
    App,
    cli,
    pass_app,
    shown,
    validate_cron,
)
from sync.errors import ConfigurationError, CredentialsError
from sync.providers.specs import PROVIDERS, get_spec

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
        app.out.print(f"tenant {tenant.slug} added (CRM tenant id {shown(tenant.crm_tenant_id)})")


@tenant_group.command("list")
@pass_app
def tenant_list(app: App) -> None:
    """List tenants and their connections."""
    table = Table("tenant", "name", "CRM tenant id", "providers")
    with app.transaction() as session:
        for tenant in registry.list_tenants(session):
            table.add_row(tenant.slug, shown(tenant.name), shown(tenant.crm_tenant_id),
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
        validate_cron(schedule, app.settings.timezone)
    vault = app.vault()
    parsed = _parse_settings(settings, settings_json)
    with app.transaction() as session:
        registry.get_tenant(session, tenant)
        credentials = _read_credentials(credentials_source, provider)
        connection = registry.add_connection(session, vault, tenant, provider, credentials, settings=parsed,
                                             base_url=base_url, schedule=schedule, enabled=not disabled)
        app.out.print(f"connection {tenant}/{provider} added (id {connection.id}, {shown(connection.base_url)})")


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
                          shown(view.schedule or app.settings.default_schedule), shown(view.base_url),
                          shown(" ".join(f"{k}={v}" for k, v in view.credentials.items())),
                          shown(json.dumps(view.settings, ensure_ascii=False)))
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
        validate_cron(schedule, app.settings.timezone)
    parsed = _parse_settings(settings, None)
    with app.transaction() as session:
        connection = registry.update_connection(session, tenant, provider, schedule=schedule, enabled=enabled,
                                                base_url=base_url, settings=parsed)
        app.out.print(f"connection {tenant}/{provider}: schedule {connection.schedule or 'default'}, "
                      f"{'enabled' if connection.enabled else 'disabled'}, {shown(connection.base_url)}, "
                      f"settings {shown(json.dumps(connection.settings, ensure_ascii=False, sort_keys=True))}")


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




@connection_group.command("test")
@click.argument("tenant")
@click.argument("provider", type=PROVIDER_CHOICE)
@pass_app
def connection_test(app: App, tenant: str, provider: str) -> None:
    """Log in to PROVIDER as TENANT, make one read-only call per capability and the reads a run
    makes: one line per check, then the reading each answer came in ("readings: endpoint=reading,
    ..."), stored on the connection (`status` shows it). Where the provider's request can take
    several readings (API key in the path or the query, say), the connection's is tried first and
    the others only on 404/405; the one that answered is stored in the connection's settings.
    Exit status 0 when all pass, 1 otherwise. Nothing is written at the provider."""
    from sync.ops.connection_test import run_test

    outcome = run_test(app.settings, app.migrated_engine(), tenant, provider,
                       transport_factory=CONNECTION_TEST_TRANSPORT)
    click.echo(f"connection {tenant}/{provider} at {outcome.base_url}:")
    for line in outcome.lines():
        click.echo(f"  {line}")
    if not outcome.ok:
        sys.exit(1)


#: Tests point ``connection test`` at an in-process sandbox by setting this (None: real HTTP).
CONNECTION_TEST_TRANSPORT: Any = None
