"""The first hour of a new integrator (issue 14), through the real command line.

Each test pins one thing a newcomer met: a command that needs no settings, a CRM contract
checked before it is used, integer CRM ids, one-line errors, settings validated when given,
logs apart from results, and a demo whose story and numbers agree.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from sync import db
from sync.config import CrmSource
from sync.crm import create_reference_schema
from sync.crypto import generate_key
from sync.models import Connection, Watermark
from sync.sandbox import PostacellSandbox, serve_in_thread
from tests.cli_runner import one_error_line
from tests.conftest import Cli

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "İlk-saat-Şifre-2026"


@pytest.fixture
def served() -> Iterator[tuple[PostacellSandbox, str]]:
    sandbox = PostacellSandbox({"acme-api": PASSWORD}, seed=11)
    with serve_in_thread(sandbox.app) as url:
        yield sandbox, f"{url}/api/v1/"


# --- settings-free commands and one-line errors ---------------------------------------------


def test_keys_generate_needs_no_settings_even_when_the_key_file_is_the_empty_redirect_target(
        cli: Cli, tmp_path: Path) -> None:
    """`crm-esp-sync keys generate > "$CRM_ESP_SYNC_MASTER_KEY_FILE"`: the shell creates the file
    empty before the command starts, and bad settings do not matter to it either."""
    key_file = tmp_path / "master.key"
    key_file.write_text("")
    result = cli("keys", "generate", env={"CRM_ESP_SYNC_MASTER_KEY_FILE": str(key_file),
                                          "CRM_ESP_SYNC_LOG_LEVEL": "loud"})
    assert result.code == 0, result.err
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}=\n", result.out) and result.err == ""


@pytest.mark.parametrize("url", ["oracle://x/y", "foo://bar"])
def test_an_unsupported_database_url_is_one_line(cli: Cli, url: str) -> None:
    line = one_error_line(cli("db", "current", env={"CRM_ESP_SYNC_DATABASE_URL": url}))
    assert "database_url" in line and "not supported" in line and "postgresql://" in line


def test_db_downgrade_to_an_unknown_revision_is_one_line_naming_the_known_ones(cli: Cli, daemon_env: dict[str, str],
                                                                             db_url: str) -> None:
    result = cli("db", "downgrade", "--revision", "nope", env=daemon_env)
    line = one_error_line(result)
    assert result.code == 2 and "'nope'" in line and "0001" in line and "base" in line
    engine = db.create_engine(db_url)
    assert db.current_revision(engine) is not None           # nothing was undone
    engine.dispose()


def test_an_unexpected_error_is_one_line_and_its_traceback_only_at_debug_level(
        cli: Cli, daemon_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from sync import registry

    def broken(_session: object) -> list[object]:
        raise RuntimeError("a bug somewhere")

    monkeypatch.setattr(registry, "list_tenants", broken)
    quiet = cli("tenant", "list", env=daemon_env)
    assert "a bug somewhere" in one_error_line(quiet) and quiet.code == 1
    loud = cli("tenant", "list", env={**daemon_env, "CRM_ESP_SYNC_LOG_LEVEL": "debug"})
    logged = [json.loads(line) for line in loud.err.splitlines() if line.startswith("{")]
    assert any("Traceback" in entry.get("exception", "") for entry in logged)
    assert "Traceback" not in loud.out


# --- the CRM contract, checked before it is used ---------------------------------------------


def test_crm_check_names_missing_relations_and_once_fails_with_those_lines(cli: Cli,
                                                                          daemon_env: dict[str, str]) -> None:
    """Before `crm init-reference` (or the views): a line per relation, exit 2, no SQL dump."""
    check = cli("crm", "check", env=daemon_env)
    assert check.code == 2
    for relation in ("crm_lists", "crm_members", "crm_list_members"):
        assert f"error: {relation}: relation does not exist" in check.out
    cli("tenant", "add", "acme", env=daemon_env)
    cli("connection", "add", "acme", "wapcrm", "--credentials", "-", env=daemon_env, stdin='{"secret_key": "k-1234"}')
    for command in (("once", "--dry-run"), ("once",), ("backfill",), ("run",)):
        run = cli(*command, env=daemon_env)
        assert run.code == 2, (command, run)
        assert "Traceback" not in run.out + run.err and "SELECT" not in run.out + run.err
        errors = [line for line in run.err.splitlines() if line.startswith("crm-esp-sync: error:")]
        assert len(errors) == 4 and all("does not exist" in line for line in errors[1:]), run.err
    assert cli("crm", "init-reference", env=daemon_env).code == 0
    fixed = cli("crm", "check", env=daemon_env)
    assert fixed.code == 0 and "the CRM contract holds" in fixed.out and "error:" not in fixed.out


def _create(engine: sa.Engine, *tables: sa.Table) -> None:
    tables[0].metadata.create_all(engine, tables=list(tables))


def test_crm_check_and_once_name_a_missing_column_and_a_type_that_does_not_fit(
        cli: Cli, daemon_env: dict[str, str], db_url: str) -> None:
    engine = db.create_engine(db_url)
    md = sa.MetaData()
    _create(engine,
            sa.Table("crm_lists", md, sa.Column("tenant_id", sa.String(64)), sa.Column("id", sa.String(64)),
                     sa.Column("name", sa.String(255)), sa.Column("updated_at", sa.DateTime)),      # no deleted_at
            sa.Table("crm_members", md, *(sa.Column(c, sa.String(255)) for c in (
                "tenant_id", "id", "email", "first_name", "last_name", "phone", "city", "consent_status",
                "consent_source", "recipient_type")), sa.Column("consent_date", sa.DateTime),
                     sa.Column("updated_at", sa.Integer), sa.Column("deleted_at", sa.DateTime)),   # an epoch number
            sa.Table("crm_list_members", md, sa.Column("tenant_id", sa.String(64)),
                     sa.Column("list_id", sa.Float), sa.Column("member_id", sa.String(64)),       # a float id
                     sa.Column("updated_at", sa.DateTime), sa.Column("deleted_at", sa.DateTime)))
    engine.dispose()
    check = cli("crm", "check", env=daemon_env)
    assert check.code == 2 and "Traceback" not in check.out + check.err
    errors = [line for line in check.out.splitlines() if line.startswith("error:")]
    assert len(errors) == 3, check.out
    assert errors[0].startswith("error: crm_lists.deleted_at: missing column")
    assert errors[1].startswith("error: crm_members.updated_at: type") and "timestamp" in errors[1]
    assert errors[2].startswith("error: crm_list_members.list_id: type") and "integer" in errors[2]
    cli("tenant", "add", "acme", env=daemon_env)
    cli("connection", "add", "acme", "wapcrm", "--credentials", "-", env=daemon_env, stdin='{"secret_key": "k-1234"}')
    once = cli("once", env=daemon_env)
    assert once.code == 2 and "Traceback" not in once.out + once.err
    assert [line.removeprefix("crm-esp-sync: error: ") for line in once.err.splitlines()
            if line.startswith("crm-esp-sync: error:")][1:] == [e.removeprefix("error: ") for e in errors]


def test_crm_check_reports_each_data_problem_in_one_line(cli: Cli, daemon_env: dict[str, str], db_url: str) -> None:
    """Duplicate ids, updated_at NULL or in the future, memberships of unknown lists and members,
    and the indexes that are missing: one line each."""
    engine = db.create_engine(db_url)
    md = sa.MetaData()
    at = sa.Column
    lists = sa.Table("crm_lists", md, at("tenant_id", sa.String(64)), at("id", sa.String(64)),
                     at("name", sa.String(255)), at("updated_at", sa.DateTime), at("deleted_at", sa.DateTime))
    members = sa.Table("crm_members", md, *(at(c, sa.String(255)) for c in (
        "tenant_id", "id", "email", "first_name", "last_name", "phone", "city", "consent_status", "consent_source",
        "recipient_type")), at("consent_date", sa.DateTime), at("updated_at", sa.DateTime),
                       at("deleted_at", sa.DateTime))
    links = sa.Table("crm_list_members", md, at("tenant_id", sa.String(64)), at("list_id", sa.String(64)),
                     at("member_id", sa.String(64)), at("updated_at", sa.DateTime), at("deleted_at", sa.DateTime))
    _create(engine, lists, members, links)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    with engine.begin() as conn:
        conn.execute(lists.insert(), [{"tenant_id": "t1", "id": "L1", "name": "A", "updated_at": now},
                                      {"tenant_id": "t1", "id": "L1", "name": "B", "updated_at": now}])
        conn.execute(members.insert(), [
            {"tenant_id": "t1", "id": "M1", "email": "a@example.com", "updated_at": now},
            {"tenant_id": "t1", "id": "M2", "email": "b@example.com", "updated_at": None},
            {"tenant_id": "t1", "id": "M3", "email": "c@example.com", "updated_at": now + dt.timedelta(hours=3)}])
        conn.execute(links.insert(), [
            {"tenant_id": "t1", "list_id": "L1", "member_id": "M1", "updated_at": now},
            {"tenant_id": "t1", "list_id": "L9", "member_id": "M1", "updated_at": now},
            {"tenant_id": "t1", "list_id": "L1", "member_id": "M7", "updated_at": now}])
    engine.dispose()
    check = cli("crm", "check", env=daemon_env)
    assert check.code == 2 and "Traceback" not in check.out + check.err
    lines = check.out.splitlines()

    def line(prefix: str, *words: str) -> str:
        found = [entry for entry in lines if entry.startswith(prefix) and all(w in entry for w in words)]
        assert len(found) == 1, (prefix, words, check.out)
        return found[0]

    line("error: crm_lists: ids are not unique", "id=L1", "2 rows")
    line("error: crm_members.updated_at: 1 row(s) with updated_at NULL")
    line("error: crm_members.updated_at: 1 row(s) with updated_at in the future", "UTC")
    line("error: crm_list_members.list_id: 1 membership(s) point at lists that do not exist", "L9")
    line("error: crm_list_members.member_id: 1 membership(s) point at members that do not exist", "M7")
    line("hint: crm_members: no index starts with (tenant_id, updated_at)")
    line("hint: crm_list_members: no index starts with (tenant_id, member_id)")
    assert len([entry for entry in lines if entry.startswith("error:")]) == 5, check.out
    scoped = cli("crm", "check", "--crm-tenant-id", "someone-else", env=daemon_env)
    assert scoped.code == 0 and "error:" not in scoped.out     # the data checks cover that tenant only


# --- integer ids in the CRM ---------------------------------------------------------------


def _integer_crm(engine: sa.Engine) -> tuple[sa.Table, sa.Table, sa.Table]:
    """The CRM most schemas have: serial integer keys, tenant id included, naive UTC timestamps."""
    md = sa.MetaData()
    integer = {"type_": sa.Integer, "primary_key": True, "autoincrement": False}
    lists = sa.Table("crm_lists", md, sa.Column("tenant_id", **integer), sa.Column("id", **integer),
                     sa.Column("name", sa.String(255), nullable=False),
                     sa.Column("updated_at", sa.DateTime, nullable=False), sa.Column("deleted_at", sa.DateTime))
    members = sa.Table("crm_members", md, sa.Column("tenant_id", **integer), sa.Column("id", **integer),
                       *(sa.Column(c, sa.String(255)) for c in ("email", "first_name", "last_name", "phone", "city",
                                                                 "consent_status", "consent_source", "recipient_type")),
                       sa.Column("consent_date", sa.DateTime), sa.Column("updated_at", sa.DateTime, nullable=False),
                       sa.Column("deleted_at", sa.DateTime), sa.Index("ix_m_tenant_updated", "tenant_id", "updated_at"))
    links = sa.Table("crm_list_members", md, sa.Column("tenant_id", **integer), sa.Column("list_id", **integer),
                     sa.Column("member_id", **integer), sa.Column("updated_at", sa.DateTime, nullable=False),
                     sa.Column("deleted_at", sa.DateTime),
                     sa.Index("ix_lm_tenant_updated", "tenant_id", "updated_at"),
                     sa.Index("ix_lm_tenant_member", "tenant_id", "member_id"))
    _create(engine, lists, members, links)
    past = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0) - dt.timedelta(days=3)
    with engine.begin() as conn:
        for tenant in (1042, 7):
            conn.execute(lists.insert(), [{"tenant_id": tenant, "id": n, "name": f"Liste {n}", "updated_at": past}
                                          for n in (1, 2)])
            conn.execute(members.insert(), [
                {"tenant_id": tenant, "id": n, "email": f"uye{n}.t{tenant}@ornek.com.tr", "first_name": "Çağlar",
                 "last_name": "Şahin", "consent_status": "ONAY", "consent_source": "HS_WEB",
                 "recipient_type": "BIREYSEL", "consent_date": past, "updated_at": past} for n in range(1, 21)])
            conn.execute(links.insert(), [{"tenant_id": tenant, "list_id": 1 + n % 2, "member_id": n,
                                           "updated_at": past} for n in range(1, 21)])
    return lists, members, links


def test_a_crm_with_integer_ids_syncs_like_one_with_text_ids(cli: Cli, daemon_env: dict[str, str], db_url: str,
                                                             served: tuple[PostacellSandbox, str]) -> None:
    """Integer tenant, list and member ids: checked, pushed, a surname change and a
    membership-only change picked up, then nothing to write; the other tenant is untouched."""
    sandbox, base_url = served
    engine = db.create_engine(db_url)
    _, members, links = _integer_crm(engine)
    env = daemon_env
    check = cli("crm", "check", "--crm-tenant-id", "1042", env=env)
    assert check.code == 0 and "error:" not in check.out, check.out
    assert cli("tenant", "add", "acme", "--crm-tenant-id", "1042", env=env).code == 0
    added = cli("connection", "add", "acme", "postacell", "--base-url", base_url, "--setting", "rate_per_s=0",
                "--credentials", "-", env=env, stdin=json.dumps({"username": "acme-api", "password": PASSWORD}))
    assert added.code == 0, added.err

    first = cli("once", env=env)
    assert first.code == 0 and "succeeded" in first.out, first.out + first.err
    remote = {sub["email"]: sub for sub in sandbox.subscribers("acme-api")}
    assert set(remote) == {f"uye{n}.t1042@ornek.com.tr" for n in range(1, 21)}

    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with engine.begin() as conn:
        conn.execute(members.update().where(members.c.tenant_id == 1042, members.c.id == 5)
                     .values(last_name="Yıldız", updated_at=now))
        conn.execute(links.insert().values(tenant_id=1042, list_id=2, member_id=6, updated_at=now))  # member 6 only
    second = cli("once", env=env)
    assert second.code == 0, second.out + second.err
    assert sandbox.find_subscriber("acme-api", "uye5.t1042@ornek.com.tr")["last_name"] == "Yıldız"  # type: ignore[index]
    six = sandbox.find_subscriber("acme-api", "uye6.t1042@ornek.com.tr")
    assert six is not None and {lst["title"] for lst in six["lists"]} == {"Liste 1", "Liste 2"}

    sandbox.reset_log()
    assert cli("once", env=env).code == 0 and sandbox.write_requests() == 0
    with engine.connect() as conn:
        connection_id = conn.scalar(sa.select(Connection.id))
        assert conn.scalar(sa.select(sa.func.count()).select_from(Watermark)
                           .where(Watermark.connection_id == connection_id)) >= 1
    engine.dispose()


def test_a_text_crm_tenant_id_against_an_integer_tenant_column_fails_the_run_in_one_line(
        cli: Cli, daemon_env: dict[str, str], db_url: str, served: tuple[PostacellSandbox, str]) -> None:
    _, base_url = served
    engine = db.create_engine(db_url)
    _integer_crm(engine)
    engine.dispose()
    cli("tenant", "add", "acme", env=daemon_env)                 # CRM tenant id "acme": not a number
    cli("connection", "add", "acme", "postacell", "--base-url", base_url, "--credentials", "-", env=daemon_env,
        stdin=json.dumps({"username": "acme-api", "password": PASSWORD}))
    once = cli("once", env=daemon_env)
    assert once.code == 1 and "Traceback" not in once.out + once.err
    assert "tenant_id is an integer column" in once.out and "'acme'" in once.out
    check = cli("crm", "check", "--crm-tenant-id", "acme", env=daemon_env)
    assert check.code == 2 and "is not a whole number" in check.out


# --- validate when it is given -------------------------------------------------------------


@pytest.fixture
def registry_env(engine: sa.Engine, db_url: str) -> dict[str, str]:
    return {"CRM_ESP_SYNC_DATABASE_URL": db_url, "CRM_ESP_SYNC_MASTER_KEY": generate_key(),
            "CRM_ESP_SYNC_LOG_FORMAT": "json"}


@pytest.mark.parametrize("setting", ["concurrency=-3", "concurrency=0", "concurrency=2.5", "rate_per_s=-1",
                                     "rate_per_s=fast"])
def test_connection_settings_are_checked_at_add(cli: Cli, registry_env: dict[str, str], engine: sa.Engine,
                                                setting: str) -> None:
    cli("tenant", "add", "acme", env=registry_env)
    result = cli("connection", "add", "acme", "postacell", "--setting", setting, "--credentials", "-",
                 env=registry_env, stdin='{"username": "u", "password": "p-123456"}')
    assert result.code == 2 and setting.split("=", maxsplit=1)[0] in one_error_line(result)
    with engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(Connection)) == 0


def test_connection_set_fixes_a_setting_and_keeps_the_sync_state(cli: Cli, registry_env: dict[str, str],
                                                                engine: sa.Engine) -> None:
    cli("tenant", "add", "acme", env=registry_env)
    cli("connection", "add", "acme", "postacell", "--setting", "rate_per_s=0.5", "--credentials", "-",
        env=registry_env, stdin='{"username": "u", "password": "p-123456"}')
    with engine.begin() as conn:
        connection_id = conn.scalar(sa.select(Connection.id))
        conn.execute(sa.insert(Watermark).values(connection_id=connection_id, stream="members",
                                                 value="2026-01-01T00:00:00+00:00"))
    bad = cli("connection", "set", "acme", "postacell", "--setting", "concurrency=-1", env=registry_env)
    assert bad.code == 2 and "concurrency" in one_error_line(bad)
    fixed = cli("connection", "set", "acme", "postacell", "--setting", "concurrency=8", env=registry_env)
    assert fixed.code == 0, fixed.err
    with engine.connect() as conn:
        assert conn.scalar(sa.select(Connection.settings)) == {"concurrency": 8, "rate_per_s": 0.5,
                                                               "max_delete_members": 5000, "max_delete_percent": 25,
                                                               "fields": {}}
        assert conn.scalar(sa.select(Connection.id)) == connection_id
        assert conn.scalar(sa.select(sa.func.count()).select_from(Watermark)) == 1
    unknown = cli("connection", "set", "acme", "postacell", "--setting", "speed=9", env=registry_env)
    assert unknown.code == 2
    assert "known: concurrency, fields, max_delete_members, max_delete_percent, rate_per_s" in one_error_line(unknown)


@pytest.mark.parametrize("slug", ["bad slug!", "Acme", "-acme", "acme/eu", "a" * 65, ""])
def test_a_tenant_slug_is_lower_case_letters_digits_dash_and_underscore(cli: Cli, registry_env: dict[str, str],
                                                                        engine: sa.Engine, slug: str) -> None:
    line = one_error_line(cli("tenant", "add", "--", slug, env=registry_env))
    assert "slug" in line and "a-z" in line
    assert cli("tenant", "add", "acme-ticaret_2", env=registry_env).code == 0
    with engine.connect() as conn:
        assert conn.scalar(sa.text("select count(*) from tenants")) == 1


def test_a_credential_that_is_not_a_string_says_so(cli: Cli, registry_env: dict[str, str]) -> None:
    cli("tenant", "add", "acme", env=registry_env)
    result = cli("connection", "add", "acme", "postacell", "--credentials", "-", env=registry_env,
                 stdin='{"username": "acme-api", "password": 123}')
    line = one_error_line(result)
    assert "password must be a string" in line and "missing" not in line


def test_an_empty_master_key_file_beside_a_master_key_is_unset(cli: Cli, registry_env: dict[str, str]) -> None:
    env = {**registry_env, "CRM_ESP_SYNC_MASTER_KEY_FILE": ""}
    assert cli("tenant", "add", "acme", env=env).code == 0
    listed = cli("connection", "list", env=env)
    assert listed.code == 0, listed.err


@pytest.mark.parametrize("account", ["nocolon", ":password", "user:"])
def test_sandbox_serve_refuses_an_account_that_is_not_user_colon_password(cli: Cli, account: str) -> None:
    result = cli("sandbox", "serve", "postacell", "--port", "1", "--account", account)
    assert result.code == 2 and "USER:PASSWORD" in one_error_line(result)
    assert "sandbox on" not in result.out


# --- output a person can read -----------------------------------------------------------------


def test_logs_go_to_stderr_and_results_to_stdout(cli: Cli, registry_env: dict[str, str], engine: sa.Engine,
                                                 served: tuple[PostacellSandbox, str]) -> None:
    from sync.sample import seed_crm

    _, base_url = served
    seed_crm(engine, CrmSource(), ["acme"], 20, seed=2)
    cli("tenant", "add", "acme", env=registry_env)
    cli("connection", "add", "acme", "postacell", "--base-url", base_url, "--setting", "rate_per_s=0",
        "--credentials", "-", env=registry_env, stdin=json.dumps({"username": "acme-api", "password": PASSWORD}))
    result = cli("once", env=registry_env)
    assert result.code == 3, result.err                     # success, with the seeded typo as a new reject
    assert "acme" in result.out and not any(line.lstrip().startswith("{") for line in result.out.splitlines())
    events = [json.loads(line)["event"] for line in result.err.splitlines()]
    assert events == ["run.started", "run.finished"]


def test_the_demo_story_agrees_with_its_numbers_and_keeps_logs_out(cli: Cli, tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = cli("demo", "--workdir", str(workdir), "--members", "150", env={"CRM_ESP_SYNC_LOG_FORMAT": "json"})
    assert result.code == 0, result.err
    assert result.err == "" and '"event"' not in result.out
    assert '"run.finished"' in (workdir / "demo.log").read_text(encoding="utf-8")
    told = re.search(r"(\d+) members changed their surname and (\d+) was deleted", result.out)
    assert told is not None, result.out
    first = _rows(result.out[result.out.index("3. First sync"):result.out.index("4. Meanwhile")])
    second = _rows(result.out[result.out.index("5. Second sync"):result.out.index("6. Third sync")])
    third_part = result.out[result.out.index("6. Third sync"):result.out.index("7. What is")]
    third = _rows(third_part)
    acme = second["acme"]
    added, updated, removed = (int(acme[column]) for column in ("added", "updated", "removed"))
    assert (added, updated, removed) == (0, int(told[1]), int(told[2]))
    # Every provider has a tenant; each run of each succeeded; nothing to write the third time, anywhere.
    assert {row["provider"] for row in first.values()} == {"postacell", "euromsg", "mailmasterplus", "postatr",
                                                           "wapcrm"}
    assert all(row["status"] in ("succeeded", "succeeded_with_rejects", "partial")
               for rows in (first, second, third) for row in rows.values())
    assert "provider write requests: 0 (postacell 0, euromsg 0, mailmasterplus 0, wapcrm 0, postatr 0)" in third_part
    assert all(int(row["added"]) + int(row["updated"]) + int(row["removed"]) == 0 for row in third.values())
    # Euromsg with İYS on: each row the story says is wrong is rejected, and shown with its reason.
    from sync.demo import EUROMSG_TENANT, IYS_MISTAKES, MMP_TENANT

    flat = " ".join(result.out.split())       # the story's lines, wrapped at the console's width
    assert first[EUROMSG_TENANT]["provider"] == "euromsg" and int(first[EUROMSG_TENANT]["added"]) > 0
    assert f"{len(IYS_MISTAKES)} of {EUROMSG_TENANT}'s members have İYS data the registry refuses" in flat
    iys_lines = [line for line in result.out.splitlines() if f"reject ({EUROMSG_TENANT}/euromsg, İYS)" in line]
    assert [line.split()[3] for line in iys_lines] == [member_id for member_id, _ in IYS_MISTAKES]
    assert "'HS_INTERNET' is not an İYS source" in iys_lines[0]
    assert "before 2015-05-01 00:00:00" in iys_lines[1] and "HS_2015 needs the date" in iys_lines[2]
    assert int(first[EUROMSG_TENANT]["rejected"]) >= len(IYS_MISTAKES)
    # MailMasterPlus: the CRM lists are mapped to panel lists (none created), members pushed,
    # and the recipient's unsubscribe at MMP pulled back.
    mmp = first[MMP_TENANT]
    assert mmp["provider"] == "mailmasterplus" and mmp["lists+"] == "0" and int(mmp["added"]) > 0
    assert f"{MMP_TENANT}: CRM lists mapped to panel lists L1->101" in flat
    assert f"unsubscribed from {MMP_TENANT}'s MMP list 101" in flat
    assert int(second[MMP_TENANT]["statuses pulled"]) >= 1
    assert "mailmasterplus unsubscribed=1" in flat
    assert "Şifre" not in result.out and "Şifre" not in (workdir / "demo.log").read_text(encoding="utf-8")


def _rows(table: str) -> dict[str, dict[str, str]]:
    """A results table of the demo: tenant -> column -> cell."""
    lines = table.splitlines()
    header = next(line for line in lines if line.startswith("┃"))
    columns = [cell.strip() for cell in header.strip("┃ ").split("┃")]
    rows = {}
    for line in lines:
        if line.startswith("│"):
            cells = [cell.strip() for cell in line.strip("│ ").split("│")]
            rows[cells[0]] = dict(zip(columns, cells, strict=True))
    return rows


def test_pyproject_license_is_an_spdx_expression() -> None:
    """setuptools >= 77 warns on every install about `license = {text = ...}`; a string does not."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert isinstance(project["project"]["license"], str)
    assert any(req.startswith("setuptools>=77") for req in project["build-system"]["requires"])


def test_reference_schema_helpers_still_create_text_ids(engine: sa.Engine) -> None:
    """The reference tables (demo, tests) keep text ids: the integer support is the reader's."""
    columns = {c["name"]: c["type"] for c in sa.inspect(engine).get_columns("crm_members")}
    assert isinstance(columns["id"], sa.String)
    create_reference_schema(engine, CrmSource())        # idempotent on an existing CRM
