"""`crm-esp-sync demo`: a full round trip on the embedded default (SQLite) and the Postacell, Euromsg
and MailMasterPlus sandboxes served over real HTTP on localhost. Self-contained: its own database
and master key in ``workdir``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from sync import db, registry
from sync.config import CrmSource, Secret, Settings
from sync.crm import create_reference_schema, crm_tables
from sync.crypto import Vault, generate_key
from sync.engine.connection_sync import RunOptions
from sync.engine.runner import RunResult, run_connection, select_connections
from sync.logs import configure_logging
from sync.models import Campaign, CampaignResult, Connection, MemberLink, MemberStatus, Reject, Tenant, utcnow
from sync.sample import seed_crm
from sync.sandbox import EuromsgSandbox, MailMasterPlusSandbox, PostacellSandbox, serve_in_thread

#: Tenants on Postacell.
TENANTS = ("acme", "anadolu", "bosphorus")
#: The tenant on Euromsg Express, which made Euromsg its İYS integrator (``iys`` on).
EUROMSG_TENANT = "ege"
#: The tenant on MailMasterPlus, whose CRM lists are mapped to lists made in MMP's panel.
MMP_TENANT = "marmara"
ALL_TENANTS = (*TENANTS, EUROMSG_TENANT, MMP_TENANT)
#: CRM rows of the Euromsg tenant whose İYS data the registry refuses: (member id, column values).
IYS_MISTAKES: tuple[tuple[str, dict[str, object]], ...] = (
    ("M000002", {"consent_source": "HS_INTERNET"}),
    ("M000005", {"consent_date": dt.datetime(2014, 3, 1, 9, 0, tzinfo=dt.UTC)}),
    ("M000010", {"consent_source": "HS_2015"}),
)


def demo_settings(settings: Settings, workdir: Path) -> Settings:
    """The demo's own SQLite file and master key (created 0600 on first use)."""
    workdir.mkdir(parents=True, exist_ok=True)
    key_file = workdir / "master.key"
    if not key_file.exists():
        key_file.write_text(generate_key() + "\n", encoding="utf-8")
        os.chmod(key_file, 0o600)
    database = workdir / "crm-esp-sync.db"
    database.unlink(missing_ok=True)      # a fresh demo every time: the sandbox forgets on exit too
    return dataclasses.replace(settings, database_url=f"sqlite:///{database}", crm_database_url=None,
                               master_keys=(Secret(key_file.read_text(encoding="utf-8").strip()),),
                               crm=CrmSource())


def _results_table(title: str, results: Sequence[RunResult], writes: dict[str, int]) -> Table:
    per_provider = ", ".join(f"{provider} {n}" for provider, n in writes.items())
    table = Table("tenant", "provider", "status", "lists+", "added", "updated", "removed", "unchanged", "rejected",
                  "blocked", "statuses pulled", "campaign results", "HTTP requests", "seconds",
                  title=f"{title} — provider write requests: {sum(writes.values())} ({per_provider})",
                  title_justify="left")
    for r in results:
        c = r.counts
        table.add_row(r.tenant, r.provider, r.status, str(c.get("lists_created", 0)), str(c.get("members_added", 0)),
                      str(c.get("members_updated", 0)), str(c.get("members_removed", 0)),
                      str(c.get("members_unchanged", 0)), str(c.get("rejected", 0)),
                      str(len(r.plan.blocked_by_suppression) if r.plan else 0), str(c.get("statuses_pulled", 0)),
                      str(c.get("campaign_results", 0)), str(r.http_requests), f"{r.timings.get('total', 0):.2f}")
    return table


def run_demo(base: Settings, workdir: Path, members: int, out: Console) -> None:
    """The story on ``out``; the log lines of its runs go to ``workdir/demo.log``, not into the story."""
    settings = demo_settings(base, workdir)
    log_path = workdir / "demo.log"
    with log_path.open("w", encoding="utf-8") as log_file:
        configure_logging(settings.log_level, "json", stream=log_file)
        try:
            _story(settings, members, out, log_path)
        finally:
            configure_logging(base.log_level, base.log_format)


def _story(settings: Settings, members: int, out: Console, log_path: Path) -> None:
    engine = db.create_engine(settings.database_url)
    db.upgrade(engine)
    create_reference_schema(engine, settings.crm)
    summary = seed_crm(engine, settings.crm, ALL_TENANTS, members)
    m = crm_tables(settings.crm).members
    with engine.begin() as conn:       # İYS data a CRM gets wrong: rejected before it is sent, with the reason
        for member_id, values in IYS_MISTAKES:
            conn.execute(m.update().where(m.c.tenant_id == EUROMSG_TENANT, m.c.id == member_id).values(**values))
        crm_lists = crm_tables(settings.crm).lists
        mmp_lists = [row.id for row in conn.execute(sa.select(crm_lists.c.id).where(
            crm_lists.c.tenant_id == MMP_TENANT).order_by(crm_lists.c.id))]
    out.print(f"[bold]1. Sample CRM[/bold] in {settings.database_url}: {summary.tenants} tenants, "
              f"{summary.members} members, {summary.lists} lists, {summary.memberships} memberships "
              f"({summary.invalid_emails} mistyped e-mails, {summary.refused_consent} with İYS RET; "
              f"{len(IYS_MISTAKES)} of {EUROMSG_TENANT}'s members have İYS data the registry refuses)")

    accounts = {f"{tenant}-api": f"{tenant}-Şifre-2026" for tenant in TENANTS}
    sandbox = PostacellSandbox(accounts, seed=42, job_polls_until_done=2, export_polls_until_ready=2)
    integrator = {"client_name": "demo-integrator", "password": "Entegrator-Şifre-2026"}
    api_key = f"{EUROMSG_TENANT}-api-key-2026"
    euromsg = EuromsgSandbox({integrator["client_name"]: integrator["password"]}, {api_key: "Ege Ticaret"},
                             iys_accounts=[api_key], seed=42)
    mmp_login = {"username": f"{MMP_TENANT}-api", "password": f"{MMP_TENANT}-Şifre-2026"}
    mmp = MailMasterPlusSandbox({mmp_login["username"]: mmp_login["password"]})
    mapping: dict[str, dict[str, object]] = {}
    for number, crm_list in enumerate(mmp_lists):
        nl_id, subscribe_form, update_form = 101 + number, 201 + number, 301 + number
        mmp.add_list(mmp_login["username"], nl_id, f"Panel listesi {crm_list}", subscribe_form=subscribe_form,
                     update_form=update_form)
        mapping[crm_list] = {"nl_id": nl_id, "subscribe_form": subscribe_form, "update_form": update_form,
                             "name": f"Panel listesi {crm_list}"}
    sandboxes: dict[str, PostacellSandbox | EuromsgSandbox | MailMasterPlusSandbox] = {
        "postacell": sandbox, "euromsg": euromsg, "mailmasterplus": mmp}
    vault = Vault(settings.master_keys)
    with serve_in_thread(sandbox.app) as url, serve_in_thread(euromsg.app) as euromsg_url, \
            serve_in_thread(mmp.app) as mmp_url:
        mapped = ", ".join(f"{crm_list}->{entry['nl_id']}" for crm_list, entry in mapping.items())
        out.print(f"[bold]2. Sandboxes[/bold] served over real HTTP on localhost: Postacell at {url}/api/v1/ "
                  f"({', '.join(TENANTS)}; no rate limit on these demo connections), Euromsg Express at "
                  f"{euromsg_url}/ ({EUROMSG_TENANT}, İYS on), MailMasterPlus at {mmp_url}/ ({MMP_TENANT}: "
                  f"CRM lists mapped to panel lists {mapped})")
        with db.transaction(db.session_factory(engine)) as session:
            for tenant in ALL_TENANTS:
                registry.add_tenant(session, tenant, name=f"{tenant.title()} Ticaret A.Ş.")
            for tenant in TENANTS:
                registry.add_connection(session, vault, tenant, "postacell",
                                        {"username": f"{tenant}-api", "password": accounts[f"{tenant}-api"]},
                                        base_url=f"{url}/api/v1/", settings={"rate_per_s": 0})
            registry.set_integrator_credentials(session, vault, "euromsg", integrator)
            registry.add_connection(session, vault, EUROMSG_TENANT, "euromsg", {"api_key": api_key},
                                    base_url=f"{euromsg_url}/", settings={"iys": True})
            registry.add_connection(session, vault, MMP_TENANT, "mailmasterplus", mmp_login,
                                    base_url=f"{mmp_url}/", settings={"lists": mapping})

        def run_all(title: str) -> list[RunResult]:
            before = {name: box.write_requests() for name, box in sandboxes.items()}
            results = [asyncio.run(run_connection(settings, engine, engine, cid, RunOptions()))
                       for cid in select_connections(engine)]
            writes = {name: box.write_requests() - before[name] for name, box in sandboxes.items()}
            out.print(_results_table(title, results, writes))
            return results

        run_all("3. First sync: lists and members pushed (bulk import jobs at Postacell, one call per "
                "member at Euromsg and MailMasterPlus)")

        account = "acme-api"
        campaign = sandbox.simulate_campaign(account, subject="Kasım indirimi")
        some = sorted(sub["email"] for sub in sandbox.subscribers(account))[:3]
        sandbox.set_status(account, some[0], "unsubscribed")
        # Edit members the provider holds as active: a member with İYS RET, a mistyped e-mail or a
        # bounce from the campaign is not pushed, and would make the story and the table disagree.
        active = {sub["email"] for sub in sandbox.subscribers(account) if sub["status"] == "active"}
        with engine.connect() as conn:
            pushed = conn.execute(sa.select(MemberLink.crm_member_id, MemberLink.email).join(Connection).join(Tenant)
                                  .where(Tenant.slug == "acme", MemberLink.remote_id.is_not(None))
                                  .order_by(MemberLink.crm_member_id)).all()
        ids = [member_id for member_id, email in pushed if email in active][:5]
        with engine.begin() as conn:
            conn.execute(m.update().where(m.c.tenant_id == "acme", m.c.id.in_(ids[:4]))
                         .values(last_name="Yıldız-Öztürk", updated_at=utcnow()))
            conn.execute(m.update().where(m.c.tenant_id == "acme", m.c.id == ids[4])
                         .values(deleted_at=utcnow(), updated_at=utcnow()))
        euromsg_campaign = euromsg.simulate_campaign(api_key, name="Kasım bülteni")
        mmp_list = next(iter(mapping.values()))["nl_id"]
        mmp_records = [r for r in mmp.records(mmp_login["username"], str(mmp_list)) if r.get("active") == "1"]
        mmp_unsubscribed = mmp_records[0]["email"] if mmp_records else None
        if mmp_unsubscribed:
            mmp.unsubscribe(mmp_login["username"], str(mmp_list), mmp_unsubscribed)
        out.print(f"[bold]4. Meanwhile[/bold]: acme sent campaign {campaign} from the panel; {some[0]} unsubscribed "
                  f"via the web; in the CRM {len(ids[:4])} members changed their surname and 1 was deleted (KVKK); "
                  f"{EUROMSG_TENANT} sent campaign {euromsg_campaign} from the Euromsg panel; "
                  f"{mmp_unsubscribed or 'nobody'} unsubscribed from {MMP_TENANT}'s MMP list {mmp_list}")
        run_all("5. Second sync: statuses and campaign reports pulled, changes pushed")
        run_all("6. Third sync, nothing changed")
        out.print("   (acme's edited members are read again, as 'unchanged': a run re-reads the last "
                  f"{settings.lookback_seconds} s before its watermark, for rows committed late)")

    with engine.connect() as conn:
        rejects = conn.execute(sa.select(Reject.email, Reject.reason).join(Connection)
                               .where(Reject.resolved_at.is_(None), Connection.provider == "postacell")
                               .order_by(Reject.id).limit(3)).all()
        iys_rejects = conn.execute(sa.select(Reject.crm_member_id, Reject.email, Reject.reason).join(Connection)
                                   .where(Reject.resolved_at.is_(None), Connection.provider == "euromsg",
                                          Reject.provider_code == "iys_invalid")
                                   .order_by(Reject.crm_member_id)).all()
        statuses = conn.execute(sa.select(Connection.provider, MemberStatus.status, sa.func.count())
                                .join(Connection, Connection.id == MemberStatus.connection_id)
                                .group_by(Connection.provider, MemberStatus.status)
                                .order_by(Connection.provider, MemberStatus.status)).all()
        results = conn.execute(sa.select(
            sa.func.count(), sa.func.count(CampaignResult.opened_at), sa.func.count(CampaignResult.clicked_at),
            sa.func.count(CampaignResult.bounce_type)).select_from(CampaignResult)).one()
        campaigns = conn.scalar(sa.select(sa.func.count()).select_from(Campaign))
    out.print("[bold]7. What is in the local tables now[/bold]")
    out.print(f"   suppressions pulled: {', '.join(f'{p} {s}={n}' for p, s, n in statuses) or 'none'}")
    out.print(f"   campaigns: {campaigns}; recipients: {results[0]}, opened {results[1]}, clicked {results[2]}, "
              f"bounced {results[3]}")
    for email, reason in rejects:
        out.print(f"   reject (postacell): {email}: {reason}")
    for member_id, email, reason in iys_rejects:
        out.print(f"   reject ({EUROMSG_TENANT}/euromsg, İYS): {member_id} {email}: {reason}")
    hint = "'select kind, status, counts from sync_runs'"
    out.print(f"   explore: sqlite3 {settings.database_url.removeprefix('sqlite:///')} {hint}")
    out.print(f"   the runs' log lines: {log_path}")
    engine.dispose()
