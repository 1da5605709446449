"""member_links.source_digest: what the CRM said when a link was last reconciled

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 17:20:00

``source_digest``: a digest of the CRM member row and live list ids (and of the connection's
settings) that the link's member was last planned from and pushed with. A backfill compares it
with the CRM's current digest and plans only the members that differ. NULL on every existing
link: the first backfill after the upgrade plans every member once and fills it in.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("member_links") as batch:
        batch.add_column(sa.Column("source_digest", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("member_links") as batch:
        batch.drop_column("source_digest")
