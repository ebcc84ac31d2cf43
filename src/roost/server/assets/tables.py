"""Tables owned by the asset service."""

import sqlalchemy as sa

from ..store.metadata import metadata

assets = sa.Table(
    "assets",
    metadata,
    # 128-bit random public id (hex); it names the blob but grants nothing by itself
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("user_uuid", sa.String(36), nullable=False),
    sa.Column("client_uuid", sa.String(36), nullable=False),
    # SHA-256 of the 256-bit capability secret: a database leak yields no usable capability
    sa.Column("capability_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("ready", sa.Boolean, nullable=False),  # false while the upload is streaming
    sa.Column("created_at", sa.BigInteger, nullable=False),
    # an unfinished upload's row expires after the upload timeout, so the sweep finds its blob
    sa.Column("expires_at", sa.BigInteger, nullable=False),
    sa.Index("ix_assets_expires", "expires_at"),
    sa.Index("ix_assets_user", "user_uuid"),
)

# Bytes held by each user's finished assets; updated with a conditional UPDATE so concurrent
# uploads (any process) can never together exceed the quota.
asset_usage = sa.Table(
    "asset_usage",
    metadata,
    sa.Column("user_uuid", sa.String(36), primary_key=True),
    sa.Column("used_bytes", sa.BigInteger, nullable=False),
)
