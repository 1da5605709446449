"""Pulled data handed back: the ``pulled_*`` views and exports of them with named cursors.

The views (migration 0009, documented in docs/pulled-data.md) are the stable interface over the
tables the runs pull into: ``suppressions list|export`` and ``reports export`` read them, and a
CRM on the same server may read them directly. Their columns are pinned by
tests/integration/test_pulled_data.py.

An export with ``--cursor NAME`` hands out the rows after the cursor's position, in the order of
(time, id): ``pulled_at`` for suppressions (it moves when a row's status gets stronger or a
blocking status's time moves, so a changed row is handed out again), ``updated_at`` for campaign
results (it moves when a result changes). Two rules keep "each row once" exact:

- **Only rows of finished runs.** Runs write pulled rows in transactions of their own, stamped by
  their worker's clock before they commit; a row stamped 10:00:00 may commit after one stamped
  10:00:01. A cursored export therefore stops before the start of the oldest run still writing
  (``writing_since``): rows of a run still going are handed out by the first export after it ends.
- **The cursor moves after the output is complete**, in the transaction that read its position
  (locked with FOR UPDATE on PostgreSQL and MariaDB, so a second export of the same cursor waits):
  after the last row was written and stdout flushed, or the ``--output`` file written, synced and
  renamed into place. A failed export leaves it where it was.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from sync import db, registry
from sync.engine.state import db_now
from sync.errors import InvalidInputError, SyncError
from sync.models import Connection, ExportCursor, SyncRun, UTCDateTime, utcnow
from sync.ops.status import iso
from sync.providers.base import SUPPRESSION_RANK
from sync.providers.specs import get_spec

#: The views' own metadata: never Base.metadata (alembic compares that with the tables).
VIEWS = sa.MetaData()


PULLED_SUPPRESSIONS = sa.Table(
    "pulled_suppressions", VIEWS,
    sa.Column("id", sa.Integer), sa.Column("tenant", sa.String), sa.Column("crm_tenant_id", sa.String),
    sa.Column("provider", sa.String), sa.Column("email", sa.String), sa.Column("remote_list_id", sa.String),
    sa.Column("crm_list_id", sa.String), sa.Column("list_name", sa.String), sa.Column("remote_id", sa.String),
    sa.Column("status", sa.String), sa.Column("occurred_at", UTCDateTime()), sa.Column("pulled_at", UTCDateTime()),
)
PULLED_IYS_CONSENTS = sa.Table(
    "pulled_iys_consents", VIEWS,
    sa.Column("id", sa.Integer), sa.Column("tenant", sa.String), sa.Column("crm_tenant_id", sa.String),
    sa.Column("provider", sa.String), sa.Column("recipient", sa.String), sa.Column("consent_type", sa.String),
    sa.Column("recipient_type", sa.String), sa.Column("status", sa.String), sa.Column("consent_date", UTCDateTime()),
    sa.Column("source", sa.String), sa.Column("pulled_at", UTCDateTime()),
)
PULLED_CAMPAIGN_RESULTS = sa.Table(
    "pulled_campaign_results", VIEWS,
    sa.Column("id", sa.Integer), sa.Column("tenant", sa.String), sa.Column("crm_tenant_id", sa.String),
    sa.Column("provider", sa.String), sa.Column("campaign_remote_id", sa.String), sa.Column("campaign_name", sa.String),
    sa.Column("campaign_status", sa.String), sa.Column("campaign_sent_at", UTCDateTime()),
    sa.Column("campaign_final", sa.Boolean), sa.Column("email", sa.String), sa.Column("sent_at", UTCDateTime()),
    sa.Column("opened_at", UTCDateTime()), sa.Column("open_count", sa.Integer),
    sa.Column("clicked_at", UTCDateTime()), sa.Column("clicked_link", sa.String), sa.Column("bounce_type", sa.String),
    sa.Column("bounce_reason", sa.String), sa.Column("unsubscribed_at", UTCDateTime()),
    sa.Column("complained_at", UTCDateTime()), sa.Column("updated_at", UTCDateTime()),
)
PULLED_WAPCRM_CONVERSATIONS = sa.Table(
    "pulled_wapcrm_conversations", VIEWS,
    sa.Column("id", sa.Integer), sa.Column("tenant", sa.String), sa.Column("crm_tenant_id", sa.String),
    sa.Column("provider", sa.String), sa.Column("remote_id", sa.String), sa.Column("crm_member_id", sa.String),
    sa.Column("phone", sa.String), sa.Column("occurred_at", UTCDateTime()), sa.Column("direction", sa.Integer),
    sa.Column("ring_seconds", sa.Integer), sa.Column("call_seconds", sa.Integer),
    sa.Column("transferred", sa.Boolean), sa.Column("transferred_to", sa.String), sa.Column("result", sa.String),
    sa.Column("sub_result", sa.String), sa.Column("user_name", sa.String), sa.Column("list_name", sa.String),
    sa.Column("pulled_at", UTCDateTime()),
)
PULLED_WAPCRM_MESSAGES = sa.Table(
    "pulled_wapcrm_messages", VIEWS,
    sa.Column("id", sa.Integer), sa.Column("tenant", sa.String), sa.Column("crm_tenant_id", sa.String),
    sa.Column("provider", sa.String), sa.Column("remote_id", sa.String), sa.Column("crm_member_id", sa.String),
    sa.Column("phone", sa.String), sa.Column("channel", sa.String), sa.Column("direction", sa.String),
    sa.Column("text", sa.String), sa.Column("sent_at", UTCDateTime()), sa.Column("pulled_at", UTCDateTime()),
)

#: The suppression statuses, strongest first.
STATUSES = tuple(sorted(SUPPRESSION_RANK, key=SUPPRESSION_RANK.__getitem__, reverse=True))
FORMATS = ("csv", "jsonl")
#: A cursor's name: what `--cursor` accepts (lower case: MariaDB compares names without case).
CURSOR_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
#: A run still marked ``running`` holds cursored exports back while its connection's lease is
#: live, or for this long after it started (a run takes its lease within seconds of starting; a
#: crashed one's lease runs out).
RUN_WITHOUT_LEASE = dt.timedelta(minutes=10)
#: Rows fetched per round trip while an export streams.
FETCH = 1000


@dataclass(frozen=True)
class Stream:
    """What an export reads: a view, ordered by one of its times and its id."""

    name: str           # the cursor's stream (export_cursors.stream)
    view: sa.Table
    time_column: str

    @property
    def time(self) -> sa.ColumnElement[dt.datetime]:
        return self.view.c[self.time_column]

    @property
    def columns(self) -> list[str]:
        return list(self.view.c.keys())


SUPPRESSIONS = Stream("suppressions", PULLED_SUPPRESSIONS, "pulled_at")
CAMPAIGN_RESULTS = Stream("campaign_results", PULLED_CAMPAIGN_RESULTS, "updated_at")


@dataclass(frozen=True)
class Selection:
    """The rows a command reads: all filters must match. ``since`` is on the stream's time."""

    tenant: str | None = None
    provider: str | None = None
    since: dt.datetime | None = None
    status: str | None = None       # suppressions only

    @property
    def filters(self) -> dict[str, Any]:
        """What a cursor is bound to (``--since`` only narrows, so it is not part of it)."""
        return {"provider": self.provider, "tenant": self.tenant}


def check_selection(session: Session, selection: Selection) -> None:
    """Unknown tenant, provider or status: InvalidInputError / NotFoundError / ConfigurationError."""
    if selection.provider is not None:
        get_spec(selection.provider)
    if selection.tenant is not None:
        registry.get_tenant(session, selection.tenant)
    if selection.status is not None and selection.status not in STATUSES:
        raise InvalidInputError(f"--status {selection.status!r}: expected one of {', '.join(STATUSES)}")


def _query(stream: Stream, selection: Selection) -> sa.Select[Any]:
    view = stream.view
    query = sa.select(view)
    if selection.tenant is not None:
        query = query.where(view.c.tenant == selection.tenant)
    if selection.provider is not None:
        query = query.where(view.c.provider == selection.provider)
    if selection.since is not None:
        query = query.where(stream.time >= selection.since)
    if selection.status is not None:
        query = query.where(view.c.status == selection.status)
    return query


def plain(value: Any) -> Any:
    """A view's value as JSON has it: times as UTC ISO 8601 with ``Z``."""
    return iso(value) if isinstance(value, dt.datetime) else value


def list_rows(session: Session, stream: Stream, selection: Selection, *, limit: int | None = None
              ) -> list[dict[str, Any]]:
    """The newest rows first (by the stream's time), as plain dicts in the view's column order."""
    check_selection(session, selection)
    query = _query(stream, selection).order_by(stream.time.desc(), stream.view.c.id.desc())
    if limit is not None:
        query = query.limit(limit)
    return [{key: plain(value) for key, value in row._mapping.items()} for row in session.execute(query)]


def writing_since(session: Session) -> dt.datetime | None:
    """The start of the oldest run that may still write pulled rows (None: no run is writing).

    A run is marked ``running`` (committed) before it writes anything, and every row it writes is
    stamped after that by the same clock; a finished run has committed all its rows.
    """
    live = sa.and_(Connection.lease_owner.is_not(None), Connection.lease_expires_at >= db_now(session))
    return session.scalar(
        sa.select(sa.func.min(SyncRun.started_at)).join(Connection, Connection.id == SyncRun.connection_id)
        .where(SyncRun.status == "running", SyncRun.kind != "dry-run",
               sa.or_(live, SyncRun.started_at > utcnow() - RUN_WITHOUT_LEASE)))


# --- writing an export ----------------------------------------------------------------------


def cell(value: Any) -> str:
    """A view's value as a CSV field: empty for NULL, true/false, times as UTC ISO 8601 with ``Z``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return iso(value) or ""
    return str(value)


class RowWriter:
    """Rows of one view in one format, onto a text stream."""

    def __init__(self, out: TextIO, fmt: str, columns: Sequence[str]) -> None:
        if fmt not in FORMATS:
            raise InvalidInputError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
        self.out, self.fmt, self.columns = out, fmt, list(columns)
        self._csv = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
        if self._csv is not None:
            self._csv.writerow(self.columns)

    def write(self, values: Sequence[Any]) -> None:
        if self._csv is not None:
            self._csv.writerow([cell(v) for v in values])
        else:
            self.out.write(json.dumps({k: plain(v) for k, v in zip(self.columns, values, strict=True)},
                                      ensure_ascii=False) + "\n")


class Output:
    """Where an export goes: a stream (stdout), or ``path``: a new file beside it (mode 0600: the
    rows are personal data), synced and renamed over ``path`` only when complete.

    ``keep_existing`` (a cursored export): an existing ``path`` is never replaced. Its rows were
    handed out by an earlier export that moved the cursor past them, and may not be loaded yet
    (a nightly script run twice within the second of its file name): replacing it would lose them.
    The file is linked into place, so that a file made meanwhile is not replaced either."""

    def __init__(self, path: str | None, stream: TextIO, *, keep_existing: bool = False) -> None:
        self.path = Path(path) if path is not None else None
        self._stream = stream
        self._keep_existing = keep_existing
        self._temp: Path | None = None
        self._file: TextIO | None = None

    @property
    def shown(self) -> str:
        return "stdout" if self.path is None else str(self.path)

    def open(self) -> TextIO:
        if self.path is None:
            return self._stream
        if self._keep_existing and os.path.lexists(self.path):
            raise SyncError(self._exists())
        try:
            fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part", dir=self.path.parent or ".")
        except OSError as exc:
            raise SyncError(f"cannot write {self.path}: {exc.strerror or exc}; the cursor did not move") from None
        self._temp = Path(temp)
        self._file = open(fd, "w", encoding="utf-8", newline="")  # noqa: SIM115  (closed by commit/abort)
        return self._file

    def commit(self) -> None:
        """Make the written rows final: flush stdout, or sync the file and rename it into place."""
        if self._file is None or self._temp is None or self.path is None:
            self._stream.flush()
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        if self._keep_existing:
            try:
                os.link(self._temp, self.path)      # fails if the path exists, unlike a rename
            except FileExistsError:
                raise SyncError(self._exists()) from None
            self._temp.unlink()
        else:
            os.replace(self._temp, self.path)
        self._file = self._temp = None

    def _exists(self) -> str:
        return (f"{self.path} exists: a cursored export never replaces a file (its rows may not be loaded yet); "
                "give a new name; the cursor did not move")

    def abort(self, *, broken_pipe: bool = False) -> None:
        if broken_pipe and self.path is None:
            # Nobody reads the stream any more: point it at /dev/null, so that the interpreter's
            # last flush at exit does not fail a second time.
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())
        if self._file is not None:
            self._file.close()
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)
        self._file = self._temp = None


@dataclass(frozen=True)
class ExportOutcome:
    rows: int
    cursor: str | None = None
    #: The cursor's position after the export: the (time, id) of the last row it has handed out.
    position: tuple[dt.datetime, int] | None = None
    #: Cursored exports: the start of the oldest run still writing, before which this one stopped.
    held_back_at: dt.datetime | None = None


def check_cursor_name(name: str) -> None:
    if not CURSOR_NAME.fullmatch(name):
        raise InvalidInputError(f"--cursor {name!r}: a cursor's name is 1-64 of a-z, 0-9, '_', '-', '.', "
                                "starting with a letter or digit")


def _ensure_cursor(sessions: sessionmaker[Session], name: str, stream: Stream, selection: Selection) -> None:
    """Make the cursor at the start of the stream if it does not exist yet (its own transaction)."""
    try:
        with db.transaction(sessions) as session:
            if session.get(ExportCursor, (name, stream.name)) is None:
                session.add(ExportCursor(name=name, stream=stream.name, filters=selection.filters))
    except sa.exc.IntegrityError:
        pass        # made at the same moment by another export: it is there now


def _shown_filters(filters: dict[str, Any]) -> str:
    given = [f"--{key} {value}" for key, value in sorted(filters.items(), reverse=True) if value is not None]
    return " ".join(given) or "every tenant and provider"


def export_rows(sessions: sessionmaker[Session], stream: Stream, selection: Selection, fmt: str, output: Output,
                *, cursor: str | None = None) -> ExportOutcome:
    """Write the selected rows, oldest first by (time, id); with ``cursor``, only those after its
    position and before any run still writing, and move it past them once the output is complete."""
    if fmt not in FORMATS:
        raise InvalidInputError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    with db.transaction(sessions) as session:
        check_selection(session, selection)
    if cursor is not None:
        check_cursor_name(cursor)
        _ensure_cursor(sessions, cursor, stream, selection)
    with db.transaction(sessions) as session:
        query = _query(stream, selection).order_by(stream.time, stream.view.c.id)
        state: ExportCursor | None = None
        held_back_at: dt.datetime | None = None
        if cursor is not None:
            state = session.scalars(sa.select(ExportCursor).where(
                ExportCursor.name == cursor, ExportCursor.stream == stream.name).with_for_update()).one()
            if state.filters != selection.filters:
                raise InvalidInputError(
                    f"cursor {cursor!r} was made for {_shown_filters(state.filters)}: give the same --tenant "
                    "and --provider, or another cursor name")
            if state.position_at is not None and state.position_id is not None:
                query = query.where(sa.or_(stream.time > state.position_at, sa.and_(
                    stream.time == state.position_at, stream.view.c.id > state.position_id)))
            held_back_at = writing_since(session)
            if held_back_at is not None:
                query = query.where(stream.time < held_back_at)
        rows, last = _write(session, stream, query, fmt, output)
        if state is None:
            return ExportOutcome(rows)
        if last is None:
            unmoved = None if state.position_at is None or state.position_id is None else (
                state.position_at, state.position_id)
            return ExportOutcome(0, cursor, unmoved, held_back_at)
        moved = session.execute(
            sa.update(ExportCursor)
            .where(ExportCursor.name == cursor, ExportCursor.stream == stream.name,
                   ExportCursor.rows_exported == state.rows_exported)
            .values(position_at=last[0], position_id=last[1], rows_exported=state.rows_exported + rows,
                    updated_at=utcnow())
            .execution_options(synchronize_session=False))
        if moved.rowcount != 1:  # type: ignore[attr-defined]
            raise SyncError(f"cursor {cursor!r} was moved by another export while this one ran; the rows "
                            f"written to {output.shown} may repeat some of its rows (run one export per cursor "
                            "at a time)")
    return ExportOutcome(rows, cursor, last, held_back_at)


def _write(session: Session, stream: Stream, query: sa.Select[Any], fmt: str,
           output: Output) -> tuple[int, tuple[dt.datetime, int] | None]:
    """Stream the rows out and make the output final; any failure leaves nothing behind (a file)
    and raises, so the caller's transaction (and the cursor) is rolled back."""
    rows = 0
    last: tuple[dt.datetime, int] | None = None
    time_at, id_at = stream.columns.index(stream.time_column), stream.columns.index("id")
    try:
        writer = RowWriter(output.open(), fmt, stream.columns)
        for row in _stream(session, query):
            writer.write(row)
            rows += 1
            last = (row[time_at], row[id_at])
        output.commit()
    except BrokenPipeError:
        output.abort(broken_pipe=True)
        raise SyncError("the reader of the export went away before its end; the cursor did not move") from None
    except OSError as exc:
        output.abort()
        raise SyncError(f"cannot write the export to {output.shown}: {exc.strerror or exc}; "
                        "the cursor did not move") from None
    except BaseException:
        output.abort()
        raise
    return rows, last


def _stream(session: Session, query: sa.Select[Any]) -> Iterator[sa.Row[Any]]:
    yield from session.execute(query, execution_options={"yield_per": FETCH})
