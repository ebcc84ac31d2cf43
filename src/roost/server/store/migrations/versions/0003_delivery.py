"""delivery: groups, members (leaf -> client, queue), roles, held items, send idempotency, keys

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 01:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

GID = 255


def _group_fk() -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["group_id"], ["ds_groups.id"], ondelete="CASCADE")


def upgrade() -> None:
    op.create_table(
        "ds_groups",
        sa.Column("id", sa.LargeBinary(length=GID), nullable=False),
        sa.Column("cipher_suite", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("rev", sa.BigInteger(), nullable=False),
        sa.Column("external_join", sa.Boolean(), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.Column("group_info", sa.LargeBinary(), nullable=False),
        sa.Column("last_commit_hash", sa.LargeBinary(length=32), nullable=True),
        sa.Column("last_commit_seq", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "ds_keys",
        sa.Column("cipher_suite", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("private_key", sa.LargeBinary(), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("certificate", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("cipher_suite"),
    )
    op.create_table(
        "ds_members",
        sa.Column("group_id", sa.LargeBinary(length=GID), nullable=False),
        sa.Column("leaf_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("client_uuid", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=320), nullable=False),
        sa.Column("queue_id", sa.LargeBinary(length=16), nullable=True),
        sa.Column("policy", sa.String(length=64), nullable=True),
        sa.Column("gone", sa.Boolean(), nullable=False),
        _group_fk(),
        sa.PrimaryKeyConstraint("group_id", "leaf_index"),
    )
    op.create_index("ix_ds_members_client", "ds_members", ["client_uuid"], unique=False)
    op.create_index("ix_ds_members_user", "ds_members", ["user_id"], unique=False)
    op.create_table(
        "ds_roles",
        sa.Column("group_id", sa.LargeBinary(length=GID), nullable=False),
        sa.Column("user_id", sa.String(length=320), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        _group_fk(),
        sa.PrimaryKeyConstraint("group_id", "user_id"),
    )
    op.create_table(
        "ds_held",
        sa.Column("group_id", sa.LargeBinary(length=GID), nullable=False),
        sa.Column("leaf_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("group_seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("item_type", sa.Integer(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        _group_fk(),
        sa.PrimaryKeyConstraint("group_id", "leaf_index", "group_seq"),
    )
    op.create_table(
        "ds_sends",
        sa.Column("group_id", sa.LargeBinary(length=GID), nullable=False),
        sa.Column("client_uuid", sa.String(length=36), nullable=False),
        sa.Column("message_id", sa.String(length=128), nullable=False),
        sa.Column("group_seq", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        _group_fk(),
        sa.PrimaryKeyConstraint("group_id", "client_uuid", "message_id"),
    )
    op.create_index("ix_ds_sends_created", "ds_sends", ["created_at"], unique=False)


def downgrade() -> None:
    # Forward-only migrations: restore from a backup instead.
    raise NotImplementedError("Roost migrations are forward-only")
