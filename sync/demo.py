"""`crm-esp-sync demo`: a full round trip on the embedded default (SQLite) and the Postacell, Euromsg
and MailMasterPlus sandboxes served over real HTTP on localhost. Self-contained: its own database
and master key in ``workdir``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
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
from sync.sandbox import (
    EuromsgSandbox,
    MailMasterPlusSandbox,
    PostacellSandbox,
    PostatrSandbox,
    WapcrmSandbox,
    serve_in_thread,
)

#: How long the demo's daemon serves its status page at the end (seconds).
STATUS_PAGE_SECONDS = 5.0
#: Tenants on Postacell.
TENANTS = ("acme", "anadolu", "bosphorus")
#: The tenant on Euromsg Express, which made Euromsg its İYS integrator (``iys`` on).
EUROMSG_TENANT = "ege"
#: The tenant on MailMasterPlus, whose CRM lists are mapped to lists made in MMP's panel.
MMP_TENANT = "marmara"
#: The tenant on WapCRM (pull-only): its call centre's conversations and WhatsApp messages come back.
WAPCRM_TENANT = "karadeniz"
#: The tenant on Postatr: members go out through StartProcess (DataOnly), a ListId per CRM list.
POSTATR_TENANT = "trakya"
ALL_TENANTS = (*TENANTS, EUROMSG_TENANT, MMP_TENANT, WAPCRM_TENANT, POSTATR_TENANT)
#: CRM phones of the WapCRM tenant nobody can call: rejected with the reason, the run goes on.
WAPCRM_BAD_PHONES = (("M000004", "0212 55"), ("M000006", "+49 30 1234567"))
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
                  "blocked", "statuses pulled", "campaign results", "calls+msgs pulled", "HTTP requests", "seconds",
                  title=f"{title} — provider write requests: {sum(writes.values())} ({per_provider})",
                  title_justify="left")
    for r in results:
        c = r.counts
        table.add_row(r.tenant, r.provider, r.status, str(c.get("lists_created", 0)), str(c.get("members_added", 0)),
                      str(c.get("members_updated", 0)), str(c.get("members_removed", 0)),
                      str(c.get("members_unchanged", 0)), str(c.get("rejected", 0)),
                      str(len(r.plan.blocked_by_suppression) if r.plan else 0), str(c.get("statuses_pulled", 0)),
                      str(c.get("campaign_results", 0)),
                      f"{c.get('conversations_pulled', 0) + c.get('conversations_updated', 0)}+"
                      f"{c.get('messages_pulled', 0)}", str(r.http_requests), f"{r.timings.get('total', 0):.2f}")
    return table


def run_demo(base: Settings, workdir: Path, members: int, out: Console, *,
             page_seconds: float = STATUS_PAGE_SECONDS) -> None:
    """The story on ``out``; the log lines of its runs go to ``workdir/demo.log``, not into the story.
    It ends with what an operator sees: the daemon's status page for ``page_seconds`` (0: not at
    all), and ``status``'s table."""
    settings = demo_settings(base, workdir)
    log_path = workdir / "demo.log"
    with log_path.open("w", encoding="utf-8") as log_file:
        configure_logging(settings.log_level, "json", stream=log_file)
        try:
            _story(settings, members, out, log_path)
        finally:
            configure_logging(base.log_level, base.log_format)
    if page_seconds > 0:
        _operator_view(workdir, out, log_path, page_seconds)


def demo_environment(workdir: Path, http_address: str = "") -> dict[str, str]:
    """The environment in which `crm-esp-sync` commands see the demo's database and master key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_ESP_SYNC_")}
    env |= {"CRM_ESP_SYNC_DATABASE_URL": f"sqlite:///{workdir / 'crm-esp-sync.db'}",
            "CRM_ESP_SYNC_MASTER_KEY_FILE": str(workdir / "master.key"), "CRM_ESP_SYNC_LOG_FORMAT": "json"}
    return env | ({"CRM_ESP_SYNC_HTTP_ADDRESS": http_address} if http_address else {})


def _operator_view(workdir: Path, out: Console, log_path: Path, seconds: float) -> None:
    """`crm-esp-sync run` with the status page on a free loopback port for ``seconds``, then `status`."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    env = demo_environment(workdir, address)
    with log_path.open("a", encoding="utf-8") as log_file:
        daemon = subprocess.Popen([sys.executable, "-m", "sync", "run"], env=env, stdout=log_file,
                                  stderr=log_file)
        try:
            deadline = time.monotonic() + 30
            while not _answers(f"http://{address}/healthz"):
                if daemon.poll() is not None or time.monotonic() > deadline:
                    out.print(f"[bold]8. The daemon[/bold] did not start its status page; see {log_path}")
                    return
                time.sleep(0.2)
            out.print(f"[bold]8. The daemon[/bold] (`crm-esp-sync run`, HTTP_ADDRESS={address}) serves the status "
                      f"page at http://{address}/ (also /healthz and /metrics) for {seconds:g} s; "
                      "`crm-esp-sync status` says:")
            status = subprocess.run([sys.executable, "-m", "sync", "status"], env=env | {"COLUMNS": str(out.width)},
                                    capture_output=True,
                                    text=True, timeout=60, check=False)
            out.print(status.stdout.rstrip(), markup=False, highlight=False, soft_wrap=True)
            time.sleep(seconds)
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
    out.print("   (the daemon stopped on SIGTERM; run it yourself: "
              f"{' '.join(f'{k}={v}' for k, v in env.items() if k.startswith('CRM_ESP_SYNC_'))} crm-esp-sync run)")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


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
    wapcrm, wapcrm_key = _wapcrm_sandbox(engine, settings)
    postatr, postatr_login = _postatr_sandbox()
    sandboxes: dict[str, PostacellSandbox | EuromsgSandbox | MailMasterPlusSandbox | WapcrmSandbox
                    | PostatrSandbox] = {
        "postacell": sandbox, "euromsg": euromsg, "mailmasterplus": mmp, "wapcrm": wapcrm, "postatr": postatr}
    vault = Vault(settings.master_keys)
    with serve_in_thread(sandbox.app) as url, serve_in_thread(euromsg.app) as euromsg_url, \
            serve_in_thread(mmp.app) as mmp_url, serve_in_thread(wapcrm.app) as wapcrm_url, \
            serve_in_thread(postatr.app) as postatr_url:
        mapped = ", ".join(f"{crm_list}->{entry['nl_id']}" for crm_list, entry in mapping.items())
        out.print(f"[bold]2. Sandboxes[/bold] served over real HTTP on localhost: Postacell at {url}/api/v1/ "
                  f"({', '.join(TENANTS)}; no rate limit on these demo connections), Euromsg Express at "
                  f"{euromsg_url}/ ({EUROMSG_TENANT}, İYS on), MailMasterPlus at {mmp_url}/ ({MMP_TENANT}: "
                  f"CRM lists mapped to panel lists {mapped})")
        out.print(f"   and WapCRM at {wapcrm_url}/api/ ({WAPCRM_TENANT}: pull-only, its call centre's conversations "
                  "and WhatsApp messages come back, linked to CRM members by phone)")
        out.print(f"   and Postatr at {postatr_url}/api.asmx/ ({POSTATR_TENANT}: members upserted by StartProcess with "
                  "ProcessType DataOnly only, each CRM list under its own derived ListId)")
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
            registry.add_connection(session, vault, POSTATR_TENANT, "postatr", postatr_login,
                                    base_url=f"{postatr_url}/api.asmx/",
                                    settings={"lists": {"L1": {"member_groups": "1354"}}})
            registry.add_connection(session, vault, WAPCRM_TENANT, "wapcrm", {"secret_key": wapcrm_key},
                                    base_url=f"{wapcrm_url}/api/", settings={"messages_refresh_per_run": 5})

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
        out.print(f"   {_wapcrm_meanwhile(engine, settings, wapcrm, wapcrm_key)}")
        out.print(f"   {_postatr_meanwhile(engine, settings, postatr, postatr_login['username'])}")
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
    _wapcrm_summary(engine, out)
    _postatr_summary(engine, out, postatr)
    hint = "'select kind, status, counts from sync_runs'"
    out.print(f"   explore: sqlite3 {settings.database_url.removeprefix('sqlite:///')} {hint}")
    out.print(f"   the runs' log lines: {log_path}")
    engine.dispose()


# --- the WapCRM tenant ----------------------------------------------------------------------


def _wapcrm_phones(engine: sa.Engine, settings: Settings) -> dict[str, str]:
    m = crm_tables(settings.crm).members
    with engine.connect() as conn:
        return {r.id: r.phone for r in conn.execute(sa.select(m.c.id, m.c.phone).where(
            m.c.tenant_id == WAPCRM_TENANT, m.c.deleted_at.is_(None)).order_by(m.c.id)) if r.phone}


def _wapcrm_sandbox(engine: sa.Engine, settings: Settings) -> tuple[WapcrmSandbox, str]:
    """WapCRM with activity for 15 of the tenant's CRM phones (written as CRMs write them: with
    spaces, +90 or a leading 0) and two CRM phones nobody can call."""
    from sync.phones import normalize_phone

    m = crm_tables(settings.crm).members
    phones = _wapcrm_phones(engine, settings)
    spelled = {member_id: f"0{phone[2:5]} {phone[5:8]} {phone[8:10]} {phone[10:]}" if n % 3 == 0 else
               (f"+{phone}" if n % 3 == 1 else phone) for n, (member_id, phone) in enumerate(sorted(phones.items()))}
    with engine.begin() as conn:
        for member_id, phone in spelled.items():
            conn.execute(m.update().where(m.c.tenant_id == WAPCRM_TENANT, m.c.id == member_id).values(phone=phone))
        for member_id, phone in WAPCRM_BAD_PHONES:
            conn.execute(m.update().where(m.c.tenant_id == WAPCRM_TENANT, m.c.id == member_id).values(phone=phone))
    key = f"{WAPCRM_TENANT}-secret-key-2026"
    wapcrm = WapcrmSandbox({key: "Karadeniz Ticaret"}, seed=42)
    bad = {member_id for member_id, _ in WAPCRM_BAD_PHONES}
    chosen = [normalize_phone(phone) for member_id, phone in sorted(phones.items()) if member_id not in bad][:15]
    wapcrm.seed_activity(key, chosen, days=5, messages=3)
    wapcrm.add_conversation(key, "0216 444 00 00", utcnow() - dt.timedelta(hours=2))   # a caller not in the CRM
    return wapcrm, key


def _wapcrm_meanwhile(engine: sa.Engine, settings: Settings, wapcrm: WapcrmSandbox, key: str) -> str:
    """A member who had no activity calls in and writes on WhatsApp: the next run reads that one
    member's messages, not the whole CRM's."""
    from sync.phones import normalize_phone

    phones = _wapcrm_phones(engine, settings)
    member_id, raw = sorted(phones.items())[-1]
    phone = normalize_phone(raw)
    now = utcnow()
    wapcrm.add_conversation(key, phone, now - dt.timedelta(minutes=10), conversationResultDirection=2,
                            callResultParent="Ulaşıldı", callResultChild="Satış yapıldı", note="Sipariş alındı")
    wapcrm.add_message(key, phone, "Siparişimi WhatsApp'tan da onaylıyorum.", now - dt.timedelta(minutes=5))
    wapcrm.add_message(key, phone, "Teşekkürler, siparişiniz hazırlanıyor.", now - dt.timedelta(minutes=4),
                       source="ME")
    return (f"{WAPCRM_TENANT}'s member {member_id} ({phone}) called the call centre and wrote on WhatsApp: "
            "the next run reads that member's messages, and 5 quiet members' (messages_refresh_per_run), "
            "not the whole CRM's")


def _wapcrm_summary(engine: sa.Engine, out: Console) -> None:
    """Conversations and messages linked to CRM members by phone, and the phones rejected."""
    from sync.models import WapcrmConversation, WapcrmMemberPhone, WapcrmMessage
    from sync.providers.wapcrm.api import DIRECTIONS

    with engine.connect() as conn:
        wapcrm = sa.select(Connection.id).join(Tenant).where(Tenant.slug == WAPCRM_TENANT).scalar_subquery()
        conversations = conn.scalar(sa.select(sa.func.count()).select_from(WapcrmConversation)
                                    .where(WapcrmConversation.connection_id == wapcrm))
        messages = conn.scalar(sa.select(sa.func.count()).select_from(WapcrmMessage)
                               .where(WapcrmMessage.connection_id == wapcrm))
        linked = conn.execute(
            sa.select(WapcrmMemberPhone.crm_member_id, WapcrmMemberPhone.phone, sa.func.count(sa.distinct(
                WapcrmMessage.id)), sa.func.count(sa.distinct(WapcrmConversation.id)))
            .join(WapcrmMessage, sa.and_(WapcrmMessage.connection_id == WapcrmMemberPhone.connection_id,
                                         WapcrmMessage.phone == WapcrmMemberPhone.phone), isouter=True)
            .join(WapcrmConversation, sa.and_(WapcrmConversation.connection_id == WapcrmMemberPhone.connection_id,
                                              WapcrmConversation.phone == WapcrmMemberPhone.phone), isouter=True)
            .where(WapcrmMemberPhone.connection_id == wapcrm)
            .group_by(WapcrmMemberPhone.crm_member_id, WapcrmMemberPhone.phone)
            .having(sa.func.count(sa.distinct(WapcrmMessage.id)) + sa.func.count(sa.distinct(WapcrmConversation.id))
                    > 0)
            .order_by(WapcrmMemberPhone.crm_member_id)).all()
        example = linked[-1] if linked else None
        last_call = conn.execute(sa.select(WapcrmConversation).where(
            WapcrmConversation.connection_id == wapcrm, WapcrmConversation.phone == example.phone)
            .order_by(WapcrmConversation.occurred_at.desc()).limit(1)).first() if example else None
        chat = conn.execute(sa.select(WapcrmMessage.direction, WapcrmMessage.text).where(
            WapcrmMessage.connection_id == wapcrm, WapcrmMessage.phone == example.phone)
            .order_by(WapcrmMessage.sent_at)).all() if example else []
        rejects = conn.execute(sa.select(Reject.crm_member_id, Reject.reason).where(
            Reject.connection_id == wapcrm, Reject.resolved_at.is_(None)).order_by(Reject.crm_member_id)).all()
    out.print(f"   WapCRM ({WAPCRM_TENANT}): {conversations} conversations and {messages} WhatsApp messages pulled; "
              f"{len(linked)} CRM members have activity linked by phone (nothing was sent to WapCRM)")
    if example is not None and last_call is not None:
        out.print(f"   e.g. member {example.crm_member_id} ({example.phone}): {example[3]} call(s), last "
                  f"{DIRECTIONS.get(last_call.direction or 0, '?')} by {last_call.user_name}: {last_call.result} / "
                  f"{last_call.sub_result}; {example[2]} message(s): "
                  + " | ".join(f"{direction}: {text}" for direction, text in chat[-3:]))
    for member_id, reason in rejects:
        out.print(f"   reject ({WAPCRM_TENANT}/wapcrm, phone): {member_id}: {reason}")


# --- the Postatr tenant ---------------------------------------------------------------------


def _postatr_sandbox() -> tuple[PostatrSandbox, dict[str, str]]:
    login = {"username": f"{POSTATR_TENANT}-api", "password": f"{POSTATR_TENANT}-Şifre-2026",
             "encrypted_id": "5E697677-2H34-486F-871D-12FD8A5FBFC4"}
    return PostatrSandbox({login["username"]: (login["password"], login["encrypted_id"])}, seed=42), login


def _postatr_meanwhile(engine: sa.Engine, settings: Settings, postatr: PostatrSandbox, account: str) -> str:
    """A campaign sent from Postatr's panel; in the CRM one member deleted (KVKK) and one who now refuses
    (İYS RET): Postatr can do neither through its API, so both become rejects telling what to do."""
    camp_id = postatr.simulate_campaign(account, subject="Kasım fırsatları")
    m = crm_tables(settings.crm).members
    pushed = sorted({row["Memberid"] for row in postatr.members(account) if row["active"]})
    deleted, refused = pushed[0], pushed[1]
    with engine.begin() as conn:
        conn.execute(m.update().where(m.c.tenant_id == POSTATR_TENANT, m.c.id == deleted)
                     .values(deleted_at=utcnow(), updated_at=utcnow()))
        conn.execute(m.update().where(m.c.tenant_id == POSTATR_TENANT, m.c.id == refused)
                     .values(consent_status="RET", consent_date=utcnow(), updated_at=utcnow()))
    return (f"{POSTATR_TENANT} sent campaign {camp_id} from the Postatr panel; in its CRM {deleted} was deleted "
            f"(KVKK) and {refused} refused consent (İYS RET)")


def _postatr_summary(engine: sa.Engine, out: Console, postatr: PostatrSandbox) -> None:
    """What Postatr could not do (rejects with what a person must do), and the DataOnly guarantee."""
    with engine.connect() as conn:
        rejects = conn.execute(sa.select(Reject.crm_member_id, Reject.crm_list_id, Reject.reason).join(Connection)
                               .where(Reject.resolved_at.is_(None), Connection.provider == "postatr",
                                      Reject.provider_code != "validation")
                               .order_by(Reject.crm_member_id, Reject.crm_list_id).limit(4)).all()
    kinds = sorted({kind or "(none)" for kind in postatr.process_types})
    out.print(f"   Postatr: {len(postatr.process_types)} StartProcess call(s), ProcessType {', '.join(kinds)}; "
              f"campaigns started by the daemon: {len(postatr.campaigns_started_by_requests)}")
    for member_id, crm_list, reason in rejects:
        out.print(f"   reject ({POSTATR_TENANT}/postatr): {member_id} in list {crm_list}: {reason}")
