"""ds_sends: idempotency records keyed by a hash of (group, sender, message id), not the sender

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-12 09:00:00
"""

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

GID = 255
_PAGE = 5000
_LABEL = b"roost ds send key v1"


def _send_key(group_id: bytes, client_uuid: str, message_id: str) -> bytes:
    # delivery/send_key.py as of this revision (a migration keeps the format it converted to)
    h = hashlib.sha256(_LABEL)
    for part in (group_id, client_uuid.encode(), message_id.encode()):
        h.update(len(part).to_bytes(2, "big"))
        h.update(part)
    return h.digest()


_old = sa.table(
    "ds_sends",
    sa.column("group_id", sa.LargeBinary),
    sa.column("client_uuid", sa.String),
    sa.column("message_id", sa.String),
    sa.column("group_seq", sa.BigInteger),
    sa.column("created_at", sa.BigInteger),
)
_cols = ("group_id", "send_key", "group_seq", "created_at")


def upgrade() -> None:
    # The records are converted, not dropped: they live a day at most, but a send accepted just
    # before the upgrade and retried after it must still be recognised (else it is delivered
    # twice). The converted rows wait in a plain table while ds_sends is rebuilt.
    conn = op.get_bind()
    converting = op.create_table(
        "ds_sends_converting",
        sa.Column("group_id", sa.LargeBinary(length=GID), nullable=False),
        sa.Column("send_key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("group_seq", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
    )
    assert converting is not None
    order = (_old.c.group_id, _old.c.client_uuid, _old.c.message_id)
    after: tuple[bytes, str, str] | None = None
    while True:
        page = sa.select(_old).order_by(*order).limit(_PAGE)
        if after is not None:
            page = page.where(sa.tuple_(*order) > sa.tuple_(*after))
        rows = conn.execute(page).all()
        if not rows:
            break
        conn.execute(
            converting.insert(),
            [
                {
                    "group_id": r.group_id,
                    "send_key": _send_key(r.group_id, r.client_uuid, r.message_id),
                    "group_seq": r.group_seq,
                    "created_at": r.created_at,
                }
                for r in rows
            ],
        )
        last = rows[-1]
        after = (last.group_id, last.client_uuid, last.message_id)
    op.drop_index("ix_ds_sends_created", table_name="ds_sends")
    op.drop_table("ds_sends")
    op.create_table(
        "ds_sends",
        sa.Column("group_id", sa.LargeBinary(length=GID), nullable=False),
        sa.Column("send_key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("group_seq", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["ds_groups.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("group_id", "send_key"),
    )
    op.create_index("ix_ds_sends_created", "ds_sends", ["created_at"], unique=False)
    new = sa.table("ds_sends", *(sa.column(c) for c in _cols))
    conn.execute(new.insert().from_select(_cols, sa.select(*(converting.c[c] for c in _cols))))
    op.drop_table("ds_sends_converting")


def downgrade() -> None:
    # Forward-only migrations: restore from a backup instead.
    raise NotImplementedError("Roost migrations are forward-only")
