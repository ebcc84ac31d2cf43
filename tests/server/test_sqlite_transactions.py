"""SQLite transactions as ``store/engine.py`` opens and ends them: writers take the lock with
``BEGIN IMMEDIATE`` on the driver, and a connection goes back to the pool with no transaction
open, whatever its use did."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from roost.server.errors import _database_unavailable
from roost.server.store import Database


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'roost.db'}")
    async with database.transaction() as conn:
        await conn.execute(text("CREATE TABLE t (x INTEGER)"))
    yield database
    await database.dispose()


async def open_transaction_in_pool(db: Database) -> bool:
    """Whether the connection the pool hands out next is inside a transaction."""
    async with db.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        return bool(raw.driver_connection.in_transaction)


async def rows(db: Database) -> list[int]:
    async with db.engine.connect() as conn:
        return [r[0] for r in await conn.execute(text("SELECT x FROM t ORDER BY x"))]


async def test_connections_return_to_the_pool_with_no_transaction_open(db: Database) -> None:
    assert await rows(db) == []  # a read: BEGIN, then the close ends it
    assert not await open_transaction_in_pool(db)
    async with db.transaction() as conn:
        await conn.execute(text("INSERT INTO t VALUES (1)"))
    assert not await open_transaction_in_pool(db)
    with pytest.raises(RuntimeError):
        async with db.transaction() as conn:
            await conn.execute(text("INSERT INTO t VALUES (2)"))
            raise RuntimeError("refused mid-way")
    assert not await open_transaction_in_pool(db)
    assert await rows(db) == [1]


async def test_a_writer_locked_out_fails_as_unavailable_and_the_next_one_writes(
    db: Database, tmp_path: Path
) -> None:
    async with db.engine.connect() as conn:  # the pool's one connection: wait 0.2 s, not 30
        await conn.execute(text("PRAGMA busy_timeout=200"))
    other = sqlite3.connect(tmp_path / "roost.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with pytest.raises(OperationalError) as refused:
            async with db.transaction() as conn:
                await conn.execute(text("INSERT INTO t VALUES (1)"))
        assert _database_unavailable(refused.value)  # what the app answers 503 for
        other.execute("ROLLBACK")
    finally:
        other.close()
    async with db.transaction() as conn:
        await conn.execute(text("INSERT INTO t VALUES (2)"))
    assert await rows(db) == [2]


async def test_a_request_cancelled_while_its_begin_waits_leaves_no_transaction_behind(
    db: Database, tmp_path: Path
) -> None:
    async with db.engine.connect() as conn:  # the pool's one connection
        await conn.execute(text("PRAGMA busy_timeout=5000"))
    other = sqlite3.connect(tmp_path / "roost.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # the request's BEGIN IMMEDIATE waits for this lock

        async def request() -> None:
            async with db.transaction() as conn:
                await conn.execute(text("INSERT INTO t VALUES (1)"))

        task = asyncio.create_task(request())
        await asyncio.sleep(0.2)
        task.cancel()  # the client went away; its BEGIN still runs once the lock is free
        await asyncio.sleep(0.1)
        other.execute("ROLLBACK")
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        other.close()
    assert not await open_transaction_in_pool(db)
    async with db.transaction() as conn:
        await conn.execute(text("INSERT INTO t VALUES (2)"))
    assert await rows(db) == [2]
