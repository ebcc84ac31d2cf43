"""The asyncpg connection under a SQLAlchemy one, for the few hot-path statements that skip
SQLAlchemy's execution path (docs/design.md: drop to the driver only where a benchmark shows the
gain; benchmarks/README.md ``ds_bench.py`` has the figures).

Statements run through ``fetch``/``fetchrow`` with ``$n`` parameters use asyncpg's own
prepared-statement cache. They run in the caller's transaction: SQLAlchemy's asyncpg adapter
begins lazily (at its first statement), so the transaction is started here if it has not been.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from .async_engine import AsyncConnection

if TYPE_CHECKING:
    from .engine import Database


async def pg_driver(conn: AsyncConnection) -> Any:
    """The ``asyncpg.Connection`` of ``conn`` (PostgreSQL only), inside its transaction."""
    fairy = await conn.get_raw_connection()
    adapted: Any = fairy.dbapi_connection
    if adapted._transaction is None and conn.in_transaction():
        await adapted._start_transaction()
    return fairy.driver_connection


@asynccontextmanager
async def pg_autocommit(db: Database) -> AsyncIterator[Any]:
    """A pooled ``asyncpg.Connection`` outside any transaction (PostgreSQL only): each statement
    is a transaction of its own, one round trip with no BEGIN or COMMIT. For a write that is a
    single statement (the realtime acks)."""
    async with db.engine.connect() as conn:
        fairy = await conn.get_raw_connection()
        yield fairy.driver_connection


def driver_integrity_errors() -> tuple[type[Exception], ...]:
    """What a constraint violation raises from statements run on the driver: asyncpg's own
    class, not SQLAlchemy's ``IntegrityError``. Empty while asyncpg is not loaded (SQLite), as
    nothing can have raised it; an ``except`` clause evaluates this only when an error
    propagates, so the driver stays unimported and the success path pays nothing."""
    asyncpg = sys.modules.get("asyncpg")
    return () if asyncpg is None else (asyncpg.IntegrityConstraintViolationError,)
