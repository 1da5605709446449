"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23 17:12:12.512728
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

import sync.models

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "integrator_credentials",
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("credentials_encrypted", sa.Text(), nullable=False),
        sa.Column("updated_at", sync.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("provider", name=op.f("pk_integrator_credentials")),
    )
    op.create_table(
        "tenants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column(
            "crm_tenant_id",
            sa.String(length=128)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mysql"),
            nullable=False,
        ),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("created_at", sync.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
        sa.UniqueConstraint("crm_tenant_id", name=op.f("uq_tenants_crm_tenant_id")),
        sa.UniqueConstraint("slug", name=op.f("uq_tenants_slug")),
    )
    op.create_table(
        "connections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("credentials_encrypted", sa.Text(), nullable=False),
        sa.Column("settings", sync.models.JSONText(), nullable=False),
        sa.Column("base_url", sa.String(length=512), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("schedule", sa.String(length=64), nullable=True),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", sync.models.UTCDateTime(), nullable=True),
        sa.Column("created_at", sync.models.UTCDateTime(), nullable=False),
        sa.Column("updated_at", sync.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_connections_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connections")),
        sa.UniqueConstraint("tenant_id", "provider", name=op.f("uq_connections_tenant_id_provider")),
    )
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column(
            "remote_id",
            sa.String(length=128)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mysql"),
            nullable=False,
        ),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("sent_at", sync.models.UTCDateTime(), nullable=True),
        sa.Column("remote_updated_at", sync.models.UTCDateTime(), nullable=True),
        sa.Column("final", sa.Boolean(), nullable=False),
        sa.Column("results_pulled_at", sync.models.UTCDateTime(), nullable=True),
        sa.Column("created_at", sync.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name=op.f("fk_campaigns_connection_id_connections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
        sa.UniqueConstraint("connection_id", "remote_id", name=op.f("uq_campaigns_connection_id_remote_id")),
    )
    op.create_table(
        "iys_consents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column(
            "recipient",
            sa.String(length=254)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=254), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=254), "mysql"),
            nullable=False,
        ),
        sa.Column("consent_type", sa.String(length=8), nullable=False),
        sa.Column("recipient_type", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=4), nullable=False),
        sa.Column("consent_date", sync.models.UTCDateTime(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=True),
        sa.Column("pulled_at", sync.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name=op.f("fk_iys_consents_connection_id_connections"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_iys_consents_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_iys_consents")),
        sa.UniqueConstraint(
            "connection_id",
            "recipient",
            "consent_type",
            "recipient_type",
            name=op.f("uq_iys_consents_connection_id_recipient_consent_type_recipient_type"),
        ),
    )
    op.create_table(
        "list_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column(
            "crm_list_id",
            sa.String(length=128)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mysql"),
            nullable=False,
        ),
        sa.Column(
            "remote_list_id",
            sa.String(length=128)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mysql"),
            nullable=False,
        ),
        sa.Column("name_pushed", sa.String(length=255), nullable=False),
        sa.Column("pushed_at", sync.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name=op.f("fk_list_links_connection_id_connections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_list_links")),
        sa.UniqueConstraint("connection_id", "crm_list_id", name=op.f("uq_list_links_connection_id_crm_list_id")),
    )
    op.create_table(
        "member_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column(
            "crm_member_id",
            sa.String(length=128)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mysql"),
            nullable=False,
        ),
        sa.Column(
            "crm_list_id",
            sa.String(length=128)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mysql"),
            nullable=False,
        ),
        sa.Column(
            "email",
            sa.String(length=254)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=254), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=254), "mysql"),
            nullable=False,
        ),
        sa.Column(
            "remote_id",
            sa.String(length=128)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mysql"),
            nullable=True,
        ),
        sa.Column("remote_lists", sync.models.JSONText(), nullable=False),
        sa.Column("payload_hash", sa.String(length=64), nullable=False),
        sa.Column("pushed_at", sync.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name=op.f("fk_member_links_connection_id_connections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_links")),
        sa.UniqueConstraint(
            "connection_id",
            "crm_member_id",
            "crm_list_id",
            name=op.f("uq_member_links_connection_id_crm_member_id_crm_list_id"),
        ),
    )
    with op.batch_alter_table("member_links", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_member_links_email"), ["email"], unique=False)

    op.create_table(
        "member_statuses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column(
            "email",
            sa.String(length=254)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=254), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=254), "mysql"),
            nullable=False,
        ),
        sa.Column(
            "remote_id",
            sa.String(length=128)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mysql"),
            nullable=True,
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("occurred_at", sync.models.UTCDateTime(), nullable=False),
        sa.Column("pulled_at", sync.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name=op.f("fk_member_statuses_connection_id_connections"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_member_statuses_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_statuses")),
        sa.UniqueConstraint("connection_id", "email", name=op.f("uq_member_statuses_connection_id_email")),
    )
    with op.batch_alter_table("member_statuses", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_member_statuses_tenant_id_email"), ["tenant_id", "email"], unique=False)

    op.create_table(
        "sync_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_uid", sa.String(length=36), nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("worker", sa.String(length=128), nullable=False),
        sa.Column("counts", sync.models.JSONText(), nullable=False),
        sa.Column("timings", sync.models.JSONText(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sync.models.UTCDateTime(), nullable=False),
        sa.Column("finished_at", sync.models.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name=op.f("fk_sync_runs_connection_id_connections"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_runs")),
        sa.UniqueConstraint("run_uid", name=op.f("uq_sync_runs_run_uid")),
    )
    with op.batch_alter_table("sync_runs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sync_runs_connection_id_started_at"), ["connection_id", "started_at"], unique=False
        )

    op.create_table(
        "wapcrm_conversations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column(
            "remote_id",
            sa.String(length=128)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mysql"),
            nullable=False,
        ),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("instance_id", sa.String(length=128), nullable=True),
        sa.Column("user_id", sa.String(length=128), nullable=True),
        sa.Column("started_at", sync.models.UTCDateTime(), nullable=True),
        sa.Column("ended_at", sync.models.UTCDateTime(), nullable=True),
        sa.Column("result", sa.String(length=255), nullable=True),
        sa.Column("details", sync.models.JSONText(), nullable=False),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name=op.f("fk_wapcrm_conversations_connection_id_connections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wapcrm_conversations")),
        sa.UniqueConstraint("connection_id", "remote_id", name=op.f("uq_wapcrm_conversations_connection_id_remote_id")),
    )
    op.create_table(
        "wapcrm_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column(
            "remote_id",
            sa.String(length=128)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mysql"),
            nullable=False,
        ),
        sa.Column("phone", sa.String(length=32), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=True),
        sa.Column("message_type", sa.String(length=16), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("sent_at", sync.models.UTCDateTime(), nullable=True),
        sa.Column("details", sync.models.JSONText(), nullable=False),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name=op.f("fk_wapcrm_messages_connection_id_connections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wapcrm_messages")),
        sa.UniqueConstraint("connection_id", "remote_id", name=op.f("uq_wapcrm_messages_connection_id_remote_id")),
    )
    with op.batch_alter_table("wapcrm_messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_wapcrm_messages_connection_id_phone"), ["connection_id", "phone"], unique=False
        )

    op.create_table(
        "watermarks",
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column("stream", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.Column("updated_at", sync.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name=op.f("fk_watermarks_connection_id_connections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("connection_id", "stream", name=op.f("pk_watermarks")),
    )
    op.create_table(
        "campaign_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column(
            "email",
            sa.String(length=254)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=254), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=254), "mysql"),
            nullable=False,
        ),
        sa.Column("sent_at", sync.models.UTCDateTime(), nullable=True),
        sa.Column("opened_at", sync.models.UTCDateTime(), nullable=True),
        sa.Column("open_count", sa.Integer(), nullable=False),
        sa.Column("clicked_at", sync.models.UTCDateTime(), nullable=True),
        sa.Column("clicked_link", sa.String(length=1024), nullable=True),
        sa.Column("bounce_type", sa.String(length=8), nullable=True),
        sa.Column("bounce_reason", sa.String(length=1024), nullable=True),
        sa.Column("unsubscribed_at", sync.models.UTCDateTime(), nullable=True),
        sa.Column("complained_at", sync.models.UTCDateTime(), nullable=True),
        sa.Column("updated_at", sync.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_campaign_results_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_results")),
        sa.UniqueConstraint("campaign_id", "email", name=op.f("uq_campaign_results_campaign_id_email")),
    )
    op.create_table(
        "rejects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column(
            "crm_member_id",
            sa.String(length=128)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mysql"),
            nullable=False,
        ),
        sa.Column(
            "crm_list_id",
            sa.String(length=128)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mysql"),
            nullable=False,
        ),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("provider_code", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("first_seen_at", sync.models.UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", sync.models.UTCDateTime(), nullable=False),
        sa.Column("resolved_at", sync.models.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["connection_id"], ["connections.id"], name=op.f("fk_rejects_connection_id_connections"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["sync_runs.id"], name=op.f("fk_rejects_run_id_sync_runs"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rejects")),
        sa.UniqueConstraint(
            "connection_id",
            "crm_member_id",
            "crm_list_id",
            name=op.f("uq_rejects_connection_id_crm_member_id_crm_list_id"),
        ),
    )
    with op.batch_alter_table("rejects", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_rejects_connection_id_resolved_at"), ["connection_id", "resolved_at"], unique=False
        )


def downgrade() -> None:
    op.drop_table("rejects")
    op.drop_table("campaign_results")
    op.drop_table("watermarks")
    op.drop_table("wapcrm_messages")
    op.drop_table("wapcrm_conversations")
    op.drop_table("sync_runs")
    op.drop_table("member_statuses")
    op.drop_table("member_links")
    op.drop_table("list_links")
    op.drop_table("iys_consents")
    op.drop_table("campaigns")
    op.drop_table("connections")
    op.drop_table("tenants")
    op.drop_table("integrator_credentials")
