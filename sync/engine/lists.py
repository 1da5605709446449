"""Step 3 of a connection's run: lists created, renamed and deleted at the provider (``lists ==
"create"``), or mapped by the connection to lists made in the provider's panel (``"mapped"``).
The CRM lists whose members must be planned again go into ``RunContext.requeue_lists``, and into
``list_replans`` in the transaction that changes their link: a run that dies before its members
phase completes leaves them to the next run, which loads them first (``_load_replans``).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

from sync.engine.context import RunContext
from sync.engine.rejects import VALIDATION, load_open_rejects, record_reject
from sync.errors import FatalError, ProviderError, RejectedRow
from sync.models import ID, ListLink, ListReplan, Reject, utcnow
from sync.providers.base import ListPush, MappedLists, MemberKey

log = structlog.get_logger(__name__)

#: Longest list name the daemon stores and sends.
LIST_NAME_MAX = 255


async def sync_lists(ctx: RunContext) -> dict[str, str]:
    """Create, rename and delete lists; return CRM list id -> remote list id.

    A linked list that no longer exists at the provider (deleted in its panel, or a provider
    that lost its state) loses its link and is created or adopted again, and its members are
    planned again. A problem with one list is that list's reject; the other lists go on.
    """
    if ctx.caps.lists == "none":
        return {}
    crm_lists = {item.id: item for item in ctx.crm.lists() if not item.deleted}
    ctx.crm_lists = set(crm_lists)
    with ctx.sessions() as session:
        links = {link.crm_list_id: link for link in session.scalars(
            sa.select(ListLink).where(ListLink.connection_id == ctx.connection_id))}
        _load_replans(ctx, session)
    if ctx.mapped_api is not None:
        return _sync_mapped_lists(ctx, ctx.mapped_api, crm_lists, links)
    assert ctx.list_api is not None
    if links:
        await _drop_links_of_missing_lists(ctx, ctx.list_api, links)
    mapping: dict[str, str] = {}
    taken = {link.remote_list_id for link in links.values()}     # incl. lists about to be deleted
    for crm_id, item in sorted(crm_lists.items()):
        link = links.get(crm_id)
        problem = _list_problem(item.name) if len(crm_id) <= ID else \
            f"the CRM list id is {len(crm_id)} characters long; at most {ID} fit"
        if problem is not None:
            _list_reject(ctx, crm_id, problem, VALIDATION)
            continue
        try:
            if link is None and ctx.caps.supports_list_create:
                ctx.plan.lists_create.append(item.name)
                if ctx.options.dry_run:
                    mapping[crm_id] = f"(new list {crm_id})"
                    ctx.requeue_lists.add(crm_id)
                    continue
                found = [r for r in await ctx.list_api.find_lists(item.name) if r.remote_id not in taken]
                remote = found[0] if found else await ctx.list_api.create_list(item.name)
                with ctx.sessions.begin() as session:
                    session.add(ListLink(connection_id=ctx.connection_id, crm_list_id=crm_id,
                                         remote_list_id=remote.remote_id, name_pushed=item.name,
                                         adopted=bool(found)))
                    _replan(ctx, session, crm_id)
                    _resolve_list_reject(ctx, session, crm_id)
                    ctx.checkpoint(session)
                taken.add(remote.remote_id)
                ctx.counts["lists_adopted" if found else "lists_created"] += 1
                link_remote = remote.remote_id
            elif link is not None:
                link_remote = link.remote_list_id
                if link.name_pushed != item.name and ctx.caps.supports_list_rename:
                    ctx.plan.lists_rename.append((link.name_pushed, item.name))
                    if not ctx.options.dry_run:
                        await ctx.list_api.rename_list(link.remote_list_id, item.name)
                        with ctx.sessions.begin() as session:
                            session.get_one(ListLink, link.id).name_pushed = item.name
                            _resolve_list_reject(ctx, session, crm_id)
                            ctx.checkpoint(session)
                        ctx.counts["lists_renamed"] += 1
            else:
                continue
        except FatalError:
            raise
        except ProviderError as exc:   # its members wait for the list; everything else goes on
            _list_reject(ctx, crm_id, f"list {item.name!r}: {exc.message}", exc.provider_code or "provider")
            if link is None:
                continue
            link_remote = link.remote_list_id
        mapping[crm_id] = link_remote
    for crm_id, link in sorted(links.items()):
        if crm_id in crm_lists:
            continue
        ctx.plan.lists_delete.append(link.name_pushed)
        if ctx.options.dry_run:    # plan exactly what the real run will do after the delete
            if not link.adopted:
                ctx.gone_remote.add(link.remote_list_id)
            ctx.requeue_lists.add(crm_id)
            continue
        try:
            # Only what we created is deleted; an adopted list is emptied of our members at most.
            if ctx.caps.supports_list_delete and not link.adopted:
                await ctx.list_api.delete_list(link.remote_list_id)
        except FatalError:
            raise
        except ProviderError as exc:
            _list_reject(ctx, crm_id, f"delete list {link.name_pushed!r}: {exc.message}",
                         exc.provider_code or "provider")
            continue
        with ctx.sessions.begin() as session:
            session.execute(sa.delete(ListLink).where(ListLink.id == link.id))
            _replan(ctx, session, crm_id, None if link.adopted else link.remote_list_id)
            _resolve_list_reject(ctx, session, crm_id)
            ctx.checkpoint(session)
        ctx.counts["lists_deleted"] += 1
    return mapping


def _sync_mapped_lists(ctx: RunContext, api: MappedLists, crm_lists: dict[str, Any], links: dict[str, ListLink]
                       ) -> dict[str, str]:
    """Lists made in the provider's panel: the connection maps CRM lists to them. A CRM list
    without a mapping is that list's reject (its members wait, visibly); a mapping that
    changed moves the list's members; a remote list is never created, renamed or deleted."""
    mapped = api.mapped_lists()
    mapping: dict[str, str] = {}
    for crm_id, item in sorted(crm_lists.items()):
        remote, link = mapped.get(crm_id), links.get(crm_id)
        if remote is None:
            _list_reject(ctx, crm_id, f"CRM list {crm_id} ({item.name!r}) has no mapping to a provider list; "
                         "add it to the connection's `lists` setting", "unmapped")
            if link is not None:
                _forget_list_link(ctx, link)
            continue
        mapping[crm_id] = remote.remote_id
        if link is not None and link.remote_list_id == remote.remote_id:
            continue
        ctx.counts["lists_mapped"] += 1
        if ctx.options.dry_run:
            ctx.requeue_lists.add(crm_id)
            continue
        with ctx.sessions.begin() as session:
            _replan(ctx, session, crm_id)
            if link is not None:
                session.execute(sa.delete(ListLink).where(ListLink.id == link.id))
            session.add(ListLink(connection_id=ctx.connection_id, crm_list_id=crm_id,
                                 remote_list_id=remote.remote_id, name_pushed=item.name[:LIST_NAME_MAX],
                                 adopted=True))
            _resolve_list_reject(ctx, session, crm_id)
            ctx.checkpoint(session)
    for crm_id, link in sorted(links.items()):
        if crm_id not in crm_lists:      # only unlinked: a mapped list is never deleted
            _forget_list_link(ctx, link)
    return mapping


def _forget_list_link(ctx: RunContext, link: ListLink) -> None:
    """Drop a link without touching the remote list; its members are planned again (they
    leave that list)."""
    if ctx.options.dry_run:
        ctx.requeue_lists.add(link.crm_list_id)
        return
    with ctx.sessions.begin() as session:
        session.execute(sa.delete(ListLink).where(ListLink.id == link.id))
        _replan(ctx, session, link.crm_list_id)
        ctx.checkpoint(session)


async def _drop_links_of_missing_lists(ctx: RunContext, api: ListPush, links: dict[str, ListLink]) -> None:
    present = {remote.remote_id for remote in await api.all_lists()}
    for crm_id, link in sorted(links.items()):
        if link.remote_list_id in present:
            continue
        log.warning("list.missing_at_provider", crm_list_id=crm_id, remote_list_id=link.remote_list_id)
        ctx.counts["lists_missing_at_provider"] += 1
        del links[crm_id]
        if ctx.options.dry_run:
            _note_replan(ctx, crm_id, link.remote_list_id, lost=True)
            continue
        with ctx.sessions.begin() as session:
            session.execute(sa.delete(ListLink).where(ListLink.id == link.id))
            _replan(ctx, session, crm_id, link.remote_list_id, lost=True)
            ctx.checkpoint(session)


def _note_replan(ctx: RunContext, crm_id: str, gone_remote: str | None = None, *, lost: bool = False) -> None:
    """This run plans the members of CRM list ``crm_id`` again; ``gone_remote``: the remote list
    that went away (its links are corrected; ``lost``: missing at the provider, its contacts are
    pushed again even when unchanged)."""
    ctx.requeue_lists.add(crm_id)
    if gone_remote is not None:
        ctx.gone_remote.add(gone_remote)
        if lost:
            ctx.lost_remote.add(gone_remote)


def _replan(ctx: RunContext, session: Session, crm_id: str, gone_remote: str | None = None, *,
            lost: bool = False) -> None:
    """``_note_replan``, kept in ``list_replans`` in the caller's transaction (the one that changes
    the list link) until a members phase completes: a run that dies first leaves it to the next."""
    _note_replan(ctx, crm_id, gone_remote, lost=lost)
    session.add(ListReplan(connection_id=ctx.connection_id, crm_list_id=crm_id, remote_list_id=gone_remote,
                           lost=lost))


def _load_replans(ctx: RunContext, session: Session) -> None:
    """The re-plans an earlier run committed and did not complete (it died, or stopped)."""
    for row in session.scalars(sa.select(ListReplan).where(ListReplan.connection_id == ctx.connection_id)
                               .order_by(ListReplan.id)):
        _note_replan(ctx, row.crm_list_id, row.remote_list_id, lost=row.lost)
    if ctx.requeue_lists:
        log.info("lists.replans_carried_over", crm_list_ids=sorted(ctx.requeue_lists))


def done_replanning(ctx: RunContext, session: Session) -> None:
    """A members phase completed: every list re-plan it was given is done (in its transaction)."""
    session.execute(sa.delete(ListReplan).where(ListReplan.connection_id == ctx.connection_id))


def _list_problem(name: str | None) -> str | None:
    if not (name or "").strip():
        return "the list has an empty name"
    if len(name or "") > LIST_NAME_MAX:
        return f"the list name is {len(name or '')} characters long; at most {LIST_NAME_MAX} fit"
    return None


def _list_reject(ctx: RunContext, crm_list_id: str, reason: str, code: str) -> None:
    """A list's problem, as a reject row with an empty member id (one per list)."""
    ctx.counts["lists_rejected"] += 1
    ctx.plan.lists_rejected.append((crm_list_id, reason))
    log.warning("list.rejected", crm_list_id=crm_list_id, reason=reason)
    if ctx.options.dry_run:
        return
    with ctx.sessions.begin() as session:
        rejects = load_open_rejects(ctx, session, [""], lists=[crm_list_id[:ID]])
        record_reject(ctx, session, rejects, MemberKey("", crm_list_id[:ID]), None,
                      RejectedRow(reason, provider_code=code))


def _resolve_list_reject(ctx: RunContext, session: Session, crm_list_id: str) -> None:
    session.execute(sa.update(Reject).where(
        Reject.connection_id == ctx.connection_id, Reject.crm_member_id == "",
        Reject.crm_list_id == crm_list_id, Reject.resolved_at.is_(None)).values(resolved_at=utcnow())
        .execution_options(synchronize_session=False))
