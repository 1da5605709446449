"""Which members a run plans, besides those with an open reject: the CRM's changes since the
watermark, the members of lists that changed this run, members whose CRM row vanished without a
trace (a hard delete), and (backfill) every member whose CRM state differs from the one its links
were last reconciled from, compared page by page by source digest.

``changed_members`` and ``vanished_members_due`` read the CRM once a run: the mass-delete guard
(sync/engine/guard.py) reads them first, the members phase (sync/engine/push.py) after it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from sync.crm import ChangedMembers
from sync.engine.ahead import read_ahead
from sync.engine.context import (
    IN_CHUNK,
    MEMBER_LINKS,
    MEMBERS_STREAM,
    MEMBERS_XID_STREAM,
    VANISHED_STREAM,
    RunContext,
    chunks,
)
from sync.engine.state import position_for, watermark_for
from sync.models import MemberLink
from sync.sql import text_array

T = TypeVar("T")


def changed_members(ctx: RunContext) -> ChangedMembers:
    if ctx.changed is None:
        since_xid = None
        if ctx.crm.change_xid and not ctx.options.backfill:
            with ctx.sessions() as session:
                since_xid = position_for(session, ctx.connection_id, MEMBERS_XID_STREAM)
        ctx.xid_mark = ctx.crm.change_xid_mark()     # before the read: see CrmReader
        since = ctx.read_since(MEMBERS_STREAM)
        if since is None and since_xid is None and not ctx.options.backfill:
            # No watermark and no change position (a first sync, or one that crashed before its
            # end): every CRM member changed. member_chunks streams them page by page, as a
            # backfill does, instead of a list of every id held through the run.
            ctx.changed_every_member = True
            ctx.changed = ChangedMembers()
        else:
            ctx.changed = ctx.crm.changed_member_ids(since, ctx.until, since_xid)
    return ctx.changed


def vanished_members_due(ctx: RunContext) -> tuple[bool, list[str]]:
    if ctx.vanished is None:
        with ctx.sessions() as session:
            # A backfill looks for them too (and its mass-delete guard counts them).
            due = ctx.options.backfill or _vanished_check_due(ctx, session)
            ctx.vanished = (due, [m for page in _vanished_pages(ctx) for m in page] if due else [])
    return ctx.vanished


def _vanished_check_due(ctx: RunContext, session: Session) -> bool:
    if ctx.options.backfill or ctx.vanished_check is None:
        return False
    mark = watermark_for(session, ctx.connection_id, VANISHED_STREAM)
    return mark is None or ctx.until - mark >= ctx.vanished_check


def member_chunks(ctx: RunContext, ordered: Sequence[str]) -> Iterator[Sequence[str]]:
    """The run's members in chunks of ``max_batch``: ``ordered`` (with the vanished ones), then
    (backfill) every CRM member whose CRM state differs from the one its links were last
    reconciled from, streamed (an empty chunk: a page compared, nothing to plan in it), or
    (a first sync: ``changed_every_member``) every CRM member, streamed."""
    size = ctx.caps.max_batch
    yield from chunks(ordered, size)
    if not (ctx.options.backfill or ctx.changed_every_member):
        return
    head = set(ordered)
    if ctx.options.replan_all or not ctx.options.backfill:
        for ids in ctx.crm.member_id_pages():
            yield from chunks([m for m in ids if m not in head], size)
        return
    for sources in _ahead(ctx, ctx.crm.member_source_pages(ctx.salt), "crm-digest-pages"):
        differing = _differing(ctx, [entry for entry in sources if entry[0] not in head])
        yield from chunks(differing, size) if differing else [()]


def _ahead(ctx: RunContext, pages: Iterator[T], name: str) -> Iterator[T]:
    """``pages`` with the next one read by a thread while this one is compared (the CRM's server
    and ours work at once); not on SQLite, whose connections stay in their thread."""
    if "sqlite" in (ctx.dialect, ctx.crm.engine.dialect.name):
        return pages
    return read_ahead(pages, name=name)


def _differing(ctx: RunContext, page: Sequence[tuple[str, str, bool]]) -> list[str]:
    """The members of a page of (id, source digest, in a live list?) that must be planned: every
    link of a member holds the digest of its current CRM state, or it is planned; a member
    with no link is planned when it is in a list (it may be new, or refused for a reason that
    is gone). PostgreSQL compares on the server (``_differing_by_server``); elsewhere our
    database answers one row a member: the least and the greatest of its links' digests
    (both equal to the CRM's digest, or the member differs)."""
    if ctx.dialect == "postgresql":
        differing = _differing_by_server(ctx, page)
        ctx.counts["members_skipped_unchanged"] += len(page) - len(differing)
        return differing
    stored: dict[str, tuple[str, str]] = {}
    ids = [member_id for member_id, _, _ in page]
    links = MEMBER_LINKS.c
    held = sa.func.coalesce(links.source_digest, "")
    with ctx.sessions() as session:
        connection = session.connection()      # (core rows: no ORM loading for 10,000 of them)
        for part in chunks(ids, IN_CHUNK):
            for member_id, least, greatest in connection.execute(
                    sa.select(links.crm_member_id, sa.func.min(held), sa.func.max(held)).where(
                        links.connection_id == ctx.connection_id, ctx.one_of(links.crm_member_id, part))
                    .group_by(links.crm_member_id)).all():
                stored[member_id] = (least, greatest)
    differing = []
    for member_id, digest, in_a_list in page:
        found = stored.get(member_id)
        if (found is None and not in_a_list) or found == (digest, digest):
            ctx.counts["members_skipped_unchanged"] += 1
        else:
            differing.append(member_id)
    return differing


def _differing_by_server(ctx: RunContext, page: Sequence[tuple[str, str, bool]]) -> list[str]:
    """``_differing`` on PostgreSQL: the page goes to the server as three arrays and only the
    members that differ come back (a few per cent of a page, not a row for each member)."""
    if not page:
        return []
    text = postgresql.ARRAY(sa.String())
    crm = sa.func.unnest(text_array([member_id for member_id, _, _ in page], text),
                         text_array([digest for _, digest, _ in page], text),
                         text_array(["t" if in_a_list else "f" for _, _, in_a_list in page], text)
                         ).table_valued("id", "digest", "in_a_list").render_derived(name="crm")
    links = MEMBER_LINKS.alias("links")
    # (one probe of the links' index a member, for both questions: 30 % less than two EXISTS)
    held = sa.select(sa.func.count().label("links"),
                     sa.func.count().filter(links.c.source_digest.is_distinct_from(crm.c.digest)).label("stale")
                     ).where(links.c.connection_id == ctx.connection_id, links.c.crm_member_id == crm.c.id
                             ).lateral("held")
    query = sa.select(crm.c.id).select_from(crm.join(held, sa.true())).where(
        sa.or_(held.c.stale > 0, sa.and_(held.c.links == 0, crm.c.in_a_list == "t")))
    with ctx.sessions() as session:
        found = set(session.connection().scalars(query).all())
    return [member_id for member_id, _, _ in page if member_id in found]


def _linked_id_pages(ctx: RunContext, size: int = 10_000) -> Iterator[list[str]]:
    """The ids of this connection's linked members, ``size`` at a time, by keyset."""
    last: str | None = None
    while True:
        links = MEMBER_LINKS.c
        query = sa.select(links.crm_member_id).distinct().where(links.connection_id == ctx.connection_id)
        if last is not None:
            query = query.where(links.crm_member_id > last)
        with ctx.sessions() as session:
            page = list(session.connection().scalars(query.order_by(links.crm_member_id).limit(size)).all())
        if page:
            yield page
        if len(page) < size:
            return
        last = page[-1]


def _vanished_pages(ctx: RunContext) -> Iterator[list[str]]:
    """Linked members whose CRM row is gone without a trace (a hard delete), page by page: each
    page of our linked ids is looked up in the CRM (ids only, flat memory)."""
    for page in _ahead(ctx, _linked_id_pages(ctx), "linked-id-pages"):
        if ctx.crm.all_exist(page):
            continue
        existing = ctx.crm.existing_member_ids(page)
        gone = [member_id for member_id in page if member_id not in existing]
        if gone:
            yield gone


def requeued_members(ctx: RunContext, session: Session) -> list[str]:
    """Members of lists created, re-created or deleted this run: their lists changed."""
    if not ctx.requeue_lists:
        return []
    # When every CRM member is planned already (a first sync, where every list is created), the
    # CRM's members of those lists are too: only links can add someone (a member gone from the CRM).
    every = ctx.changed_every_member and not ctx.options.backfill
    found = set() if every else set(ctx.crm.member_ids_in_lists(sorted(ctx.requeue_lists)))
    for part in chunks(sorted(ctx.requeue_lists)):
        found.update(session.scalars(sa.select(MemberLink.crm_member_id).where(
            MemberLink.connection_id == ctx.connection_id, MemberLink.crm_list_id.in_(part))))
    as_text = sa.type_coerce(MemberLink.remote_lists, sa.Text)
    for remote_id in sorted(ctx.gone_remote):
        found.update(session.scalars(sa.select(MemberLink.crm_member_id).where(
            MemberLink.connection_id == ctx.connection_id, as_text.like(f'%"{remote_id}"%'))))
    return sorted(found)
