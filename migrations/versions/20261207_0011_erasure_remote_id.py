"""erasures: an index on (connection_id, remote_id)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 03:20:00

A status pull reads the ``erasures`` audit by remote id: at a provider that removes by
unsubscribing, the record of a member erased in the CRM stays, unsubscribed by us, and its link is
gone with the member; its "unsubscribed" pulled back is our own echo by the audit
(sync/engine/statuses.py, ``_erased_by_unsubscribing``). The read runs only for unsubscribes that
are neither stored nor a link's echo, but the audit grows with every erasure.
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f("ix_erasures_connection_id_remote_id"), "erasures", ["connection_id", "remote_id"],
                    unique=False)


def downgrade() -> None:
    mysql = op.get_bind().dialect.name in ("mysql", "mariadb")
    if mysql:
        # InnoDB let the new index stand for the foreign key's own and refuses to drop it: the key is
        # dropped and made again (with an index of its own, as the table had before).
        op.drop_constraint(op.f("fk_erasures_connection_id_connections"), "erasures", type_="foreignkey")
    op.drop_index(op.f("ix_erasures_connection_id_remote_id"), table_name="erasures")
    if mysql:
        op.create_foreign_key(op.f("fk_erasures_connection_id_connections"), "erasures", "connections",
                              ["connection_id"], ["id"], ondelete="SET NULL")
