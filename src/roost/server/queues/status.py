"""Aggregate depths of the queue module's queues, for operators and metrics (counts and ages
only: never queue ids or payloads)."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from ..store.async_engine import AsyncConnection
from .tables import direct_messages, direct_queues, queue_messages, queues


@dataclass(frozen=True, slots=True)
class QueueDepth:
    kind: str  # "group" (QS group-message queues) | "direct" (per-user direct queues)
    queues: int
    depth: int  # stored, not yet acked items
    oldest_created_at: int | None  # None: empty


async def queue_depths(conn: AsyncConnection) -> list[QueueDepth]:
    out = []
    for kind, holder, items in (
        ("group", queues, queue_messages),
        ("direct", direct_queues, direct_messages),
    ):
        count, oldest = (
            await conn.execute(sa.select(sa.func.count(), sa.func.min(items.c.created_at)))
        ).one()
        n_queues = (await conn.execute(sa.select(sa.func.count()).select_from(holder))).scalar_one()
        out.append(QueueDepth(kind, n_queues, count, oldest))
    return out
