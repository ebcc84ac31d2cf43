"""Queues: per-client pseudonymous group-message queues (QS) and per-user direct queues (AS).

Sequence numbers are gap-free per queue: the counter row is locked (``FOR UPDATE`` on
PostgreSQL; the SQLite write transaction is exclusive anyway) and bumped in the same
transaction as the insert, so a rollback leaves no hole.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..config import Limits
from ..errors import Problem
from ..store import Database
from ..store.counters import reserve_ranges
from ..store.dialect_insert import dialect_insert
from ..store.engine import after_commit
from ..store.pg_driver import pg_driver
from .tables import direct_cursors, direct_messages, direct_queues, queue_messages, queues

QUEUE_ID_LEN = 16

# The DS fan-out on PostgreSQL as one statement (data-modifying CTEs all run), run on the
# driver connection (``store/pg_driver.py``): $1 queue ids, $2 payloads, $3 created_at.
_FANOUT_PG = """
    WITH locked AS (
        SELECT id FROM queues WHERE id = ANY($1::bytea[]) ORDER BY id FOR UPDATE
    ), bumped AS (
        UPDATE queues SET last_seq = queues.last_seq + 1 FROM locked
        WHERE queues.id = locked.id
        RETURNING queues.id, queues.last_seq, queues.owner_client_uuid
    ), inserted AS (
        INSERT INTO queue_messages (queue_id, seq, message_id, payload, created_at)
        SELECT b.id, b.last_seq, NULL, p.payload, $3::bigint
        FROM bumped b
        JOIN unnest($1::bytea[], $2::bytea[]) AS p(id, payload)
        ON p.id = b.id
    )
    SELECT id, last_seq, owner_client_uuid FROM bumped
"""


# Several payloads per queue in one statement (a group-committed batch of DS sends): each
# queue's counter goes up by its number of items, its k-th item (in array order) gets the k-th
# new seq. Rows come back in array order ($4: created_at).
_FANOUT_SEQ_PG = """
    WITH p AS (
        SELECT id, payload, ord, row_number() OVER (PARTITION BY id ORDER BY ord) AS k
        FROM unnest($1::bytea[], $2::bytea[]) WITH ORDINALITY AS p(id, payload, ord)
    ), n AS (
        SELECT id, count(*) AS c FROM p GROUP BY id
    ), locked AS (
        SELECT id FROM queues WHERE id = ANY($3::bytea[]) ORDER BY id FOR UPDATE
    ), bumped AS (
        UPDATE queues SET last_seq = queues.last_seq + n.c FROM locked JOIN n ON n.id = locked.id
        WHERE queues.id = locked.id
        RETURNING queues.id, queues.last_seq - n.c AS base, queues.owner_client_uuid
    ), inserted AS (
        INSERT INTO queue_messages (queue_id, seq, message_id, payload, created_at)
        SELECT b.id, b.base + p.k, NULL, p.payload, $4::bigint
        FROM bumped b JOIN p ON p.id = b.id
    )
    SELECT b.id, b.base + p.k, b.owner_client_uuid, p.ord
    FROM bumped b JOIN p ON p.id = b.id ORDER BY p.ord
"""


# Several queues' acks as one statement (PostgreSQL, on the driver: $1 queue ids, $2 up_to).
# The transaction commits without waiting for its WAL flush (synchronous_commit off, for this
# transaction only): an ack lost in a crash only leaves items the client already processed in
# its queue (it resumes from its own positions and skips them), and not waiting keeps the acks'
# fsyncs out of the way of the sends' durable commits.
_ACK_PG = """
    WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true))
    DELETE FROM queue_messages m
    USING unnest($1::bytea[], $2::bigint[]) AS a(id, up_to), relaxed
    WHERE m.queue_id = a.id AND m.seq <= a.up_to
"""
# Acks written in one transaction at most (a burst beyond waits for the next).
ACK_BATCH_MAX = 512


@dataclass(slots=True)
class _PendingAck:
    client_uuid: str
    acks: dict[bytes, int]
    owned: set[bytes]
    done: asyncio.Future[dict[bytes, str]]


@dataclass(frozen=True, slots=True)
class WakeUp:
    """One committed enqueue, as told to the realtime listeners."""

    owner: str  # the owning client uuid (group queue) or user uuid (direct queue)
    queue_id: bytes | None  # None: the user's direct queue
    seq: int
    payload: bytes | None  # None: not carried along (e.g. from another process); read it


@dataclass(frozen=True, slots=True)
class FetchResult:
    messages: list[tuple[int, bytes]]
    last_seq: int
    has_more: bool


class QueueService:
    def __init__(self, db: Database, limits: Limits, clock: Callable[[], float] = time.time):
        self.db = db
        self.limits = limits
        self.clock = clock
        # Wake-up hooks (realtime listeners) run after the enqueuing transaction committed,
        # whichever module's transaction it is (see ``_wake_after_commit``).
        self.listeners: list[Callable[[WakeUp], None]] = []
        # Ack hooks: (client uuid, queue id or None for the direct queue, up_to) after commit,
        # so a realtime connection's unacked window also frees on acks made over HTTP.
        self.ack_listeners: list[Callable[[str, bytes | None, int], None]] = []
        # The same events told inside the transaction, before it commits (the PostgreSQL
        # LISTEN/NOTIFY bridge publishes them there, so other processes hear only commits).
        self.tx_listeners: list[Callable[[AsyncConnection, WakeUp], None]] = []
        self.tx_ack_listeners: list[Callable[[AsyncConnection, str, bytes | None, int], None]] = []
        # Group commit of realtime acks (``ack_many``): waiting acks and the writer task.
        self._ack_pending: list[_PendingAck] = []
        self._ack_writer: asyncio.Task[None] | None = None

    def _wake_after_commit(self, conn: AsyncConnection, wake: WakeUp) -> None:
        for tx_listener in self.tx_listeners:
            tx_listener(conn, wake)
        if self.listeners:
            after_commit(conn, lambda: self._wake(wake))

    def _acked_after_commit(
        self, conn: AsyncConnection, client_uuid: str, queue_id: bytes | None, up_to: int
    ) -> None:
        for tx_listener in self.tx_ack_listeners:
            tx_listener(conn, client_uuid, queue_id, up_to)
        for listener in self.ack_listeners:
            after_commit(conn, partial(listener, client_uuid, queue_id, up_to))

    def _wake(self, wake: WakeUp) -> None:
        for listener in self.listeners:
            listener(wake)

    # ---- group-message queues -----------------------------------------------------------

    async def create_queue(self, owner_client_uuid: str) -> bytes:
        queue_id = secrets.token_bytes(QUEUE_ID_LEN)
        async with self.db.transaction() as conn:
            count = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(queues)
                    .where(queues.c.owner_client_uuid == owner_client_uuid)
                )
            ).scalar_one()
            if count >= self.limits.max_queues_per_client:
                raise Problem(
                    409, "too_many_queues", "this client has the maximum number of queues"
                )
            await conn.execute(
                sa.insert(queues).values(
                    id=queue_id,
                    owner_client_uuid=owner_client_uuid,
                    last_seq=0,
                    created_at=int(self.clock()),
                )
            )
        return queue_id

    async def _owned(self, conn: AsyncConnection, queue_id: bytes, client_uuid: str) -> None:
        owner = (
            await conn.execute(sa.select(queues.c.owner_client_uuid).where(queues.c.id == queue_id))
        ).scalar_one_or_none()
        if owner is None:
            raise Problem(404, "queue_not_found", "no such queue")
        if owner != client_uuid:
            raise Problem(403, "forbidden", "only the queue's owner may do this")

    async def delete_queue(self, queue_id: bytes, client_uuid: str) -> None:
        async with self.db.transaction() as conn:
            await self._owned(conn, queue_id, client_uuid)
            await conn.execute(
                sa.delete(queue_messages).where(queue_messages.c.queue_id == queue_id)
            )
            await conn.execute(sa.delete(queues).where(queues.c.id == queue_id))
            # Everything in it is gone: as if acked (frees a realtime connection's window).
            self._acked_after_commit(conn, client_uuid, queue_id, (1 << 63) - 1)

    async def enqueue(self, queue_id: bytes, payload: bytes, message_id: str | None = None) -> int:
        """Append ``payload``; a repeated ``message_id`` returns the first copy's seq."""
        async with self.db.transaction() as conn:
            return await self.enqueue_in(conn, queue_id, payload, message_id)

    async def enqueue_in(
        self, conn: AsyncConnection, queue_id: bytes, payload: bytes, message_id: str | None
    ) -> int:
        """Enqueue inside the caller's transaction (used by the DS and federation).

        Realtime listeners are woken after that transaction commits."""
        row = (
            await conn.execute(
                sa.select(queues.c.last_seq, queues.c.owner_client_uuid)
                .where(queues.c.id == queue_id)
                .with_for_update()
            )
        ).first()
        if row is None:
            raise Problem(404, "queue_not_found", "no such queue")
        last, owner = row
        if message_id is not None:
            existing = (
                await conn.execute(
                    sa.select(queue_messages.c.seq).where(
                        queue_messages.c.queue_id == queue_id,
                        queue_messages.c.message_id == message_id,
                    )
                )
            ).scalar_one_or_none()
            if existing is not None:
                return existing
        seq = last + 1
        await conn.execute(sa.update(queues).where(queues.c.id == queue_id).values(last_seq=seq))
        await conn.execute(
            sa.insert(queue_messages).values(
                queue_id=queue_id,
                seq=seq,
                message_id=message_id,
                payload=payload,
                created_at=int(self.clock()),
            )
        )
        self._wake_after_commit(conn, WakeUp(owner, queue_id, seq, payload))
        return seq

    async def check_owner(self, conn: AsyncConnection, queue_id: bytes, client_uuid: str) -> None:
        """404 for an unknown queue, 403 for another client's (used by the DS)."""
        await self._owned(conn, queue_id, client_uuid)

    async def enqueue_many_in(
        self, conn: AsyncConnection, items: list[tuple[bytes, bytes]]
    ) -> None:
        """Fan-out for the DS: one payload to each of several distinct queues in the caller's
        transaction — one counter update and one multi-row insert. The counters are locked in
        queue-id order (no deadlock between concurrent fan-outs); unknown queues are skipped."""
        payloads = dict(items)
        if conn.dialect.name == "postgresql":
            rows = await self._enqueue_many_pg(conn, payloads)
        else:
            rows = await self._enqueue_many_generic(conn, payloads)
        if self.listeners or self.tx_listeners:
            for qid, seq, owner in rows:
                self._wake_after_commit(conn, WakeUp(owner, qid, seq, payloads[qid]))

    async def enqueue_sequence_in(
        self, conn: AsyncConnection, items: list[tuple[bytes, bytes]]
    ) -> None:
        """Like ``enqueue_many_in`` but a queue may appear several times (the DS's batched
        sends): each queue's items get consecutive seqs in list order — on PostgreSQL in one
        round trip. Unknown queues are skipped."""
        if conn.dialect.name == "postgresql":
            driver = await pg_driver(conn)
            rows = await driver.fetch(
                _FANOUT_SEQ_PG,
                [qid for qid, _ in items],
                [payload for _, payload in items],
                sorted({qid for qid, _ in items}),
                int(self.clock()),
            )
        else:
            rows = await self._enqueue_sequence_generic(conn, items)
        if self.listeners or self.tx_listeners:
            for qid, seq, owner, ord_ in rows:
                self._wake_after_commit(conn, WakeUp(owner, qid, seq, items[ord_ - 1][1]))

    async def _enqueue_sequence_generic(
        self, conn: AsyncConnection, items: list[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, int, str, int]]:
        """(queue, seq, owner, 1-based position in ``items``): one counter update for all the
        queues, then one insert."""
        # queue -> [last seq handed out, owner]
        next_of = await reserve_ranges(
            conn, queues, Counter(qid for qid, _ in items), queues.c.owner_client_uuid
        )
        out: list[tuple[bytes, int, str, int]] = []
        for ord_, (qid, _) in enumerate(items, 1):
            st = next_of.get(qid)
            if st is not None:
                st[0] += 1
                out.append((qid, st[0], st[1], ord_))
        if out:
            now = int(self.clock())
            await conn.execute(
                sa.insert(queue_messages),
                [
                    {
                        "queue_id": qid,
                        "seq": seq,
                        "message_id": None,
                        "payload": items[ord_ - 1][1],
                        "created_at": now,
                    }
                    for qid, seq, _, ord_ in out
                ],
            )
        return out

    async def _enqueue_many_pg(
        self, conn: AsyncConnection, payloads: dict[bytes, bytes]
    ) -> list[tuple[bytes, int, str]]:
        # One round trip: lock in id order, bump the counters, insert the rows (the hot path;
        # on the driver: SQLAlchemy's execution path cost more CPU than the statement).
        ids = sorted(payloads)
        driver = await pg_driver(conn)
        rows = await driver.fetch(_FANOUT_PG, ids, [payloads[i] for i in ids], int(self.clock()))
        return [(r[0], r[1], r[2]) for r in rows]

    async def _enqueue_many_generic(
        self, conn: AsyncConnection, payloads: dict[bytes, bytes]
    ) -> list[tuple[bytes, int, str]]:
        locked = (
            sa.select(queues.c.id)
            .where(queues.c.id.in_(sorted(payloads)))
            .order_by(queues.c.id)
            .with_for_update()
        )
        rows = list(
            await conn.execute(
                sa.update(queues)
                .where(queues.c.id.in_(locked.scalar_subquery()))
                .values(last_seq=queues.c.last_seq + 1)
                .returning(queues.c.id, queues.c.last_seq, queues.c.owner_client_uuid)
            )
        )
        if rows:
            now = int(self.clock())
            await conn.execute(
                sa.insert(queue_messages).values(
                    [
                        {
                            "queue_id": qid,
                            "seq": seq,
                            "message_id": None,
                            "payload": payloads[qid],
                            "created_at": now,
                        }
                        for qid, seq, _ in rows
                    ]
                )
            )
        return [(r[0], r[1], r[2]) for r in rows]

    async def fetch(
        self, queue_id: bytes, client_uuid: str, after: int, limit: int, max_bytes: int
    ) -> FetchResult:
        async with self.db.engine.connect() as conn:
            await self._owned(conn, queue_id, client_uuid)
            rows = await conn.execute(
                sa.select(queue_messages.c.seq, queue_messages.c.payload)
                .where(queue_messages.c.queue_id == queue_id, queue_messages.c.seq > after)
                .order_by(queue_messages.c.seq)
                .limit(limit + 1)
            )
            return _cap(list(rows), after, limit, max_bytes)

    async def owned_queue_ids(self, client_uuid: str) -> list[bytes]:
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(queues.c.id).where(queues.c.owner_client_uuid == client_uuid)
            )
            return [r[0] for r in rows]

    async def read_after(
        self, queue_id: bytes, after: int, limit: int, max_bytes: int
    ) -> FetchResult:
        """``fetch`` without the ownership check, for a caller that already made it (realtime:
        queue ids never change owner; a deleted queue simply reads empty)."""
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(queue_messages.c.seq, queue_messages.c.payload)
                .where(queue_messages.c.queue_id == queue_id, queue_messages.c.seq > after)
                .order_by(queue_messages.c.seq)
                .limit(limit + 1)
            )
            return _cap(list(rows), after, limit, max_bytes)

    async def direct_cursor(self, user_uuid: str, client_uuid: str) -> int:
        """The client's ack cursor on its user's direct queue (0 if it never acked)."""
        async with self.db.engine.connect() as conn:
            acked = (
                await conn.execute(
                    sa.select(direct_cursors.c.acked_seq).where(
                        direct_cursors.c.user_uuid == user_uuid,
                        direct_cursors.c.client_uuid == client_uuid,
                    )
                )
            ).scalar_one_or_none()
        return acked or 0

    async def ack(self, queue_id: bytes, client_uuid: str, up_to: int) -> None:
        async with self.db.transaction() as conn:
            await self._owned(conn, queue_id, client_uuid)
            await conn.execute(
                sa.delete(queue_messages).where(
                    queue_messages.c.queue_id == queue_id, queue_messages.c.seq <= up_to
                )
            )
            self._acked_after_commit(conn, client_uuid, queue_id, up_to)

    async def ack_many(
        self, client_uuid: str, acks: dict[bytes, int], owned: set[bytes]
    ) -> dict[bytes, str]:
        """Several queues' acks (a realtime connection's coalesced burst), group-committed:
        acks of every connection that arrive while a write is in flight are written together
        in the next transaction (one DELETE, one notification), answered after its commit.

        ``owned``: queues the caller already knows to be ``client_uuid``'s (no ownership read);
        the others are checked in one query. Returns the refused ones' problem codes
        (``queue_not_found`` / ``forbidden``); the rest are applied."""
        done: asyncio.Future[dict[bytes, str]] = asyncio.get_running_loop().create_future()
        self._ack_pending.append(_PendingAck(client_uuid, acks, owned, done))
        if self._ack_writer is None:
            self._ack_writer = asyncio.create_task(self._ack_writer_loop())
        return await done

    async def _ack_writer_loop(self) -> None:
        try:
            while self._ack_pending:
                batch = self._ack_pending[:ACK_BATCH_MAX]
                del self._ack_pending[: len(batch)]
                try:
                    results = await self._write_acks(batch)
                except Exception as e:  # noqa: BLE001 - each waiting caller gets the error
                    for entry in batch:
                        if not entry.done.done():
                            entry.done.set_exception(e)
                    continue
                for entry, failed in zip(batch, results, strict=True):
                    if not entry.done.done():
                        entry.done.set_result(failed)
        finally:
            self._ack_writer = None
            if self._ack_pending:  # cancelled with callers waiting: they must not hang
                for entry in self._ack_pending:
                    if not entry.done.done():
                        entry.done.set_exception(asyncio.CancelledError())
                self._ack_pending.clear()

    async def _write_acks(self, batch: list[_PendingAck]) -> list[dict[bytes, str]]:
        async with self.db.transaction() as conn:
            unknown = {q for e in batch for q in e.acks if q not in e.owned}
            owners: dict[bytes, str] = {}
            if unknown:
                rows = await conn.execute(
                    sa.select(queues.c.id, queues.c.owner_client_uuid).where(
                        queues.c.id.in_(sorted(unknown))
                    )
                )
                owners = {r[0]: r[1] for r in rows}
            merged: dict[bytes, tuple[str, int]] = {}  # queue -> (owner, highest up_to)
            results: list[dict[bytes, str]] = []
            for e in batch:
                failed: dict[bytes, str] = {}
                for qid, up_to in e.acks.items():
                    if qid not in e.owned:
                        owner = owners.get(qid)
                        if owner is None:
                            failed[qid] = "queue_not_found"
                            continue
                        if owner != e.client_uuid:
                            failed[qid] = "forbidden"
                            continue
                    prev = merged.get(qid)
                    if prev is None or up_to > prev[1]:
                        merged[qid] = (e.client_uuid, up_to)
                results.append(failed)
            if merged:
                if conn.dialect.name == "postgresql":
                    ids = sorted(merged)
                    driver = await pg_driver(conn)
                    await driver.execute(_ACK_PG, ids, [merged[q][1] for q in ids])
                else:
                    for qid, (_, up_to) in merged.items():
                        await conn.execute(
                            sa.delete(queue_messages).where(
                                queue_messages.c.queue_id == qid, queue_messages.c.seq <= up_to
                            )
                        )
                for qid, (owner, up_to) in merged.items():
                    self._acked_after_commit(conn, owner, qid, up_to)
        return results

    async def delete_client_queues(self, conn: AsyncConnection, client_uuid: str) -> None:
        """Deletion hook: a removed client's queues and their messages go with it."""
        owned = sa.select(queues.c.id).where(queues.c.owner_client_uuid == client_uuid)
        await conn.execute(sa.delete(queue_messages).where(queue_messages.c.queue_id.in_(owned)))
        await conn.execute(sa.delete(queues).where(queues.c.owner_client_uuid == client_uuid))
        await conn.execute(
            sa.delete(direct_cursors).where(direct_cursors.c.client_uuid == client_uuid)
        )

    async def delete_user_queues(
        self, conn: AsyncConnection, user_uuid: str, client_uuids: list[str]
    ) -> None:
        """Deletion hook for account deletion: group queues of every client and the direct queue."""
        for client_uuid in client_uuids:
            await self.delete_client_queues(conn, client_uuid)
        await conn.execute(
            sa.delete(direct_messages).where(direct_messages.c.user_uuid == user_uuid)
        )
        await conn.execute(sa.delete(direct_cursors).where(direct_cursors.c.user_uuid == user_uuid))
        await conn.execute(sa.delete(direct_queues).where(direct_queues.c.user_uuid == user_uuid))

    # ---- direct queues (one per user, every client has its own ack cursor) -------------------

    async def enqueue_direct(self, conn: AsyncConnection, user_uuid: str, payload: bytes) -> int:
        """Append to a user's direct queue inside the caller's transaction."""
        # Create the counter row if missing without racing a concurrent first enqueue.
        await conn.execute(
            dialect_insert(conn, direct_queues)
            .values(user_uuid=user_uuid, last_seq=0)
            .on_conflict_do_nothing(index_elements=["user_uuid"])
        )
        last = (
            await conn.execute(
                sa.select(direct_queues.c.last_seq)
                .where(direct_queues.c.user_uuid == user_uuid)
                .with_for_update()
            )
        ).scalar_one()
        seq = last + 1
        await conn.execute(
            sa.update(direct_queues)
            .where(direct_queues.c.user_uuid == user_uuid)
            .values(last_seq=seq)
        )
        await conn.execute(
            sa.insert(direct_messages).values(
                user_uuid=user_uuid, seq=seq, payload=payload, created_at=int(self.clock())
            )
        )
        self._wake_after_commit(conn, WakeUp(user_uuid, None, seq, payload))
        return seq

    async def fetch_direct(
        self, user_uuid: str, after: int, limit: int, max_bytes: int
    ) -> FetchResult:
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(direct_messages.c.seq, direct_messages.c.payload)
                .where(direct_messages.c.user_uuid == user_uuid, direct_messages.c.seq > after)
                .order_by(direct_messages.c.seq)
                .limit(limit + 1)
            )
            return _cap(list(rows), after, limit, max_bytes)

    async def ack_direct(
        self, user_uuid: str, client_uuid: str, up_to: int, all_client_uuids: list[str]
    ) -> None:
        async with self.db.transaction() as conn:
            self._acked_after_commit(conn, client_uuid, None, up_to)
            current = (
                await conn.execute(
                    sa.select(direct_cursors.c.acked_seq).where(
                        direct_cursors.c.user_uuid == user_uuid,
                        direct_cursors.c.client_uuid == client_uuid,
                    )
                )
            ).scalar_one_or_none()
            if current is None:
                await conn.execute(
                    sa.insert(direct_cursors).values(
                        user_uuid=user_uuid, client_uuid=client_uuid, acked_seq=up_to
                    )
                )
            elif up_to > current:
                await conn.execute(
                    sa.update(direct_cursors)
                    .where(
                        direct_cursors.c.user_uuid == user_uuid,
                        direct_cursors.c.client_uuid == client_uuid,
                    )
                    .values(acked_seq=up_to)
                )
            cursors = {
                r.client_uuid: r.acked_seq
                for r in await conn.execute(
                    sa.select(direct_cursors).where(direct_cursors.c.user_uuid == user_uuid)
                )
            }
            # A client that never acked holds everything back (its cursor counts as 0).
            floor = min(cursors.get(c, 0) for c in all_client_uuids) if all_client_uuids else up_to
            if floor > 0:
                await conn.execute(
                    sa.delete(direct_messages).where(
                        direct_messages.c.user_uuid == user_uuid, direct_messages.c.seq <= floor
                    )
                )


def _cap(rows: list, after: int, limit: int, max_bytes: int) -> FetchResult:
    """Apply the count and byte caps; at least one waiting message is always returned."""
    out: list[tuple[int, bytes]] = []
    total = 0
    for seq, payload in rows[:limit]:
        if out and total + len(payload) > max_bytes:
            break
        out.append((seq, payload))
        total += len(payload)
    has_more = len(out) < len(rows)
    return FetchResult(out, out[-1][0] if out else after, has_more)
