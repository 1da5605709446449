"""Issue 22, the provider-neutral part: `connection test` reads what a run reads, prints the reading
each answer came in and stores it on the connection; `status` shows it; a run whose answers change
reading says so in one line; a request reading is found by falling back on 404/405, on reads only.

The provider is Postacell's client with readings on its index calls (``reading_provider``), put in
Postacell's place in ``IMPLEMENTATIONS``; the sandbox answers through an httpx MockTransport in the
reading each test picks. On every database.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, replace
from typing import Any

import pytest
import sqlalchemy as sa
import structlog.testing

import sync.cli.registry
from sync import db, registry
from sync.config import CrmSource, Secret, Settings
from sync.crypto import Vault, generate_key
from sync.engine.connection_sync import RunOptions
from sync.engine.runner import RunResult, run_connection
from sync.http import HttpPolicy
from sync.models import Connection
from sync.providers.base import IMPLEMENTATIONS
from sync.providers.specs import PROVIDERS
from sync.sample import seed_crm
from sync.sandbox import PostacellSandbox
from tests.cli_runner import Result, run_cli
from tests.integration.reading_provider import BARE, ENVELOPE, INDEX_PATH_SETTING, ShapedServer

PASSWORD = "Okuma-Şifresi-2026"
FAST = HttpPolicy(backoff_base_s=0.001, backoff_max_s=0.01, max_attempts=4)
LISTS = "GET email/list-filter/"
CAMPAIGNS = "GET email/cmp-filter"
READ_ONLY = frozenset({"GET", "HEAD"})
#: Outcomes of a run that did its work (the sample CRM has a mistyped address: a reject).
DONE = ("succeeded", "succeeded_with_rejects", "partial")


@dataclass
class ReadingWorld:
    engine: sa.Engine
    settings: Settings
    server: ShapedServer
    connection_id: int
    cli: Callable[..., Result]

    def run(self, **options: Any) -> RunResult:
        return asyncio.run(run_connection(self.settings, self.engine, self.engine, self.connection_id,
                                          RunOptions(**options), transport_factory=self.server.transport,
                                          http_policy=FAST))

    def stored(self) -> tuple[dict[str, str] | None, dict[str, Any]]:
        """The connection's stored readings and settings."""
        with self.engine.connect() as conn:
            readings, settings = conn.execute(sa.select(Connection.readings, Connection.settings)).one()
        return readings, settings

    def test(self) -> Result:
        result = self.cli("connection", "test", "acme", "postacell")
        assert PASSWORD not in result.out + result.err
        return result


@pytest.fixture
def world(engine: sa.Engine, db_url: str, monkeypatch: pytest.MonkeyPatch,
          capsys: pytest.CaptureFixture[str]) -> ReadingWorld:
    """Tenant acme (20 CRM members) connected to Postacell, whose client keeps readings."""
    monkeypatch.setitem(IMPLEMENTATIONS, "postacell", "tests.integration.reading_provider:ReadingPostacell")
    spec = PROVIDERS["postacell"]
    monkeypatch.setitem(PROVIDERS, "postacell",
                        replace(spec, settings={**spec.settings, "index_path": INDEX_PATH_SETTING}))
    key = generate_key()
    settings = Settings(database_url=db_url, master_keys=(Secret(key),), worker_id="test-host:1")
    seed_crm(engine, CrmSource(), ["acme"], 20, seed=3)
    with db.transaction(db.session_factory(engine)) as session:
        registry.add_tenant(session, "acme")
        connection = registry.add_connection(session, Vault((Secret(key),)), "acme", "postacell",
                                             {"username": "acme-api", "password": PASSWORD},
                                             base_url="http://postacell.test/api/v1/", settings={"rate_per_s": 0})
        session.flush()
        connection_id = connection.id
    server = ShapedServer(PostacellSandbox({"acme-api": PASSWORD}, seed=5))
    monkeypatch.setattr(sync.cli.registry, "CONNECTION_TEST_TRANSPORT", server.transport)
    env = {"CRM_ESP_SYNC_DATABASE_URL": db_url, "CRM_ESP_SYNC_MASTER_KEY": key, "CRM_ESP_SYNC_LOG_FORMAT": "json"}

    def cli(*args: str) -> Result:
        return run_cli(monkeypatch, capsys, env, *args)
    return ReadingWorld(engine, settings, server, connection_id, cli)


def _lines(result: Result) -> list[str]:
    return [line.strip() for line in result.out.splitlines()[1:] if line.strip()]


def _changes(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == "provider.reading_changed"]


# --- connection test -------------------------------------------------------------------------


def test_connection_test_prints_the_reading_of_each_answer_and_stores_it(world: ReadingWorld) -> None:
    """The probe's lines are `reads` checks, the readings seen are one line, and they are stored on
    the connection; nothing is written at the provider."""
    world.server.bare = {"email/list-filter/"}
    assert world.stored()[0] is None
    result = world.test()
    assert result.code == 0, result.out + result.err
    lines = _lines(result)
    assert f"reads: ok ({LISTS}: 0 list(s) (reading: {BARE}))" in lines
    assert f"readings: {CAMPAIGNS}={ENVELOPE}; {LISTS}={BARE}" in lines
    assert not any(line.startswith("reading changed") for line in lines)
    assert world.stored()[0] == {CAMPAIGNS: ENVELOPE, LISTS: BARE}
    writes = [(method, path) for method, path, _ in world.server.requests
              if method not in READ_ONLY and not path.endswith("/token")]
    assert writes == []                                            # read-only, the login aside
    assert "request readings: ok (index_path=list-filter answered)" in lines   # the document's, at once


def test_connection_test_says_which_reading_changed_and_stores_the_new_one(world: ReadingWorld) -> None:
    world.server.bare = {"email/list-filter/"}
    assert world.test().code == 0
    world.server.bare = set()
    result = world.test()
    assert result.code == 0, result.out
    assert f"reading changed: {LISTS}: answered as {ENVELOPE!r}, was {BARE!r}" in _lines(result)
    assert world.stored()[0] == {CAMPAIGNS: ENVELOPE, LISTS: ENVELOPE}


def test_connection_test_falls_back_to_the_request_reading_that_answers_and_stores_it(world: ReadingWorld) -> None:
    """The document's path answers 404, the other one answers: the test says so, stores the working
    value in the connection's settings, and the next test and run use it without a 404."""
    world.server.lists_at = "lists"
    result = world.test()
    assert result.code == 0, result.out
    lines = _lines(result)
    assert ("request readings: ok (index_path=lists answered; tried first: index_path=list-filter: "
            "lists HTTP 404, reads HTTP 404; stored in the connection's settings)") in lines
    assert f"reads: ok ({LISTS}: 0 list(s) (reading: {ENVELOPE}))" in lines
    readings, settings = world.stored()
    assert settings["index_path"] == "lists" and readings == {CAMPAIGNS: ENVELOPE, LISTS: ENVELOPE}
    assert {method for method, path, _ in world.server.requests if not path.endswith("/token")} == {"GET"}

    world.server.requests.clear()
    again = world.test()
    assert again.code == 0 and "request readings: ok (index_path=lists answered)" in _lines(again)
    assert [status for _, _, status in world.server.requests if status == 404] == []
    run = world.run()
    assert run.status in DONE, run.error


def test_connection_test_reports_when_no_request_reading_answers_and_changes_no_setting(
        world: ReadingWorld) -> None:
    world.server.lists_at = None
    result = world.test()
    assert result.code == 1
    lines = _lines(result)
    assert ("request readings: FAILED: no request reading answered every call with other than 404/405 "
            "(index_path=list-filter: lists HTTP 404, reads HTTP 404; index_path=lists: lists HTTP 404, "
            "reads HTTP 404)") in lines
    assert any(line.startswith("lists: FAILED: list index: ") for line in lines)   # the document's reading's
    assert world.stored()[1]["index_path"] == "list-filter"


def test_a_call_missing_in_every_request_reading_does_not_hide_the_one_that_answered_the_rest(
        world: ReadingWorld) -> None:
    """The campaign index answers 404 whatever the reading: the test fails, and still stores the
    request reading that answered every other call."""
    world.server.lists_at = "lists"
    world.server.missing = {"email/cmp-filter"}
    result = world.test()
    assert result.code == 1
    assert ("request readings: FAILED: no request reading answered every call with other than 404/405 "
            "(index_path=list-filter: lists HTTP 404, campaigns HTTP 404, reads HTTP 404; index_path=lists: "
            "campaigns HTTP 404); index_path=lists answered the most: stored in the connection's settings"
            ) in _lines(result)
    assert world.stored()[1]["index_path"] == "lists"


# --- status ----------------------------------------------------------------------------------


def test_status_shows_the_stored_readings(world: ReadingWorld) -> None:
    status = world.cli("status", "--json")
    assert json.loads(status.out)["connections"][0]["readings"] == {}
    world.server.bare = {"email/list-filter/"}
    assert world.test().code == 0
    [connection] = json.loads(world.cli("status", "--json").out)["connections"]
    assert connection["readings"] == {CAMPAIGNS: ENVELOPE, LISTS: BARE}
    table = world.cli("status")
    assert table.code == 0
    assert f"readings: {CAMPAIGNS}={ENVELOPE}; {LISTS}={BARE}" in " ".join(table.out.split())


# --- runs ------------------------------------------------------------------------------------


def test_a_run_whose_answers_change_reading_says_so_in_one_line_and_stores_it(world: ReadingWorld) -> None:
    with structlog.testing.capture_logs() as logs:
        first = world.run()
    assert first.status in DONE, first.error
    assert _changes(logs) == []                                   # nothing stored yet: nothing changed
    assert world.stored()[0] == {CAMPAIGNS: ENVELOPE, LISTS: ENVELOPE}

    world.server.bare = {"email/cmp-filter"}
    with structlog.testing.capture_logs() as logs:
        second = world.run()
    assert second.status in DONE, second.error
    assert [(c["log_level"], c["endpoint"], c["was"], c["now"]) for c in _changes(logs)] == [
        ("warning", CAMPAIGNS, ENVELOPE, BARE)]
    assert world.stored()[0] == {CAMPAIGNS: BARE, LISTS: ENVELOPE}  # kept: the list index was not read

    with structlog.testing.capture_logs() as logs:
        assert world.run().status in DONE
    assert _changes(logs) == []                                   # the same reading again: silent


def test_a_dry_run_says_a_reading_changed_but_stores_nothing(world: ReadingWorld) -> None:
    assert world.run().status in DONE
    world.server.bare = {"email/list-filter/"}
    with structlog.testing.capture_logs() as logs:
        world.run(dry_run=True)
    assert [(c["endpoint"], c["now"]) for c in _changes(logs)] == [(LISTS, BARE)]
    assert world.stored()[0] == {CAMPAIGNS: ENVELOPE, LISTS: ENVELOPE}
