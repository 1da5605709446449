"""adopted lists and the status last pushed

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 08:00:00

- ``list_links.adopted``: the remote list existed before (made in the provider's panel) and was
  adopted by name; the daemon never deletes such a list.
- ``member_links.status_pushed``: the status we last sent ("active" / "unsubscribed"), so that our
  own "unsubscribed" push pulled back is recognised as an echo, not as the recipient's unsubscribe.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("list_links") as batch:
        batch.add_column(sa.Column("adopted", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("member_links") as batch:
        batch.add_column(sa.Column("status_pushed", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("member_links") as batch:
        batch.drop_column("status_pushed")
    with op.batch_alter_table("list_links") as batch:
        batch.drop_column("adopted")
