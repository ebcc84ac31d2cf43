"""Tables owned by the push module: one registration per client, the server's VAPID key."""

import sqlalchemy as sa

from ..store.metadata import metadata

push_registrations = sa.Table(
    "push_registrations",
    metadata,
    # one means of notification per client; registering again replaces it
    sa.Column("client_uuid", sa.String(36), primary_key=True),
    sa.Column("user_uuid", sa.String(36), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # "webpush" | "apns" | "fcm"
    # Where to push, sealed under the seal key file (seal.py) and bound to the client: the
    # Web Push endpoint URL and keys (RFC 8291), or the APNs/FCM device token. The push
    # service opens it to send; a copy of the database cannot.
    sa.Column("sealed_target", sa.LargeBinary, nullable=False),
    sa.Column("default_policy", sa.String(16), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Index("ix_push_registrations_user", "user_uuid"),
)

# The VAPID signing key (RFC 8292) when none is configured: generated once, shared by every
# process, stable so that subscriptions bound to it keep working.
push_vapid_key = sa.Table(
    "push_vapid_key",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),  # always 1
    sa.Column("private_key", sa.LargeBinary(32), nullable=False),
)
