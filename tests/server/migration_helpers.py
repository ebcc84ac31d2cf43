"""Migration tests' set-up: a database brought to an older revision, to fill as it was."""

from __future__ import annotations

import sqlalchemy as sa

from roost.server.store import Database
from roost.server.store.migrate import alembic_config


async def upgrade_to(db: Database, revision: str) -> None:
    """Apply the migrations up to ``revision`` (not beyond) to ``db``."""

    def run(conn: sa.Connection) -> None:
        from alembic import command

        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)

    async with db.engine.connect() as conn:
        await conn.run_sync(run)
        await conn.commit()
