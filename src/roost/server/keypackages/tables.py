"""Tables owned by the KeyPackage service."""

import sqlalchemy as sa

from ..store.metadata import metadata

key_packages = sa.Table(
    "key_packages",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("client_uuid", sa.String(36), nullable=False),
    sa.Column("user_uuid", sa.String(36), nullable=False),
    sa.Column("cipher_suite", sa.Integer, nullable=False),
    sa.Column("last_resort", sa.Boolean, nullable=False),
    # SHA-256 of the init key: uniqueness across the whole server without indexing big keys
    sa.Column("init_key_hash", sa.LargeBinary(32), nullable=False, unique=True),
    sa.Column("data", sa.LargeBinary, nullable=False),  # the MLSMessage encoding
    sa.Column("not_after", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Index("ix_key_packages_pick", "client_uuid", "cipher_suite", "last_resort", "id"),
    sa.Index("ix_key_packages_user", "user_uuid"),
)
