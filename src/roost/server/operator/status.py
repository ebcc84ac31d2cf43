"""Read-only status for operators and metrics: queue depths, outboxes, storage.

Only aggregates are reported (counts, ages, sizes): never queue ids, user ids or payloads.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import sqlalchemy as sa

from ..auth.admin import unprocessed_account_events
from ..federation.outbox import federation_outbox_status
from ..queues.status import queue_depths
from ..store import Database
from ..store.async_engine import AsyncConnection
from ..store.tables import metadata


@dataclass(frozen=True, slots=True)
class QueueKindStatus:
    kind: str  # "group" (QS group-message queues) | "direct" (per-user direct queues)
    queues: int
    depth: int  # stored, not yet acked items
    oldest_age_seconds: int | None  # None: empty


@dataclass(frozen=True, slots=True)
class OutboxStatus:
    outbox: str  # "account_events" | "federation" (one row per destination)
    depth: int
    oldest_age_seconds: int | None
    destination: str | None = None  # per-destination rows (federation)
    # federation only: consecutive failed attempts, seconds until the next one (None: nothing
    # queued), the last failure (no payloads), and whether the policy now holds the items
    attempts: int = 0
    next_attempt_in_seconds: int | None = None
    last_error: str | None = None
    blocked: bool = False
    state: str | None = None  # federation: "blocked" | "unreachable" | "sending"


@dataclass(frozen=True, slots=True)
class StorageStats:
    engine: str
    database_bytes: int
    rows: dict[str, int]
    asset_bytes: int | None  # None: no assets module in this installation


def _age(now: float, oldest: int | None) -> int | None:
    return None if oldest is None else max(0, int(now - oldest))


async def queue_status(conn: AsyncConnection, now: float) -> list[QueueKindStatus]:
    return [
        QueueKindStatus(q.kind, q.queues, q.depth, _age(now, q.oldest_created_at))
        for q in await queue_depths(conn)
    ]


OutboxSource = Callable[[AsyncConnection, float], Awaitable[list[OutboxStatus]]]


async def account_events_outbox(conn: AsyncConnection, now: float) -> list[OutboxStatus]:
    """The AS -> DS outbox (deletions that become server-issued Removes)."""
    count, oldest = await unprocessed_account_events(conn)
    return [OutboxStatus("account_events", count, _age(now, oldest))]


async def federation_outbox(conn: AsyncConnection, now: float) -> list[OutboxStatus]:
    """The federation outbox, one row per destination domain (federation/outbox.py)."""
    return [
        OutboxStatus(
            "federation",
            d.depth,
            d.oldest_age_seconds,
            destination=d.destination,
            attempts=d.attempts,
            next_attempt_in_seconds=d.next_attempt_in_seconds,
            last_error=d.last_error,
            blocked=d.blocked,
            state=d.state,
        )
        for d in await federation_outbox_status(conn, now)
    ]


OUTBOX_SOURCES: list[OutboxSource] = [account_events_outbox, federation_outbox]


async def outbox_status(conn: AsyncConnection, now: float) -> list[OutboxStatus]:
    out: list[OutboxStatus] = []
    for source in OUTBOX_SOURCES:
        out.extend(await source(conn, now))
    return out


def federation_available() -> bool:
    return any(s is not account_events_outbox for s in OUTBOX_SOURCES)


async def database_bytes(db: Database, conn: AsyncConnection) -> int:
    if db.is_sqlite:
        pages = (await conn.exec_driver_sql("PRAGMA page_count")).scalar_one()
        size = (await conn.exec_driver_sql("PRAGMA page_size")).scalar_one()
        path = db.engine.url.database or ""
        wal = os.path.getsize(path + "-wal") if path and os.path.exists(path + "-wal") else 0
        return int(pages) * int(size) + wal
    return int(
        (await conn.execute(sa.text("SELECT pg_database_size(current_database())"))).scalar_one()
    )


_ASSET_SIZE_COLUMNS = ("size", "size_bytes", "byte_size", "length")


async def asset_bytes(conn: AsyncConnection) -> int | None:
    """Sum of stored asset sizes if an assets module is installed."""
    total: int | None = None
    for table in metadata.sorted_tables:
        if not table.name.startswith("asset"):
            continue
        col = next((table.c[c] for c in _ASSET_SIZE_COLUMNS if c in table.c), None)
        if col is None:
            continue
        value = (await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(col), 0)))).scalar_one()
        total = (total or 0) + int(value)
    return total


async def storage_stats(db: Database) -> StorageStats:
    async with db.engine.connect() as conn:
        rows = {}
        for table in metadata.sorted_tables:
            rows[table.name] = (
                await conn.execute(sa.select(sa.func.count()).select_from(table))
            ).scalar_one()
        return StorageStats(
            "sqlite" if db.is_sqlite else "postgresql",
            await database_bytes(db, conn),
            dict(sorted(rows.items())),
            await asset_bytes(conn),
        )
