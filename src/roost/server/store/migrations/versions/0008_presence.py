"""notify: cross-process presence (which `roost serve` process holds a client's WebSocket)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22 04:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notify_presence",
        sa.Column("client_uuid", sa.String(length=36), nullable=False),
        sa.Column("process_id", sa.String(length=64), nullable=False),
        sa.Column("expires_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("client_uuid", "process_id"),
    )
    op.create_index("ix_notify_presence_process", "notify_presence", ["process_id"], unique=False)
    op.create_index(
        "ix_notify_presence_expires", "notify_presence", ["expires_at_ms"], unique=False
    )


def downgrade() -> None:
    # Forward-only migrations: restore from a backup instead.
    raise NotImplementedError("Roost migrations are forward-only")
