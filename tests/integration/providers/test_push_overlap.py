"""Local work under the wire (issue 26): the next push window is planned while the one before it
is pushed (sync/engine/push.py, ``_Pipeline``). These tests try to break what that could break,
with windows of a few members so that every run has many of them (``small_windows``):

- a chunk planned while the window before it was in flight needs a member or an address that
  window changes (an e-mail handed from one member to another across windows): it must wait for
  that window's answers, or a contact is created twice or an address is left to the wrong member;
- an unsubscribe recorded by the window in flight (its refresh before updates) concerns a member
  of the window planned meanwhile: that window must be planned again, or the member is pushed
  active over the provider's record of the opt-out;
- a stop at a safe point while a window is in flight: that window is committed with its
  watermark, and the next run finishes the work with nothing sent twice;
- several windows on the wire at once (``push.PUSH_DEPTH``), the first one's answers held back
  as a Retry-After holds them: the recordings still commit in the windows' order, a chunk that
  needs the first one waits for it, a stop commits every window sent, a recording that fails
  records no later window.

On SQLite the next window is planned in the event loop between the push's awaits; on PostgreSQL
and MariaDB in a worker thread (the matrix runs both).
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import datetime as dt
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from sync.engine import push
from sync.engine.context import RunContext
from sync.models import MemberLink, MemberStatus, Reject
from sync.providers.base import RemoteStatus
from sync.stopping import STOP
from tests.integration.providers.conftest import World
from tests.integration.providers.test_provider_suite import assert_mirrors_crm, capabilities, is_blocked, require

COMPLETED = ("succeeded", "succeeded_with_rejects", "partial")
#: Members per chunk and per window in these tests.
WINDOW = 8


@pytest.fixture(autouse=True)
def ahead_without_a_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests hold answers back instead of answering 429: windows go out ahead at once."""
    monkeypatch.setattr(push, "PUSH_AHEAD_ONLY_WHEN_THROTTLED", False)


@pytest.fixture
def pushed_windows(monkeypatch: pytest.MonkeyPatch) -> list[set[str]]:
    """The members each window pushed (upserts and removals), one set per window sent."""
    windows: list[set[str]] = []
    send = push._push

    async def recorded(ctx: RunContext, plan: Any, *args: Any) -> None:
        windows.append({item.key.crm_member_id for item in (*plan.upserts, *plan.deletes)})
        await send(ctx, plan, *args)

    monkeypatch.setattr(push, "_push", recorded)
    return windows


def assert_nobody_pushed_twice(windows: list[set[str]]) -> None:
    seen: dict[str, int] = {}
    for number, members in enumerate(windows):
        for member_id in members:
            assert member_id not in seen, f"{member_id} pushed in windows {seen[member_id]} and {number}"
            seen[member_id] = number


@pytest.fixture
def overlapped(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bool]]:
    """Windows of ``WINDOW`` members, and for every chunk planned: was a window in flight then?"""
    post_init = RunContext.__post_init__

    def small(self: RunContext, *args: Any) -> None:
        post_init(self, *args)
        self.caps = dataclasses.replace(self.caps, max_batch=WINDOW, push_window=None)

    monkeypatch.setattr(RunContext, "__post_init__", small)
    seen: list[bool] = []
    plan = push._Pipeline.plan

    async def watched(self: push._Pipeline, chunk_ids: Any) -> Any:
        seen.append(any(f.task is not None and not f.task.done() for f in self.flights))
        return await plan(self, chunk_ids)

    monkeypatch.setattr(push._Pipeline, "plan", watched)
    yield seen


def changed_in_order(world: World, emails: list[str], **values: Any) -> None:
    """Change these members one after another: a run plans them in this order (oldest change first)."""
    members = world.valid_active_members()
    for email in emails:
        world.update_member(members[email].id, **values)


def test_a_first_sync_in_many_windows_is_planned_under_the_wire_and_mirrors_the_crm(
        world: World, overlapped: list[bool], pushed_windows: list[set[str]]) -> None:
    first = world.run(itemize=False)
    assert first.status in COMPLETED, first.error
    assert sum(overlapped) >= 3, overlapped          # chunks were planned while a window was pushed
    assert len(pushed_windows) >= 4
    assert_nobody_pushed_twice(pushed_windows)
    assert_converged(world, every_link_answered=True)


def test_an_address_handed_over_across_windows_waits_for_the_window_that_releases_it(
        world: World, overlapped: list[bool], pushed_windows: list[set[str]]) -> None:
    """Member A leaves address X (planned in the first window), member B takes X (planned in the
    second, while the first is in flight): B's chunk needs A's window's answers."""
    assert world.run().status in COMPLETED
    emails = sorted(world.valid_active_members())
    a_email, b_email = emails[2], emails[40]
    members = world.valid_active_members()
    a, b = members[a_email], members[b_email]
    fillers = emails[3:3 + WINDOW - 1]      # A and these fill the first chunk: B opens the second
    overlapped.clear()
    world.update_member(a.id, email="a.yeni@ornek.com.tr")
    changed_in_order(world, fillers, last_name="Dolgu")
    world.update_member(b.id, email=a_email)
    pushed_windows.clear()
    result = world.run()
    assert result.status in COMPLETED, result.error
    assert any(overlapped), overlapped
    assert_nobody_pushed_twice(pushed_windows)      # (B's chunk loads A, the holder of X)
    remote = world.harness.members()
    assert remote["a.yeni@ornek.com.tr"].status == "active"
    assert a_email in remote and remote[a_email].status == "active"
    assert_mirrors_crm(world)
    with world.engine.connect() as conn:
        refused = conn.execute(sa.select(Reject.crm_member_id).where(
            Reject.resolved_at.is_(None), Reject.provider_code == "validation",
            Reject.crm_member_id.in_([a.id, b.id]))).scalars().all()
    assert refused == []        # (as test_engine_regressions.py::test_4_*: one contact per address, no refusal)
    world.harness.reset_log()
    assert world.run().status in COMPLETED
    assert world.harness.write_requests() == 0


def test_an_unsubscribe_recorded_by_the_window_in_flight_replans_the_window_planned_meanwhile(
        world: World, overlapped: list[bool], monkeypatch: pytest.MonkeyPatch) -> None:
    """The recipient unsubscribes after the run's status pull. The first window's refresh before
    updates records it; the member's own update was planned into the second window meanwhile,
    as active. That window must be planned again on it, not pushed over the opt-out."""
    require(capabilities(world).status_pull != "none", "status_pull=none: the provider reports no unsubscribes to pull")
    assert world.run().status in COMPLETED
    emails = sorted(world.valid_active_members())
    victim = emails[WINDOW + 3]                  # the second chunk of the run below
    changed_in_order(world, emails[:3 * WINDOW], last_name="Yeni")
    refresh = push._refresh_before_updates
    calls: list[int] = []

    async def unsubscribing_first(ctx: RunContext, plan: Any, *args: Any) -> bool:
        if not calls:
            world.harness.unsubscribe(victim)        # after the pull, before the first window goes
        calls.append(len(plan.upserts))
        return await refresh(ctx, plan, *args)

    monkeypatch.setattr(push, "_refresh_before_updates", unsubscribing_first)
    result = world.run()
    assert result.status in COMPLETED, result.error
    assert len(calls) >= 2 and any(overlapped), (calls, overlapped)
    assert world.harness.members()[victim].status != "active"
    if result.counts.get("statuses_refreshed", 0):
        # The refresh found it: the window is planned again and leaves the member alone (a
        # client that checks its own cache before it writes would only find it suppressed while
        # pushing, and a provider that does not protect its records would re-subscribe it).
        assert is_blocked(result.plan, victim), [e for e in result.plan.left_out if e.email == victim]
    changed_in_order(world, [victim], first_name="Tekrar")
    world.run()
    assert world.harness.members()[victim].status != "active"


def test_a_stop_while_a_window_is_in_flight_commits_it_and_the_next_run_sends_nothing_twice(
        world: World, overlapped: list[bool], monkeypatch: pytest.MonkeyPatch) -> None:
    """A stop asked for while the second window is pushed (and the third planned): the run ends at
    the next safe point with every window sent committed; the next run sends the rest only."""
    emails = sorted(world.valid_active_members())
    sent: list[int] = []
    flush = push._flush

    async def stopping_in_the_second(ctx: RunContext, window: Any, *args: Any, **kwargs: Any) -> int:
        sent.append(len(window.plan.upserts))
        if len(sent) == 2:
            STOP.request(signal.SIGTERM)
        return await flush(ctx, window, *args, **kwargs)

    monkeypatch.setattr(push, "_flush", stopping_in_the_second)
    try:
        stopped = world.run(itemize=False)
    finally:
        STOP.reset()
    assert stopped.status == "interrupted", (stopped.status, stopped.error)
    pushed_before = {email for email, held in world.harness.members().items() if held.status == "active"}
    assert len(sent) >= 2 and pushed_before, sent
    with world.engine.connect() as conn:
        linked = set(conn.execute(sa.select(MemberLink.email).where(MemberLink.payload_hash != "")).scalars())
    assert pushed_before <= linked, "a window sent before the stop was not committed"
    monkeypatch.setattr(push, "_flush", flush)
    world.harness.reset_log()
    finished = world.run()
    assert finished.status in COMPLETED, finished.error
    assert_mirrors_crm(world)
    assert len(emails) == len(world.valid_active_members())
    world.harness.reset_log()
    assert world.run().status in COMPLETED
    assert world.harness.write_requests() == 0



#: The window whose push sends a request (-1: none), for ``Timeline``.
PUSHING: contextvars.ContextVar[int] = contextvars.ContextVar("pushing", default=-1)


@dataclasses.dataclass
class Timeline:
    """The order of what a run does, window by window (order only, no clock): ("pushing", n) when
    window n starts going out (its provisional links, then its requests), ("request", n) for a
    request sent by window n's push (-1: by none), ("answered", n) once its upserts are answered,
    ("recording", n) and ("committed", n) around its recording transaction (in a worker thread
    on PostgreSQL)."""

    events: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    #: Called with the window's number in the recording, before its transaction.
    before_recording: Any = None
    #: Set once a request of window 1 (or later) has gone out.
    next_sent: threading.Event = dataclasses.field(default_factory=threading.Event)
    #: The windows' plans, in the order they went out (kept alive: their ids name the windows).
    plans: list[Any] = dataclasses.field(default_factory=list)

    def reset(self) -> None:
        """Number the next run's windows from 0."""
        self.events.clear()
        self.plans.clear()
        self.next_sent.clear()

    def hook(self, _request: Any) -> None:
        number = PUSHING.get()
        self.events.append(("request", number))
        if number >= 1:
            self.next_sent.set()

    def wait_for_the_next_window(self) -> None:
        """(In a recording's worker thread) until window 1's first request has gone out."""
        self.next_sent.wait(timeout=60)      # (a guard against a hang, not a measure)

    def index(self, event: tuple[str, int]) -> int:
        return self.events.index(event)


@pytest.fixture
def timeline(monkeypatch: pytest.MonkeyPatch) -> Timeline:
    line = Timeline()
    plans = line.plans
    wrapped: list[Any] = []
    send, record = push._push, push._record

    def number_of(plan: Any) -> int:
        return next((n for n, known in enumerate(plans) if known is plan), -1)

    async def pushing(ctx: RunContext, plan: Any, *args: Any) -> None:
        plans.append(plan)
        line.events.append(("pushing", len(plans) - 1))
        if ctx.member_api is not None and not any(provider is ctx.provider for provider in wrapped):
            wrapped.append(ctx.provider)
            upsert = ctx.member_api.upsert_members

            async def answered(items: Any) -> Any:
                outcomes = await upsert(items)
                line.events.append(("answered", PUSHING.get()))
                return outcomes

            monkeypatch.setattr(ctx.provider, "upsert_members", answered)
            ctx.member_api = ctx.provider     # type: ignore[assignment]
        token = PUSHING.set(len(plans) - 1)     # (the window's task, and the tasks it starts)
        try:
            await send(ctx, plan, *args)
        finally:
            PUSHING.reset(token)

    def recording(ctx: RunContext, plan: Any, *args: Any) -> bool:
        number = number_of(plan)
        if line.before_recording is not None:
            line.before_recording(number)
        line.events.append(("recording", number))
        suppressed = record(ctx, plan, *args)
        line.events.append(("committed", number))
        return suppressed

    monkeypatch.setattr(push, "_push", pushing)
    monkeypatch.setattr(push, "_record", recording)
    return line


def assert_converged(world: World, *, every_link_answered: bool = False) -> None:
    """The provider mirrors the CRM (every provisional link got its answer), and the next run sends
    nothing."""
    assert_mirrors_crm(world)
    if every_link_answered:
        assert world.scalar(sa.select(sa.func.count()).select_from(MemberLink).where(
            MemberLink.payload_hash == "")) == 0
    world.harness.reset_log()
    again = world.run()
    assert again.status in COMPLETED, again.error
    assert world.harness.write_requests() == 0


def assert_recorded_in_order(line: Timeline) -> None:
    """Every recording starts after the one before it committed, in the windows' order."""
    recordings = [event for event in line.events if event[0] in ("recording", "committed")]
    expected = [(kind, n) for n in range(len(recordings) // 2) for kind in ("recording", "committed")]
    assert recordings == expected, recordings


def test_the_next_window_goes_out_while_the_one_before_it_is_recorded(
        world: World, overlapped: list[bool], pushed_windows: list[set[str]], timeline: Timeline,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL: window 0's recording transaction (in a worker thread) is held back until window
    1's first request has gone out; it goes out, and the recordings still commit one after
    another in the windows' order, each with what its window sent. (Recorded in the event loop,
    as on SQLite and MariaDB, window 1 would wait for window 0's commit: the hold would end at
    its guard, and the order below would fail.)"""
    require(world.engine.dialect.name == "postgresql", "windows are recorded in a worker thread on PostgreSQL only")
    monkeypatch.setattr(push, "PUSH_DEPTH", 1)     # (one window on the wire: several, below)

    def hold_the_first(number: int) -> None:
        if number == 0:
            timeline.wait_for_the_next_window()

    timeline.before_recording = hold_the_first
    first = world.run(hook=timeline.hook, itemize=False)
    assert first.status in COMPLETED, first.error
    assert timeline.next_sent.is_set(), timeline.events
    assert timeline.index(("answered", 0)) < timeline.index(("pushing", 1)) \
        < timeline.index(("request", 1)) < timeline.index(("committed", 0)), timeline.events
    assert_recorded_in_order(timeline)
    assert_nobody_pushed_twice(pushed_windows)
    assert_converged(world, every_link_answered=True)


def test_a_suppression_found_while_a_window_is_pushed_holds_the_next_window_until_recorded_and_replans_it(
        world: World, overlapped: list[bool], timeline: Timeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """Window 0's answers report one of its contacts suppressed (a complaint, found while pushing).
    Window 1 was planned meanwhile: nothing of it goes out before window 0's recording committed
    (and moved the suppressions epoch), and it is planned again on it before it goes. (One window
    on the wire: with two, window 1 goes out at once, and the window after it is held; see
    ``test_a_suppression_in_the_answers_of_one_of_two_windows_in_flight_*``.)"""
    monkeypatch.setattr(push, "PUSH_DEPTH", 1)
    sends, replanned = count_sends_and_replans(monkeypatch)
    complained: list[str] = []
    # (window 1 is planned, and waits, before window 0 is answered)
    hold_answers(monkeypatch, lambda _n: len(sends) >= 2, complaint_into(complained))
    result = world.run(hook=timeline.hook, itemize=False)
    assert result.status in COMPLETED, result.error
    assert complained and len(sends) >= 2, (complained, sends)
    assert result.counts["members_suppressed_at_provider"] >= 1
    assert replanned, timeline.events       # window 1, planned before the complaint, planned again
    assert timeline.index(("answered", 0)) < timeline.index(("committed", 0)) < timeline.index(("pushing", 1)), \
        timeline.events
    assert ("request", 1) not in timeline.events[:timeline.index(("committed", 0))]
    assert_recorded_in_order(timeline)
    with world.engine.connect() as conn:
        stored = conn.execute(sa.select(MemberStatus.status).where(MemberStatus.email == complained[0])).scalars().all()
    assert "complaint" in stored


def test_a_recording_that_fails_records_no_later_window_and_the_next_run_finishes_the_work(
        world: World, overlapped: list[bool], timeline: Timeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL: window 0's recording fails (a database error) after window 1 went out. Window 1
    is not recorded either (its watermark would cover window 0's work): the run fails, its links
    stay provisional, and the next run finishes the work without creating anything twice."""
    require(world.engine.dialect.name == "postgresql", "windows are recorded in a worker thread on PostgreSQL only")
    def failing_the_first(number: int) -> None:
        if number == 0:
            timeline.wait_for_the_next_window()
            raise sa.exc.OperationalError("COMMIT", {}, Exception("the database went away"))

    timeline.before_recording = failing_the_first
    failed = world.run(hook=timeline.hook, itemize=False)
    assert failed.status == "failed", failed.status
    assert timeline.next_sent.is_set() and ("request", 1) in timeline.events, timeline.events
    assert_nothing_recorded_then_finished(world, timeline)


def hold_answers(monkeypatch: pytest.MonkeyPatch, until: Callable[[int], bool],
                 then: Callable[[Any, list[Any]], list[Any]] | None = None, calls: int = 1) -> list[int]:
    """The answers to the first ``calls`` upserts of the next run (window 0's, window 1's, ...) are
    held back (in the event loop, as a Retry-After holds a window's last refused members), the
    n-th until ``until(n)`` holds; ``then`` may change the first one's. The windows after them
    go out meanwhile."""
    held: list[int] = []
    post_init = RunContext.__post_init__

    def holding(self: RunContext, *args: Any) -> None:
        post_init(self, *args)
        api = self.member_api
        if api is None:
            return
        upsert = api.upsert_members

        async def held_back(items: Any) -> Any:
            number = len(held)
            held.append(len(items))
            outcomes = list(await upsert(items))
            if number >= calls:
                return outcomes
            for _ in range(3000):       # (a guard against a hang, not a measure: 30 s)
                if until(number):
                    break
                await asyncio.sleep(0.01)
            return then(items, outcomes) if then is not None and number == 0 else outcomes

        monkeypatch.setattr(self.provider, "upsert_members", held_back)
        self.member_api = self.provider     # type: ignore[assignment]

    monkeypatch.setattr(RunContext, "__post_init__", holding)
    return held


def assert_nothing_recorded_then_finished(world: World, timeline: Timeline) -> None:
    """No window of the failed run was recorded; the next run (recordings no longer failing)
    finishes the work, nothing created twice."""
    assert not any(kind == "recording" for kind, _ in timeline.events), timeline.events
    timeline.before_recording = None
    world.harness.reset_log()
    finished = world.run()
    assert finished.status in COMPLETED, finished.error
    assert_converged(world)


def count_sends_and_replans(monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], list[int]]:
    """The chunks of each window the pipeline sends, and of each window planned again, in order."""
    sends: list[int] = []
    replanned: list[int] = []
    send, replan = push._Pipeline.send, push._replan

    async def counted_send(self: push._Pipeline, window: Any) -> int:
        if window.chunks:
            sends.append(len(window.chunks))
        return await send(self, window)

    async def counted_replan(ctx: RunContext, window: Any, *args: Any, **kwargs: Any) -> int:
        replanned.append(len(window.chunks))
        return await replan(ctx, window, *args, **kwargs)

    monkeypatch.setattr(push._Pipeline, "send", counted_send)
    monkeypatch.setattr(push, "_replan", counted_replan)
    return sends, replanned


def complaint_into(complained: list[str]) -> Callable[[Any, list[Any]], list[Any]]:
    """Answers (``hold_answers``' ``then``) that report one contact pushed fine as a complaint, found
    while pushing; its address is added to ``complained``."""
    def complaint(items: Any, outcomes: list[Any]) -> list[Any]:
        victim = next(n for n, o in enumerate(outcomes) if o.rejected is None and o.suppressed is None)
        item = next(i for i in items if i.key == outcomes[victim].key)
        complained.append(item.email)
        outcomes[victim] = dataclasses.replace(outcomes[victim], suppressed=RemoteStatus(
            item.email, "complaint", dt.datetime.now(dt.UTC)))
        return outcomes
    return complaint


def windows_committed(line: Timeline) -> list[int]:
    return [number for kind, number in line.events if kind == "committed"]


def windows_pushed(line: Timeline) -> list[int]:
    return [number for kind, number in line.events if kind == "pushing"]


def test_windows_go_out_while_the_first_waits_for_its_answers_and_commit_in_order(
        world: World, overlapped: list[bool], pushed_windows: list[set[str]], timeline: Timeline,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Window 0's answers are held until window 2 has sent a request: windows 1 and 2 go out
    meanwhile (three on the wire), and every recording still starts after the one before it
    committed, in the windows' order (window 1 and 2 wait for window 0's)."""
    require(push.PUSH_DEPTH >= 3, "three windows on the wire")
    held = hold_answers(monkeypatch, lambda _n: ("request", 2) in timeline.events)
    first = world.run(hook=timeline.hook, itemize=False)
    assert first.status in COMPLETED, first.error
    assert held, timeline.events
    assert timeline.index(("pushing", 2)) < timeline.index(("request", 2)) < timeline.index(("answered", 0)) \
        < timeline.index(("committed", 0)) < timeline.index(("committed", 1)), timeline.events
    assert_recorded_in_order(timeline)
    assert windows_committed(timeline) == windows_pushed(timeline)
    assert_nobody_pushed_twice(pushed_windows)
    assert_converged(world, every_link_answered=True)


def test_an_address_released_by_a_window_waiting_for_its_answers_holds_the_member_taking_it_windows_later(
        world: World, overlapped: list[bool], pushed_windows: list[set[str]], timeline: Timeline,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Member A leaves address X (window 0, whose answers are held), member B takes X (window 2,
    planned while windows 0 and 1 are on the wire): B's chunk waits for window 0's recording,
    not for window 1's, and is planned again on it."""
    assert world.run().status in COMPLETED
    emails = sorted(world.valid_active_members())
    a_email, b_email = emails[2], emails[40]
    members = world.valid_active_members()
    a, b = members[a_email], members[b_email]
    fillers = emails[3:3 + 2 * WINDOW - 1]      # A and these fill the first two chunks: B opens the third
    assert b_email not in fillers
    world.update_member(a.id, email="a.yeni@ornek.com.tr")
    changed_in_order(world, fillers, last_name="Dolgu")
    world.update_member(b.id, email=a_email)
    waited: list[int] = []
    clear_of = push._Pipeline.clear_of

    async def counted(self: push._Pipeline, plan: Any) -> int:
        waited.append(len(self.flights))
        return await clear_of(self, plan)

    monkeypatch.setattr(push._Pipeline, "clear_of", counted)
    held = hold_answers(monkeypatch, lambda _n: ("request", 1) in timeline.events and bool(waited))
    pushed_windows.clear()
    timeline.reset()
    result = world.run(hook=timeline.hook)
    assert result.status in COMPLETED, result.error
    assert held and waited and waited[0] >= 2, (waited, timeline.events)   # (windows 0 and 1 sent)
    assert_nobody_pushed_twice(pushed_windows)      # (B's chunk loads A, the holder of X)
    b_window = next(n for n, window in enumerate(pushed_windows) if b.id in window)
    assert timeline.index(("committed", 0)) < timeline.index(("pushing", b_window)), timeline.events
    assert_recorded_in_order(timeline)
    remote = world.harness.members()
    assert remote["a.yeni@ornek.com.tr"].status == "active"
    assert a_email in remote and remote[a_email].status == "active"
    assert_converged(world)


def test_a_stop_while_two_windows_are_in_flight_commits_both_and_the_next_run_sends_nothing_twice(
        world: World, overlapped: list[bool], pushed_windows: list[set[str]], timeline: Timeline,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A stop asked for while window 0 waits for its answers and window 1 is on the wire: the run
    ends at the next safe point with every window sent committed, in order, each with its
    watermark; the next run pushes none of their members again."""
    def stop_once_two_are_out() -> bool:
        if ("request", 1) in timeline.events:
            STOP.request(signal.SIGTERM)
            return True
        return False

    held = hold_answers(monkeypatch, lambda _n: stop_once_two_are_out())
    try:
        stopped = world.run(hook=timeline.hook, itemize=False)
    finally:
        STOP.reset()
    assert stopped.status == "interrupted", (stopped.status, stopped.error)
    assert held and len(windows_pushed(timeline)) >= 2, timeline.events
    assert windows_committed(timeline) == windows_pushed(timeline), timeline.events   # every window sent
    assert world.scalar(sa.select(sa.func.count()).select_from(MemberLink).where(
        MemberLink.payload_hash == "")) == 0         # every provisional link got its answer
    before = set().union(*pushed_windows)
    pushed_windows.clear()
    finished = world.run()
    assert finished.status in COMPLETED, finished.error
    assert not before & set().union(*pushed_windows), "a member committed before the stop was pushed again"
    assert_converged(world)


def test_a_recording_that_fails_while_later_windows_are_in_flight_records_none_of_them(
        world: World, overlapped: list[bool], timeline: Timeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """Window 0's recording fails (a database error) once windows 1 and 2 went out: neither is
    recorded (their watermarks would cover window 0's work), the run fails, their links stay
    provisional, and the next run finishes the work without creating anything twice. (Three on
    the wire, not ``PUSH_DEPTH``'s 32: with as many, every window of the test's members goes out while
    window 0 is held, and the test takes 30 s a Postatr reading, not what it checks.)"""
    require(push.PUSH_DEPTH >= 3, "three windows on the wire")
    monkeypatch.setattr(push, "PUSH_DEPTH", 3)
    held = hold_answers(monkeypatch, lambda _n: ("request", 2) in timeline.events)

    def failing_the_first(number: int) -> None:
        if number == 0:
            raise sa.exc.OperationalError("COMMIT", {}, Exception("the database went away"))

    timeline.before_recording = failing_the_first
    failed = world.run(hook=timeline.hook, itemize=False)
    assert failed.status == "failed", failed.status
    assert held and ("request", 2) in timeline.events, timeline.events
    assert_nothing_recorded_then_finished(world, timeline)


def test_a_suppression_in_the_answers_of_one_of_two_windows_in_flight_holds_the_next_until_recorded(
        world: World, overlapped: list[bool], timeline: Timeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two windows on the wire: window 0's answers, held until window 1 went out and window 2
    waits for room, report one of its contacts suppressed (a complaint, found while pushing).
    Window 2 goes out only once window 0's recording committed (and moved the suppressions
    epoch), planned again on it; window 1, on the wire already, pushes no address of window 0's."""
    monkeypatch.setattr(push, "PUSH_DEPTH", 2)
    sends, replanned = count_sends_and_replans(monkeypatch)
    complained: list[str] = []
    # Window 0's answers (with the complaint) once window 1 went out and window 2 waits for room;
    # window 1's once window 0's are in (window 2 waits for window 0's recording, not for room).
    held = hold_answers(monkeypatch, lambda n: ("answered", 0) in timeline.events if n else (
        ("request", 1) in timeline.events and len(sends) >= 3), complaint_into(complained), calls=2)
    result = world.run(hook=timeline.hook, itemize=False)
    assert result.status in COMPLETED, result.error
    assert held and complained and len(sends) >= 3, (complained, sends)
    assert result.counts["members_suppressed_at_provider"] >= 1
    assert replanned, timeline.events       # window 2, planned before the complaint, planned again
    assert timeline.index(("request", 1)) < timeline.index(("answered", 0)) < timeline.index(("committed", 0)) \
        < timeline.index(("pushing", 2)), timeline.events
    assert not [event for event in timeline.events[:timeline.index(("committed", 0))]
                if event[0] == "request" and event[1] >= 2], timeline.events
    # (window 2 is planned again in its own task, once window 1 is committed: a later window may
    # start pushing before it does, so the pushes' numbers are not the windows' order here)
    recordings = [event for event in timeline.events if event[0] in ("recording", "committed")]
    assert all(recordings[n][0] == "recording" and recordings[n + 1] == ("committed", recordings[n][1])
               for n in range(0, len(recordings), 2)), recordings
    with world.engine.connect() as conn:
        stored = conn.execute(sa.select(MemberStatus.status).where(MemberStatus.email == complained[0])).scalars().all()
    assert "complaint" in stored


def _new_links_written(world: World, members: set[str]) -> int:
    """Provisional links (no remote id, no hash) of these members."""
    return world.scalar(sa.select(sa.func.count()).select_from(MemberLink).where(
        MemberLink.crm_member_id.in_(sorted(members)), MemberLink.remote_id.is_(None),
        MemberLink.payload_hash == ""))


def test_a_window_waiting_for_room_writes_its_new_links_before_it_goes_and_takes_them_back_when_replanned(
        world: World, overlapped: list[bool], monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL (windows recorded apart): window 1, planned while window 0 is on the wire, writes
    its new links (provisional) while it waits for room, so that its push sends at once when window
    0 is answered. Window 0's answers are held until they are written; they report a complaint:
    window 1 is planned again and its early links are taken back first (none is left behind, nor
    written twice), and the run converges."""
    require(world.engine.dialect.name == "postgresql", "windows are recorded in a worker thread on PostgreSQL only")
    monkeypatch.setattr(push, "PUSH_DEPTH", 1)
    _sends, replanned = count_sends_and_replans(monkeypatch)
    waiting: list[set[str]] = []
    written_ahead: list[int] = []
    prewrite = push._Pipeline._prewrite

    def watched(self: push._Pipeline, window: Any) -> Any:
        if not waiting:
            waiting.append({item.key.crm_member_id for item in window.plan.upserts})
        return prewrite(self, window)

    monkeypatch.setattr(push._Pipeline, "_prewrite", watched)

    def written(_n: int) -> bool:
        if waiting and (count := _new_links_written(world, waiting[0])):
            written_ahead.append(count)
            return True
        return False

    taken_back = push._take_back
    left: list[int] = []

    def taking_back(ctx: RunContext, window: Any) -> None:
        members = {key.crm_member_id for key in window.prewritten}
        taken_back(ctx, window)
        if members:
            left.append(_new_links_written(world, members))

    monkeypatch.setattr(push, "_take_back", taking_back)
    complained: list[str] = []
    hold_answers(monkeypatch, written, complaint_into(complained))
    result = world.run(itemize=False)
    assert result.status in COMPLETED, result.error
    assert waiting and written_ahead, "window 1 wrote no link while window 0 was on the wire"
    assert complained and replanned, (complained, replanned)
    assert left == [0], left                # taken back before window 1 was planned again
    assert _new_links_written(world, waiting[0]) == 0     # window 1's links all hold their answers
    assert_converged(world)


def test_a_stop_while_a_window_waits_for_room_takes_its_new_links_back(
        world: World, overlapped: list[bool], monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL: window 1 wrote its new links (provisional) while waiting for room; a stop
    asked for then ends the run at the safe point before window 1 goes: window 0 is committed,
    window 1's early links are taken back (nothing was sent for them: a link left behind would be
    looked up at the provider by address for nothing), and the next run converges."""
    require(world.engine.dialect.name == "postgresql", "windows are recorded in a worker thread on PostgreSQL only")
    monkeypatch.setattr(push, "PUSH_DEPTH", 1)
    waiting: list[set[str]] = []
    prewrite = push._Pipeline._prewrite

    def watched(self: push._Pipeline, window: Any) -> Any:
        if not waiting and window.chunks:
            waiting.append({item.key.crm_member_id for item in window.plan.upserts})
        return prewrite(self, window)

    monkeypatch.setattr(push._Pipeline, "_prewrite", watched)

    def written_then_stop(_n: int) -> bool:
        if waiting and _new_links_written(world, waiting[0]):
            STOP.request(signal.SIGTERM)
            return True
        return False

    held = hold_answers(monkeypatch, written_then_stop)
    try:
        stopped = world.run(itemize=False)
    finally:
        STOP.reset()
    assert stopped.status == "interrupted", (stopped.status, stopped.error)
    assert held and waiting, "no window waited for room with new links: the test no longer reaches its state"
    assert _new_links_written(world, waiting[0]) == 0, "window 1's early links were left behind"
    assert world.scalar(sa.select(sa.func.count()).select_from(MemberLink).where(
        MemberLink.payload_hash == "")) == 0         # and window 0's all hold their answers
    finished = world.run()
    assert finished.status in COMPLETED, finished.error
    assert_converged(world)
