"""initial schema: auth, connections, keypackages, queues

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-22 01:10:20.997870
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "account_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=320), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("processed_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "as_keys",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.Column("private_key", sa.LargeBinary(), nullable=False),
        sa.Column("certificate", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "auth_challenges",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("client_uuid", sa.String(length=36), nullable=True),
        sa.Column("nonce", sa.LargeBinary(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_auth_challenges_expiry", "auth_challenges", ["expires_at"], unique=False)
    op.create_table(
        "connections",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("requester_uuid", sa.String(length=36), nullable=False),
        sa.Column("responder_uuid", sa.String(length=36), nullable=False),
        sa.Column("requester_id", sa.String(length=320), nullable=False),
        sa.Column("responder_id", sa.String(length=320), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("claim_used", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_connections_requester",
        "connections",
        ["requester_uuid", "responder_uuid"],
        unique=False,
    )
    op.create_index("ix_connections_responder", "connections", ["responder_uuid"], unique=False)
    op.create_table(
        "direct_cursors",
        sa.Column("user_uuid", sa.String(length=36), nullable=False),
        sa.Column("client_uuid", sa.String(length=36), nullable=False),
        sa.Column("acked_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("user_uuid", "client_uuid"),
    )
    op.create_table(
        "direct_queues",
        sa.Column("user_uuid", sa.String(length=36), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("user_uuid"),
    )
    op.create_table(
        "key_packages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("client_uuid", sa.String(length=36), nullable=False),
        sa.Column("user_uuid", sa.String(length=36), nullable=False),
        sa.Column("cipher_suite", sa.Integer(), nullable=False),
        sa.Column("last_resort", sa.Boolean(), nullable=False),
        sa.Column("init_key_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("not_after", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("init_key_hash"),
    )
    op.create_index(
        "ix_key_packages_pick",
        "key_packages",
        ["client_uuid", "cipher_suite", "last_resort", "id"],
        unique=False,
    )
    op.create_index("ix_key_packages_user", "key_packages", ["user_uuid"], unique=False)
    op.create_table(
        "queues",
        sa.Column("id", sa.LargeBinary(length=16), nullable=False),
        sa.Column("owner_client_uuid", sa.String(length=36), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_queues_owner", "queues", ["owner_client_uuid"], unique=False)
    op.create_table(
        "registration_tokens",
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("uses_left", sa.Integer(), nullable=True),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_table(
        "retired_names",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("retired_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "users",
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=128), nullable=True),
        sa.Column("discoverable", sa.Boolean(), nullable=False),
        sa.Column("password_hash", sa.String(length=256), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("uuid"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "client_requests",
        sa.Column("id_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("public_id", sa.String(length=36), nullable=False),
        sa.Column("user_uuid", sa.String(length=36), nullable=False),
        sa.Column("cipher_suite", sa.Integer(), nullable=False),
        sa.Column("signature_key", sa.LargeBinary(), nullable=False),
        sa.Column("device_name", sa.String(length=128), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("client_uuid", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["user_uuid"], ["users.uuid"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id_hash"),
        sa.UniqueConstraint("public_id"),
    )
    op.create_index("ix_client_requests_user", "client_requests", ["user_uuid"], unique=False)
    op.create_table(
        "clients",
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("user_uuid", sa.String(length=36), nullable=False),
        sa.Column("cipher_suite", sa.Integer(), nullable=False),
        sa.Column("signature_key", sa.LargeBinary(), nullable=False),
        sa.Column("certificate", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["user_uuid"], ["users.uuid"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("uuid"),
        sa.UniqueConstraint("signature_key"),
    )
    op.create_index("ix_clients_user", "clients", ["user_uuid"], unique=False)
    op.create_table(
        "direct_messages",
        sa.Column("user_uuid", sa.String(length=36), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["user_uuid"], ["direct_queues.user_uuid"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_uuid", "seq"),
    )
    op.create_table(
        "queue_messages",
        sa.Column("queue_id", sa.LargeBinary(length=16), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.String(length=128), nullable=True),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["queue_id"], ["queues.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("queue_id", "seq"),
        sa.UniqueConstraint("queue_id", "message_id", name="uq_queue_messages_message_id"),
    )
    op.create_table(
        "auth_tokens",
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("client_uuid", sa.String(length=36), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["client_uuid"], ["clients.uuid"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_index("ix_auth_tokens_client", "auth_tokens", ["client_uuid"], unique=False)
    op.create_index("ix_auth_tokens_expiry", "auth_tokens", ["expires_at"], unique=False)


def downgrade() -> None:
    # Forward-only migrations: restore from a backup instead.
    raise NotImplementedError("Roost migrations are forward-only")
