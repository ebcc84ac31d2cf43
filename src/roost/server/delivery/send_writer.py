"""The batched application-send writer (group commit), on both engines.

Sends that arrive while a batch is being written go together in the next transaction, whatever
their groups: one BEGIN/NOTIFY/COMMIT (and fsync) and, on PostgreSQL, two statements for all;
each send is answered only after that commit. A refused send rolls its whole batch back (its
seq must not leave a gap) and the batch is then written send by send, so only that one fails.

Taking a send's ``group_seq`` locks its group row, so the member list read next is the one of
that position in the group order (a commit cannot interleave); the list comes from the
``(group, rev)`` cache. Idempotence needs no prior lookup: an earlier or concurrent copy of the
message id makes the insert of its record a no-op, and the send is answered with the stored seq.
The record is keyed by a hash of (group, sender, message id) (``send_key.py``), not by the
sender.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from roost.protocol.queue_item import ITEM_MLS_MESSAGE, encode_queue_item

from ..auth.service import Principal
from ..errors import Problem
from ..queues.service import QueueService
from ..store import Database
from ..store.async_engine import AsyncConnection
from ..store.counters import reserve_ranges
from ..store.pg_driver import pg_driver
from ..store.sqlite_driver import execute_many
from . import wire
from .fanout import Fanout
from .group_store import MEMBER_CACHE_SIZE, GroupStore, Member, leaf_of
from .rules import app_epoch_outside_window, app_epoch_refusal
from .send_key import send_key
from .tables import ds_groups, ds_sends

SEND_BATCH_MAX = 256  # sends written in one transaction at most
# Idempotency records answer retries for this long (pruned by commits and account_events.py).
SEND_ID_RETENTION = 24 * 3600

# One send's bookkeeping on PostgreSQL in one round trip: the next group_seq (locking the group
# row) and the idempotency record. No row back: a duplicate message id (or no such group).
# Run on the driver connection (``store/pg_driver.py``; SQLAlchemy's execution path cost more
# CPU than the statement): $1 group id, $2 send key, $3 created_at.
_SEND_PG = """
    WITH g AS (
        UPDATE ds_groups SET last_seq = last_seq + 1 WHERE id = $1::bytea
        RETURNING last_seq, epoch, rev
    ), s AS (
        INSERT INTO ds_sends (group_id, send_key, group_seq, created_at)
        SELECT $1::bytea, $2::bytea, g.last_seq, $3::bigint FROM g
        ON CONFLICT DO NOTHING
        RETURNING group_seq
    )
    SELECT s.group_seq, g.epoch, g.rev FROM s, g
"""


# A batch of sends to any groups (group commit) in one round trip: the group rows locked in id
# order ($4: the distinct group ids, sorted), each group's last_seq bumped by its count of sends
# (the k-th send of a group in the batch gets its k-th new seq), and the idempotency records.
# One row per send, in batch order, with its group's epoch and rev; ``stored`` counts the
# records written: fewer than the sends means a duplicate message id, fewer rows a missing
# group (either way the batch is rolled back and written send by send).
_SEND_BATCH_PG = """
    WITH m AS (
        SELECT gid, sk, k
        FROM unnest($1::bytea[], $2::bytea[]) WITH ORDINALITY AS m(gid, sk, k)
    ), n AS (
        SELECT gid, count(*) AS c FROM m GROUP BY gid
    ), locked AS (
        SELECT id FROM ds_groups WHERE id = ANY($4::bytea[]) ORDER BY id FOR UPDATE
    ), g AS (
        UPDATE ds_groups SET last_seq = ds_groups.last_seq + n.c
        FROM locked JOIN n ON n.gid = locked.id
        WHERE ds_groups.id = locked.id
        RETURNING ds_groups.id, ds_groups.last_seq - n.c AS base, ds_groups.epoch, ds_groups.rev
    ), q AS (
        SELECT m.k, m.gid, m.sk, g.epoch, g.rev,
               g.base + row_number() OVER (PARTITION BY m.gid ORDER BY m.k) AS seq
        FROM m JOIN g ON g.id = m.gid
    ), s AS (
        INSERT INTO ds_sends (group_id, send_key, group_seq, created_at)
        SELECT gid, sk, seq, $3::bigint FROM q
        ON CONFLICT DO NOTHING
        RETURNING 1
    )
    SELECT q.seq, q.epoch, q.rev, (SELECT count(*) FROM s) AS stored FROM q ORDER BY q.k
"""


# The idempotency records of a batch on SQLite (``store/sqlite_driver.py``, one call for all):
# a duplicate message id changes no row.
_SEND_RECORD_SQLITE = """
    INSERT INTO ds_sends (group_id, send_key, group_seq, created_at) VALUES (?, ?, ?, ?)
    ON CONFLICT (group_id, send_key) DO NOTHING
"""


@dataclass(slots=True)
class _PendingSend:
    """A send waiting for the next group-committed transaction."""

    p: Principal
    group_id: bytes
    key: bytes  # of the idempotency record (send_key.py)
    header: wire.AppHeader
    body: bytes
    done: asyncio.Future[int]


class _Duplicate(Exception):
    """A send whose message id was already stored: roll back, answer with the stored seq."""


def _not_member() -> Problem:
    return Problem(403, "not_member", "the calling client holds no leaf in this group")


class SendWriter:
    def __init__(
        self,
        db: Database,
        store: GroupStore,
        fanout: Fanout,
        queues: QueueService,
        now: Callable[[], int],
    ) -> None:
        self.db = db
        self.store = store
        self.fanout = fanout
        self.queues = queues
        self.now = now
        self._waiting: list[_PendingSend] = []
        self._writer: asyncio.Task[None] | None = None
        self._epoch_seen: dict[bytes, int] = {}  # group -> epoch at its last batched send

    async def submit(
        self,
        p: Principal,
        group_id: bytes,
        message_id: str,
        header: wire.AppHeader,
        body: bytes,
    ) -> int:
        """Queue a checked send (its group key too) for the next batch; its ``group_seq`` once
        that committed."""
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        key = send_key(group_id, p.client_uuid, message_id)
        self._waiting.append(_PendingSend(p, group_id, key, header, body, done))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_waiting())
        return await done

    async def _write_waiting(self) -> None:
        """Write the waiting sends, a batch per transaction, until none are left."""
        waiting = self._waiting
        batch: list[_PendingSend] = []
        try:
            while waiting:
                batch = waiting[:SEND_BATCH_MAX]
                del waiting[: len(batch)]
                await self._write_batch(batch)
        finally:
            self._writer = None
            for item in batch + waiting:  # cancelled (shutdown) mid-way: do not hang them
                if not item.done.done():
                    item.done.set_exception(Problem(503, "service_unavailable", "retry later"))
            waiting.clear()

    async def _write_batch(self, batch: list[_PendingSend]) -> None:
        # Sends that the cached view of their group already refuses (not a member, outside the
        # epoch window) are written alone, so a stale or hostile sender cannot slow the others.
        alone: list[_PendingSend] = []
        together: list[_PendingSend] = []
        for item in batch:
            (alone if self._likely_refused(item) else together).append(item)
        batch = together
        # On SQLite a send alone goes this way too (the driver's statements are the leaner path
        # there); on PostgreSQL the single-send statement costs less than the batch's.
        if len(batch) > 1 or (batch and self.db.is_sqlite):
            try:
                async with self.db.transaction() as conn:
                    seqs = await self._write_many_in(conn, batch)
            except Exception:  # noqa: BLE001 - a send refused or retried (rare): rolled back,
                pass  # written alone below, so only that one fails
            else:
                for item, seq in zip(batch, seqs, strict=True):
                    if not item.done.done():
                        item.done.set_result(seq)
                batch = []
        for item in alone + batch:
            try:
                seq = await self._write_alone(item)
            except Exception as e:  # noqa: BLE001 - handed to the waiting request
                if not item.done.done():
                    item.done.set_exception(e)
            else:
                if not item.done.done():
                    item.done.set_result(seq)

    def _likely_refused(self, item: _PendingSend) -> bool:
        """What the last seen state of the group says of ``item`` (may be stale either way)."""
        members = self.store.cached_members(item.group_id)
        if members is None:
            return False
        if leaf_of(members, item.p.client_uuid, item.p.user_id) is None:
            return True
        epoch = self._epoch_seen.get(item.group_id)
        return epoch is not None and app_epoch_outside_window(item.header.epoch, epoch)

    async def _write_many_in(self, conn: AsyncConnection, batch: list[_PendingSend]) -> list[int]:
        """A batch of sends to any groups: the seqs and idempotency records, then the fan-out
        of every send at once (on PostgreSQL two statements in all). Any send refused
        (duplicate, not a member, epoch, no such group) raises: the caller rolls back and
        writes them one by one."""
        if conn.dialect.name == "postgresql":
            rows = await self._take_seqs_pg(conn, batch)
        else:
            rows = await self._take_seqs_generic(conn, batch)
        by_group: dict[bytes, list[Member]] = {}
        local_only = True
        items: list[tuple[bytes, bytes]] = []
        senders: list[Member] = []
        for item, (seq, epoch, rev) in zip(batch, rows, strict=True):
            members = by_group.get(item.group_id)
            if members is None:
                members = by_group[item.group_id] = await self.store.members_at(
                    conn, item.group_id, rev
                )
                # Held items or remote queues (outbox) take the general fan-out below.
                local_only = local_only and all(
                    m.queue_id is not None and m.queue_domain is None for m in members if not m.gone
                )
                self._epoch_seen[item.group_id] = epoch  # one epoch per group in a batch
                if len(self._epoch_seen) > MEMBER_CACHE_SIZE:
                    del self._epoch_seen[next(iter(self._epoch_seen))]
            mine = self._sender(item, members)
            refusal = app_epoch_refusal(item.header.epoch, epoch, seq - 1)
            if refusal is not None:
                raise refusal
            senders.append(mine)
            for m in members:
                if m.gone or m is mine or m.queue_id is None:
                    continue
                policy = m.policy.encode() if m.policy else b""
                items.append(
                    (
                        m.queue_id,
                        encode_queue_item(item.group_id, seq, policy, ITEM_MLS_MESSAGE, item.body),
                    )
                )
        seqs = [r[0] for r in rows]
        if not local_only:
            for item, mine, seq in zip(batch, senders, seqs, strict=True):
                await self.fanout.fanout(
                    conn,
                    item.group_id,
                    seq,
                    ITEM_MLS_MESSAGE,
                    item.body,
                    by_group[item.group_id],
                    mine.leaf_index,
                )
        elif items:
            await self.queues.enqueue_sequence_in(conn, items)
        return seqs

    async def _take_seqs_pg(
        self, conn: AsyncConnection, batch: list[_PendingSend]
    ) -> list[tuple[int, int, int]]:
        """(group_seq, epoch, rev) of each send, idempotency records written: one statement."""
        driver = await pg_driver(conn)
        rows = await driver.fetch(
            _SEND_BATCH_PG,
            [i.group_id for i in batch],
            [i.key for i in batch],
            self.now(),
            sorted({i.group_id for i in batch}),
        )
        if len(rows) != len(batch) or rows[0][3] != len(batch):
            raise _Duplicate
        return [(r[0], r[1], r[2]) for r in rows]

    async def _take_seqs_generic(
        self, conn: AsyncConnection, batch: list[_PendingSend]
    ) -> list[tuple[int, int, int]]:
        """The same on SQLite: one counter update for all the groups, one insert for the
        records."""
        counts = Counter(i.group_id for i in batch)
        # group -> [last seq handed out, epoch, rev]
        next_of = await reserve_ranges(conn, ds_groups, counts, ds_groups.c.epoch, ds_groups.c.rev)
        if len(next_of) != len(counts):
            raise _Duplicate  # no such group: written alone, which answers 404
        rows: list[tuple[int, int, int]] = []
        for item in batch:
            st = next_of[item.group_id]
            st[0] += 1
            rows.append((st[0], st[1], st[2]))
        now = self.now()
        stored = await execute_many(
            conn,
            _SEND_RECORD_SQLITE,
            [
                (item.group_id, item.key, seq, now)
                for item, (seq, _, _) in zip(batch, rows, strict=True)
            ],
        )
        if stored != len(batch):
            raise _Duplicate
        return rows

    def _sender(self, item: _PendingSend, members: list[Member]) -> Member:
        """The sending leaf, once ``members_at`` read the group at the send's position: the
        caller holds a live leaf (its group key was checked before the send was queued,
        ``DeliveryService.send``)."""
        mine = leaf_of(members, item.p.client_uuid, item.p.user_id)
        if mine is None:
            raise _not_member()
        return mine

    async def _write_alone(self, item: _PendingSend) -> int:
        try:
            async with self.db.transaction() as conn:
                return await self._write_one_in(conn, item)
        except _Duplicate:
            # A retried send: answer with the first copy's position (nothing was stored now).
            async with self.db.engine.connect() as conn:
                return (
                    await conn.execute(
                        sa.select(ds_sends.c.group_seq).where(
                            ds_sends.c.group_id == item.group_id,
                            ds_sends.c.send_key == item.key,
                        )
                    )
                ).scalar_one()

    async def _write_one_in(self, conn: AsyncConnection, item: _PendingSend) -> int:
        now = self.now()
        group_id = item.group_id
        if conn.dialect.name == "postgresql":
            driver = await pg_driver(conn)
            got = await driver.fetchrow(_SEND_PG, group_id, item.key, now)
            if got is None:
                await self.store.group(conn, group_id)  # 404 if it does not exist
                raise _Duplicate
            seq, epoch, rev = got
            members = await self.store.members_at(conn, group_id, rev)
            mine = self._sender(item, members)
        else:
            got = (
                await conn.execute(
                    sa.update(ds_groups)
                    .where(ds_groups.c.id == group_id)
                    .values(last_seq=ds_groups.c.last_seq + 1)
                    .returning(ds_groups.c.last_seq, ds_groups.c.epoch, ds_groups.c.rev)
                )
            ).first()
            if got is None:
                raise Problem(404, "group_not_found", "no such group")
            seq, epoch, rev = got
            members = await self.store.members_at(conn, group_id, rev)
            mine = self._sender(item, members)
            inserted = await conn.execute(
                sqlite_insert(ds_sends)
                .values(
                    group_id=group_id,
                    send_key=item.key,
                    group_seq=seq,
                    created_at=now,
                )
                .on_conflict_do_nothing(index_elements=["group_id", "send_key"])
            )
            if inserted.rowcount == 0:
                raise _Duplicate
        refusal = app_epoch_refusal(item.header.epoch, epoch, seq - 1)
        if refusal is not None:
            raise refusal
        await self.fanout.fanout(
            conn, group_id, seq, ITEM_MLS_MESSAGE, item.body, members, mine.leaf_index
        )
        return seq
