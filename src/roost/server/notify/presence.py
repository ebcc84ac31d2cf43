"""Cross-process presence: which clients hold a realtime socket to *some* ``roost serve`` process.

The hub knows only this process's sockets. With several processes on one PostgreSQL, the push
decision must also know about the others', or a client connected to process B would be pushed
for a message sent through process A. Each process therefore publishes its connected clients in
``notify_presence`` (one row per client and process):

- the hub calls ``mark(client, connected)`` on attach/detach (synchronous, never blocks); one
  background task writes the changes in batches (upsert on connect, delete on disconnect);
- the same task refreshes every row of this process with one heartbeat UPDATE each
  ``ttl / 3`` seconds, and deletes rows that lapsed. A crashed process stops refreshing, so its
  rows stop counting after at most ``ttl`` seconds: its clients become pushable again;
- expiry uses the database's clock, so processes on hosts with skewed clocks agree.

One task does both writes, so a heartbeat never re-inserts a row a concurrent disconnect
deleted. Presence is advice for push: a failed write is retried and logged, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time

import sqlalchemy as sa

from ..store import Database
from ..store.async_engine import AsyncConnection
from ..store.dialect_insert import pg_insert
from .tables import notify_presence as t

log = logging.getLogger("roost.server.notify")

# PostgreSQL's wall clock in milliseconds (clock_timestamp: not frozen at transaction start).
_DB_NOW_MS = sa.literal_column(
    "(extract(epoch from clock_timestamp()) * 1000)::bigint", sa.BigInteger
)
SETTLE_TIMEOUT_SECONDS = 2.0  # a slow database delays a socket's "ready" at most this long
RETRY_SECONDS = 1.0
BATCH_ROWS = 1000  # rows per statement (PostgreSQL allows 32767 bind parameters)


def new_process_id() -> str:
    """Readable for an operator looking at the table (host:pid), unique across restarts."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"


class Presence:
    def __init__(self, db: Database, ttl_seconds: float, process_id: str | None = None) -> None:
        if db.is_sqlite:
            raise ValueError("presence is for several processes on PostgreSQL")
        self.db = db
        self.ttl_ms = int(ttl_seconds * 1000)
        self.heartbeat_seconds = ttl_seconds / 3
        self.process_id = process_id or new_process_id()
        self._local: set[str] = set()  # clients connected here (what the table should say)
        self._pending: dict[str, bool] = {}  # changes not yet written: client -> connected
        self._dirty = asyncio.Event()
        self._marked = 0  # generation of the latest mark
        self._written = 0  # generation covered by the latest write attempt
        self._progress = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    # ---- the hub's side (synchronous) ------------------------------------------------------

    def mark(self, client_uuid: str, connected: bool) -> None:
        if connected:
            self._local.add(client_uuid)
        else:
            self._local.discard(client_uuid)
        self._pending[client_uuid] = connected
        self._marked += 1
        self._dirty.set()

    async def settled(self) -> None:
        """Wait until every mark made so far was written (or a write was attempted)."""
        if self._task is None or self._task.done():
            return
        target = self._marked
        with contextlib.suppress(TimeoutError):
            async with self._progress:
                await asyncio.wait_for(
                    self._progress.wait_for(lambda: self._written >= target),
                    SETTLE_TIMEOUT_SECONDS,
                )

    # ---- the push decision's side ----------------------------------------------------------

    async def online_elsewhere(self, client_uuid: str) -> bool:
        """Whether another live process holds a socket of ``client_uuid`` (one indexed read)."""
        async with self.db.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(sa.literal(1))
                    .where(
                        t.c.client_uuid == client_uuid,
                        t.c.process_id != self.process_id,
                        t.c.expires_at_ms > _DB_NOW_MS,
                    )
                    .limit(1)
                )
            ).first()
        return row is not None

    # ---- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="roost-presence")

    async def stop(self) -> None:
        """Stop writing and withdraw this process's rows (a crash leaves them to expire)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            async with asyncio.timeout(5):
                async with self.db.transaction() as conn:
                    await conn.execute(sa.delete(t).where(t.c.process_id == self.process_id))
        except Exception as e:  # noqa: BLE001 - the rows expire on their own
            log.warning("presence rows not withdrawn at shutdown: %s", type(e).__name__)

    async def _run(self) -> None:
        next_beat = time.monotonic()  # first heartbeat at once: sweeps rows of dead processes
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), max(0.0, next_beat - time.monotonic()))
            try:
                if self._dirty.is_set():
                    await self._write_marks()
                if time.monotonic() >= next_beat:
                    await self._heartbeat()
                    next_beat = time.monotonic() + self.heartbeat_seconds
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - database hiccup: retry shortly
                log.warning("presence write failed: %s", type(e).__name__)
                await asyncio.sleep(RETRY_SECONDS)

    async def _write_marks(self) -> None:
        self._dirty.clear()
        batch, self._pending = self._pending, {}
        generation = self._marked
        try:
            async with self.db.transaction() as conn:
                await self._apply(conn, batch)
        except BaseException:
            for client_uuid, connected in batch.items():  # a newer mark wins over the retry
                self._pending.setdefault(client_uuid, connected)
            self._dirty.set()
            raise
        finally:
            await self._advance(generation)

    async def _advance(self, generation: int) -> None:
        async with self._progress:
            self._written = max(self._written, generation)
            self._progress.notify_all()

    async def _apply(self, conn: AsyncConnection, batch: dict[str, bool]) -> None:
        gone = [c for c, connected in batch.items() if not connected]
        here = [c for c, connected in batch.items() if connected]
        for i in range(0, len(gone), BATCH_ROWS):
            chunk = gone[i : i + BATCH_ROWS]
            await conn.execute(
                sa.delete(t).where(t.c.process_id == self.process_id, t.c.client_uuid.in_(chunk))
            )
        if here:
            await self._upsert(conn, here)

    async def _upsert(self, conn: AsyncConnection, clients: list[str]) -> None:
        expires = _DB_NOW_MS + self.ttl_ms
        ordered = sorted(clients)  # one lock order for every writer
        for i in range(0, len(ordered), BATCH_ROWS):
            rows = [
                {"client_uuid": c, "process_id": self.process_id, "expires_at_ms": expires}
                for c in ordered[i : i + BATCH_ROWS]
            ]
            await conn.execute(
                pg_insert()(t)
                .values(rows)
                .on_conflict_do_update(
                    index_elements=["client_uuid", "process_id"], set_={"expires_at_ms": expires}
                )
            )

    async def _heartbeat(self) -> None:
        async with self.db.transaction() as conn:
            refreshed = await conn.execute(
                sa.update(t)
                .where(t.c.process_id == self.process_id)
                .values(expires_at_ms=_DB_NOW_MS + self.ttl_ms)
            )
            if refreshed.rowcount < len(self._local):
                # Rows lapsed while the database was unreachable (and another process swept
                # them): publish every local client again. Pending marks are applied after this.
                await self._upsert(conn, list(self._local))
            await conn.execute(sa.delete(t).where(t.c.expires_at_ms <= _DB_NOW_MS))
