"""auth: single-use realtime tickets (WebSocket upgrades without an Authorization header)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-10 09:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "realtime_tickets",
        sa.Column("ticket_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("client_uuid", sa.String(length=36), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["token_hash"], ["auth_tokens.token_hash"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("ticket_hash"),
    )
    op.create_index("ix_realtime_tickets_token", "realtime_tickets", ["token_hash"], unique=False)
    op.create_index("ix_realtime_tickets_client", "realtime_tickets", ["client_uuid"], unique=False)
    op.create_index("ix_realtime_tickets_expiry", "realtime_tickets", ["expires_at"], unique=False)


def downgrade() -> None:
    # Forward-only migrations: restore from a backup instead.
    raise NotImplementedError("Roost migrations are forward-only")
