"""Issue 22 item 3 through `connection test`: the API key goes as a path variable (the document's
literal reading) and the lists are at ``emailList`` unless the connection says otherwise; where
the gateway answers 404, `connection test` tries the other readings
(``EuromsgProvider.request_fallbacks``), says which one answered and stores it in the
connection's settings; every check stays read-only.

On SQLite only (the database is not what is tested here); the sandbox is served in-process in
each dialect (``sandbox serve euromsg --dialect``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

import sync.cli.registry
from sync.models import Connection
from sync.providers.euromsg import api
from sync.providers.euromsg.sandbox import DIALECT_TABLE, DIALECTS, EuromsgSandbox
from sync.sandbox import sandbox_transport
from tests.conftest import Cli

INTEGRATOR_PASSWORD = "Entegrator-Şifre-5521"
API_KEY = "ege-anahtar-0b7e44d1"


@pytest.fixture
def db_url(tmp_path: Any) -> str:
    """SQLite only (overrides the every-backend fixture of tests/conftest.py)."""
    return f"sqlite:///{tmp_path / 'daemon.db'}"


def checks_of(output: str) -> dict[str, str]:
    checks: dict[str, str] = {}
    for line in (line.strip() for line in output.splitlines()[1:]):
        if not line or line.startswith(("readings: ", "reading changed: ")):
            continue
        name, rest = line.split(": ", 1)
        checks[name] = f"{checks[name]} | {rest}" if name in checks else rest
    return checks


def stored_settings(daemon_env: dict[str, str]) -> dict[str, Any]:
    engine = sa.create_engine(daemon_env["CRM_ESP_SYNC_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return dict(conn.execute(sa.select(Connection.settings)).scalar_one())
    finally:
        engine.dispose()


@pytest.mark.parametrize("dialect", DIALECTS)
def test_connection_test_finds_where_the_gateway_takes_the_api_key_and_stores_it(
        dialect: str, cli: Cli, daemon_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox = EuromsgSandbox({"crm-firma": INTEGRATOR_PASSWORD}, {API_KEY: "Ege"}, dialect=dialect)
    sandbox.create_list(API_KEY, "Panel listesi")
    monkeypatch.setattr(sync.cli.registry, "CONNECTION_TEST_TRANSPORT", lambda _c: sandbox_transport(sandbox.app))
    assert cli("tenant", "add", "ege", env=daemon_env).code == 0
    assert cli("integrator", "set", "euromsg", "--credentials", "-", env=daemon_env,
               stdin=json.dumps({"client_name": "crm-firma", "password": INTEGRATOR_PASSWORD})).code == 0
    added = cli("connection", "add", "ege", "euromsg", "--credentials", "-", env=daemon_env,
                stdin=json.dumps({"api_key": API_KEY}))
    assert added.code == 0, added.err

    result = cli("connection", "test", "ege", "euromsg", env=daemon_env)
    assert result.code == 0, result.out + result.err
    checks = checks_of(result.out)
    wanted, lists_at = DIALECT_TABLE[dialect].api_key_in, DIALECT_TABLE[dialect].list_path
    answered = f"{api.API_KEY_SETTING}={wanted}, {api.LIST_PATH_SETTING}={lists_at}"
    assert checks["request readings"].startswith(f"ok ({answered} answered"), checks["request readings"]
    stored = stored_settings(daemon_env)
    assert (stored[api.API_KEY_SETTING], stored[api.LIST_PATH_SETTING]) == (wanted, lists_at)
    if (wanted, lists_at) == (api.API_KEY_IN_DEFAULT, api.LIST_PATHS[0]):
        assert "tried first" not in checks["request readings"]
    else:       # the document's reading was tried first, answered 404, then the one that answered
        assert (f"tried first: {api.API_KEY_SETTING}=path, {api.LIST_PATH_SETTING}=emailList: "
                f"{'login' if wanted != 'path' else 'lists'} HTTP 404") in checks["request readings"]
        assert "stored in the connection's settings" in checks["request readings"]
    assert f"API key identified as {api.API_KEY_READING_TEXT[wanted]}" in checks["reads"]
    assert "GET emailList: 1 list(s)" in checks["reads"]
    assert sandbox.write_requests() == 0                          # read-only, whichever reading
    assert API_KEY not in result.out + result.err and INTEGRATOR_PASSWORD not in result.out + result.err

    again = cli("connection", "test", "ege", "euromsg", env=daemon_env)   # the stored reading answers first
    assert again.code == 0 and "tried first" not in checks_of(again.out)["request readings"]
