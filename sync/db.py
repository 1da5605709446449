"""Engines, sessions and migrations for the daemon's own database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from sync.errors import ConfigurationError

ROOT = Path(__file__).resolve().parent.parent
_DRIVERS = {"postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql", "mariadb": "mariadb+pymysql"}


def normalise_url(url: str) -> sa.URL:
    """Pick our drivers for bare ``postgresql://`` / ``mysql://`` / ``mariadb://`` URLs."""
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        raise ConfigurationError("database URL is not valid (e.g. sqlite:///sync.db)") from None
    if parsed.drivername in _DRIVERS:
        parsed = parsed.set(drivername=_DRIVERS[parsed.drivername])
    if parsed.get_backend_name() in ("mysql", "mariadb") and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def create_engine(url: str, *, check: bool = True) -> sa.Engine:
    """An engine for ``url``; with ``check``, an unreachable server fails here in one line."""
    parsed = normalise_url(url)
    # hide_parameters: e-mails (personal data) never reach an error message or a log line
    try:
        engine = sa.create_engine(parsed, pool_pre_ping=True, hide_parameters=True)
    except (sa.exc.NoSuchModuleError, ImportError) as exc:
        raise ConfigurationError(f"no driver for {parsed.drivername} databases ({exc}); use sqlite://, "
                                 "postgresql:// (psycopg 3), mysql:// or mariadb:// (PyMySQL)") from None
    if parsed.get_backend_name() == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    if check:
        try:
            with engine.connect():
                pass
        except sa.exc.OperationalError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "connection failed"
            raise ConfigurationError(
                f"cannot reach the database {parsed.render_as_string(hide_password=True)}: {reason}"
            ) from None
    return engine


def session_factory(engine: sa.Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commits on success, rolls back on any error."""
    with factory() as session, session.begin():
        yield session


@contextmanager
def scratch_database(admin_url: str, prefix: str = "scratch") -> Iterator[str]:
    """A new, empty database on the PostgreSQL/MariaDB server of ``admin_url`` (for tests and
    benchmarks), dropped on exit; yields its URL."""
    parsed = normalise_url(admin_url)
    backend = parsed.get_backend_name()
    if backend not in ("postgresql", "mysql", "mariadb"):
        raise ConfigurationError(f"{backend}: scratch databases need PostgreSQL or MariaDB/MySQL")
    admin = create_engine(admin_url).execution_options(isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    quoted = f'"{name}"' if backend == "postgresql" else f"`{name}`"
    create = (f"CREATE DATABASE {quoted} ENCODING 'UTF8' TEMPLATE template0" if backend == "postgresql"
              else f"CREATE DATABASE {quoted} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    with admin.connect() as conn:
        conn.execute(sa.text(create))
    try:
        yield parsed.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            force = " WITH (FORCE)" if backend == "postgresql" else ""
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {quoted}{force}"))
        admin.dispose()


# --- migrations ----------------------------------------------------------------------------


def alembic_config(engine: sa.Engine) -> Config:
    if not (ROOT / "alembic.ini").is_file():
        raise ConfigurationError(f"migrations not found in {ROOT}: install crm-esp-sync from a source checkout "
                                 "with `pip install -e .` (as `make` and deploy/ do)")
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    config = alembic_config(engine)
    with _known_revision(config, revision):
        command.upgrade(config, revision)


def downgrade(engine: sa.Engine, revision: str = "base") -> None:
    config = alembic_config(engine)
    with _known_revision(config, revision):
        command.downgrade(config, revision)


@contextmanager
def _known_revision(config: Config, revision: str) -> Iterator[None]:
    """An unknown or unreachable revision is one line listing the known ones, not alembic's traceback."""
    try:
        yield
    except CommandError as exc:
        known = ", ".join(s.revision for s in ScriptDirectory.from_config(config).walk_revisions())
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigurationError(f"revision {revision!r}: {reason} (known: {known}, head, base)") from None


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def require_current_schema(engine: sa.Engine) -> None:
    """Fail in one line when the database is not migrated to head."""
    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    current = current_revision(engine)
    if current != head:
        raise ConfigurationError(
            f"database schema is at {current or 'nothing'}, expected {head}: run `crm-esp-sync db upgrade`"
        )
