"""Pulled data handed back (docs/pulled-data.md): the pulled_* views, `suppressions list|export` and
`reports export` with named cursors, on every backend, filled by real runs against a Postacell
sandbox served over HTTP."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import sqlalchemy as sa

from sync import db
from sync.config import CrmSource
from sync.crypto import generate_key
from sync.models import Connection, ExportCursor, SyncRun, Tenant, utcnow
from sync.ops.pulled import VIEWS
from sync.sample import seed_crm
from sync.sandbox import PostacellSandbox, serve_in_thread
from tests.cli_runner import one_error_line
from tests.conftest import Cli

DOCS = Path(__file__).resolve().parents[2] / "docs" / "pulled-data.md"
PASSWORD = "pulled-Şifre-42"
ACCOUNT = "acme-api"

#: The views' columns, in order: the interface a CRM reads. Changing one is a decision: change it
#: in a new migration, here, and in docs/pulled-data.md's table of the view, together.
PINNED: dict[str, tuple[str, ...]] = {
    "pulled_suppressions": (
        "id", "tenant", "crm_tenant_id", "provider", "email", "remote_list_id", "crm_list_id", "list_name",
        "remote_id", "status", "occurred_at", "pulled_at"),
    "pulled_iys_consents": (
        "id", "tenant", "crm_tenant_id", "provider", "recipient", "consent_type", "recipient_type", "status",
        "consent_date", "source", "pulled_at"),
    "pulled_campaign_results": (
        "id", "tenant", "crm_tenant_id", "provider", "campaign_remote_id", "campaign_name", "campaign_status",
        "campaign_sent_at", "campaign_final", "email", "sent_at", "opened_at", "open_count", "clicked_at",
        "clicked_link", "bounce_type", "bounce_reason", "unsubscribed_at", "complained_at", "updated_at"),
    "pulled_wapcrm_conversations": (
        "id", "tenant", "crm_tenant_id", "provider", "remote_id", "crm_member_id", "phone", "occurred_at",
        "direction", "ring_seconds", "call_seconds", "transferred", "transferred_to", "result", "sub_result",
        "user_name", "list_name", "pulled_at"),
    "pulled_wapcrm_messages": (
        "id", "tenant", "crm_tenant_id", "provider", "remote_id", "crm_member_id", "phone", "channel",
        "direction", "text", "sent_at", "pulled_at"),
}
#: No view may show a secret, or the connection's settings.
SECRET = re.compile(r"credential|password|secret|token|api_key|settings|base_url|lease", re.IGNORECASE)


def documented_columns() -> dict[str, tuple[str, ...]]:
    """Each view's column names, in order, from its table in docs/pulled-data.md."""
    found: dict[str, tuple[str, ...]] = {}
    for section in re.split(r"\n### ", DOCS.read_text(encoding="utf-8"))[1:]:
        title = re.match(r"`(pulled_\w+)`", section)
        if title is None:
            continue
        found[title[1]] = tuple(re.findall(r"^\| `(\w+)` \|", section, re.MULTILINE))
    return found


def test_views_are_pinned_documented_and_dropped_by_downgrade(db_url: str) -> None:
    engine = db.create_engine(db_url)
    try:
        db.upgrade(engine)
        inspector = sa.inspect(engine)
        assert set(PINNED) <= set(inspector.get_view_names())
        for view, columns in PINNED.items():
            assert tuple(c["name"] for c in inspector.get_columns(view)) == columns, view
            assert not [c for c in columns if SECRET.search(c)], view
        # The CLI reads the views through these definitions, and the docs describe the same columns.
        assert {name: tuple(table.c.keys()) for name, table in VIEWS.tables.items()} == PINNED
        assert documented_columns() == PINNED
        with engine.connect() as conn:       # readable, and empty, on a new database
            for view in PINNED:
                assert conn.execute(sa.text(f"SELECT COUNT(*) FROM {view}")).scalar_one() == 0  # noqa: S608

        db.downgrade(engine, "0008")
        inspector = sa.inspect(engine)
        assert not set(PINNED) & set(inspector.get_view_names())
        assert "export_cursors" not in inspector.get_table_names()
        db.upgrade(engine)
        assert set(PINNED) <= set(sa.inspect(engine).get_view_names())
    finally:
        engine.dispose()


# --- the commands, on rows real runs pulled -------------------------------------------------------


@pytest.fixture
def served() -> Iterator[tuple[PostacellSandbox, str]]:
    sandbox = PostacellSandbox({ACCOUNT: PASSWORD}, seed=11)
    with serve_in_thread(sandbox.app) as url:
        yield sandbox, f"{url}/api/v1/"


def _csv(text: str) -> list[dict[str, str]]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    assert tuple(header) in (PINNED["pulled_suppressions"], PINNED["pulled_campaign_results"])
    return [dict(zip(header, row, strict=True)) for row in reader]


def _view_rows(engine: sa.Engine, view: str) -> list[dict[str, object]]:
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(sa.text(f"SELECT * FROM {view} ORDER BY id"))]  # noqa: S608


def test_suppressions_and_reports_handed_back_once(engine: sa.Engine, db_url: str, cli: Cli, tmp_path: Path,
                                                   served: tuple[PostacellSandbox, str]) -> None:
    sandbox, base_url = served
    seed_crm(engine, CrmSource(), ["acme"], 24, seed=3)
    env = {"CRM_ESP_SYNC_DATABASE_URL": db_url, "CRM_ESP_SYNC_MASTER_KEY": generate_key(),
           "CRM_ESP_SYNC_LOG_FORMAT": "json"}
    assert cli("tenant", "add", "acme", env=env).code == 0
    added = cli("connection", "add", "acme", "postacell", "--base-url", base_url, "--setting", "rate_per_s=0",
                "--credentials", "-", env=env, stdin=json.dumps({"username": ACCOUNT, "password": PASSWORD}))
    assert added.code == 0, added.err
    assert cli("once", env=env).code in (0, 3)

    # What a night brings: one web unsubscribe, and a campaign with its opens, bounces, complaints.
    emails = sorted(sub["email"] for sub in sandbox.subscribers(ACCOUNT) if sub["status"] == "active")
    unsubscribed, later = emails[0], emails[1]
    sandbox.set_status(ACCOUNT, unsubscribed, "unsubscribed")
    sandbox.simulate_campaign(ACCOUNT, rates={"bounce": 0.2, "unsubscribe": 0.1})
    assert cli("once", env=env).code in (0, 3)
    pulled = _view_rows(engine, "pulled_suppressions")
    assert unsubscribed in {row["email"] for row in pulled}
    assert {row["tenant"] for row in pulled} == {"acme"} and {row["provider"] for row in pulled} == {"postacell"}

    # list: the table, and --json
    listed = cli("suppressions", "list", env=env)
    assert listed.code == 0, listed.err
    assert unsubscribed in listed.out and "unsubscribed" in listed.out and f"{len(pulled)} suppression(s)" in listed.out
    as_json = json.loads(cli("suppressions", "list", "--json", "--status", "unsubscribed", env=env).out)
    assert unsubscribed in {row["email"] for row in as_json}
    assert {row["status"] for row in as_json} == {"unsubscribed"}
    assert all(row["pulled_at"].endswith("Z") for row in as_json)

    # export --cursor: every row once, then nothing until a new one is pulled
    first = cli("suppressions", "export", "--format", "csv", "--cursor", "crm", env=env)
    assert first.code == 0, first.err
    exported = _csv(first.out)
    assert sorted((r["email"], r["status"]) for r in exported) == sorted((r["email"], r["status"]) for r in pulled)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r["pulled_at"]) for r in exported)
    again = cli("suppressions", "export", "--format", "csv", "--cursor", "crm", env=env)
    assert again.code == 0 and _csv(again.out) == []

    sandbox.set_status(ACCOUNT, later, "hard_bounce")
    assert cli("once", env=env).code in (0, 3)
    newest = max(_view_rows(engine, "pulled_suppressions"), key=lambda r: (str(r["pulled_at"]), r["id"]))
    assert newest["email"] == later

    # A run still going holds a cursored export back before its start; its end lets the rows through.
    with engine.begin() as conn:
        connection_id = conn.execute(sa.select(Connection.id)).scalar_one()
        conn.execute(sa.insert(SyncRun).values(run_uid=str(uuid.uuid4()), connection_id=connection_id, kind="sync",
                                               status="running", worker="elsewhere",
                                               started_at=utcnow() - dt.timedelta(minutes=5)))
    held = cli("suppressions", "export", "--cursor", "crm", env=env)
    assert held.code == 0 and _csv(held.out) == []
    with engine.begin() as conn:
        conn.execute(sa.update(SyncRun).where(SyncRun.status == "running").values(status="succeeded",
                                                                                   finished_at=utcnow()))
    # A write that fails at its very end (the rename onto FILE: here a directory) moves nothing.
    (tmp_path / "a-directory").mkdir()
    failed = cli("suppressions", "export", "--cursor", "crm", "--output", str(tmp_path / "a-directory"), env=env)
    assert failed.code == 1 and "the cursor did not move" in one_error_line(failed)
    third = cli("suppressions", "export", "--format", "csv", "--cursor", "crm", env=env)
    assert [(r["email"], r["status"]) for r in _csv(third.out)] == [(later, "hard_bounce")]
    assert _csv(cli("suppressions", "export", "--cursor", "crm", env=env).out) == []

    # jsonl parses, with the view's columns; --since filters on pulled_at
    lines = cli("suppressions", "export", "--format", "jsonl", env=env).out.splitlines()
    assert len(lines) == len(pulled) + 1
    assert all(tuple(json.loads(line)) == PINNED["pulled_suppressions"] for line in lines)
    since = newest["pulled_at"]
    since_text = (since if isinstance(since, dt.datetime) else dt.datetime.fromisoformat(str(since))).isoformat()
    only_new = cli("suppressions", "export", "--since", since_text, env=env)
    assert [r["email"] for r in _csv(only_new.out)] == [later]
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).date().isoformat()
    assert _csv(cli("suppressions", "export", "--since", tomorrow, env=env).out) == []
    assert len(_csv(cli("suppressions", "export", "--since", "2020-01-01", "--tenant", "acme",
                        "--provider", "postacell", env=env).out)) == len(pulled) + 1

    # --output: the file, and a line saying where the cursor is; the same cursor again: a header only
    target = tmp_path / "suppressions.csv"
    written = cli("suppressions", "export", "--cursor", "file", "--output", str(target), env=env)
    assert written.code == 0, written.err
    assert f"{len(pulled) + 1} row(s) written to {target}; cursor file at" in written.out
    assert len(_csv(target.read_text(encoding="utf-8"))) == len(pulled) + 1
    assert target.stat().st_mode & 0o077 == 0
    # A cursored export never replaces a file: its rows may not be loaded yet (two nightly runs
    # within the second of their file name lost the first file's rows this way).
    before = target.read_text(encoding="utf-8")
    again = cli("suppressions", "export", "--cursor", "file", "--output", str(target), env=env)
    assert again.code == 1 and "exists" in one_error_line(again) and "the cursor did not move" in again.err
    assert target.read_text(encoding="utf-8") == before
    assert cli("suppressions", "export", "--cursor", "file", "--output", str(tmp_path / "next.csv"), env=env).code == 0
    assert _csv((tmp_path / "next.csv").read_text(encoding="utf-8")) == []
    # Without a cursor an export is a snapshot, and FILE is replaced.
    assert cli("suppressions", "export", "--output", str(target), env=env).code == 0
    assert len(_csv(target.read_text(encoding="utf-8"))) == len(pulled) + 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []    # no partial file left

    # reports export: every result once
    results = _view_rows(engine, "pulled_campaign_results")
    assert results
    report = cli("reports", "export", "--cursor", "crm", env=env)
    assert report.code == 0, report.err
    rows = _csv(report.out)
    assert sorted(r["email"] for r in rows) == sorted(str(r["email"]) for r in results)
    assert {r["campaign_final"] for r in rows} <= {"true", "false"}
    assert any(r["bounce_type"] for r in rows) and any(r["opened_at"].endswith("Z") for r in rows)
    assert _csv(cli("reports", "export", "--cursor", "crm", env=env).out) == []
    jsonl = cli("reports", "export", "--format", "jsonl", env=env).out.splitlines()
    assert len(jsonl) == len(results)
    assert all(tuple(json.loads(line)) == PINNED["pulled_campaign_results"] for line in jsonl)

    with engine.connect() as conn:
        cursors = {(c.name, c.stream): c.rows_exported for c in conn.execute(sa.select(ExportCursor))}
    assert cursors == {("crm", "suppressions"): len(pulled) + 1, ("file", "suppressions"): len(pulled) + 1,
                       ("crm", "campaign_results"): len(results)}


# --- the recipe of docs/pulled-data.md, run as written ---------------------------------------------


def recipe(backend: str) -> dict[str, str]:
    """The blocks under ``<!-- recipe:BACKEND:PART -->`` in docs/pulled-data.md, by part."""
    text = DOCS.read_text(encoding="utf-8")
    return {part: body for found, part, body in re.findall(
        r"<!-- recipe:(\w+):(\w+) -->\n```\w+\n(.*?)\n```", text, re.DOTALL) if found == backend}


def _suppression(conn: sa.Connection, connection_id: int, email: str, status: str, occurred: dt.datetime, *,
                 remote_list_id: str = "") -> None:
    """A row as record_statuses stores it (one per connection, address and scope; pulled_at moves)."""
    from sync.models import MemberStatus

    table = cast(sa.Table, MemberStatus.__table__)
    found = conn.execute(sa.select(table.c.id).where(table.c.connection_id == connection_id, table.c.email == email,
                                                     table.c.remote_list_id == remote_list_id)).first()
    values = {"status": status, "occurred_at": occurred, "pulled_at": utcnow()}
    if found is None:
        tenant_id = conn.execute(sa.select(Connection.tenant_id).where(Connection.id == connection_id)).scalar_one()
        conn.execute(sa.insert(table).values(tenant_id=tenant_id, connection_id=connection_id, email=email,
                                             remote_list_id=remote_list_id, remote_id=None, **values))
    else:
        conn.execute(sa.update(table).where(table.c.id == found.id).values(**values))


@pytest.mark.parametrize("db_url", ["postgresql", "mariadb"], indirect=True)
def test_the_recipe_merges_unsubscribes_into_a_crm_blacklist(db_url: str, daemon_env: dict[str, str],
                                                             tmp_path: Path) -> None:
    """The tables, merge and nightly script of docs/pulled-data.md, with their paths moved into
    tmp_path and the CRM's tables in the daemon's database; psql / mariadb as installed."""
    import os
    import shutil
    import subprocess
    import sys

    backend = "postgresql" if db.normalise_url(db_url).get_backend_name() == "postgresql" else "mariadb"
    client = "psql" if backend == "postgresql" else "mariadb"
    if shutil.which(client) is None:
        pytest.skip(f"{client} is not installed (Debian: postgresql-client / mariadb-client)")
    parts = recipe(backend)
    assert set(parts) == {"tables", "merge", "nightly", "direct"}, parts.keys()
    url = db.normalise_url(db_url)
    etc, exports = tmp_path / "etc", tmp_path / "exports"
    etc.mkdir()
    exports.mkdir()
    merge = "merge-unsubscribes.sql" if backend == "postgresql" else "merge-unsubscribes-mariadb.sql"
    (etc / merge).write_text(parts["merge"] + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_ESP_SYNC_")} | daemon_env
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if backend == "postgresql":
        env["CRM_URL"] = url.set(drivername="postgresql").render_as_string(hide_password=False)
    else:
        (etc / "crm.cnf").write_text(f"[client]\nhost={url.host}\nport={url.port or 3306}\nuser={url.username}\n"
                                     f"password={url.password or ''}\n[mysql]\ndatabase={url.database}\n")
    script = (parts["nightly"].replace("/var/lib/crm-esp-sync/exports", str(exports))
              .replace("/etc/crm-esp-sync/", f"{etc}/"))

    def nightly() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=120,
                              check=False)

    engine = db.create_engine(db_url)
    try:
        with engine.begin() as conn:
            for statement in parts["tables"].split(";"):
                if statement.strip():
                    conn.execute(sa.text(statement))
            conn.execute(sa.insert(Tenant).values(slug="acme", crm_tenant_id="1042", name="Acme", created_at=utcnow()))
            tenant_id = conn.execute(sa.select(Tenant.id)).scalar_one()
            for provider in ("postacell", "euromsg"):
                conn.execute(sa.insert(Connection).values(
                    tenant_id=tenant_id, provider=provider, credentials_encrypted="-", settings={},
                    base_url="https://x/", enabled=True, created_at=utcnow(), updated_at=utcnow()))
            ids = list(conn.execute(sa.select(Connection.id).order_by(Connection.provider.desc())).scalars())
            day = dt.datetime(2026, 12, 1, 9, tzinfo=dt.UTC)
            _suppression(conn, ids[0], "ayse@ornek.com.tr", "unsubscribed", day)
            _suppression(conn, ids[1], "ayse@ornek.com.tr", "hard_bounce", day - dt.timedelta(days=3))  # older
            _suppression(conn, ids[0], "can@ornek.com.tr", "soft_bounce", day)                # blocks nothing
            _suppression(conn, ids[0], "deniz@ornek.com.tr", "unsubscribed", day, remote_list_id="L9")   # one list
            _suppression(conn, ids[1], 'o"brien,ş@ornek.com.tr', "complaint", day)        # quoted in the CSV

        def blacklist() -> dict[str, tuple[str, str]]:
            with engine.connect() as conn:
                return {row.email: (row.status, row.provider) for row in conn.execute(sa.text(
                    "SELECT email, status, provider FROM crm_blacklist WHERE crm_tenant_id = '1042'"))}

        first = nightly()
        assert first.returncode == 0, first.stderr
        assert blacklist() == {"ayse@ornek.com.tr": ("unsubscribed", "postacell"),
                               'o"brien,ş@ornek.com.tr': ("complaint", "euromsg")}
        assert list(exports.iterdir()) == []

        # A failed load keeps its file; the next night loads it, and the new rows after it.
        with engine.begin() as conn:
            _suppression(conn, ids[0], "can@ornek.com.tr", "complaint", day + dt.timedelta(days=1))
            conn.execute(sa.text("ALTER TABLE crm_unsubscribes RENAME TO crm_unsubscribes_away"))
        failed = nightly()
        assert failed.returncode != 0 and len(list(exports.iterdir())) == 1
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE crm_unsubscribes_away RENAME TO crm_unsubscribes"))
            _suppression(conn, ids[1], "ayse@ornek.com.tr", "complaint", day + dt.timedelta(days=2))   # newer
        second = nightly()
        assert second.returncode == 0, second.stderr
        assert blacklist() == {"ayse@ornek.com.tr": ("complaint", "euromsg"),
                               "can@ornek.com.tr": ("complaint", "postacell"),
                               'o"brien,ş@ornek.com.tr': ("complaint", "euromsg")}
        assert list(exports.iterdir()) == []
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT COUNT(*) FROM crm_unsubscribes")).scalar_one() == 0

        # The CRM on the same server: the merge straight from the view gives the same blacklist.
        merged = blacklist()
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM crm_blacklist"))
            conn.execute(sa.text(parts["direct"].replace("crm_esp_sync.", f"{url.database}.")))
            conn.execute(sa.text(parts["direct"].replace("crm_esp_sync.", f"{url.database}.")))   # idempotent
        assert blacklist() == merged
    finally:
        engine.dispose()


def test_bad_input_is_one_line(daemon_env: dict[str, str], cli: Cli) -> None:
    assert cli("tenant", "add", "acme", env=daemon_env).code == 0
    cases = [
        (("suppressions", "export", "--since", "2026-13-45"), "--since '2026-13-45'"),
        (("suppressions", "list", "--since", "dün"), "--since 'dün'"),
        (("reports", "export", "--since", "yesterday"), "--since 'yesterday'"),
        (("suppressions", "list", "--tenant", "nope"), "no tenant 'nope'"),
        (("reports", "export", "--tenant", "nope", "--cursor", "c"), "no tenant 'nope'"),
        (("suppressions", "export", "--provider", "nope"), "--provider: 'nope' is not one of"),
        (("suppressions", "list", "--status", "gone"), "--status: 'gone' is not one of"),
        (("suppressions", "export", "--format", "xml"), "--format: 'xml' is not one of"),
        (("suppressions", "export", "--cursor", "Bad Name"), "--cursor 'Bad Name'"),
    ]
    for args, expected in cases:
        result = cli(*args, env=daemon_env)
        assert result.code == 2, (args, result)
        assert expected in one_error_line(result), (args, result.err)
        assert result.out == "", args
    # A cursor keeps the filters it was made with.
    assert cli("suppressions", "export", "--cursor", "c", "--tenant", "acme", env=daemon_env).code == 0
    other = cli("suppressions", "export", "--cursor", "c", env=daemon_env)
    assert other.code == 2 and "cursor 'c' was made for --tenant acme:" in one_error_line(other)
    # and no failed command made a cursor
    engine = db.create_engine(daemon_env["CRM_ESP_SYNC_DATABASE_URL"])
    with engine.connect() as conn:
        assert [row.name for row in conn.execute(sa.select(ExportCursor.name))] == ["c"]
    engine.dispose()


def test_help_lists_the_commands(cli: Cli) -> None:
    top = cli("--help")
    assert "suppressions" in top.out and "reports" in top.out
    export = cli("suppressions", "export", "--help")
    assert "--cursor NAME" in export.out and "moves only after the whole" in export.out
    assert "--output" in export.out and "--format" in export.out
    assert "--cursor NAME" in cli("reports", "export", "--help").out
