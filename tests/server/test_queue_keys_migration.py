"""Upgrading to queue keys keeps every queue, its id and its messages; each queue's creator
claims its key once, and from then on no stored row says whose the queue is."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from roost.server.config import Limits
from roost.server.errors import Problem
from roost.server.queues.seal import QueueSeal
from roost.server.queues.service import QueueService
from roost.server.queues.tables import queue_allowances, queue_messages, queues
from roost.server.seal_key import SealKeyFile
from roost.server.store import Database
from roost.server.store.migrate import upgrade

from .migration_helpers import upgrade_to

ALICE = "0b6f3c1e-0000-4000-8000-00000000000a"
BOB = "0b6f3c1e-0000-4000-8000-00000000000b"


async def _names(db: Database) -> dict[bytes, str]:
    """Each queue's stored cells (its row and its messages), as text a reader could search."""
    async with db.engine.connect() as conn:
        rows = [*(await conn.execute(sa.select(queues))).all()]
        rows += (await conn.execute(sa.select(queue_messages))).all()
    out: dict[bytes, str] = {}
    for row in rows:
        text = " ".join(bytes(c).decode("latin-1") if isinstance(c, bytes) else str(c) for c in row)
        out[row[0]] = out.get(row[0], "") + text
    return out


async def test_old_queues_survive_the_upgrade_and_their_creator_claims_the_key(
    empty_db: Database, tmp_path: Path
) -> None:
    await upgrade_to(empty_db, "0013")
    old = {b"A" * 16: ALICE, b"a" * 16: ALICE, b"B" * 16: BOB}
    async with empty_db.transaction() as conn:
        for qid, owner in old.items():
            await conn.execute(
                sa.text(
                    "INSERT INTO queues (id, owner_client_uuid, last_seq, created_at)"
                    " VALUES (:id, :o, 2, 100)"
                ),
                {"id": qid, "o": owner},
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO queue_messages (queue_id, seq, payload, created_at)"
                    " VALUES (:id, 2, :p, 100)"
                ),
                {"id": qid, "p": b"item of " + qid},
            )
    await upgrade(empty_db)

    service = QueueService(
        empty_db, Limits(max_queues_per_client=3), QueueSeal(SealKeyFile(tmp_path / "k"))
    )
    async with empty_db.engine.connect() as conn:
        counts = dict((await conn.execute(sa.select(queue_allowances))).all())
        # An unclaimed queue cannot be read without a key, not even by its creator.
        with pytest.raises(Problem) as refused:
            await service.check_key(conn, b"A" * 16, None)
    assert counts == {ALICE: 2, BOB: 1}
    assert refused.value.code == "queue_key_required"

    with pytest.raises(Problem) as not_yours:
        await service.claim_key(b"A" * 16, BOB)
    assert not_yours.value.status == 403
    key = await service.claim_key(b"A" * 16, ALICE)
    with pytest.raises(Problem) as twice:  # a key is given once
        await service.claim_key(b"A" * 16, ALICE)
    assert twice.value.status == 403

    fetched = await service.fetch(b"A" * 16, key, 0, 10, 1 << 20)
    assert fetched.messages == [(2, b"item of " + b"A" * 16)]
    assert await service.push_client_of(b"A" * 16) == ALICE  # push still finds the client
    assert await service.push_client_of(b"B" * 16) == BOB  # unclaimed: the legacy owner
    # The limit counts the old queues: ALICE holds 2 of 3.
    await service.create_queue(ALICE)
    with pytest.raises(Problem) as full:
        await service.create_queue(ALICE)
    assert full.value.code == "too_many_queues"

    names = await _names(empty_db)
    claimed_or_new = [qid for qid in names if qid not in (b"a" * 16, b"B" * 16)]
    assert len(claimed_or_new) == 2
    for qid in claimed_or_new:  # the claimed queue and the new one name nobody
        assert ALICE not in names[qid]
    assert ALICE in names[b"a" * 16]  # not claimed yet: still named
    assert BOB in names[b"B" * 16]


async def test_a_removed_clients_queues_go_with_it_though_no_row_names_it(
    empty_db: Database, tmp_path: Path
) -> None:
    await upgrade(empty_db)
    service = QueueService(empty_db, Limits(), QueueSeal(SealKeyFile(tmp_path / "k")))
    alice_queues = [(await service.create_queue(ALICE))[0] for _ in range(3)]
    bob_queue, bob_key = await service.create_queue(BOB)
    for qid in [*alice_queues, bob_queue]:
        await service.enqueue(qid, b"x")
    async with empty_db.transaction() as conn:
        await service.delete_client_queues(conn, ALICE)
    async with empty_db.engine.connect() as conn:
        left = {r[0] for r in await conn.execute(sa.select(queues.c.id))}
        allowances = dict((await conn.execute(sa.select(queue_allowances))).all())
    assert left == {bob_queue}
    assert allowances == {BOB: 1}
    assert (await service.fetch(bob_queue, bob_key, 0, 10, 1 << 20)).messages == [(1, b"x")]


async def test_a_seal_opens_only_under_its_own_key(tmp_path: Path) -> None:
    sealed = QueueSeal(SealKeyFile(tmp_path / "one")).seal(ALICE)
    assert QueueSeal(SealKeyFile(tmp_path / "one")).open(sealed) == ALICE  # the key file is reused
    assert QueueSeal(SealKeyFile(tmp_path / "two")).open(sealed) is None
    assert QueueSeal(SealKeyFile(tmp_path / "one")).seal(ALICE) != sealed  # no two seals alike
    assert (tmp_path / "one").stat().st_mode & 0o077 == 0
