"""`sandbox serve euromsg|mailmasterplus` and `connection test`, through the real command line.

A sandbox is started by the `sandbox serve` command itself (its blocking ``serve`` is replaced by
one that keeps the app), then served over HTTP on localhost; a connection is added with what the
command printed, and `connection test` checks it: one line per check, exit 0 or 1, no secret.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from sync.sandbox import EuromsgSandbox, MailMasterPlusSandbox, PostacellSandbox, sandbox_transport, serve_in_thread
from tests.cli_runner import Result, one_error_line
from tests.conftest import Cli

INTEGRATOR_PASSWORD = "Entegrator-Şifre-9931"
API_KEY = "ege-anahtar-7f3a9c21"
MMP_PASSWORD = "MMP-Gizli-Parola-44"


@contextmanager
def served_by_cli(cli: Cli, started: list[Any], *args: str) -> Iterator[tuple[Result, str]]:
    result = cli("sandbox", "serve", *args, "--port", "8123")
    assert result.code == 0, result.err
    assert len(started) == 1
    with serve_in_thread(started[0].app) as url:
        yield result, url + "/"


def checks_of(result: Result) -> dict[str, str]:
    """`connection test` output: check name -> the rest of its line.

    Lines of the same check (``reads`` has one per call) are joined with " | "; the readings seen
    (``readings: ...``, ``reading changed: ...``) are not checks (``readings_of`` reads them)."""
    checks: dict[str, str] = {}
    for line in (line.strip() for line in result.out.splitlines()[1:]):
        if not line or line.startswith(("readings: ", "reading changed: ")):
            continue
        name, rest = line.split(": ", 1)
        checks[name] = f"{checks[name]} | {rest}" if name in checks else rest
    return checks


def readings_of(result: Result) -> str:
    """The ``readings:`` line of `connection test` output ("" when there is none)."""
    return next((line.strip().removeprefix("readings: ") for line in result.out.splitlines()
                 if line.strip().startswith("readings: ")), "")


def test_euromsg_sandbox_served_by_the_cli_and_a_connection_test_that_passes(
        cli: Cli, daemon_env: dict[str, str], started: list[Any]) -> None:
    with served_by_cli(cli, started, "euromsg", "--integrator", f"crm-firma:{INTEGRATOR_PASSWORD}",
                       "--account", API_KEY, "--iys") as (served, base_url):
        assert "euromsg sandbox on http://127.0.0.1:8123/" in served.out and "İYS on" in served.out
        assert INTEGRATOR_PASSWORD not in served.out and API_KEY not in served.out
        sandbox = started[0]
        assert cli("tenant", "add", "ege", env=daemon_env).code == 0
        assert cli("integrator", "set", "euromsg", "--credentials", "-", env=daemon_env,
                   stdin=json.dumps({"client_name": "crm-firma", "password": INTEGRATOR_PASSWORD})).code == 0
        added = cli("connection", "add", "ege", "euromsg", "--base-url", base_url, "--setting", "iys=true",
                    "--credentials", "-", env=daemon_env, stdin=json.dumps({"api_key": API_KEY}))
        assert added.code == 0, added.err
        before = len(sandbox.request_log)
        result = cli("connection", "test", "ege", "euromsg", env=daemon_env)
        assert result.code == 0, result.out + result.err
        checks = checks_of(result)
        # Everything a run reads ("reads"), and which request reading the gateway took.
        assert list(checks) == ["health check", "login", "lists", "campaigns", "İYS", "reads", "request readings"]
        assert all(value.startswith("ok") for value in checks.values()), result.out
        assert "API key identified" in checks["login"] and "sending package active" in checks["login"]
        assert readings_of(result), result.out
        methods = {method for method, path, _ in sandbox.request_log[before:]
                   if path.strip("/") != "tokens" and not sandbox.is_identification(path)}
        assert methods == {"GET"}                                     # read-only
        assert sandbox.write_requests() == 0

        sandbox.set_package(API_KEY, False)
        expired = cli("connection", "test", "ege", "euromsg", env=daemon_env)
        assert expired.code == 1 and "no active sending package" in checks_of(expired)["login"]
        sandbox.set_package(API_KEY, True)

        cli("connection", "rotate", "ege", "euromsg", "--credentials", "-", env=daemon_env,
            stdin=json.dumps({"api_key": "baska-bir-anahtar-55"}))
        wrong = cli("connection", "test", "ege", "euromsg", env=daemon_env)
        assert wrong.code == 1 and checks_of(wrong)["login"].startswith("FAILED: ")
        assert "skipped" in checks_of(wrong)["the other checks"]
        for output in (result, expired, wrong):
            text = output.out + output.err
            assert INTEGRATOR_PASSWORD not in text and API_KEY not in text and "baska-bir-anahtar-55" not in text
            assert "Traceback" not in text


def test_mailmasterplus_sandbox_prints_the_mapping_that_the_connection_takes(
        cli: Cli, daemon_env: dict[str, str], started: list[Any]) -> None:
    with served_by_cli(cli, started, "mailmasterplus", "--account", f"bos-api:{MMP_PASSWORD}",
                       "--list", "L1=Müşteri Listesi", "--list", "L2=Bülten Aboneleri") as (served, base_url):
        assert MMP_PASSWORD not in served.out
        mapping = re.search(r"--setting 'lists=(\{.*\})'", served.out)
        assert mapping is not None, served.out
        lists = json.loads(mapping[1])
        assert lists == {"L1": {"nl_id": 101, "subscribe_form": 201, "update_form": 301, "name": "Müşteri Listesi"},
                         "L2": {"nl_id": 102, "subscribe_form": 202, "update_form": 302, "name": "Bülten Aboneleri"}}
        sandbox = started[0]
        assert sandbox.lists("bos-api") == {"101": "Müşteri Listesi", "102": "Bülten Aboneleri"}
        cli("tenant", "add", "bosphorus", env=daemon_env)
        added = cli("connection", "add", "bosphorus", "mailmasterplus", "--base-url", base_url,
                    "--setting", f"lists={mapping[1]}", "--credentials", "-", env=daemon_env,
                    stdin=json.dumps({"username": "bos-api", "password": MMP_PASSWORD}))
        assert added.code == 0, added.err
        result = cli("connection", "test", "bosphorus", "mailmasterplus", env=daemon_env)
        assert result.code == 0, result.out + result.err
        checks = checks_of(result)
        assert list(checks) == ["login", "list L1 -> 101", "list L2 -> 102", "reads"]
        assert all(value.startswith("ok") for value in checks.values())
        assert sandbox.write_requests() == 0

        sandbox.delete_list("bos-api", 102)                     # the tenant deleted it in the panel
        gone = cli("connection", "test", "bosphorus", "mailmasterplus", env=daemon_env)
        assert gone.code == 1
        assert checks_of(gone)["list L1 -> 101"].startswith("ok")
        assert checks_of(gone)["list L2 -> 102"].startswith("FAILED: ")

        cli("connection", "rotate", "bosphorus", "mailmasterplus", "--credentials", "-", env=daemon_env,
            stdin=json.dumps({"username": "bos-api", "password": "yanlis-parola-12"}))
        wrong = cli("connection", "test", "bosphorus", "mailmasterplus", env=daemon_env)
        assert wrong.code == 1 and checks_of(wrong)["login"].startswith("FAILED: ")
        for output in (result, gone, wrong):
            assert MMP_PASSWORD not in output.out + output.err and "yanlis-parola-12" not in output.out + output.err


def test_a_mailmasterplus_connection_without_a_mapping_fails_its_test(cli: Cli, daemon_env: dict[str, str],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import sync.cli.registry

    sandbox = MailMasterPlusSandbox({"bos-api": MMP_PASSWORD})
    monkeypatch.setattr(sync.cli.registry, "CONNECTION_TEST_TRANSPORT", lambda _c: sandbox_transport(sandbox.app))
    cli("tenant", "add", "bosphorus", env=daemon_env)
    cli("connection", "add", "bosphorus", "mailmasterplus", "--base-url", "http://mmp.test/", "--credentials", "-",
        env=daemon_env, stdin=json.dumps({"username": "bos-api", "password": MMP_PASSWORD}))
    result = cli("connection", "test", "bosphorus", "mailmasterplus", env=daemon_env)
    assert result.code == 1 and "no CRM list is mapped" in checks_of(result)["lists"]


def test_postacell_connection_test_gets_a_token_and_reads_the_list_index(
        cli: Cli, daemon_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    import sync.cli.registry

    sandbox = PostacellSandbox({"acme-api": "Postacell-Şifre-1"})
    monkeypatch.setattr(sync.cli.registry, "CONNECTION_TEST_TRANSPORT", lambda _c: sandbox_transport(sandbox.app))
    cli("tenant", "add", "acme", env=daemon_env)
    cli("connection", "add", "acme", "postacell", "--credentials", "-", env=daemon_env,
        stdin=json.dumps({"username": "acme-api", "password": "Postacell-Şifre-1"}))
    result = cli("connection", "test", "acme", "postacell", env=daemon_env)
    assert result.code == 0, result.out + result.err
    assert list(checks_of(result)) == ["login", "lists", "campaigns"]
    assert checks_of(result)["login"] == "ok (token issued)"
    assert sandbox.write_requests() == 0
    cli("connection", "rotate", "acme", "postacell", "--credentials", "-", env=daemon_env,
        stdin=json.dumps({"username": "acme-api", "password": "yanlis-parola-1"}))
    wrong = cli("connection", "test", "acme", "postacell", env=daemon_env)
    assert wrong.code == 1 and checks_of(wrong)["login"].startswith("FAILED: ")
    assert "yanlis-parola-1" not in wrong.out + wrong.err


def test_euromsg_connection_test_without_integrator_credentials_says_how_to_set_them(
        cli: Cli, daemon_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    import sync.cli.registry

    sandbox = EuromsgSandbox({"crm-firma": INTEGRATOR_PASSWORD}, {API_KEY: "Ege"})
    monkeypatch.setattr(sync.cli.registry, "CONNECTION_TEST_TRANSPORT", lambda _c: sandbox_transport(sandbox.app))
    cli("tenant", "add", "ege", env=daemon_env)
    cli("connection", "add", "ege", "euromsg", "--credentials", "-", env=daemon_env,
        stdin=json.dumps({"api_key": API_KEY}))
    result = cli("connection", "test", "ege", "euromsg", env=daemon_env)
    assert result.code == 1 and "integrator set euromsg" in checks_of(result)["login"]


def test_connection_test_of_a_connection_that_does_not_exist_is_one_line(cli: Cli, daemon_env: dict[str, str]) -> None:
    cli("tenant", "add", "acme", env=daemon_env)
    assert "has no euromsg connection" in one_error_line(cli("connection", "test", "acme", "euromsg", env=daemon_env))


@pytest.mark.parametrize(("args", "expected"), [
    (("euromsg", "--integrator", "nocolon"), "--integrator must look like CLIENT:PASSWORD"),
    (("euromsg", "--integrator", ":password"), "--integrator must look like CLIENT:PASSWORD"),
    (("euromsg", "--account", "user:password"), "--account for euromsg is a tenant's API key"),
    (("euromsg", "--list", "L1=Bülten"), "--list is an option of the mailmasterplus sandbox only"),
    (("mailmasterplus", "--account", "nocolon"), "--account must look like USER:PASSWORD"),
    (("mailmasterplus", "--list", "L1="), "--list must look like [CRM_LIST_ID=]NAME"),
    (("mailmasterplus", "--list", "L1=A", "--list", "L1=B"), "'L1' is given twice"),
    (("mailmasterplus", "--iys"), "--iys is an option of the euromsg sandbox only"),
    (("postacell", "--integrator", "a:b"), "--integrator is an option of the euromsg sandbox only"),
    (("mailmasterplus", "--faults", "nonsense=1"), "--faults"),
])
def test_sandbox_serve_refuses_bad_options_in_one_line(cli: Cli, started: list[Any], args: tuple[str, ...],
                                                      expected: str) -> None:
    result = cli("sandbox", "serve", *args, "--port", "1")
    assert result.code == 2 and expected in one_error_line(result)
    assert "sandbox on" not in result.out and started == []


def test_sandbox_serve_defaults_give_a_usable_login(cli: Cli, started: list[Any]) -> None:
    result = cli("sandbox", "serve", "mailmasterplus", "--port", "1")
    assert result.code == 0 and '"L1": {"nl_id": 101' in result.out
    assert started[0].lists("demo") == {"101": "Müşteri Listesi"}
    result = cli("sandbox", "serve", "euromsg", "--port", "1")
    assert result.code == 0 and "integrators: demo; 1 account(s)" in result.out


def test_connection_test_reads_no_more_than_it_needs(engine: sa.Engine) -> None:
    """The plain function is importable without the CLI, and a test module does not collect it."""
    from sync.ops import connection_test

    assert not any(name.startswith("test_") for name in connection_test.__all__)
