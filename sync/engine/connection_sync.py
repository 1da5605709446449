"""One connection's run: pull statuses, lists, members, reports (DESIGN.md, "The data flow").

The provider is seen only through ``sync.providers.base.Provider`` and its Capabilities.

Crash safety: before a batch goes out, a *provisional* link (no remote id, empty hash) is
committed for every member the provider has not seen from us yet, so a crash after the
provider accepted but before our commit still leaves a trace to delete or update later.
After the batch, ONE transaction commits the links, the rejects, the statuses, the lease
renewal and the watermark. Creates never touch an existing contact (the provider's client
creates with its "do not update" switch and reads an existing contact back before changing it).

Consent: a push never turns a contact the provider holds as unsubscribed, bounced or complained
back to active. Statuses are pulled first; right before a batch updates existing contacts, the
provider is asked for suppressions that appeared since (``refresh_statuses``) and the batch is
planned again if there are any; a contact the provider reports as suppressed while we push is
recorded, not overwritten. Our own "unsubscribed" push, pulled back, is an echo, not a suppression.

The phases live in modules of their own, each given the run's shared state (``RunContext``,
sync/engine/context.py) explicitly; ``ConnectionSync`` builds that state and calls them in order
(sync/engine/runner.py times each phase):

- statuses.py: pull statuses and İYS consents (2, 2b), and the suppressions planning reads;
- guard.py: the mass-delete guard, before anything is sent;
- lists.py: created and mapped lists (3);
- push.py: members (4/5), planned by plan.py from the members compare.py selects, pushed a
  window at a time (the next window planned while one is in flight, and on PostgreSQL sent while
  the one before it commits; windows committed in order), with rejects.py and the KVKK erasure
  audit (erasures.py);
- reports.py and activity.py: campaign reports and conversations (6).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from sync.crm import CrmReader
from sync.engine import guard, lists, push, statuses
from sync.engine.activity import pull_activity
from sync.engine.context import (
    ANALYZE_MIN_ROWS,
    CONSENTS_STREAM,
    IN_CHUNK,
    LOADED_TABLES,
    MEMBER_LINKS,
    MEMBER_STATUSES,
    MEMBERS_STREAM,
    MEMBERS_XID_STREAM,
    PLAN_VERSION,
    STATUSES_STREAM,
    SUPPRESSIONS_SEEN_MARGIN,
    SUPPRESSIONS_SEEN_STREAM,
    VANISHED_STREAM,
    DryPulled,
    LeftOut,
    LinkRow,
    Plan,
    RunContext,
    RunOptions,
)
from sync.engine.erasures import ERASED
from sync.engine.guard import MASS_DELETE_MIN_BASE, MAX_DELETE_MEMBERS, MAX_DELETE_PERCENT, MassDeleteRefused
from sync.engine.lists import LIST_NAME_MAX
from sync.engine.plan import LEFT_EVERY_LIST, LEFT_KEPT
from sync.engine.push import ANSWER_COLUMNS, LINK_KEY, LINK_MATCH
from sync.engine.rejects import (
    EVERY_RUN,
    LIST_PENDING,
    REJECT_BACKOFF_MAX,
    REMOVAL_UNSUPPORTED,
    TOO_LONG,
    VALIDATION,
)
from sync.engine.reports import pull_reports
from sync.engine.statuses import BLOCKING, IYS_RET, STATUS_CHUNK
from sync.fields import FieldMap
from sync.providers.base import Provider

#: The names this module has always offered (the runner, the CLI, ops, tests and bench import them).
__all__ = [
    "ANALYZE_MIN_ROWS",
    "ANSWER_COLUMNS",
    "BLOCKING",
    "CONSENTS_STREAM",
    "ERASED",
    "EVERY_RUN",
    "IN_CHUNK",
    "IYS_RET",
    "LEFT_EVERY_LIST",
    "LEFT_KEPT",
    "LINK_KEY",
    "LINK_MATCH",
    "LIST_NAME_MAX",
    "LIST_PENDING",
    "LOADED_TABLES",
    "MASS_DELETE_MIN_BASE",
    "MAX_DELETE_MEMBERS",
    "MAX_DELETE_PERCENT",
    "MEMBERS_STREAM",
    "MEMBERS_XID_STREAM",
    "MEMBER_LINKS",
    "MEMBER_STATUSES",
    "PLAN_VERSION",
    "REJECT_BACKOFF_MAX",
    "REMOVAL_UNSUPPORTED",
    "STATUSES_STREAM",
    "STATUS_CHUNK",
    "SUPPRESSIONS_SEEN_MARGIN",
    "SUPPRESSIONS_SEEN_STREAM",
    "TOO_LONG",
    "VALIDATION",
    "VANISHED_STREAM",
    "ConnectionSync",
    "DryPulled",
    "LeftOut",
    "LinkRow",
    "MassDeleteRefused",
    "Plan",
    "RunContext",
    "RunOptions",
]


class ConnectionSync:
    """Runs the phases of one connection. Built by the runner, called once."""

    def __init__(self, *, sessions: sessionmaker[Session], crm: CrmReader, provider: Provider,
                 connection_id: int, tenant_id: int, run_id: int, lease_owner: str, lease_seconds: int,
                 lookback: dt.timedelta, until: dt.datetime, options: RunOptions,
                 report_refresh: dt.timedelta = dt.timedelta(hours=6),
                 vanished_check: dt.timedelta | None = dt.timedelta(hours=20),
                 mass_delete_limits: tuple[int, float] = (MAX_DELETE_MEMBERS, MAX_DELETE_PERCENT),
                 fields: tuple[FieldMap, ...] = (), plan_salt: str = "",
                 on_progress: Callable[[str, int, int], None] | None = None,
                 dry_pulled: DryPulled | None = None) -> None:
        self.ctx = RunContext(
            sessions=sessions, crm=crm, provider=provider, connection_id=connection_id, tenant_id=tenant_id,
            run_id=run_id, lease_owner=lease_owner, lease_seconds=lease_seconds, lookback=lookback, until=until,
            options=options, report_refresh=report_refresh, vanished_check=vanished_check,
            mass_delete_limits=mass_delete_limits, fields=fields, on_progress=on_progress, plan_salt=plan_salt,
            dry_pulled=dry_pulled if dry_pulled is not None else DryPulled())

    @property
    def counts(self) -> Counter[str]:
        return self.ctx.counts

    @property
    def plan(self) -> Plan:
        return self.ctx.plan

    # --- 2. pull statuses, 2b. İYS consents (sync/engine/statuses.py) --------------------

    async def pull_statuses(self) -> None:
        await statuses.pull_statuses(self.ctx)

    async def pull_consents(self) -> None:
        await statuses.pull_consents(self.ctx)

    # --- the mass-delete guard (sync/engine/guard.py) ------------------------------------

    def check_mass_delete(self) -> None:
        guard.check_mass_delete(self.ctx)

    # --- 3. lists (sync/engine/lists.py) -------------------------------------------------

    async def sync_lists(self) -> dict[str, str]:
        return await lists.sync_lists(self.ctx)

    # --- 4/5. members, with a checkpoint per batch (sync/engine/push.py) -----------------

    async def push_members(self, list_map: dict[str, str]) -> None:
        await push.push_members(self.ctx, list_map)

    # --- 6. reports (sync/engine/reports.py) ---------------------------------------------

    async def pull_reports(self) -> None:
        ctx = self.ctx
        if ctx.caps.pulls_activity:     # conversations and messages by phone (sync/engine/activity.py)
            await pull_activity(ctx.provider, sessions=ctx.sessions, crm=ctx.crm, connection_id=ctx.connection_id,
                                run_id=ctx.run_id, until=ctx.until, lookback=ctx.lookback,
                                backfill=ctx.options.backfill, counts=ctx.counts, checkpoint=ctx.checkpoint)
        if ctx.report_api is None:
            return
        await pull_reports(ctx.report_api, ctx.sessions, ctx.connection_id, until=ctx.until,
                           refresh=ctx.report_refresh, counts=ctx.counts, checkpoint=ctx.checkpoint)
