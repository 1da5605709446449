"""erasures: an index on (connection_id, remote_id); member_links.unconfirmed_emails

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 03:20:00

A status pull reads the ``erasures`` audit by remote id: at a provider that removes by
unsubscribing, the record of a member erased in the CRM stays, unsubscribed by us, and its link is
gone with the member; its "unsubscribed" pulled back is our own echo by the audit
(sync/engine/statuses.py, ``_erased_by_unsubscribing``). The read runs only for unsubscribes that
are neither stored nor a link's echo, but the audit grows with every erasure.

``member_links.unconfirmed_emails``: at a provider keyed by our member id an update moves the
member's one record to its new address. The link named only the address before the push until
the answer was recorded, so after a crash in between a removal the provider cannot make (Postatr)
asked a person to remove the old address while the record held the new one (sync/engine/push.py,
``_write_provisional_links``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import sync.models

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("member_links") as batch:
        batch.add_column(sa.Column("unconfirmed_emails", sync.models.JSONText(), nullable=True))
    op.create_index(op.f("ix_erasures_connection_id_remote_id"), "erasures", ["connection_id", "remote_id"],
                    unique=False)


def downgrade() -> None:
    with op.batch_alter_table("member_links") as batch:
        batch.drop_column("unconfirmed_emails")
    mysql = op.get_bind().dialect.name in ("mysql", "mariadb")
    if mysql:
        # InnoDB let the new index stand for the foreign key's own and refuses to drop it: the key is
        # dropped and made again (with an index of its own, as the table had before).
        op.drop_constraint(op.f("fk_erasures_connection_id_connections"), "erasures", type_="foreignkey")
    op.drop_index(op.f("ix_erasures_connection_id_remote_id"), table_name="erasures")
    if mysql:
        op.create_foreign_key(op.f("fk_erasures_connection_id_connections"), "erasures", "connections",
                              ["connection_id"], ["id"], ondelete="SET NULL")
