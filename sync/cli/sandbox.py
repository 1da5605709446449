"""Commands to try it: ``sandbox serve``, ``demo``."""

from __future__ import annotations

from pathlib import Path

import click

from sync.cli.app import (
    App,
    cli,
    pass_app,
)
from sync.errors import ConfigurationError

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


