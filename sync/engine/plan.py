"""Member planning (step 4 of a connection's run): one chunk of CRM members, with their links and
every member an e-mail swap or move ties them to, turned into the upserts, removals and rejects
its push makes (``plan_chunk``). Consent decides the status pushed: a suppression stands unless
the CRM holds a consent dated after it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from sync.crm import CrmMember, source_digest
from sync.emails import normalize_email, valid_email
from sync.engine.context import (
    CRM_REFUSED,
    IYS_REFUSED,
    MEMBER_LINKS,
    REJECTED,
    SUPPRESSED,
    SUPPRESSED_ELSEWHERE,
    WAITS_FOR_LIST,
    LeftOut,
    LinkRow,
    RunContext,
    Suppression,
    chunks,
)
from sync.engine.erasures import ERASED
from sync.engine.rejects import TOO_LONG, VALIDATION, held_by_reason, holder_named
from sync.engine.statuses import IYS_RET, load_suppressions
from sync.errors import RejectedRow
from sync.fields import convert
from sync.models import ID, MemberLink, Reject
from sync.providers.base import MemberDelete, MemberKey, MemberSnapshot, MemberUpsert, payload_hash

#: The reason of a removal because the member is in no list any more.
LEFT_EVERY_LIST = "left every list"
#: ``status_pushed`` of a link whose record the provider keeps unsubscribed after the member left
#: its list: not removed again; only a KVKK erasure deletes it.
LEFT_KEPT = "left_kept"
#: A removal not sent because the record is another member's now (``_hand_over``): its outcome's action.
HANDED_OVER = "handed_over"
#: The reason of a removal because the CRM row no longer holds a valid address.
ADDRESS_GONE = "no valid e-mail address in the CRM"
#: The consents the CRM contract knows (docs/crm-contract.md), as sync.crm reads them (trimmed,
#: upper case, blank as None); any other value is a reject.
CONSENTS: frozenset[str | None] = frozenset({None, "ONAY", "RET"})
#: The reason of a removal of an address the CRM no longer gives a member whose new address is not
#: pushed (another member owns it, or it is suppressed there).
ADDRESS_LEFT = "e-mail changed to one not pushed for this member"


@dataclass
class Chunk:
    """The plan of one chunk of members (or of a push window: sync/engine/push.py merges chunks)."""

    ids: list[str] = field(default_factory=list)
    upserts: list[MemberUpsert] = field(default_factory=list)
    deletes: list[MemberDelete] = field(default_factory=list)
    invalid: list[tuple[MemberKey, str | None, str, str]] = field(default_factory=list)  # key, email, reason, code
    links: dict[MemberKey, LinkRow] = field(default_factory=dict)
    hashes: dict[MemberKey, str] = field(default_factory=dict)
    statuses: dict[MemberKey, str] = field(default_factory=dict)
    #: Links whose lists changed only because a list went away at the provider: fixed locally.
    rehash: list[dict[str, Any]] = field(default_factory=list)
    #: (member, list) waiting for a list that does not exist at the provider; and those no longer waiting.
    pending: list[tuple[MemberKey, str | None, str]] = field(default_factory=list)
    unpend: list[MemberKey] = field(default_factory=list)
    #: Members gone from the CRM: their open rejects are resolved.
    gone: list[str] = field(default_factory=list)
    #: Members in a list that this plan does not push, and why (``Plan.left_out``).
    left_out: list[LeftOut] = field(default_factory=list)
    #: The CRM lists of the members it planned (a provider's refusal names them).
    member_lists: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: Members planned to the end, with the source digest their links get once the push is done;
    #: and (member, link id, digest) of their existing links whose stored digest differs.
    sources: dict[str, str] = field(default_factory=dict)
    settled: list[tuple[str, int, str]] = field(default_factory=list)
    #: Members whose CRM row passes our own validation (a usable address that is theirs, or no
    #: address needed: in no list, nothing held at the provider): an open validation reject of
    #: theirs is moot, whatever becomes of their push (nothing to push, a suppression, a
    #: provider's refusal that is its own reject).
    validated: list[str] = field(default_factory=list)
    #: (member, list) -> the address its link holds, for links planned with nothing to push (the
    #: record there holds the member already): an open removal reject naming that address is moot.
    unchanged: dict[MemberKey, str] = field(default_factory=dict)
    #: Removals not sent: the record is another member's now (``_hand_over``); removal key -> that member.
    handed_over: dict[MemberKey, str] = field(default_factory=dict)
    #: While a chunk is planned, where a removal deletes the whole contact: what an unchanged
    #: member's push would write (payload, lists, status), for ``_hand_over``; emptied after it.
    unchanged_payloads: dict[MemberKey, tuple[dict[str, Any], tuple[str, ...], str]] = field(default_factory=dict)


def _standing(member: CrmMember, suppressions: Sequence[Suppression]) -> list[Suppression]:
    """The account-wide suppressions that stand: not lifted by a CRM consent dated after them."""
    onay = (member.consent_status or "").upper() == "ONAY"
    return [s for s in suppressions if not s.remote_list and (
        member.consent_date is None or member.consent_date <= s.occurred_at or (s.status == IYS_RET and not onay))]


def _status_for(ctx: RunContext, member: CrmMember, suppressions: Sequence[Suppression]
                ) -> tuple[str, str | None, bool]:
    """(status to push, why it must not be pushed at all, re-subscribe). A suppression stands
    unless the CRM holds a consent dated after it; one that no longer stands at THIS provider
    means the push deliberately makes the contact active again."""
    refused = (member.consent_status or "").upper() == "RET"
    standing = _standing(member, suppressions)
    if any(s.connection_id == ctx.connection_id for s in standing):
        return "unsubscribed", "suppressed at this provider", False
    if standing and not ctx.caps.supports_unsubscribe:
        return "unsubscribed", "suppressed at another provider; this one cannot unsubscribe", False
    status = "unsubscribed" if refused or standing else "active"
    superseded = any(s.connection_id == ctx.connection_id and not s.remote_list for s in suppressions)
    return status, None, status == "active" and superseded


def _when(at: dt.datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


def _suppression_text(ctx: RunContext, s: Suppression) -> str:
    what = {"unsubscribed": "unsubscribed", "hard_bounce": "hard bounce", "complaint": "complaint"}.get(
        s.status, s.status)
    if s.status == IYS_RET:
        return f"İYS RET pulled from {ctx.connection_label(s.connection_id)}, consent date {_when(s.occurred_at)}"
    where = ctx.connection_label(s.connection_id)
    scope = f" list {s.remote_list}" if s.remote_list else ""
    return f"{what} at {where}{scope} on {_when(s.occurred_at)}"


def _why_suppressed(ctx: RunContext, member: CrmMember, standing: Sequence[Suppression]) -> tuple[str, str]:
    """(reason, detail) of a member left out for a suppression or a refused consent: this
    provider's own first, then an İYS RET, then another provider's; else the CRM's own RET."""
    if not standing:
        return CRM_REFUSED, f"the CRM's consent is RET ({member.consent_source or 'no source'}); " \
                            "no contact is created for it"
    first = sorted(standing, key=lambda s: (s.connection_id != ctx.connection_id, s.status != IYS_RET,
                                            s.connection_id, s.occurred_at))[0]
    reason = IYS_REFUSED if first.status == IYS_RET else \
        SUPPRESSED if first.connection_id == ctx.connection_id else SUPPRESSED_ELSEWHERE
    detail = _suppression_text(ctx, first)
    if len(standing) > 1:
        detail += f" (and {len(standing) - 1} more)"
    if member.consent_date is not None:
        detail += f"; the CRM's consent ({member.consent_status or '-'}, {_when(member.consent_date)}) is not newer"
    return reason, detail


def _leave_out(plan: Chunk, member: CrmMember, email: str | None, reason: str, detail: str,
               lists: Iterable[str] | None = None) -> None:
    chosen = tuple(sorted(member.list_ids if lists is None else lists))
    plan.left_out.append(LeftOut(member.id, email, chosen, reason, detail))


def _blocked_lists(ctx: RunContext, member: CrmMember, suppressions: Sequence[Suppression]) -> set[str]:
    """Remote lists of this provider the member unsubscribed from (a per-list unsubscribe):
    they block that list only, until a newer CRM consent."""
    return {s.remote_list for s in suppressions if s.remote_list and s.connection_id == ctx.connection_id
            and (member.consent_date is None or member.consent_date <= s.occurred_at)}


def _link_holders(ctx: RunContext, session: Session, emails: Iterable[str]) -> set[str]:
    """Which CRM members hold these e-mails in their links at this provider."""
    found: set[str] = set()
    for part in chunks(sorted(set(emails))):
        found.update(session.scalars(sa.select(MemberLink.crm_member_id).where(
            MemberLink.connection_id == ctx.connection_id, ctx.one_of(MemberLink.email, part))))
    return found


def _waiting_for(ctx: RunContext, session: Session, emails: Iterable[str]) -> set[str]:
    """Members refused because another member held one of these addresses (an open validation
    reject on it): planned with the members that hold or held it, so a released address
    reaches its next owner in the same run."""
    if ctx.waiting is None:     # read once a run (they are few), then kept up by record_reject
        ctx.waiting = defaultdict(set)
        for member_id, email, reason in session.execute(sa.select(
                Reject.crm_member_id, Reject.email, Reject.reason).where(
                Reject.connection_id == ctx.connection_id, Reject.resolved_at.is_(None),
                Reject.provider_code == VALIDATION, Reject.crm_member_id != "", Reject.email.is_not(None))):
            ctx.waiting[str(email)].add(member_id)
            if (holder := holder_named(reason)) is not None:
                ctx.waiting_on.setdefault(holder, set()).add(member_id)
    # (a copy of each set: record_reject adds to them while a window in flight commits, push.py)
    return {member_id for email in emails for member_id in tuple(ctx.waiting.get(email, ()))}


def _waiting_on(ctx: RunContext, holders: Iterable[str]) -> set[str]:
    """Members refused because one of these members held their address (read by ``_waiting_for``):
    planned with it, so an address it no longer claims (changed, deleted, gone for real) reaches
    them in the same run, also when no link of it held that address (never pushed: a RET)."""
    return {member_id for holder in holders for member_id in tuple(ctx.waiting_on.get(holder, ()))}


def _holders_of(ctx: RunContext, members: Iterable[str]) -> set[str]:
    """The members that the open rejects of these members name as the owner of their address (read
    by ``_waiting_for``): planned with them, so the owner is chosen again among the same claimants.
    A holder that no link of ours shows at that address (never pushed: a RET) is found by no address,
    and a refused member re-read alone (its look-back, its reject's retry) was taken for the owner
    and pushed, then refused again by the next backfill, which plans everyone together."""
    wanted = set(members)
    return {holder for holder, waiting in tuple(ctx.waiting_on.items()) if not wanted.isdisjoint(waiting)}


def _load_chunk(ctx: RunContext, session: Session, chunk_ids: Sequence[str]
                ) -> tuple[list[str], dict[str, CrmMember], dict[str, dict[str, LinkRow]]]:
    """The chunk's CRM rows and links, plus every member whose link holds an address one of
    them has or their links hold, and every member waiting for an address one of them has or
    had (e-mail swaps and moves converge in one run because both sides are planned together,
    from the CRM's current state; a removal of a record another member's link holds now is
    seen as such: ``_hand_over``)."""
    ids = list(dict.fromkeys(chunk_ids))
    members: dict[str, CrmMember] = {}
    links_of: dict[str, dict[str, LinkRow]] = defaultdict(dict)
    fresh = ids
    for _ in range(4):
        members.update((m.id, m) for m in ctx.crm.members(fresh))
        for part in chunks(fresh):
            for found in session.execute(sa.select(MEMBER_LINKS).where(
                    MEMBER_LINKS.c.connection_id == ctx.connection_id,
                    ctx.one_of(MEMBER_LINKS.c.crm_member_id, part))):
                links_of[found.crm_member_id][found.crm_list_id] = found
        emails = {normalize_email(members[m].email) for m in fresh if m in members} - {""}
        held = {link.email for m in fresh for link in links_of.get(m, {}).values()}
        known = set(ids)
        fresh = sorted((_link_holders(ctx, session, emails | held) | _waiting_for(ctx, session, emails | held)
                        | _waiting_on(ctx, fresh) | _holders_of(ctx, fresh)) - known)
        if not fresh:
            break
        ids += fresh
    return ids, members, links_of


def plan_chunk(ctx: RunContext, session: Session, chunk_ids: Sequence[str], list_map: dict[str, str]) -> Chunk:
    ids, members, links_of = _load_chunk(ctx, session, chunk_ids)
    plan = Chunk(ids=ids)
    for links in links_of.values():
        for found in links.values():
            plan.links[MemberKey(found.crm_member_id, found.crm_list_id)] = found
    emails = {m.id: normalize_email(m.email) for m in members.values()}
    old_emails = {link.email for links in links_of.values() for link in links.values()}
    suppressions = load_suppressions(ctx, session, [*emails.values(), *old_emails])
    owner = _owners(ids, members, emails, links_of, lambda m: _in_a_list(ctx, m))
    # Records we pushed "unsubscribed" (a RET, a removal by unsubscribing), by address and remote
    # list ("": the whole contact), whoever they were pushed for, and when: the provider's
    # "unsubscribed" there is our own, so a member that has the address now, with a CRM consent
    # dated after that push, makes it active again with its push (as over its own link's echo,
    # ``_upsert``). An unsubscribe the recipient made before it is a stored suppression, which
    # stands unless the consent is newer (``_status_for``); one made after our push left the
    # provider's status as it was, and the consent is newer than anything before that push.
    echoes: dict[tuple[str, str], dt.datetime] = {}
    for held in links_of.values():
        for pushed in held.values():
            if pushed.status_pushed == "unsubscribed" and pushed.pushed_at is not None:
                for remote in (*pushed.remote_lists, ""):
                    key = (pushed.email, remote)
                    echoes[key] = max(pushed.pushed_at, echoes.get(key, pushed.pushed_at))

    def over_echo(member: CrmMember, email: str, remote: str) -> bool:
        pushed_at = echoes.get((email, remote))
        return pushed_at is not None and member.consent_date is not None and member.consent_date > pushed_at
    per_list = ctx.caps.membership_model == "per_list"
    for member_id in ids:
        member = members.get(member_id)
        links = links_of.get(member_id, {})
        if member is not None and member.rows > 1:
            # Which of the rows is meant cannot be known, and alternating between them would delete
            # and create contacts: rejected, and left at the provider as it is.
            plan.invalid.append((MemberKey(member_id), member.email,
                                 f"the CRM members relation has {member.rows} rows for this member id; it "
                                 "must have one (`crm-esp-sync crm check` names the relation); left as it "
                                 "is at the provider", VALIDATION))
            continue
        if member is None or member.deleted:
            for gone in links.values():
                _delete(ctx, plan, gone, ERASED)
            plan.gone.append(member_id)
            continue
        if member.consent_status not in CONSENTS:
            # Neither a consent nor a refusal: pushing it active could mail someone who refused, and
            # reading it as RET could unsubscribe someone who consented. Rejected, left as it is.
            plan.invalid.append((MemberKey(member_id), member.email,
                                 f"consent_status {member.consent_status!r} is neither ONAY nor RET (nor NULL, "
                                 "no answer); left as it is at the provider", VALIDATION))
            continue
        if len(member_id) > ID:
            plan.invalid.append((MemberKey(member_id[:ID]), member.email,
                                 f"the CRM member id is {len(member_id)} characters long; at most {ID} fit",
                                 TOO_LONG))
            continue
        email = emails[member_id]
        if not valid_email(email):
            if links or member.list_ids:
                plan.invalid.append((MemberKey(member_id), member.email,
                                     "no e-mail address" if not email else "invalid e-mail address", VALIDATION))
            else:
                # In no list and holding nothing at the provider: no address is needed, so a
                # validation reject of an earlier address (one another member held) is moot.
                plan.validated.append(member_id)
            # The CRM no longer holds the address its links carry: no mail goes there any more
            # (a record kept unsubscribed, or our own "unsubscribed, no lists", is removed already).
            for stale in links.values():
                if not _removed_already(stale):
                    _delete(ctx, plan, stale, ADDRESS_GONE)
            continue
        if owner.get(email) != member_id and _in_a_list(ctx, member):
            # (a claimant in no list needs no address: planned as its owner would be, it only
            # leaves, and its contact at the address is removed before the owner's push)
            plan.invalid.append((MemberKey(member_id), email, held_by_reason(owner[email]), VALIDATION))
            # At a provider keyed by our member id the member's own record is not the owner's, even
            # at that very address (the owner has a record of its own there): it leaves too.
            _leave_old_addresses(ctx, plan, links, None if ctx.caps.member_key == "crm_id" else email,
                                 suppressions)
            continue
        plan.validated.append(member_id)
        previous_emails = {link.email for link in links.values()}
        own = [s for e in {email, *previous_emails} for s in suppressions.get(e, ())]
        status, blocked, resubscribe = _status_for(ctx, member, own)
        if blocked is not None:
            if member.list_ids:
                ctx.plan.blocked_by_suppression.append(email)
                standing = _standing(member, own)
                reason, detail = _why_suppressed(ctx, member, standing)
                if all(s.connection_id != ctx.connection_id for s in standing):
                    detail += "; this provider cannot unsubscribe: its contact is left as it is"
                _leave_out(plan, member, email, reason, detail)
            _leave_old_addresses(ctx, plan, links, email, suppressions)
            _settle(ctx, plan, member, links)
            continue
        for crm_list in sorted(member.list_ids):
            if crm_list in list_map or (ctx.crm_lists is not None and crm_list not in ctx.crm_lists):
                plan.unpend.append(MemberKey(member_id, crm_list))
            else:
                plan.pending.append((MemberKey(member_id, crm_list), email,
                                     f"waits for list {crm_list}, which does not exist at the provider yet"))
        if status == "unsubscribed" and not links:
            # never create a contact for someone who refused or unsubscribed
            if member.list_ids:
                _leave_out(plan, member, email, *_why_suppressed(ctx, member, _standing(member, own)))
            continue
        try:
            snapshot = MemberSnapshot(
                email=email, first_name=member.first_name, last_name=member.last_name, phone=member.phone,
                city=member.city, status=status,  # type: ignore[arg-type]
                consent_status=member.consent_status, consent_date=member.consent_date,
                consent_source=member.consent_source, recipient_type=member.recipient_type,
                fields=convert(ctx.fields, member.extra) if ctx.fields else {}, email_as_written=member.email)
            assert ctx.member_api is not None
            payload = ctx.member_api.build_payload(snapshot)
        except RejectedRow as exc:
            plan.invalid.append((MemberKey(member_id), email, exc.reason, exc.provider_code or VALIDATION))
            continue
        wanted = sorted(crm_list for crm_list in member.list_ids if crm_list in list_map)
        if per_list:
            unsubscribed_from = _blocked_lists(ctx, member, own)
            superseded_lists = {s.remote_list for s in own if s.remote_list
                                and s.connection_id == ctx.connection_id} - unsubscribed_from
            for crm_list in wanted:
                link = links.get(crm_list)
                if list_map[crm_list] in unsubscribed_from:   # left alone: not re-subscribed, not removed
                    if link is not None:        # (but not at an address the CRM no longer gives it)
                        _leave_old_addresses(ctx, plan, {crm_list: link}, email, suppressions)
                    ctx.plan.blocked_by_suppression.append(email)
                    scoped = [s for s in own if s.remote_list == list_map[crm_list]
                              and s.connection_id == ctx.connection_id]
                    _leave_out(plan, member, email, SUPPRESSED,
                               _suppression_text(ctx, scoped[0]) if scoped else "unsubscribed from this list",
                               [crm_list])
                    continue
                if link is not None and link.email != email and ctx.caps.member_key == "email":
                    if not _removed_already(link):      # (a record kept unsubscribed: removed already)
                        _delete(ctx, plan, link, "e-mail changed")
                    link = None
                if status == "unsubscribed" and link is None:
                    # never create a record for someone who refused or unsubscribed
                    _leave_out(plan, member, email, *_why_suppressed(ctx, member, _standing(member, own)),
                               [crm_list])
                    continue
                _upsert(ctx, plan, MemberKey(member_id, crm_list), email, payload, (list_map[crm_list],),
                        link, status, resubscribe or (status == "active" and (
                            over_echo(member, email, list_map[crm_list])
                            or list_map[crm_list] in superseded_lists
                            # a newer consent lifted the address's unsubscribes from other lists: a
                            # new record here is made on it (not withheld for them)
                            or (bool(superseded_lists) and (link is None or not link.remote_id)))))
            for crm_list, stale in links.items():
                if crm_list not in wanted and stale.status_pushed != LEFT_KEPT:
                    _delete(ctx, plan, stale, "left the list")
            _settle(ctx, plan, member, links)
        else:
            link = links.get("")
            if link is not None and link.email != email and ctx.caps.member_key == "email":
                if not _removed_already(link):          # (a record kept unsubscribed: removed already)
                    _delete(ctx, plan, link, "e-mail changed")
                link = None
            if not wanted:
                # Leaving the last list is a removal, as never having been in one (once: a link
                # kept as "unsubscribed, no lists" is that removal already done).
                if link is not None and not _removed_already(link):
                    _delete(ctx, plan, link, LEFT_EVERY_LIST)
                _settle(ctx, plan, member, links)
                continue
            _upsert(ctx, plan, MemberKey(member_id), email, payload, tuple(list_map[c] for c in wanted), link,
                    status, resubscribe or (status == "active" and over_echo(member, email, "")))
            _settle(ctx, plan, member, links)
    _hand_over(ctx, plan, owner)
    plan.unchanged_payloads.clear()
    plan.member_lists = {m.id: tuple(sorted(m.list_ids)) for m in members.values()}
    for bad, bad_email, why, code in plan.invalid:
        lists = (bad.crm_list_id,) if bad.crm_list_id else plan.member_lists.get(bad.crm_member_id, ())
        plan.left_out.append(LeftOut(bad.crm_member_id, bad_email, lists, REJECTED, f"{code}: {why}"))
    for waits, waits_email, why in plan.pending:
        plan.left_out.append(LeftOut(waits.crm_member_id, waits_email, (waits.crm_list_id,), WAITS_FOR_LIST, why))
    return plan


def _whole_contact(ctx: RunContext) -> bool:
    """A removal deletes the whole contact (one contact per address, in lists: Postacell)."""
    return ctx.caps.membership_model == "contact" and ctx.caps.member_removal == "delete"


def _rewrite_holder(ctx: RunContext, plan: Chunk, holder: str, item: MemberDelete) -> bool:
    """Where a removal deletes the whole contact and the contact's holder now (``_hand_over``)
    is in fewer of its lists than the removal names: the holder's push writes the contact again
    with the holder's own lists, taking it out of the removal's others, and the removal is handed
    over (True). Deleting it instead took a live member's contact away, and nothing wrote it again
    until that member's CRM row changed. False where the holder has no push to widen (its link
    unconfirmed, or the holder not planned to the end): the removal goes as before."""
    key = MemberKey(holder)
    link = plan.links.get(key)
    if link is None or not link.remote_id or link.remote_id != item.remote_id:
        return False
    for n, upsert in enumerate(plan.upserts):
        if upsert.key == key:
            if upsert.remote_id != link.remote_id:
                return False
            plan.upserts[n] = dataclasses.replace(upsert, previous_remote_lists=tuple(dict.fromkeys(
                (*upsert.previous_remote_lists, *item.remote_lists))))
            return True
    unchanged = plan.unchanged_payloads.get(key)
    if unchanged is None:
        return False
    payload, remote_lists, status = unchanged
    plan.upserts.append(MemberUpsert(key, link.email, payload, remote_lists,
                                     tuple(dict.fromkeys((*link.remote_lists, *item.remote_lists))),
                                     link.remote_id))
    plan.hashes[key] = payload_hash(payload, remote_lists)
    plan.statuses[key] = status
    plan.unchanged.pop(key, None)
    ctx.counts["members_unchanged"] -= 1
    if ctx.plan.itemized:
        ctx.plan.members_update.append(link.email)
    return True


def _hand_over(ctx: RunContext, plan: Chunk, owner: dict[str, str]) -> None:
    """At a provider keyed by e-mail, a removal of a record that another member's link holds
    now (the same address in the same list, or the same contact where a removal deletes the
    whole contact) must not be sent: the record is that member's, and removing it takes a live
    member out of its list. It comes from an earlier run whose removal failed (its answers lost,
    a RetriableError reject) while the address's new owner pushed it and took the record over;
    its reject's retry, planned alone, deleted the owner's record (found by make fuzz
    FUZZ_SEED=20261207 FUZZ_EXAMPLES=20 FUZZ_STEPS=40 -k mailmasterplus). Holders of a removed
    address are planned with it (``_load_chunk``); only the address's owner in the CRM's current
    state counts as a holder (not a claimant refused for it, whose links at the owner's address
    are left as they are), and not when its own link is removed in this plan too. Where only
    some of the record's lists are shared (a record per list, or a removal that takes a contact
    out of lists), the removal keeps the others; where none are left it is handed over
    (``handed_over``): its link goes without a request. Where a removal deletes the whole contact,
    it is handed over when the holder's link names every list the removal's does, or when the
    holder's push can write the contact again with the holder's lists only (``_rewrite_holder``;
    else it goes as before). At a provider that cannot remove, another member's push at that
    address in this plan counts too."""
    if ctx.caps.member_key != "email" or not plan.deletes:
        return
    removed = {(item.key, normalize_email(item.email)) for item in plan.deletes}
    holders: dict[str, list[tuple[str, tuple[str, ...]]]] = defaultdict(list)     # member, its lists there
    for key, link in plan.links.items():
        address = normalize_email(link.email or "")
        if address and (key, address) not in removed and not _removed_already(link) \
                and owner.get(address) == key.crm_member_id:
            holders[address].append((key.crm_member_id, tuple(link.remote_lists)))
    if ctx.caps.member_removal == "none":
        # A removal there is a person's task in the panel: asked for a record another member's
        # push in this plan writes to, it would take that member out of the list.
        for upsert in plan.upserts:
            holders[normalize_email(upsert.email)].append((upsert.key.crm_member_id, upsert.remote_lists))
    if not holders:
        return
    whole_contact = _whole_contact(ctx)
    kept: list[MemberDelete] = []
    for item in plan.deletes:
        others = [(member_id, lists) for member_id, lists in holders.get(normalize_email(item.email), ())
                  if member_id != item.key.crm_member_id]
        shared = {remote for _, lists in others for remote in lists}
        if not others or (item.remote_lists and shared.isdisjoint(item.remote_lists)) or (
                whole_contact and item.remote_lists and not shared.issuperset(item.remote_lists)
                and not _rewrite_holder(ctx, plan, others[0][0], item)):
            kept.append(item)
            continue
        left = () if whole_contact or not item.remote_lists else tuple(
            r for r in item.remote_lists if r not in shared)
        if left:
            kept.append(dataclasses.replace(item, remote_lists=left))
            continue
        kept.append(item)
        plan.handed_over[item.key] = others[0][0]
        if ctx.plan.itemized:
            entry = f"{item.email} ({item.reason})"
            if entry in ctx.plan.members_remove:
                ctx.plan.members_remove.remove(entry)
    plan.deletes = kept


def _settle(ctx: RunContext, plan: Chunk, member: CrmMember, links: dict[str, LinkRow]) -> None:
    """The member is planned to the end: once its push is done without a refusal, its links
    hold the digest of the CRM state it was planned from (the next backfill skips it)."""
    digest = source_digest(member.row_digest, member.list_ids, ctx.salt)
    plan.sources[member.id] = digest
    plan.settled += [(member.id, link.id, digest) for link in links.values() if link.source_digest != digest]


def _in_a_list(ctx: RunContext, member: CrmMember) -> bool:
    """Is the member in a live CRM list (one it must receive in, or wait for)?"""
    return any(ctx.crm_lists is None or crm_list in ctx.crm_lists for crm_list in member.list_ids)


def _owners(ids: Sequence[str], members: dict[str, CrmMember], emails: dict[str, str],
            links_of: dict[str, dict[str, LinkRow]], in_a_list: Callable[[CrmMember], bool]) -> dict[str, str]:
    """e-mail -> the one CRM member it belongs to, from the CRM's CURRENT state: among the live
    members that now have it, those in a list first (a member in no list needs no address: a
    holder that left every list must not keep it from one that joined), then the one whose link
    already holds it, then the first by id."""
    claims: dict[str, list[str]] = defaultdict(list)
    for member_id in ids:
        member = members.get(member_id)
        if member is not None and not member.deleted and emails.get(member_id):
            claims[emails[member_id]].append(member_id)
    owner = {}
    for email, claimants in claims.items():
        owner[email] = min(claimants, key=lambda m: (
            not in_a_list(members[m]), not any(link.email == email for link in links_of.get(m, {}).values()), m))
    return owner


def _upsert(ctx: RunContext, plan: Chunk, key: MemberKey, email: str, payload: dict[str, Any],
            remote_lists: tuple[str, ...], link: LinkRow | None, status: str, resubscribe: bool) -> None:
    digest = payload_hash(payload, remote_lists)
    lost = link is not None and bool(ctx.lost_remote.intersection(link.remote_lists))
    if link is not None and link.email == email and link.payload_hash == digest and not lost \
            and link.email not in ctx.dry_cleared:
        ctx.counts["members_unchanged"] += 1
        plan.unchanged[key] = email
        if ctx.caps.member_key == "email" and _whole_contact(ctx):
            plan.unchanged_payloads[key] = (payload, remote_lists, status)
        return
    if link is not None and link.email == email and link.remote_id and ctx.gone_remote and not lost \
            and set(remote_lists) <= set(link.remote_lists) \
            and set(link.remote_lists) - set(remote_lists) <= ctx.gone_remote \
            and payload_hash(payload, link.remote_lists) == link.payload_hash:
        # Only lists that went away at the provider differ: the provider already agrees.
        ctx.counts["members_rehashed"] += 1
        plan.rehash.append({"id": link.id, "remote_lists": list(remote_lists), "payload_hash": digest})
        return
    # A provider keyed by our member id keeps the contact through an address change (an update).
    known = link is not None and (link.email == email or ctx.caps.member_key == "crm_id")
    # Making active again a contact that only OUR push had unsubscribed is not a re-subscribe
    # over the recipient's will: the provider's "unsubscribed" is our own echo.
    resubscribe = resubscribe or (status == "active" and known and link is not None
                                  and link.status_pushed == "unsubscribed")
    if ctx.plan.itemized:
        (ctx.plan.members_update if known and link and link.remote_id else ctx.plan.members_add).append(email)
    plan.hashes[key] = digest
    plan.statuses[key] = status
    # A provisional link (no remote id, no hash): an earlier run sent this member and crashed before
    # the answer was committed, so the provider may hold it already (the client looks it up).
    unconfirmed = known and link is not None and not link.remote_id and not link.payload_hash
    remote_id = link.remote_id if known and link else None
    if lost and remote_id is not None and ctx.caps.member_key != "crm_id":
        # Its list went missing at the provider (deleted in the panel, or the provider lost its
        # state): the contact may be gone, and a provider that restarted empty hands its id to
        # someone else. Found again by its address, never written by that id.
        remote_id, unconfirmed = None, True
    plan.upserts.append(MemberUpsert(key, email, payload, remote_lists,
                                     tuple(r for r in link.remote_lists if r not in ctx.lost_remote)
                                     if known and link else (),
                                     remote_id, resubscribe=resubscribe, unconfirmed=unconfirmed))


def _leave_old_addresses(ctx: RunContext, plan: Chunk, links: dict[str, LinkRow], email: str | None,
                         suppressions: dict[str, list[Suppression]]) -> None:
    """A member that is not pushed at its CRM address (another member owns it, or it is suppressed
    there) must not keep receiving at an address its links hold and the CRM no longer gives it:
    those links are removed, as an e-mail change removes them (a record the provider holds
    suppressed there receives nothing and is left as it is). ``email``: the address whose links
    stay (None: none stays, the member's own records at the owner's address included)."""
    for link in links.values():
        if link.email == email or _removed_already(link) or any(
                s.connection_id == ctx.connection_id and (not s.remote_list or s.remote_list in link.remote_lists)
                for s in suppressions.get(link.email, ())):
            continue
        _delete(ctx, plan, link, ADDRESS_LEFT)


def _removed_already(link: LinkRow) -> bool:
    """A link that is a removal done: a record the provider keeps unsubscribed (LEFT_KEPT), or our
    own "unsubscribed, no lists" at a provider that can only unsubscribe."""
    return link.status_pushed == LEFT_KEPT or (link.status_pushed == "unsubscribed" and not link.remote_lists)


def _delete(ctx: RunContext, plan: Chunk, link: LinkRow, why: str) -> None:
    if ctx.plan.itemized:
        ctx.plan.members_remove.append(f"{link.email} ({why})")
    remote_id = link.remote_id
    if ctx.caps.member_key != "crm_id" and ctx.lost_remote.intersection(link.remote_lists):
        remote_id = None    # (see _upsert: an id from before the provider lost the list; found by address)
    plan.deletes.append(MemberDelete(MemberKey(link.crm_member_id, link.crm_list_id), link.email,
                                     remote_id, tuple(link.remote_lists), reason=why))
