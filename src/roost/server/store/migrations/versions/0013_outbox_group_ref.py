"""fed_outbox.ref: the group a DS item entry belongs to (commits wait for the items in transit)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-13 09:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("fed_outbox", sa.Column("ref", sa.LargeBinary(length=255), nullable=True))


def downgrade() -> None:
    # Forward-only migrations: restore from a backup instead.
    raise NotImplementedError("Roost migrations are forward-only")
