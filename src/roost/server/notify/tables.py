"""Tables owned by the notify module: which ``roost serve`` process holds which client's socket."""

import sqlalchemy as sa

from ..store.metadata import metadata

# Cross-process presence (PostgreSQL only; one SQLite process needs only its hub). A row says
# "client X has a realtime WebSocket open to process P" until ``expires_at_ms`` (database
# clock): P refreshes its rows with one heartbeat UPDATE, so a crashed process's rows lapse.
notify_presence = sa.Table(
    "notify_presence",
    metadata,
    sa.Column("client_uuid", sa.String(36), primary_key=True),
    sa.Column("process_id", sa.String(64), primary_key=True),
    sa.Column("expires_at_ms", sa.BigInteger, nullable=False),
    sa.Index("ix_notify_presence_process", "process_id"),
    sa.Index("ix_notify_presence_expires", "expires_at_ms"),
)
