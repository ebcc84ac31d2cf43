"""The aiosqlite connection under a SQLAlchemy one, for the hot-path statements of a send
batch on SQLite (the counterpart of ``pg_driver.py``; docs/design.md: drop to the driver only
where a benchmark shows the gain, benchmarks/README.md has the figures).

Each call here is one hand-off to aiosqlite's thread (SQLAlchemy's path takes two for a
statement that returns rows, plus its expression building and result processing). The
statements run in the caller's transaction: ``Database.transaction()`` opens it (``BEGIN
IMMEDIATE``) when it begins, before the first statement.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .async_engine import AsyncConnection


async def _driver(conn: AsyncConnection) -> Any:
    fairy = await conn.get_raw_connection()
    return fairy.driver_connection


async def fetch_all(conn: AsyncConnection, sql: str, params: Sequence[Any]) -> list[Any]:
    """The rows of one statement (e.g. ``UPDATE … RETURNING``), in one hand-off."""
    driver = await _driver(conn)
    return list(await driver.execute_fetchall(sql, params))


async def execute_many(conn: AsyncConnection, sql: str, rows: Iterable[Sequence[Any]]) -> int:
    """Run one statement once per row, in one hand-off: the rows it changed in all."""
    driver = await _driver(conn)
    cursor = await driver.executemany(sql, rows)
    # Not closed: closing is another hand-off, and there is nothing to release (sqlite3
    # resets a finished statement; the cursor goes with its last reference, here).
    return int(cursor.rowcount)
