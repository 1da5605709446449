"""A Postatr connection's whole life through the real command line, against the sandbox that
`sandbox serve postatr` builds, served over HTTP on localhost, on every backend: `connection add`
and `connection test`, a dry run, runs with token expiry and lost answers, a campaign sent from the
panel, KVKK deletions and an İYS RET the API cannot carry out. Every StartProcess the sandbox saw
is DataOnly and no request started a campaign; no secret reaches the output."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from sync.config import CrmSource
from sync.crypto import generate_key
from sync.models import CampaignResult, Reject
from sync.providers.postatr import api
from sync.sample import seed_crm
from sync.sandbox import FaultPlan, PostatrSandbox, serve_in_thread
from sync.sandbox.faults import FaultInjector
from tests.cli_runner import Result, run_cli

PASSWORD, ENCRYPTED_ID = "Postatr-Şifre-Gizli-51", "12FD8A5F-2H34-486F-871D-5E697677BFC4"
Cli = Callable[..., Result]


@contextlib.contextmanager
def serving(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
            *dialect: str) -> Iterator[tuple[PostatrSandbox, str]]:
    """The sandbox `sandbox serve postatr [--dialect ...]` builds (its blocking serve replaced),
    served on a free port."""
    import sync.cli.sandbox
    import sync.sandbox

    built: list[Any] = []
    build = sync.cli.sandbox.build_sandbox

    def keep(*args: Any, **kwargs: Any) -> Any:
        found = build(*args, **kwargs)
        built.append(found[0])
        return found

    monkeypatch.setattr(sync.cli.sandbox, "build_sandbox", keep)
    monkeypatch.setattr(sync.sandbox, "serve", lambda app, host, port: None)
    result = run_cli(monkeypatch, capsys, {}, "sandbox", "serve", "postatr", "--account",
                     f"trakya-api:{PASSWORD}:{ENCRYPTED_ID}", "--port", "8124",
                     *(("--dialect", dialect[0]) if dialect else ()))
    assert result.code == 0, result.err
    assert "postatr sandbox on http://127.0.0.1:8124/api.asmx/" in result.out
    assert PASSWORD not in result.out and ENCRYPTED_ID not in result.out
    with serve_in_thread(built[0].app) as url:
        yield built[0], f"{url}/api.asmx/"


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[tuple[PostatrSandbox, str]]:
    with serving(monkeypatch, capsys) as found:
        yield found


def checks_of(result: Result) -> dict[str, str]:
    lines = [line.strip() for line in result.out.splitlines()[1:] if line.strip()]
    return dict(line.split(": ", 1) for line in lines)


def assert_no_campaign_started(sandbox: PostatrSandbox) -> None:
    assert sandbox.process_types and set(sandbox.process_types) == {api.DATA_ONLY}
    assert sandbox.campaigns_started_by_requests == []


def open_rejects(engine: sa.Engine, code: str) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [(row.crm_member_id, row.reason) for row in conn.execute(
            sa.select(Reject.crm_member_id, Reject.reason).where(Reject.provider_code == code,
                                                                  Reject.resolved_at.is_(None)))]


def test_a_postatr_connections_life_over_http(engine: sa.Engine, db_url: str, served: tuple[PostatrSandbox, str],
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    sandbox, base_url = served
    seed_crm(engine, CrmSource(), ["trakya"], 60, seed=4)
    env = {"CRM_ESP_SYNC_DATABASE_URL": db_url, "CRM_ESP_SYNC_MASTER_KEY": generate_key(),
           "CRM_ESP_SYNC_LOG_FORMAT": "json", "CRM_ESP_SYNC_LOG_LEVEL": "debug"}

    def cli(*args: str, stdin: str = "") -> Result:
        return run_cli(monkeypatch, capsys, env, *args, stdin=stdin)

    credentials = json.dumps({"username": "trakya-api", "password": PASSWORD, "encrypted_id": ENCRYPTED_ID})
    assert cli("tenant", "add", "trakya").code == 0
    bad = cli("connection", "add", "trakya", "postatr", "--base-url", base_url, "--setting",
              'lists={"L1": {"list_id": "liste-bir"}}', "--credentials", "-", stdin=credentials)
    assert bad.code != 0 and "list_id must be a GUID" in bad.err
    added = cli("connection", "add", "trakya", "postatr", "--base-url", base_url, "--setting",
                'lists={"L1": {"member_groups": "1354, 1359"}}', "--credentials", "-", stdin=credentials)
    assert added.code == 0, added.err

    tested = cli("connection", "test", "trakya", "postatr")
    assert tested.code == 0, tested.out + tested.err
    checks = checks_of(tested)
    assert checks["login"].startswith("ok") and checks["campaigns"].startswith("ok")
    assert "token issued" in checks["login"] and "no call to read a list back" in checks["list L1 -> " + next(
        name.split(" -> ")[1] for name in checks if name.startswith("list L1 -> "))]
    assert "reads: ok (ReportCampaign: 0 campaign(s) (reading: rows under 'Campaigns' in {\"d\": ...}))" in tested.out
    assert "StartProcess: not tried (a write)" in tested.out
    assert sandbox.write_requests() == 0 and sandbox.process_types == []

    dry = cli("once", "--dry-run")
    assert dry.code == 0, dry.err
    assert sandbox.write_requests() == 0

    first = cli("once")
    assert first.code == 3, first.out + first.err            # the seeded typo is a reject
    pushed = sandbox.members("trakya-api")
    assert len(pushed) > 40 and all(row["active"] for row in pushed)
    l1 = api.derived_list_id("trakya-api", "L1")
    assert {"1354", "1359"} <= {g for row in pushed if l1 in row["lists"] for g in row["groups"]}

    camp_id = sandbox.simulate_campaign("trakya-api", "Kasım")
    sandbox.expire_tokens()                                   # the next call gets error 1: re-login
    sandbox.fault_plan = FaultPlan(seed=1, apply_then_drop_rate=0.34)
    sandbox._faults = FaultInjector(sandbox.fault_plan)
    member = sorted(row["Memberid"] for row in pushed)
    m = sa.table("crm_members", sa.column("tenant_id"), sa.column("id"), sa.column("deleted_at"),
                 sa.column("first_name"), sa.column("updated_at"), sa.column("consent_status"),
                 sa.column("consent_date"))
    now = sa.func.current_timestamp()
    with engine.begin() as conn:
        conn.execute(sa.update(m).where(m.c.tenant_id == "trakya", m.c.id == member[0])
                     .values(deleted_at=now, updated_at=now))
        conn.execute(sa.update(m).where(m.c.tenant_id == "trakya", m.c.id == member[1])
                     .values(consent_status="RET", consent_date=now, updated_at=now))
        conn.execute(sa.update(m).where(m.c.tenant_id == "trakya", m.c.id == member[2])
                     .values(first_name="Şükrü", updated_at=now))
    second = cli("once")
    assert second.code in (0, 3), second.out + second.err
    assert sandbox._faults.injected["apply_then_drop"] >= 1           # a StartProcess applied, its answer lost
    assert sandbox.member("trakya-api", member[2])["FName"] == "Şükrü"  # type: ignore[index]
    assert sandbox.member("trakya-api", member[0]) is not None          # Postatr cannot delete: still there
    removals = open_rejects(engine, "removal_unsupported")
    assert removals and all(member_id == member[0] and "panel" in reason for member_id, reason in removals)
    refusals = open_rejects(engine, "unsubscribe_unsupported")
    assert refusals and all(member_id == member[1] and "panel" in reason for member_id, reason in refusals)
    with engine.connect() as conn:
        results = conn.scalar(sa.select(sa.func.count()).select_from(CampaignResult))
        failed = conn.scalar(sa.select(sa.func.count()).select_from(CampaignResult).where(
            CampaignResult.bounce_type == "failed", CampaignResult.sent_at.is_(None)))
    report = sandbox.campaign_report(camp_id)
    assert results == len(report)
    assert failed == sum(1 for row in report if row["ErrorCode"])           # failed recipients: not sent
    # every recipient asked in one call per attempt, without member ids (a lost answer is asked again)
    assert sandbox.report_member_requests and set(sandbox.report_member_requests) == {len(report)}

    sandbox.fault_plan = FaultPlan()
    sandbox._faults = FaultInjector(sandbox.fault_plan)
    sandbox.reset_log()
    third = cli("once")
    assert third.code in (0, 3), third.out + third.err
    assert sandbox.write_requests() == 0
    status = cli("status", "--json")
    assert status.code == 0 and "unsubscribe_unsupported" in status.out

    assert_no_campaign_started(sandbox)
    for output in (added, tested, dry, first, second, third, status):
        text = output.out + output.err
        assert PASSWORD not in text and ENCRYPTED_ID not in text and "Traceback" not in text
        assert all(token not in text for token in sandbox._tokens)


def test_a_wrong_postatr_login_fails_its_connection_test_in_one_line(
        db_url: str, served: tuple[PostatrSandbox, str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], engine: sa.Engine) -> None:
    _, base_url = served
    env = {"CRM_ESP_SYNC_DATABASE_URL": db_url, "CRM_ESP_SYNC_MASTER_KEY": generate_key(),
           "CRM_ESP_SYNC_LOG_FORMAT": "json"}

    def cli(*args: str, stdin: str = "") -> Result:
        return run_cli(monkeypatch, capsys, env, *args, stdin=stdin)

    cli("tenant", "add", "trakya")
    cli("connection", "add", "trakya", "postatr", "--base-url", base_url, "--setting", 'lists={"L1": {}}',
        "--credentials", "-", stdin=json.dumps({"username": "trakya-api", "password": "yanlis-parola-77",
                                                "encrypted_id": ENCRYPTED_ID}))
    wrong = cli("connection", "test", "trakya", "postatr")
    assert wrong.code == 1 and checks_of(wrong)["login"].startswith("FAILED: ")
    assert "all-zero token" in checks_of(wrong)["login"]
    assert "yanlis-parola-77" not in wrong.out + wrong.err and ENCRYPTED_ID not in wrong.out + wrong.err


def test_another_reading_over_http_phone_city_failed_recipients_and_reasons(
        engine: sa.Engine, db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 22 through the command line against a server in another reading the document allows
    (``lowercase``: camelCase keys, ``reason``, rows nested ``members.member``, ISO dates): the
    readings are named by `connection test`; phone and city reach MyColumns (17); an address the
    account refuses is a reject with its reason, not "no reason given" (16); failed recipients are
    stored as failed, never as sent (14), from one ReportMembers per campaign (15); a no-change run
    writes nothing."""
    with serving(monkeypatch, capsys, "lowercase") as (sandbox, base_url):
        seed_crm(engine, CrmSource(), ["trakya"], 60, seed=4)
        env = {"CRM_ESP_SYNC_DATABASE_URL": db_url, "CRM_ESP_SYNC_MASTER_KEY": generate_key(),
               "CRM_ESP_SYNC_LOG_FORMAT": "json"}

        def cli(*args: str, stdin: str = "") -> Result:
            return run_cli(monkeypatch, capsys, env, *args, stdin=stdin)

        m = sa.table("crm_members", sa.column("tenant_id"), sa.column("id"), sa.column("email"), sa.column("phone"),
                     sa.column("city"), sa.column("deleted_at"))
        with engine.connect() as conn:
            crm = {row.id: row for row in conn.execute(sa.select(m).where(m.c.tenant_id == "trakya",
                                                                          m.c.deleted_at.is_(None)))}
        refused = next(row for _, row in sorted(crm.items()) if "@" in row.email)
        sandbox.refused_emails.add(refused.email.lower())
        credentials = json.dumps({"username": "trakya-api", "password": PASSWORD, "encrypted_id": ENCRYPTED_ID})
        assert cli("tenant", "add", "trakya").code == 0
        assert cli("connection", "add", "trakya", "postatr", "--base-url", base_url, "--credentials", "-",
                   stdin=credentials).code == 0
        tested = cli("connection", "test", "trakya", "postatr")
        assert tested.code == 0, tested.out + tested.err
        assert "Authenticate: token issued (reading: plain text)" in tested.out
        assert "MyColumns: CRM phone as 'phone' (default), city as 'city' (default)" in tested.out

        first = cli("once")
        assert first.code == 3, first.out + first.err
        pushed = {row["Memberid"]: row for row in sandbox.members("trakya-api")}
        assert refused.id not in pushed and len(pushed) > 40
        for member_id, row in pushed.items():
            assert row["MyColumns"] == {"phone": crm[member_id].phone or "", "city": crm[member_id].city or ""}
        reasons = open_rejects(engine, "ignored")                  # one per list the member is in
        assert set(reasons) == {(refused.id, 'Postatr ignored the member: this e-mail address cannot do this operation '
                                        '("Bu email adresi belirtilen işlemi yapamıyor")')}

        camp_id = sandbox.simulate_campaign("trakya-api", "Kasım")
        sandbox.reset_log()
        second = cli("once")
        assert second.code in (0, 3), second.out + second.err
        assert sandbox.write_requests() == 0                       # nothing changed: nothing written
        asked = [path for _, path, _ in sandbox.request_log if path.endswith(api.REPORT_MEMBERS)]
        report = sandbox.campaign_report(camp_id)
        assert len(asked) == 1 and sandbox.report_member_requests == [len(report)]
        with engine.connect() as conn:
            stored = {row.email: row for row in conn.execute(sa.select(CampaignResult))}
        assert set(stored) == {row["Email"].lower() for row in report}
        for row in report:
            result = stored[row["Email"].lower()]
            if row["ErrorCode"]:
                assert result.bounce_type == "failed" and result.sent_at is None, row
            else:
                assert result.bounce_type is None and result.sent_at is not None, row
        assert any(row["ErrorCode"] for row in report)
        status = cli("status", "--json")
        assert "rows under 'members' > 'member'" in status.out
