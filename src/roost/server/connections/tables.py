"""Tables owned by the connections module."""

import sqlalchemy as sa

from ..store.metadata import metadata

connections = sa.Table(
    "connections",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("requester_uuid", sa.String(36), nullable=False),
    sa.Column("responder_uuid", sa.String(36), nullable=False),
    sa.Column("requester_id", sa.String(320), nullable=False),
    sa.Column("responder_id", sa.String(320), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("claim_used", sa.Boolean, nullable=False, default=False),
    # "<smaller uuid>|<larger uuid>" while the connection is opening/pending/accepted, else NULL;
    # the unique index makes "one open connection per pair" hold under concurrency.
    sa.Column("open_pair", sa.String(73), nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Index("ix_connections_requester", "requester_uuid", "responder_uuid"),
    sa.Index("ix_connections_responder", "responder_uuid"),
    sa.Index("uq_connections_open_pair", "open_pair", unique=True),
)
