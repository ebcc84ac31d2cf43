"""federation: signing keys, replay nonces, the outbound queue, inbound marks; remote queues of
DS members

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 04:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fed_keys",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("private_key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("public_key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("retired_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("key_id"),
    )
    op.create_table(
        "fed_nonces",
        sa.Column("origin", sa.String(length=253), nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("origin", "nonce"),
    )
    op.create_index("ix_fed_nonces_expires", "fed_nonces", ["expires_at"], unique=False)
    op.create_table(
        "fed_outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("destination", sa.String(length=253), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,  # ids never reused (receivers' high-water marks)
    )
    op.create_index("ix_fed_outbox_destination", "fed_outbox", ["destination", "id"], unique=False)
    op.create_table(
        "fed_destinations",
        sa.Column("destination", sa.String(length=253), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("last_success_at", sa.BigInteger(), nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("destination"),
    )
    op.create_table(
        "fed_inbox_marks",
        sa.Column("origin", sa.String(length=253), nullable=False),
        sa.Column("last_outbox_id", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("origin"),
    )
    with op.batch_alter_table("ds_members") as batch:
        batch.add_column(sa.Column("queue_domain", sa.String(length=253), nullable=True))


def downgrade() -> None:
    # Forward-only migrations: restore from a backup instead.
    raise NotImplementedError("forward-only migration")
