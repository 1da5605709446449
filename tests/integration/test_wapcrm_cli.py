"""`sandbox serve wapcrm` and a WapCRM connection used through the real command line, over real HTTP:
the activity of the served phones lands linked to the CRM members, the key never in the output."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from sync import db
from sync.config import CrmSource
from sync.crm import create_reference_schema, crm_tables
from sync.crypto import generate_key
from sync.models import WapcrmConversation, WapcrmMemberPhone, WapcrmMessage
from sync.sample import seed_crm
from sync.sandbox import serve_in_thread
from tests.conftest import Cli

KEY = "karadeniz-gizli-anahtar-31"


def test_a_served_sandbox_and_a_connection_pull_activity_linked_to_members(
        cli: Cli, started: list[Any], db_url: str) -> None:
    engine = db.create_engine(db_url)
    db.upgrade(engine)
    create_reference_schema(engine, CrmSource())
    seed_crm(engine, CrmSource(), ["karadeniz"], 10, seed=3)
    m = crm_tables(CrmSource()).members
    with engine.connect() as conn:
        phones = {r.id: r.phone for r in conn.execute(sa.select(m.c.id, m.c.phone).where(m.c.tenant_id == "karadeniz"))}
    env = {"CRM_ESP_SYNC_DATABASE_URL": db_url, "CRM_ESP_SYNC_MASTER_KEY": generate_key(),
           "CRM_ESP_SYNC_LOG_FORMAT": "json"}
    first, second = sorted(phones)[:2]
    served = cli("sandbox", "serve", "wapcrm", "--port", "8124", "--account", KEY,
                 "--phone", phones[first], "--phone", f"+{phones[second]}")
    assert served.code == 0, served.err
    assert "wapcrm sandbox on http://127.0.0.1:8124/api/" in served.out and KEY not in served.out
    assert cli("sandbox", "serve", "wapcrm", "--port", "1", "--phone", "12").code == 2
    try:
        with serve_in_thread(started[0].app) as url:
            assert cli("tenant", "add", "karadeniz", env=env).code == 0
            added = cli("connection", "add", "karadeniz", "wapcrm", "--base-url", f"{url}/api/", "--credentials", "-",
                        env=env, stdin=json.dumps({"secret_key": KEY}))
            assert added.code == 0, added.err
            tested = cli("connection", "test", "karadeniz", "wapcrm", env=env)
            assert tested.code == 0 and "health check: ok" in tested.out, tested.out + tested.err  # key opens users
            assert "login: ok (key accepted, reference data read: " in tested.out, tested.out
            assert "activity: ok (conversations of " in tested.out, tested.out
            once = cli("once", env=env)
            assert once.code == 0, once.out + once.err
            for output in (added, tested, once):
                assert KEY not in output.out + output.err
        with engine.connect() as conn:
            linked = conn.execute(sa.select(WapcrmMemberPhone.crm_member_id, sa.func.count(sa.distinct(
                WapcrmMessage.id)), sa.func.count(sa.distinct(WapcrmConversation.id)))
                .join(WapcrmMessage, WapcrmMessage.phone == WapcrmMemberPhone.phone)
                .join(WapcrmConversation, WapcrmConversation.phone == WapcrmMemberPhone.phone)
                .group_by(WapcrmMemberPhone.crm_member_id).order_by(WapcrmMemberPhone.crm_member_id)).all()
        assert [tuple(row) for row in linked] == [(first, 3, 1), (second, 3, 1)]
        assert started[0].sent_messages == [] and started[0].write_requests() == 0
    finally:
        engine.dispose()
