"""The mass-delete guard: before anything is sent, a run that would remove more members or lists
than the connection allows stops (what a broken CRM view looks like)."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from sync.engine.compare import changed_members, vanished_members_due
from sync.engine.context import RunContext, chunks
from sync.errors import FatalError
from sync.models import ListLink, MemberLink
from sync.providers.specs import COMMON_SETTINGS

#: Default limits of the mass-delete guard (connection settings ``max_delete_members`` and
#: ``max_delete_percent``, sync.providers.specs.COMMON_SETTINGS): a run that would remove more
#: stops before it sends anything.
MAX_DELETE_MEMBERS = int(COMMON_SETTINGS["max_delete_members"].default)
MAX_DELETE_PERCENT = float(COMMON_SETTINGS["max_delete_percent"].default)
#: Below this many linked members (or lists) the percentage limit does not apply.
MASS_DELETE_MIN_BASE = 100


class MassDeleteRefused(FatalError):
    """The run would remove more members or lists than the connection allows."""


def check_mass_delete(ctx: RunContext) -> None:
    """Before anything is sent: count what the run would remove and stop above the limits.

    Counted: linked members whose CRM row vanished (when the vanished check is due), linked
    members among the changed ones whose row is soft-deleted or lost its e-mail, and linked
    lists the CRM no longer has. This is what a broken CRM view looks like (no rows, every row
    deleted, or a join that lost the address column). A
    member leaving one list is not counted. Raises MassDeleteRefused (one line: the numbers,
    the limits, and how to go on)."""
    limit, percent = ctx.mass_delete_limits
    with ctx.sessions() as session:
        # Whether anything is linked: one indexed row, not a count of every link (O(N) on a run
        # that changes nothing); the count is made only when there is something to remove.
        any_linked = session.scalar(sa.select(MemberLink.id).where(
            MemberLink.connection_id == ctx.connection_id).limit(1)) is not None
        linked_lists = set(session.scalars(sa.select(ListLink.crm_list_id).where(
            ListLink.connection_id == ctx.connection_id)))
        with_links = [] if ctx.options.backfill else changed_members(ctx).ids
    if not any_linked and not linked_lists:
        return
    vanished = vanished_members_due(ctx)[1]
    with ctx.sessions() as session:
        if ctx.options.backfill or ctx.changed_every_member:
            # every member changed: one read of the soft-deleted ones instead
            deleted = _linked_among(ctx, session, ctx.crm.all_removed_member_ids())
        else:
            deleted = ctx.crm.removed_member_ids(_linked_among(ctx, session, with_links))
    removals = len(set(vanished) | set(deleted))
    live_lists = {item.id for item in ctx.crm.lists() if not item.deleted}
    lists_gone = len(linked_lists - live_lists)
    ctx.counts["members_to_remove"] = removals
    linked = 0
    if removals or lists_gone:
        with ctx.sessions() as session:
            linked = session.scalar(sa.select(sa.func.count(sa.distinct(MemberLink.crm_member_id))).where(
                MemberLink.connection_id == ctx.connection_id)) or 0
    too_many = removals > limit or (linked >= MASS_DELETE_MIN_BASE and 100.0 * removals / linked > percent)
    too_many_lists = lists_gone > 1 and 100.0 * lists_gone / max(len(linked_lists), 1) > percent
    if not (too_many or too_many_lists) or ctx.options.allow_mass_delete:
        return
    if ctx.options.dry_run:
        ctx.plan.invalid.append(("(mass delete)", f"a real run would stop: {removals} members and "
                                                  f"{lists_gone} lists to remove"))
        return
    share = 100.0 * removals / linked if linked else 0.0
    raise MassDeleteRefused(
        f"this run would remove {removals} of {linked} members ({share:.0f} %) and {lists_gone} of "
        f"{len(linked_lists)} lists, above the connection's limits (max_delete_members={limit}, "
        f"max_delete_percent={percent:g}); nothing was sent. Check the CRM views (`crm-esp-sync crm check`), "
        "then run `crm-esp-sync once --allow-mass-delete` if the removals are meant")


def _linked_among(ctx: RunContext, session: Session, member_ids: Sequence[str]) -> list[str]:
    found: list[str] = []
    for part in chunks(sorted(set(member_ids))):
        found += session.scalars(sa.select(MemberLink.crm_member_id).distinct().where(
            MemberLink.connection_id == ctx.connection_id, MemberLink.crm_member_id.in_(part)))
    return found
