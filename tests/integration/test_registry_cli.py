"""Tenants, connections and master keys through the real command line, on every backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from sync.crypto import generate_key
from sync.models import Base
from tests.cli_runner import Result, run_cli

SECRET = "Pc-s3cr3t-Ünlü-pässwörd-4242"


@pytest.fixture
def env(engine: sa.Engine, db_url: str) -> dict[str, str]:
    return {"CRM_ESP_SYNC_DATABASE_URL": db_url, "CRM_ESP_SYNC_MASTER_KEY": generate_key(),
            "CRM_ESP_SYNC_LOG_FORMAT": "json"}


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: dict[str, str]):  # type: ignore[no-untyped-def]
    def invoke(*args: str, stdin: str = "", **overrides: str) -> Result:
        return run_cli(monkeypatch, capsys, {**env, **overrides}, *args, stdin=stdin)
    return invoke


def dump_database(engine: sa.Engine) -> str:
    """Every value of every table as text: what an attacker with the database file sees."""
    parts = []
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            parts.extend(repr(tuple(row)) for row in conn.execute(sa.select(table)))
    return "\n".join(parts)


def row_counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t.name: conn.scalar(sa.select(sa.func.count()).select_from(t)) or 0
                for t in Base.metadata.sorted_tables}


def test_tenant_add_list_remove(cli, engine: sa.Engine) -> None:  # type: ignore[no-untyped-def]
    assert cli("tenant", "add", "acme", "--name", "Acme Ticaret A.Ş.").code == 0
    listed = cli("tenant", "list")
    assert listed.code == 0 and "Acme Ticaret A.Ş." in listed.out
    assert cli("tenant", "remove", "acme", "--yes").code == 0
    assert row_counts(engine)["tenants"] == 0


def test_secret_given_to_connection_add_is_nowhere_in_clear(cli, engine: sa.Engine) -> None:  # type: ignore[no-untyped-def]
    """The password is encrypted at rest, masked in `connection list`, absent from all output."""
    cli("tenant", "add", "acme")
    added = cli("connection", "add", "acme", "postacell", "--credentials", "-",
                stdin=json.dumps({"username": "acme-user", "password": SECRET}))
    listed = cli("connection", "list")
    assert added.code == 0 and listed.code == 0
    assert "acme-user" in listed.out and "****" in listed.out
    for text in (added.out, added.err, listed.out, listed.err, dump_database(engine)):
        assert SECRET not in text
        assert SECRET[:10] not in text
    if engine.url.get_backend_name() == "sqlite":      # the file itself, pages and free space included
        raw = Path(str(engine.url.database)).read_bytes()
        assert SECRET.encode() not in raw and SECRET[:10].encode() not in raw


def test_connection_rotate_replaces_credentials(cli, engine: sa.Engine) -> None:  # type: ignore[no-untyped-def]
    cli("tenant", "add", "acme")
    cli("connection", "add", "acme", "wapcrm", "--credentials", "-", stdin='{"secret_key": "first-key-0001"}')
    with engine.connect() as conn:
        before = conn.scalar(sa.text("select credentials_encrypted from connections"))
    rotated = cli("connection", "rotate", "acme", "wapcrm", "--credentials", "-",
                  stdin='{"secret_key": "second-key-0002"}')
    with engine.connect() as conn:
        after = conn.scalar(sa.text("select credentials_encrypted from connections"))
    assert rotated.code == 0 and before != after
    assert "second-key-0002" not in dump_database(engine)


def test_master_key_rotation_re_encrypts_everything(cli, env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """NEW,OLD reads both; after `keys rotate`, NEW alone decrypts and OLD alone no longer does."""
    old, new = env["CRM_ESP_SYNC_MASTER_KEY"], generate_key()
    cli("tenant", "add", "acme")
    cli("connection", "add", "acme", "postatr", "--credentials", "-",
        stdin='{"username": "u", "password": "pw-123456", "encrypted_id": "12FD8A5F-2H34"}')
    cli("integrator", "set", "euromsg", "--credentials", "-", stdin='{"client_name": "crm", "password": "int-pw-9"}')
    rotated = cli("keys", "rotate", CRM_ESP_SYNC_MASTER_KEY=f"{new},{old}")
    assert rotated.code == 0 and "2 credential" in rotated.out
    assert cli("connection", "list", CRM_ESP_SYNC_MASTER_KEY=new).code == 0
    stale = cli("connection", "list", CRM_ESP_SYNC_MASTER_KEY=old)
    assert stale.code != 0 and "master key" in stale.err


BAD_INPUTS = {
    "unknown provider": (("connection", "add", "acme", "sendgrid", "--credentials", "-"), "{}", {}),
    "duplicate tenant": (("tenant", "add", "acme"), "", {}),
    "missing credential field": (("connection", "add", "acme", "postatr", "--credentials", "-"),
                                 '{"username": "u", "password": "p"}', {}),
    "malformed JSON": (("connection", "add", "acme", "postacell", "--credentials", "-"), '{"username": ', {}),
    "missing master key": (("connection", "add", "acme", "wapcrm", "--credentials", "-"),
                           '{"secret_key": "abcdef12"}', {"CRM_ESP_SYNC_MASTER_KEY": ""}),
    "wrong master key": (("connection", "list",), "", {"CRM_ESP_SYNC_MASTER_KEY": generate_key()}),
    "malformed master key": (("connection", "list",), "", {"CRM_ESP_SYNC_MASTER_KEY": "not-a-key"}),
    "unreachable database": (("tenant", "list"), "",
                             {"CRM_ESP_SYNC_DATABASE_URL": "postgresql://postgres@127.0.0.1:9/nowhere"}),
    "bad setting": (("tenant", "list"), "", {"CRM_ESP_SYNC_LOOKBACK_SECONDS": "soon"}),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_clear_line_and_changes_nothing(cli, engine: sa.Engine, case: str) -> None:  # type: ignore[no-untyped-def]
    cli("tenant", "add", "acme")
    cli("connection", "add", "acme", "wapcrm", "--credentials", "-", stdin='{"secret_key": "existing-key-1"}')
    before = dump_database(engine)
    args, stdin, overrides = BAD_INPUTS[case]
    if overrides.get("CRM_ESP_SYNC_MASTER_KEY") == "":
        overrides = {k: v for k, v in overrides.items() if k != "CRM_ESP_SYNC_MASTER_KEY"}
        result = cli(*args, stdin=stdin, CRM_ESP_SYNC_MASTER_KEY_FILE="/nonexistent/master.key")
    else:
        result = cli(*args, stdin=stdin, **overrides)
    assert result.code != 0
    assert "Traceback" not in result.err + result.out
    error_lines = [line for line in result.err.splitlines() if line.startswith(("crm-esp-sync: error:", "Error:"))]
    assert len(error_lines) == 1, result.err
    assert dump_database(engine) == before


def test_connection_set_changes_schedule_and_enabled_and_refuses_a_bad_cron(cli, engine: sa.Engine) -> None:  # type: ignore[no-untyped-def]
    cli("tenant", "add", "acme")
    cli("connection", "add", "acme", "wapcrm", "--credentials", "-", stdin='{"secret_key": "k-123456"}')
    changed = cli("connection", "set", "acme", "wapcrm", "--schedule", "0 4 * * 1-5", "--disable")
    assert changed.code == 0 and "0 4 * * 1-5" in changed.out and "disabled" in changed.out
    bad = cli("connection", "set", "acme", "wapcrm", "--schedule", "every night")
    assert bad.code == 2 and "not valid" in bad.err
    with engine.connect() as conn:
        assert conn.execute(sa.text("select schedule, enabled from connections")).one() == ("0 4 * * 1-5", False)
