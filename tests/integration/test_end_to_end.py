"""The real command line against a sandbox served over HTTP on localhost, on every backend."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from sync.config import CrmSource
from sync.crypto import generate_key
from sync.models import SyncRun
from sync.sample import seed_crm
from sync.sandbox import PostacellSandbox, serve_in_thread
from tests.cli_runner import run_cli

PASSWORD = "e2e-Şifre-Gizli-77"


@pytest.fixture
def served() -> Iterator[tuple[PostacellSandbox, str]]:
    sandbox = PostacellSandbox({"acme-api": PASSWORD}, seed=5)
    with serve_in_thread(sandbox.app) as url:
        yield sandbox, f"{url}/api/v1/"


def test_once_over_http_then_nothing_to_write(engine: sa.Engine, db_url: str, served: tuple[PostacellSandbox, str],
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    sandbox, base_url = served
    seed_crm(engine, CrmSource(), ["acme"], 80, seed=3)
    env = {"CRM_ESP_SYNC_DATABASE_URL": db_url, "CRM_ESP_SYNC_MASTER_KEY": generate_key(),
           "CRM_ESP_SYNC_LOG_FORMAT": "json", "CRM_ESP_SYNC_LOG_LEVEL": "debug"}

    def cli(*args: str, stdin: str = ""):  # type: ignore[no-untyped-def]
        return run_cli(monkeypatch, capsys, env, *args, stdin=stdin)

    assert cli("tenant", "add", "acme").code == 0
    added = cli("connection", "add", "acme", "postacell", "--base-url", base_url, "--setting", "rate_per_s=0",
                "--credentials", "-", stdin=json.dumps({"username": "acme-api", "password": PASSWORD}))
    assert added.code == 0, added.err

    dry = cli("once", "--dry-run")
    assert dry.code == 0, dry.err
    assert "members to add" in dry.out and "lists to create" in dry.out
    assert sandbox.write_requests() == 0                               # it reads, it never writes

    first = cli("once")
    assert first.code == 3, first.err                                 # success, with a new reject
    assert "acme" in first.out and "partial" in first.out          # one seeded typo -> one reject
    assert len(sandbox.subscribers("acme-api")) > 60

    sandbox.reset_log()
    second = cli("once", "--tenant", "acme", "--provider", "postacell")
    assert second.code == 0 and sandbox.write_requests() == 0

    for output in (dry, first, second):
        assert PASSWORD not in output.out + output.err                  # debug logs included
    with engine.connect() as conn:
        kinds = [row.kind for row in conn.execute(sa.select(SyncRun.kind).order_by(SyncRun.id))]
    assert kinds == ["dry-run", "sync", "sync"]


def test_bad_credentials_fail_the_run_in_one_line(engine: sa.Engine, db_url: str,
                                                  served: tuple[PostacellSandbox, str],
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    _, base_url = served
    env = {"CRM_ESP_SYNC_DATABASE_URL": db_url, "CRM_ESP_SYNC_MASTER_KEY": generate_key(),
           "CRM_ESP_SYNC_LOG_FORMAT": "json"}
    run_cli(monkeypatch, capsys, env, "tenant", "add", "acme")
    run_cli(monkeypatch, capsys, env, "connection", "add", "acme", "postacell", "--base-url", base_url,
            "--credentials", "-", stdin='{"username": "acme-api", "password": "yanlis-parola-1"}')
    result = run_cli(monkeypatch, capsys, env, "once")
    assert result.code == 1
    assert "failed" in result.out and "login failed" in result.out
    assert "yanlis-parola-1" not in result.out + result.err
    assert "Traceback" not in result.out + result.err
