"""Per-row sequence counters (a ``last_seq`` column keyed by ``id``), reserved in ranges.

The generic (SQLite) form of the batched writes that PostgreSQL does in one statement: the DS
takes consecutive ``group_seq``s per group, the Queuing Service consecutive seqs per queue.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection


async def reserve_ranges(
    conn: AsyncConnection, table: sa.Table, counts: Counter[bytes], *extra: sa.Column[Any]
) -> dict[bytes, list[Any]]:
    """Add each row's count to its ``last_seq``, rows in id order (the lock order everywhere),
    one statement per row. Returns id -> [last seq before the range, *extra columns] for the
    rows that exist: the range is that value + 1 … + count."""
    out: dict[bytes, list[Any]] = {}
    for row_id in sorted(counts):
        got = (
            await conn.execute(
                sa.update(table)
                .where(table.c.id == row_id)
                .values(last_seq=table.c.last_seq + counts[row_id])
                .returning(table.c.last_seq, *extra)
            )
        ).first()
        if got is not None:
            out[row_id] = [got[0] - counts[row_id], *got[1:]]
    return out
