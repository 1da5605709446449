"""Operating it (issue 13) through the real command line: run outcomes and exit statuses that
mean something, `status --json`, and `rejects list|show|retry|dismiss`, on all three databases."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from sync import db, registry
from sync.config import CrmSource, Secret
from sync.crm import crm_tables
from sync.crypto import Vault, generate_key
from sync.models import Connection, MemberStatus, Reject, SyncRun
from sync.sample import seed_crm
from sync.sandbox import PostacellSandbox, serve_in_thread
from tests.cli_runner import Result, run_cli

PASSWORD = "İşletme-Şifresi-2026"
TYPO_MEMBER = "M000008"          # seed_crm makes member n=7 a typo ("...7hotmail.com")
Cli = Callable[..., Result]


@pytest.fixture
def served() -> Iterator[tuple[PostacellSandbox, str]]:
    sandbox = PostacellSandbox({"acme-api": PASSWORD}, seed=5)
    with serve_in_thread(sandbox.app) as url:
        yield sandbox, f"{url}/api/v1/"


@pytest.fixture
def ops(engine: sa.Engine, db_url: str, served: tuple[PostacellSandbox, str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Cli:
    """The CLI against a migrated database holding tenant acme with 30 CRM members (one typo),
    connected to a served Postacell sandbox."""
    key = generate_key()
    env = {"CRM_ESP_SYNC_DATABASE_URL": db_url, "CRM_ESP_SYNC_MASTER_KEY": key, "CRM_ESP_SYNC_LOG_FORMAT": "json"}
    seed_crm(engine, CrmSource(), ["acme"], 30, seed=3)
    with db.transaction(db.session_factory(engine)) as session:
        registry.add_tenant(session, "acme")
        registry.add_connection(session, Vault((Secret(key),)), "acme", "postacell",
                                {"username": "acme-api", "password": PASSWORD}, base_url=served[1],
                                settings={"rate_per_s": 0})

    def invoke(*args: str) -> Result:
        result = run_cli(monkeypatch, capsys, env, *args)
        assert PASSWORD not in result.out + result.err
        return result
    return invoke


def _statuses(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.scalars(sa.select(SyncRun.status).order_by(SyncRun.id)))


def _typo(engine: sa.Engine, member_id: str, email: str = "yeni.yazim.hatasi.ornek.com") -> None:
    """Give a CRM member a mistyped address now (a change the next incremental run reads)."""
    members = crm_tables(CrmSource()).members
    with engine.begin() as conn:
        conn.execute(members.update().where(members.c.tenant_id == "acme", members.c.id == member_id)
                     .values(email=email, updated_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))


def _status(ops: Cli, *args: str) -> dict[str, Any]:
    result = ops("status", "--json", *args)
    assert result.code == 0, result.err
    document = json.loads(result.out)
    assert isinstance(document, dict)
    return document


# --- outcomes and exit statuses -------------------------------------------------------------


def test_only_new_rejects_make_a_run_partial_and_exit_3(ops: Cli, engine: sa.Engine) -> None:
    """The seeded typo is new on the first run (partial, exit 3), known on the second
    (succeeded_with_rejects, exit 0); a fresh typo makes the third partial again."""
    first = ops("once")
    assert first.code == 3, first.err
    second = ops("once")
    assert second.code == 0, second.err
    assert "succeeded_with_rejects" in second.out
    _typo(engine, "M000002")
    third = ops("once")
    assert third.code == 3, third.err
    assert _statuses(engine) == ["partial", "succeeded_with_rejects", "partial"]
    with engine.connect() as conn:
        counts = conn.scalar(sa.select(SyncRun.counts).order_by(SyncRun.id.desc()).limit(1))
    assert counts["rejects_new"] == 1 and counts["rejects_open"] == 2


def test_a_reject_resolved_and_failing_again_is_new(ops: Cli, engine: sa.Engine) -> None:
    """A row fixed in the CRM, then broken again, is a new problem: partial, not a known one."""
    members = crm_tables(CrmSource()).members
    assert ops("once").code == 3
    with engine.begin() as conn:
        conn.execute(members.update().where(members.c.id == TYPO_MEMBER).values(
            email="duzeltildi@ornek.com.tr", updated_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))
    fixed = ops("once")
    assert fixed.code == 0, fixed.err
    assert _statuses(engine)[-1] == "succeeded"        # nothing open any more
    _typo(engine, TYPO_MEMBER)
    assert ops("once").code == 3
    with engine.connect() as conn:
        reject = conn.execute(sa.select(Reject.attempts, Reject.resolved_at).where(
            Reject.crm_member_id == TYPO_MEMBER)).one()
    assert reject == (1, None)


def test_a_failed_run_exits_1_and_a_bad_option_exits_2(ops: Cli, engine: sa.Engine) -> None:
    with db.transaction(db.session_factory(engine)) as session:
        registry.update_connection(session, "acme", "postacell", base_url="http://127.0.0.1:9/api/v1/")
    failed = ops("once")
    assert failed.code == 1, failed.out
    assert _statuses(engine) == ["failed"]
    assert ops("once", "--provider", "nosuch").code == 2
    assert ops("status", "--tenant", "nosuch").code != 0


def test_help_documents_the_exit_statuses(ops: Cli) -> None:
    for command in ("once", "backfill"):
        shown = ops(command, "--help").out
        assert "Exit status:" in shown
        assert all(f"  {code}  " in shown for code in "0123"), shown
        assert "succeeded_with_rejects" in shown and "partial" in shown


# --- status ---------------------------------------------------------------------------------


def test_status_json_shows_runs_watermarks_rejects_suppressions_and_the_lease(ops: Cli, engine: sa.Engine) -> None:
    """What an operator needs, in the documented shape: a list the provider refused, the members
    waiting for it, the typo, a suppression, the watermarks and a live lease with its holder."""
    lists, memberships = crm_tables(CrmSource()).lists, crm_tables(CrmSource()).memberships
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        conn.execute(lists.insert().values(tenant_id="acme", id="L9", name="", updated_at=now, deleted_at=None))
        conn.execute(memberships.insert().values(tenant_id="acme", list_id="L9", member_id="M000003",
                                                 updated_at=now, deleted_at=None))
    assert ops("once").code == 3
    with engine.begin() as conn:
        connection_id, tenant_id = conn.execute(sa.select(Connection.id, Connection.tenant_id)).one()
        conn.execute(sa.insert(MemberStatus).values(tenant_id=tenant_id, connection_id=connection_id,
                                                    email="biri@ornek.com.tr", status="unsubscribed",
                                                    occurred_at=now, pulled_at=now))
        conn.execute(sa.update(Connection).values(lease_owner="replica-2:77/abcd",
                                                  lease_expires_at=now + dt.timedelta(hours=1)))
    document = _status(ops, "--tenant", "acme")
    assert document["schema_version"] == 1
    [connection] = document["connections"]
    assert (connection["tenant"], connection["provider"], connection["health"]) == ("acme", "postacell",
                                                                                   "new_rejects")
    run = connection["last_run"]
    assert run["status"] == "partial" and run["kind"] == "sync" and run["finished_at"]
    assert run["counts"]["members_added"] > 20 and run["counts"]["rejects_new"] >= 2
    assert {"pull_statuses", "lists", "members", "reports", "total"} <= set(run["timings"])
    # rate_per_s 0 (this fixture): nothing paced the connection, and no 429 taught it a rate
    assert run["http_rate_per_s"] is None and "http_rate_per_s" not in run["counts"]
    assert run["counts"]["http_rate_cuts"] == 0
    assert connection["recent_runs"][0]["run_id"] == run["run_id"]
    assert {w["stream"] for w in connection["watermarks"]} >= {"members"}
    assert all(w["age_seconds"] >= 0 for w in connection["watermarks"])
    rejects = connection["rejects"]
    assert [lst["crm_list_id"] for lst in rejects["lists_without_mapping"]] == ["L9"]
    assert rejects["members_waiting_for_list"] == 1
    codes = {c["code"]: c["count"] for c in rejects["by_code"]}
    assert codes["validation"] == 1 and codes["list_pending"] == 1
    assert rejects["open"] == 3
    assert connection["suppressions"] == {"unsubscribed": 1}
    assert connection["lease"] == {"holder": "replica-2:77/abcd", "live": True, "last_holder": "replica-2:77/abcd",
                                   "expires_at": connection["lease"]["expires_at"]}
    assert connection["lease"]["expires_at"].endswith("Z")
    table = ops("status")
    assert table.code == 0 and "acme" in table.out and "new_rejects" in table.out
    assert "replica-2:77/abcd" in table.out and "L9" in table.out


def test_status_of_a_connection_that_never_ran_and_filters(ops: Cli) -> None:
    [connection] = _status(ops)["connections"]
    assert connection["health"] == "never_run" and connection["last_run"] is None
    assert connection["rejects"]["open"] == 0 and connection["lease"]["live"] is False
    assert connection["readings"] == {}                 # nothing read yet (issue 22: `connection test` fills it)
    assert _status(ops, "--provider", "euromsg")["connections"] == []


# --- rejects --------------------------------------------------------------------------------


def _last_counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        counts = conn.scalar(sa.select(SyncRun.counts).order_by(SyncRun.id.desc()).limit(1))
    assert isinstance(counts, dict)
    return counts


def _reject_rows(engine: sa.Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return {row.crm_member_id: row for row in conn.execute(sa.select(Reject))}


def test_dismissed_rejects_are_not_retried_and_keep_who_and_why(ops: Cli, engine: sa.Engine) -> None:
    assert ops("once").code == 3
    listed = json.loads(ops("rejects", "list", "--tenant", "acme", "--json").out)
    assert [(r["crm_member_id"], r["code"], r["state"]) for r in listed] == [(TYPO_MEMBER, "validation", "open")]
    assert ops("rejects", "dismiss", "--reason", "no target").code == 2       # which ones? say so
    dismissed = ops("rejects", "dismiss", "--code", "validation", "--reason", "CRM ekibi düzeltecek",
                    "--by", "operatör")
    assert dismissed.code == 0, dismissed.err
    before = _reject_rows(engine)[TYPO_MEMBER]
    again = ops("once")
    assert again.code == 0, again.err
    assert _statuses(engine)[-1] == "succeeded"          # nothing open is left
    after = _reject_rows(engine)[TYPO_MEMBER]
    assert after.attempts == before.attempts and after.resolved_at is not None     # the engine left it alone
    shown = json.loads(ops("rejects", "show", str(after.id), "--json").out)
    assert (shown["state"], shown["dismissed_by"], shown["dismiss_reason"]) == (
        "dismissed", "operatör", "CRM ekibi düzeltecek")
    assert json.loads(ops("rejects", "list", "--json").out) == []
    assert len(json.loads(ops("rejects", "list", "--state", "dismissed", "--json").out)) == 1


def test_retry_reopens_a_dismissed_reject_and_the_next_run_tries_it(ops: Cli, engine: sa.Engine) -> None:
    assert ops("once").code == 3
    reject_id = _reject_rows(engine)[TYPO_MEMBER].id
    assert ops("rejects", "dismiss", str(reject_id), "--reason", "later").code == 0
    retried = ops("rejects", "retry", str(reject_id))
    assert retried.code == 0 and "1 reject(s) queued" in retried.out
    row = _reject_rows(engine)[TYPO_MEMBER]
    assert row.resolved_at is None and row.dismissed_at is None and row.dismissed_by is None
    attempts = row.attempts
    assert ops("once").code == 0                         # it was open before this run: known, not new
    assert _reject_rows(engine)[TYPO_MEMBER].attempts == attempts + 1


def test_retry_skips_the_provider_backoff_and_now_runs_it(ops: Cli, engine: sa.Engine) -> None:
    """A provider reject that just failed waits an hour or more before the engine tries it again;
    after `retry --now` the run tries it at once."""
    assert ops("once").code == 3
    with engine.begin() as conn:
        connection_id = conn.scalar(sa.select(Connection.id))
        conn.execute(sa.insert(Reject).values(
            connection_id=connection_id, crm_member_id="M000004", crm_list_id="", email=None,
            provider_code="E1042", reason="provider: temporarily refused", attempts=4,
            first_seen_at=dt.datetime.now(dt.UTC), last_seen_at=dt.datetime.now(dt.UTC)))
    assert ops("once").code == 0
    assert _last_counts(engine)["members_considered"] == 0              # both back off: the typo and E1042
    retried = ops("rejects", "retry", "--code", "E1042", "--now")
    assert retried.code == 0, retried.err
    assert "1 reject(s) queued" in retried.out and "succeeded_with_rejects" in retried.out
    assert _last_counts(engine)["members_considered"] == 1              # E1042 tried at once
    assert _statuses(engine)[-1] == "succeeded_with_rejects"            # known before: not new
    assert ops("rejects", "retry").code == 2                             # no selection: refused


def test_rejects_filters_and_show_of_an_unknown_id(ops: Cli, engine: sa.Engine) -> None:
    _typo(engine, "M000002", "iki.kere@@ornek.com")
    assert ops("once").code == 3
    assert len(json.loads(ops("rejects", "list", "--json").out)) == 2
    assert len(json.loads(ops("rejects", "list", "--matching", "INVALID E-MAIL", "--json").out)) == 2
    assert json.loads(ops("rejects", "list", "--code", "E9", "--json").out) == []
    assert json.loads(ops("rejects", "list", "--provider", "euromsg", "--json").out) == []
    missing = ops("rejects", "show", "99999")
    assert missing.code == 1 and "no reject 99999" in missing.err
    listed = ops("rejects", "list")
    assert listed.code == 0 and "2 reject(s)" in listed.out
