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
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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
                           since_xid: int | None = None) -> list[tuple[dt.datetime, str]]:
        """(change time, member id) of members whose row or memberships changed in (since, until],
        oldest first. ``since=None`` means every member. With ``since_xid`` (``change_xid`` mode)
        a change is a row written by a transaction at or above that id, whatever its time."""
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
        with self.engine.connect() as conn:
            return [(row.at, row.member_id) for row in conn.execute(query)]

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
                consent_status=r[consent], consent_date=r[consent_date], consent_source=r[source],
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
    ``hint``: it holds, but a run would be slower than it needs to be.
    """

    relation: str
    message: str
    column: str | None = None
    severity: str = "error"

    def __str__(self) -> str:
        where = f"{self.relation}.{self.column}" if self.column else self.relation
        return f"{where}: {self.message}"


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


def check_contract(engine: sa.Engine, source: CrmSource, tenant_id: str | None = None, *,
                   data: bool = True) -> list[Problem]:
    """Every way the three CRM relations do not fit the contract, one :class:`Problem` each.

    The structure (relations, columns, types, a read of a few rows) costs a few catalogue
    queries. With ``data``, aggregate queries also look for duplicate ids, ``updated_at`` NULL
    or in the future, and memberships of unknown lists or members, for ``tenant_id`` (a CRM
    tenant id) or every tenant; and the indexes that would help are named.
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
        if len(problems) == before:
            fitting.add(key)
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
    for key in sorted(readable, key=list(names).index):
        problems.extend(_index_hints(inspector, names[key], key))
    return problems


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


def _orphan_memberships(conn: sa.Connection, tables: CrmTables, names: Mapping[str, str], kinds: IdKinds,
                        tenant_id: str | None) -> list[Problem]:
    ms = tables.memberships
    problems = []
    for target, column, target_name in ((tables.lists, "list_id", "lists"), (tables.members, "member_id", "members")):
        left: sa.ColumnElement[Any] = ms.c[column]
        right: sa.ColumnElement[Any] = target.c.id
        if kinds[("memberships", column)] != kinds[(target_name, "id")]:    # integer on one side, text on the other
            left, right = sa.cast(left, sa.String(ID)), sa.cast(right, sa.String(ID))
        unknown = ~sa.exists().where(target.c.tenant_id == ms.c.tenant_id, right == left)
        query = _scoped(sa.select(ms.c.tenant_id, ms.c[column]), ms, tenant_id).where(
            ms.c.deleted_at.is_(None), unknown)
        total = conn.scalar(sa.select(sa.func.count()).select_from(query.subquery())) or 0
        if total:
            shown = ", ".join(f"{row[1]}" for row in conn.execute(query.limit(_EXAMPLES)))
            problems.append(Problem(names["memberships"], f"{total} membership(s) point at {target_name} that do not "
                                    f"exist in {names[target_name]} (e.g. {column} {shown}); they are ignored",
                                    column))
    return problems


def _index_hints(inspector: sa.Inspector, full_name: str, key: str) -> list[Problem]:
    schema, name = _split(full_name)
    wanted = WANTED_INDEXES[key]
    described = " and ".join(f"({', '.join(w)})" for w in wanted)
    if name in inspector.get_view_names(schema=schema):
        return [Problem(full_name, f"is a view: index its underlying tables on the columns behind {described}",
                        severity="hint")]
    have = [tuple(index["column_names"]) for index in inspector.get_indexes(name, schema=schema)]
    have.append(tuple(inspector.get_pk_constraint(name, schema=schema).get("constrained_columns") or ()))
    have += [tuple(u["column_names"]) for u in inspector.get_unique_constraints(name, schema=schema)]
    missing = [w for w in wanted if not any(h[:len(w)] == w for h in have)]
    return [Problem(full_name, f"no index starts with ({', '.join(w)}): incremental runs would scan the whole "
                    "relation", severity="hint") for w in missing]
