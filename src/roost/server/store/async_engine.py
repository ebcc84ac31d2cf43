"""SQLAlchemy Core's engine and connections, awaited from asyncio.

Each call runs the synchronous Core method in a greenlet that awaits the async driver (aiosqlite,
asyncpg) wherever the driver would block: what ``sqlalchemy.ext.asyncio`` does too, but importing
that package loads SQLAlchemy's ORM, about 8 MiB of a server's idle memory that Roost, which uses
Core alone, never runs (benchmarks/README.md, ``startup_bench.py``). Only the methods the store
uses are here, with the names and meaning they have in ``sqlalchemy.ext.asyncio``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import URL, Connection, CursorResult, Engine, Pool, ScalarResult, create_engine
from sqlalchemy.engine import Dialect
from sqlalchemy.engine.interfaces import PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

_T = TypeVar("_T")
# Rows of any shape, as SQLAlchemy types a result whose statement it cannot see.
Rows = CursorResult[*tuple[Any, ...]]


def create_async_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An engine on an async driver (``sqlite+aiosqlite``, ``postgresql+asyncpg``); SQLAlchemy
    picks the pool the driver needs (``AsyncAdaptedQueuePool``)."""
    return AsyncEngine(create_engine(url, **kwargs))


class AsyncEngine:
    def __init__(self, sync_engine: Engine) -> None:
        self.sync_engine = sync_engine

    @property
    def url(self) -> URL:
        return self.sync_engine.url

    @property
    def pool(self) -> Pool:
        return self.sync_engine.pool

    def connect(self) -> AsyncConnection:
        """A connection from the pool for ``async with``; it returns there on exit."""
        return AsyncConnection(self)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction: committed on exit, rolled back on an exception."""
        async with self.connect() as conn, conn.begin():
            yield conn

    async def dispose(self) -> None:
        await greenlet_spawn(self.sync_engine.dispose)


class AsyncConnection:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sync: Connection | None = None

    async def __aenter__(self) -> AsyncConnection:
        self._sync = await greenlet_spawn(self.engine.sync_engine.connect)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # A cancelled caller must not abandon the connection half-returned to its pool.
        await _run_to_completion(self.close())

    @property
    def sync_connection(self) -> Connection:
        if self._sync is None:
            raise RuntimeError("the connection is not open: use 'async with engine.connect()'")
        return self._sync

    @property
    def info(self) -> dict[Any, Any]:
        """Per pooled connection state, writable (it outlives this checkout)."""
        return self.sync_connection.info

    @property
    def dialect(self) -> Dialect:
        return self.engine.sync_engine.dialect

    def in_transaction(self) -> bool:
        return self.sync_connection.in_transaction()

    def begin(self) -> AsyncTransaction:
        return AsyncTransaction(self.sync_connection)

    async def execute(
        self,
        statement: Any,
        parameters: Any = None,
        *,
        execution_options: Mapping[str, Any] | None = None,
    ) -> Rows:
        return await greenlet_spawn(
            self.sync_connection.execute,
            statement,
            parameters,
            execution_options=execution_options,
        )

    async def scalar(self, statement: Any, parameters: Any = None) -> Any:
        return (await self.execute(statement, parameters)).scalar()

    async def scalars(self, statement: Any, parameters: Any = None) -> ScalarResult[Any]:
        return (await self.execute(statement, parameters)).scalars()

    async def exec_driver_sql(self, statement: str, parameters: Any = None) -> Rows:
        return await greenlet_spawn(self.sync_connection.exec_driver_sql, statement, parameters)

    async def run_sync(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """``fn(sync_connection, *args, **kwargs)`` where Core's synchronous API is needed
        (Alembic, the inspector)."""
        return await greenlet_spawn(fn, self.sync_connection, *args, **kwargs)

    async def get_raw_connection(self) -> PoolProxiedConnection:
        """The pooled driver connection (its ``driver_connection`` is aiosqlite's or asyncpg's);
        in a greenlet, as an invalidated connection reconnects here."""
        return await greenlet_spawn(getattr, self.sync_connection, "connection")

    async def execution_options(self, **options: Any) -> AsyncConnection:
        await greenlet_spawn(self.sync_connection.execution_options, **options)
        return self

    async def commit(self) -> None:
        await greenlet_spawn(self.sync_connection.commit)

    async def rollback(self) -> None:
        await greenlet_spawn(self.sync_connection.rollback)

    async def close(self) -> None:
        if self._sync is not None:
            await greenlet_spawn(self._sync.close)


class AsyncTransaction:
    """``async with conn.begin():`` commits on exit, rolls back on an exception."""

    def __init__(self, sync_connection: Connection) -> None:
        self._connection = sync_connection
        self._transaction: Any = None

    async def __aenter__(self) -> AsyncTransaction:
        self._transaction = await greenlet_spawn(self._connection.begin)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await greenlet_spawn(self._transaction.__exit__, *exc_info)


async def _run_to_completion(coro: Coroutine[Any, Any, None]) -> None:
    """Await ``coro`` to its end even if the caller is cancelled meanwhile (then re-raise the
    cancellation), so clean-up never carries on behind a caller that has moved on."""
    task = asyncio.create_task(coro)
    cancelled: asyncio.CancelledError | None = None
    while True:
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as e:
            if task.done():
                raise
            cancelled = e
        else:
            break
    if cancelled is not None:
        raise cancelled
