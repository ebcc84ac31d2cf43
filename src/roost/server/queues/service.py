"""Queues: pseudonymous group-message queues (QS) and per-user direct queues (AS).

A group-message queue is authorised by its own key, which only its client holds (the table
keeps the key's SHA-256): no stored row says whose a queue is. The creating client is kept
only sealed for push (``seal.py``) and counted, not listed, for the per-client limit.

Sequence numbers are gap-free per queue: the counter row is locked (``FOR UPDATE`` on
PostgreSQL; the SQLite write transaction is exclusive anyway) and bumped in the same
transaction as the insert, so a rollback leaves no hole.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import sqlalchemy as sa

from ..config import Limits
from ..errors import Problem
from ..store import Database
from ..store.async_engine import AsyncConnection
from ..store.counters import reserve_ranges
from ..store.dialect_insert import dialect_insert
from ..store.engine import after_commit
from ..store.pg_driver import pg_autocommit, pg_driver
from ..store.sqlite_driver import execute_many
from .seal import QueueSeal
from .tables import (
    direct_cursors,
    direct_messages,
    direct_queues,
    queue_allowances,
    queue_messages,
    queues,
)

QUEUE_ID_LEN = 16
QUEUE_KEY_LEN = 32
# "Up to every seq": a deleted queue counts as acked this far (the hub stops routing it).
ACKED_ALL = (1 << 63) - 1

# The DS fan-out on PostgreSQL as one statement (data-modifying CTEs all run), run on the
# driver connection (``store/pg_driver.py``): $1 queue ids, $2 payloads, $3 created_at.
_FANOUT_PG = """
    WITH locked AS (
        SELECT id FROM queues WHERE id = ANY($1::bytea[]) ORDER BY id FOR UPDATE
    ), bumped AS (
        UPDATE queues SET last_seq = queues.last_seq + 1 FROM locked
        WHERE queues.id = locked.id
        RETURNING queues.id, queues.last_seq
    ), inserted AS (
        INSERT INTO queue_messages (queue_id, seq, message_id, payload, created_at)
        SELECT b.id, b.last_seq, NULL, p.payload, $3::bigint
        FROM bumped b
        JOIN unnest($1::bytea[], $2::bytea[]) AS p(id, payload)
        ON p.id = b.id
    )
    SELECT id, last_seq FROM bumped
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
        RETURNING queues.id, queues.last_seq - n.c AS base
    ), inserted AS (
        INSERT INTO queue_messages (queue_id, seq, message_id, payload, created_at)
        SELECT b.id, b.base + p.k, NULL, p.payload, $4::bigint
        FROM bumped b JOIN p ON p.id = b.id
    )
    SELECT b.id, b.base + p.k, p.ord
    FROM bumped b JOIN p ON p.id = b.id ORDER BY p.ord
"""


# The rows of ``enqueue_sequence_in`` on SQLite (``store/sqlite_driver.py``, one call for all).
_FANOUT_ROWS_SQLITE = """
    INSERT INTO queue_messages (queue_id, seq, message_id, payload, created_at)
    VALUES (?, ?, NULL, ?, ?)
"""


# Several queues' acks as one statement that is its own transaction (PostgreSQL, on the driver,
# no BEGIN or COMMIT round trip): $1 queue ids, $2 up_to; $3 the realtime channel and $4 its
# notifications for the other serving processes (``ack_notices``), sent at that commit.
# The commit does not wait for its WAL flush (synchronous_commit off, for this transaction only):
# an ack lost in a crash only leaves items the client already processed in its queue (it
# resumes from its own positions and skips them), and not waiting keeps the acks' fsyncs out of
# the way of the sends' durable commits.
_ACK_PG = """
    WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)),
    deleted AS (
        DELETE FROM queue_messages m
        USING unnest($1::bytea[], $2::bigint[]) AS a(id, up_to), relaxed
        WHERE m.queue_id = a.id AND m.seq <= a.up_to
    )
    SELECT pg_notify($3, n) FROM unnest($4::text[]) AS n
"""
# The same on SQLite, run once per queue in one call (``store/sqlite_driver.py``).
_ACK_SQLITE = "DELETE FROM queue_messages WHERE queue_id = ? AND seq <= ?"
# Acks written in one transaction at most (a burst beyond waits for the next).
ACK_BATCH_MAX = 512
# How long the first realtime ack waits for others before the write: a trickle of acks (every
# receiver of every message acks it) then shares one transaction instead of one each. Nothing
# waits on it but the "acked" answer: the session frees its window when it reads the ack.
ACK_LINGER_SECONDS = 0.02


@dataclass(slots=True)
class _PendingAck:
    acks: dict[bytes, int]
    done: asyncio.Future[None]


@dataclass(frozen=True, slots=True)
class WakeUp:
    """One committed enqueue, as told to the realtime listeners."""

    queue_id: bytes | None  # None: the user's direct queue
    seq: int
    payload: bytes | None  # None: not carried along (e.g. from another process); read it
    user_uuid: str | None = None  # the direct queue's user; a group queue names nobody


def key_hash(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def _refusal(stored_hash: bytes | None, key: bytes | None) -> str | None:
    """Why ``key`` does not open a queue whose stored key hash is ``stored_hash`` (None: it
    does). A queue from before keys (no hash) opens with no key until claimed."""
    if stored_hash is None:
        return "queue_key_required"
    if key is None or not hmac.compare_digest(key_hash(key), stored_hash):
        return "forbidden"
    return None


_REFUSALS = {
    "queue_key_required": "this queue predates queue keys: its client claims one first "
    "(POST /v1/queues/{id}/key)",
    "forbidden": "a queue is read only with its key (Roost-Queue-Key)",
}


@dataclass(frozen=True, slots=True)
class FetchResult:
    messages: list[tuple[int, bytes]]
    last_seq: int
    has_more: bool


class QueueService:
    def __init__(
        self,
        db: Database,
        limits: Limits,
        seal: QueueSeal,
        clock: Callable[[], float] = time.time,
    ):
        self.db = db
        self.limits = limits
        self.seal = seal
        self.clock = clock
        # Wake-up hooks (realtime listeners) run after the enqueuing transaction committed,
        # whichever module's transaction it is (see ``_wake_after_commit``).
        self.listeners: list[Callable[[WakeUp], None]] = []
        # Ack hooks after commit, so a realtime connection's unacked window also frees on acks
        # made over HTTP: (None, queue id, up_to) for a group queue, (client uuid, None,
        # up_to) for the client's cursor on its user's direct queue.
        self.ack_listeners: list[Callable[[str | None, bytes | None, int], None]] = []
        # The same events told inside the transaction, before it commits (the PostgreSQL
        # LISTEN/NOTIFY bridge publishes them there, so other processes hear only commits).
        self.tx_listeners: list[Callable[[AsyncConnection, WakeUp], None]] = []
        self.tx_ack_listeners: list[
            Callable[[AsyncConnection, str | None, bytes | None, int], None]
        ] = []
        # The realtime acks' notifications for the other processes on PostgreSQL, which travel
        # in the ack statement itself: (channel, payloads) for [(queue id, up_to)].
        self.ack_notices: Callable[[list[tuple[bytes, int]]], tuple[str, list[str]]] | None = None
        # Group commit of realtime acks (``ack_many``): waiting acks and the writer task.
        self._ack_pending: list[_PendingAck] = []
        self._ack_writer: asyncio.Task[None] | None = None

    def _wake_after_commit(self, conn: AsyncConnection, wake: WakeUp) -> None:
        for tx_listener in self.tx_listeners:
            tx_listener(conn, wake)
        if self.listeners:
            after_commit(conn, lambda: self._wake(wake))

    def _acked_after_commit(
        self, conn: AsyncConnection, client_uuid: str | None, queue_id: bytes | None, up_to: int
    ) -> None:
        for tx_listener in self.tx_ack_listeners:
            tx_listener(conn, client_uuid, queue_id, up_to)
        for listener in self.ack_listeners:
            after_commit(conn, partial(listener, client_uuid, queue_id, up_to))

    def _wake(self, wake: WakeUp) -> None:
        for listener in self.listeners:
            listener(wake)

    # ---- group-message queues -----------------------------------------------------------

    async def create_queue(self, client_uuid: str) -> tuple[bytes, bytes]:
        """A new queue: (id, key). The key is shown this once; only its hash is kept."""
        queue_id = secrets.token_bytes(QUEUE_ID_LEN)
        key = secrets.token_bytes(QUEUE_KEY_LEN)
        async with self.db.transaction() as conn:
            await conn.execute(
                dialect_insert(conn, queue_allowances)
                .values(client_uuid=client_uuid, queues=0)
                .on_conflict_do_nothing(index_elements=["client_uuid"])
            )
            counted = await conn.execute(
                sa.update(queue_allowances)
                .where(
                    queue_allowances.c.client_uuid == client_uuid,
                    queue_allowances.c.queues < self.limits.max_queues_per_client,
                )
                .values(queues=queue_allowances.c.queues + 1)
            )
            if counted.rowcount != 1:
                raise Problem(
                    409, "too_many_queues", "this client has the maximum number of queues"
                )
            await conn.execute(
                sa.insert(queues).values(
                    id=queue_id,
                    key_hash=key_hash(key),
                    push_seal=self.seal.seal(client_uuid),
                    last_seq=0,
                    created_at=int(self.clock()),
                )
            )
        return queue_id, key

    async def check_key(self, conn: AsyncConnection, queue_id: bytes, key: bytes | None) -> None:
        """404 for an unknown queue; 403 unless ``key`` is the queue's (also for the DS and
        federation, before they register a queue for a group)."""
        row = (
            await conn.execute(sa.select(queues.c.key_hash).where(queues.c.id == queue_id))
        ).first()
        if row is None:
            raise Problem(404, "queue_not_found", "no such queue")
        refusal = _refusal(row[0], key)
        if refusal is not None:
            raise Problem(403, refusal, _REFUSALS[refusal])

    async def accept_keys(self, keys: dict[bytes, bytes]) -> tuple[list[bytes], dict[bytes, str]]:
        """For a realtime session: the queues whose keys match, and the others' problem codes
        (``queue_not_found``, ``forbidden``, ``queue_key_required``), in one read."""
        if not keys:
            return [], {}
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(queues.c.id, queues.c.key_hash).where(queues.c.id.in_(sorted(keys)))
            )
            hashes = {r[0]: r[1] for r in rows}
        accepted: list[bytes] = []
        refused: dict[bytes, str] = {}
        for qid, key in keys.items():
            refusal = _refusal(hashes[qid], key) if qid in hashes else "queue_not_found"
            if refusal is None:
                accepted.append(qid)
            else:
                refused[qid] = refusal
        return accepted, refused

    async def claim_key(self, queue_id: bytes, client_uuid: str) -> bytes:
        """A key for a queue created before queues had keys, given once to its creator; the
        stored owner is erased."""
        key = secrets.token_bytes(QUEUE_KEY_LEN)
        async with self.db.transaction() as conn:
            row = (
                await conn.execute(
                    sa.select(queues.c.legacy_owner, queues.c.key_hash)
                    .where(queues.c.id == queue_id)
                    .with_for_update()
                )
            ).first()
            if row is None:
                raise Problem(404, "queue_not_found", "no such queue")
            owner, existing = row
            if (
                existing is not None
                or owner is None
                or not hmac.compare_digest(owner.encode(), client_uuid.encode())
            ):
                raise Problem(403, "forbidden", "only an unclaimed queue's creator claims its key")
            await conn.execute(
                sa.update(queues)
                .where(queues.c.id == queue_id)
                .values(
                    key_hash=key_hash(key),
                    legacy_owner=None,
                    push_seal=self.seal.seal(client_uuid),
                )
            )
        return key

    async def push_client_of(self, queue_id: bytes) -> str | None:
        """The client whose push registration a queue's items wake (push only)."""
        async with self.db.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(queues.c.push_seal, queues.c.legacy_owner).where(
                        queues.c.id == queue_id
                    )
                )
            ).first()
        return self._creator(row[0], row[1]) if row is not None else None

    def _creator(self, sealed: bytes | None, legacy_owner: str | None) -> str | None:
        """A queue's creating client: named on a queue from before keys, else sealed."""
        if legacy_owner is not None:
            return str(legacy_owner)
        return self.seal.open(sealed) if sealed is not None else None

    async def delete_queue(self, queue_id: bytes, key: bytes | None, client_uuid: str) -> None:
        async with self.db.transaction() as conn:
            await self.check_key(conn, queue_id, key)
            await conn.execute(
                sa.delete(queue_messages).where(queue_messages.c.queue_id == queue_id)
            )
            await conn.execute(sa.delete(queues).where(queues.c.id == queue_id))
            # The caller's count goes down: it is the one that holds the key.
            await conn.execute(
                sa.update(queue_allowances)
                .where(queue_allowances.c.client_uuid == client_uuid, queue_allowances.c.queues > 0)
                .values(queues=queue_allowances.c.queues - 1)
            )
            # Everything in it is gone: as if acked (frees a realtime connection's window).
            self._acked_after_commit(conn, None, queue_id, ACKED_ALL)

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
                sa.select(queues.c.last_seq).where(queues.c.id == queue_id).with_for_update()
            )
        ).first()
        if row is None:
            raise Problem(404, "queue_not_found", "no such queue")
        last = row[0]
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
        self._wake_after_commit(conn, WakeUp(queue_id, seq, payload))
        return seq

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
            for qid, seq in rows:
                self._wake_after_commit(conn, WakeUp(qid, seq, payloads[qid]))

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
            for qid, seq, ord_ in rows:
                self._wake_after_commit(conn, WakeUp(qid, seq, items[ord_ - 1][1]))

    async def _enqueue_sequence_generic(
        self, conn: AsyncConnection, items: list[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, int, int]]:
        """(queue, seq, 1-based position in ``items``): one counter update for all the
        queues, then one insert."""
        # queue -> [last seq handed out]
        next_of = await reserve_ranges(conn, queues, Counter(qid for qid, _ in items))
        out: list[tuple[bytes, int, int]] = []
        for ord_, (qid, _) in enumerate(items, 1):
            st = next_of.get(qid)
            if st is not None:
                st[0] += 1
                out.append((qid, st[0], ord_))
        if out:
            now = int(self.clock())
            await execute_many(
                conn,
                _FANOUT_ROWS_SQLITE,
                [(qid, seq, items[ord_ - 1][1], now) for qid, seq, ord_ in out],
            )
        return out

    async def _enqueue_many_pg(
        self, conn: AsyncConnection, payloads: dict[bytes, bytes]
    ) -> list[tuple[bytes, int]]:
        # One round trip: lock in id order, bump the counters, insert the rows (the hot path;
        # on the driver: SQLAlchemy's execution path cost more CPU than the statement).
        ids = sorted(payloads)
        driver = await pg_driver(conn)
        rows = await driver.fetch(_FANOUT_PG, ids, [payloads[i] for i in ids], int(self.clock()))
        return [(r[0], r[1]) for r in rows]

    async def _enqueue_many_generic(
        self, conn: AsyncConnection, payloads: dict[bytes, bytes]
    ) -> list[tuple[bytes, int]]:
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
                .returning(queues.c.id, queues.c.last_seq)
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
                        for qid, seq in rows
                    ]
                )
            )
        return [(r[0], r[1]) for r in rows]

    async def fetch(
        self, queue_id: bytes, key: bytes | None, after: int, limit: int, max_bytes: int
    ) -> FetchResult:
        async with self.db.engine.connect() as conn:
            await self.check_key(conn, queue_id, key)
            rows = await conn.execute(
                sa.select(queue_messages.c.seq, queue_messages.c.payload)
                .where(queue_messages.c.queue_id == queue_id, queue_messages.c.seq > after)
                .order_by(queue_messages.c.seq)
                .limit(limit + 1)
            )
            return _cap(list(rows), after, limit, max_bytes)

    async def read_after(
        self, queue_id: bytes, after: int, limit: int, max_bytes: int
    ) -> FetchResult:
        """``fetch`` without the key check, for a caller that already made it (realtime: a
        queue's key never changes; a deleted queue simply reads empty)."""
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

    async def ack(self, queue_id: bytes, key: bytes | None, up_to: int) -> None:
        async with self.db.transaction() as conn:
            await self.check_key(conn, queue_id, key)
            await conn.execute(
                sa.delete(queue_messages).where(
                    queue_messages.c.queue_id == queue_id, queue_messages.c.seq <= up_to
                )
            )
            self._acked_after_commit(conn, None, queue_id, up_to)

    async def ack_many(self, acks: dict[bytes, int]) -> None:
        """Several queues' acks (a realtime connection's coalesced burst), group-committed:
        acks of every connection that arrive within ``ACK_LINGER_SECONDS`` of the first, or
        while a write is in flight, are written together in one transaction (one DELETE, one
        notification), answered after its commit.
        The caller checked the queues' keys (the session accepted them)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ack_pending.append(_PendingAck(acks, done))
        if self._ack_writer is None:
            self._ack_writer = asyncio.create_task(self._ack_writer_loop())
        await done

    async def _ack_writer_loop(self) -> None:
        try:
            await asyncio.sleep(ACK_LINGER_SECONDS)
            while self._ack_pending:
                batch = self._ack_pending[:ACK_BATCH_MAX]
                del self._ack_pending[: len(batch)]
                try:
                    await self._write_acks(batch)
                except Exception as e:  # noqa: BLE001 - each waiting caller gets the error
                    for entry in batch:
                        if not entry.done.done():
                            entry.done.set_exception(e)
                    continue
                for entry in batch:
                    if not entry.done.done():
                        entry.done.set_result(None)
        finally:
            self._ack_writer = None
            if self._ack_pending:  # cancelled with callers waiting: they must not hang
                for entry in self._ack_pending:
                    if not entry.done.done():
                        entry.done.set_exception(asyncio.CancelledError())
                self._ack_pending.clear()

    async def _write_acks(self, batch: list[_PendingAck]) -> None:
        merged: dict[bytes, int] = {}  # queue -> highest up_to
        for e in batch:
            for qid, up_to in e.acks.items():
                if up_to > merged.get(qid, -1):
                    merged[qid] = up_to
        if not merged:
            return
        if self.db.is_sqlite:
            async with self.db.transaction() as conn:
                await execute_many(conn, _ACK_SQLITE, list(merged.items()))
                for qid, up_to in merged.items():
                    self._acked_after_commit(conn, None, qid, up_to)
            return
        acks = sorted(merged.items())
        channel, notices = self.ack_notices(acks) if self.ack_notices else ("", [])
        # No transaction, so no tx_ack_listeners: the bridge's notices are in the statement.
        async with pg_autocommit(self.db) as driver:
            await driver.execute(
                _ACK_PG, [q for q, _ in acks], [u for _, u in acks], channel, notices
            )
        for qid, up_to in acks:
            for listener in self.ack_listeners:
                listener(None, qid, up_to)

    async def delete_client_queues(self, conn: AsyncConnection, client_uuid: str) -> None:
        """Deletion hook: a removed client's queues and their messages go with it."""
        await self._delete_queues_of(conn, {client_uuid})

    async def delete_user_queues(
        self, conn: AsyncConnection, user_uuid: str, client_uuids: list[str]
    ) -> None:
        """Deletion hook for account deletion: group queues of every client and the direct queue."""
        await self._delete_queues_of(conn, set(client_uuids))
        await conn.execute(
            sa.delete(direct_messages).where(direct_messages.c.user_uuid == user_uuid)
        )
        await conn.execute(sa.delete(direct_cursors).where(direct_cursors.c.user_uuid == user_uuid))
        await conn.execute(sa.delete(direct_queues).where(direct_queues.c.user_uuid == user_uuid))

    async def _delete_queues_of(self, conn: AsyncConnection, clients: set[str]) -> None:
        # No row names a queue's client: the seals are opened one by one (a scan of the
        # queues, on a rare event, instead of a stored link).
        rows = await conn.execute(sa.select(queues.c.id, queues.c.push_seal, queues.c.legacy_owner))
        doomed = [qid for qid, sealed, owner in rows if self._creator(sealed, owner) in clients]
        for i in range(0, len(doomed), 500):
            chunk = doomed[i : i + 500]
            await conn.execute(
                sa.delete(queue_messages).where(queue_messages.c.queue_id.in_(chunk))
            )
            await conn.execute(sa.delete(queues).where(queues.c.id.in_(chunk)))
        for client_uuid in clients:
            await conn.execute(
                sa.delete(queue_allowances).where(queue_allowances.c.client_uuid == client_uuid)
            )
            await conn.execute(
                sa.delete(direct_cursors).where(direct_cursors.c.client_uuid == client_uuid)
            )

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
        self._wake_after_commit(conn, WakeUp(None, seq, payload, user_uuid))
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
