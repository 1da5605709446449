"""KVKK erasure audit

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 12:00:00

``erasures``: one row per erasure sent to a provider (or found impossible there): tenant,
connection (kept as NULL when the connection is removed later), provider, CRM member, the
address's SHA-256, the remote id, what the provider did and its answer, when.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

import sync.models

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

KEY = (sa.String(length=128)
       .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mariadb")
       .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mysql"))


def upgrade() -> None:
    op.create_table(
        "erasures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=True),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("crm_member_id", KEY, nullable=False),
        sa.Column("crm_list_id", KEY, nullable=False),
        sa.Column("email_sha256", sa.String(length=64), nullable=False),
        sa.Column("remote_id", KEY, nullable=True),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("sent_at", sync.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["connection_id"], ["connections.id"],
                                name=op.f("fk_erasures_connection_id_connections"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["run_id"], ["sync_runs.id"], name=op.f("fk_erasures_run_id_sync_runs"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_erasures_tenant_id_tenants"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_erasures")),
    )
    op.create_index(op.f("ix_erasures_tenant_id_sent_at"), "erasures", ["tenant_id", "sent_at"])


def downgrade() -> None:
    if op.get_bind().dialect.name in ("mysql", "mariadb"):
        # MariaDB's foreign key on tenant_id uses this index: the table goes with both.
        op.drop_table("erasures")
        return
    op.drop_index(op.f("ix_erasures_tenant_id_sent_at"), table_name="erasures")
    op.drop_table("erasures")
