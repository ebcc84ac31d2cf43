"""Tables owned by the Authentication Service (no other module reads them)."""

import sqlalchemy as sa

from ..store.metadata import metadata

users = sa.Table(
    "users",
    metadata,
    sa.Column("uuid", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("display_name", sa.String(128), nullable=True),
    sa.Column("discoverable", sa.Boolean, nullable=False, default=False),
    sa.Column("password_hash", sa.String(256), nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    # set by `roost admin users suspend`: the AS refuses tokens and requests while it is set
    sa.Column("suspended_at", sa.BigInteger, nullable=True),
)

# Names of deleted accounts: a user id is immutable, so it is never handed to someone else.
retired_names = sa.Table(
    "retired_names",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("retired_at", sa.BigInteger, nullable=False),
)

clients = sa.Table(
    "clients",
    metadata,
    sa.Column("uuid", sa.String(36), primary_key=True),
    sa.Column(
        "user_uuid", sa.String(36), sa.ForeignKey("users.uuid", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("cipher_suite", sa.Integer, nullable=False),
    sa.Column("signature_key", sa.LargeBinary, nullable=False, unique=True),
    sa.Column("certificate", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Index("ix_clients_user", "user_uuid"),
)

auth_challenges = sa.Table(
    "auth_challenges",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("client_uuid", sa.String(36), nullable=True),  # null: unknown client id
    sa.Column("nonce", sa.LargeBinary, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
    sa.Index("ix_auth_challenges_expiry", "expires_at"),
)

auth_tokens = sa.Table(
    "auth_tokens",
    metadata,
    sa.Column("token_hash", sa.LargeBinary(32), primary_key=True),
    sa.Column(
        "client_uuid",
        sa.String(36),
        sa.ForeignKey("clients.uuid", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
    sa.Index("ix_auth_tokens_client", "client_uuid"),
    sa.Index("ix_auth_tokens_expiry", "expires_at"),
)

# Single-use tickets that authenticate a realtime WebSocket upgrade without an Authorization
# header (browsers). Each is bound to the bearer token it was issued with: revoking or expiring
# that token (client removed, account deleted or suspended, sweep) deletes its tickets too.
realtime_tickets = sa.Table(
    "realtime_tickets",
    metadata,
    sa.Column("ticket_hash", sa.LargeBinary(32), primary_key=True),
    sa.Column(
        "token_hash",
        sa.LargeBinary(32),
        sa.ForeignKey("auth_tokens.token_hash", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("client_uuid", sa.String(36), nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
    sa.Index("ix_realtime_tickets_token", "token_hash"),
    sa.Index("ix_realtime_tickets_client", "client_uuid"),
    sa.Index("ix_realtime_tickets_expiry", "expires_at"),
)

client_requests = sa.Table(
    "client_requests",
    metadata,
    sa.Column("id_hash", sa.LargeBinary(32), primary_key=True),
    sa.Column("public_id", sa.String(36), nullable=False, unique=True),  # shown to approvers
    sa.Column(
        "user_uuid", sa.String(36), sa.ForeignKey("users.uuid", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("cipher_suite", sa.Integer, nullable=False),
    sa.Column("signature_key", sa.LargeBinary, nullable=False),
    sa.Column("device_name", sa.String(128), nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("client_uuid", sa.String(36), nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
    sa.Index("ix_client_requests_user", "user_uuid"),
)

registration_tokens = sa.Table(
    "registration_tokens",
    metadata,
    sa.Column("token_hash", sa.LargeBinary(32), primary_key=True),
    sa.Column("uses_left", sa.Integer, nullable=True),  # null: unlimited
    sa.Column("expires_at", sa.BigInteger, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

as_keys = sa.Table(
    "as_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("domain", sa.String(253), nullable=False),
    sa.Column("private_key", sa.LargeBinary, nullable=False),  # PKCS#8 DER
    sa.Column("certificate", sa.LargeBinary, nullable=False),  # DER
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

# Durable outbox for the Delivery Service: user/client deletions and profile changes that must
# become group notifications (server-issued Remove proposals and the like). A row is deleted
# once the DS has handled it: processed events are not kept (they name deleted users, removed
# clients and old display names).
account_events = sa.Table(
    "account_events",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("event_type", sa.String(32), nullable=False),
    sa.Column("user_id", sa.String(320), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),  # JSON
    sa.Column("created_at", sa.BigInteger, nullable=False),
)
