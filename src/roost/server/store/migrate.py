"""Versioned, forward-only schema migrations (Alembic) and the start-up check.

A marker row in ``roost_migration_lock`` is written (and committed) before an upgrade and removed
after it succeeded, so an interrupted upgrade is detected at the next start even on engines
where DDL is not transactional.

The start-up check reads the revision ids straight from the migration scripts and the
``alembic_version`` table: Alembic itself (and Mako, which it pulls in) is imported only to
upgrade, so a server started on a current schema never loads it.
"""

from __future__ import annotations

import ast
import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .engine import Database

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

    from ..seal_key import SealKeyFile

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
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


@functools.cache
def _revision_chain() -> tuple[str, ...]:
    """Every revision id, oldest first, from the ``revision`` / ``down_revision`` assignments
    of the scripts in ``migrations/versions`` (what Alembic reads; the scripts form one line)."""
    parent: dict[str, str | None] = {}
    for script in sorted((MIGRATIONS_DIR / "versions").glob("*.py")):
        found: dict[str, str | None] = {}
        for node in ast.parse(script.read_text(encoding="utf-8")).body:
            target, value = None, None
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
            elif isinstance(node, ast.AnnAssign):
                target, value = node.target, node.value
            if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
                assert value is not None
                found[target.id] = ast.literal_eval(value)
        parent[str(found["revision"])] = found.get("down_revision")
    children = {p: r for r, p in parent.items()}
    assert len(children) == len(parent), "migrations must form one line"
    chain: list[str] = []
    rev = children.get(None)
    while rev is not None:
        chain.append(rev)
        rev = children.get(rev)
    assert len(chain) == len(parent), "migrations must form one line"
    return tuple(chain)


def head_revision() -> str:
    return _revision_chain()[-1]


def _status(conn: Connection) -> SchemaStatus:
    inspector = sa.inspect(conn)
    tables = set(inspector.get_table_names())
    partial = False
    if "roost_migration_lock" in tables:
        partial = conn.execute(sa.select(sa.func.count()).select_from(_lock_table)).scalar_one() > 0
    current: tuple[str, ...] = ()
    if "alembic_version" in tables:
        current = tuple(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars())
    empty = not (tables - {"roost_migration_lock", "alembic_version"})
    return SchemaStatus(current, head_revision(), partial, empty)


async def schema_status(db: Database) -> SchemaStatus:
    async with db.engine.connect() as conn:
        return await conn.run_sync(_status)


async def check_schema(db: Database) -> None:
    """Raise MigrationError with an operator-facing message unless the schema is current."""
    status = await schema_status(db)
    known = set(_revision_chain())
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


async def upgrade(db: Database, seal_key: SealKeyFile | None = None) -> tuple[tuple[str, ...], str]:
    """Apply all pending migrations; returns (revisions before, head). ``seal_key``: the
    server's seal key file, for migrations that seal stored data (needed when there is any)."""
    async with db.engine.begin() as conn:
        await conn.run_sync(_mark_started)
    from alembic.runtime.migration import MigrationContext

    async with db.engine.connect() as conn:
        before = await conn.run_sync(
            lambda c: tuple(MigrationContext.configure(c).get_current_heads())
        )
        await conn.run_sync(_run_upgrade, seal_key)
        await conn.commit()
    async with db.engine.begin() as conn:
        await conn.execute(sa.delete(_lock_table))
    return before, head_revision()


def _mark_started(conn: Connection) -> None:
    conn.execute(
        sa.text("CREATE TABLE IF NOT EXISTS roost_migration_lock (started_at BIGINT NOT NULL)")
    )
    conn.execute(sa.insert(_lock_table).values(started_at=int(time.time())))


def _run_upgrade(conn: Connection, seal_key: SealKeyFile | None) -> None:
    from alembic import command

    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    cfg.attributes["seal_key"] = seal_key
    command.upgrade(cfg, "head")
