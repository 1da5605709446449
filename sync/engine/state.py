"""Watermarks and connection leases: the small pieces of state that make runs safe to repeat.

A watermark is written only inside the transaction that commits the work it covers, and
never goes backwards. A lease is one conditional UPDATE, so it is portable to SQLite,
PostgreSQL and MariaDB and needs no advisory locks.

The database's clock decides a lease: its expiry is written as the database's "now" plus the
lease length and compared with the database's "now", so a worker whose own clock is off can
neither steal a live lease nor hand out one that has already run out. ``db_now`` reads that
clock (one portable query per dialect) and the value goes into the conditional UPDATE as a
bound parameter, stored like every other time (naive UTC with microseconds).

``LeaseKeeper`` is a run's hold on its lease: it takes it, renews it from a heartbeat every
third of its length (a database error is logged and the next beat tries again), and checks
it before every provider write (``guard``). A run whose lease was taken over, or could not
be confirmed, gets ``LeaseLostError`` before that write and stops.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session, sessionmaker

from sync.errors import LeaseHeldError, LeaseLostError, SyncError
from sync.models import Connection, SyncRun, Watermark

log = structlog.get_logger(__name__)

#: The database's own clock, as naive UTC; statement time, not transaction start (PostgreSQL's
#: now() would be the start of a long transaction). SQLite is embedded: its clock is the host's.
_DB_NOW = {
    "postgresql": "SELECT CAST(clock_timestamp() AT TIME ZONE 'UTC' AS timestamp)",
    "mysql": "SELECT UTC_TIMESTAMP(6)",
    "mariadb": "SELECT UTC_TIMESTAMP(6)",
}
_SQLITE_NOW = "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')"
#: The same clocks as a column of another SELECT (the write guard reads the lease and the clock in
#: one statement).
_DB_NOW_COLUMN = {dialect: expression.removeprefix("SELECT ") for dialect, expression in _DB_NOW.items()}
_SQLITE_NOW_COLUMN = _SQLITE_NOW.removeprefix("SELECT ")


class WatermarkWentBackwards(SyncError):
    """A stream's position would move backwards."""


def watermark_for(session: Session, connection_id: int, stream: str) -> dt.datetime | None:
    value = session.scalar(sa.select(Watermark.value).where(
        Watermark.connection_id == connection_id, Watermark.stream == stream))
    return None if value is None else dt.datetime.fromisoformat(value)


def set_watermark(session: Session, connection_id: int, stream: str, value: dt.datetime) -> None:
    """Advance ``stream`` to ``value`` in the caller's transaction; refuse to move backwards."""
    row = session.get(Watermark, (connection_id, stream))
    encoded = value.astimezone(dt.UTC).isoformat()
    if row is None:
        session.add(Watermark(connection_id=connection_id, stream=stream, value=encoded))
    else:
        current = dt.datetime.fromisoformat(row.value)
        if value < current:
            raise WatermarkWentBackwards(f"watermark {stream} would go back from {current} to {value}")
        row.value = encoded


def db_now(session: Session) -> dt.datetime:
    """The database server's current time, as aware UTC."""
    expression = _DB_NOW.get(session.get_bind().dialect.name, _SQLITE_NOW)
    return _as_utc(session.scalar(sa.text(expression)))


def _as_utc(value: object) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if not isinstance(value, dt.datetime):
        raise SyncError(f"the database clock answered {value!r}")
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


@dataclass(frozen=True)
class LeaseGrant:
    """A lease just taken: until when (database clock), and from whom if it had expired."""

    expires_at: dt.datetime
    taken_from: str | None = None


def _lease_of(session: Session, connection_id: int) -> tuple[str | None, dt.datetime | None]:
    row = session.execute(sa.select(Connection.lease_owner, Connection.lease_expires_at)
                          .where(Connection.id == connection_id)).one()
    return row.lease_owner, row.lease_expires_at


def _lease_and_now(connection: sa.Connection, connection_id: int) -> tuple[str | None, dt.datetime | None,
                                                                           dt.datetime]:
    """The lease's owner and expiry and the database's clock, in ONE statement (the write guard's
    read before every provider write: a round trip, no ORM session)."""
    now: sa.ColumnElement[object] = sa.literal_column(_DB_NOW_COLUMN.get(connection.dialect.name, _SQLITE_NOW_COLUMN))
    row = connection.execute(sa.select(Connection.lease_owner, Connection.lease_expires_at, now)
                             .where(Connection.id == connection_id)).one()
    return row[0], row[1], _as_utc(row[2])


def _shown(when: dt.datetime | None) -> str:
    return "an unknown time" if when is None else f"{when:%Y-%m-%d %H:%M:%S} UTC"


def position_for(session: Session, connection_id: int, stream: str) -> int | None:
    """A stream position that is a number (a CRM transaction id), not a time."""
    value = session.scalar(sa.select(Watermark.value).where(
        Watermark.connection_id == connection_id, Watermark.stream == stream))
    return None if value is None else int(value)


def set_position(session: Session, connection_id: int, stream: str, value: int) -> None:
    """Advance a numeric position in the caller's transaction; it never goes backwards."""
    row = session.get(Watermark, (connection_id, stream))
    if row is None:
        session.add(Watermark(connection_id=connection_id, stream=stream, value=str(value)))
    elif value > int(row.value):
        row.value = str(value)


def acquire_lease(session: Session, connection_id: int, owner: str, seconds: int) -> LeaseGrant:
    """Take (or renew) the connection's lease, or raise LeaseHeldError naming the holder and
    the expiry; commits at once."""
    previous, _ = _lease_of(session, connection_id)
    now = db_now(session)
    expires = now + dt.timedelta(seconds=seconds)
    result = session.execute(
        sa.update(Connection)
        .where(Connection.id == connection_id,
               sa.or_(Connection.lease_owner.is_(None), Connection.lease_owner == owner,
                      Connection.lease_expires_at.is_(None), Connection.lease_expires_at < now))
        .values(lease_owner=owner, lease_expires_at=expires)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    if result.rowcount != 1:  # type: ignore[attr-defined]
        holder, until = _lease_of(session, connection_id)
        session.rollback()
        raise LeaseHeldError(f"connection {connection_id} is being synced by {holder} until {_shown(until)} "
                             "(database clock); it is free again then if that worker has stopped",
                             holder=holder, expires_at=until)
    return LeaseGrant(expires, previous if previous not in (None, owner) else None)


def renew_lease(session: Session, connection_id: int, owner: str, seconds: int) -> dt.datetime:
    """Extend our lease inside the caller's transaction; lost lease -> LeaseLostError (stop).
    An expired lease nobody took is still ours and is renewed. Returns the new expiry."""
    expires = db_now(session) + dt.timedelta(seconds=seconds)
    result = session.execute(
        sa.update(Connection)
        .where(Connection.id == connection_id, Connection.lease_owner == owner)
        .values(lease_expires_at=expires)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        holder, until = _lease_of(session, connection_id)
        raise LeaseLostError(f"lost the lease of connection {connection_id}: "
                             + (f"{holder} holds it until {_shown(until)}" if holder else "it was released"),
                             holder=holder, expires_at=until)
    return expires


def release_lease(session: Session, connection_id: int, owner: str) -> None:
    session.execute(
        sa.update(Connection).where(Connection.id == connection_id, Connection.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None).execution_options(synchronize_session=False)
    )
    session.commit()


def close_orphaned_runs(session: Session, connection_id: int, keep_run_id: int, closed_by: str) -> int:
    """Close the connection's other ``running`` rows as ``crashed``, in the caller's transaction.

    Called by the holder of the connection's lease right after taking it: a run that still says
    ``running`` then is one whose worker died (its lease ran out, or it died before taking one).
    Dry runs take no lease, so they are left alone. A live run of another worker that has not
    yet tried the lease may be closed too; it then fails to take the lease and records its own
    outcome (``blocked``) over this one.
    """
    result = session.execute(
        sa.update(SyncRun)
        .where(SyncRun.connection_id == connection_id, SyncRun.status == "running", SyncRun.id != keep_run_id,
               SyncRun.kind != "dry-run")
        .values(status="crashed", finished_at=db_now(session),
                error=f"its worker stopped before the run finished; closed when {closed_by} took the lease")
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


Sleep = Callable[[float], Awaitable[None]]


class LeaseKeeper:
    """One run's hold on its connection's lease: take, heartbeat, guard writes, release.

    ``lost`` says why the lease is gone (None while it is ours). Every database call uses a
    session of its own, so the keeper never joins a transaction of the run.
    """

    def __init__(self, sessions: sessionmaker[Session], connection_id: int, owner: str, seconds: int, *,
                 sleep: Sleep = asyncio.sleep) -> None:
        self.sessions = sessions
        self.connection_id = connection_id
        self.owner = owner
        self.seconds = seconds
        self.lost: str | None = None
        self.holder: str | None = None
        self._sleep = sleep
        bind = sessions.kw.get("bind")
        if not isinstance(bind, sa.Engine):
            raise TypeError("LeaseKeeper needs a sessionmaker bound to an Engine")
        self._engine: sa.Engine = bind
        #: The guard's own connection, in autocommit: one round trip per write (no pool checkout,
        #: pre-ping or rollback around it). Not for an in-memory SQLite database, whose one
        #: connection the pool shares.
        self._reader: sa.Connection | None = None
        self._own_reader = not (bind.dialect.name == "sqlite" and bind.url.database in (None, "", ":memory:"))
        #: The reading in progress (``guard``), and how many were started.
        self._check: asyncio.Future[None] | None = None
        self._checks_started = 0
        self._closing = False

    def acquire(self) -> LeaseGrant:
        with self.sessions() as session:
            return acquire_lease(session, self.connection_id, self.owner, self.seconds)

    def renew(self) -> None:
        """Renew now, in a transaction of its own; LeaseLostError when it is gone."""
        with self.sessions.begin() as session:
            renew_lease(session, self.connection_id, self.owner, self.seconds)

    def release(self) -> None:
        if self._check is None:
            self._close_reader()
        else:                   # a reading still in its thread (its writer was cancelled): closed after it
            self._closing = True
        with self.sessions() as session:
            release_lease(session, self.connection_id, self.owner)

    def _read(self) -> tuple[str | None, dt.datetime | None, dt.datetime]:
        if not self._own_reader:
            with self._engine.connect() as connection:
                return _lease_and_now(connection, self.connection_id)
        if self._reader is not None:
            try:
                return _lease_and_now(self._reader, self.connection_id)
            except sa.exc.DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
                # (the kept connection went stale, as a pool's pre-ping would have found: a new one)
                self._close_reader()
        self._reader = reader = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        # (a keeper dropped without ``release``, as tests do, still hands its connection back)
        weakref.finalize(self, _close_quietly, reader)
        return _lease_and_now(reader, self.connection_id)

    def _close_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            _close_quietly(reader)

    def _lose(self, exc: LeaseLostError) -> LeaseLostError:
        self._close_reader()
        if self.lost is None:
            self.lost, self.holder = exc.message, exc.holder
            log.warning("lease.lost", reason=exc.message)
        return exc

    async def heartbeat(self) -> None:
        """Renew every third of the lease until cancelled or lost; a database error is logged
        and the next beat tries again (the write guard stops writes if the lease runs out)."""
        while self.lost is None:
            await self._sleep(self.seconds / 3)
            try:
                self.renew()
            except LeaseLostError as exc:
                self._lose(exc)
                return
            except Exception as exc:  # a database error must not end the heartbeat
                log.warning("lease.renew_failed", error=_first_line(exc))

    async def guard(self) -> None:
        """Before a provider write: the lease must still be ours by the database's reading.
        A lease with less than half its length left (a late heartbeat) is renewed first.

        The reading runs in a worker thread, so the event loop goes on with the requests in flight
        during its round trip, and writes that ask meanwhile share ONE reading: each write waits
        for a reading that STARTED after it asked (the one in progress when it asked started
        before, so it waits for that one to end and shares the next). Every write is still preceded
        by a check of its own time, as strict as one reading per write; with many writes in flight
        there are fewer readings than writes. (An in-memory SQLite database reads on the loop: its
        one connection belongs to this thread.)"""
        if self.lost is not None:
            raise LeaseLostError(self.lost, holder=self.holder)
        if not self._own_reader:
            self.confirm()
            return
        asked = self._checks_started
        while True:
            if self._check is None or self._check.done():     # (its done-callback may not have run yet)
                self._checks_started += 1
                self._check = asyncio.ensure_future(asyncio.to_thread(self.confirm))
                self._check.add_done_callback(self._check_ended)
            check, number = self._check, self._checks_started
            await asyncio.shield(check)         # (a cancelled writer leaves the reading to the others)
            if number > asked:
                return

    def _check_ended(self, check: asyncio.Future[None]) -> None:
        if self._check is check:
            self._check = None
        if not check.cancelled():
            check.exception()                   # (retrieved: each waiter re-raises it)
        if self._closing:
            self._close_reader()

    def confirm(self) -> None:
        if self.lost is not None:
            raise LeaseLostError(self.lost, holder=self.holder)
        try:
            owner, expires, now = self._read()
            if owner != self.owner:
                raise LeaseLostError(f"lost the lease of connection {self.connection_id}: "
                                     + (f"{owner} holds it until {_shown(expires)}" if owner else "it was released"),
                                     holder=owner, expires_at=expires)
            if expires is None or expires - now < dt.timedelta(seconds=self.seconds / 2):
                self.renew()
        except LeaseLostError as exc:
            raise self._lose(exc) from None
        except sa.exc.SQLAlchemyError as exc:
            self._close_reader()
            raise self._lose(LeaseLostError(
                f"cannot confirm the lease of connection {self.connection_id} before a write "
                f"(database error: {_first_line(exc)})")) from None


def _close_quietly(connection: sa.Connection) -> None:
    try:
        connection.close()
    except sa.exc.SQLAlchemyError as exc:      # a broken connection: the pool drops it
        log.debug("lease.reader_close_failed", error=_first_line(exc))


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
