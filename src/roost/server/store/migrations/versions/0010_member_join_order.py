"""ds_members.joined_seq: the group_seq of the commit that added a leaf (admin succession)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 05:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Leaves that exist already get 0: among them the lowest leaf index counts as the
    # longest-standing (the creator holds leaf 0).
    op.add_column(
        "ds_members",
        sa.Column("joined_seq", sa.BigInteger(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    # Forward-only migrations: restore from a backup instead.
    raise NotImplementedError("Roost migrations are forward-only")
