"""Per-row sequence counters (a ``last_seq`` column keyed by ``id``), reserved in ranges.

The generic (SQLite) form of the batched writes that PostgreSQL does in one statement: the DS
takes consecutive ``group_seq``s per group, the Queuing Service consecutive seqs per queue.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

# Rows per statement: three parameters each, well inside SQLite's 32,766 host parameters.
ROWS_PER_STATEMENT = 1000


async def reserve_ranges(
    conn: AsyncConnection, table: sa.Table, counts: Counter[bytes], *extra: sa.Column[Any]
) -> dict[bytes, list[Any]]:
    """Add each row's count to its ``last_seq``: one ``UPDATE … RETURNING`` for the whole batch
    (per ``ROWS_PER_STATEMENT`` rows), not one per row — on SQLite every statement is a round
    trip to the driver's thread. SQLite only: its writers are serialised (``BEGIN IMMEDIATE``),
    so no lock order is needed. Returns id -> [last seq before the range, *extra columns] for
    the rows that exist: the range is that value + 1 … + count."""
    out: dict[bytes, list[Any]] = {}
    ids = sorted(counts)
    for i in range(0, len(ids), ROWS_PER_STATEMENT):
        chunk = ids[i : i + ROWS_PER_STATEMENT]
        bump = sa.case({row_id: counts[row_id] for row_id in chunk}, value=table.c.id)
        rows = await conn.execute(
            sa.update(table)
            .where(table.c.id.in_(chunk))
            .values(last_seq=table.c.last_seq + bump)
            .returning(table.c.id, table.c.last_seq, *extra)
        )
        for row in rows:
            out[row[0]] = [row[1] - counts[row[0]], *row[2:]]
    return out
