"""list_replans: the re-plan of a list's members kept through a run that dies

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 17:15:00

A run that creates, re-creates (deleted in the provider's panel, or the provider lost its state),
re-maps or drops a list link plans that list's members again. That re-plan lived only in the run:
one that died after re-creating a list and before pushing its members left the list empty for
good (their links' hashes were unchanged). ``list_replans`` rows are written with the list link
and deleted by the transaction that commits a completed members phase (sync/engine/lists.py).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

import sync.models

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _key() -> sa.types.TypeEngine[str]:
    return (sa.String(length=128)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mysql"))


def upgrade() -> None:
    op.create_table(
        "list_replans",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column("crm_list_id", _key(), nullable=False),
        sa.Column("remote_list_id", _key(), nullable=True),
        sa.Column("lost", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", sync.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["connection_id"], ["connections.id"],
                                name=op.f("fk_list_replans_connection_id_connections"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_list_replans")),
    )
    op.create_index(op.f("ix_list_replans_connection_id"), "list_replans", ["connection_id"], unique=False)


def downgrade() -> None:
    op.drop_table("list_replans")     # its index with it (MariaDB refuses to drop an index its foreign key uses)
