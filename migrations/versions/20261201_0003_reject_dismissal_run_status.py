"""who dismissed a reject, when and why; run outcomes up to 32 characters

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 12:00:00

- ``rejects.dismissed_at``, ``dismissed_by``, ``dismiss_reason``: ``crm-esp-sync rejects dismiss``
  records an operator's decision that a rejected row needs no more attempts. Dismissal sets
  ``resolved_at`` too, so the engine, which retries only open rejects, leaves it alone.
- ``sync_runs.status`` grows from 16 to 32 characters: ``succeeded_with_rejects`` (a run whose
  only rejects were already open before it) has 22.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import sync.models

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rejects") as batch:
        batch.add_column(sa.Column("dismissed_at", sync.models.UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("dismissed_by", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("dismiss_reason", sa.Text(), nullable=True))
    with op.batch_alter_table("sync_runs") as batch:
        batch.alter_column("status", existing_type=sa.String(length=16), type_=sa.String(length=32),
                           existing_nullable=False)


def downgrade() -> None:
    # The old width does not hold it; before 0003 a run with any open reject ended partial.
    op.execute("UPDATE sync_runs SET status = 'partial' WHERE status = 'succeeded_with_rejects'")
    with op.batch_alter_table("sync_runs") as batch:
        batch.alter_column("status", existing_type=sa.String(length=32), type_=sa.String(length=16),
                           existing_nullable=False)
    with op.batch_alter_table("rejects") as batch:
        batch.drop_column("dismiss_reason")
        batch.drop_column("dismissed_by")
        batch.drop_column("dismissed_at")
