"""push: per-client push registrations (Web Push / APNs / FCM) and the server's VAPID key

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 02:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "push_registrations",
        sa.Column("client_uuid", sa.String(length=36), nullable=False),
        sa.Column("user_uuid", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("p256dh", sa.LargeBinary(length=65), nullable=True),
        sa.Column("auth", sa.LargeBinary(length=16), nullable=True),
        sa.Column("default_policy", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("client_uuid"),
    )
    op.create_index("ix_push_registrations_user", "push_registrations", ["user_uuid"], unique=False)
    op.create_table(
        "push_vapid_key",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("private_key", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    # Forward-only migrations: restore from a backup instead.
    raise NotImplementedError("Roost migrations are forward-only")
