"""Step 6b of a connection's run: activity (conversations, messages) pulled into local tables and
linked to CRM members by their normalised phone (``capabilities.pulls_activity``).

Four parts, each committing its own work with the position that covers it, so a crash at any
instant resumes without loss and without duplicates:

1. **Member phones.** CRM members changed since the ``activity_members`` watermark (minus the
   run's look-back) are read; each phone is normalised (``sync.phones``) into
   ``wapcrm_member_phones``. An unusable number is a reject with the reason; a deleted member,
   or one whose phone was emptied, loses its row (and, KVKK, the messages of a number nobody
   holds any more). A new or changed number makes the member's messages due.
2. **Reference data.** Users, instances and call results are read whole and replace the local
   copy, every run.
3. **Conversations.** Day by day (whole days in the provider's time zone), from the
   ``activity_conversations`` watermark minus ``lookback_days``, up to today as it was when the
   run started. Rows are de-duplicated by conversation id; a re-read row that changed is updated.
   Each day commits with the watermark moved to the end of that day (the start of today for
   today, which is never complete). The phone of every new or changed conversation makes the
   messages of members holding it due: activity is what makes a message list worth reading.
   **Back-dated calls** (a call saved today with last week's date: WapCRM's ``addconversation``
   takes the call's own time, and the provider has no "changed since" query) are found by a wide
   re-read: once ``reread_every_days`` have passed since the last one (the
   ``activity_conversations_reread`` position: when that re-read started), the run also reads
   every day from ``reread_days`` before that start. So a call saved with a date up to
   ``reread_days`` before the moment it is saved is read at the latest by the first run starting
   ``reread_every_days`` − ½ day after the previous re-read; one dated earlier still is never read
   (``backfill`` reads ``first_days``). A first run counts as a re-read. Cost: about
   ``reread_days + reread_every_days`` day reads once per period (longer after a pause, by the
   days the watermark reads anyway), instead of ``lookback_days + 1``.
4. **Messages.** For members whose messages are due (new numbers, activity) plus the stalest
   of the others: at least ``refresh_per_run`` of them, at least their share of the period
   (``messages_refresh_days``: all phones × time since the last refresh ÷ the period, so nightly
   runs read phones ÷ period each), and every phone last read more than the period − ½ day ago.
   So a WhatsApp message on a phone without a call arrives within ``messages_refresh_days``. One
   read per distinct phone, de-duplicated by message key; the due flag is cleared in the
   transaction that stores that phone's messages. Apart from that bounded refresh (whose cost is
   stated in docs/providers/wapcrm.md), work grows with what changed, not with the CRM's size.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import zoneinfo
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar, cast

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session, sessionmaker

from sync.crm import CrmMember, CrmReader
from sync.engine.state import set_watermark, watermark_for
from sync.errors import RejectedRow
from sync.models import (
    EMAIL,
    ID,
    Reject,
    WapcrmCallResult,
    WapcrmConversation,
    WapcrmInstance,
    WapcrmMemberPhone,
    WapcrmMessage,
    WapcrmUser,
    utcnow,
)
from sync.phones import UnusablePhone, normalize_phone
from sync.providers.base import (
    ActivityPull,
    Provider,
    ReferenceItem,
    RemoteConversation,
    RemoteMessage,
)

log = structlog.get_logger(__name__)

MEMBERS_STREAM = "activity_members"
CONVERSATIONS_STREAM = "activity_conversations"
#: When the last wide re-read of conversations (or the first run) started.
CONVERSATIONS_REREAD_STREAM = "activity_conversations_reread"
#: When the last message refresh (the reads of phones without news) started.
MESSAGES_REFRESH_STREAM = "activity_messages_refresh"
#: A period "has passed" this much before it is over, so that a nightly run whose start drifts
#: by minutes keeps a period of N days at N nights.
PERIOD_SLACK = dt.timedelta(hours=12)
#: Reject codes: our check of the CRM's number, and the provider refusing it.
PHONE_INVALID = "phone_invalid"
PHONE_REFUSED = "phone_refused"
PHONE_CODES = (PHONE_INVALID, PHONE_REFUSED)
IN_CHUNK = 500
#: Phones whose messages are read at once (the HTTP layer caps the requests in flight).
MESSAGE_CHUNK = 20
_CONVERSATION_COLUMNS = ("occurred_at", "phone", "direction", "ring_seconds", "call_seconds", "transferred",
                         "transferred_to", "result", "sub_result", "user_name", "list_name", "details")
T = TypeVar("T")
Checkpoint = Callable[[Session], None]


def _chunks(items: Sequence[T], size: int = IN_CHUNK) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _cut(value: str | None, size: int = 255) -> str | None:
    return None if value is None else value[:size]


class ActivityStep:
    """The activity part of one connection's run (built and called once by ConnectionSync)."""

    def __init__(self, api: ActivityPull, *, sessions: sessionmaker[Session], crm: CrmReader, connection_id: int,
                 run_id: int, until: dt.datetime, lookback: dt.timedelta, backfill: bool, counts: Counter[str],
                 checkpoint: Checkpoint) -> None:
        self.api = api
        self.sessions = sessions
        self.crm = crm
        self.connection_id = connection_id
        self.run_id = run_id
        self.until = until
        self.lookback = lookback
        self.backfill = backfill
        self.counts = counts
        self.checkpoint = checkpoint
        self.window = api.activity_window
        self.zone = zoneinfo.ZoneInfo(self.window.time_zone)
        self.first_run = False                    # set by conversation_days()
        self.wide_from: dt.date | None = None     # the first day of this run's wide re-read, if one is due

    async def run(self) -> None:
        self.track_member_phones()
        await self.refresh_reference()
        await self.pull_conversations()
        await self.pull_messages()

    # --- 1. member phones -----------------------------------------------------------------

    def track_member_phones(self) -> None:
        with self.sessions() as session:
            mark = watermark_for(session, self.connection_id, MEMBERS_STREAM)
        since = None if self.backfill or mark is None else mark - self.lookback
        changed = self.crm.changed_member_ids(since, self.until)
        self.counts["activity_members_read"] += len(changed)
        for chunk in _chunks(changed):
            ids = [member_id for _, member_id in chunk]
            members = {member.id: member for member in self.crm.members(ids)}
            with self.sessions.begin() as session:
                self._record_phones(session, ids, members)
                self._advance(session, MEMBERS_STREAM, max(at for at, _ in chunk))
                self.checkpoint(session)
        with self.sessions.begin() as session:
            if self.backfill:       # a full read also finds members deleted without a trace
                self._drop_vanished(session, {member_id for _, member_id in changed})
            self._advance(session, MEMBERS_STREAM, self.until)
            self.checkpoint(session)

    def _record_phones(self, session: Session, ids: Sequence[str], members: dict[str, CrmMember]) -> None:
        rows = {row.crm_member_id: row for row in session.scalars(sa.select(WapcrmMemberPhone).where(
            WapcrmMemberPhone.connection_id == self.connection_id, WapcrmMemberPhone.crm_member_id.in_(ids)))}
        rejects = {row.crm_member_id: row for row in session.scalars(sa.select(Reject).where(
            Reject.connection_id == self.connection_id, Reject.crm_member_id.in_(ids), Reject.crm_list_id == ""))}
        dropped: set[str] = set()
        for member_id in ids:
            member, row = members.get(member_id), rows.get(member_id)
            raw = (member.phone or "").strip() if member is not None and not member.deleted else ""
            phone: str | None = None
            if raw and len(member_id) > ID:
                self._reject(session, rejects, member_id, member, RejectedRow(
                    f"the CRM member id is {len(member_id)} characters long; at most {ID} fit",
                    provider_code=PHONE_INVALID))
            elif raw:
                try:
                    phone = normalize_phone(raw)
                except UnusablePhone as exc:
                    self._reject(session, rejects, member_id, member, RejectedRow(
                        f"{exc.reason}: this member's calls and messages cannot be linked to it",
                        provider_code=PHONE_INVALID))
            if phone is None:
                if not raw:
                    self._resolve(rejects.get(member_id))
                if row is not None:
                    dropped.add(row.phone)
                    session.delete(row)
                    self.counts["activity_phones_dropped"] += 1
                continue
            self._resolve(rejects.get(member_id))
            if row is None:
                session.add(WapcrmMemberPhone(connection_id=self.connection_id, crm_member_id=member_id, phone=phone,
                                              messages_due=True))
                self.counts["activity_phones_new"] += 1
            elif row.phone != phone:
                dropped.add(row.phone)
                row.phone, row.messages_due = phone, True
                self.counts["activity_phones_changed"] += 1
        session.flush()
        self._erase_unheld_messages(session, dropped)

    def _drop_vanished(self, session: Session, alive: set[str]) -> None:
        gone = [row for row in session.scalars(sa.select(WapcrmMemberPhone).where(
            WapcrmMemberPhone.connection_id == self.connection_id)) if row.crm_member_id not in alive]
        for row in gone:
            session.delete(row)
        self.counts["activity_phones_dropped"] += len(gone)
        session.flush()
        self._erase_unheld_messages(session, {row.phone for row in gone})

    def _erase_unheld_messages(self, session: Session, phones: set[str]) -> None:
        """KVKK: the messages of a number no CRM member holds any more are deleted."""
        for part in _chunks(sorted(phones)):
            held = set(session.scalars(sa.select(WapcrmMemberPhone.phone).where(
                WapcrmMemberPhone.connection_id == self.connection_id, WapcrmMemberPhone.phone.in_(part))))
            unheld = [phone for phone in part if phone not in held]
            if unheld:
                result = session.execute(sa.delete(WapcrmMessage).where(
                    WapcrmMessage.connection_id == self.connection_id, WapcrmMessage.phone.in_(unheld))
                    .execution_options(synchronize_session=False))
                self.counts["messages_erased"] += int(result.rowcount)  # type: ignore[attr-defined]

    def _reject(self, session: Session, rejects: dict[str, Reject], member_id: str, member: CrmMember | None,
                error: RejectedRow) -> None:
        self.counts["rejected"] += 1
        email = None if member is None or member.email is None else member.email[:EMAIL]
        row = rejects.get(member_id)
        if row is None:
            rejects[member_id] = Reject(connection_id=self.connection_id, run_id=self.run_id,
                                        crm_member_id=member_id[:ID], crm_list_id="", email=email,
                                        provider_code=error.provider_code, reason=error.reason[:2000])
            session.add(rejects[member_id])
            return
        row.attempts = (row.attempts or 0) + 1 if row.resolved_at is None else 1
        row.run_id, row.email, row.provider_code = self.run_id, email, error.provider_code
        row.reason = error.reason[:2000]
        row.last_seen_at, row.resolved_at = utcnow(), None

    @staticmethod
    def _resolve(row: Reject | None) -> None:
        if row is not None and row.resolved_at is None and row.provider_code in PHONE_CODES:
            row.resolved_at = utcnow()

    def _advance(self, session: Session, stream: str, value: dt.datetime) -> None:
        """Move a watermark forward in the caller's transaction (never back: set_watermark refuses)."""
        previous = watermark_for(session, self.connection_id, stream)
        if previous is None or value > previous:
            set_watermark(session, self.connection_id, stream, value)

    # --- 2. reference data ----------------------------------------------------------------

    async def refresh_reference(self) -> None:
        items = await self.api.pull_reference()
        now = utcnow()
        with self.sessions.begin() as session:
            tables: tuple[tuple[str, Any], ...] = (("user", WapcrmUser), ("instance", WapcrmInstance),
                                                   ("call_result", WapcrmCallResult))
            for kind, model in tables:
                wanted: dict[str, ReferenceItem] = {item.remote_id[:ID]: item for item in items if item.kind == kind}
                existing = {row.remote_id: row for row in session.scalars(
                    sa.select(model).where(model.connection_id == self.connection_id))}
                for remote_id, row in existing.items():
                    if remote_id not in wanted:
                        session.delete(row)
                for remote_id, item in wanted.items():
                    row = existing.get(remote_id)
                    if row is None:
                        row = model(connection_id=self.connection_id, remote_id=remote_id)
                        session.add(row)
                    row.name, row.refreshed_at = item.name[:255], now
                    if isinstance(row, WapcrmCallResult):
                        row.parent_remote_id = _cut(item.parent_id, ID)
                    else:
                        row.details = dict(item.attributes)
                    if isinstance(row, WapcrmInstance):
                        row.phone = _cut(item.phone, 32)
                self.counts[f"activity_{kind}s"] = len(wanted)
            self.checkpoint(session)

    # --- 3. conversations -----------------------------------------------------------------

    def _day_start(self, day: dt.date) -> dt.datetime:
        return dt.datetime.combine(day, dt.time(), self.zone).astimezone(dt.UTC)

    def conversation_days(self) -> list[dt.date]:
        """The days this run reads: from the watermark's day minus ``lookback_days`` (the first
        run, or a backfill: ``first_days`` back) up to today, as of the run's start; from earlier
        when a wide re-read is due (:meth:`reread_from`)."""
        today = self.until.astimezone(self.zone).date()
        with self.sessions() as session:
            mark = watermark_for(session, self.connection_id, CONVERSATIONS_STREAM)
            reread = watermark_for(session, self.connection_id, CONVERSATIONS_REREAD_STREAM)
        if mark is None or self.backfill:
            first = today - dt.timedelta(days=max(self.window.first_days, 1) - 1)
        else:
            first = mark.astimezone(self.zone).date() - dt.timedelta(days=self.window.lookback_days)
        self.first_run = mark is None
        self.wide_from = None if mark is None else self.reread_from(reread)
        if self.wide_from is not None and self.wide_from < first:
            self.counts["conversation_days_reread"] += (first - self.wide_from).days
            first = self.wide_from
        return [first + dt.timedelta(days=n) for n in range(max((today - first).days + 1, 0))]

    def reread_from(self, last: dt.datetime | None) -> dt.date | None:
        """The first day of a wide re-read when one is due (``reread_every_days`` since the last,
        or none yet), else None: ``reread_days`` before the last re-read started, so that every
        call saved since then with a date up to ``reread_days`` before its saving is among the days
        read (after a pause the re-read is longer by the pause, which the watermark reads anyway)."""
        days, every = max(self.window.reread_days, 0), max(self.window.reread_every_days, 0)
        if days == 0 or (last is not None and self.until - last < dt.timedelta(days=every) - PERIOD_SLACK):
            return None
        return ((last or self.until) - dt.timedelta(days=days)).astimezone(self.zone).date()

    async def pull_conversations(self) -> None:
        days = self.conversation_days()
        today = self.until.astimezone(self.zone).date()
        for number, day in enumerate(days):
            conversations = await self.api.pull_conversations(day)
            with self.sessions.begin() as session:
                active = self._record_conversations(session, conversations)
                for part in _chunks(sorted(active)):
                    session.execute(sa.update(WapcrmMemberPhone).where(
                        WapcrmMemberPhone.connection_id == self.connection_id, WapcrmMemberPhone.phone.in_(part))
                        .values(messages_due=True).execution_options(synchronize_session=False))
                covered = self._day_start(day + dt.timedelta(days=1)) if day < today else self._day_start(day)
                self._advance(session, CONVERSATIONS_STREAM, covered)
                # A first run reads everything from first_days back, and a crash resumes it from its
                # watermark: it counts as a re-read from its first committed day. A wide re-read
                # counts once its last day is committed (a crash before repeats it whole).
                if (number == 0 and self.first_run) or (number == len(days) - 1 and self.wide_from is not None):
                    self._advance(session, CONVERSATIONS_REREAD_STREAM, self.until)
                self.checkpoint(session)
            self.counts["conversation_days"] += 1

    def _record_conversations(self, session: Session, conversations: Sequence[RemoteConversation]) -> set[str]:
        """Insert new conversations, update changed ones; return the phones with news."""
        by_id = {item.remote_id[:ID]: item for item in conversations}
        existing: dict[str, WapcrmConversation] = {}
        for part in _chunks(sorted(by_id)):
            existing.update((row.remote_id, row) for row in session.scalars(sa.select(WapcrmConversation).where(
                WapcrmConversation.connection_id == self.connection_id, WapcrmConversation.remote_id.in_(part))))
        active: set[str] = set()
        now = utcnow()
        for remote_id, item in by_id.items():
            values: dict[str, Any] = {
                "occurred_at": item.occurred_at, "phone": item.phone, "direction": item.direction,
                "ring_seconds": item.ring_seconds, "call_seconds": item.call_seconds,
                "transferred": item.transferred, "transferred_to": _cut(item.transferred_to),
                "result": _cut(item.result), "sub_result": _cut(item.sub_result), "user_name": _cut(item.user_name),
                "list_name": _cut(item.list_name), "details": dict(item.details)}
            row = existing.get(remote_id)
            if row is None:
                session.add(WapcrmConversation(connection_id=self.connection_id, remote_id=remote_id, pulled_at=now,
                                               **values))
                self.counts["conversations_pulled"] += 1
            elif any(getattr(row, column) != values[column] for column in _CONVERSATION_COLUMNS):
                for column, value in values.items():
                    setattr(row, column, value)
                row.pulled_at = now
                self.counts["conversations_updated"] += 1
            else:
                self.counts["conversations_unchanged"] += 1
                continue
            if item.phone is not None:
                active.add(item.phone)
        return active

    # --- 4. messages ----------------------------------------------------------------------

    def phones_to_read(self) -> list[str]:
        """Distinct phones whose messages are due, then the stalest others (:meth:`refresh_count`)."""
        with self.sessions() as session:
            due = sorted(set(session.scalars(sa.select(WapcrmMemberPhone.phone).where(
                WapcrmMemberPhone.connection_id == self.connection_id, WapcrmMemberPhone.messages_due.is_(True)))))
            limit = self.refresh_count(session)
            refresh: list[str] = []
            if limit > 0:
                refresh = list(session.scalars(
                    sa.select(WapcrmMemberPhone.phone)
                    .where(WapcrmMemberPhone.connection_id == self.connection_id,
                           WapcrmMemberPhone.messages_due.is_(False))
                    .group_by(WapcrmMemberPhone.phone).order_by(self._last_read, WapcrmMemberPhone.phone)
                    .limit(limit)))
        due_set = set(due)
        return due + [phone for phone in refresh if phone not in due_set]

    #: A phone's last read (the earliest of its members' rows; never read: the epoch).
    _last_read = sa.func.min(sa.func.coalesce(WapcrmMemberPhone.messages_pulled_at,
                                              dt.datetime(1970, 1, 1, tzinfo=dt.UTC)))

    def refresh_count(self, session: Session) -> int:
        """How many phones without news this run reads, stalest first: at least
        ``refresh_per_run``; with a period of ``messages_refresh_days`` also at least the share of
        all phones for the time since the last refresh (phones ÷ period per nightly run), and
        every phone last read more than the period − ½ day before this run started (a missed
        night, a crash): so every phone is read at least once per period."""
        base = max(self.window.refresh_per_run, 0)
        period_days = max(self.window.messages_refresh_days, 0)
        if period_days == 0:
            return base
        period = dt.timedelta(days=period_days)
        quiet = (sa.select(WapcrmMemberPhone.phone.label("phone"), self._last_read.label("last_read"))
                 .where(WapcrmMemberPhone.connection_id == self.connection_id,
                        WapcrmMemberPhone.messages_due.is_(False))
                 .group_by(WapcrmMemberPhone.phone).subquery())
        phones = int(session.scalar(sa.select(sa.func.count()).select_from(quiet)) or 0)
        overdue = int(session.scalar(sa.select(sa.func.count()).select_from(quiet).where(
            quiet.c.last_read < self.until - period + PERIOD_SLACK)) or 0)
        last = watermark_for(session, self.connection_id, MESSAGES_REFRESH_STREAM)
        elapsed = min(max(self.until - last, dt.timedelta(0)), period) if last is not None else dt.timedelta(days=1)
        share = int(phones * (elapsed / period))
        if overdue:
            self.counts["message_lists_overdue"] += overdue
        return max(base, share, overdue)

    async def pull_messages(self) -> None:
        phones = self.phones_to_read()
        for chunk in _chunks(phones, MESSAGE_CHUNK):
            answers = await asyncio.gather(*(self._messages_of(phone) for phone in chunk))
            with self.sessions.begin() as session:
                for phone, answer in zip(chunk, answers, strict=True):
                    if isinstance(answer, RejectedRow):
                        self._refused(session, phone, answer)
                    else:
                        self._record_messages(session, phone, answer)
                    session.execute(sa.update(WapcrmMemberPhone).where(
                        WapcrmMemberPhone.connection_id == self.connection_id, WapcrmMemberPhone.phone == phone)
                        .values(messages_due=False, messages_pulled_at=utcnow())
                        .execution_options(synchronize_session=False))
                self.checkpoint(session)
            self.counts["message_lists_read"] += len(chunk)
        with self.sessions.begin() as session:
            self._advance(session, MESSAGES_REFRESH_STREAM, self.until)
            self.checkpoint(session)

    async def _messages_of(self, phone: str) -> list[RemoteMessage] | RejectedRow:
        try:
            return await self.api.pull_messages(phone)
        except RejectedRow as exc:
            return exc

    def _record_messages(self, session: Session, phone: str, messages: Sequence[RemoteMessage]) -> None:
        by_key = {message.key: message for message in messages}
        known: set[str] = set()
        for part in _chunks(sorted(by_key)):
            known.update(session.scalars(sa.select(WapcrmMessage.remote_id).where(
                WapcrmMessage.connection_id == self.connection_id, WapcrmMessage.remote_id.in_(part))))
        now = utcnow()
        for key, message in by_key.items():
            if key in known:
                continue
            session.add(WapcrmMessage(connection_id=self.connection_id, remote_id=key, phone=message.phone or phone,
                                      channel=_cut(message.channel, 32), direction=message.direction[:8],
                                      text=message.text, sent_at=message.sent_at, pulled_at=now))
            self.counts["messages_pulled"] += 1

    def _refused(self, session: Session, phone: str, error: RejectedRow) -> None:
        """The provider refuses this number: a reject for each member holding it (retried when
        the member's number changes)."""
        log.warning("activity.phone_refused", reason=error.reason)
        member_ids = list(session.scalars(sa.select(WapcrmMemberPhone.crm_member_id).where(
            WapcrmMemberPhone.connection_id == self.connection_id, WapcrmMemberPhone.phone == phone)))
        rejects = {row.crm_member_id: row for row in session.scalars(sa.select(Reject).where(
            Reject.connection_id == self.connection_id, Reject.crm_member_id.in_(member_ids),
            Reject.crm_list_id == ""))}
        for member_id in member_ids:
            self._reject(session, rejects, member_id, None, RejectedRow(
                f"WapCRM refused the number {phone} for its message list: {error.reason}", provider_code=PHONE_REFUSED))


async def pull_activity(provider: Provider, *, sessions: sessionmaker[Session], crm: CrmReader, connection_id: int,
                        run_id: int, until: dt.datetime, lookback: dt.timedelta, backfill: bool,
                        counts: Counter[str], checkpoint: Checkpoint) -> None:
    """The activity step of a run (see the module docstring); ``provider`` declares ``pulls_activity``."""
    await ActivityStep(cast(ActivityPull, provider), sessions=sessions, crm=crm, connection_id=connection_id,
                       run_id=run_id, until=until, lookback=lookback, backfill=backfill, counts=counts,
                       checkpoint=checkpoint).run()
