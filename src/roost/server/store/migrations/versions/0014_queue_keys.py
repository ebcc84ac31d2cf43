"""queues: authorised by their own key; the owner column becomes legacy_owner (erased on claim)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-14 09:00:00

Existing queues keep their id, messages and every group's reference to them. They have no
key yet: each one's creator claims one (``POST /v1/queues/{id}/key``, done by the clients at
start), which erases the stored owner. Until then ``legacy_owner`` names the creator.
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Columns are added and dropped in place: rebuilding the table (SQLite's batch mode) would
    # drop the old one, and with it, by cascade, every queued message.
    op.drop_index("ix_queues_owner", table_name="queues")
    op.add_column("queues", sa.Column("legacy_owner", sa.String(length=36), nullable=True))
    op.add_column("queues", sa.Column("key_hash", sa.LargeBinary(length=32), nullable=True))
    op.add_column("queues", sa.Column("push_seal", sa.LargeBinary(length=64), nullable=True))
    op.execute("UPDATE queues SET legacy_owner = owner_client_uuid")
    op.execute("ALTER TABLE queues DROP COLUMN owner_client_uuid")  # SQLite >= 3.35
    allowances = op.create_table(
        "queue_allowances",
        sa.Column("client_uuid", sa.String(length=36), primary_key=True),
        sa.Column("queues", sa.Integer(), nullable=False),
    )
    assert allowances is not None
    queues = sa.table("queues", sa.column("legacy_owner", sa.String))
    op.execute(
        sa.insert(allowances).from_select(
            ["client_uuid", "queues"],
            sa.select(queues.c.legacy_owner, sa.func.count()).group_by(queues.c.legacy_owner),
        )
    )


def downgrade() -> None:
    # Forward-only migrations: restore from a backup instead.
    raise NotImplementedError("Roost migrations are forward-only")
