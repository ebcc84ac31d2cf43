"""Tables owned by the federation module (prefix ``fed_``)."""

import sqlalchemy as sa

from ..store.metadata import metadata

DOMAIN_MAX = 253

# This server's federation signing keys (Ed25519, raw). The newest unretired key signs; retired
# keys stay published until ``retired_at`` + grace so in-flight requests still verify.
fed_keys = sa.Table(
    "fed_keys",
    metadata,
    sa.Column("key_id", sa.String(64), primary_key=True),
    sa.Column("private_key", sa.LargeBinary(32), nullable=False),
    sa.Column("public_key", sa.LargeBinary(32), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("retired_at", sa.BigInteger, nullable=True),
)

# Nonces of verified inbound requests, kept while their signature is fresh (replay refusal).
fed_nonces = sa.Table(
    "fed_nonces",
    metadata,
    sa.Column("origin", sa.String(DOMAIN_MAX), primary_key=True),
    sa.Column("nonce", sa.String(64), primary_key=True),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
    sa.Index("ix_fed_nonces_expires", "expires_at"),
)

# The durable outbound queue: items per destination, delivered in id order.
fed_outbox = sa.Table(
    "fed_outbox",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("destination", sa.String(DOMAIN_MAX), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    # The group of a DS item entry (``Outbox.in_transit_in``); NULL for other kinds.
    sa.Column("ref", sa.LargeBinary(255), nullable=True),
    sa.Index("ix_fed_outbox_destination", "destination", "id"),
    # Ids are never reused (SQLite would reuse the highest after a delete): receivers keep a
    # per-origin high-water mark and would skip a reused id as already applied.
    sqlite_autoincrement=True,
)

# Delivery state per destination: backoff, last error, and a lease so that only one process
# delivers to a destination at a time (order is kept per destination).
fed_destinations = sa.Table(
    "fed_destinations",
    metadata,
    sa.Column("destination", sa.String(DOMAIN_MAX), primary_key=True),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_ms", sa.BigInteger, nullable=False),
    sa.Column("last_error", sa.String(500), nullable=True),
    sa.Column("last_success_at", sa.BigInteger, nullable=True),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_until_ms", sa.BigInteger, nullable=False),
)

# Inbound idempotency: the highest outbox id applied per origin (items arrive in id order).
fed_inbox_marks = sa.Table(
    "fed_inbox_marks",
    metadata,
    sa.Column("origin", sa.String(DOMAIN_MAX), primary_key=True),
    sa.Column("last_outbox_id", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)


# The federation policy (federation/policy.py); ``roost admin federation`` changes it.
# One row (id = 1) once an operator has set a mode; no row means the default mode.
federation_settings = sa.Table(
    "federation_settings",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("mode", sa.String(16), nullable=False),  # "allowlist" | "open"
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

federation_domains = sa.Table(
    "federation_domains",
    metadata,
    sa.Column("domain", sa.String(253), primary_key=True),
    sa.Column("list_kind", sa.String(8), primary_key=True),  # "allow" | "block"
    sa.Column("added_at", sa.BigInteger, nullable=False),
)
