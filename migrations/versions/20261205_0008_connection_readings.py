"""connections.readings: the reading each endpoint's answers came in

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 06:00:00

``readings``: endpoint -> the reading (``sync.providers.readings``) its answers last came in, as
``connection test`` and the runs saw them (JSON text). NULL on every existing connection until
its next connection test or run reads something.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import sync.models

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.add_column(sa.Column("readings", sync.models.JSONText(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.drop_column("readings")
