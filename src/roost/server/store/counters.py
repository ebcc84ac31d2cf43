"""Per-row sequence counters (a ``last_seq`` column keyed by ``id``), reserved in ranges.

The generic (SQLite) form of the batched writes that PostgreSQL does in one statement: the DS
takes consecutive ``group_seq``s per group, the Queuing Service consecutive seqs per queue.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import sqlalchemy as sa

from .async_engine import AsyncConnection
from .sqlite_driver import fetch_all

# Rows per statement: three parameters each, well inside SQLite's 32,766 host parameters.
ROWS_PER_STATEMENT = 1000


async def reserve_ranges(
    conn: AsyncConnection, table: sa.Table, counts: Counter[bytes], *extra: sa.Column[Any]
) -> dict[bytes, list[Any]]:
    """Add each row's count to its ``last_seq``: one ``UPDATE … RETURNING`` for the whole batch
    (per ``ROWS_PER_STATEMENT`` rows), not one per row, on the driver (``sqlite_driver.py``).
    SQLite only: its writers are serialised (``BEGIN IMMEDIATE``), so no lock order is needed.
    Returns id -> [last seq before the range, *extra columns] for the rows that exist: the
    range is that value + 1 … + count."""
    out: dict[bytes, list[Any]] = {}
    ids = sorted(counts)
    returning = ", ".join(["id", "last_seq", *(c.name for c in extra)])
    for i in range(0, len(ids), ROWS_PER_STATEMENT):
        chunk = ids[i : i + ROWS_PER_STATEMENT]
        # Table and column names come from the schema, never from input; values are bound.
        sql = (
            f"UPDATE {table.name} SET last_seq = last_seq + CASE id"
            f" {' '.join(['WHEN ? THEN ?'] * len(chunk))} END"
            f" WHERE id IN ({', '.join(['?'] * len(chunk))}) RETURNING {returning}"
        )
        params = [v for row_id in chunk for v in (row_id, counts[row_id])] + chunk
        for row in await fetch_all(conn, sql, params):
            out[row[0]] = [row[1] - counts[row[0]], *row[2:]]
    return out
