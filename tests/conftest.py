"""Shared fixtures: a clean database per test on SQLite, PostgreSQL and MariaDB.

PostgreSQL and MariaDB come from CRM_ESP_SYNC_TEST_POSTGRES_URL / CRM_ESP_SYNC_TEST_MARIADB_URL;
without them a testcontainers server is started where Docker answers; otherwise those
parameters skip, saying why. CI (`.ci/run`) always sets both URLs.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import structlog

from sync import db
from sync.config import CrmSource
from sync.crm import create_reference_schema
from sync.crypto import generate_key
from tests.cli_runner import Result, run_cli

BACKENDS = ("sqlite", "postgresql", "mariadb")
ENV = {"postgresql": "CRM_ESP_SYNC_TEST_POSTGRES_URL", "mariadb": "CRM_ESP_SYNC_TEST_MARIADB_URL"}


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """The CLI configures structlog onto the (captured) stderr; never let that outlive a test."""
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


#: The tiers (tests/README.md): ``check`` is the loop before every commit (the unit tests and the
#: shared provider suite on SQLite), ``rest`` is everything else, ``all`` both (what CI runs).
TIERS = ("check", "rest", "all")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--tier", choices=TIERS, default="all",
                     help="check: unit tests and the shared provider suite on SQLite (the loop before every "
                          "commit); rest: everything else (server databases, processes, the CLI); all: both")


def in_check_tier(item: pytest.Item) -> bool:
    """Unit tests, and the shared provider suite (tests/integration/providers) where it runs on SQLite
    or on no database at all."""
    path = str(item.path).replace(os.sep, "/")
    if "/tests/unit/" in path:
        return True
    if "/tests/integration/providers/" not in path:
        return False
    params = getattr(item, "callspec", None)
    return params is None or params.params.get("db_url", "sqlite") == "sqlite"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.integration)
    tier = config.getoption("--tier")
    if tier == "all":
        return
    kept, dropped = [], []
    for item in items:
        (kept if in_check_tier(item) == (tier == "check") else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def _docker_answers() -> bool:
    """Does a Docker engine answer? (Checked on its socket, so no client object leaks.)"""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return True    # a remote engine: let testcontainers try it
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(3)
        try:
            probe.connect(host.removeprefix("unix://"))
            probe.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return probe.recv(16).startswith(b"HTTP/")
        except OSError:
            return False


class Servers:
    """Admin URL per backend, found lazily: env var, else a testcontainers server, else None."""

    def __init__(self) -> None:
        self.urls: dict[str, str | None] = {}
        self.containers: list[Any] = []

    def url(self, backend: str) -> str | None:
        if backend not in self.urls:
            self.urls[backend] = os.environ.get(ENV[backend]) or self._container(backend)
        return self.urls[backend]

    def _container(self, backend: str) -> str | None:
        if not _docker_answers():
            return None
        if backend == "postgresql":
            from testcontainers.postgres import PostgresContainer

            container: Any = PostgresContainer("postgres:16-alpine", driver="psycopg")
        else:
            from testcontainers.mysql import MySqlContainer

            container = MySqlContainer("mariadb:11", username="root", password="test")
        container.start()
        self.containers.append(container)
        return str(container.get_connection_url())


@pytest.fixture(scope="session")
def server_urls() -> Iterator[Servers]:
    servers = Servers()
    yield servers
    for container in servers.containers:
        container.stop()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path, server_urls: Servers) -> Iterator[str]:
    """URL of a new, empty database on each backend."""
    backend = request.param
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'sync.db'}"
        return
    admin_url = server_urls.url(backend)
    if admin_url is None:
        pytest.skip(f"{backend}: {ENV[backend]} is not set and Docker does not answer (testcontainers)")
    with db.scratch_database(admin_url, prefix="t") as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file with the reference CRM schema per test process, copied for each test
    that wants one: the same migrations (tests/integration/test_migrations.py runs them on every
    backend), run once instead of a thousand times."""
    path = tmp_path_factory.mktemp("template") / "migrated.db"
    engine = db.create_engine(f"sqlite:///{path}")
    db.upgrade(engine)
    create_reference_schema(engine, CrmSource())
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_template(server_urls: Servers) -> Iterator[str]:
    """The same on PostgreSQL: one migrated database per test process, the template each test's
    database is created from (``CREATE DATABASE ... TEMPLATE``: an exact copy, constraints and all)."""
    admin_url = server_urls.url("postgresql")
    assert admin_url is not None
    admin = db.create_engine(admin_url).execution_options(isolation_level="AUTOCOMMIT")
    name = f"tmpl_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" ENCODING \'UTF8\' TEMPLATE template0'))
    try:
        engine = db.create_engine(db.normalise_url(admin_url).set(database=name).render_as_string(hide_password=False))
        db.upgrade(engine)
        create_reference_schema(engine, CrmSource())
        engine.dispose()
        yield name
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def engine(db_url: str, request: pytest.FixtureRequest, server_urls: Servers) -> Iterator[sa.Engine]:
    """A migrated database with the reference CRM schema beside the daemon's tables."""
    if db_url.startswith("sqlite:///"):
        shutil.copyfile(request.getfixturevalue("sqlite_template"), db_url.removeprefix("sqlite:///"))
        engine = db.create_engine(db_url)
    elif db.normalise_url(db_url).get_backend_name() == "postgresql":
        # The scratch database db_url made, made again from the migrated template.
        template = request.getfixturevalue("postgres_template")
        name = db.normalise_url(db_url).database
        admin = db.create_engine(server_urls.url("postgresql") or "").execution_options(isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{name}"'))
            conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
        admin.dispose()
        engine = db.create_engine(db_url)
    else:
        engine = db.create_engine(db_url)
        db.upgrade(engine)
        create_reference_schema(engine, CrmSource())
    yield engine
    engine.dispose()


# --- the command line, as a user runs it ------------------------------------------------------

Cli = Callable[..., Result]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """The real entry point in-process, with the given environment only (every CRM_ESP_SYNC_* of the
    shell is dropped): ``cli("tenant", "add", "acme", env=..., stdin=...)``."""
    def invoke(*args: str, env: dict[str, str] | None = None, stdin: str = "") -> Result:
        return run_cli(monkeypatch, capsys, env or {}, *args, stdin=stdin)
    return invoke


@pytest.fixture
def daemon_env(db_url: str) -> dict[str, str]:
    """A migrated daemon database WITHOUT any CRM relation on each backend, and the settings that
    point at it (a new master key, JSON logs)."""
    engine = db.create_engine(db_url)
    db.upgrade(engine)
    engine.dispose()
    return {"CRM_ESP_SYNC_DATABASE_URL": db_url, "CRM_ESP_SYNC_MASTER_KEY": generate_key(),
            "CRM_ESP_SYNC_LOG_FORMAT": "json"}


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """`sandbox serve` builds its sandbox and returns instead of serving forever: the sandboxes it
    built, in order (serve each with ``serve_in_thread(sandbox.app)``). At the end, every sandbox
    built was also handed to ``serve``: the command did not stop between the two."""
    import sync.cli.sandbox
    import sync.sandbox

    built: list[Any] = []
    served: list[Any] = []
    build = sync.cli.sandbox.build_sandbox

    def keep(*args: Any, **kwargs: Any) -> Any:
        sandbox, base_url, lines = build(*args, **kwargs)
        built.append(sandbox)
        return sandbox, base_url, lines

    monkeypatch.setattr(sync.cli.sandbox, "build_sandbox", keep)
    monkeypatch.setattr(sync.sandbox, "serve", lambda app, host, port: served.append(app))
    yield built
    assert [sandbox.app for sandbox in built] == served
