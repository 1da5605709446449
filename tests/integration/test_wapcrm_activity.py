"""WapCRM on every database: conversations and messages pulled into local tables and linked to CRM
members by phone; reference data refreshed; only members with news have their messages read; the
conversation watermark survives a crash and the look-back window is de-duplicated; unusable phones
are rejects; nothing is ever sent to WapCRM; no secret in the run record or the logs. Every reading
the sandbox serves (its dialects) links the same activity; a call saved back-dated is read by the
periodic wide re-read; every quiet phone's messages are read within ``messages_refresh_days``."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from sync import db, registry
from sync.config import CrmSource, Secret, Settings
from sync.crypto import Vault, generate_key
from sync.engine.activity import (
    CONVERSATIONS_REREAD_STREAM,
    CONVERSATIONS_STREAM,
    MEMBERS_STREAM,
    MESSAGES_REFRESH_STREAM,
)
from sync.engine.state import watermark_for
from sync.models import (
    Connection,
    Reject,
    SyncRun,
    WapcrmCallResult,
    WapcrmConversation,
    WapcrmInstance,
    WapcrmMemberPhone,
    WapcrmMessage,
    WapcrmUser,
    Watermark,
)
from sync.phones import normalize_phone
from sync.providers.wapcrm import api
from sync.providers.wapcrm.sandbox import DIALECTS
from sync.sample import seed_crm
from sync.sandbox import FaultPlan, WapcrmSandbox
from tests.integration.providers.conftest import TENANT, World
from tests.integration.providers.harness_wapcrm import WapcrmHarness

ISTANBUL = dt.timezone(dt.timedelta(hours=3))


def make_world(engine: sa.Engine, settings: dict[str, Any] | None = None,
               harness: WapcrmHarness | None = None) -> World:
    config = Settings(database_url=str(engine.url), master_keys=(Secret(generate_key()),), lookback_seconds=300,
                      worker_id="test-worker")
    seed_crm(engine, CrmSource(), [TENANT], 40, seed=11)
    harness = harness or WapcrmHarness()
    harness.start()
    with db.transaction(db.session_factory(engine)) as session:
        registry.add_tenant(session, TENANT)
        connection = registry.add_connection(session, Vault(config.master_keys), TENANT, "wapcrm",
                                             harness.credentials, settings={**harness.settings, **(settings or {})},
                                             base_url=harness.base_url)
    return World(engine, config, harness, connection.id)


class DialectHarness(WapcrmHarness):
    """The harness over the sandbox in one dialect. TODO(lead): harness_wapcrm.py (not this
    session's file) takes ``dialects = DIALECTS`` and passes ``dialect=self.dialect`` itself."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect

    def start(self, faults: FaultPlan | None = None, clock: Any = None) -> None:
        extra = {"clock": clock} if clock else {}
        self.sandbox = WapcrmSandbox({self.key: "Acme"}, secret_header=self.secret_header, faults=faults, seed=3,
                                     dialect=self.dialect, **extra)


def set_settings(world: World, **values: Any) -> None:
    """Connection settings written as stored, for the settings sync/providers/specs.py does not
    declare yet (request_reading, conversations_reread_*, messages_refresh_days: asked of the lead)."""
    with db.transaction(db.session_factory(world.engine)) as session:
        connection = session.get_one(Connection, world.connection_id)
        connection.settings = {**connection.settings, **values}


def model_of(request: httpx.Request) -> dict[str, Any]:
    """A request's model in either request reading (GET query parameters or a JSON body)."""
    if request.method == "GET":
        return dict(request.url.params)
    model = json.loads(request.content or b"{}")
    assert isinstance(model, dict)
    return model


def age(world: World, days: int, *streams: str, phones: bool = False) -> None:
    """Time passes for the stored state: the given watermarks and (``phones``) every phone's last
    message read move ``days`` into the past, as if the last runs had been that much earlier."""
    shift = dt.timedelta(days=days)
    with db.transaction(db.session_factory(world.engine)) as session:
        for stream in streams:
            row = session.get_one(Watermark, (world.connection_id, stream))
            row.value = (dt.datetime.fromisoformat(row.value) - shift).isoformat()
        if phones:
            for phone in session.scalars(sa.select(WapcrmMemberPhone)):
                if phone.messages_pulled_at is not None:
                    phone.messages_pulled_at -= shift


@pytest.fixture
def world(engine: sa.Engine) -> Iterator[World]:
    yield make_world(engine, {"messages_refresh_per_run": 0, "lookback_days": 1, "first_days": 5})


def wap(world: World) -> WapcrmHarness:
    assert isinstance(world.harness, WapcrmHarness)
    return world.harness


def member_phones(world: World) -> dict[str, str]:
    """CRM member id -> normalised phone, straight from the CRM."""
    m = world.crm.members
    with world.engine.connect() as conn:
        return {r.id: normalize_phone(r.phone) for r in conn.execute(sa.select(m.c.id, m.c.phone).where(
            m.c.tenant_id == TENANT, m.c.deleted_at.is_(None))) if r.phone}


def rows(world: World, query: Any) -> list[Any]:
    with world.engine.connect() as conn:
        return list(conn.execute(query))


def count(world: World, model: Any) -> int:
    return int(world.scalar(sa.select(sa.func.count()).select_from(model)))


def linked_activity(world: World) -> dict[str, tuple[int, int]]:
    """member id -> (conversations, messages) linked to it by phone."""
    phones = {r.crm_member_id: r.phone for r in rows(world, sa.select(WapcrmMemberPhone))}
    conversations = rows(world, sa.select(WapcrmConversation.phone, sa.func.count()).group_by(WapcrmConversation.phone))
    messages = rows(world, sa.select(WapcrmMessage.phone, sa.func.count()).group_by(WapcrmMessage.phone))
    by_phone_c, by_phone_m = dict(conversations), dict(messages)
    return {member: (by_phone_c.get(phone, 0), by_phone_m.get(phone, 0)) for member, phone in phones.items()
            if by_phone_c.get(phone) or by_phone_m.get(phone)}


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def test_a_run_links_conversations_and_messages_to_members_and_sends_nothing(world: World) -> None:
    phones = member_phones(world)
    active = sorted(phones)[:8]
    wap(world).seed([phones[m] for m in active], days=3, messages=3)
    wap(world).conversation("0212 555 66 77", now())             # a number no member has
    result = world.run()
    assert result.status == "succeeded", result.error
    assert linked_activity(world) == {member: (1, 3) for member in active}
    assert count(world, WapcrmConversation) == 9 and count(world, WapcrmMessage) == 24
    directions = {d for (d,) in rows(world, sa.select(WapcrmMessage.direction).distinct())}
    assert directions == {"ME", "CUSTOMER"}
    kept = rows(world, sa.select(WapcrmConversation).where(WapcrmConversation.phone == "902125556677"))[0]
    assert kept.direction in (1, 2, 3, 4) and kept.user_name and kept.list_name == "Kasım Arama Listesi"
    assert kept.result == "Ulaşıldı" and kept.sub_result == "Bilgi verildi" and kept.ring_seconds is not None
    # reference data
    assert count(world, WapcrmUser) == 2 and count(world, WapcrmInstance) == 2
    tree = {r.remote_id: r.parent_remote_id for r in rows(world, sa.select(WapcrmCallResult))}
    assert tree == {"23": None, "21": "23", "49": "23", "30": None, "31": "30"}
    # every member with a phone is tracked; only those with activity had their messages read
    assert count(world, WapcrmMemberPhone) == len(phones)
    assert sorted(wap(world).asked_phones()) == sorted({phones[m] for m in phones})    # first run: every number is new
    sandbox = wap(world).sandbox
    assert sandbox.sent_messages == [] and sandbox.saved_results == [] and sandbox.write_requests() == 0
    assert {method for method, _, _ in sandbox.request_log} == {"POST"}       # the document's JSON model, a read
    assert {path.removeprefix("/api/") for _, path, _ in sandbox.request_log} <= api.READ_PATHS


def test_later_runs_read_only_members_with_news(world: World) -> None:
    phones = member_phones(world)
    first, second, third = sorted(phones)[:3]
    wap(world).seed([phones[first]], days=1)
    world.run()
    wap(world).reset_log()
    assert world.run().status == "succeeded"
    assert wap(world).asked_phones() == []                          # nothing new: no message list read
    assert len(wap(world).asked_days()) == 2                        # lookback_days=1: yesterday and today
    wap(world).conversation(phones[second], now(), note="Geri arandı")
    wap(world).message(phones[second], "Tekrar merhaba", now())
    world.update_member(third, phone="0 (532) 000 11 22")
    wap(world).reset_log()
    result = world.run()
    assert result.status == "succeeded", result.error
    assert sorted(wap(world).asked_phones()) == sorted([phones[second], "905320001122"])
    assert result.counts["messages_pulled"] == 1 and result.counts["conversations_pulled"] == 1
    due = world.scalar(sa.select(sa.func.count()).select_from(WapcrmMemberPhone).where(
        WapcrmMemberPhone.messages_due.is_(True)))
    assert due == 0


def test_a_rolling_refresh_reads_a_bounded_number_of_quiet_members(engine: sa.Engine) -> None:
    world = make_world(engine, {"messages_refresh_per_run": 5})
    world.run()
    phones = member_phones(world)
    quiet = sorted(phones)[0]
    wap(world).message(phones[quiet], "Sessiz bir mesaj", now())     # no conversation: no activity signal
    asked: set[str] = set()
    for _ in range(len(set(phones.values())) // 5 + 1):
        wap(world).reset_log()
        result = world.run()
        assert len(wap(world).asked_phones()) == 5, result.counts
        asked.update(wap(world).asked_phones())
    assert asked == set(phones.values())
    assert world.scalar(sa.select(sa.func.count()).select_from(WapcrmMessage)) == 1


def test_the_look_back_re_reads_late_and_changed_conversations_without_duplicates(world: World) -> None:
    phones = member_phones(world)
    member = sorted(phones)[0]
    yesterday = now() - dt.timedelta(days=1)
    cid = wap(world).conversation(phones[member], yesterday, callResultParent="Ulaşılamadı", callResultChild="Meşgul")
    world.run()
    late = wap(world).conversation(phones[member], yesterday - dt.timedelta(minutes=5))   # filed late for yesterday
    wap(world).sandbox.change_conversation(wap(world).key, cid, callResultParent="Ulaşıldı",
                                           callResultChild="Satış yapıldı")
    result = world.run()
    assert result.counts["conversations_pulled"] == 1 and result.counts["conversations_updated"] == 1
    stored = {r.remote_id: r.sub_result for r in rows(world, sa.select(WapcrmConversation))}
    assert stored == {str(cid): "Satış yapıldı", str(late): "Bilgi verildi"}
    again = world.run()
    assert again.counts.get("conversations_pulled", 0) == 0 and again.counts["conversations_unchanged"] == 2
    assert count(world, WapcrmConversation) == 2


class Crash(Exception):
    """The worker dies in the middle of a run (not a network fault: nothing retries it)."""


def test_a_crash_between_days_resumes_from_the_last_committed_day(world: World) -> None:
    phones = sorted(set(member_phones(world).values()))
    today = now().astimezone(ISTANBUL).date()
    for back in range(5):                                  # one conversation on each of the five days read
        when = dt.datetime.combine(today - dt.timedelta(days=back), dt.time(12), ISTANBUL)
        wap(world).conversation(phones[back], when)
    asked: list[str] = []

    def crash_on_the_third_day(request: httpx.Request) -> None:
        if request.url.path.endswith("/" + api.CONVERSATIONS_PATH):
            asked.append(model_of(request)[api.START_DATE_PARAM])
            if len(asked) == 3:
                raise Crash("killed")
    crashed = world.run(hook=crash_on_the_third_day)
    assert crashed.status == "failed" and "Crash" in (crashed.error or "")
    with db.session_factory(world.engine)() as session:
        mark = watermark_for(session, world.connection_id, CONVERSATIONS_STREAM)
    first = today - dt.timedelta(days=4)
    assert mark == dt.datetime.combine(first + dt.timedelta(days=2), dt.time(), ISTANBUL)    # two days committed
    assert count(world, WapcrmConversation) == 2
    wap(world).reset_log()
    resumed = world.run()
    assert resumed.status == "succeeded", resumed.error
    # lookback_days=1: the last committed day again, then the rest; nothing twice
    assert wap(world).asked_days() == [(first + dt.timedelta(days=n)).isoformat() for n in range(1, 5)]
    assert count(world, WapcrmConversation) == 5
    with db.session_factory(world.engine)() as session:
        assert watermark_for(session, world.connection_id, CONVERSATIONS_STREAM) == dt.datetime.combine(
            today, dt.time(), ISTANBUL)


def test_a_crash_while_reading_messages_loses_no_due_member(world: World) -> None:
    phones = member_phones(world)
    active = sorted(phones)[:3]
    world.run()
    wap(world).seed([phones[m] for m in active], days=1, messages=2)

    def crash_on_messages(request: httpx.Request) -> None:
        if request.url.path.endswith("/" + api.MESSAGES_PATH):
            raise Crash("killed")
    assert world.run(hook=crash_on_messages).status == "failed"
    assert count(world, WapcrmConversation) == 3 and count(world, WapcrmMessage) == 0
    wap(world).reset_log()
    assert world.run().status == "succeeded"
    assert sorted(wap(world).asked_phones()) == sorted({phones[m] for m in active})
    assert linked_activity(world) == {m: (1, 2) for m in active}


def test_an_unusable_crm_phone_is_a_reject_with_a_reason_and_the_run_goes_on(world: World) -> None:
    ids = sorted(member_phones(world))
    world.update_member(ids[0], phone="12345")
    world.update_member(ids[1], phone="+49 30 1234567")
    world.update_member(ids[2], phone="0 (532) 123-45-67")
    world.update_member(ids[3], phone=None)
    result = world.run()
    assert result.status == "partial", result.error          # new rejects: someone should look
    reasons = dict(rows(world, sa.select(Reject.crm_member_id, Reject.reason).where(Reject.resolved_at.is_(None))))
    assert set(reasons) == {ids[0], ids[1]}
    assert "has 5 digits" in reasons[ids[0]] and "not a Turkish number" in reasons[ids[1]]
    assert all("cannot be linked" in reason for reason in reasons.values())
    tracked = {r.crm_member_id: r.phone for r in rows(world, sa.select(WapcrmMemberPhone))}
    assert tracked[ids[2]] == "905321234567" and ids[0] not in tracked and ids[3] not in tracked
    world.update_member(ids[0], phone="0532 765 43 21")
    assert world.run().status == "succeeded_with_rejects"
    still = rows(world, sa.select(Reject.crm_member_id).where(Reject.resolved_at.is_(None)))
    assert [r.crm_member_id for r in still] == [ids[1]]


def test_a_phone_wapcrm_refuses_is_that_members_reject(world: World) -> None:
    phones = member_phones(world)
    member = sorted(phones)[0]
    wap(world).sandbox.refused_phones.add(phones[member])
    result = world.run()
    assert result.status == "partial"
    reason = world.scalar(sa.select(Reject.reason).where(Reject.crm_member_id == member))
    assert "WapCRM refused the number" in reason and "requestID" in reason


def test_a_deleted_member_loses_its_phone_and_its_messages(world: World) -> None:
    phones = member_phones(world)
    member = sorted(phones)[0]
    wap(world).seed([phones[member]], days=1, messages=2)
    world.run()
    assert count(world, WapcrmMessage) == 2
    world.update_member(member, deleted_at=now())
    world.run()
    assert count(world, WapcrmMessage) == 0
    assert world.scalar(sa.select(sa.func.count()).select_from(WapcrmMemberPhone).where(
        WapcrmMemberPhone.crm_member_id == member)) == 0


def test_faults_are_survived_with_the_same_result_as_a_clean_run(engine: sa.Engine) -> None:
    world = make_world(engine, {"messages_refresh_per_run": 0})
    phones = member_phones(world)
    wap(world).seed([phones[m] for m in sorted(phones)[:6]], days=3, messages=2)
    world.restart_provider(FaultPlan(seed=5, error_rate=0.15, drop_rate=0.1, rate_limit_every=7, retry_after_s=0,
                                     apply_then_drop_rate=0.5))   # no write is ever sent, so nothing to apply
    wap(world).sandbox.envelope_failures = 2
    result = world.run()
    assert result.status == "succeeded", result.error
    assert wap(world).sandbox._faults.injected
    assert count(world, WapcrmConversation) == 6 and count(world, WapcrmMessage) == 12
    assert wap(world).sandbox.write_requests() == 0 and wap(world).sandbox.sent_messages == []


def test_a_wrong_key_fails_the_run_with_the_request_id_and_no_secret(engine: sa.Engine) -> None:
    harness = WapcrmHarness()
    world = make_world(engine, harness=harness)
    harness.sandbox._accounts = {"another-key-000": harness.sandbox._accounts[harness.key]}
    with capture_logs() as logs:
        result = world.run()
    assert result.status == "failed"
    assert "Geçersiz SecretKey" in (result.error or "") and "requestID" in (result.error or "")
    stored = world.scalar(sa.select(SyncRun.error).where(SyncRun.connection_id == world.connection_id))
    secret = harness.key
    assert secret not in (result.error or "") and secret not in stored and secret not in repr(logs)


def test_the_secret_header_setting_reaches_the_provider(engine: sa.Engine) -> None:
    harness = WapcrmHarness()
    harness.secret_header = "X-WapCrm-SecretKey"
    world = make_world(engine, {"secret_header": "X-WapCrm-SecretKey"}, harness=harness)
    assert world.run().status == "succeeded"


def test_backfill_reads_the_first_days_again_and_duplicates_nothing(world: World) -> None:
    phones = member_phones(world)
    wap(world).seed([phones[m] for m in sorted(phones)[:4]], days=3, messages=1)
    world.run()
    before = (count(world, WapcrmConversation), count(world, WapcrmMessage))
    wap(world).reset_log()
    result = world.run(backfill=True)
    assert result.status == "succeeded", result.error
    assert len(wap(world).asked_days()) == 5
    assert (count(world, WapcrmConversation), count(world, WapcrmMessage)) == before == (4, 4)
    with db.session_factory(world.engine)() as session:
        assert watermark_for(session, world.connection_id, MEMBERS_STREAM) is not None
    gone = sorted(phones)[0]                           # a CRM that deletes rows for real: found by the full read
    world.hard_delete_member(gone)
    assert world.run(backfill=True).status == "succeeded"
    assert gone not in linked_activity(world) and count(world, WapcrmMessage) == 3
    assert world.scalar(sa.select(sa.func.count()).select_from(WapcrmMemberPhone).where(
        WapcrmMemberPhone.crm_member_id == gone)) == 0


def test_a_conversation_filed_for_a_day_already_read_in_this_run_arrives_next_run(world: World) -> None:
    """The provider changes under a running run: the look-back window catches what a day got late."""
    phones = member_phones(world)
    member = sorted(phones)[0]
    yesterday = now().astimezone(ISTANBUL) - dt.timedelta(days=1)
    filed: list[int] = []

    def file_late(request: httpx.Request) -> None:
        if (request.url.path.endswith("/" + api.CONVERSATIONS_PATH) and not filed
                and model_of(request)[api.START_DATE_PARAM] == now().astimezone(ISTANBUL).date().isoformat()):
            filed.append(wap(world).conversation(phones[member], yesterday))     # yesterday, already read
    assert world.run(hook=file_late).status == "succeeded" and filed
    assert count(world, WapcrmConversation) == 0
    result = world.run()
    assert result.counts["conversations_pulled"] == 1
    assert linked_activity(world) == {member: (1, 0)}



# --- issue 22: every reading, back-dated calls, quiet phones ---------------------------------------

@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_dialect_links_the_same_activity_and_a_no_change_run_reads_and_writes_nothing(
        engine: sa.Engine, dialect: str) -> None:
    world = make_world(engine, {"messages_refresh_per_run": 0, "lookback_days": 1, "first_days": 5},
                       harness=DialectHarness(dialect))
    if dialect == "get-only":           # a server that answers GET only: the request reading setting
        set_settings(world, request_reading=api.GET_QUERY)
    phones = member_phones(world)
    active = sorted(phones)[:5]
    wap(world).seed([phones[m] for m in active], days=3, messages=3)
    result = world.run()
    assert result.status == "succeeded", result.error
    assert linked_activity(world) == {member: (1, 3) for member in active}
    stored = {r.remote_id: (r.occurred_at, r.phone, r.direction, r.ring_seconds, r.call_seconds)
              for r in rows(world, sa.select(WapcrmConversation))}
    account = wap(world).sandbox.account(wap(world).key)
    for remote_id, row in account.conversations.items():
        when = dt.datetime.fromisoformat(row["createDate"]).replace(tzinfo=ISTANBUL)
        occurred = stored[str(remote_id)][0]
        assert occurred is not None and occurred.replace(tzinfo=occurred.tzinfo or dt.UTC) == when, dialect
        assert stored[str(remote_id)][1:] == (normalize_phone(row["phoneNumber"]), row["conversationResultDirection"],
                                              row["ringTime"], row["callTime"])
    assert count(world, WapcrmInstance) == 2 and count(world, WapcrmUser) == 2 and count(world, WapcrmCallResult) == 5
    wap(world).reset_log()
    again = world.run()
    assert again.status == "succeeded", again.error
    assert wap(world).asked_phones() == [] and wap(world).sandbox.write_requests() == 0
    assert again.counts.get("conversations_pulled", 0) == 0 and again.counts.get("messages_pulled", 0) == 0
    assert wap(world).sandbox.sent_messages == [] and wap(world).sandbox.saved_results == []


def test_a_back_dated_call_is_read_by_the_next_wide_re_read_within_its_period(world: World) -> None:
    """Item 18: ``addconversation`` takes the call's own time, so a call saved today may be dated
    weeks back, before the look-back. Once ``conversations_reread_every_days`` (7) have passed,
    a run re-reads every day from ``conversations_reread_days`` (30) before the last re-read: the
    call arrives; one dated earlier than that is outside the stated bound."""
    phones = member_phones(world)
    member, other = sorted(phones)[:2]
    assert world.run().status == "succeeded"                 # the first run counts as a re-read
    back_dated = wap(world).conversation(phones[member], now() - dt.timedelta(days=20))
    too_old = wap(world).conversation(phones[other], now() - dt.timedelta(days=45))
    wap(world).reset_log()
    quiet = world.run()
    assert quiet.counts.get("conversations_pulled", 0) == 0 and len(wap(world).asked_days()) == 2
    age(world, 7, CONVERSATIONS_REREAD_STREAM)               # a week has passed since that re-read
    with db.session_factory(world.engine)() as session:
        last = watermark_for(session, world.connection_id, CONVERSATIONS_REREAD_STREAM)
    assert last is not None
    wap(world).reset_log()
    wide = world.run()
    assert wide.status == "succeeded", wide.error
    today = now().astimezone(ISTANBUL).date()
    first = (last - dt.timedelta(days=30)).astimezone(ISTANBUL).date()
    asked = wap(world).asked_days()
    assert asked == [(first + dt.timedelta(days=n)).isoformat() for n in range((today - first).days + 1)]
    assert len(asked) == 38 and wide.counts["conversation_days_reread"] == 36     # the cost, once a week
    assert wide.counts["conversations_pulled"] == 1
    stored = {r.remote_id for r in rows(world, sa.select(WapcrmConversation))}
    assert str(back_dated) in stored and str(too_old) not in stored
    assert phones[member] in wap(world).asked_phones()      # its messages are read, as for any new call
    wap(world).reset_log()
    assert world.run().status == "succeeded" and len(wap(world).asked_days()) == 2   # the next is a week away


def test_a_crash_in_a_wide_re_read_repeats_it_whole(world: World) -> None:
    phones = member_phones(world)
    world.run()
    back_dated = wap(world).conversation(phones[sorted(phones)[0]], now() - dt.timedelta(days=25))
    age(world, 8, CONVERSATIONS_REREAD_STREAM)
    asked: list[str] = []

    def crash_on_the_fifth_day(request: httpx.Request) -> None:
        if request.url.path.endswith("/" + api.CONVERSATIONS_PATH):
            asked.append(model_of(request)[api.START_DATE_PARAM])
            if len(asked) == 5:
                raise Crash("killed")
    assert world.run(hook=crash_on_the_fifth_day).status == "failed"
    assert str(back_dated) not in {r.remote_id for r in rows(world, sa.select(WapcrmConversation))}
    wap(world).reset_log()
    assert world.run().status == "succeeded"
    assert wap(world).asked_days()[0] == asked[0]                  # the re-read starts again where it started
    assert str(back_dated) in {r.remote_id for r in rows(world, sa.select(WapcrmConversation))}


def test_every_quiet_phone_is_read_within_messages_refresh_days(world: World) -> None:
    """Item 19: a WhatsApp message on a phone without a call is no activity signal. Each nightly
    run reads the stalest phones ÷ 7 (``messages_refresh_days``), and any phone last read 6½ days
    ago or more: every phone is read once in 7 nights, and the quiet message arrives."""
    assert world.run().status == "succeeded"                 # the first run: every number is new, read once
    phones = sorted(set(member_phones(world).values()))
    quiet = phones[len(phones) // 2]
    wap(world).message(quiet, "Sessiz bir mesaj", now())
    read_on: dict[str, list[int]] = {phone: [] for phone in phones}
    per_night: list[int] = []
    for night in range(1, 9):
        age(world, 1, MESSAGES_REFRESH_STREAM, phones=True)
        wap(world).reset_log()
        result = world.run()
        assert result.status == "succeeded", result.error
        asked = wap(world).asked_phones()
        per_night.append(len(asked))
        for phone in asked:
            read_on[phone].append(night)
    share = len(phones) // 7
    assert per_night[:6] == [share] * 6                      # the cost: phones ÷ 7 a night
    assert per_night[6] == len(phones) - 6 * share           # the rest, now 7 nights old
    assert all(nights[0] <= 7 for nights in read_on.values())
    assert all(len(nights) == 1 for phone, nights in read_on.items() if nights[0] > 1)
    assert rows(world, sa.select(WapcrmMessage.text).where(WapcrmMessage.phone == quiet)) == [("Sessiz bir mesaj",)]


def test_messages_refresh_days_zero_keeps_only_the_rolling_refresh(world: World) -> None:
    set_settings(world, messages_refresh_days=0)
    world.run()
    age(world, 30, MESSAGES_REFRESH_STREAM, phones=True)
    wap(world).reset_log()
    assert world.run().status == "succeeded" and wap(world).asked_phones() == []
