"""statuses scoped to one remote list

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 08:00:00

``member_statuses.remote_list_id``: "" for a status of the whole provider account (as before), or
the remote list a per-list provider (MailMasterPlus) reported it for. A per-list unsubscribe blocks
that list only; the unique key becomes (connection, e-mail, remote list). An index on İYS consents
by (tenant, recipient): a pulled RET is looked up for every member pushed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

KEY = (sa.String(length=128)
       .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mariadb")
       .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mysql"))


def upgrade() -> None:
    with op.batch_alter_table("member_statuses") as batch:
        batch.add_column(sa.Column("remote_list_id", KEY, nullable=False, server_default=""))
        # The new key first: MariaDB's foreign key on connection_id needs an index that starts with it.
        batch.create_unique_constraint("uq_member_statuses_connection_id_email_remote_list_id",
                                       ["connection_id", "email", "remote_list_id"])
        batch.drop_constraint("uq_member_statuses_connection_id_email", type_="unique")
    op.create_index("ix_iys_consents_tenant_id_recipient", "iys_consents", ["tenant_id", "recipient"])


def downgrade() -> None:
    if op.get_bind().dialect.name in ("mysql", "mariadb"):
        # MariaDB's foreign key on tenant_id now uses this index: drop the key, then the index,
        # and add the key again (it brings back an index of its own, as in revision 0001).
        op.drop_constraint("fk_iys_consents_tenant_id_tenants", "iys_consents", type_="foreignkey")
        op.drop_index("ix_iys_consents_tenant_id_recipient", table_name="iys_consents")
        op.create_foreign_key("fk_iys_consents_tenant_id_tenants", "iys_consents", "tenants", ["tenant_id"], ["id"],
                              ondelete="CASCADE")
    else:
        op.drop_index("ix_iys_consents_tenant_id_recipient", table_name="iys_consents")
    with op.batch_alter_table("member_statuses") as batch:
        batch.create_unique_constraint("uq_member_statuses_connection_id_email", ["connection_id", "email"])
        batch.drop_constraint("uq_member_statuses_connection_id_email_remote_list_id", type_="unique")
        batch.drop_column("remote_list_id")
