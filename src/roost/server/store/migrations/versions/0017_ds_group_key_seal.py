"""ds: keyed groups sealed under their group key; the DS's own log of membership events

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 06:30:00

``ds_groups.key_sealed`` says whether a keyed group's rows are sealed under its group key yet:
the server holds no group key, so the groups stored before keep their seals (under the seal
key file) until the DS first sees a member's request with the key, and reseals them then
(``GroupStore.require_key``). ``ds_groups.events_seen`` and ``ds_group_events``: deletions,
display-name changes and forgotten domains reach a group when the DS can open it
(``delivery/group_events.py``); existing groups start as having seen everything.
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "ds_groups",
        sa.Column("key_sealed", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column(
        "ds_groups",
        sa.Column("events_seen", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.create_table(
        "ds_group_events",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sqlite_autoincrement=True,  # a seq is never reused, even after the log is pruned empty
    )


def downgrade() -> None:
    op.drop_table("ds_group_events")
    op.drop_column("ds_groups", "events_seen")
    op.drop_column("ds_groups", "key_sealed")
