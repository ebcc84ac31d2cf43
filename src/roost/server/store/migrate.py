"""Versioned, forward-only schema migrations (Alembic) and the start-up check.

A marker row in ``roost_migration_lock`` is written (and committed) before an upgrade and removed
after it succeeded, so an interrupted upgrade is detected at the next start even on engines
where DDL is not transactional.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from .engine import Database

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_lock_table = sa.table("roost_migration_lock", sa.column("started_at", sa.BigInteger))


class MigrationError(Exception):
    """The database schema is not at the version this code needs."""


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    current: tuple[str, ...]
    head: str
    partial: bool
    empty: bool  # no Roost tables at all (a fresh database)


def alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert len(heads) == 1, "migrations must form one line"
    return heads[0]


def _status(conn: Connection) -> SchemaStatus:
    inspector = sa.inspect(conn)
    tables = set(inspector.get_table_names())
    partial = False
    if "roost_migration_lock" in tables:
        partial = conn.execute(sa.select(sa.func.count()).select_from(_lock_table)).scalar_one() > 0
    current = tuple(MigrationContext.configure(conn).get_current_heads())
    empty = not (tables - {"roost_migration_lock", "alembic_version"})
    return SchemaStatus(current, head_revision(), partial, empty)


async def schema_status(db: Database) -> SchemaStatus:
    async with db.engine.connect() as conn:
        return await conn.run_sync(_status)


async def check_schema(db: Database) -> None:
    """Raise MigrationError with an operator-facing message unless the schema is current."""
    status = await schema_status(db)
    known = set(_all_revisions())
    if status.partial:
        raise MigrationError(
            "a previous `roost db upgrade` did not finish (the schema may be partly migrated); "
            "run `roost db upgrade` again before starting the server"
        )
    unknown = [r for r in status.current if r not in known]
    if unknown:
        raise MigrationError(
            f"the database schema is at revision {unknown[0]}, which this version of Roost does "
            "not know (it is newer); upgrade Roost instead"
        )
    if status.current != (status.head,):
        at = status.current[0] if status.current else "none (empty database)"
        raise MigrationError(
            f"the database schema is at revision {at} but this version needs {status.head}; "
            "run `roost db upgrade` first"
        )


def _all_revisions() -> list[str]:
    return [s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()]


async def upgrade(db: Database) -> tuple[tuple[str, ...], str]:
    """Apply all pending migrations; returns (revisions before, head)."""
    async with db.engine.begin() as conn:
        await conn.run_sync(_mark_started)
    async with db.engine.connect() as conn:
        before = await conn.run_sync(
            lambda c: tuple(MigrationContext.configure(c).get_current_heads())
        )
        await conn.run_sync(_run_upgrade)
        await conn.commit()
    async with db.engine.begin() as conn:
        await conn.execute(sa.delete(_lock_table))
    return before, head_revision()


def _mark_started(conn: Connection) -> None:
    conn.execute(
        sa.text("CREATE TABLE IF NOT EXISTS roost_migration_lock (started_at BIGINT NOT NULL)")
    )
    conn.execute(sa.insert(_lock_table).values(started_at=int(time.time())))


def _run_upgrade(conn: Connection) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")
