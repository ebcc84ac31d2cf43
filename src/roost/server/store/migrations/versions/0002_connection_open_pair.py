"""connections.open_pair: at most one open connection per pair of users, enforced by the database

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 01:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("connections", sa.Column("open_pair", sa.String(length=73), nullable=True))
    # Backfill the rows that are open today (same key as the service computes).
    op.execute(
        "UPDATE connections SET open_pair = CASE WHEN requester_uuid < responder_uuid "
        "THEN requester_uuid || '|' || responder_uuid "
        "ELSE responder_uuid || '|' || requester_uuid END "
        "WHERE state IN ('opening', 'pending', 'accepted')"
    )
    op.create_index("uq_connections_open_pair", "connections", ["open_pair"], unique=True)


def downgrade() -> None:
    # Forward-only migrations: restore from a backup instead.
    raise NotImplementedError("Roost migrations are forward-only")
