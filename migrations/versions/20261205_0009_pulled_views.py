"""pulled_* views over the pulled tables, and export_cursors

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 12:00:00

Five read-only views, the documented interface for bringing pulled data back into a CRM
(docs/pulled-data.md): ``pulled_suppressions`` (member_statuses), ``pulled_iys_consents``,
``pulled_campaign_results`` (campaign_results with their campaign), ``pulled_wapcrm_conversations``
and ``pulled_wapcrm_messages`` (linked to CRM member ids by phone). Each names its tenant (slug and
CRM tenant id) and provider instead of internal ids, and none has a credential or settings column.
Their columns are pinned by tests/integration/test_pulled_data.py: change one here only in a new
revision, with the docs table.

``export_cursors``: the named positions of ``suppressions export --cursor`` and ``reports export
--cursor`` (sync/ops/pulled.py).

The SQL is plain and the same on SQLite, PostgreSQL and MariaDB. It is written out here, not built
from the models, so that this revision keeps meaning what it meant when later ones change them.

**For later revisions.** A revision that drops, renames or retypes a column these views read, or
that makes SQLite recreate one of their tables (``batch_alter_table`` beyond an added column),
must drop the views first and create them again after: PostgreSQL refuses to drop a column a view
uses, SQLite to rename the recreated table under a view, and MariaDB leaves the view broken.
This module's ``drop_views()`` and ``create_views()`` are reachable from a later revision as
``context.script.get_revision("0009").module`` (``from alembic import context``); a revision that
changes a view gives its own SQL and changes the pinned columns in the test and the docs.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import sync.models

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

VIEWS: dict[str, str] = {
    "pulled_suppressions": """
        SELECT ms.id AS id, t.slug AS tenant, t.crm_tenant_id AS crm_tenant_id, c.provider AS provider,
               ms.email AS email,
               NULLIF(ms.remote_list_id, '') AS remote_list_id,
               (SELECT MIN(ll.crm_list_id) FROM list_links ll
                 WHERE ll.connection_id = ms.connection_id AND ll.remote_list_id = ms.remote_list_id) AS crm_list_id,
               (SELECT MIN(ll.name_pushed) FROM list_links ll
                 WHERE ll.connection_id = ms.connection_id AND ll.remote_list_id = ms.remote_list_id) AS list_name,
               ms.remote_id AS remote_id, ms.status AS status,
               ms.occurred_at AS occurred_at, ms.pulled_at AS pulled_at
          FROM member_statuses ms
          JOIN connections c ON c.id = ms.connection_id
          JOIN tenants t ON t.id = c.tenant_id""",
    "pulled_iys_consents": """
        SELECT ic.id AS id, t.slug AS tenant, t.crm_tenant_id AS crm_tenant_id, c.provider AS provider,
               ic.recipient AS recipient, ic.consent_type AS consent_type, ic.recipient_type AS recipient_type,
               ic.status AS status, ic.consent_date AS consent_date, ic.source AS source,
               ic.pulled_at AS pulled_at
          FROM iys_consents ic
          JOIN connections c ON c.id = ic.connection_id
          JOIN tenants t ON t.id = c.tenant_id""",
    "pulled_campaign_results": """
        SELECT cr.id AS id, t.slug AS tenant, t.crm_tenant_id AS crm_tenant_id, c.provider AS provider,
               cp.remote_id AS campaign_remote_id, cp.name AS campaign_name, cp.status AS campaign_status,
               cp.sent_at AS campaign_sent_at, cp.final AS campaign_final,
               cr.email AS email, cr.sent_at AS sent_at, cr.opened_at AS opened_at, cr.open_count AS open_count,
               cr.clicked_at AS clicked_at, cr.clicked_link AS clicked_link,
               cr.bounce_type AS bounce_type, cr.bounce_reason AS bounce_reason,
               cr.unsubscribed_at AS unsubscribed_at, cr.complained_at AS complained_at,
               cr.updated_at AS updated_at
          FROM campaign_results cr
          JOIN campaigns cp ON cp.id = cr.campaign_id
          JOIN connections c ON c.id = cp.connection_id
          JOIN tenants t ON t.id = c.tenant_id""",
    "pulled_wapcrm_conversations": """
        SELECT wc.id AS id, t.slug AS tenant, t.crm_tenant_id AS crm_tenant_id, c.provider AS provider,
               wc.remote_id AS remote_id, mp.crm_member_id AS crm_member_id, wc.phone AS phone,
               wc.occurred_at AS occurred_at, wc.direction AS direction,
               wc.ring_seconds AS ring_seconds, wc.call_seconds AS call_seconds,
               wc.transferred AS transferred, wc.transferred_to AS transferred_to,
               wc.result AS result, wc.sub_result AS sub_result,
               wc.user_name AS user_name, wc.list_name AS list_name, wc.pulled_at AS pulled_at
          FROM wapcrm_conversations wc
          JOIN connections c ON c.id = wc.connection_id
          JOIN tenants t ON t.id = c.tenant_id
          LEFT JOIN wapcrm_member_phones mp ON mp.connection_id = wc.connection_id AND mp.phone = wc.phone""",
    "pulled_wapcrm_messages": """
        SELECT wm.id AS id, t.slug AS tenant, t.crm_tenant_id AS crm_tenant_id, c.provider AS provider,
               wm.remote_id AS remote_id, mp.crm_member_id AS crm_member_id, wm.phone AS phone,
               wm.channel AS channel, wm.direction AS direction, wm.text AS text,
               wm.sent_at AS sent_at, wm.pulled_at AS pulled_at
          FROM wapcrm_messages wm
          JOIN connections c ON c.id = wm.connection_id
          JOIN tenants t ON t.id = c.tenant_id
          LEFT JOIN wapcrm_member_phones mp ON mp.connection_id = wm.connection_id AND mp.phone = wm.phone""",
}


def create_views() -> None:
    for name, select in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {select.strip()}")


def drop_views() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")


def upgrade() -> None:
    op.create_table(
        "export_cursors",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("stream", sa.String(length=32), nullable=False),
        sa.Column("filters", sync.models.JSONText(), nullable=False),
        sa.Column("position_at", sync.models.UTCDateTime(), nullable=True),
        sa.Column("position_id", sa.Integer(), nullable=True),
        sa.Column("rows_exported", sa.Integer(), nullable=False),
        sa.Column("created_at", sync.models.UTCDateTime(), nullable=False),
        sa.Column("updated_at", sync.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", "stream", name=op.f("pk_export_cursors")),
    )
    create_views()


def downgrade() -> None:
    drop_views()
    op.drop_table("export_cursors")
