"""Tables owned by the Delivery Service (prefix ``ds_``)."""

import sqlalchemy as sa

from ..store.metadata import metadata
from .at_rest import USER_REF_BYTES
from .send_key import SEND_KEY_BYTES

GROUP_ID_MAX = 255

# One row per group: the observer state, the latest GroupInfo and the two counters that order
# everything: ``epoch`` (one commit per epoch, conditional update) and ``last_seq`` (group-wide
# order of every fanned-out item). ``state`` and ``group_info`` are sealed (at_rest.py): the
# tree's credentials name every member. ``rev`` bumps on every state change so that concurrent
# proposal writers detect lost updates.
ds_groups = sa.Table(
    "ds_groups",
    metadata,
    sa.Column("id", sa.LargeBinary(GROUP_ID_MAX), primary_key=True),
    sa.Column("cipher_suite", sa.Integer, nullable=False),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("rev", sa.BigInteger, nullable=False),
    sa.Column("external_join", sa.Boolean, nullable=False),
    sa.Column("state", sa.LargeBinary, nullable=False),
    sa.Column("group_info", sa.LargeBinary, nullable=False),
    sa.Column("last_commit_hash", sa.LargeBinary(32), nullable=True),
    sa.Column("last_commit_seq", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    # The group key's check value (group_key.py); NULL: a group made without a key.
    sa.Column("key_check", sa.LargeBinary(32), nullable=True),
    # A keyed group's rows are sealed under its group key (at_rest.py); false until the DS
    # first saw the key of a group stored before it could (GroupStore.require_key).
    sa.Column("key_sealed", sa.Boolean, nullable=False, server_default=sa.false()),
    # The last ds_group_events entry applied to this group (group_events.py).
    sa.Column("events_seen", sa.BigInteger, nullable=False, server_default="0"),
)

# Deletions, display-name changes and forgotten domains, sealed, kept until every group has
# seen them: the DS applies them to a group when it can open it (group_events.py).
ds_group_events = sa.Table(
    "ds_group_events",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("sealed", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    # Never reuse a seq (SQLite would, after the log was pruned empty): groups compare them.
    sqlite_autoincrement=True,
)

# One row per leaf. Who the leaf is (client, user), its queue reference and push policy are one
# seal (at_rest.py): no readable column links a user, client or queue to the group.
ds_members = sa.Table(
    "ds_members",
    metadata,
    sa.Column(
        "group_id",
        sa.LargeBinary(GROUP_ID_MAX),
        sa.ForeignKey("ds_groups.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("leaf_index", sa.Integer, primary_key=True),
    sa.Column("sealed", sa.LargeBinary, nullable=False),
    # The client was deleted (or its domain forgotten): it gets nothing; a server Remove
    # proposal is outstanding.
    sa.Column("gone", sa.Boolean, nullable=False),
    # The group_seq of the commit that added the leaf (0 for the creator): the join order
    # that admin succession goes by (succession.py).
    sa.Column("joined_seq", sa.BigInteger, nullable=False, server_default="0"),
)

# Roles per user; users without a row are plain members. A row is found by ``user_ref`` (an
# HMAC of group and user, at_rest.py); the user's id is sealed beside it.
ds_roles = sa.Table(
    "ds_roles",
    metadata,
    sa.Column(
        "group_id",
        sa.LargeBinary(GROUP_ID_MAX),
        sa.ForeignKey("ds_groups.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("user_ref", sa.LargeBinary(USER_REF_BYTES), primary_key=True),
    sa.Column("sealed_user", sa.LargeBinary, nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
)

# Items for a leaf that has not registered its queue yet (a fresh joiner), in group order.
ds_held = sa.Table(
    "ds_held",
    metadata,
    sa.Column(
        "group_id",
        sa.LargeBinary(GROUP_ID_MAX),
        sa.ForeignKey("ds_groups.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("leaf_index", sa.Integer, primary_key=True),
    sa.Column("group_seq", sa.BigInteger, primary_key=True),
    sa.Column("item_type", sa.Integer, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
)

# Idempotency of application sends: send key -> group_seq. The key is a hash of (group,
# sending client, message id) (send_key.py): the record does not name the sender.
ds_sends = sa.Table(
    "ds_sends",
    metadata,
    sa.Column(
        "group_id",
        sa.LargeBinary(GROUP_ID_MAX),
        sa.ForeignKey("ds_groups.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("send_key", sa.LargeBinary(SEND_KEY_BYTES), primary_key=True),
    sa.Column("group_seq", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Index("ix_ds_sends_created", "created_at"),
)

# The homeserver's external-sender signature key and certificate per cipher suite.
ds_keys = sa.Table(
    "ds_keys",
    metadata,
    sa.Column("cipher_suite", sa.Integer, primary_key=True),
    sa.Column("private_key", sa.LargeBinary, nullable=False),
    sa.Column("public_key", sa.LargeBinary, nullable=False),
    sa.Column("certificate", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)
