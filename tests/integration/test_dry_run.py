"""`once --dry-run` names every member it leaves out, and why; the real `once` then leaves out
exactly those (issue 25). Through the real command line, against the Postacell and Euromsg (İYS)
sandboxes served over HTTP, on every backend.

A tenant on Euromsg (İYS on) is synced; then at Euromsg three members unsubscribe and two give an
İYS RET, one CRM member gets an İYS source the registry refuses, and the tenant adds Postacell.
The dry run must say, per connection: unsubscribed at this provider (Euromsg), suppressed at
another provider of the tenant (Postacell, for Euromsg's unsubscribes), İYS RET (both), the CRM's
own RET (Postacell's first sync), rejected with the reason (the bad İYS source at Euromsg, a
mistyped address at Postacell) and an open reject still in its backoff (Euromsg). It must send
no write and change no row of ours a run depends on.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from sync.config import CrmSource
from sync.crm import crm_tables
from sync.crypto import generate_key
from sync.emails import normalize_email, valid_email
from sync.models import Base, Reject, SyncRun
from sync.sample import seed_crm
from sync.sandbox import EuromsgSandbox, PostacellSandbox, serve_in_thread
from tests.cli_runner import Result, one_error_line, run_cli

PASSWORD = "dry-Şifre-Gizli-25"
API_KEY = "acme-euromsg-key-25"
INTEGRATOR = {"client_name": "crm-firma", "password": "Entegrator-Şifre-25"}
MEMBERS = 60


@pytest.fixture
def served() -> Iterator[dict[str, Any]]:
    postacell = PostacellSandbox({"acme-api": PASSWORD}, seed=5)
    euromsg = EuromsgSandbox({INTEGRATOR["client_name"]: INTEGRATOR["password"]}, {API_KEY: "Acme"},
                             iys_accounts=[API_KEY], seed=5)
    with serve_in_thread(postacell.app) as postacell_url, serve_in_thread(euromsg.app) as euromsg_url:
        yield {"postacell": postacell, "postacell_url": f"{postacell_url}/api/v1/", "euromsg": euromsg,
               "euromsg_url": f"{euromsg_url}/"}


def _our_tables(engine: sa.Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the daemon's own tables but the run history (a dry run records itself there)."""
    found = {}
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            if table.name == "sync_runs":
                continue
            found[table.name] = [tuple(row) for row in conn.execute(
                sa.select(table).order_by(*table.primary_key.columns))]
    return found


def _named(document: dict[str, Any]) -> dict[str, dict[str, str]]:
    """provider -> member id -> reason(s), from a --json document."""
    named: dict[str, dict[str, str]] = {}
    for run in document["runs"]:
        by_member: dict[str, set[str]] = {}
        for row in run["left_out"]:
            by_member.setdefault(row["member_id"], set()).add(row["reason"])
        named[run["provider"]] = {member: "+".join(sorted(reasons)) for member, reasons in by_member.items()}
    return named


def test_the_dry_run_names_every_member_left_out_and_the_real_run_leaves_out_those(
        engine: sa.Engine, db_url: str, served: dict[str, Any], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    postacell: PostacellSandbox = served["postacell"]
    euromsg: EuromsgSandbox = served["euromsg"]
    seed_crm(engine, CrmSource(), ["acme"], MEMBERS, seed=3)
    env = {"CRM_ESP_SYNC_DATABASE_URL": db_url, "CRM_ESP_SYNC_MASTER_KEY": generate_key(),
           "CRM_ESP_SYNC_LOG_FORMAT": "json"}

    def cli(*args: str, stdin: str = "") -> Result:
        return run_cli(monkeypatch, capsys, env, *args, stdin=stdin)

    assert cli("tenant", "add", "acme").code == 0
    assert cli("integrator", "set", "euromsg", "--credentials", "-", stdin=json.dumps(INTEGRATOR)).code == 0
    added = cli("connection", "add", "acme", "euromsg", "--base-url", served["euromsg_url"], "--setting", "iys=true",
                "--credentials", "-", stdin=json.dumps({"api_key": API_KEY}))
    assert added.code == 0, added.err
    first = cli("once")
    assert first.code == 3, first.out + first.err          # the seeded typo is a new reject

    crm = crm_tables(CrmSource())
    with engine.connect() as conn:
        rows = conn.execute(sa.select(crm.members).order_by(crm.members.c.id)).all()
    by_id = {row.id: row for row in rows}
    typo = [row.id for row in rows if not valid_email(normalize_email(row.email))]
    crm_ret = [row.id for row in rows if row.consent_status == "RET"]
    at_euromsg = sorted(row.id for row in rows if euromsg.find_member(API_KEY, normalize_email(row.email)))
    assert len(typo) == 1 and len(crm_ret) == 2 and not set(at_euromsg) & set(typo + crm_ret)
    unsubscribed, refused, bad_source = at_euromsg[1:4], at_euromsg[5:7], at_euromsg[9]
    for member_id in unsubscribed:
        euromsg.set_status(API_KEY, normalize_email(by_id[member_id].email), "Unsubscribed")
    for member_id in refused:
        euromsg.set_consent(API_KEY, normalize_email(by_id[member_id].email), "RET")
    with engine.begin() as conn:
        conn.execute(crm.members.update().where(crm.members.c.id == bad_source).values(
            consent_source="HS_INTERNET", updated_at=sa.func.current_timestamp()))
    added = cli("connection", "add", "acme", "postacell", "--base-url", served["postacell_url"],
                "--setting", "rate_per_s=0", "--credentials", "-",
                stdin=json.dumps({"username": "acme-api", "password": PASSWORD}))
    assert added.code == 0, added.err

    # --- the dry run: nothing sent, nothing of ours changed ---------------------------------
    before = _our_tables(engine)
    postacell.reset_log()
    euromsg.reset_log()
    out_file = tmp_path / "left-out.csv"
    dry = cli("once", "--dry-run", "--json", "--output", str(out_file))
    assert dry.code == 0, dry.out + dry.err
    assert postacell.write_requests() == 0 and euromsg.write_requests() == 0
    assert _our_tables(engine) == before
    document = json.loads(dry.out)
    assert document["dry_run"] is True and [run["provider"] for run in document["runs"]] == ["euromsg", "postacell"]
    named = _named(document)
    assert named["euromsg"] == {**{m: "suppressed" for m in unsubscribed}, **{m: "iys_ret" for m in refused},
                                bad_source: "rejected", typo[0]: "reject_backoff"}, named["euromsg"]
    assert named["postacell"] == {**{m: "suppressed_elsewhere" for m in unsubscribed},
                                  **{m: "iys_ret" for m in refused}, **{m: "crm_ret" for m in crm_ret},
                                  typo[0]: "rejected"}, named["postacell"]
    rows_of = {(run["provider"], row["member_id"]): row for run in document["runs"] for row in run["left_out"]}
    euromsg_id = document["runs"][0]["connection_id"]
    assert all(f"unsubscribed at euromsg (connection {euromsg_id})" in rows_of[("postacell", m)]["detail"]
               for m in unsubscribed)
    assert all(f"İYS RET pulled from euromsg (connection {euromsg_id})" in rows_of[(p, m)]["detail"]
               for m in refused for p in ("euromsg", "postacell"))
    assert "'HS_INTERNET' is not an İYS source" in rows_of[("euromsg", bad_source)]["detail"]
    assert "invalid e-mail address" in rows_of[("postacell", typo[0])]["detail"]
    assert all(rows_of[("postacell", m)]["lists"] == sorted(rows_of[("postacell", m)]["lists"]) != []
               for m in named["postacell"])
    with out_file.open(encoding="utf-8") as handle:
        written = list(csv.DictReader(handle))
    assert len(written) == sum(len(run["left_out"]) for run in document["runs"])
    assert {(row["provider"], row["member_id"], row["reason"]) for row in written} == {
        (p, m, r) for p, members in named.items() for m, r in members.items()}
    assert set(written[0]) == {"member_id", "email", "tenant", "connection_id", "provider", "lists", "reason",
                               "detail"}

    table = cli("once", "--dry-run", "--verbose")          # the same, for a person
    assert table.code == 0, table.err
    assert "members left out" in table.out and "suppressed_elsewhere" in table.out
    assert all(m in table.out for m in (*unsubscribed, *refused, bad_source, *crm_ret, typo[0]))
    assert _our_tables(engine) == before and postacell.write_requests() == 0 and euromsg.write_requests() == 0

    # --- the real run leaves out exactly those ----------------------------------------------
    cards = {m: euromsg.find_member(API_KEY, normalize_email(by_id[m].email)) for m in named["euromsg"]}
    real = cli("once", "--json")
    assert real.code == 3, real.out + real.err             # new rejects: the bad source, the typo at Postacell
    assert _named(json.loads(real.out)) == named
    # ... as the providers see it: Postacell holds every member in a list but those named, and
    # Euromsg's cards of the named members were not written.
    at_postacell = {normalize_email(s["email"]) for s in postacell.subscribers("acme-api")}
    assert at_postacell == {normalize_email(row.email) for row in rows if row.id not in named["postacell"]}
    assert {m: euromsg.find_member(API_KEY, normalize_email(by_id[m].email)) for m in named["euromsg"]} == cards
    with engine.connect() as conn:
        run_ids = list(conn.scalars(sa.select(SyncRun.id).where(SyncRun.kind == "sync")))
        new_rejects = {(r.crm_member_id, r.reason) for r in conn.execute(sa.select(Reject).where(
            Reject.run_id == max(run_ids) - 1, Reject.resolved_at.is_(None)))}
    assert {m for m, _ in new_rejects} == {bad_source}
    assert next(reason for _, reason in new_rejects) in rows_of[("euromsg", bad_source)]["detail"]


@pytest.mark.parametrize(("args", "message"), [
    (("--format", "csv"), "--format csv needs --output FILE"),
    (("--json", "--verbose"), "--json and --verbose exclude each other"),
    (("--output", "left.txt"), "say --format csv or --format jsonl"),
    (("--output", "-"), "--output needs a file"),
    (("--output", "no/such/dir/left.csv"), "the directory no/such/dir does not exist"),
    (("--output", "left.csv", "--format", "xml"), "--format: 'xml' is not one of"),
])
def test_bad_report_options_are_one_line_and_run_nothing(
        args: tuple[str, ...], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"CRM_ESP_SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'never.db'}", "CRM_ESP_SYNC_LOG_FORMAT": "json"}
    result = run_cli(monkeypatch, capsys, env, "once", "--dry-run", *args)
    assert result.code == 2 and message in one_error_line(result)
    assert not (tmp_path / "never.db").exists()
