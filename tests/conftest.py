"""Shared fixtures: a clean database per test on SQLite, PostgreSQL and MariaDB.

PostgreSQL and MariaDB come from CRM_ESP_SYNC_TEST_POSTGRES_URL / CRM_ESP_SYNC_TEST_MARIADB_URL;
without them a testcontainers server is started where Docker answers; otherwise those
parameters skip, saying why. CI (`.ci/run`) always sets both URLs.
"""

from __future__ import annotations

import os
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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.integration)


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


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """A migrated database with the reference CRM schema beside the daemon's tables."""
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
