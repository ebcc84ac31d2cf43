"""operator: user suspension, federation policy (mode + allow/block domains)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 02:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("suspended_at", sa.BigInteger(), nullable=True))
    op.create_table(
        "federation_settings",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "federation_domains",
        sa.Column("domain", sa.String(253), nullable=False),
        sa.Column("list_kind", sa.String(8), nullable=False),
        sa.Column("added_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("domain", "list_kind"),
    )


def downgrade() -> None:  # forward-only (docs/operations.md); kept for Alembic's interface
    raise NotImplementedError("Roost migrations are forward-only")
