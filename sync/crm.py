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
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from sync.config import CrmSource
from sync.models import EMAIL, ID, UTCDateTime


@dataclass(frozen=True)
class CrmTables:
    lists: sa.Table
    members: sa.Table
    memberships: sa.Table
    metadata: sa.MetaData


def _split(name: str) -> tuple[str | None, str]:
    schema, _, table = name.rpartition(".")
    return (schema or None), table


def crm_tables(source: CrmSource) -> CrmTables:
    """Table objects for the configured relation names (declared, not reflected: views work)."""
    metadata = sa.MetaData()
    schema, name = _split(source.lists)
    lists = sa.Table(
        name, metadata,
        sa.Column("tenant_id", sa.String(ID), primary_key=True),
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("deleted_at", UTCDateTime()),
        sa.Index(f"ix_{name}_tenant_updated", "tenant_id", "updated_at"),
        schema=schema,
    )
    schema, name = _split(source.members)
    members = sa.Table(
        name, metadata,
        sa.Column("tenant_id", sa.String(ID), primary_key=True),
        sa.Column("id", sa.String(ID), primary_key=True),
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
        sa.Index(f"ix_{name}_tenant_updated", "tenant_id", "updated_at"),
        schema=schema,
    )
    schema, name = _split(source.memberships)
    memberships = sa.Table(
        name, metadata,
        sa.Column("tenant_id", sa.String(ID), primary_key=True),
        sa.Column("list_id", sa.String(ID), primary_key=True),
        sa.Column("member_id", sa.String(ID), primary_key=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("deleted_at", UTCDateTime()),
        sa.Index(f"ix_{name}_tenant_updated", "tenant_id", "updated_at"),
        sa.Index(f"ix_{name}_tenant_member", "tenant_id", "member_id"),
        schema=schema,
    )
    return CrmTables(lists, members, memberships, metadata)


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


class CrmReader:
    """Reads one tenant's lists and members from the CRM relations."""

    def __init__(self, engine: sa.Engine, source: CrmSource, tenant_id: str) -> None:
        self.engine = engine
        self.tables = crm_tables(source)
        self.tenant_id = tenant_id

    def lists(self) -> list[CrmList]:
        t = self.tables.lists
        query = sa.select(t.c.id, t.c.name, t.c.updated_at, t.c.deleted_at).where(t.c.tenant_id == self.tenant_id)
        with self.engine.connect() as conn:
            return [CrmList(r.id, r.name, r.updated_at, r.deleted_at is not None) for r in conn.execute(query)]

    def changed_member_ids(self, since: dt.datetime | None, until: dt.datetime) -> list[tuple[dt.datetime, str]]:
        """(change time, member id) of members whose row or memberships changed in (since, until],
        oldest first. ``since=None`` means every member."""
        m, ms = self.tables.members, self.tables.memberships
        member_q = sa.select(m.c.updated_at.label("at"), m.c.id.label("member_id")).where(
            m.c.tenant_id == self.tenant_id, m.c.updated_at <= until)
        link_q = sa.select(ms.c.updated_at.label("at"), ms.c.member_id.label("member_id")).where(
            ms.c.tenant_id == self.tenant_id, ms.c.updated_at <= until)
        if since is not None:
            member_q = member_q.where(m.c.updated_at > since)
            link_q = link_q.where(ms.c.updated_at > since)
        union = sa.union_all(member_q, link_q).subquery()
        query = (sa.select(sa.func.max(union.c.at).label("at"), union.c.member_id)
                 .group_by(union.c.member_id).order_by(sa.text("at"), union.c.member_id))
        with self.engine.connect() as conn:
            return [(row.at, row.member_id) for row in conn.execute(query)]

    def all_member_ids(self) -> list[str]:
        m = self.tables.members
        with self.engine.connect() as conn:
            return list(conn.scalars(sa.select(m.c.id).where(m.c.tenant_id == self.tenant_id).order_by(m.c.id)))

    def members(self, member_ids: Sequence[str]) -> list[CrmMember]:
        """The given members (missing ids are simply absent: a hard delete)."""
        if not member_ids:
            return []
        m, ms = self.tables.members, self.tables.memberships
        lists_of: dict[str, set[str]] = defaultdict(set)
        rows: list[sa.Row[Any]] = []
        with self.engine.connect() as conn:
            for chunk in _chunks(member_ids, 500):
                rows.extend(conn.execute(sa.select(m).where(m.c.tenant_id == self.tenant_id, m.c.id.in_(chunk))))
                for link in conn.execute(sa.select(ms.c.member_id, ms.c.list_id).where(
                        ms.c.tenant_id == self.tenant_id, ms.c.member_id.in_(chunk), ms.c.deleted_at.is_(None))):
                    lists_of[link.member_id].add(link.list_id)
        return [
            CrmMember(
                id=r.id, email=r.email, first_name=r.first_name, last_name=r.last_name, phone=r.phone,
                city=r.city, consent_status=r.consent_status, consent_date=r.consent_date,
                consent_source=r.consent_source, recipient_type=r.recipient_type, updated_at=r.updated_at,
                deleted=r.deleted_at is not None, list_ids=frozenset(lists_of[r.id]),
            )
            for r in rows
        ]


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]

