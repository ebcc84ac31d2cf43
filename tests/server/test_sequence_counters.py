"""Sequence counters reserved in ranges on SQLite (``store/counters.py``): the DS's group seqs
and the Queuing Service's queue seqs of a batch of sends come from one reservation per table."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import sqlalchemy as sa

from roost.server.store import Database
from roost.server.store.counters import reserve_ranges

_meta = sa.MetaData()
counters = sa.Table(
    "counters",
    _meta,
    sa.Column("id", sa.LargeBinary, primary_key=True),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("owner", sa.Text, nullable=False),
)


async def _db(tmp_path: Path, rows: dict[bytes, int]) -> Database:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'counters.db'}")
    async with db.transaction() as conn:
        await conn.run_sync(_meta.create_all)
        await conn.execute(
            sa.insert(counters),
            [{"id": k, "last_seq": v, "owner": f"owner-{v}"} for k, v in rows.items()],
        )
    return db


async def _last_seqs(db: Database) -> dict[bytes, int]:
    async with db.engine.connect() as conn:
        return {r.id: r.last_seq for r in await conn.execute(sa.select(counters))}


async def test_each_row_gets_its_range_and_extra_columns(tmp_path: Path) -> None:
    db = await _db(tmp_path, {b"a": 0, b"b": 7, b"c": 41})
    try:
        async with db.transaction() as conn:
            got = await reserve_ranges(
                conn, counters, Counter({b"c": 3, b"a": 1, b"b": 2}), counters.c.owner
            )
        # The value before the range (the range is +1 … +count) and the extra columns.
        assert got == {b"a": [0, "owner-0"], b"b": [7, "owner-7"], b"c": [41, "owner-41"]}
        assert await _last_seqs(db) == {b"a": 1, b"b": 9, b"c": 44}
    finally:
        await db.dispose()


async def test_unknown_rows_are_left_out(tmp_path: Path) -> None:
    db = await _db(tmp_path, {b"a": 5})
    try:
        async with db.transaction() as conn:
            got = await reserve_ranges(conn, counters, Counter({b"a": 2, b"gone": 4}))
            assert await reserve_ranges(conn, counters, Counter()) == {}
        assert got == {b"a": [5]}
        assert await _last_seqs(db) == {b"a": 7}
    finally:
        await db.dispose()


async def test_a_batch_wider_than_sqlites_parameter_limit(tmp_path: Path) -> None:
    # A batch of sends to large groups touches thousands of queues at once.
    ids = [i.to_bytes(4, "big") for i in range(20_000)]
    db = await _db(tmp_path, dict.fromkeys(ids, 10))
    try:
        async with db.transaction() as conn:
            got = await reserve_ranges(
                conn, counters, Counter({i: 1 + n % 3 for n, i in enumerate(ids)})
            )
        assert len(got) == len(ids)
        assert all(v == [10] for v in got.values())
        after = await _last_seqs(db)
        assert all(after[i] == 11 + n % 3 for n, i in enumerate(ids))
    finally:
        await db.dispose()
