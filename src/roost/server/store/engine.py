"""Async engine set-up and the transaction helper for both engines.

SQLite: WAL, a busy timeout, and every write transaction opened with ``BEGIN IMMEDIATE`` behind
an in-process lock, so writers are serialised (this is what makes KeyPackage claims atomic there);
reads (``engine.connect()``) use deferred transactions and run alongside.
PostgreSQL: READ COMMITTED transactions; modules use row locks (``FOR UPDATE``) where they must.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from sqlalchemy import event, exc
from sqlalchemy.util import await_

from .async_engine import AsyncConnection, AsyncEngine, create_async_engine


def make_engine(url: str, sqlite_synchronous: str = "full") -> AsyncEngine:
    # hide_parameters: a logged database error shows the statement, never its values (tokens,
    # password hashes, queue ids); observability/redaction.py keeps statements out of logs.
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30}, hide_parameters=True)
        _configure_sqlite(engine, sqlite_synchronous)
        return engine
    engine = create_async_engine(url, pool_size=10, max_overflow=10, hide_parameters=True)
    _check_on_checkout(engine)
    return engine


def _check_on_checkout(engine: AsyncEngine) -> None:
    """Replace a pooled connection the driver already knows is closed (PostgreSQL restarted,
    backend terminated) at checkout, without a round trip: SQLAlchemy's pre-ping costs three
    (BEGIN, ``;``, ROLLBACK) per checkout, as much as a whole send. A connection that died
    unnoticed fails its first statement instead, which invalidates the pool (503, retry)."""

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection, _record, _proxy) -> None:  # type: ignore[no-untyped-def]
        if dbapi_connection.driver_connection.is_closed():
            raise exc.DisconnectionError("the pooled connection is closed")


def _configure_sqlite(engine: AsyncEngine, synchronous: str) -> None:
    if synchronous not in ("full", "normal"):
        raise ValueError(f"sqlite synchronous mode {synchronous!r}")
    # WAL with FULL: every commit is on disk before it is answered (durable through a power
    # loss); NORMAL would only survive a crash of the process (config sqlite_synchronous).
    synchronous_pragma = f"PRAGMA synchronous={synchronous.upper()}"

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        # Take transaction control from the driver so BEGIN is ours (and DDL is transactional).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(synchronous_pragma)
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn) -> None:  # type: ignore[no-untyped-def]
        # Writers take the write lock up front (no lock-upgrade deadlocks); readers use a
        # deferred transaction, which in WAL mode runs alongside a writer.
        write = conn.get_execution_options().get("roost_write", False)
        # On aiosqlite's connection: one hand-off to its thread (SQLAlchemy's statement path
        # takes three: cursor, execute, close). A caller cancelled while it waits never sees
        # the transaction, but the BEGIN still runs: the pool's rollback when the connection
        # returns (queued behind it) ends it, so that rollback must stay.
        statement = "BEGIN IMMEDIATE" if write else "BEGIN"
        try:
            await_(conn.connection.driver_connection.execute(statement))
        except sqlite3.Error as e:  # as SQLAlchemy's path raises it (a lock timeout: 503)
            raise exc.DBAPIError.instance(statement, None, e, sqlite3.Error) from e


log = logging.getLogger("roost.server")

AFTER_COMMIT = "roost_after_commit"


def after_commit(conn: AsyncConnection, callback: Callable[[], None]) -> None:
    """Run ``callback`` after the ``Database.transaction()`` that ``conn`` belongs to commits.

    For wake-ups that must not fire before the data is visible to other connections (realtime
    delivery). Outside such a transaction the callback runs at once (nothing to wait for).
    """
    pending = conn.info.get(AFTER_COMMIT)
    if pending is None:
        callback()
    else:
        pending.append(callback)


BEFORE_COMMIT = "roost_before_commit"


def before_commit(
    conn: AsyncConnection, hook: Callable[[AsyncConnection], Awaitable[None]]
) -> bool:
    """Await ``hook(conn)`` inside the ``Database.transaction()`` of ``conn``, just before it
    commits (e.g. a batched ``pg_notify``, delivered only if the commit succeeds). False when
    ``conn`` is not in such a transaction (the caller then acts at once)."""
    pending = conn.info.get(BEFORE_COMMIT)
    if pending is None:
        return False
    pending.append(hook)
    return True


class Database:
    """The engine plus ``transaction()``: one atomic unit of work on either engine."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "full") -> None:
        self.url = url
        self.engine = make_engine(url, sqlite_synchronous)
        self.is_sqlite = url.startswith("sqlite")
        # One writer at a time in this process; BEGIN IMMEDIATE covers other processes.
        self._sqlite_lock = asyncio.Lock() if self.is_sqlite else None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """Commit on success, roll back on any exception (so errors change nothing).

        Callbacks registered with ``after_commit(conn, fn)`` run once the commit is done (and
        the SQLite write lock released); a rollback drops them.
        """
        callbacks: list[Callable[[], None]] = []
        hooks: list[Callable[[AsyncConnection], Awaitable[None]]] = []
        if self._sqlite_lock is not None:
            async with self._sqlite_lock, self.engine.connect() as conn:
                await conn.execution_options(roost_write=True)
                async with conn.begin():
                    conn.info[AFTER_COMMIT] = callbacks
                    conn.info[BEFORE_COMMIT] = hooks
                    try:
                        yield conn
                        await _run_hooks(conn, hooks)
                    finally:
                        conn.info.pop(AFTER_COMMIT, None)
                        conn.info.pop(BEFORE_COMMIT, None)
        else:
            async with self.engine.begin() as conn:
                conn.info[AFTER_COMMIT] = callbacks
                conn.info[BEFORE_COMMIT] = hooks
                try:
                    yield conn
                    await _run_hooks(conn, hooks)
                finally:
                    conn.info.pop(AFTER_COMMIT, None)
                    conn.info.pop(BEFORE_COMMIT, None)
        for callback in callbacks:
            try:
                callback()
            except Exception:  # the data is committed: a failed wake-up must not undo the answer
                log.exception("after-commit callback failed")

    async def dispose(self) -> None:
        await self.engine.dispose()


async def _run_hooks(
    conn: AsyncConnection, hooks: list[Callable[[AsyncConnection], Awaitable[None]]]
) -> None:
    i = 0
    while i < len(hooks):  # a hook may register another
        await hooks[i](conn)
        i += 1
