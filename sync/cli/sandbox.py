"""Commands to try it: ``sandbox serve``, ``demo``."""

from __future__ import annotations

import functools
import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from sync.cli.app import (
    App,
    cli,
    pass_app,
)
from sync.errors import ConfigurationError

# --- sandbox and demo -----------------------------------------------------------------------

#: Where each sandbox's API lives under its served address (the path of the documented base URL).
SANDBOX_PATHS = {"postacell": "/api/v1/", "euromsg": "/", "mailmasterplus": "/", "postatr": "/api.asmx/",
                 "wapcrm": "/api/"}


@functools.cache
def sandbox_dialects() -> dict[str, tuple[str, ...]]:
    """Provider -> the readings its sandbox serves (its module's ``DIALECTS``, the default first);
    () for a sandbox that serves one reading and takes no ``dialect``. Imported on first use, not
    when the command line starts."""
    found: dict[str, tuple[str, ...]] = {}
    for provider in SANDBOX_PATHS:
        module = importlib.import_module(f"sync.providers.{provider}.sandbox")
        found[provider] = tuple(getattr(module, "DIALECTS", ()))
    return found


class DialectChoice(click.Choice[str]):
    """Every provider's sandbox dialects, read when they are first needed (help, a given value)."""

    def __init__(self) -> None:
        super().__init__(())

    @property  # type: ignore[override]
    def choices(self) -> Sequence[str]:
        return sorted({dialect for dialects in sandbox_dialects().values() for dialect in dialects})

    @choices.setter
    def choices(self, value: Sequence[str]) -> None:
        """Ignored: the choices come from the sandbox modules."""


class DialectOption(click.Option):
    """``--dialect``, whose help lists each provider's dialects (read when help is shown)."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        listed = "; ".join(f"{provider}: {', '.join(dialects)}" for provider, dialects in sandbox_dialects().items()
                           if dialects)
        self.help = ("the reading the sandbox answers in, one of its provider's (default: the provider's first): "
                     + (listed or "none yet"))
        return super().get_help_record(ctx)


@cli.group("sandbox")
def sandbox_group() -> None:
    """Local simulators of the providers (the real hosts are not needed to try or test)."""


@sandbox_group.command("serve")
@click.argument("provider", type=click.Choice(sorted(SANDBOX_PATHS)))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
@click.option("--account", "accounts", multiple=True, metavar="USER:PASSWORD | API_KEY",
              help="a sandbox login (fake credentials), repeatable: USER:PASSWORD for postacell and "
                   "mailmasterplus (default demo:demo-password), a tenant's API_KEY for euromsg "
                   "(default demo-api-key), a tenant's secret key for wapcrm (default demo-secret-key)")
@click.option("--integrator", "integrators", multiple=True, metavar="CLIENT:PASSWORD",
              help="euromsg: the integrator login (clientName:password), repeatable; default demo:demo-password")
@click.option("--iys", is_flag=True, help="euromsg: every account is an İYS account (İYS fields enforced)")
@click.option("--list", "list_names", multiple=True, metavar="[CRM_LIST_ID=]NAME",
              help="mailmasterplus: a list made 'in the panel' of every account, with a subscribe and an "
                   "update form, repeatable; the `lists` setting to map them is printed at start "
                   "(default: L1=Müşteri Listesi)")
@click.option("--dialect", cls=DialectOption, type=DialectChoice(), default=None, metavar="DIALECT")
@click.option("--faults", default="", metavar="SPEC",
              help="deterministic faults, e.g. 'seed=3,error_rate=0.1,rate_limit_every=7,retry_after_s=1,"
                   "drop_rate=0.02,apply_then_drop_rate=0.05,token_expire_after=50,latency_s=0.05' "
                   "(apply_then_drop_rate: a write is applied, then its answer is lost)")
@click.option("--seed", default=0, show_default=True, help="seed of ids and simulated campaign results")
@click.option("--phone", "phones", multiple=True, metavar="NUMBER",
              help="wapcrm: a customer number (905XXXXXXXXX) with a conversation and messages, repeatable")
def sandbox_serve(provider: str, host: str, port: int, accounts: tuple[str, ...], integrators: tuple[str, ...],
                  iys: bool, list_names: tuple[str, ...], dialect: str | None, faults: str, seed: int,
                  phones: tuple[str, ...]) -> None:
    """Serve PROVIDER's sandbox over HTTP until interrupted; point a connection's --base-url at it."""
    from sync.sandbox import serve

    sandbox, base_url, lines = build_sandbox(provider, host, port, accounts=accounts, integrators=integrators,
                                             iys=iys, list_names=list_names, dialect=dialect, faults=faults,
                                             seed=seed, phones=phones)
    for line in lines:
        click.echo(line)
    click.echo(f"{provider} sandbox on {base_url} (--base-url {base_url}); Ctrl-C stops")
    serve(sandbox.app, host, port)


def _pairs(option: str, values: tuple[str, ...], example: str) -> dict[str, str]:
    """``NAME:PASSWORD`` values as a mapping; one line on the first bad one."""
    shape = "USER:PASSWORD" if option == "--account" else "CLIENT:PASSWORD"
    pairs: dict[str, str] = {}
    for value in values:
        user, sep, password = value.partition(":")
        if not sep or not user.strip() or not password:
            raise ConfigurationError(f"{option} must look like {shape}, e.g. {example} "
                                     f"(got {'a value without a colon' if not sep else 'an empty name or password'})")
        pairs[user.strip()] = password
    return pairs


def _only_for(provider: str, wanted: str, option: str, given: object) -> None:
    if given and provider != wanted:
        raise ConfigurationError(f"{option} is an option of the {wanted} sandbox only, not of {provider}")


def dialect_of(provider: str, dialect: str | None) -> dict[str, Any]:
    """``dialect=`` for PROVIDER's sandbox constructor ({} where its sandbox has one reading only);
    one line when ``dialect`` is not one of that provider's."""
    dialects = sandbox_dialects()[provider]
    if not dialects:
        if dialect is not None:
            raise ConfigurationError(f"--dialect: the {provider} sandbox serves one reading only (got {dialect!r})")
        return {}
    if dialect is None:
        return {"dialect": dialects[0]}
    if dialect not in dialects:
        raise ConfigurationError(f"--dialect {dialect!r} is not a dialect of the {provider} sandbox "
                                 f"(its dialects: {', '.join(dialects)})")
    return {"dialect": dialect}


def mmp_panel_lists(list_names: tuple[str, ...]) -> list[dict[str, Any]]:
    """``--list [CRM_LIST_ID=]NAME`` values as panel lists with ids (nl_id 101, forms 201/301, ...)."""
    lists: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, value in enumerate(list_names or ("L1=Müşteri Listesi",)):
        crm_list, sep, name = value.partition("=")
        if not sep:
            crm_list, name = f"L{number + 1}", value
        crm_list, name = crm_list.strip(), name.strip()
        if not crm_list or not name:
            raise ConfigurationError(f"--list must look like [CRM_LIST_ID=]NAME, e.g. L1=Bülten (got {value!r})")
        if crm_list in seen:
            raise ConfigurationError(f"--list: CRM list id {crm_list!r} is given twice")
        seen.add(crm_list)
        lists.append({"crm_list": crm_list, "nl_id": 101 + number, "subscribe_form": 201 + number,
                      "update_form": 301 + number, "name": name})
    return lists


def build_sandbox(provider: str, host: str, port: int, *, accounts: tuple[str, ...] = (),
                  integrators: tuple[str, ...] = (), iys: bool = False, list_names: tuple[str, ...] = (),
                  dialect: str | None = None, faults: str = "", seed: int = 0,
                  phones: tuple[str, ...] = ()) -> tuple[Any, str, list[str]]:
    """The sandbox ``sandbox serve`` serves, its base URL and the lines it prints at start (no secret)."""
    from sync.sandbox import EuromsgSandbox, FaultPlan, MailMasterPlusSandbox, PostacellSandbox

    _only_for(provider, "euromsg", "--integrator", integrators)
    _only_for(provider, "euromsg", "--iys", iys)
    _only_for(provider, "mailmasterplus", "--list", list_names)
    _only_for(provider, "wapcrm", "--phone", phones)
    try:
        plan = FaultPlan.from_spec(faults) if faults else FaultPlan()
    except ValueError as exc:
        raise ConfigurationError(f"--faults: {exc}") from None
    reading = dialect_of(provider, dialect)
    base_url = f"http://{host}:{port}{SANDBOX_PATHS[provider]}"
    lines: list[str] = []
    sandbox: Any
    if provider == "euromsg":
        keys = [key.strip() for key in accounts]
        if any(not key or ":" in key or any(c.isspace() for c in key) for key in keys):
            raise ConfigurationError("--account for euromsg is a tenant's API key, without spaces or colons, "
                                     "e.g. acme-key-1 (the integrator login is --integrator CLIENT:PASSWORD)")
        logins = _pairs("--integrator", integrators, "demo:demo-password") or {"demo": "demo-password"}
        keys = keys or ["demo-api-key"]
        sandbox = EuromsgSandbox(logins, {key: f"account-{n + 1}" for n, key in enumerate(keys)},
                                 iys_accounts=keys if iys else (), faults=plan, seed=seed, **reading)
        lines.append(f"integrators: {', '.join(logins)}; {len(keys)} account(s) by API key"
                     f"{', İYS on (İYS fields enforced)' if iys else ''}")
    elif provider == "mailmasterplus":
        logins = _pairs("--account", accounts, "demo:demo-password") or {"demo": "demo-password"}
        panel = mmp_panel_lists(list_names)
        sandbox = MailMasterPlusSandbox(logins, faults=plan, **reading)
        for user in logins:
            for item in panel:
                sandbox.add_list(user, item["nl_id"], item["name"], subscribe_form=item["subscribe_form"],
                                 update_form=item["update_form"])
        mapping = {item["crm_list"]: {key: item[key] for key in ("nl_id", "subscribe_form", "update_form", "name")}
                   for item in panel}
        lines.append(f"accounts: {', '.join(logins)}; each has the lists "
                     + ", ".join(f"{item['nl_id']} {item['name']!r} (subscribe form {item['subscribe_form']}, "
                                 f"update form {item['update_form']})" for item in panel)
                     + (f"; answers in the {reading['dialect']!r} dialect" if reading else ""))
        lines.append("map them on the connection (edit the CRM list ids on the left): "
                     f"--setting 'lists={json.dumps(mapping, ensure_ascii=False)}'")
    elif provider == "postatr":
        from sync.sandbox import PostatrSandbox

        logins = _pairs("--account", accounts, "demo:demo-password:DEMO-ENCRYPTED-ID") or {
            "demo": "demo-password:DEMO-ENCRYPTED-ID"}
        if any(":" not in rest or not rest.rpartition(":")[2] for rest in logins.values()):
            raise ConfigurationError("--account for postatr must look like USER:PASSWORD:ENCRYPTED_ID")
        sandbox = PostatrSandbox({user: (rest.rpartition(":")[0], rest.rpartition(":")[2])
                                  for user, rest in logins.items()}, faults=plan, seed=seed, **reading)
        lines.append(f"accounts: {', '.join(logins)} (log in with Username, Password and EncryptedId; tokens "
                     "last 10 minutes)")
    elif provider == "wapcrm":
        from sync.phones import UnusablePhone, normalize_phone
        from sync.sandbox import WapcrmSandbox

        keys = [key.strip() for key in accounts] or ["demo-secret-key"]
        if any(not key or any(c.isspace() for c in key) for key in keys):
            raise ConfigurationError("--account for wapcrm is a tenant's secret key (X-CIB-SecretKey), without spaces")
        try:
            numbers = [normalize_phone(phone) for phone in phones]
        except UnusablePhone as exc:
            raise ConfigurationError(f"--phone: {exc.reason}") from None
        sandbox = WapcrmSandbox({key: f"account-{n + 1}" for n, key in enumerate(keys)}, faults=plan, seed=seed,
                                **reading)
        for key in keys:
            sandbox.seed_activity(key, numbers)
        lines.append(f"{len(keys)} account(s) by secret key (header X-CIB-SecretKey); activity for "
                     f"{len(numbers)} phone(s): {', '.join(numbers) or 'none (use --phone)'}")
    else:
        logins = _pairs("--account", accounts, "demo:demo-password") or {"demo": "demo-password"}
        sandbox = PostacellSandbox(logins, faults=plan, seed=seed, **reading)
        lines.append(f"accounts: {', '.join(logins)}")
    return sandbox, base_url, lines


@cli.command("demo")
@click.option("--workdir", default="demo", show_default=True, type=click.Path(file_okay=False),
              help="where the demo keeps its SQLite database and master key (recreated each time)")
@click.option("--members", default=2000, show_default=True, help="sample members per tenant")
@pass_app
def demo(app: App, workdir: str, members: int) -> None:
    """A full round trip: sample CRM on SQLite -> Postacell, Euromsg and MailMasterPlus sandboxes served on
    localhost -> back."""
    from sync.demo import run_demo

    run_demo(app.settings, Path(workdir), members, app.out)


