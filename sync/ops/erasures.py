"""The KVKK erasure audit, read without SQL: what was erased where, when, with which answer."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from sync import registry
from sync.emails import email_digest, normalize_email
from sync.errors import InvalidInputError
from sync.models import Erasure, Tenant
from sync.ops.status import iso


def parse_since(text: str | None) -> dt.datetime | None:
    """``--since``: a date (YYYY-MM-DD, from its midnight UTC) or an ISO time; one line if neither."""
    if text is None:
        return None
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInputError(f"--since {text!r}: expected a date (2026-11-30) or an ISO time "
                                "(2026-11-30T08:00:00Z)") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def erasure_report(session: Session, *, tenant: str | None = None, since: dt.datetime | None = None,
                   email: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Audit rows, oldest first: tenant, provider, member, address digest, what the provider did."""
    query = sa.select(Erasure, Tenant.slug).join(Tenant, Tenant.id == Erasure.tenant_id)
    if tenant is not None:
        query = query.where(Erasure.tenant_id == registry.get_tenant(session, tenant).id)
    if since is not None:
        query = query.where(Erasure.sent_at >= since)
    if email is not None:
        if "@" not in normalize_email(email):
            raise InvalidInputError(f"--email {email!r} is not an e-mail address")
        query = query.where(Erasure.email_sha256 == email_digest(email))
    query = query.order_by(Erasure.sent_at, Erasure.id)
    if limit is not None:
        query = query.limit(limit)
    return [{"id": row.id, "tenant": slug, "provider": row.provider, "connection_id": row.connection_id,
             "run_id": row.run_id, "crm_member_id": row.crm_member_id, "crm_list_id": row.crm_list_id or None,
             "email_sha256": row.email_sha256, "remote_id": row.remote_id, "action": row.action,
             "answer": row.answer or None, "sent_at": iso(row.sent_at)}
            for row, slug in session.execute(query)]


def summary(rows: list[dict[str, Any]]) -> str:
    """One line: how many erasures, of how many members, by action."""
    actions = Counter(row["action"] for row in rows)
    members = {(row["tenant"], row["crm_member_id"]) for row in rows}
    shown = ", ".join(f"{count} {action}" for action, count in sorted(actions.items()))
    return f"{len(rows)} erasure(s) of {len(members)} member(s)" + (f": {shown}" if shown else "")
