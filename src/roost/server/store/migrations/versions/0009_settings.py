"""store: roost_settings, this server's own recorded facts (the home_domain the data was made for)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 02:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The row itself is written by `roost db upgrade` / `roost serve` from the configuration
    # (store/settings.py): a migration does not know the configured domain.
    op.create_table(
        "roost_settings",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=1000), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    # Forward-only migrations: restore from a backup instead.
    raise NotImplementedError("Roost migrations are forward-only")
