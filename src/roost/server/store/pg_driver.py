"""The asyncpg connection under a SQLAlchemy one, for the few hot-path statements that skip
SQLAlchemy's execution path (docs/design.md: drop to the driver only where a benchmark shows the
gain; benchmarks/README.md ``ds_bench.py`` has the figures).

Statements run through ``fetch``/``fetchrow`` with ``$n`` parameters use asyncpg's own
prepared-statement cache. They run in the caller's transaction: SQLAlchemy's asyncpg adapter
begins lazily (at its first statement), so the transaction is started here if it has not been.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection


async def pg_driver(conn: AsyncConnection) -> Any:
    """The ``asyncpg.Connection`` of ``conn`` (PostgreSQL only), inside its transaction."""
    fairy = await conn.get_raw_connection()
    adapted: Any = fairy.dbapi_connection
    if adapted._transaction is None and conn.in_transaction():
        await adapted._start_transaction()
    return fairy.driver_connection
