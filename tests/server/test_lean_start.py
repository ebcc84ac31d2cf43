"""Start-up stays lean: what ``roost serve`` loads on a current schema, and what it defers.

The start-up check reads revision ids from the migration scripts itself (Alembic is loaded only
to upgrade, and on a fresh data directory only by the forked child that migrates it); the PostgreSQL driver and SQLAlchemy's PostgreSQL dialect only on PostgreSQL; the
outbound HTTP client (httpx, its TLS context, HTTP/1.1 and HTTP/2) at the first outbound
request. SQLAlchemy's ORM is never loaded: the store awaits Core through its own
``store/async_engine.py``, not ``sqlalchemy.ext.asyncio`` (which imports the ORM). What these
do once loaded is unchanged and covered by the modules' own tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from roost.server.store import Database
from roost.server.store.migrate import _revision_chain, alembic_config, head_revision, upgrade
from roost.server.store.pg_driver import driver_integrity_errors, pg_driver

# The serve path without uvicorn: the schema check (or first-start upgrade), the app, its
# lifespan; then report which of the deferred packages got loaded.
_START = textwrap.dedent(
    """
    import asyncio, json, sys
    from roost.server import commands
    from roost.server.app import create_app

    config = commands.load(None)
    commands._prepare_data_dir(config)
    migration = commands._start_first_migration(config)  # a fresh directory: a forked child
    assert asyncio.run(commands._check_or_auto_upgrade(config, migration)) is None
    app = create_app(config, freeze_gc=True)

    async def run() -> None:
        async with app.router.lifespan_context(app):
            pass

    asyncio.run(run())
    names = (
        "alembic", "mako", "asyncpg", "sqlalchemy.dialects.postgresql",
        "httpx", "httpcore", "h2", "certifi", "roost.client", "sqlalchemy.orm",
        "sqlalchemy.ext.asyncio",
    )
    print(json.dumps({n: n in sys.modules for n in names}))
    """
)


def _start(data_dir: Path) -> dict[str, bool]:
    env = {"ROOST_DATA_DIR": str(data_dir), "ROOST_LOG_LEVEL": "warning", "PATH": "/usr/bin"}
    done = subprocess.run(
        [sys.executable, "-c", _START],
        env=env,
        cwd=data_dir,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    loaded: dict[str, bool] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def test_revision_chain_is_alembics() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    walked = [s.revision for s in script.walk_revisions()]  # newest first
    assert list(_revision_chain()) == walked[::-1]
    assert head_revision() == script.get_current_head()


def test_restart_on_a_current_schema_defers_what_it_does_not_use(tmp_path: Path) -> None:
    first = _start(tmp_path)  # a fresh data directory: the first start migrates, in a child
    assert (tmp_path / "roost.db").exists()
    again = _start(tmp_path)
    assert (
        first
        == again
        == {
            "alembic": False,
            "mako": False,
            "asyncpg": False,  # SQLite
            "sqlalchemy.dialects.postgresql": False,
            "httpx": False,  # no outbound request yet
            "httpcore": False,
            "h2": False,
            "certifi": False,
            "roost.client": False,
            "sqlalchemy.orm": False,  # Core alone (store/async_engine.py)
            "sqlalchemy.ext.asyncio": False,  # it imports the ORM
        }
    )


async def test_schema_check_refuses_an_old_revision_without_alembic(tmp_path: Path) -> None:
    """The light check still tells an operator to upgrade (the message names both revisions)."""
    from roost.server.store.migrate import MigrationError, check_schema

    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'roost.db'}")
    try:
        await upgrade(db)
        await check_schema(db)
        old = _revision_chain()[-2]
        async with db.transaction() as conn:
            await conn.execute(sa.text(f"UPDATE alembic_version SET version_num = '{old}'"))
        with pytest.raises(MigrationError, match=f"at revision {old} but this version needs"):
            await check_schema(db)
    finally:
        await db.dispose()


async def test_driver_integrity_error_is_recognised_on_postgresql(
    migrated_postgres_url: str,
) -> None:
    """A constraint violation raised by a statement run on asyncpg itself (the send path) is
    classified as one, as before asyncpg became a lazy import."""
    db = Database(migrated_postgres_url)
    try:
        async with db.engine.connect() as conn:
            driver = await pg_driver(conn)
            await driver.execute("CREATE TEMPORARY TABLE lean_unique (k int PRIMARY KEY)")
            await driver.execute("INSERT INTO lean_unique VALUES (1)")
            with pytest.raises(driver_integrity_errors()):
                await driver.execute("INSERT INTO lean_unique VALUES (1)")
            await conn.rollback()
    finally:
        await db.dispose()
