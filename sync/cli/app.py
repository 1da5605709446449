"""The command line: ``crm-esp-sync`` (also ``python -m sync``): the App, the root group, the entry point.

Every expected failure (bad input, missing key, unreachable database) is one line on stderr
and a non-zero exit; nothing is changed by a command that fails.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn

import click
import sqlalchemy as sa
import structlog
from rich.console import Console
from sqlalchemy.orm import Session, sessionmaker

from sync import db
from sync.config import Settings, load_settings
from sync.crypto import Vault
from sync.errors import ConfigurationError, SyncError
from sync.logs import SECRETS, configure_logging
from sync.providers.specs import PROVIDERS

EXIT_FAILURE = 1
EXIT_USAGE = 2
#: C0 and C1 control characters but tab: a value from a user, the CRM or a provider shows them as
#: escapes, so it cannot move the cursor, retitle the terminal or hide the rest of a line.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def shown(value: object) -> str:
    """``value`` as plain text for the rich console: its ``[tags]`` are not markup (a tenant named
    ``[/red]`` neither styles the table nor breaks it) and control characters are escaped."""
    from rich.markup import escape

    return escape(_CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", str(value)))
#: ``once``/``backfill``: every run did its work, and at least one rejected rows not rejected before.
EXIT_NEW_REJECTS = 3


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
    MASTER_KEY_FILE, LOG_FORMAT, LOG_LEVEL, ...) and an optional TOML file; see docs/operating.md.
    """
    app = ctx.obj = App(config_file)
    ctx.call_on_close(app.close)


PROVIDER_CHOICE = click.Choice(sorted(PROVIDERS))


def require_contract(app: App, crm_engine: sa.Engine) -> None:
    """What `once` and `run` check at start: the relations, columns and types (a few catalogue
    queries and a read of a few rows), so a misfit is a few lines here, not an SQL error per run."""
    from sync.crm import ContractError, check_contract

    errors = [p for p in check_contract(crm_engine, app.settings.crm, data=False) if p.severity == "error"]
    if errors:
        raise ContractError(errors)


def validate_cron(expression: str, timezone: str) -> None:
    from sync.scheduler import cron_trigger

    cron_trigger(expression, timezone)


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

