"""The KVKK erasure audit: one ``erasures`` row per erasure of a member deleted in the CRM that a
push sent to the provider (or found impossible there), written with the push's outcome."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy.orm import Session

from sync.emails import email_digest
from sync.engine.context import RunContext
from sync.engine.rejects import REMOVAL_UNSUPPORTED
from sync.models import Erasure, Reject
from sync.providers.base import MemberDelete, MemberKey, PushOutcome

#: A member deleted in the CRM (soft or hard delete): a KVKK erasure, audited (``erasures``).
ERASED = "deleted in the CRM"


def audit_erasures(ctx: RunContext, session: Session, deletes: Sequence[MemberDelete],
                   outcomes: Sequence[PushOutcome], open_rejects: dict[MemberKey, Reject],
                   handed_over: Mapping[MemberKey, str] | None = None) -> None:
    """One ``erasures`` row per KVKK erasure sent (or found impossible) at this provider, in the
    transaction that records its outcome. An erasure the provider cannot do is recorded once,
    not again on every run while its reject stays open. One not sent because the record is
    another member's now (``handed_over``: removal key -> that member) names the member."""
    asked = {item.key: item for item in deletes if item.reason == ERASED}
    for outcome in outcomes:
        item = asked.get(outcome.key)
        if item is None or outcome.suppressed is not None:
            continue
        rejected = outcome.rejected
        if rejected is not None and rejected.provider_code == REMOVAL_UNSUPPORTED:
            known = open_rejects.get(outcome.key)
            if known is not None and known.resolved_at is None and known.provider_code == REMOVAL_UNSUPPORTED:
                continue
            action = "not_supported"
        else:
            action = outcome.action if rejected is None else "failed"
        holder = (handed_over or {}).get(outcome.key) if rejected is None else None
        answer = "" if rejected is None else rejected.reason[:2000]
        if holder is not None:
            answer = f"not sent: the record at this address is CRM member {holder}'s now"[:2000]
        session.add(Erasure(tenant_id=ctx.tenant_id, connection_id=ctx.connection_id, run_id=ctx.run_id,
                            provider=ctx.provider.name, crm_member_id=item.key.crm_member_id,
                            crm_list_id=item.key.crm_list_id, email_sha256=email_digest(item.email),
                            remote_id=item.remote_id, action=action[:16],
                            answer=answer))
        ctx.counts["erasures_recorded"] += 1
