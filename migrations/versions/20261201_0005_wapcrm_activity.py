"""WapCRM activity: reference data, member phones, conversations and messages

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 11:00:00

WapCRM's users, instances and call results (a two-level tree) are refreshed into tables of their
own each run. ``wapcrm_member_phones`` holds each CRM member's normalised phone (how activity is
linked to members) and whether its message list is due. ``wapcrm_conversations`` and
``wapcrm_messages`` of revision 0001 were never written (no WapCRM code existed): they are
dropped and made again in the shapes the document gives (direction, durations, transfer, result
and sub-result, user and list name; messages with ME/CUSTOMER and a key hashed from their fields).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

import sync.models

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _key(length: int) -> sa.types.TypeEngine[str]:
    return (sa.String(length=length)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=length), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=length), "mysql"))


def _connection(table: str) -> list[sa.SchemaItem]:
    return [
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["connection_id"], ["connections.id"],
                                name=op.f(f"fk_{table}_connection_id_connections"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
    ]


def _unique_remote(table: str) -> sa.UniqueConstraint:
    return sa.UniqueConstraint("connection_id", "remote_id", name=op.f(f"uq_{table}_connection_id_remote_id"))


def upgrade() -> None:
    op.drop_table("wapcrm_messages")
    op.drop_table("wapcrm_conversations")
    op.create_table(
        "wapcrm_users", *_connection("wapcrm_users"),
        sa.Column("remote_id", _key(128), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("details", sync.models.JSONText(), nullable=False),
        sa.Column("refreshed_at", sync.models.UTCDateTime(), nullable=False),
        _unique_remote("wapcrm_users"),
    )
    op.create_table(
        "wapcrm_instances", *_connection("wapcrm_instances"),
        sa.Column("remote_id", _key(128), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("details", sync.models.JSONText(), nullable=False),
        sa.Column("refreshed_at", sync.models.UTCDateTime(), nullable=False),
        _unique_remote("wapcrm_instances"),
    )
    op.create_table(
        "wapcrm_call_results", *_connection("wapcrm_call_results"),
        sa.Column("remote_id", _key(128), nullable=False),
        sa.Column("parent_remote_id", _key(128), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("refreshed_at", sync.models.UTCDateTime(), nullable=False),
        _unique_remote("wapcrm_call_results"),
    )
    op.create_table(
        "wapcrm_member_phones", *_connection("wapcrm_member_phones"),
        sa.Column("crm_member_id", _key(128), nullable=False),
        sa.Column("phone", _key(16), nullable=False),
        sa.Column("messages_due", sa.Boolean(), nullable=False),
        sa.Column("messages_pulled_at", sync.models.UTCDateTime(), nullable=True),
        sa.Column("updated_at", sync.models.UTCDateTime(), nullable=False),
        sa.UniqueConstraint("connection_id", "crm_member_id",
                            name=op.f("uq_wapcrm_member_phones_connection_id_crm_member_id")),
    )
    op.create_index("ix_wapcrm_member_phones_connection_id_phone", "wapcrm_member_phones", ["connection_id", "phone"])
    op.create_index("ix_wapcrm_member_phones_connection_id_messages_due", "wapcrm_member_phones",
                    ["connection_id", "messages_due"])
    op.create_table(
        "wapcrm_conversations", *_connection("wapcrm_conversations"),
        sa.Column("remote_id", _key(128), nullable=False),
        sa.Column("occurred_at", sync.models.UTCDateTime(), nullable=True),
        sa.Column("phone", _key(16), nullable=True),
        sa.Column("direction", sa.Integer(), nullable=True),
        sa.Column("ring_seconds", sa.Integer(), nullable=True),
        sa.Column("call_seconds", sa.Integer(), nullable=True),
        sa.Column("transferred", sa.Boolean(), nullable=False),
        sa.Column("transferred_to", sa.String(length=255), nullable=True),
        sa.Column("result", sa.String(length=255), nullable=True),
        sa.Column("sub_result", sa.String(length=255), nullable=True),
        sa.Column("user_name", sa.String(length=255), nullable=True),
        sa.Column("list_name", sa.String(length=255), nullable=True),
        sa.Column("details", sync.models.JSONText(), nullable=False),
        sa.Column("pulled_at", sync.models.UTCDateTime(), nullable=False),
        _unique_remote("wapcrm_conversations"),
    )
    op.create_index("ix_wapcrm_conversations_connection_id_phone", "wapcrm_conversations", ["connection_id", "phone"])
    op.create_index("ix_wapcrm_conversations_connection_id_occurred_at", "wapcrm_conversations",
                    ["connection_id", "occurred_at"])
    op.create_table(
        "wapcrm_messages", *_connection("wapcrm_messages"),
        sa.Column("remote_id", _key(64), nullable=False),
        sa.Column("phone", _key(16), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=True),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("sent_at", sync.models.UTCDateTime(), nullable=True),
        sa.Column("pulled_at", sync.models.UTCDateTime(), nullable=False),
        _unique_remote("wapcrm_messages"),
    )
    op.create_index("ix_wapcrm_messages_connection_id_phone", "wapcrm_messages", ["connection_id", "phone"])


def downgrade() -> None:
    for table in ("wapcrm_messages", "wapcrm_conversations", "wapcrm_member_phones", "wapcrm_call_results",
                  "wapcrm_instances", "wapcrm_users"):
        op.drop_table(table)
    # The shapes of revision 0001.
    op.create_table(
        "wapcrm_conversations", *_connection("wapcrm_conversations"),
        sa.Column("remote_id", _key(128), nullable=False),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("instance_id", sa.String(length=128), nullable=True),
        sa.Column("user_id", sa.String(length=128), nullable=True),
        sa.Column("started_at", sync.models.UTCDateTime(), nullable=True),
        sa.Column("ended_at", sync.models.UTCDateTime(), nullable=True),
        sa.Column("result", sa.String(length=255), nullable=True),
        sa.Column("details", sync.models.JSONText(), nullable=False),
        _unique_remote("wapcrm_conversations"),
    )
    op.create_table(
        "wapcrm_messages", *_connection("wapcrm_messages"),
        sa.Column("remote_id", _key(128), nullable=False),
        sa.Column("phone", sa.String(length=32), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=True),
        sa.Column("message_type", sa.String(length=16), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("sent_at", sync.models.UTCDateTime(), nullable=True),
        sa.Column("details", sync.models.JSONText(), nullable=False),
        _unique_remote("wapcrm_messages"),
    )
    op.create_index("ix_wapcrm_messages_connection_id_phone", "wapcrm_messages", ["connection_id", "phone"])
