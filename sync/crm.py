"""The CRM source contract: three relations the daemon reads, and the reference schema.

The daemon never writes to the CRM. It reads three relations (tables or views) whose names
are settings (``crm_lists``, ``crm_members``, ``crm_memberships``); the COLUMNS are the
contract below, so an integrator writes views that rename their own columns to these:

lists        tenant_id, id, name, updated_at, deleted_at
members      tenant_id, id, email, first_name, last_name, phone, city,
             consent_status (ONAY|RET|NULL), consent_date, consent_source,
             recipient_type (BIREYSEL|TACIR), updated_at, deleted_at
memberships  tenant_id, list_id, member_id, updated_at, deleted_at

``updated_at`` must move on every change (including a soft delete); ``deleted_at`` is set
when the row is deleted (hard deletes are found by ``backfill``'s full reconcile).

Ids (``tenant_id``, ``id``, ``list_id``, ``member_id``) may be text, integers or UUIDs: the
reader looks at how the CRM stores each one, binds values in that type (so the CRM's indexes
are used) and hands them on as text. :func:`check_contract` says, one line per problem,
where the relations do not fit.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from array import array
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from sync.config import CrmSource
from sync.errors import ConfigurationError
from sync.models import EMAIL, ID, UTCDateTime
from sync.sql import crm_now, text_array


@dataclass(frozen=True)
class CrmTables:
    lists: sa.Table
    members: sa.Table
    memberships: sa.Table
    metadata: sa.MetaData


def _split(name: str) -> tuple[str | None, str]:
    schema, _, table = name.rpartition(".")
    return (schema or None), table


#: The id columns of each relation (key of :class:`CrmSource`).
ID_COLUMNS: dict[str, tuple[str, ...]] = {
    "lists": ("tenant_id", "id"),
    "members": ("tenant_id", "id"),
    "memberships": ("tenant_id", "list_id", "member_id"),
}
#: How the CRM stores an id column: "text", "integer" or "uuid"; keyed by (relation key, column).
IdKinds = Mapping[tuple[str, str], str]


class CrmId(sa.TypeDecorator[str]):
    """A CRM id, text to the daemon whatever the CRM stores: bound in the CRM's own type (an
    integer column is compared with an integer, so its index is used), read back as text."""

    impl = sa.String
    cache_ok = True

    def __init__(self, native: str = "text") -> None:
        super().__init__()
        self.native = native

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if self.native == "integer":
            return dialect.type_descriptor(sa.BigInteger())
        if self.native == "uuid":
            return dialect.type_descriptor(sa.Uuid(as_uuid=False))
        return dialect.type_descriptor(sa.String(ID))

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        return int(value) if self.native == "integer" else str(value)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> str | None:
        return None if value is None else str(value)

    def result_processor(self, dialect: sa.Dialect, coltype: Any) -> Any:
        # Text comes back as text: no call per value (a backfill reads every id of the tenant).
        return None if self.native == "text" else super().result_processor(dialect, coltype)


def crm_tables(source: CrmSource, id_kinds: IdKinds | None = None,
               extra_member_columns: Sequence[str] = ()) -> CrmTables:
    """Table objects for the configured relation names (declared, not reflected: views work).

    Without ``id_kinds`` these are the reference tables (text ids); with them, what the reader
    uses on a CRM whose id columns are integers or UUIDs."""
    metadata = sa.MetaData()

    def id_type(relation: str, column: str) -> sa.types.TypeEngine[Any]:
        return sa.String(ID) if id_kinds is None else CrmId(id_kinds.get((relation, column), "text"))

    schema, name = _split(source.lists)
    lists = sa.Table(
        name, metadata,
        sa.Column("tenant_id", id_type("lists", "tenant_id"), primary_key=True),
        sa.Column("id", id_type("lists", "id"), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("deleted_at", UTCDateTime()),
        sa.Index(f"ix_{name}_tenant_updated", "tenant_id", "updated_at"),
        schema=schema,
    )
    schema, name = _split(source.members)
    members = sa.Table(
        name, metadata,
        sa.Column("tenant_id", id_type("members", "tenant_id"), primary_key=True),
        sa.Column("id", id_type("members", "id"), primary_key=True),
        sa.Column("email", sa.String(EMAIL)),
        sa.Column("first_name", sa.String(255)),
        sa.Column("last_name", sa.String(255)),
        sa.Column("phone", sa.String(32)),
        sa.Column("city", sa.String(255)),
        sa.Column("consent_status", sa.String(4)),
        sa.Column("consent_date", UTCDateTime()),
        sa.Column("consent_source", sa.String(32)),
        sa.Column("recipient_type", sa.String(8)),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("deleted_at", UTCDateTime()),
        *([sa.Column(source.change_xid, sa.BigInteger)] if source.change_xid else []),
        # custom fields (sync/fields.py): read as the CRM stores them, typed by the mapping
        *(sa.Column(column, sa.types.NullType()) for column in extra_member_columns),
        sa.Index(f"ix_{name}_tenant_updated", "tenant_id", "updated_at"),
        schema=schema,
    )
    schema, name = _split(source.memberships)
    memberships = sa.Table(
        name, metadata,
        sa.Column("tenant_id", id_type("memberships", "tenant_id"), primary_key=True),
        sa.Column("list_id", id_type("memberships", "list_id"), primary_key=True),
        sa.Column("member_id", id_type("memberships", "member_id"), primary_key=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("deleted_at", UTCDateTime()),
        *([sa.Column(source.change_xid, sa.BigInteger)] if source.change_xid else []),
        sa.Index(f"ix_{name}_tenant_updated", "tenant_id", "updated_at"),
        sa.Index(f"ix_{name}_tenant_member", "tenant_id", "member_id"),
        schema=schema,
    )
    return CrmTables(lists, members, memberships, metadata)


def relation_names(source: CrmSource) -> dict[str, str]:
    """Relation key -> configured name (``schema.name`` allowed)."""
    return {"lists": source.lists, "members": source.members, "memberships": source.memberships}


def _id_kind(column_type: sa.types.TypeEngine[Any] | None) -> str:
    if isinstance(column_type, sa.Integer):
        return "integer"
    if isinstance(column_type, sa.Uuid):
        return "uuid"
    return "text"


def reflect_id_kinds(engine: sa.Engine, source: CrmSource) -> dict[tuple[str, str], str]:
    """How the CRM stores each id column (three catalogue queries); a missing relation is one line."""
    inspector = sa.inspect(engine)
    kinds: dict[tuple[str, str], str] = {}
    for key, full_name in relation_names(source).items():
        schema, name = _split(full_name)
        try:
            columns = {c["name"]: c["type"] for c in inspector.get_columns(name, schema=schema)}
        except sa.exc.NoSuchTableError:
            raise ConfigurationError(f"CRM relation {full_name} does not exist (see `crm-esp-sync crm check`)") \
                from None
        for column in ID_COLUMNS[key]:
            kinds[(key, column)] = _id_kind(columns.get(column))
    return kinds


def create_reference_schema(engine: sa.Engine, source: CrmSource) -> None:
    """Create the reference CRM tables (demo, tests, or a CRM that adopts them as they are)."""
    crm_tables(source).metadata.create_all(engine)


@dataclass(frozen=True)
class CrmList:
    id: str
    name: str
    updated_at: dt.datetime
    deleted: bool


@dataclass(frozen=True)
class CrmMember:
    """A member with the lists it is (actively) in."""

    id: str
    email: str | None
    first_name: str | None
    last_name: str | None
    phone: str | None
    city: str | None
    consent_status: str | None
    consent_date: dt.datetime | None
    consent_source: str | None
    recipient_type: str | None
    updated_at: dt.datetime
    deleted: bool
    list_ids: frozenset[str] = field(default_factory=frozenset)
    #: Values of the extra columns the connection maps to custom fields (sync/fields.py).
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: The digest of the row's planned columns (CrmReader._row_digest_sql), for :func:`source_digest`.
    row_digest: str = ""
    #: Rows the members relation holds for this id (more than one: a broken view, e.g. a join
    #: that fans out). Such a member is rejected and left as it is at the provider: which row is
    #: meant cannot be known, and alternating between them would delete and create contacts.
    rows: int = 1


#: Separators of the digested text: a field, and a NULL (neither occurs in a CRM's text).
_FIELD, _NULL = "\x1f", "\x1e"


def source_digest(row_digest: str, list_ids: Iterable[str], salt: str) -> str:
    """What a member is planned from, in 32 hex digits: its row's digest, its live list ids (in
    any order) and ``salt`` (what else shapes the plan: the connection's settings). Equal digests,
    equal plans, given the same suppressions and the same links."""
    text = _FIELD.join((salt, row_digest, *sorted(list_ids)))
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _python_row_digest(values: Sequence[Any]) -> str:
    text = _FIELD.join(_NULL if value is None else str(value) for value in values)
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


#: Ids per IN (...) list: one query per batch of the largest providers (1,000 members).
IN_CHUNK = 1000
#: The label of the row digest computed in the CRM's SQL (no CRM column is called so).
ROW_DIGEST = "crm_esp_sync_row_digest"


#: Rows a streamed read holds in memory at a time.
_STREAM = 10_000
_EPOCH = dt.datetime(1970, 1, 1)


class ChangedMembers(Sequence[tuple[dt.datetime, str]]):
    """Changed members, oldest change first: their ids and the time of each one's last change, as
    microseconds in a flat array (8 bytes a member; the datetimes are rebuilt when asked for).
    Every time has the same awareness as the first one read (a column's type decides it); a naive
    time among aware ones is taken as UTC."""

    __slots__ = ("_aware", "_micros", "_tz", "ids")

    def __init__(self, pairs: Iterable[tuple[dt.datetime, str]] = ()) -> None:
        self.ids: list[str] = []
        self._micros = array("q")
        self._tz: dt.tzinfo | None = None
        self._aware: bool | None = None
        for at, member_id in pairs:
            self.append(at, member_id)

    def append(self, at: dt.datetime, member_id: str) -> None:
        if self._aware is None:
            self._aware, self._tz = at.tzinfo is not None, at.tzinfo
        if at.tzinfo is not None:
            at = at.astimezone(dt.UTC).replace(tzinfo=None)
        self._micros.append((at - _EPOCH) // dt.timedelta(microseconds=1))
        self.ids.append(member_id)

    def at(self, index: int) -> dt.datetime:
        """The change time of the member at ``index``."""
        at = _EPOCH + dt.timedelta(microseconds=self._micros[index])
        return at.replace(tzinfo=dt.UTC).astimezone(self._tz) if self._aware else at

    def __len__(self) -> int:
        return len(self.ids)

    def __bool__(self) -> bool:
        return bool(self.ids)

    def __iter__(self) -> Iterator[tuple[dt.datetime, str]]:
        """(change time, member id) pairs, oldest first."""
        return ((self.at(n), member_id) for n, member_id in enumerate(self.ids))

    @overload
    def __getitem__(self, index: int) -> tuple[dt.datetime, str]: ...
    @overload
    def __getitem__(self, index: slice) -> list[tuple[dt.datetime, str]]: ...

    def __getitem__(self, index: int | slice) -> tuple[dt.datetime, str] | list[tuple[dt.datetime, str]]:
        if isinstance(index, slice):
            return [(self.at(n), self.ids[n]) for n in range(*index.indices(len(self.ids)))]
        return self.at(index), self.ids[index]


class CrmReader:
    """Reads one tenant's lists and members from the CRM relations."""

    def __init__(self, engine: sa.Engine, source: CrmSource, tenant_id: str,
                 extra_columns: Sequence[str] = ()) -> None:
        self.engine = engine
        kinds = reflect_id_kinds(engine, source)
        if extra_columns:
            schema, name = _split(source.members)
            present = {c["name"] for c in sa.inspect(engine).get_columns(name, schema=schema)}
            missing = [c for c in extra_columns if c not in present]
            if missing:
                raise ConfigurationError(
                    f"setting fields maps column(s) {', '.join(missing)} that {source.members} does not have "
                    f"(add them to the view, or fix the connection's fields setting)")
        self.extra_columns = tuple(extra_columns)
        self.tables = crm_tables(source, kinds, self.extra_columns)
        for (key, column), kind in kinds.items():
            if column == "tenant_id" and kind == "integer" and not _is_whole_number(tenant_id):
                raise ConfigurationError(
                    f"{relation_names(source)[key]}.tenant_id is an integer column, but this tenant's CRM "
                    f"tenant id is {tenant_id!r}: set it with `tenant add SLUG --crm-tenant-id NUMBER`")
        self.tenant_id = tenant_id
        self.change_xid = source.change_xid
        if self.change_xid and engine.dialect.name != "postgresql":
            raise ConfigurationError(f"crm_change_xid ({self.change_xid}) needs a PostgreSQL CRM "
                                     f"(pg_current_xact_id); this CRM is {engine.dialect.name}")

    @property
    def _digested(self) -> list[sa.Column[Any]]:
        """The member columns planning reads (not the ids, updated_at or the change xid)."""
        skip = {"tenant_id", "id", "updated_at", self.change_xid}
        return [column for column in self.tables.members.c if column.name not in skip]

    def _row_digest_sql(self) -> Any:
        """The row digest computed by the CRM's server (PostgreSQL, MariaDB/MySQL): a backfill then
        reads 32 characters per member instead of its row. None: computed here, from the row
        (SQLite has no md5). Either way, one CRM computes every digest one way."""
        dialect = self.engine.dialect.name
        if dialect not in ("postgresql", "mysql", "mariadb"):
            return None
        text_type = sa.Text() if dialect == "postgresql" else sa.String()
        parts = [sa.func.coalesce(sa.cast(column, text_type), sa.literal(_NULL, sa.String()))
                 for column in self._digested]
        return sa.func.md5(sa.func.concat_ws(sa.literal(_FIELD, sa.String()), *parts))

    def _one_of(self, column: Any, ids: Sequence[str]) -> Any:
        """``column IN (ids)``; on PostgreSQL ``column = ANY(:array)`` in the column's own type: one
        parameter, so the driver parses the statement once, not a new 1,000-placeholder one each time."""
        if self.engine.dialect.name != "postgresql":
            return column.in_(list(ids))
        native = getattr(column.type, "native", "text")
        # (one text split by the server, cast to the column's type: sync.engine.bulk.text_array)
        if native == "integer":
            return column == sa.any_(text_array([str(int(i)) for i in ids], postgresql.ARRAY(sa.String()),
                                                postgresql.ARRAY(sa.BigInteger())))
        if native == "uuid":
            return column == sa.any_(text_array(list(ids), postgresql.ARRAY(sa.String()),
                                                postgresql.ARRAY(sa.Uuid(as_uuid=False))))
        return column == sa.any_(text_array(list(ids), postgresql.ARRAY(sa.String())))

    def change_xid_mark(self) -> int | None:
        """The oldest transaction still running, by the CRM's own snapshot (``change_xid`` mode
        only): every row not visible to a read made after this was written by a transaction with
        an id at or above it, however long that transaction ran."""
        if not self.change_xid:
            return None
        with self.engine.connect() as conn:
            return int(conn.scalar(sa.text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")))

    def lists(self) -> list[CrmList]:
        t = self.tables.lists
        query = sa.select(t.c.id, t.c.name, t.c.updated_at, t.c.deleted_at).where(t.c.tenant_id == self.tenant_id)
        with self.engine.connect() as conn:
            return [CrmList(r.id, r.name, r.updated_at, r.deleted_at is not None) for r in conn.execute(query)]

    def changed_member_ids(self, since: dt.datetime | None, until: dt.datetime,
                           since_xid: int | None = None) -> ChangedMembers:
        """Members whose row or memberships changed in (since, until], oldest change first, with the
        time of each one's last change (``ChangedMembers``). ``since=None`` means every member. With
        ``since_xid`` (``change_xid`` mode) a change is a row written by a transaction at or above
        that id, whatever its time. Streamed from the server into two flat arrays: a first sync
        of 1,000,000 members holds about 80 bytes a member, not a tuple and a datetime each."""
        m, ms = self.tables.members, self.tables.memberships
        member_q = sa.select(m.c.updated_at.label("at"), m.c.id.label("member_id")).where(
            m.c.tenant_id == self.tenant_id)
        link_q = sa.select(ms.c.updated_at.label("at"), ms.c.member_id.label("member_id")).where(
            ms.c.tenant_id == self.tenant_id)
        if since_xid is not None and self.change_xid:
            member_q = member_q.where(m.c[self.change_xid] >= since_xid)
            link_q = link_q.where(ms.c[self.change_xid] >= since_xid)
        else:
            member_q = member_q.where(m.c.updated_at <= until)
            link_q = link_q.where(ms.c.updated_at <= until)
            if since is not None:
                member_q = member_q.where(m.c.updated_at > since)
                link_q = link_q.where(ms.c.updated_at > since)
        union = sa.union_all(member_q, link_q).subquery()
        query = (sa.select(sa.func.max(union.c.at).label("at"), union.c.member_id)
                 .group_by(union.c.member_id).order_by(sa.text("at"), union.c.member_id))
        changed = ChangedMembers()
        with self.engine.connect() as conn:
            for at, member_id in conn.execution_options(stream_results=True, yield_per=_STREAM).execute(query):
                changed.append(at, member_id)
        return changed

    def _removed(self) -> Any:
        """A member whose links a run removes: soft-deleted, or without an address (a member the
        daemon can no longer address keeps no contact at the address the CRM no longer holds)."""
        m = self.tables.members
        return sa.or_(m.c.deleted_at.is_not(None), m.c.email.is_(None), sa.func.trim(m.c.email) == "")

    def removed_member_ids(self, member_ids: Sequence[str]) -> list[str]:
        """Those of the given members whose row is soft-deleted or has no e-mail (ids only, for
        the mass-delete guard)."""
        m = self.tables.members
        found: list[str] = []
        with self.engine.connect() as conn:
            for chunk in _chunks(member_ids, IN_CHUNK):
                found += conn.scalars(sa.select(m.c.id).where(
                    m.c.tenant_id == self.tenant_id, m.c.id.in_(list(chunk)), self._removed()))
        return found

    def all_removed_member_ids(self) -> list[str]:
        """Every member of the tenant whose row is soft-deleted or has no e-mail: one read (a
        backfill's mass-delete guard, where every member counts as changed)."""
        m = self.tables.members
        with self.engine.connect() as conn:
            return list(conn.scalars(sa.select(m.c.id).where(m.c.tenant_id == self.tenant_id, self._removed())))

    def member_ids_in_lists(self, list_ids: Sequence[str]) -> list[str]:
        """Members with a live membership in any of these lists (a list created, re-created or
        deleted at the provider re-plans exactly these members)."""
        if not list_ids:
            return []
        ms = self.tables.memberships
        with self.engine.connect() as conn:
            return sorted(set(conn.scalars(sa.select(ms.c.member_id).where(
                ms.c.tenant_id == self.tenant_id, ms.c.list_id.in_(list(list_ids)), ms.c.deleted_at.is_(None)))))

    def member_id_pages(self, size: int = 10_000) -> Iterator[list[str]]:
        """Every member id of the tenant (soft-deleted rows too), in the CRM's order, ``size`` at a
        time by keyset (``id > last``): a backfill reads the whole tenant with flat memory."""
        m = self.tables.members
        last: str | None = None
        while True:
            query = sa.select(m.c.id).where(m.c.tenant_id == self.tenant_id)
            if last is not None:
                query = query.where(m.c.id > last)
            with self.engine.connect() as conn:
                page = list(conn.scalars(query.order_by(m.c.id).limit(size)))
            if page:
                yield page
            if len(page) < size:
                return
            last = page[-1]

    def member_count(self) -> int:
        m = self.tables.members
        with self.engine.connect() as conn:
            return int(conn.scalar(sa.select(sa.func.count()).select_from(m).where(
                m.c.tenant_id == self.tenant_id)) or 0)

    def all_exist(self, member_ids: Sequence[str]) -> bool:
        """Whether every one of the given (distinct) ids still has a row: one count per page, so
        that the common answer (yes) does not carry the ids back."""
        m = self.tables.members
        size = len(member_ids) if self.engine.dialect.name == "postgresql" else IN_CHUNK
        found = 0
        with self.engine.connect() as conn:
            for chunk in _chunks(member_ids, max(size, 1)):
                found += int(conn.scalar(sa.select(sa.func.count(sa.distinct(m.c.id))).where(
                    m.c.tenant_id == self.tenant_id, self._one_of(m.c.id, chunk))) or 0)
        return found == len(member_ids)

    def existing_member_ids(self, member_ids: Sequence[str]) -> set[str]:
        """Those of the given ids that still have a row (soft-deleted or not): the others were
        deleted without a trace."""
        m = self.tables.members
        found: set[str] = set()
        size = len(member_ids) if self.engine.dialect.name == "postgresql" else IN_CHUNK   # one array parameter
        with self.engine.connect() as conn:
            for chunk in _chunks(member_ids, max(size, 1)):
                found.update(conn.scalars(sa.select(m.c.id).where(m.c.tenant_id == self.tenant_id,
                                                                  self._one_of(m.c.id, chunk))).all())
        return found

    def members(self, member_ids: Sequence[str]) -> list[CrmMember]:
        """The given members (missing ids are simply absent: a hard delete)."""
        if not member_ids:
            return []
        m = self.tables.members
        lists_of: dict[str, set[str]] = defaultdict(set)
        rows: list[sa.Row[Any]] = []
        in_sql = self._row_digest_sql()
        digested = [column.name for column in self._digested]
        query = sa.select(m, *([in_sql.label(ROW_DIGEST)] if in_sql is not None else []))
        with self.engine.connect() as conn:
            for chunk in _chunks(member_ids, IN_CHUNK):
                rows += conn.execute(query.where(m.c.tenant_id == self.tenant_id, self._one_of(m.c.id, chunk))).all()
                self._add_live_lists(conn, chunk, lists_of)
        # (rows by position: a Row's attribute access costs more than the rest of the read)
        at = {name: index for index, name in enumerate(query.selected_columns.keys())}
        (id_, email, first, last, phone, city, consent, consent_date, source, kind, updated, deleted) = (
            at[name] for name in ("id", "email", "first_name", "last_name", "phone", "city", "consent_status",
                                  "consent_date", "consent_source", "recipient_type", "updated_at", "deleted_at"))
        extra = [(column, at[column]) for column in self.extra_columns]
        digest_at = at.get(ROW_DIGEST)
        digested_at = [at[name] for name in digested]
        counted = Counter(r[id_] for r in rows)
        if len(counted) < len(rows):     # one member per id, with how many rows it had
            first_row: dict[str, sa.Row[Any]] = {}
            for r in rows:
                first_row.setdefault(r[id_], r)
            rows = list(first_row.values())
        return [
            CrmMember(
                id=r[id_], email=r[email], first_name=r[first], last_name=r[last], phone=r[phone], city=r[city],
                consent_status=_consent(r[consent]), consent_date=r[consent_date], consent_source=r[source],
                recipient_type=r[kind], updated_at=r[updated], deleted=r[deleted] is not None,
                list_ids=frozenset(lists_of.get(r[id_], ())),
                extra={column: r[index] for column, index in extra},
                row_digest=r[digest_at] if digest_at is not None else _python_row_digest([r[i] for i in digested_at]),
                rows=counted[r[id_]],
            )
            for r in rows
        ]

    def _add_live_lists(self, conn: sa.Connection, member_ids: Sequence[str], lists_of: dict[str, set[str]]) -> None:
        """Add the live list ids of these members (memberships not soft-deleted) to ``lists_of``."""
        ms = self.tables.memberships
        for member_id, list_id in conn.execute(sa.select(ms.c.member_id, ms.c.list_id).where(
                ms.c.tenant_id == self.tenant_id, self._one_of(ms.c.member_id, member_ids),
                ms.c.deleted_at.is_(None))).all():
            lists_of[member_id].add(list_id)

    def member_source_pages(self, salt: str, size: int = 10_000) -> Iterator[list[tuple[str, str, bool]]]:
        """(id, :func:`source_digest` with ``salt``, in a live list?) of every member of the tenant
        (soft-deleted rows too), ``size`` at a time by keyset: what a backfill compares with the
        links, with flat memory. PostgreSQL computes the whole digest, lists included, so that a
        page is 10,000 short rows; MariaDB/MySQL the row digest (the lists are read here: its
        GROUP_CONCAT is cut at a session limit); SQLite nothing (no md5)."""
        m = self.tables.members
        in_sql = self._row_digest_sql()
        whole = self.engine.dialect.name == "postgresql" and in_sql is not None
        columns = [in_sql.label(ROW_DIGEST)] if in_sql is not None else self._digested
        last: str | None = None
        while True:
            query = sa.select(m.c.id, *columns).where(m.c.tenant_id == self.tenant_id)
            if last is not None:
                query = query.where(m.c.id > last)
            query = query.order_by(m.c.id).limit(size)
            lists_of: dict[str, set[str]] = defaultdict(set)
            with self.engine.connect() as conn:
                if whole:
                    page = [tuple(row) for row in conn.execute(self._whole_digest_page(query, salt)).all()]
                else:
                    rows = conn.execute(query).all()
                    ids = [row[0] for row in rows]
                    for chunk in _chunks(ids, IN_CHUNK):
                        self._add_live_lists(conn, chunk, lists_of)
                    page = []
                    for row in rows:
                        lists = lists_of.get(row[0], ())
                        digest = row[1] if in_sql is not None else _python_row_digest(row[1:])
                        page.append((row[0], source_digest(digest, lists, salt), bool(lists)))
            if page:
                yield page
            if len(page) < size:
                return
            last = page[-1][0]

    def _whole_digest_page(self, page: sa.Select[Any], salt: str) -> sa.Select[Any]:
        """PostgreSQL: ``page`` (id, row digest) with each member's live list ids joined in the order
        :func:`source_digest` sorts them (code points: COLLATE "C"), hashed with ``salt`` the same way."""
        m, ms = self.tables.members, self.tables.memberships
        list_text = sa.cast(ms.c.list_id, sa.Text()).collate("C")
        lists = (sa.select(sa.func.string_agg(sa.distinct(list_text),
                                              postgresql.aggregate_order_by(sa.literal(_FIELD, sa.Text()), list_text)))
                 .where(ms.c.tenant_id == self.tenant_id, ms.c.member_id == m.c.id, ms.c.deleted_at.is_(None))
                 .scalar_subquery())
        inner = page.add_columns(lists.label("lists")).subquery()
        digest = sa.func.md5(sa.func.concat_ws(sa.literal(_FIELD, sa.Text()), sa.literal(salt, sa.Text()),
                                               inner.c[ROW_DIGEST], inner.c.lists))
        return sa.select(inner.c.id, digest, inner.c.lists.is_not(None)).order_by(inner.c.id)


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _is_whole_number(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


# --- the contract check -------------------------------------------------------------------

#: The contract's columns: relation key -> column -> kind ("id", "text", "time").
CONTRACT: dict[str, dict[str, str]] = {
    "lists": {"tenant_id": "id", "id": "id", "name": "text", "updated_at": "time", "deleted_at": "time"},
    "members": {"tenant_id": "id", "id": "id", "email": "text", "first_name": "text", "last_name": "text",
                "phone": "text", "city": "text", "consent_status": "text", "consent_date": "time",
                "consent_source": "text", "recipient_type": "text", "updated_at": "time", "deleted_at": "time"},
    "memberships": {"tenant_id": "id", "list_id": "id", "member_id": "id", "updated_at": "time",
                    "deleted_at": "time"},
}
#: Indexes (leading columns) that keep a run proportional to what changed.
WANTED_INDEXES: dict[str, tuple[tuple[str, ...], ...]] = {
    "lists": (("tenant_id",),),
    "members": (("tenant_id", "updated_at"), ("tenant_id", "id")),
    "memberships": (("tenant_id", "updated_at"), ("tenant_id", "member_id")),
}
_KIND_WORDS = {"id": "text or an integer", "text": "text", "time": "a timestamp (date and time, UTC)"}
_EXAMPLES = 3


@dataclass(frozen=True)
class Problem:
    """One way the CRM relations do not fit the contract, as one line a person can act on.

    ``error``: the contract does not hold (the daemon cannot read it, or would sync it wrong);
    ``warning``: it holds, but a measured plan (``crm check``) or the change tracking is wrong:
    reads grow with the tenant where they should not, or changes go unseen until a backfill;
    ``hint``: it holds, but a run could be faster; ``note``: what the check did or could not do.
    """

    relation: str
    message: str
    column: str | None = None
    severity: str = "error"

    def __str__(self) -> str:
        where = f"{self.relation}.{self.column}" if self.column else self.relation
        return f"{where}: {self.message}" if where else self.message


class ContractError(ConfigurationError):
    """The CRM relations do not fit the contract."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("\n".join(["the CRM relations do not fit the contract (`crm-esp-sync crm check` "
                                    "checks them):", *(str(p) for p in problems)]))
        self.problems = list(problems)


def _type_fits(kind: str, column_type: sa.types.TypeEngine[Any], dialect: str) -> bool:
    if isinstance(column_type, sa.types.NullType):
        return True            # a view's computed column on SQLite has no declared type: the sample read decides
    if kind == "id":
        return isinstance(column_type, sa.String | sa.Integer | sa.Uuid)
    if kind == "text":
        return isinstance(column_type, sa.String)
    # SQLite has no timestamp type: text in ISO format is how it stores them
    return isinstance(column_type, sa.DateTime) or (dialect == "sqlite" and isinstance(column_type, sa.String))


def _consent(value: Any) -> str | None:
    """The CRM's consent as the contract spells it (ONAY, RET): a CHAR column's padding or a hand-typed
    ' ret' is still a refusal; blank is no answer (None)."""
    if value is None:
        return None
    return str(value).strip().upper() or None


def check_contract(engine: sa.Engine, source: CrmSource, tenant_id: str | None = None, *,
                   data: bool = True, plans: bool = False) -> list[Problem]:
    """Every way the three CRM relations do not fit the contract, one :class:`Problem` each.

    The structure (relations, columns, types, a read of a few rows) costs a few catalogue
    queries. With ``data``, aggregate queries also look for duplicate ids, ``updated_at`` NULL
    or in the future, and memberships of unknown lists or members, for ``tenant_id`` (a CRM
    tenant id) or every tenant; and the indexes that would help are named.

    With ``plans`` as well (``crm check``, never a run's start: it costs a few seconds on a big
    CRM), once the contract holds, the reads a run and a backfill make are EXPLAINed on
    PostgreSQL and MariaDB (:func:`check_plans`); what they measure replaces the index hints.
    """
    names = relation_names(source)
    inspector = sa.inspect(engine)
    dialect = engine.dialect.name
    problems: list[Problem] = []
    fitting: set[str] = set()
    kinds: dict[tuple[str, str], str] = {}
    for key, full_name in names.items():
        schema, name = _split(full_name)
        try:
            columns = {c["name"]: c["type"] for c in inspector.get_columns(name, schema=schema)}
        except sa.exc.NoSuchTableError:
            problems.append(Problem(full_name, "relation does not exist: create it as a view over the CRM "
                                    "(see docs/crm-contract.md), or run `crm-esp-sync crm "
                                    "init-reference` for the reference tables"))
            continue
        kinds.update(((key, column), _id_kind(columns.get(column))) for column in ID_COLUMNS[key])
        before = len(problems)
        for column, kind in CONTRACT[key].items():
            if column not in columns:
                problems.append(Problem(full_name, f"missing column (expected {_KIND_WORDS[kind]})", column))
            elif not _type_fits(kind, columns[column], dialect):
                problems.append(Problem(full_name, f"type {columns[column]} does not fit: it must be "
                                        f"{_KIND_WORDS[kind]} (cast it in the view)", column))
        if source.change_xid and key in ("members", "memberships"):
            xid = source.change_xid
            if xid not in columns:
                problems.append(Problem(full_name, "missing column (crm_change_xid names it: a bigint that a trigger "
                                        "sets to pg_current_xact_id(); see docs/guarantees.md)", xid))
            elif not isinstance(columns[xid], sa.Integer | sa.types.NullType):
                problems.append(Problem(full_name, f"type {columns[xid]} does not fit: crm_change_xid must be a "
                                        "bigint (the id of the transaction that last wrote the row)", xid))
        if len(problems) == before:
            fitting.add(key)
    if source.change_xid and dialect != "postgresql":
        problems.append(Problem(names["members"], f"crm_change_xid needs a PostgreSQL CRM (pg_current_xact_id); "
                                f"this CRM is {dialect}", source.change_xid))
        return problems
    tables = crm_tables(source, kinds)
    readable = set()
    for key in names:
        if key in fitting and not _unreadable(engine, getattr(tables, key), names[key], problems):
            readable.add(key)
    if not data or readable != set(names):
        return problems
    if tenant_id is not None:
        for key in names:
            if kinds[(key, "tenant_id")] == "integer" and not _is_whole_number(tenant_id):
                problems.append(Problem(names[key], f"is an integer column; CRM tenant id {tenant_id!r} is not "
                                        "a whole number", "tenant_id"))
                return problems
    now = crm_now(engine)
    with engine.connect() as conn:
        for key in names:
            table = getattr(tables, key)
            problems.extend(_duplicate_ids(conn, table, names[key], key, tenant_id))
            problems.extend(_bad_updated_at(conn, table, names[key], tenant_id, now))
        problems.extend(_orphan_memberships(conn, tables, names, kinds, tenant_id))
        problems.extend(_unknown_consents(conn, tables.members, names["members"], tenant_id))
    hints = [hint for key in names for hint in _index_hints(inspector, names[key], key, source.change_xid)]
    return problems + (_with_plans(engine, source, tenant_id, problems, hints) if plans else hints)


def _with_plans(engine: sa.Engine, source: CrmSource, tenant_id: str | None, problems: Sequence[Problem],
                hints: list[Problem]) -> list[Problem]:
    """The catalogue's index hints, or what :func:`check_plans` measures instead."""
    if engine.dialect.name not in _EXPLAINED:
        return [*hints, Problem("", "the plan check (EXPLAIN of the reads a run and a backfill make) runs on "
                                "PostgreSQL and MariaDB only", severity="note")]
    if any(p.severity == "error" for p in problems):
        return [*hints, Problem("", "plans are measured once the contract holds", severity="note")]
    try:
        report = check_plans(engine, source, tenant_id)
    except sa.exc.SQLAlchemyError as exc:          # e.g. no right to EXPLAIN a view's tables
        cause = getattr(exc, "orig", None) or exc
        reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        return [*hints, Problem("", f"plans not measured: {reason}", severity="note")]
    return report.problems if report.measured else hints + report.problems


def _unreadable(engine: sa.Engine, table: sa.Table, full_name: str, problems: list[Problem]) -> bool:
    """Read a few rows the way the reader does (values that do not convert show up here, and so
    does a missing permission); a failure is added to ``problems``."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.select(table).limit(5)).all()
    except (sa.exc.SQLAlchemyError, ValueError, TypeError) as exc:
        cause = getattr(exc, "orig", None) or exc
        reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        problems.append(Problem(full_name, f"rows cannot be read as the contract says: {reason}"))
        return True
    return False


def _scoped(query: Any, table: sa.Table, tenant_id: str | None) -> Any:
    return query if tenant_id is None else query.where(table.c.tenant_id == tenant_id)


def _duplicate_ids(conn: sa.Connection, table: sa.Table, full_name: str, key: str,
                   tenant_id: str | None) -> list[Problem]:
    id_columns = [table.c[c] for c in ID_COLUMNS[key]]
    query = _scoped(sa.select(*id_columns, sa.func.count().label("n")), table, tenant_id) \
        .group_by(*id_columns).having(sa.func.count() > 1).limit(_EXAMPLES)
    found = conn.execute(query).all()
    if not found:
        return []
    shown = "; ".join(", ".join(f"{c}={row[i]}" for i, c in enumerate(ID_COLUMNS[key])) + f" ({row.n} rows)"
                      for row in found)
    return [Problem(full_name, f"ids are not unique: ({', '.join(ID_COLUMNS[key])}) must identify one row; "
                    f"e.g. {shown}")]


def _bad_updated_at(conn: sa.Connection, table: sa.Table, full_name: str, tenant_id: str | None,
                    now: dt.datetime) -> list[Problem]:
    problems = []
    count = sa.select(sa.func.count()).select_from(table)
    nulls = conn.scalar(_scoped(count, table, tenant_id).where(table.c.updated_at.is_(None))) or 0
    if nulls:
        problems.append(Problem(full_name, f"{nulls} row(s) with updated_at NULL: incremental runs never read "
                                "them; updated_at must be set on every insert and change", "updated_at"))
    future = conn.execute(_scoped(sa.select(sa.func.count().label("n"), sa.func.max(table.c.updated_at).label("at")),
                                  table, tenant_id).where(table.c.updated_at > now)).one()
    if future.n:
        latest, clock = f"{future.at:%Y-%m-%d %H:%M}", f"{now:%Y-%m-%d %H:%M}"
        problems.append(Problem(full_name, f"{future.n} row(s) with updated_at in the future (up to {latest} UTC; "
                                f"the database's clock says {clock} UTC): runs read them only once that time has "
                                "passed; is local time stored instead of UTC?", "updated_at"))
    return problems


def _unknown_consents(conn: sa.Connection, members: sa.Table, full_name: str, tenant_id: str | None
                      ) -> list[Problem]:
    """Live members whose consent_status is none of ONAY, RET or blank (read as :func:`_consent`
    reads it): each run rejects them and leaves them as they are at the provider."""
    value = sa.func.upper(sa.func.trim(members.c.consent_status))
    query = _scoped(sa.select(value.label("v"), sa.func.count().label("n")), members, tenant_id).where(
        members.c.deleted_at.is_(None), members.c.consent_status.is_not(None), value.not_in(["ONAY", "RET", ""])
    ).group_by(value).order_by(sa.func.count().desc())
    found = conn.execute(query).all()
    if not found:
        return []
    total = sum(row.n for row in found)
    shown = ", ".join(f"{row.v!r} ({row.n})" for row in found[:_EXAMPLES])
    return [Problem(full_name, f"{total} live member(s) with a consent_status that is neither ONAY nor RET nor "
                    f"NULL (e.g. {shown}): each run rejects them and leaves them as they are at the provider",
                    "consent_status")]


def _orphan_memberships(conn: sa.Connection, tables: CrmTables, names: Mapping[str, str], kinds: IdKinds,
                        tenant_id: str | None) -> list[Problem]:
    ms = tables.memberships
    problems = []
    for target, column, target_name in ((tables.lists, "list_id", "lists"), (tables.members, "member_id", "members")):
        left: sa.ColumnElement[Any] = ms.c[column]
        right: sa.ColumnElement[Any] = target.c.id
        if kinds[("memberships", column)] != kinds[(target_name, "id")]:    # integer on one side, text on the other
            left, right = sa.cast(left, sa.String(ID)), sa.cast(right, sa.String(ID))
        unknown: sa.ColumnElement[bool] = ~sa.exists().where(target.c.tenant_id == ms.c.tenant_id, right == left)
        if conn.dialect.name in ("mysql", "mariadb"):
            # MariaDB runs that NOT EXISTS as a loop over the target per membership when the view casts
            # its ids (no index applies): 12 s at 10,000 members, 23 min at 100,000. NOT IN (subquery)
            # is materialised once and looked up by hash: 0.02 s at 10,000.
            unknown = sa.tuple_(ms.c.tenant_id, left).not_in(
                sa.select(target.c.tenant_id, right).where(target.c.tenant_id.is_not(None), right.is_not(None)))
        query = _scoped(sa.select(ms.c.tenant_id, ms.c[column]), ms, tenant_id).where(
            ms.c.deleted_at.is_(None), unknown)
        total = conn.scalar(sa.select(sa.func.count()).select_from(query.subquery())) or 0
        if total:
            shown = ", ".join(f"{row[1]}" for row in conn.execute(query.limit(_EXAMPLES)))
            problems.append(Problem(names["memberships"], f"{total} membership(s) point at {target_name} that do not "
                                    f"exist in {names[target_name]} (e.g. {column} {shown}); they are ignored",
                                    column))
    return problems


def _wanted_indexes(key: str, change_xid: str) -> tuple[tuple[str, ...], ...]:
    """:data:`WANTED_INDEXES`, in ``crm_change_xid`` mode with the change column where
    ``updated_at`` would be (a run then finds changes by it)."""
    if not change_xid:
        return WANTED_INDEXES[key]
    return tuple(tuple(change_xid if c == "updated_at" else c for c in w) for w in WANTED_INDEXES[key])


def _index_hints(inspector: sa.Inspector, full_name: str, key: str, change_xid: str = "") -> list[Problem]:
    """The indexes a run wants, from the catalogue (what the plan check replaces where it measures)."""
    schema, name = _split(full_name)
    wanted = _wanted_indexes(key, change_xid)
    described = " and ".join(f"({', '.join(w)})" for w in wanted)
    if name in inspector.get_view_names(schema=schema):
        return [Problem(full_name, f"is a view: index its underlying tables on the columns behind {described} "
                        "(without tenant_id where the view's tenant id is a constant)", severity="hint")]
    have = [tuple(index["column_names"]) for index in inspector.get_indexes(name, schema=schema)]
    have.append(tuple(inspector.get_pk_constraint(name, schema=schema).get("constrained_columns") or ()))
    have += [tuple(u["column_names"]) for u in inspector.get_unique_constraints(name, schema=schema)]
    missing = [w for w in wanted if not any(h[:len(w)] == w for h in have)]
    return [Problem(full_name, f"no index starts with ({', '.join(w)}): incremental runs would scan the whole "
                    "relation", severity="hint") for w in missing]


# --- the plan check (`crm check` only: it EXPLAINs a run's and a backfill's reads) ---------

#: The dialects whose planner :func:`check_plans` asks.
_EXPLAINED = ("postgresql", "mysql", "mariadb")
#: MariaDB/MySQL access types that reach rows through an index by key (EXPLAIN's ``type``).
_KEYED_ACCESS = frozenset({"const", "system", "eq_ref", "ref", "ref_or_null", "range", "index_merge"})
#: The page of a backfill's and of the vanished check's keyset reads (CrmReader.member_source_pages).
_PAGE = 10_000
#: The contract's id columns: a cast on one is fixed by exposing it uncast.
_ID_NAMES = frozenset({"tenant_id", "id", "list_id", "member_id"})
#: What a read is for, in the warning's words.
_CHANGES = "the read of what changed since the last run"
_BATCH = "each run's batch of 1,000 members"
_BATCH_LISTS = "the list lookup of each batch of members"
_LISTS = "the read of the tenant's lists"
_BACKFILL = "each backfill page of members"
_BACKFILL_LISTS = "the backfill's list lookup per member"
_VANISHED = "each page of the vanished check"


@dataclass(frozen=True)
class PlanReport:
    """What :func:`check_plans` found; ``measured``: the reads were EXPLAINed (a tenant with rows)."""

    problems: list[Problem]
    measured: bool


@dataclass(frozen=True)
class _Origin:
    """Where a contract column of a relation comes from, as the planner expands the view(s).

    ``refs``: the base columns the expression reads, as (table, alias, column); ``shape``:
    "column" (as stored), "cast", "function", "constant" (no column: a one-company CRM's
    tenant id) or "tables" (computed from several tables: greatest(...))."""

    expression: str
    refs: tuple[tuple[str, str, str], ...]
    shape: str

    @property
    def table(self) -> str:
        return self.refs[0][0]

    @property
    def alias(self) -> str:
        return self.refs[0][1]

    @property
    def column(self) -> str:
        return self.refs[0][2]


@dataclass(frozen=True)
class _Scan:
    """How one plan reads one base table."""

    table: str                     # PostgreSQL: "schema.name"; MariaDB: the alias the plan names
    keyed: frozenset[str]          # its columns the index access goes by
    whole: bool                    # read whole without any index
    joined_on: frozenset[str]      # PostgreSQL: its columns in the join conditions above it


@dataclass
class _Read:
    """One read a run or a backfill makes: what it is for and the contract columns it looks up
    by (tenant_id aside), per relation key; and the statements it sent."""

    labels: dict[str, str]
    keys: dict[str, tuple[str, ...]]
    statements: list[tuple[str, Any]] = field(default_factory=list)


def check_plans(engine: sa.Engine, source: CrmSource, tenant_id: str | None = None) -> PlanReport:
    """EXPLAIN the statements a run and a backfill send (made by :class:`CrmReader` itself, for
    ``tenant_id`` or the tenant with the most members, a real page of its member ids and changes
    since a day back) and warn, one line per relation and column, where a lookup by key scans
    instead of using an index: the cause (a cast or a function in the view, a missing index) and
    the fix. In ``crm_change_xid`` mode (PostgreSQL), also name each table a view reads whose
    changes its change column does not cover (:func:`_change_coverage`).

    PostgreSQL is asked with sequential scans priced out (``enable_seqscan = off``), so the answer
    is whether an index CAN serve the read, whatever the size of the CRM today; MariaDB's choice
    is taken as it is, and where it scans, the catalogue says whether an index would serve a
    bigger tenant (its optimizer scans small tables by choice).
    """
    dialect = engine.dialect.name
    if dialect not in _EXPLAINED:
        return PlanReport([], measured=False)
    planner: _Planner = _PgPlanner(engine, source) if dialect == "postgresql" else _MariaPlanner(engine, source)
    problems = _change_coverage(planner, source) if source.change_xid and dialect == "postgresql" else []
    tenant = tenant_id if tenant_id is not None else _largest_tenant(engine, source)
    reader = CrmReader(engine, source, tenant) if tenant is not None else None
    ids = next(reader.member_id_pages(IN_CHUNK), []) if reader is not None else []
    if reader is None or not ids:
        whose = "" if tenant is None else f" of CRM tenant {tenant!r}"
        problems.append(Problem("", f"no members{whose} to measure the reads with: plans not checked",
                                severity="note"))
        return PlanReport(problems, measured=False)
    now, since_xid = crm_now(engine), reader.change_xid_mark()
    reads = _captured_reads(reader, ids, now, since_xid)
    problems += _plan_problems(planner, source, reads)
    since = f"{reader.change_xid} >= {since_xid}" if reader.change_xid else \
        f"since {now - dt.timedelta(days=1):%Y-%m-%d %H:%M} UTC"
    server = "PostgreSQL" if dialect == "postgresql" else "MariaDB" if getattr(engine.dialect, "is_mariadb", False) \
        else "MySQL"
    problems.append(Problem("", f"plans measured on {server}: {sum(len(r.statements) for r in reads)} statements of "
                            f"CRM tenant {tenant!r}, {len(ids):,} member ids, changes {since}", severity="note"))
    return PlanReport(problems, measured=True)


def _largest_tenant(engine: sa.Engine, source: CrmSource) -> str | None:
    members = crm_tables(source, reflect_id_kinds(engine, source)).members
    with engine.connect() as conn:
        row = conn.execute(sa.select(members.c.tenant_id).group_by(members.c.tenant_id)
                           .order_by(sa.func.count().desc()).limit(1)).first()
    return None if row is None else str(row[0])


def _captured_reads(reader: CrmReader, ids: Sequence[str], now: dt.datetime, since_xid: int | None) -> list[_Read]:
    """The statements of each read, as the reader sends them: each is recorded, then sent as
    ``SELECT * FROM (...) LIMIT 0`` so that it costs nothing (the page-2 keyset reads, whose
    ``id > last`` a first page never sends, are built as member_source_pages builds them)."""
    engine, m = reader.engine, reader.tables.members
    changed = reader.change_xid or "updated_at"
    digest = reader._row_digest_sql()
    page = (sa.select(m.c.id, *([digest.label(ROW_DIGEST)] if digest is not None else reader._digested))
            .where(m.c.tenant_id == reader.tenant_id, m.c.id > ids[-1]).order_by(m.c.id).limit(_PAGE))
    backfill = reader._whole_digest_page(page, "") if engine.dialect.name == "postgresql" else page
    id_page = (sa.select(m.c.id).where(m.c.tenant_id == reader.tenant_id, m.c.id > ids[-1])
               .order_by(m.c.id).limit(_PAGE))

    def execute(query: sa.Select[Any]) -> None:
        with engine.connect() as conn:
            conn.execute(query).all()

    both = ("members", "memberships")
    reads: list[tuple[_Read, Any]] = [
        (_Read(dict.fromkeys(both, _CHANGES), dict.fromkeys(both, (changed,))),
         lambda: reader.changed_member_ids(now - dt.timedelta(days=1), now, since_xid)),
        (_Read({"members": _BATCH, "memberships": _BATCH_LISTS}, {"members": ("id",), "memberships": ("member_id",)}),
         lambda: reader.members(ids)),
        (_Read({"members": _BATCH}, {"members": ("id",)}), lambda: reader.removed_member_ids(ids)),
        (_Read({"lists": _LISTS}, {"lists": ()}), reader.lists),
        (_Read({"members": _BACKFILL, "memberships": _BACKFILL_LISTS},
               {"members": ("id",), "memberships": ("member_id",)}), lambda: execute(backfill)),
        (_Read({"members": _VANISHED}, {"members": ("id",)}), lambda: execute(id_page)),
    ]
    sink: list[list[tuple[str, Any]]] = [[]]

    def capture(conn: sa.Connection, cursor: Any, statement: str, parameters: Any, context: Any,
                executemany: bool) -> tuple[str, Any]:
        if executemany or not statement.lstrip().lstrip("(").upper().startswith(("SELECT", "WITH")):
            return statement, parameters
        sink[0].append((statement, parameters))
        return f"SELECT * FROM ({statement}) AS crm_esp_sync_explained LIMIT 0", parameters  # noqa: S608

    sa.event.listen(engine, "before_cursor_execute", capture, retval=True)
    try:
        for read, call in reads:
            sink[0] = read.statements
            call()
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    return [read for read, _ in reads]


class _Planner:
    """What the plan check asks one CRM's planner and catalogue (per dialect)."""

    def __init__(self, engine: sa.Engine, source: CrmSource) -> None:
        self.engine = engine
        self.names = relation_names(source)
        self.inspector = sa.inspect(engine)
        self._origins: dict[tuple[str, str], _Origin | None] = {}
        self._indexes: dict[str, list[tuple[str | None, ...]]] = {}
        self._bases: dict[str, set[str]] = {}

    def origin(self, key: str, column: str) -> _Origin | None:
        """Where ``column`` of relation ``key`` comes from (None: not from a base table we can see)."""
        if (key, column) not in self._origins:
            try:
                self._origins[(key, column)] = self._origin(self._quoted(self.names[key]), self._quote(column), column)
            except sa.exc.SQLAlchemyError:
                self._origins[(key, column)] = None
        return self._origins[(key, column)]

    def bases(self, key: str) -> set[str]:
        """The base tables relation ``key`` reads (as :attr:`_Scan.table` names them)."""
        if key not in self._bases:
            relation = self._quoted(self.names[key])
            self._bases[key] = {scan.table for scan in self.scans(f"SELECT * FROM {relation}", {})}  # noqa: S608
        return self._bases[key]

    def has_index(self, table: str, options: Sequence[Sequence[str]]) -> bool:
        """Whether an index, primary key or unique constraint of ``table`` starts with one of ``options``."""
        if table not in self._indexes:
            schema, _, name = table.rpartition(".")
            found: list[tuple[str | None, ...]] = [tuple(i["column_names"])
                                                   for i in self.inspector.get_indexes(name, schema=schema or None)]
            found.append(tuple(self.inspector.get_pk_constraint(name, schema=schema or None)
                               .get("constrained_columns") or ()))
            found += [tuple(u["column_names"])
                      for u in self.inspector.get_unique_constraints(name, schema=schema or None)]
            self._indexes[table] = found
        return any(have[:len(want)] == tuple(want) for have in self._indexes[table] for want in options if want)

    def _quote(self, name: str) -> str:
        return self.engine.dialect.identifier_preparer.quote(name)

    def _quoted(self, full_name: str) -> str:
        return ".".join(self._quote(part) for part in full_name.split("."))

    # per dialect
    def _origin(self, relation: str, column: str, name: str) -> _Origin | None:
        raise NotImplementedError

    def scans(self, statement: str, parameters: Any) -> list[_Scan]:
        raise NotImplementedError

    def matches(self, scan: _Scan, origin: _Origin) -> bool:
        raise NotImplementedError

    def index_table(self, origin: _Origin) -> str:
        """The table whose indexes serve ``origin`` (as :meth:`has_index` takes it)."""
        return origin.table

    def display(self, table: str) -> str:
        raise NotImplementedError

    def expression_index(self, origin: _Origin, prefix: Sequence[str]) -> str | None:
        """``CREATE INDEX`` over ``origin``'s expression, where the database can index one."""
        return None


_PG_LITERAL = re.compile(r"'(?:[^']|'')*'")
_PG_REF = re.compile(r'(?<![\w."$])("(?:[^"]|"")+"|[A-Za-z_][\w$]*)\.("(?:[^"]|"")+"|[A-Za-z_][\w$]*)(?![\w"$(])')
_PG_TYPE = re.compile(r'::[\w ."]+(?:\(\d+(?:,\s*\d+)?\))?(?:\[\])?')


_PG_WORD = re.compile(r'"(?:[^"]|"")+"|[A-Za-z_][\w$]*')


def _leading(index: Sequence[set[str]], constrained: set[str]) -> set[str]:
    """The columns an index access goes BY: those of its key columns that the condition constrains,
    up to the first key column it leaves free (a condition on a later one is checked row by row
    in the index, over the whole range the earlier ones select)."""
    served: set[str] = set()
    for columns in index:
        if not columns & constrained:
            break
        served |= columns & constrained
    return served


def _pg_name(part: str) -> str:
    return part[1:-1].replace('""', '"') if part.startswith('"') else part


def _pg_refs(text: str) -> list[tuple[str, str]]:
    """(alias, column) of every qualified column in a condition or an expression as EXPLAIN
    VERBOSE prints them (string literals left out)."""
    return [(_pg_name(a), _pg_name(c)) for a, c in _PG_REF.findall(_PG_LITERAL.sub("''", text))]


def _shape(expression: str, bare: str, refs: Sequence[tuple[str, str, str]], uncast: str) -> str:
    if not refs:
        return "constant"
    if len({(table, alias) for table, alias, _ in refs}) > 1:
        return "tables"
    if expression.strip("() ") == bare:
        return "column"
    return "cast" if uncast.strip("() ") == bare else "function"


class _PgPlanner(_Planner):
    def __init__(self, engine: sa.Engine, source: CrmSource) -> None:
        super().__init__(engine, source)
        self._index_keys: dict[str, list[set[str]]] = {}

    def _explain(self, statement: str, parameters: Any) -> dict[str, Any]:
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")    # can an index serve it, at any size?
            plan = conn.exec_driver_sql(f"EXPLAIN (VERBOSE, FORMAT JSON) {statement}", parameters).scalar()
            conn.rollback()
        found: Any = json.loads(plan) if isinstance(plan, str) else plan
        return dict(found[0]["Plan"])

    def _origin(self, relation: str, column: str, name: str) -> _Origin | None:
        root = self._explain(f"SELECT {column} FROM {relation}", {})        # noqa: S608 (quoted names)
        expression = str(root["Output"][0])
        aliases = {node["Alias"]: f"{node.get('Schema', 'public')}.{node['Relation Name']}"
                   for node in _pg_nodes(root) if "Relation Name" in node}
        refs = _pg_refs(expression)
        if any(alias not in aliases for alias, _ in refs):
            return None                    # from a subquery the planner keeps (a view it cannot flatten)
        found = tuple((aliases[alias], alias, column_name) for alias, column_name in refs)
        bare = f"{refs[0][0]}.{refs[0][1]}" if refs else ""
        return _Origin(expression, found, _shape(_PG_LITERAL.sub("''", expression), bare, found,
                                                 _PG_TYPE.sub("", expression)))

    def scans(self, statement: str, parameters: Any) -> list[_Scan]:
        found: list[_Scan] = []

        def walk(node: dict[str, Any], above: list[dict[str, Any]]) -> None:
            if "Relation Name" in node:
                alias, schema = node["Alias"], node.get("Schema", "public")
                keyed: set[str] = set()
                for index in (n for n in _pg_nodes(node) if "Index Name" in n):
                    constrained = {c for a, c in _pg_refs(index.get("Index Cond", "")) if a == alias}
                    keyed |= _leading(self._index_columns(schema, index["Index Name"]), constrained)
                joins = [a.get(k, "") for a in above for k in ("Hash Cond", "Merge Cond", "Join Filter")]
                found.append(_Scan(f"{schema}.{node['Relation Name']}", frozenset(keyed),
                                   node["Node Type"] == "Seq Scan",
                                   frozenset(c for a, c in _pg_refs(" ".join(joins)) if a == alias)))
            for child in node.get("Plans", ()):
                walk(child, [*above, node])

        walk(self._explain(statement, parameters), [])
        return found

    def _index_columns(self, schema: str, index: str) -> list[set[str]]:
        """The column names each key column of an index reads (one, or those of its expression)."""
        name = f"{self._quote(schema)}.{self._quote(index)}"
        if name not in self._index_keys:
            with self.engine.connect() as conn:
                definitions = conn.execute(sa.text(
                    "SELECT pg_get_indexdef(i.indexrelid, k, true) FROM pg_index i, "
                    "generate_series(1, i.indnkeyatts) AS k WHERE i.indexrelid = to_regclass(:name) ORDER BY k"),
                    {"name": name}).scalars().all()
            self._index_keys[name] = [{_pg_name(t) for t in _PG_WORD.findall(_PG_TYPE.sub("", _PG_LITERAL.sub("", d)))}
                                      for d in definitions]
        return self._index_keys[name]

    def matches(self, scan: _Scan, origin: _Origin) -> bool:
        return scan.table == origin.table

    def display(self, table: str) -> str:
        return table.removeprefix("public.")

    def expression_index(self, origin: _Origin, prefix: Sequence[str]) -> str | None:
        bare = re.sub(rf'(?<![\w."]){re.escape(origin.alias)}\.', "", origin.expression)
        return f"CREATE INDEX ON {self.display(origin.table)} ({''.join(c + ', ' for c in prefix)}({bare}))"


def _pg_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _pg_nodes(child)


_MY_NAME = r"`((?:[^`]|``)+)`"
_MY_REF = re.compile(rf"{_MY_NAME}\.{_MY_NAME}\.{_MY_NAME}")
_MY_TABLE = re.compile(rf"(?<![`.]){_MY_NAME}\.{_MY_NAME}(?![.`])(?:\s+{_MY_NAME}(?!\.))?")
_MY_CAST = re.compile(r"^(?:cast\((.*) as [\w ()]+\)|convert\((.*) using \w+\))$", re.S)


class _MariaPlanner(_Planner):
    def _origin(self, relation: str, column: str, name: str) -> _Origin | None:
        with self.engine.connect() as conn:
            query = f"SELECT {column} FROM {relation}"                            # noqa: S608 (quoted names)
            try:
                conn.exec_driver_sql(f"EXPLAIN EXTENDED {query}").all()        # MariaDB: the rewritten query
            except sa.exc.ProgrammingError:
                conn.exec_driver_sql(f"EXPLAIN {query}").all()                  # MySQL 8 (untested here)
            notes = conn.exec_driver_sql("SHOW WARNINGS").all()
            self.database = str(conn.exec_driver_sql("SELECT DATABASE()").scalar())
        text = next((str(note[2]) for note in notes if int(note[1]) == 1003), "")
        found = re.match(rf"^(?:/\*.*?\*/\s*)?select (.*) AS `{re.escape(name)}` from (.*)$",  # noqa: S608
                         text, re.S)
        if found is None:
            return None
        expression, tables = found[1], found[2]
        aliases = {alias or table: f"{db}.{table}" for db, table, alias in _MY_TABLE.findall(tables)}
        refs = tuple((aliases.get(alias, f"{db}.{alias}"), alias, col)
                     for db, alias, col in _MY_REF.findall(expression))
        if any(table.rpartition(".")[2] in self._views(table) for table, _, _ in refs):
            return None                     # a view MariaDB materialises (not merged): no base table to see
        uncast = expression
        while (inner := _MY_CAST.match(uncast)) is not None:
            uncast = inner[1] or inner[2]
        bare = f"`{refs[0][0].partition('.')[0]}`.`{refs[0][1]}`.`{refs[0][2]}`" if refs else ""
        shape = _shape(expression, bare, refs, uncast)
        return _Origin(expression.replace(f"`{self.database}`.", ""), refs, shape)

    def _views(self, table: str) -> list[str]:
        return self.inspector.get_view_names(schema=table.partition(".")[0])

    def scans(self, statement: str, parameters: Any) -> list[_Scan]:
        with self.engine.connect() as conn:
            plan = json.loads(str(conn.exec_driver_sql(f"EXPLAIN FORMAT=JSON {statement}", parameters).scalar()))
        found: list[_Scan] = []

        def walk(value: Any) -> None:
            if isinstance(value, dict):
                if isinstance(value.get("table_name"), str) and not value["table_name"].startswith("<"):
                    access = value.get("access_type", "")
                    found.append(_Scan(value["table_name"],
                                       frozenset(value.get("used_key_parts") or ()) if access in _KEYED_ACCESS
                                       else frozenset(),
                                       access == "ALL" and not value.get("possible_keys"), frozenset()))
                for child in value.values():
                    walk(child)
            elif isinstance(value, list):
                for child in value:
                    walk(child)

        walk(plan)
        return found

    def matches(self, scan: _Scan, origin: _Origin) -> bool:
        return scan.table == origin.alias

    def display(self, table: str) -> str:
        database, _, name = table.partition(".")
        return name if database == getattr(self, "database", None) else table


def _index_options(origin: _Origin, tenant: _Origin | None, column: str) -> list[list[str]]:
    """The leading columns of an index that serves a lookup of ``origin`` (best first): behind the
    tenant's column where it is a column of the same table, alone otherwise (a one-company CRM)."""
    if column == "tenant_id":
        return [[origin.column]]
    if tenant is not None and tenant.shape == "column" and tenant.table == origin.table:
        return [[tenant.column, origin.column], [origin.column]]
    return [[origin.column]]


def _plan_problems(planner: _Planner, source: CrmSource, reads: Sequence[_Read]) -> list[Problem]:
    names = relation_names(source)
    unserved: dict[tuple[str, str], list[str]] = {}
    spread: dict[tuple[str, str], list[str]] = {}              # computed from several tables
    whole: dict[tuple[str, str], tuple[list[str], set[str]]] = {}
    for read in reads:
        scans = [scan for statement in read.statements for scan in planner.scans(*statement)]
        keyed_tables: set[str] = set()
        for key, columns in read.keys.items():
            tenant = planner.origin(key, "tenant_id")
            for column in ("tenant_id", *columns):
                origin = planner.origin(key, column)
                if origin is None or origin.shape == "constant":
                    continue
                if origin.shape == "tables":
                    _add(spread.setdefault((key, column), []), read.labels[key])
                    continue
                mine = [scan for scan in scans if planner.matches(scan, origin)]
                keyed_tables.update(scan.table for scan in mine)
                if not mine or any(origin.column in scan.keyed for scan in mine):
                    continue
                if origin.shape == "column" and planner.has_index(planner.index_table(origin),
                                                                  _index_options(origin, tenant, column)):
                    continue               # MariaDB scanned a small table by choice; an index is there
                _add(unserved.setdefault((key, column), []), read.labels[key])
        for scan in scans:
            if not scan.whole or scan.table in keyed_tables:
                continue
            owner = next((key for key in read.keys if scan.table in planner.bases(key)), None)
            if owner is not None:
                labels, on = whole.setdefault((owner, scan.table), ([], set()))
                _add(labels, read.labels[owner])
                on.update(scan.joined_on)
    problems = []
    order = {column: i for i, column in enumerate(("tenant_id", "id", "list_id", "member_id", "updated_at",
                                                    source.change_xid))}
    for (key, column), labels in sorted(unserved.items(), key=lambda i: (list(names).index(i[0][0]),
                                                                         order.get(i[0][1], 9))):
        origin, tenant = planner.origin(key, column), planner.origin(key, "tenant_id")
        assert origin is not None
        problems.append(Problem(names[key], _unserved_message(planner, origin, tenant, column, labels), column,
                                severity="warning"))
    for (key, column), labels in spread.items():
        origin = planner.origin(key, column)
        assert origin is not None
        tables = ", ".join(sorted({planner.display(table) for table, _, _ in origin.refs}))
        what = f"computed from several tables ({origin.expression}: {tables}), which no index can serve"
        if column in _ID_NAMES:
            problems.append(Problem(names[key], f"is {what}: {_join(labels)} scan the tenant's rows; fix: expose "
                                    "one table's id column as it is stored", column, severity="warning"))
        else:
            problems.append(Problem(names[key], f"is {what}: {_join(labels)} reads every row of the tenant, once "
                                    "per run (it grows with the tenant); a column of the main table that triggers "
                                    "keep makes it an index read (docs/crm-check.md)", column, severity="hint"))
    for (key, table), (labels, on) in whole.items():
        shown = planner.display(table)
        fix = f"CREATE INDEX ON {shown} ({', '.join(sorted(on))})" if on else \
            f"index the column(s) the view joins {shown} on"
        problems.append(Problem(names[key], f"{shown} is read whole by {_join(labels)}: no index serves its join"
                                f"{' on ' + ', '.join(sorted(on)) if on else ''}; fix: {fix}", severity="warning"))
    return problems


def _add(labels: list[str], label: str) -> None:
    if label not in labels:
        labels.append(label)


def _join(labels: Sequence[str]) -> str:
    return labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} and {labels[-1]}"


def _unserved_message(planner: _Planner, origin: _Origin, tenant: _Origin | None, column: str,
                      labels: Sequence[str]) -> str:
    table = planner.display(origin.table)
    options = _index_options(origin, tenant, column)
    create = f"CREATE INDEX ON {table} ({', '.join(options[0])})"
    indexed = planner.has_index(planner.index_table(origin), options)
    if origin.shape in ("cast", "function"):
        verb = "casts" if origin.shape == "cast" else "computes"
        cause = f"the view {verb} it ({origin.expression})"
        also = "" if indexed else f" and {create}"
        if column in _ID_NAMES:
            fix = f"expose the id column uncast{also} (the contract takes text, integer or UUID ids as they are)"
        else:
            expression = planner.expression_index(origin, options[0][:-1])
            fix = f"expose {origin.column} as it is stored{also}" + (f", or index the expression: {expression}"
                                                                      if expression else "")
    else:
        cause, fix = f"no index of {table} starts with ({', '.join(options[0])})", create
    return (f"{table} is scanned, not read through an index on {origin.column}, by {_join(labels)}: {cause}; "
            f"fix: {fix}")


#: A trigger function's assignment of the transaction id to a column: ``NEW.col := pg_current_xact_id()...``.
_XID_ASSIGNMENT = re.compile(r'NEW\s*\.\s*"?(\w+)"?\s*:?=[^;]*?\b(?:pg_current_xact_id|txid_current)\b', re.I)
#: pg_trigger.tgtype bits.
_ROW, _BEFORE, _INSERT, _UPDATE = 1, 2, 4, 16


def _change_coverage(planner: _Planner, source: CrmSource) -> list[Problem]:
    """``crm_change_xid`` mode (PostgreSQL): every table the members and memberships views read
    (through views over views; pg_rewrite's dependencies in pg_depend) must have a change column
    that a BEFORE INSERT OR UPDATE row trigger sets to the transaction id, and that column must be
    in the view's change column (``greatest(...)`` of them all); one warning per table that is not,
    since a change made to it alone is found by no run, only by a backfill."""
    xid, names = source.change_xid, relation_names(source)
    problems = []
    with planner.engine.connect() as conn:
        for key in ("members", "memberships"):
            origin = planner.origin(key, xid)
            in_column: dict[str, set[str]] = defaultdict(set)
            for table, _, column in origin.refs if origin is not None else ():
                in_column[table].add(column)
            shown = origin.expression if origin is not None else xid
            tables = {table: (read, _triggers(conn, oid))
                      for table, (oid, read) in _pg_base_tables(conn, names[key]).items()}
            covered = {table for table, (_, triggers) in tables.items()
                       if any(_xid_kept(triggers).get(c) == {"INSERT", "UPDATE"} for c in in_column.get(table, ()))}
            for table, (read, triggers) in tables.items():
                if table in covered or _touches(triggers, covered):
                    continue
                kept, used = _xid_kept(triggers), in_column.get(table, set())
                where = planner.display(table)
                columns = f" ({', '.join(sorted(read))})" if read else ""
                if used & kept.keys():
                    column = sorted(used & kept.keys())[0]
                    message = (f"{where}.{column} is set to the transaction id on {' and '.join(sorted(kept[column]))} "
                               f"only: make its trigger BEFORE INSERT OR UPDATE ... FOR EACH ROW")
                elif used:
                    message = (f"{where}.{', '.join(sorted(used))} is in the view's {xid} ({shown}), but no trigger "
                               "sets it to pg_current_xact_id(): changes to "
                               f"{where} alone are found by no run, only by a backfill; fix: the trigger in "
                               "docs/crm-check.md")
                elif kept:
                    message = (f"{where} is read by the view{columns} and a trigger keeps {where}."
                               f"{sorted(kept)[0]}, but the view's {xid} ({shown}) leaves it out: changes to {where} "
                               f"alone are found by no run, only by a backfill; fix: {xid} = greatest(..., "
                               f"{sorted(kept)[0]}) (docs/crm-check.md)")
                else:
                    message = (f"{where} is read by the view{columns} but has no change column kept by a trigger "
                               f"(nor a trigger that touches a covered table's row): changes to {where} alone are "
                               "found by no run, only by a backfill; fix: give it one, with the trigger, and put it "
                               "in the view's greatest(...) (docs/crm-check.md)")
                problems.append(Problem(names[key], message, xid, severity="warning"))
    return problems


def _pg_base_tables(conn: sa.Connection, relation: str) -> dict[str, tuple[int, set[str]]]:
    """The tables ``relation`` reads, through views over views: "schema.name" -> (oid, the
    columns read from it, as the views' rewrite rules depend on them)."""
    start = conn.execute(sa.text("SELECT c.oid, c.relkind, n.nspname, c.relname FROM pg_class c "
                                 "JOIN pg_namespace n ON n.oid = c.relnamespace "
                                 "WHERE c.oid = to_regclass(:name)"), {"name": relation}).one_or_none()
    if start is None:
        return {}
    if start.relkind != "v":
        return {f"{start.nspname}.{start.relname}": (start.oid, set())}
    tables: dict[str, tuple[int, set[str]]] = {}
    seen, todo = {start.oid}, [start.oid]
    while todo:
        rows = conn.execute(sa.text(
            "SELECT c.oid, c.relkind, n.nspname, c.relname, a.attname FROM pg_rewrite r "
            "JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid "
            " AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> r.ev_class "
            "JOIN pg_class c ON c.oid = d.refobjid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.refobjsubid AND d.refobjsubid > 0 "
            "WHERE r.ev_class = :oid"), {"oid": todo.pop()}).all()
        for row in rows:
            if row.relkind == "v":
                if row.oid not in seen:
                    seen.add(row.oid)
                    todo.append(row.oid)
                continue
            entry = tables.setdefault(f"{row.nspname}.{row.relname}", (row.oid, set()))
            if row.attname:
                entry[1].add(row.attname)
    return tables


def _triggers(conn: sa.Connection, oid: int) -> list[tuple[int, str]]:
    """(pg_trigger.tgtype, the function's source) of a table's enabled user triggers."""
    return [(int(row.tgtype), str(row.prosrc or "")) for row in conn.execute(sa.text(
        "SELECT t.tgtype, p.prosrc FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid "
        "WHERE t.tgrelid = :oid AND NOT t.tgisinternal AND t.tgenabled <> 'D'"), {"oid": oid})]


def _events(tgtype: int) -> set[str]:
    return {event for bit, event in ((_INSERT, "INSERT"), (_UPDATE, "UPDATE")) if tgtype & bit}


def _xid_kept(triggers: Sequence[tuple[int, str]]) -> dict[str, set[str]]:
    """Columns that a BEFORE row trigger sets to the transaction id -> on which events."""
    kept: dict[str, set[str]] = defaultdict(set)
    for tgtype, source in triggers:
        if tgtype & _ROW and tgtype & _BEFORE:
            for column in _XID_ASSIGNMENT.findall(source):
                kept[column] |= _events(tgtype)
    return dict(kept)


def _touches(triggers: Sequence[tuple[int, str]], covered: Iterable[str]) -> bool:
    """Whether a row trigger on INSERT and UPDATE updates one of the ``covered`` tables (the row
    of the member it belongs to, whose own trigger then moves its change column)."""
    names = [table.rpartition(".")[2] for table in covered]
    return any(tgtype & _ROW and _events(tgtype) == {"INSERT", "UPDATE"}
               and re.search(rf'\bUPDATE\s+(?:ONLY\s+)?(?:"?\w+"?\.)?"?{re.escape(name)}"?(?![\w"])', source, re.I)
               for tgtype, source in triggers for name in names)
