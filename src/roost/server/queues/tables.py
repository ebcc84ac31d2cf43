"""Tables owned by the queues module: group-message queues (QS) and per-user direct queues (AS)."""

import sqlalchemy as sa

from ..store.metadata import metadata

queues = sa.Table(
    "queues",
    metadata,
    sa.Column("id", sa.LargeBinary(16), primary_key=True),
    # SHA-256 of the queue's key, which only its client holds; NULL for a queue created
    # before queues had keys, until its creator claims one.
    sa.Column("key_hash", sa.LargeBinary(32), nullable=True),
    # The creator of such an unclaimed queue; erased by the claim. New queues have none.
    sa.Column("legacy_owner", sa.String(36), nullable=True),
    # The creating client, sealed under a key kept outside the database (``seal.py``): push
    # opens it to find the client's registration; a copy of the database cannot.
    sa.Column("push_seal", sa.LargeBinary(64), nullable=True),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

# How many queues each client holds (the limit), not which.
queue_allowances = sa.Table(
    "queue_allowances",
    metadata,
    sa.Column("client_uuid", sa.String(36), primary_key=True),
    sa.Column("queues", sa.Integer, nullable=False),
)

queue_messages = sa.Table(
    "queue_messages",
    metadata,
    sa.Column(
        "queue_id",
        sa.LargeBinary(16),
        sa.ForeignKey("queues.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("message_id", sa.String(128), nullable=True),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("queue_id", "message_id", name="uq_queue_messages_message_id"),
)

direct_queues = sa.Table(
    "direct_queues",
    metadata,
    sa.Column("user_uuid", sa.String(36), primary_key=True),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
)

direct_messages = sa.Table(
    "direct_messages",
    metadata,
    sa.Column(
        "user_uuid",
        sa.String(36),
        sa.ForeignKey("direct_queues.user_uuid", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

# Each client of the user acks on its own; a message goes once every client has acked it.
direct_cursors = sa.Table(
    "direct_cursors",
    metadata,
    sa.Column("user_uuid", sa.String(36), primary_key=True),
    sa.Column("client_uuid", sa.String(36), primary_key=True),
    sa.Column("acked_seq", sa.BigInteger, nullable=False),
)
