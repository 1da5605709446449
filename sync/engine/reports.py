"""Step 6 of a connection's run: campaigns and per-recipient results, pulled into local tables.

Campaigns already known are read in one query (not one per campaign); a final campaign is never
asked about again, and one asked recently whose provider timestamp has not moved is spared an
export. Results arrive page by page (``ReportPull.pull_campaign_results``) and each page is merged
into ``campaign_results`` in its own transaction, so a campaign is never held in memory whole. A
campaign's ``results_pulled_at`` and ``final`` move only with its last page: a run that stops half
way through a campaign reads it again next time (the merge is idempotent: dates are kept, counts
take the larger value).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session, sessionmaker

from sync.errors import FatalError, ProviderError
from sync.models import EMAIL, Campaign, CampaignResult, MemberLink, utcnow
from sync.providers.base import RecipientResult, RemoteCampaign, ReportContext, ReportPull

log = structlog.get_logger(__name__)

_DATES = ("sent_at", "opened_at", "clicked_at", "unsubscribed_at", "complained_at", "bounce_type")


@dataclass(frozen=True)
class _Known:
    id: int
    final: bool
    results_pulled_at: dt.datetime | None
    remote_updated_at: dt.datetime | None


def member_id_chunks(sessions: sessionmaker[Session], connection_id: int) -> Callable[[int], Iterator[list[str]]]:
    """The connection's linked CRM member ids in sorted chunks (keyset pages, one short read each)."""

    def chunks(size: int) -> Iterator[list[str]]:
        after = ""
        while True:
            with sessions() as session:
                page = list(session.scalars(
                    sa.select(MemberLink.crm_member_id).distinct()
                    .where(MemberLink.connection_id == connection_id, MemberLink.crm_member_id > after)
                    .order_by(MemberLink.crm_member_id).limit(size)))
            if not page:
                return
            yield page
            after = page[-1]

    return chunks


async def pull_reports(api: ReportPull, sessions: sessionmaker[Session], connection_id: int, *,
                       until: dt.datetime, refresh: dt.timedelta, counts: Counter[str],
                       checkpoint: Callable[[Session], None]) -> None:
    """Campaigns, and per-recipient results of those not final yet. One campaign's failure is
    logged and retried next run; it does not stop the others."""
    with sessions() as session:
        known = {row.remote_id: _Known(row.id, row.final, row.results_pulled_at, row.remote_updated_at)
                 for row in session.execute(sa.select(Campaign.remote_id, Campaign.id, Campaign.final,
                                                      Campaign.results_pulled_at, Campaign.remote_updated_at)
                                            .where(Campaign.connection_id == connection_id))}
    context = ReportContext(member_ids=member_id_chunks(sessions, connection_id))
    async for campaign in api.pull_campaigns():
        seen = known.get(campaign.remote_id)
        if seen is not None and seen.final:
            continue
        if (seen is not None and seen.results_pulled_at is not None and not campaign.final
                and seen.remote_updated_at == campaign.updated_at and until - seen.results_pulled_at < refresh):
            continue    # asked recently and unchanged since: spare the provider an export
        campaign_id = _record_campaign(sessions, connection_id, campaign)
        counts["campaigns_pulled"] += 1
        try:
            stored = await _store_results(api, sessions, campaign, campaign_id, context, counts)
        except FatalError:
            raise
        except (ProviderError, ValueError) as exc:
            counts["campaigns_failed"] += 1
            log.warning("campaign.report_failed", campaign=campaign.remote_id, reason=str(exc))
            continue
        if not stored:
            return      # the connection was removed while we fetched
        with sessions.begin() as session:
            row = session.get(Campaign, campaign_id)
            if row is None:
                return
            row.results_pulled_at = utcnow()
            row.final = campaign.final
            checkpoint(session)


def _record_campaign(sessions: sessionmaker[Session], connection_id: int, campaign: RemoteCampaign) -> int:
    with sessions.begin() as session:
        row = session.scalar(sa.select(Campaign).where(Campaign.connection_id == connection_id,
                                                       Campaign.remote_id == campaign.remote_id))
        if row is None:
            row = Campaign(connection_id=connection_id, remote_id=campaign.remote_id, name=campaign.name[:512],
                           status=campaign.status)
            session.add(row)
        row.name, row.status = campaign.name[:512], campaign.status
        row.sent_at, row.remote_updated_at = campaign.sent_at, campaign.updated_at
        session.flush()
        return row.id


async def _store_results(api: ReportPull, sessions: sessionmaker[Session], campaign: RemoteCampaign,
                         campaign_id: int, context: ReportContext, counts: Counter[str]) -> bool:
    """Merge every page of the campaign's results; False when the campaign row is gone."""
    async for page in api.pull_campaign_results(campaign, context):
        with sessions.begin() as session:
            if session.get(Campaign, campaign_id) is None:
                return False
            _merge_page(session, campaign_id, page)
        counts["campaign_results"] += len(page)
    return True


def _merge_page(session: Session, campaign_id: int, page: list[RecipientResult]) -> None:
    by_email: dict[str, RecipientResult] = {}
    for result in page:
        by_email[result.email[:EMAIL]] = result
    existing = {row.email: row for row in session.scalars(
        sa.select(CampaignResult).where(CampaignResult.campaign_id == campaign_id,
                                        CampaignResult.email.in_(list(by_email))))}
    for email, result in by_email.items():
        target = existing.get(email)
        if target is None:
            target = CampaignResult(campaign_id=campaign_id, email=email, open_count=0)
            session.add(target)
        for name in _DATES:
            value = getattr(result, name)
            if value is not None:
                setattr(target, name, value)
        if result.bounce_reason:
            target.bounce_reason = result.bounce_reason[:1024]
        if result.clicked_link:
            target.clicked_link = result.clicked_link[:1024]
        target.open_count = max(target.open_count or 0, result.open_count)
