"""Steps 4 and 5 of a connection's run: members, planned chunk by chunk into a push window and
pushed with a checkpoint per window (``push_members``).

Before a window goes out its provisional links are committed; after it, ONE transaction records
the provider's answers, the rejects, the statuses, the watermark and the lease ("Crash safety" in
sync/engine/connection_sync.py). Up to ``PUSH_DEPTH`` windows are on the wire at once
(``_Pipeline``), and on PostgreSQL that transaction runs in a worker thread while the next
windows' requests go out; the transactions still commit one after another, in the windows' order.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import re
from collections import Counter, defaultdict, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import sqlalchemy as sa
from sqlalchemy.orm import Session

from sync.crm import ChangedMembers
from sync.emails import normalize_email
from sync.engine.bulk import update_by_key, upsert
from sync.engine.compare import changed_members, member_chunks, requeued_members, vanished_members_due
from sync.engine.context import (
    MEMBER_LINKS,
    MEMBERS_STREAM,
    MEMBERS_XID_STREAM,
    REJECT_BACKOFF,
    REJECTED,
    SUPPRESSED,
    SUPPRESSIONS_SEEN_STREAM,
    VANISHED_STREAM,
    LeftOut,
    Plan,
    RunContext,
    chunks,
)
from sync.engine.erasures import ERASED, audit_erasures
from sync.engine.lists import done_replanning
from sync.engine.plan import (
    ADDRESS_GONE,
    ADDRESS_LEFT,
    HANDED_OVER,
    LEFT_EVERY_LIST,
    LEFT_KEPT,
    Chunk,
    plan_chunk,
)
from sync.engine.rejects import (
    LIST_PENDING,
    PANEL_ACTIONS,
    REMOVAL_UNSUPPORTED,
    TOO_LONG,
    VALIDATION,
    WaitingReject,
    load_open_rejects,
    record_reject,
    rejects_due,
)
from sync.engine.state import set_position, set_watermark, watermark_for
from sync.engine.statuses import members_with_new_suppressions, record_statuses
from sync.errors import RejectedRow
from sync.models import MemberLink, Reject, utcnow
from sync.providers.base import LEFT_UNSUBSCRIBED, MemberKey, MemberUpsert, PushOutcome, RemoteStatus
from sync.stopping import STOP

#: The unique key of a link, and the part of it that varies within a connection.
LINK_KEY = ("connection_id", "crm_member_id", "crm_list_id")
LINK_MATCH = ("crm_member_id", "crm_list_id")
#: What the provider's answer writes into a link.
ANSWER_COLUMNS = ("email", "payload_hash", "remote_id", "remote_lists", "pushed_at", "status_pushed", "source_digest",
                  "unconfirmed_emails")


def _merge(into: Chunk, plan: Chunk) -> None:
    """Add one planned chunk to a window's plan, keeping only the links a push or its commit
    reads (those of the members it upserts or removes), so a window of unchanged members holds
    little more than their ids."""
    into.ids += plan.ids
    into.upserts += plan.upserts
    into.deletes += plan.deletes
    into.invalid += plan.invalid
    touched = {item.key for item in plan.upserts} | {item.key for item in plan.deletes}
    into.links.update((key, link) for key, link in plan.links.items() if key in touched)
    into.hashes.update(plan.hashes)
    into.statuses.update(plan.statuses)
    into.rehash += plan.rehash
    into.pending += plan.pending
    into.unpend += plan.unpend
    into.gone += plan.gone
    into.sources.update(plan.sources)
    into.settled += plan.settled
    into.validated += plan.validated
    into.unchanged.update(plan.unchanged)
    into.left_out += plan.left_out
    into.member_lists.update(plan.member_lists)
    into.handed_over.update(plan.handed_over)


class _Concatenation(Sequence[str]):
    """Two lists read as one, not copied into a third (the first may hold every CRM member)."""

    def __init__(self, head: list[str], tail: list[str]) -> None:
        self.head, self.tail = head, tail

    def __len__(self) -> int:
        return len(self.head) + len(self.tail)

    def __iter__(self) -> Iterator[str]:
        yield from self.head
        yield from self.tail

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return [self[n] for n in range(start, stop, step)]
            cut = len(self.head)
            return self.head[start:min(stop, cut)] + self.tail[max(start - cut, 0):max(stop - cut, 0)]
        if index < 0:
            index += len(self)
        return self.head[index] if index < len(self.head) else self.tail[index - len(self.head)]


@dataclass
class _Window:
    """Planned chunks waiting to be pushed together (``Capabilities.push_window``): a provider
    that groups a push into its own requests sends fewer, fuller ones from a larger window."""

    plan: Chunk = field(default_factory=Chunk)
    #: The planned chunks' member ids, each with the newest change it covers.
    chunks: list[tuple[Sequence[str], dt.datetime | None]] = field(default_factory=list)
    covered_until: dt.datetime | None = None
    members: int = 0
    #: ``RunContext.suppressions_epoch`` when its first chunk was planned.
    epoch: int | None = None
    _planned: set[str] = field(default_factory=set)
    _emails: set[str] = field(default_factory=set)
    #: Its new links written already, provisional, while the window before was on the wire
    #: (``_Pipeline.send``): not written again by its push; taken back if it is planned again.
    prewritten: frozenset[MemberKey] = frozenset()

    def overlaps(self, plan: Chunk) -> bool:
        """The chunk was planned without what the window will write: it needs a member the window
        holds, or pushes an address the window pushes or removes (two CRM rows with one address,
        the second planned before the first one's link exists)."""
        return not self._planned.isdisjoint(plan.ids) or not self._emails.isdisjoint(_addresses(plan))

    def add(self, chunk_ids: Sequence[str], plan: Chunk, covered_until: dt.datetime | None, epoch: int) -> None:
        _merge(self.plan, plan)
        self.epoch = epoch if self.epoch is None else min(self.epoch, epoch)
        self.chunks.append((chunk_ids, covered_until))
        self._planned.update(plan.ids)
        self._emails.update(_addresses(plan))
        self.members += len(chunk_ids)
        if covered_until is not None and (self.covered_until is None or covered_until > self.covered_until):
            self.covered_until = covered_until

    def full(self, push_window: int, max_batch: int) -> bool:
        """Enough to push (``push_window`` upserts and removals), or as many members planned as
        a window may hold (so a window of unchanged members is committed too)."""
        work = len(self.plan.upserts) + len(self.plan.deletes)
        return work >= push_window or self.members >= max(push_window, max_batch)

    def clear(self) -> None:
        self.plan, self.chunks, self.covered_until, self.members, self.epoch = Chunk(), [], None, 0, None
        self._planned, self._emails, self.prewritten = set(), set(), frozenset()


def _plan(ctx: RunContext, chunk_ids: Sequence[str], list_map: dict[str, str]) -> Chunk:
    with ctx.sessions() as session:
        return plan_chunk(ctx, session, chunk_ids, list_map)


#: Windows a run keeps on the wire at once (sent, not answered yet): while one waits for its
#: refused members' Retry-After, the next ones go out (issue 26; measured in docs/performance.md,
#: "Several push windows on the wire"). At most one window more waits for its recording. A window
#: of 100 members at 16 requests in flight goes out in about 0.3 s and then waits 1-2 s for its last
#: refused members (``Retry-After: 1``, refused again one time in seven): about 8 windows cover
#: that wait. 4 kept 28-30 % of the fault-free rate with one call in seven refused, 8 39 %, 12 and
#: 20 about 50 % (3,000 members; 55 % at 10,000). Windows are committed in order, so a window whose
#: member is refused three or four times (seconds of Retry-After) holds every later one once
#: ``depth`` are waiting: 32 (2026-12-07, Euromsg 10,000 members, one call in seven 429): 43.5 /
#: 43.6 s against 46.1 at 12, with the in-flight limit tolerating the provider's steady refusals.
PUSH_DEPTH = 32
#: ... and no more windows than hold this many members together: a stop waits for every window
#: sent, and each is in memory (Postacell's window of 25,000: one on the wire, as before;
#: MailMasterPlus's of 200: 16).
PUSH_DEPTH_MEMBERS = 3_200
#: ... and only once the run's connection was answered with a Retry-After (a 429: a window may then
#: wait seconds for its last refused members): until then ``PUSH_DEPTH_UNTHROTTLED`` windows.
PUSH_AHEAD_ONLY_WHEN_THROTTLED = True
#: Windows on the wire before any Retry-After: two, so the next window's requests fill the last
#: round trips of the one before (a window of 100 at 16 in flight ends with a few requests out).
#: Euromsg, 10,000 members, 30 ms, no faults: 386-390 members/s with one, 421-437 with two
#: (2026-12-07). A stop waits for both (the crash suite's SIGTERM cases still land theirs).
PUSH_DEPTH_UNTHROTTLED = 2


@dataclass(eq=False)
class _Flight:
    """A window sent by the pipeline: the task that pushes and then records it (``_flush``, with
    this as its ``recorder``), what its recording will write (``_Pipeline.overlaps``), and the
    task of the window sent before it, whose recording commits first."""

    pipeline: _Pipeline
    before: asyncio.Task[int] | None
    ids: set[str]
    emails: set[str]
    task: asyncio.Task[int] | None = None
    #: Its answers are in (it counts no more against ``PUSH_DEPTH``); they hold a suppression.
    answered: bool = False
    suppresses: bool = False

    async def recorded(self) -> None:
        """Wait for every window sent before this one to be committed; the error of one that
        failed (or was cancelled) is raised here: nothing is recorded after it."""
        if self.before is not None:
            await asyncio.shield(self.before)

    async def record(self, plan: Chunk, deleted: list[PushOutcome], upserted: list[PushOutcome],
                     covered_until: dt.datetime | None) -> None:
        """(called by the window's push once answered) Record the window once every window before
        it is committed: in a worker thread on PostgreSQL (the next windows go out meanwhile),
        else here in the event loop."""
        self.answered = True
        self.suppresses = any(o.suppressed is not None for o in (*deleted, *upserted))
        self.pipeline.changed.set()
        await self.recorded()       # in order: the windows before first (an error stops this one)
        ctx = self.pipeline.ctx
        if not self.pipeline.records_apart:
            if _record(ctx, plan, deleted, upserted, covered_until):
                ctx.suppressions_epoch += 1
            ctx.refresh_statistics(final=False)
            return
        view = _recording_view(ctx)

        async def recording() -> None:
            suppressed = await asyncio.to_thread(_record, view, plan, deleted, upserted, covered_until)
            _add_recorded(ctx, view)
            if suppressed:
                ctx.suppressions_epoch += 1
            ctx.refresh_statistics(final=False)

        # Never cancelled: a recording once started commits or fails as a whole, in its thread
        # (``_Pipeline.settle`` waits for it).
        self.pipeline.recording = asyncio.create_task(recording(), name="record-window")
        await asyncio.shield(self.pipeline.recording)


class _Pipeline:
    """Local work under the wire: a full window is pushed by a task of its own while the next one
    is planned (CRM reads, the plan, the link reads), so a run waits about the longer of the two,
    not their sum; two windows are on the wire at once, and once the provider answered with a
    Retry-After up to ``PUSH_DEPTH``, so a window waiting for its refused members' Retry-After does
    not hold the next ones back. Windows are committed in their order, each with its watermark.

    A window is sent (``send``) once fewer than ``depth`` windows are on the wire (sent, not
    answered yet; ``PUSH_DEPTH``, fewer for large windows, 2 until throttled) and fewer than
    ``depth + 1`` are not committed yet: at most ``depth + 2`` windows are in memory, counting the
    one being planned. Each window's task pushes it (its provisional links first, as ever), then
    records it (the ONE transaction after its answers) once the window sent before it is committed
    (``_Flight.record``): the recordings commit one after another in the windows' order, and a
    recording that failed, or a window whose push failed, stops every later one (its watermark
    would cover the work of the one that failed; its links stay provisional, as after a crash). On
    PostgreSQL the recording runs in a worker thread and the next windows go out meanwhile.
    Elsewhere it runs in the event loop (only the requests of the other windows overlap it): on
    SQLite, whose connections stay in their thread, and on MariaDB, where a row written into a
    table with a foreign key to ``connections`` share-locks the connection's row and the lease
    renewal in both the recording and the next window's provisional links wants it exclusively
    (InnoDB ends one of them as a deadlock; PostgreSQL's key-share lock does not conflict with an
    update of the lease columns); in the event loop the two never run at once.

    What a window in flight or being recorded will write can change the plan of a chunk planned
    meanwhile, as it can for chunks planned into one window today; the same rule holds: a chunk
    that needs a member of any such window, or pushes or removes an address one of them pushes or
    removes, waits for that window's recording (and so every window's before it) and is planned
    again (``overlaps``, ``clear_of``). Suppressions recorded while a window waits to go (the
    refresh before updates, or a contact found suppressed) may concern anyone: a window planned
    before them is planned again before it goes (``RunContext.suppressions_epoch``, checked by
    ``_flush``). A window whose answers hold a suppression is recorded before any further window
    is sent (``send``), so that check sees it. A window's refresh before updates is asked as it is
    sent, in the windows' order (``send``): what it finds is recorded once every window sent
    before is committed, and the window is planned again on it before anything later is sent. A
    window already on the wire when another one's answers report a contact suppressed was
    planned without it, as it would be had the provider reported it a moment later: that
    contact's address is not one it pushes or removes (``overlaps``).

    Planning runs in a worker thread on PostgreSQL and MariaDB (the driver and our Python
    interleave with the requests in flight); on SQLite in the event loop between the push's
    awaits. A recording in a worker thread counts into a copy of the run's state, added to it in
    the event loop once committed (``_recording_view``), as a recording in the event loop did
    while a chunk was planned in a thread.

    A stop at a safe point (``send``, and between chunks in ``push_members``) lets every window
    sent finish and commit, in order (``settle``); the one being planned is dropped."""

    def __init__(self, ctx: RunContext, list_map: dict[str, str]) -> None:
        self.ctx, self.list_map = ctx, list_map
        self.enabled = ctx.options.overlap and not ctx.options.dry_run
        self.threaded = self.enabled and "sqlite" not in (ctx.dialect, ctx.crm.engine.dialect.name)
        #: Windows are recorded in a worker thread while the next ones go out (PostgreSQL only).
        self.records_apart = self.threaded and ctx.dialect == "postgresql"
        window = ctx.caps.push_window or ctx.caps.max_batch
        self.depth = max(1, min(PUSH_DEPTH, PUSH_DEPTH_MEMBERS // max(window, 1)))
        #: The windows sent and not collected yet, oldest first.
        self.flights: deque[_Flight] = deque()
        #: The task of the last window sent (the next one's recording waits for it).
        self._last: asyncio.Task[int] | None = None
        #: (apart) The last recording started, in a worker thread.
        self.recording: asyncio.Task[None] | None = None
        #: Set when a window in flight is answered or done (``send`` waits for room on it).
        self.changed = asyncio.Event()
        #: Members of the windows committed while a refresh before updates waited (``recorded``).
        self._collected = 0

    async def plan(self, chunk_ids: Sequence[str]) -> Chunk:
        if not self.flights:
            return _plan(self.ctx, chunk_ids, self.list_map)
        if self.threaded:
            return await asyncio.to_thread(_plan, self.ctx, chunk_ids, self.list_map)
        plan = _plan(self.ctx, chunk_ids, self.list_map)
        await asyncio.sleep(0)      # the pushes in flight go on between chunks
        return plan

    def overlaps(self, plan: Chunk) -> bool:
        """The chunk needs what a window in flight or being recorded will write (see
        ``_Window.overlaps``)."""
        if not self.flights:
            return False
        emails = _addresses(plan)
        return any(not flight.ids.isdisjoint(plan.ids) or not flight.emails.isdisjoint(emails)
                   for flight in self.flights)

    async def clear_of(self, plan: Chunk) -> int:
        """Wait for the windows sent, oldest first, until none left overlaps the chunk (each one
        committed); how many members they covered."""
        done = 0
        while self.overlaps(plan):
            done += await self._collect()
        return done

    def _throttled(self) -> bool:
        """The provider answered this run with a Retry-After (``PUSH_AHEAD_ONLY_WHEN_THROTTLED``)."""
        stats = getattr(getattr(self.ctx.provider, "http", None), "stats", None)
        return not PUSH_AHEAD_ONLY_WHEN_THROTTLED or getattr(stats, "retry_after_waits", 0) > 0

    def _room(self) -> bool:
        """Another window may go out: fewer than ``depth`` on the wire (2 until throttled) and
        ``depth + 1`` not committed, none answered with a suppression not recorded yet, none
        failed."""
        flights = self.flights
        depth = self.depth if self._throttled() else min(self.depth, PUSH_DEPTH_UNTHROTTLED)
        on_wire = sum(1 for f in flights if not f.answered and not (f.task is not None and f.task.done()))
        return on_wire < depth and len(flights) <= depth and not any(
            f.suppresses or (f.task is not None and f.task.done()) for f in flights)

    async def send(self, window: _Window) -> int:
        """Push the window once there is room for it (``_room``); return how many members the
        windows committed meanwhile covered. Off (a dry run), pushed here and now."""
        done = await self.ready()
        early = self._prewrite(window) if not self._room() else None
        try:
            while not self._room():
                self.changed.clear()
                await self.changed.wait()
                done += await self.ready()
            if early is not None:
                window.prewritten = await early
            # A safe point: a stop asked for while the windows before were pushed ends the run
            # here, with this window (nothing of it sent) dropped, as one being planned is.
            if window.chunks:
                STOP.check()
        except BaseException:
            if early is not None:
                await asyncio.wait([early])
                if not early.cancelled() and early.exception() is None:
                    window.prewritten = early.result()
            _take_back(self.ctx, window)
            raise
        if not window.chunks:
            return done
        if not self.enabled:
            return done + await _flush(self.ctx, window, self.list_map)
        # The refresh before updates is asked here, in the windows' order, not by the window's
        # own task: a provider may report a suppression to one refresh only (Postacell reads a
        # list again only once its counters moved), so the window that found it must record it
        # (once every window sent is committed) before any later window is sent or decides.
        if await _refresh_before_updates(self.ctx, window.plan, self):
            # Suppressions appeared since the pull: plan the window's members again, on them,
            # and push them here and now (nothing is in flight any more).
            done += self._collected
            self._collected = 0
            return done + await _replan(self.ctx, window, self.list_map, refresh=False)
        done += self._collected
        self._collected = 0
        sending = copy.copy(window)
        window.clear()
        flight = _Flight(self, self._last, sending._planned, sending._emails)
        flight.task = self._last = asyncio.create_task(
            _flush(self.ctx, sending, self.list_map, refresh=False, recorder=flight), name="push-window")
        flight.task.add_done_callback(lambda _task: self.changed.set())
        self.flights.append(flight)
        return done

    def _prewrite(self, window: _Window) -> asyncio.Task[frozenset[MemberKey]] | None:
        """While the window waits for room, write its new links (provisional: nothing sent yet)
        in a worker thread (PostgreSQL, where windows are recorded apart), so that its push can
        send at once when the window before is answered: written by its push, a Postacell window's
        25,000 new links took 0.9-1.4 s with nothing on the wire (2026-12-07). A link written too
        early is what a crash before the push leaves anyway (found again by address); the window
        planned again, or dropped by a stop, takes them back (``_take_back``)."""
        if not self.records_apart or not window.chunks \
                or all(item.key in window.plan.links for item in window.plan.upserts):
            return None
        view = _recording_view(self.ctx)

        async def writing() -> frozenset[MemberKey]:
            written = await asyncio.to_thread(_write_new_links, view, window.plan)
            _add_recorded(self.ctx, view)
            return written

        return asyncio.create_task(writing(), name="prewrite-window")

    async def recorded(self) -> None:
        """(``_refresh_before_updates``) Wait for every window sent to be committed; their members
        are counted by ``send``."""
        self._collected += await self.wait()

    async def _collect(self) -> int:
        """Wait for the oldest window sent to be committed; its members (its error, raised here)."""
        flight = self.flights.popleft()
        assert flight.task is not None
        return await flight.task

    async def wait(self) -> int:
        """Wait for every window sent to be pushed and committed; their members."""
        done = 0
        while self.flights:
            done += await self._collect()
        return done

    async def ready(self) -> int:
        """The members of the windows committed so far, oldest first (the error of one that
        failed, raised here)."""
        done = 0
        while self.flights and self.flights[0].task is not None and self.flights[0].task.done():
            done += await self._collect()
        return done

    async def settle(self, error: BaseException) -> None:
        """The run ends with ``error`` (a stop at a safe point, a failure): every window sent is
        still pushed and committed, in order, as if pushed in line (after one that failed, none
        is recorded: they raise its error, swallowed here); a cancelled run cancels them (their
        provisional links stand, as after a crash), and a recording under way still commits or
        fails in its thread. The first error of a window, other than ``error``, is raised."""
        flights, self.flights = list(self.flights), deque()
        failure: BaseException | None = None
        try:
            if isinstance(error, asyncio.CancelledError):
                for flight in flights:
                    assert flight.task is not None
                    flight.task.cancel()
            for flight in flights:
                assert flight.task is not None
                try:
                    await flight.task
                except asyncio.CancelledError:
                    if not isinstance(error, asyncio.CancelledError):
                        # (this run is cancelled meanwhile: so are the windows still in flight)
                        for later in flights:
                            assert later.task is not None
                            later.task.cancel()
                        raise
                except BaseException as failed:     # (an error stops every later window too)
                    if failure is None and failed is not error:
                        failure = failed
        finally:
            recording = self.recording
            if recording is not None:
                await asyncio.wait([recording])     # (never cancelled: see ``_Flight.record``)
                if not recording.cancelled() and recording.exception() is not None and failure is None \
                        and recording.exception() is not error:
                    failure = recording.exception()
        if failure is not None:
            raise failure


def _recording_view(ctx: RunContext) -> RunContext:
    """The run's state as a recording in a worker thread sees it: a shallow copy whose counts,
    rows written, left-out members and waiting addresses start empty, so that nothing it writes
    races with the event loop or a planning thread; added to the run's by ``_add_recorded``."""
    view = copy.copy(ctx)
    view.counts = Counter()
    view.rows_written = 0
    view.plan = Plan(itemized=ctx.plan.itemized)
    view.waiting = defaultdict(set)
    view.waiting_on = {}
    return view


def _add_recorded(ctx: RunContext, view: RunContext) -> None:
    """Add what a recording counted to the run's state, in the event loop, once it is committed.
    Members refused for an address are kept up as ``record_reject`` keeps them (only once the
    waiting addresses were read: a later read finds the committed rejects)."""
    ctx.counts.update(view.counts)
    ctx.rows_written += view.rows_written
    ctx.plan.leave_out(view.plan.left_out)
    if ctx.waiting is not None and view.waiting is not None:
        for email, members in view.waiting.items():
            ctx.waiting[email].update(members)
        for holder, members in view.waiting_on.items():
            ctx.waiting_on.setdefault(holder, set()).update(members)


def _addresses(plan: Chunk) -> set[str]:
    return {item.email for item in plan.upserts} | {normalize_email(item.email) for item in plan.deletes}


async def push_members(ctx: RunContext, list_map: dict[str, str]) -> None:
    if ctx.member_api is None:
        return
    changed = ChangedMembers() if ctx.options.backfill else changed_members(ctx)
    vanished_due, vanished = vanished_members_due(ctx)
    waiting: list[WaitingReject] = []
    with ctx.sessions() as session:
        retry = rejects_due(ctx, session, waiting)
        requeued = requeued_members(ctx, session)
        suppressed = members_with_new_suppressions(ctx, session)
    if not ctx.options.backfill:
        ctx.waiting_ids = frozenset(entry.member_id for entry in waiting)
    # Changed members first, oldest change first: each chunk's watermark then covers every
    # change before it. Retries, re-planned list members and vanished ids come after the
    # changes. A backfill then streams every CRM member, page by page (flat memory). The changed
    # ids are not copied (a first sync holds every member's): the others, few, are checked
    # against them in one pass.
    extras = list(dict.fromkeys([*retry, *requeued, *suppressed, *vanished]))
    if extras and changed:
        among_changed = set(extras).intersection(changed.ids)
        extras = [m for m in extras if m not in among_changed]
    ordered = _Concatenation(changed.ids, extras)
    streamed = ctx.options.backfill or ctx.changed_every_member     # (member_chunks)
    total = len(ordered) + (ctx.crm.member_count() if streamed else 0)
    considered = 0
    done = 0
    window = _Window()
    pipeline = _Pipeline(ctx, list_map)
    try:
        for chunk_ids in member_chunks(ctx, ordered):
            # A safe point (SIGTERM, Ctrl-C: sync/stopping.py): every window pushed so far is
            # committed with its watermark (the one in flight is, in ``settle``); the one being
            # planned holds nothing sent yet and is dropped.
            STOP.check()
            if chunk_ids:
                # Chunks of ``ordered`` come first, in order: the last changed member of a chunk has
                # its latest change (``changed`` is ordered by time).
                start = considered
                considered += len(chunk_ids)
                last_changed = min(considered, len(changed)) - 1
                covered = changed.at(last_changed) if start <= last_changed else None
                done += await _add_chunk(ctx, window, chunk_ids, covered, list_map, pipeline=pipeline)
            done += await pipeline.ready()
            if ctx.on_progress:
                skipped = ctx.counts["members_skipped_unchanged"]
                ctx.on_progress("members", min(done + window.members + skipped, total),
                                max(total, considered + skipped))
        done += await pipeline.send(window)
        done += await pipeline.wait()
    except BaseException as error:
        await pipeline.settle(error)
        raise
    if waiting and not ctx.options.backfill:
        _leave_out_waiting(ctx, [entry for entry in waiting if entry.member_id not in ctx.planned])
    ctx.counts["members_considered"] = considered
    ctx.counts["members_vanished"] = len(vanished)
    if not ctx.options.dry_run:
        with ctx.sessions.begin() as session:
            if not ctx.options.backfill:
                current = watermark_for(session, ctx.connection_id, MEMBERS_STREAM)
                set_watermark(session, ctx.connection_id, MEMBERS_STREAM, max(ctx.until, current or ctx.until))
            if vanished_due or ctx.options.backfill:
                current = watermark_for(session, ctx.connection_id, VANISHED_STREAM)
                set_watermark(session, ctx.connection_id, VANISHED_STREAM, max(ctx.until, current or ctx.until))
            if ctx.xid_mark is not None:
                set_position(session, ctx.connection_id, MEMBERS_XID_STREAM, ctx.xid_mark)
            current = watermark_for(session, ctx.connection_id, SUPPRESSIONS_SEEN_STREAM)
            set_watermark(session, ctx.connection_id, SUPPRESSIONS_SEEN_STREAM,
                          max(ctx.started_at, current or ctx.started_at))
            done_replanning(ctx, session)
            ctx.checkpoint(session)
        ctx.refresh_statistics(final=True)
    ctx.counts["link_and_status_rows_written"] = ctx.rows_written


def _leave_out_waiting(ctx: RunContext, waiting: Sequence[WaitingReject]) -> None:
    """Members with an open reject this run does not try again: left out too. A dry run reads their
    CRM lists (one read); a real run names the reject's own list only (its work stays with what
    changed, not with the open rejects)."""
    if not waiting:
        return
    lists = {member.id: tuple(sorted(member.list_ids)) for member in ctx.crm.members(
        sorted({entry.member_id for entry in waiting}))} if ctx.options.dry_run else {}
    left = []
    for entry in waiting:
        when = "when its CRM row changes" if entry.retry_at is None else \
            f"from {entry.retry_at.strftime('%Y-%m-%d %H:%M UTC')} (or when its CRM row changes)"
        left.append(LeftOut(entry.member_id, entry.email,
                            (entry.list_id,) if entry.list_id else lists.get(entry.member_id, ()), REJECT_BACKOFF,
                            f"open reject {entry.code}: {entry.reason}; tried again {when}"))
    ctx.plan.leave_out(left)


async def _remove(ctx: RunContext, plan: Chunk) -> list[PushOutcome]:
    """Removals, as far as the provider can do them (``capabilities.member_removal``): deleted,
    or unsubscribed (and anonymised where it allows) by the provider; where it can do neither,
    each removal stays an open reject saying what a person must do in the provider's panel. A
    removal of a record another member holds now is not sent (``plan._hand_over``): done as is."""
    handed = [PushOutcome(item.key, remote_id=item.remote_id, action=HANDED_OVER)
              for item in plan.deletes if item.key in plan.handed_over]
    if handed:
        ctx.counts["members_handed_over"] += len(handed)
    asked = [item for item in plan.deletes if item.key not in plan.handed_over]
    if not asked:
        return handed
    if ctx.caps.member_removal == "none":
        return handed + [PushOutcome(item.key, rejected=RejectedRow(
            f"{ctx.provider.name} cannot remove members through its API: remove {item.email} "
            f"({item.reason}) in its panel{_in_doubt(plan, item.key, item.email)}",
            provider_code=REMOVAL_UNSUPPORTED)) for item in asked]
    assert ctx.member_api is not None
    outcomes = await ctx.member_api.delete_members(asked)
    for outcome in outcomes:
        if outcome.rejected is None and outcome.suppressed is None:
            ctx.counts[f"members_{outcome.action}"] += 1
    return handed + outcomes


def _in_doubt(plan: Chunk, key: MemberKey, email: str) -> str:
    """The addresses a move of this record was sent to and never confirmed (a crash before its
    answer was recorded: ``_write_provisional_links``), as the end of a panel action's text: the
    person finds the record under one of them."""
    link = plan.links.get(key)
    others = [x for x in (link.unconfirmed_emails or ()) if not _same_address(x, email)] if link is not None else []
    if not others:
        return ""
    return (f" (or under {' or '.join(others)}: a move of this record there was sent and never confirmed, "
            "the worker stopped before its answer)")


async def _refresh_before_updates(ctx: RunContext, plan: Chunk, recorder: _Pipeline | None = None) -> bool:
    """Ask the provider for suppressions that appeared since the pull, in the lists of the
    contacts this batch updates; True when some were new (the batch is planned again). What it
    found is recorded once every window sent before is committed (``recorder``): the statuses
    are judged on the links they write (our own pushes are echoes), and the hashes it clears
    stay cleared."""
    lists = sorted({remote for item in plan.upserts if item.remote_id
                    for remote in (*item.remote_lists, *item.previous_remote_lists)})
    if not lists:
        return False
    if ctx.status_api is None:
        return False
    fresh = [status async for status in ctx.status_api.refresh_statuses(lists)]
    if not fresh:
        return False
    if recorder is not None:
        await recorder.recorded()
    with ctx.sessions.begin() as session:
        changed = record_statuses(ctx, session, fresh)
        ctx.checkpoint(session)
    if changed:
        ctx.suppressions_epoch += 1
    ctx.counts["statuses_refreshed"] += len(changed)
    return bool(changed)


async def _add_chunk(ctx: RunContext, window: _Window, chunk_ids: Sequence[str], covered: dt.datetime | None,
                     list_map: dict[str, str], *, refresh: bool = True, pipeline: _Pipeline | None = None) -> int:
    """Plan one chunk into the window, pushing the window first when the chunk depends on what
    it holds, and after when it is full; return how many members were pushed. With a
    ``pipeline``, a full window is pushed while the next chunks are planned."""
    epoch = ctx.suppressions_epoch
    plan = await pipeline.plan(chunk_ids) if pipeline is not None else _plan(ctx, chunk_ids, list_map)
    if ctx.waiting_ids:    # (a backfill tries every open reject: none waits)
        ctx.planned.update(member_id for member_id in plan.ids if member_id in ctx.waiting_ids)
    pushed = 0
    while pipeline is not None and pipeline.overlaps(plan):
        # A member this chunk needs (an address it takes or releases) is in a window sent: wait
        # for that window's recording, then plan the chunk on it (again, while the new plan
        # needs a window still in flight).
        pushed += await pipeline.clear_of(plan)
        epoch = ctx.suppressions_epoch
        plan = await pipeline.plan(chunk_ids)
    if window.overlaps(plan):
        # A member this chunk needs (an address it takes or releases) is planned already and
        # not pushed yet: push the window first, then plan the chunk on its result.
        if pipeline is not None:
            pushed += await pipeline.send(window)
            pushed += await pipeline.wait()
        else:
            pushed += await _flush(ctx, window, list_map, refresh=refresh)
        epoch = ctx.suppressions_epoch
        plan = _plan(ctx, chunk_ids, list_map)
    window.add(chunk_ids, plan, covered, epoch)
    if window.full(ctx.caps.push_window or ctx.caps.max_batch, ctx.caps.max_batch):
        pushed += await pipeline.send(window) if pipeline is not None else \
            await _flush(ctx, window, list_map, refresh=refresh)
    return pushed


async def _flush(ctx: RunContext, window: _Window, list_map: dict[str, str], *, refresh: bool = True,
                 recorder: _Flight | None = None) -> int:
    """Push and commit what the window holds (one checkpoint); return how many members it
    covered and empty it. With a ``recorder`` (a window sent by the pipeline) it is recorded once
    every window sent before it is committed (``_Flight.record``)."""
    if not window.chunks:
        return 0
    if not ctx.options.dry_run and window.epoch is not None and window.epoch < ctx.suppressions_epoch:
        # Suppressions were recorded while the window before this one was pushed, after this
        # one was planned: plan its members again, on them (once every window before it is
        # committed: the windows planned again are pushed and recorded here, in line).
        # (A window sent by the pipeline had its refresh before updates asked as it was sent.)
        if recorder is not None:
            await recorder.recorded()
        return await _replan(ctx, window, list_map, refresh=refresh and recorder is None)
    if refresh and recorder is None and not ctx.options.dry_run and await _refresh_before_updates(ctx, window.plan):
        # Suppressions appeared since the pull: plan the window's members again, on them.
        return await _replan(ctx, window, list_map, refresh=False)
    plan, covered_until, members, prewritten = window.plan, window.covered_until, window.members, window.prewritten
    window.clear()
    ctx.plan.invalid += [(str(email), reason) for _, email, reason, _ in plan.invalid]
    ctx.plan.invalid += [(str(email), reason) for _, email, reason in plan.pending]
    cannot = [item for item in plan.upserts if ctx.options.dry_run and not ctx.caps.supports_unsubscribe
              and plan.statuses.get(item.key) == "unsubscribed"]
    # (a provider that cannot unsubscribe refuses such an upsert: the real run's reject, foreseen)
    ctx.plan.leave_out([*plan.left_out, *(LeftOut(
        item.key.crm_member_id, item.email, _lists_of(plan, item.key), REJECTED,
        f"{ctx.provider.name} cannot unsubscribe through its API: unsubscribe {item.email} in its panel "
        "(the real run leaves an open reject)") for item in cannot)],
        pushed={item.key.crm_member_id for item in plan.upserts if item not in cannot})
    if not ctx.options.dry_run:
        await _push(ctx, plan, covered_until, recorder, prewritten)
        if recorder is None:        # (else once it is recorded: _Flight.record)
            ctx.refresh_statistics(final=False)
    return members


async def _replan(ctx: RunContext, window: _Window, list_map: dict[str, str], *, refresh: bool) -> int:
    _take_back(ctx, window)     # (planned again on what it held before)
    chunks = window.chunks
    window.clear()
    again = _Window()
    pushed = 0
    for chunk_ids, covered in chunks:
        pushed += await _add_chunk(ctx, again, chunk_ids, covered, list_map, refresh=refresh)
    return pushed + await _flush(ctx, again, list_map, refresh=refresh)


async def _push(ctx: RunContext, plan: Chunk, covered_until: dt.datetime | None,
                recorder: _Flight | None = None, prewritten: frozenset[MemberKey] = frozenset()) -> None:
    """The provisional links, the removals and the upserts of a window, then ONE transaction
    recording the answers, the rejects, the watermark and the lease: here, or (``recorder``) once
    every window sent before is committed, in a worker thread on PostgreSQL. ``prewritten``: its
    new links written already (``_Pipeline._prewrite``)."""
    _write_provisional_links(ctx, plan, prewritten)
    _mark_unsubscribing(ctx, plan)
    assert ctx.member_api is not None
    deleted = await _remove(ctx, plan) if plan.deletes else []
    _repoint_moved_links(ctx, plan, deleted)
    upserted = await ctx.member_api.upsert_members(plan.upserts) if plan.upserts else []
    if recorder is not None:
        await recorder.record(plan, deleted, upserted, covered_until)
    elif _record(ctx, plan, deleted, upserted, covered_until):
        ctx.suppressions_epoch += 1


def _record(ctx: RunContext, plan: Chunk, deleted: list[PushOutcome], upserted: list[PushOutcome],
            covered_until: dt.datetime | None) -> bool:
    """The window's ONE transaction after its answers: the links, the rejects, the statuses of
    contacts found suppressed, the watermark and the lease; True when it recorded suppressions
    (the caller moves ``RunContext.suppressions_epoch`` then, after the commit)."""
    by_key = {item.key: item for item in plan.upserts}
    with ctx.sessions.begin() as session:
        open_rejects = load_open_rejects(ctx, session, plan.ids)
        resolved: list[int] = []
        removed = [o.key for o in deleted if o.rejected is None]
        audit_erasures(ctx, session, plan.deletes, deleted, open_rejects, plan.handed_over)
        ctx.counts["members_removed"] += sum(o.rejected is None and o.action != HANDED_OVER for o in deleted)
        # A member who left every list (or lost its address) at a provider that can only
        # unsubscribe keeps its link, marked as our "unsubscribed" push with no lists: the status
        # pulled back is then our echo, and rejoining a list makes the contact active again.
        reasons = {item.key: item.reason for item in plan.deletes}
        kept = [o.key for o in deleted if o.rejected is None and o.action == "unsubscribed"
                and reasons.get(o.key) in (LEFT_EVERY_LIST, ADDRESS_GONE, ADDRESS_LEFT) and o.key not in by_key]
        if kept:
            session.execute(sa.update(MemberLink), [
                {"id": plan.links[key].id, "remote_lists": [], "payload_hash": "",
                 "status_pushed": "unsubscribed", "pushed_at": utcnow()} for key in kept])
        # A record the provider keeps unsubscribed (its proof of the opt-out: never deleted but
        # for a KVKK erasure) keeps its link too, marked LEFT_KEPT: not removed again, and a
        # later erasure of the member still reaches it.
        left_kept = [o.key for o in deleted if o.rejected is None and o.action == LEFT_UNSUBSCRIBED
                     and reasons.get(o.key) != ERASED and o.key not in by_key]
        if left_kept:
            session.execute(sa.update(MemberLink), [
                {"id": plan.links[key].id, "payload_hash": "", "status_pushed": LEFT_KEPT,
                 "pushed_at": utcnow()} for key in left_kept if key in plan.links])
        # A removal by unsubscribing that the provider refused did not unsubscribe: its link is our
        # last push again (``_mark_unsubscribing``). One whose answer was lost stays marked.
        refused = [o.key for o in deleted if o.rejected is not None and _definitive(o.rejected)
                   and o.key in plan.links and o.key not in by_key]
        if refused and ctx.caps.member_removal == "unsubscribe":
            session.execute(sa.update(MemberLink), [
                {"id": plan.links[key].id, "status_pushed": plan.links[key].status_pushed,
                 "pushed_at": plan.links[key].pushed_at} for key in refused])
        removed = [key for key in removed
                   if key not in by_key and key not in kept and key not in left_kept]  # an e-mail change re-points
        for part in chunks(removed):
            session.execute(sa.delete(MemberLink).where(
                MemberLink.connection_id == ctx.connection_id,
                sa.tuple_(MemberLink.crm_member_id, MemberLink.crm_list_id).in_(
                    [(k.crm_member_id, k.crm_list_id) for k in part])).execution_options(
                synchronize_session=False))
        updates: list[dict[str, Any]] = []
        remote_ids: list[dict[str, Any]] = []
        now = utcnow()
        suppressed: list[RemoteStatus] = []
        left: list[LeftOut] = []
        # Members the provider refused or holds suppressed, in part: their links keep the digest
        # they had, so a backfill plans them again.
        unsettled = {o.key.crm_member_id for o in deleted + upserted
                     if o.rejected is not None or o.suppressed is not None}
        # (a member rejected again in this plan, e.g. the address it lost, keeps its reject open
        # when the removal of its old contact succeeds)
        still_invalid = {key.crm_member_id for key, *_ in plan.invalid}
        # The address each outcome is about: a removal's is the address it takes away (an e-mail
        # change removes the old address under the key that pushes the new one), an upsert's the
        # address it pushes. A reject names it; a panel action asked for on it is done by it.
        delete_email = {item.key: item.email for item in plan.deletes}
        address_of = {id(o): delete_email.get(o.key) for o in deleted}
        # Our own validation rejects first: a provider's answer under the same key overrides it for
        # this run (a removal of the member's record whose answer was lost says it will be tried
        # again, and the next run does; recorded after it, "invalid e-mail address" hid that, found
        # by make fuzz FUZZ_SEED=20261206 FUZZ_EXAMPLES=25 FUZZ_STEPS=40 -k fake-keyed-sqlite).
        for key, email, reason, code in plan.invalid:
            record_reject(ctx, session, open_rejects, key, email, RejectedRow(reason, provider_code=code))
        for outcome in deleted + upserted:
            item = by_key.get(outcome.key)
            address = address_of.get(id(outcome), item.email if item else None)
            if outcome.rejected is not None:
                rejected = outcome.rejected
                known = plan.links.get(outcome.key)
                if (item is not None and id(outcome) not in address_of and item.remote_id is not None
                        and known is not None and rejected.provider_code in PANEL_ACTIONS
                        and not _same_address(known.email, item.email)):
                    # An update of a record that holds another address (one keyed by our member id,
                    # whose address changed) was refused: nothing moved, the person must act on the
                    # address the record holds, not on the one we could not write.
                    address, rejected = known.email, RejectedRow(
                        rejected.reason.replace(item.email, known.email), provider_code=rejected.provider_code)
                if rejected.provider_code == REMOVAL_UNSUPPORTED:
                    rejected = _naming_earlier(ctx, plan, open_rejects.get(outcome.key), address, rejected)
                else:
                    address, rejected = _keeping_panel_action(plan, open_rejects.get(outcome.key), address, rejected)
                record_reject(ctx, session, open_rejects, outcome.key, address, rejected)
                if item is not None:
                    left.append(LeftOut(item.key.crm_member_id, item.email, _lists_of(plan, item.key), REJECTED,
                                        f"{outcome.rejected.provider_code or 'provider'}: {outcome.rejected.reason}"))
                continue
            if outcome.suppressed is not None:    # nothing was written: the provider holds it suppressed
                if item is not None:
                    left.append(LeftOut(item.key.crm_member_id, item.email, _lists_of(plan, item.key), SUPPRESSED,
                                        f"{outcome.suppressed.status} at {ctx.connection_label(ctx.connection_id)}, "
                                        "found while pushing"))
                suppressed.append(outcome.suppressed)
                ctx.counts["members_suppressed_at_provider"] += 1
                known = plan.links.get(item.key) if item is not None else None
                if item is not None and outcome.remote_id and (known is None or not known.remote_id):
                    remote_ids.append({"crm_member_id": item.key.crm_member_id,
                                       "crm_list_id": item.key.crm_list_id, "remote_id": outcome.remote_id})
                continue
            if open_rejects and outcome.key.crm_member_id not in still_invalid:
                row = open_rejects.get(outcome.key)
                if row is not None and row.provider_code != LIST_PENDING and (
                        row.provider_code not in PANEL_ACTIONS
                        or _same_address(row.email, address) or _same_record(ctx, plan, item, outcome)) \
                        and not _hand_on(ctx, plan, row, address):
                    resolved.append(row.id)
                elif row is not None:
                    _drop_earlier(row, address)
                member_wide = MemberKey(outcome.key.crm_member_id)      # a per-list record's member reject
                if outcome.key != member_wide and member_wide in open_rejects \
                        and open_rejects[member_wide].provider_code not in (TOO_LONG, *PANEL_ACTIONS):
                    resolved.append(open_rejects[member_wide].id)
            if item is None:
                continue
            # (no link loaded: its provisional row was written just before the push)
            link = plan.links.get(item.key)
            known_remote = link.remote_id if link is not None else None
            ctx.counts["members_confirmed" if outcome.confirmed
                       else "members_added" if known_remote is None else "members_updated"] += 1
            updates.append({"crm_member_id": item.key.crm_member_id, "crm_list_id": item.key.crm_list_id,
                            "email": item.email, "payload_hash": plan.hashes[item.key],
                            "remote_id": outcome.remote_id or known_remote,
                            "remote_lists": list(item.remote_lists), "pushed_at": now,
                            "status_pushed": plan.statuses[item.key],
                            "source_digest": None if item.key.crm_member_id in unsettled
                            else plan.sources.get(item.key.crm_member_id),
                            "unconfirmed_emails": None})
        update_by_key(session, MEMBER_LINKS, remote_ids, key={"connection_id": ctx.connection_id},
                      match=LINK_MATCH)
        _follow_moved_records(session, plan, updates, {o.key for o in deleted if o.rejected is None},
                              open_rejects, resolved)
        # Every answered link exists (the provisional row, or the link it updates): an upsert by
        # the unique key is that UPDATE, in multi-row statements instead of one per row.
        # (one row per key, the upsert's answer last: a removal of the same key, an address
        # change, comes first; one statement must not touch a row twice)
        answered = {(row["crm_member_id"], row["crm_list_id"]): row for row in updates}
        upsert(session, MEMBER_LINKS, [{"connection_id": ctx.connection_id, **row} for row in answered.values()],
               key=LINK_KEY, update=ANSWER_COLUMNS)
        ctx.rows_written += len(updates)
        if plan.rehash:
            session.execute(sa.update(MemberLink), plan.rehash)
        gone_links = {plan.links[item.key].id for item in plan.deletes if item.key in plan.links}
        settled = {link_id: digest for member_id, link_id, digest in plan.settled
                   if member_id not in unsettled and link_id not in gone_links}
        update_by_key(session, MEMBER_LINKS, [{"id": link_id, "source_digest": digest}
                                              for link_id, digest in settled.items()],
                      key={"connection_id": ctx.connection_id}, match=("id",))
        if suppressed:
            record_statuses(ctx, session, suppressed)
        ctx.plan.leave_out(left)
        for key, email, reason in plan.pending:
            record_reject(ctx, session, open_rejects, key, email, RejectedRow(reason, provider_code=LIST_PENDING))
        # A member whose CRM data passes our validation now: our own validation reject of it is
        # moot, also when nothing was pushed (an address lost and restored at a provider that kept
        # the contact, a RET never created, a suppression) or the provider refused a per-list
        # record (its own reject); a refusal under the same key replaced it already.
        refused_now = {o.key for o in deleted + upserted if o.rejected is not None}
        resolved += [row.id for member_id in dict.fromkeys(plan.validated) if member_id not in still_invalid
                     and MemberKey(member_id) not in refused_now
                     and (row := open_rejects.get(MemberKey(member_id))) is not None
                     and row.provider_code == VALIDATION]
        # A member that holds, with nothing to push, an address a removal reject of its list asks a
        # person to remove (its address came back): that reject no longer names it.
        for key, email in plan.unchanged.items():
            row = open_rejects.get(key)
            if key.crm_member_id in still_invalid or row is None or row.provider_code != REMOVAL_UNSUPPORTED:
                continue
            if not _same_address(row.email, email):
                _drop_earlier(row, email)
            elif not _hand_on(ctx, plan, row, email):
                resolved.append(row.id)
        resolved += [open_rejects[key].id for key in plan.unpend
                     if key in open_rejects and open_rejects[key].provider_code == LIST_PENDING]
        gone = set(plan.gone)
        # A removal the provider cannot make stays open until a person removes the member in
        # its panel and dismisses the reject; the member's other rejects are moot now, but for
        # its removal's own refusal in this window (one whose answer was lost is tried again:
        # autoflush may have given its new row an id already, and it was resolved at once, found
        # by make fuzz FUZZ_SEED=20261206 FUZZ_EXAMPLES=25 -k fake-keyed-sqlite).
        resolved += [row.id for key, row in open_rejects.items() if key.crm_member_id in gone
                     and row.provider_code != REMOVAL_UNSUPPORTED and key not in refused_now]
        # (a reject this transaction added has no id yet and stands: e.g. the old address of a
        # member whose new address was just pushed, at a provider that cannot remove it)
        for part in chunks(sorted({reject_id for reject_id in resolved if reject_id is not None})):
            session.execute(sa.update(Reject).where(Reject.id.in_(part), Reject.resolved_at.is_(None))
                            .values(resolved_at=utcnow()).execution_options(synchronize_session=False))
        if covered_until is not None and not ctx.options.backfill:
            current = watermark_for(session, ctx.connection_id, MEMBERS_STREAM)
            if current is None or covered_until > current:
                set_watermark(session, ctx.connection_id, MEMBERS_STREAM, min(covered_until, ctx.until))
        ctx.checkpoint(session)
    return bool(suppressed)


def _lists_of(plan: Chunk, key: MemberKey) -> tuple[str, ...]:
    return (key.crm_list_id,) if key.crm_list_id else plan.member_lists.get(key.crm_member_id, ())


def _repoint_moved_links(ctx: RunContext, plan: Chunk, deleted: Sequence[PushOutcome]) -> None:
    """An address change at a provider keyed by e-mail removes the old contact and creates a new
    one under the same link. Once the old one is gone, and BEFORE the new one is created, the link
    is re-pointed to the new address as a provisional link (no remote id, no hash): a crash after
    the create and before the window's commit then leaves a link to the contact that exists, and a
    later removal or KVKK erasure of the member reaches it (the link still named the old address,
    and the new contact was orphaned)."""
    removed = {o.key for o in deleted if o.rejected is None and o.suppressed is None}
    moved = [{"id": link.id, "email": item.email, "remote_id": None, "remote_lists": list(item.remote_lists),
              "payload_hash": "",
              "status_pushed": None, "source_digest": None}
             for item in plan.upserts if item.remote_id is None and item.key in removed
             and (link := plan.links.get(item.key)) is not None and link.email != item.email]
    _update_links(ctx, moved)


#: The end of a removal reject's text naming the addresses its member left earlier in the same list
#: (``_naming_earlier``): rejects are one per member and list.
_EARLIER = "; also remove {} from this list in its panel (left there by earlier address changes)"
_EARLIER_RE = re.compile(re.escape(_EARLIER).replace(re.escape("{}"), "(.+)") + "$")


def _earlier(reason: str) -> tuple[str, list[str]]:
    """A removal reject's own text, and the earlier addresses it names (``_EARLIER``)."""
    found = _EARLIER_RE.search(reason)
    return (reason, []) if found is None else (reason[:found.start()], found.group(1).split(", "))


def _current_addresses(plan: Chunk, member_id: str) -> set[str]:
    return {normalize_email(item.email) for item in plan.upserts if item.key.crm_member_id == member_id}


def _naming_earlier(ctx: RunContext, plan: Chunk, row: Reject | None, address: str | None,
                    rejected: RejectedRow) -> RejectedRow:
    """At a provider keyed by e-mail that cannot remove, each address a member leaves behind in a
    list is a record of its own that keeps receiving there. A removal reject of a later address
    (a second address change, the address lost) replaces the member's open one for that list
    (one per member and list): it names the earlier addresses too, but for one the member holds
    again (found by make fuzz FUZZ_SEED=20261206 FUZZ_EXAMPLES=25 -k fake-noremoval-sqlite, the
    KNOWN_GAPS "two-addresses-left-in-one-list")."""
    if ctx.caps.member_key == "crm_id" or row is None or row.resolved_at is not None \
            or row.provider_code != REMOVAL_UNSUPPORTED:
        return rejected
    _, named = _earlier(row.reason)
    current = _current_addresses(plan, row.crm_member_id or "")
    earlier = [x for x in dict.fromkeys(normalize_email(x) for x in (row.email or "", *named) if x)
               if not _same_address(x, address) and x not in current]
    if not earlier:
        return rejected
    reason, _ = _earlier(rejected.reason)
    return RejectedRow(reason + _EARLIER.format(", ".join(earlier)), provider_code=rejected.provider_code)


#: A refusal of something else under the key of an open removal reject, told inside it
#: (``_keeping_panel_action``) until that is done.
_MEANWHILE = " [meanwhile: {} :meanwhile]"
_MEANWHILE_RE = re.compile(r" \[meanwhile: .*? :meanwhile\]", re.S)
#: The most of a refusal's text told inside a removal reject: the reject's own text comes first.
_MEANWHILE_MAX = 600


def _without_meanwhile(reason: str) -> str:
    """A removal reject's text without the refusal told inside it (``_keeping_panel_action``)."""
    return _MEANWHILE_RE.sub("", reason) if " [meanwhile: " in reason else reason


def _keeping_panel_action(plan: Chunk, row: Reject | None, address: str | None,
                          rejected: RejectedRow) -> tuple[str | None, RejectedRow]:
    """A refusal (a retriable error, a validation) under the key of an open removal reject that
    asks a person to remove ANOTHER address from the list (one the member left there) must not
    replace it: rejects are one per member and list, and the address would keep receiving with
    nothing asking for its removal (found by make fuzz FUZZ_SEED=20261208 FUZZ_EXAMPLES=20
    FUZZ_STEPS=40 -k fake-noremoval). The removal reject stays, with the refusal told inside it
    (still "will retry" where it says so: the member is tried again as every reject is) until a
    push under the key succeeds; the (address, refusal) to record."""
    if row is None or row.resolved_at is not None or row.provider_code != REMOVAL_UNSUPPORTED \
            or not row.email or _same_address(row.email, address) \
            or normalize_email(row.email) in _current_addresses(plan, row.crm_member_id or ""):
        return address, rejected
    own, named = _earlier(_without_meanwhile(row.reason))
    refusal = rejected.reason
    told = _MEANWHILE.format(refusal if len(refusal) <= _MEANWHILE_MAX else refusal[:_MEANWHILE_MAX - 1] + "…")
    tail = _EARLIER.format(", ".join(named)) if named else ""
    # The own text (what a person must do) and the addresses named stay whole as far as they fit;
    # the refusal told is what gives way.
    room = max(0, 2000 - len(own) - len(tail))
    reason = own + (told if len(told) <= room else "") + tail
    return row.email, RejectedRow(reason[:2000], provider_code=REMOVAL_UNSUPPORTED)


def _hand_on(ctx: RunContext, plan: Chunk, row: Reject, address: str | None) -> bool:
    """A removal reject whose address was pushed again (its member holds it once more) is moot for
    that address, but not for the earlier ones it names (``_naming_earlier``): it names the first
    of those instead and stays open (True)."""
    if row.provider_code != REMOVAL_UNSUPPORTED or row.resolved_at is not None:
        return False
    row.reason = _without_meanwhile(row.reason)         # (a push under its key succeeded)
    own, named = _earlier(row.reason)
    current = _current_addresses(plan, row.crm_member_id or "")
    left = [x for x in named if not _same_address(x, address) and x not in current]
    if not left:
        return False
    first, rest = left[0], left[1:]
    reason = own.replace(row.email or "", first) if row.email else own
    row.email = first
    row.reason = (reason + (_EARLIER.format(", ".join(rest)) if rest else ""))[:2000]
    return True


def _drop_earlier(row: Reject, address: str | None) -> None:
    """A removal reject of another address that names the pushed one among the earlier addresses
    its member left in the list (``_naming_earlier``): the member holds that one again, so the
    reject stops asking a person to remove it (it would take a live member out of its own list)."""
    if row.provider_code != REMOVAL_UNSUPPORTED or row.resolved_at is not None or not address:
        return
    row.reason = _without_meanwhile(row.reason)         # (a push under its key succeeded)
    own, named = _earlier(row.reason)
    left = [x for x in named if not _same_address(x, address)]
    if len(left) < len(named):
        row.reason = (own + (_EARLIER.format(", ".join(left)) if left else ""))[:2000]


def _same_record(ctx: RunContext, plan: Chunk, item: MemberUpsert | None, outcome: PushOutcome) -> bool:
    """The upsert wrote the very record its link names (an update by the record's remote id): a
    record keyed by our member id moves with an address change, so a panel action asked for on
    it under this key (remove it from this list, unsubscribe it) is moot now that it holds what
    this push wrote. Only there: a provider keyed by e-mail creates another record for a new
    address, the link follows the new record, and the old one is still there with its panel action
    standing (resolving it by the new record's update left the old address receiving unexplained)."""
    if ctx.caps.member_key != "crm_id":
        return False
    link = plan.links.get(outcome.key)
    return item is not None and link is not None and item.remote_id is not None \
        and item.remote_id == link.remote_id and (outcome.remote_id or item.remote_id) == link.remote_id


def _follow_moved_records(session: Session, plan: Chunk, updates: list[dict[str, Any]], removed: set[MemberKey],
                          open_rejects: dict[MemberKey, Reject], resolved: list[int]) -> None:
    """A record keyed by our member id holds ONE address in every list it is in (Postatr: one
    member per Memberid; the member's per-list links share its remote id): when an update writes a
    new address to it under one list, the member's other links to that record (lists it left,
    whose removal the provider cannot make) hold the new address too, and so does every open panel
    action asked for on them: it must name the address the person will find in the panel. Those
    links are re-pointed (a later removal names the new address) and those rejects re-worded, in
    the transaction that records the update."""
    moved = {(row["crm_member_id"], row["remote_id"]): row["email"] for row in updates
             if row["remote_id"] is not None}
    if not moved:
        return
    answered = {MemberKey(row["crm_member_id"], row["crm_list_id"]) for row in updates}
    repoint = []
    for key, link in plan.links.items():
        email = moved.get((key.crm_member_id, link.remote_id))
        if email is None or key in answered or key in removed:
            continue
        if _same_address(link.email, email):
            if link.unconfirmed_emails:     # the move is confirmed: the record holds this address
                repoint.append({"id": link.id, "email": link.email, "unconfirmed_emails": None})
            continue
        repoint.append({"id": link.id, "email": email, "unconfirmed_emails": None})
        row = open_rejects.get(key)
        if row is not None and row.resolved_at is None and (row.id is None or row.id not in resolved) \
                and row.provider_code in PANEL_ACTIONS and not _same_address(row.email, email):
            row.email, row.reason = email, row.reason.replace(link.email, email)
    if repoint:
        session.execute(sa.update(MemberLink), repoint)


def _same_address(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and normalize_email(a or "") == normalize_email(b or "")


def _mark_unsubscribing(ctx: RunContext, plan: Chunk) -> None:
    """At a provider that removes by unsubscribing, every link whose record a removal unsubscribes
    is marked as our "unsubscribed" push BEFORE the request leaves (its lists kept: the removal is
    not done until its answer is recorded), so that the status pulled back later is known as our
    own echo also when the answer is lost or the worker dies before the window is recorded. It was
    taken for the recipient's unsubscribe: stored, it blocked the member that owns the address now
    (at a provider keyed by our member id, with a record of its own there, left receiving). A
    removal the provider refused restores the link (``_record``)."""
    if ctx.caps.member_removal != "unsubscribe":
        return
    upserted = {item.key for item in plan.upserts}
    now = utcnow()
    rows = [{"id": link.id, "status_pushed": "unsubscribed", "pushed_at": now} for item in plan.deletes
            if item.key not in upserted and (link := plan.links.get(item.key)) is not None
            and link.status_pushed not in ("unsubscribed", LEFT_KEPT)]
    _update_links(ctx, rows)


def _update_links(ctx: RunContext, rows: list[dict[str, Any]]) -> None:
    """Links changed before a request leaves (by id), committed with the lease's checkpoint."""
    if not rows:
        return
    with ctx.sessions.begin() as session:
        session.execute(sa.update(MemberLink), rows)
        ctx.checkpoint(session)
    ctx.rows_written += len(rows)


def _definitive(rejected: RejectedRow) -> bool:
    """The provider answered the request with a refusal (4xx): it was not applied."""
    return rejected.status_code is not None and 400 <= rejected.status_code < 500


def _new_link_rows(ctx: RunContext, plan: Chunk, skip: frozenset[MemberKey] = frozenset()) -> list[dict[str, Any]]:
    """A provisional link row (no remote id, no hash) for each upsert without a link yet."""
    now = utcnow()
    return [{"connection_id": ctx.connection_id, "crm_member_id": item.key.crm_member_id,
             "crm_list_id": item.key.crm_list_id, "email": item.email, "remote_id": None,
             "remote_lists": list(item.remote_lists), "payload_hash": "", "pushed_at": now, "status_pushed": None,
             "source_digest": None}
            for item in plan.upserts if item.key not in plan.links and item.key not in skip]


def _write_new_links(ctx: RunContext, plan: Chunk) -> frozenset[MemberKey]:
    """(``_Pipeline._prewrite``, in a worker thread) The window's new links, provisional; their keys."""
    rows = _new_link_rows(ctx, plan)
    with ctx.sessions.begin() as session:
        upsert(session, MEMBER_LINKS, rows, key=LINK_KEY, update=("email",))
        ctx.checkpoint(session)
    ctx.rows_written += len(rows)
    return frozenset(MemberKey(row["crm_member_id"], row["crm_list_id"]) for row in rows)


def _take_back(ctx: RunContext, window: _Window) -> None:
    """The new links a window wrote ahead of its push (``_Pipeline._prewrite``) when it is not
    pushed as planned (planned again, dropped by a stop or an error): deleted while still
    provisional (nothing was sent for them)."""
    keys, window.prewritten = sorted(window.prewritten), frozenset()
    if not keys:
        return
    with ctx.sessions.begin() as session:
        for part in chunks(keys):
            session.execute(sa.delete(MemberLink).where(
                MemberLink.connection_id == ctx.connection_id, MemberLink.remote_id.is_(None),
                MemberLink.payload_hash == "",
                sa.tuple_(MemberLink.crm_member_id, MemberLink.crm_list_id).in_(
                    [(k.crm_member_id, k.crm_list_id) for k in part])).execution_options(synchronize_session=False))
        ctx.checkpoint(session)


def _write_provisional_links(ctx: RunContext, plan: Chunk, prewritten: frozenset[MemberKey] = frozenset()) -> None:
    """Record, BEFORE the provider sees them, every member it may create, so that a crash
    after its answer and before our commit still leaves a link to update or delete, and every
    list a push adds a member to.

    That is the one write of a new link before the push; the one after it (``update_by_key``
    in ``_push``) records the provider's answer (remote id, hash) and cannot be folded
    into this one without losing the crash guarantee."""
    rows = _new_link_rows(ctx, plan, prewritten)
    # The lists a push puts a member in are in its link before the provider sees it, for a
    # contact it already holds too (added to the lists the link has): after a crash before our
    # commit, a later removal (an e-mail change) takes them off the contact, and a later push
    # takes off those the member left since. They stayed, kept as lists made in the panel (found
    # by make fuzz FUZZ_SEED=20261208 FUZZ_EXAMPLES=15 FUZZ_STEPS=40 -k euromsg-sqlite).
    widened = [{"id": link.id, "remote_lists": [*link.remote_lists, *added]} for item in plan.upserts
               if (link := plan.links.get(item.key)) is not None
               and (link.email == item.email or ctx.caps.member_key == "crm_id")
               and (added := [x for x in item.remote_lists if x not in link.remote_lists])]
    # A record keyed by our member id moves to the member's new address with the update: until its
    # answer is recorded, each link to that record names the new address as one it may hold (a
    # removal the provider cannot make, planned after a crash in between, asks a person to remove
    # the record under either address; it named the old one only, found by make fuzz
    # FUZZ_SEED=20261206 FUZZ_EXAMPLES=25 FUZZ_STEPS=40 -k postatr-sqlite).
    moving = _moves_in_doubt(ctx, plan)
    if not rows and not widened and not moving:
        return
    with ctx.sessions.begin() as session:
        # One multi-row statement; the rows are found again by their unique key afterwards.
        if rows:
            upsert(session, MEMBER_LINKS, rows, key=LINK_KEY, update=("email",))
        if widened:
            session.execute(sa.update(MemberLink), widened)
        for rows_alike in moving:
            session.execute(sa.update(MemberLink), rows_alike)
        ctx.checkpoint(session)
    ctx.rows_written += len(rows) + len(widened) + sum(map(len, moving))


def _moves_in_doubt(ctx: RunContext, plan: Chunk) -> list[list[dict[str, Any]]]:
    """(provider keyed by our member id) The links whose record this plan's updates move to
    another address, each with that address added to its ``unconfirmed_emails``: the links the
    updates are pushed under, also out of step (no hash, no source digest: pushed again by the
    next run that plans the member, a backfill included, also when its CRM row goes back to the
    address the link names), and the record's other links (lists it left). Two lists of rows, one
    per set of columns."""
    if ctx.caps.member_key != "crm_id":
        return []
    moves: dict[tuple[str, str], str] = {(item.key.crm_member_id, item.remote_id): item.email
                                         for item in plan.upserts if item.remote_id is not None}
    pushed = {item.key for item in plan.upserts}
    own: list[dict[str, Any]] = []
    others: list[dict[str, Any]] = []
    for key, link in plan.links.items():
        email = moves.get((key.crm_member_id, link.remote_id)) if link.remote_id is not None else None
        if email is None or _same_address(link.email, email):
            continue
        known = list(link.unconfirmed_emails or ())
        listed = any(_same_address(x, email) for x in known)
        named = known if listed else [*known, email]
        if key in pushed:
            if not (listed and not link.payload_hash):      # (else out of step with this move already)
                own.append({"id": link.id, "unconfirmed_emails": named, "payload_hash": "", "source_digest": None})
        elif not listed:
            others.append({"id": link.id, "unconfirmed_emails": named})
    return [rows for rows in (own, others) if rows]
