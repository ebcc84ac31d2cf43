"""Tables owned by the asset service."""

import sqlalchemy as sa

from ..store.metadata import metadata

assets = sa.Table(
    "assets",
    metadata,
    # 128-bit random public id (hex); it names the blob but grants nothing by itself
    sa.Column("id", sa.String(32), primary_key=True),
    # The uploading user, sealed under the seal key file (seal.py) and bound to the id: the
    # server credits the user's quota when the asset goes and lets the user delete it; a copy
    # of the database cannot tell whose an asset is. No column names the uploader.
    sa.Column("owner_seal", sa.LargeBinary(64), nullable=False),
    # SHA-256 of the 256-bit capability secret: a database leak yields no usable capability
    sa.Column("capability_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("ready", sa.Boolean, nullable=False),  # false while the upload is streaming
    sa.Column("created_at", sa.BigInteger, nullable=False),
    # an unfinished upload's row expires after the upload timeout, so the sweep finds its blob
    sa.Column("expires_at", sa.BigInteger, nullable=False),
    sa.Index("ix_assets_expires", "expires_at"),
)

# Bytes held by each user's finished assets (how much, not which); updated with a conditional UPDATE so concurrent
# uploads (any process) can never together exceed the quota.
asset_usage = sa.Table(
    "asset_usage",
    metadata,
    sa.Column("user_uuid", sa.String(36), primary_key=True),
    sa.Column("used_bytes", sa.BigInteger, nullable=False),
)
