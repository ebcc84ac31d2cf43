"""The durable per-destination outbound queue and the receiving inbox (docs/federation.md).

Sending side (``Outbox``): flows queue items inside their own transaction (``enqueue_in``); one
worker task per process delivers each destination's oldest items, in id order, in one signed
``POST /federation/v1/inbox`` batch. A lease per destination (a conditional UPDATE of
``fed_destinations.lease_until_ms``) keeps one deliverer per destination across processes, so
order holds. A failed attempt waits ``min(2^attempts, 3600)`` seconds (with jitter), then the
same items go again (head-of-line). Nothing is given up on: items for a destination that is
unreachable or that the policy does not admit now are held until it can take them
(docs/federation.md, "Blocked, unreachable, forgotten"); only a domain the operator forgot has
its items discarded.

Receiving side (``InboxDispatcher``): applies each item exactly once, in order, using a per-origin
high-water mark of outbox ids (``fed_inbox_marks``) updated in the item's own transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from roost.mls.codec import Reader, Writer

from ..config import is_valid_domain
from ..errors import Problem
from ..store import Database
from ..store.async_engine import AsyncConnection
from ..store.dialect_insert import dialect_insert
from ..store.engine import after_commit
from .policy import read_policy
from .tables import fed_destinations, fed_inbox_marks, fed_outbox
from .transport import FederationRefused

log = logging.getLogger("roost.federation")

INBOX_PATH = "/federation/v1/inbox"
BATCH_MEDIA_TYPE = "application/vnd.roost.federation-batch"
KIND_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,31}$")

BACKOFF_CAP_SECONDS = 3600.0
POLL_SECONDS = 1.0  # due destinations (and other processes' retry-now) are seen this fast
BLOCKED_RECHECK_SECONDS = 5.0  # a held destination is looked at again this often
HELD_LOG_SECONDS = 60.0  # "held" is logged at most this often per destination
# A peer that contacts us while our deliveries to it back off is retried at most this often.
CONTACT_RETRY_SECONDS = 2.0
LEASE_SECONDS = 60.0  # longer than one batch request may take (federation timeout)
MAX_ITEM_BYTES = 1024 * 1024 - 4096  # one item always fits a default 1 MiB request body
BATCH_MAX_ITEMS = 100
INBOX_MAX_ITEMS = 1000  # what an inbound batch may hold (we send at most BATCH_MAX_ITEMS)
MAX_OUTBOX_ID = 2**63 - 1  # the marks are signed 64-bit columns
BATCH_MAX_BYTES = 128 * 1024  # beyond one item; a batch always carries at least one
MAX_PARALLEL_DESTINATIONS = 8
ERROR_MAX = 500

Handler = Callable[[AsyncConnection, str, bytes], Awaitable[None]]


# ---- batch wire format ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchItem:
    outbox_id: int
    kind: str
    body: bytes


def encode_batch(items: Iterable[BatchItem]) -> bytes:
    """``repeated (uint64 outbox_id || opaque kind<V> || opaque body<V>)``, ids ascending."""
    w = Writer()
    for item in items:
        w.u64(item.outbox_id)
        w.opaque(item.kind.encode("ascii"))
        w.opaque(item.body)
    return w.getvalue()


def item_json(body: bytes) -> Any:
    """An inbox item's JSON body. Not JSON, or nested too deeply to parse: ``400
    invalid_request``, so the item is rejected for good instead of retried for ever."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise Problem(400, "invalid_request", "the item is not valid JSON") from None


class BatchError(ValueError):
    """A malformed inbox batch (answered ``400 invalid_batch``)."""


def decode_batch(data: bytes) -> list[BatchItem]:
    """Strict decode: at least one item, valid kinds, ids strictly ascending."""
    from roost.mls.errors import DecodeError

    r = Reader(data)
    items: list[BatchItem] = []
    try:
        while r.remaining():
            outbox_id = r.u64()
            raw_kind = r.opaque()
            body = r.opaque()
            try:
                kind = raw_kind.decode("ascii")
            except UnicodeDecodeError:
                raise BatchError("an item kind is not ASCII") from None
            if not KIND_RE.match(kind):
                raise BatchError("an item kind is not a valid kind name")
            if outbox_id > MAX_OUTBOX_ID:
                raise BatchError("an item id is out of range")
            if items and outbox_id <= items[-1].outbox_id:
                raise BatchError("item ids must be strictly ascending")
            items.append(BatchItem(outbox_id, kind, body))
            if len(items) > INBOX_MAX_ITEMS:
                raise BatchError(f"a batch holds at most {INBOX_MAX_ITEMS} items")
    except DecodeError as e:
        raise BatchError(f"malformed batch: {e}") from None
    if not items:
        raise BatchError("the batch is empty")
    return items


# ---- backoff ----------------------------------------------------------------------------------


def backoff_seconds(attempts: int, rand: Callable[[], float] = random.random) -> float:
    """Wait after ``attempts`` consecutive failures: ``min(2^attempts, 3600)`` seconds minus up
    to 20 % jitter (so peers retrying together spread out and the cap is never exceeded)."""
    base = min(2.0 ** min(max(attempts, 0), 12), BACKOFF_CAP_SECONDS)
    return base * (1.0 - 0.2 * rand())


# ---- database helpers -------------------------------------------------------------------------


def _insert(conn: AsyncConnection, table: sa.Table) -> Any:
    return dialect_insert(conn, table)


def _ms(clock: Callable[[], float]) -> int:
    return int(clock() * 1000)


async def request_retry(db: Database, destination: str | None, now_ms: int) -> int:
    """Make the next attempt towards ``destination`` (or every destination with items) due
    now; returns how many destinations that touched. Used by ``roost admin federation retry``
    from another process too (the worker polls every ``POLL_SECONDS``)."""
    has_items = sa.exists().where(fed_outbox.c.destination == fed_destinations.c.destination)
    stmt = sa.update(fed_destinations).where(has_items).values(next_attempt_ms=now_ms)
    if destination is not None:
        stmt = stmt.where(fed_destinations.c.destination == destination.strip().lower())
    async with db.transaction() as conn:
        result = await conn.execute(stmt)
    return int(result.rowcount or 0)


# ---- operator status --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DestinationStatus:
    """One destination's queue, for ``roost admin outbox`` and /metrics (operator/status.py)."""

    destination: str
    depth: int
    oldest_age_seconds: int | None
    attempts: int  # consecutive failed attempts
    next_attempt_in_seconds: int | None  # None: nothing queued
    last_error: str | None  # no payloads
    blocked: bool  # the policy now holds the items
    # "blocked" (our policy holds them), "unreachable" (the last attempt failed: down,
    # refusing us, erroring; retried on the backoff), "sending" (queued, no failure)
    state: str = "sending"


async def federation_outbox_status(conn: AsyncConnection, now: float) -> list[DestinationStatus]:
    """Per destination with queued items (or a pending failure): depth, oldest age, attempts,
    next attempt, last error, blocked. Aggregates and domains only, never payloads."""
    per_dest = (
        sa.select(
            fed_outbox.c.destination,
            sa.func.count().label("depth"),
            sa.func.min(fed_outbox.c.created_at).label("oldest"),
        )
        .group_by(fed_outbox.c.destination)
        .subquery()
    )
    rows = await conn.execute(
        sa.select(
            fed_destinations.c.destination,
            fed_destinations.c.attempts,
            fed_destinations.c.next_attempt_ms,
            fed_destinations.c.last_error,
            sa.func.coalesce(per_dest.c.depth, 0).label("depth"),
            per_dest.c.oldest,
        )
        .select_from(
            fed_destinations.outerjoin(
                per_dest, per_dest.c.destination == fed_destinations.c.destination
            )
        )
        .where(sa.or_(per_dest.c.depth > 0, fed_destinations.c.attempts > 0))
        .order_by(fed_destinations.c.destination)
    )
    policy = await read_policy(conn)
    out = []
    for r in rows:
        next_in = None if not r.depth else max(0, int(r.next_attempt_ms / 1000 - now + 0.999))
        blocked = not policy.admits(r.destination)
        out.append(
            DestinationStatus(
                r.destination,
                int(r.depth),
                None if r.oldest is None else max(0, int(now - r.oldest)),
                attempts=int(r.attempts),
                next_attempt_in_seconds=next_in,
                last_error=r.last_error,
                blocked=blocked,
                state="blocked" if blocked else "unreachable" if r.attempts else "sending",
            )
        )
    return out


async def discard_destination_in(conn: AsyncConnection, destination: str) -> int:
    """Delete everything queued for ``destination`` and its delivery state (a domain the
    operator forgot); the number of items discarded."""
    dest = destination.strip().lower()
    result = await conn.execute(sa.delete(fed_outbox).where(fed_outbox.c.destination == dest))
    await conn.execute(sa.delete(fed_destinations).where(fed_destinations.c.destination == dest))
    return int(result.rowcount or 0)


# ---- sending side -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Lease:
    destination: str
    attempts: int


class Outbox:
    """Items per destination in ``fed_outbox``, delivered in id order by one worker task."""

    def __init__(
        self,
        db: Database,
        client: Any,
        policy: Any,
        clock: Callable[[], float] = time.time,
        home_domain: str = "",
        *,
        poll_seconds: float = POLL_SECONDS,
        lease_seconds: float = LEASE_SECONDS,
        max_item_bytes: int = MAX_ITEM_BYTES,
        batch_max_items: int = BATCH_MAX_ITEMS,
        batch_max_bytes: int = BATCH_MAX_BYTES,
    ) -> None:
        self.db = db
        self.client = client  # FederationClient: signed requests
        self.policy = policy  # FederationPolicyStore: ``await policy.load()`` -> .admits()
        self.clock = clock
        self.home_domain = home_domain.lower()
        self.poll_seconds = poll_seconds
        self.lease_ms = int(lease_seconds * 1000)
        self.max_item_bytes = max_item_bytes
        self.batch_max_items = batch_max_items
        self.batch_max_bytes = batch_max_bytes
        self.owner = uuid.uuid4().hex  # this process's lease owner id
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._deliveries: dict[str, asyncio.Task[None]] = {}
        self._stopping = False
        self._held_logged: dict[str, float] = {}
        # Destinations whose last delivery here failed -> when a contact last retried them.
        self._backing_off: dict[str, float] = {}

    # -- enqueue --

    async def enqueue_in(
        self,
        conn: AsyncConnection,
        destination: str,
        kind: str,
        body: bytes,
        ref: bytes | None = None,
    ) -> None:
        """Queue ``body`` for ``destination`` inside the caller's transaction (it is sent only
        if that transaction commits). A destination the policy does not admit now gets it
        too: held, and sent in order once admitted. Raises ``FederationRefused`` (403) only for
        a domain the operator forgot, ``Problem(413)`` for a body over ``max_item_bytes`` and
        ``ValueError`` for an invalid kind or domain (callers pass validated data). A
        transaction that queues for several destinations should do so in sorted domain order
        (each destination row is locked until commit, which keeps ids ascending per
        destination in commit order). ``ref`` tags the item for ``in_transit_in`` (the DS
        tags its items with their group)."""
        dest = destination.strip().lower()
        if not is_valid_domain(dest) or dest == self.home_domain:
            raise ValueError(f"not a remote domain: {destination!r}")
        if not KIND_RE.match(kind):
            raise ValueError(f"not a valid outbox item kind: {kind!r}")
        if len(body) > self.max_item_bytes:
            raise Problem(
                413, "body_too_large", f"a federated item is at most {self.max_item_bytes} bytes"
            )
        policy = await self.policy.load()
        if dest in policy.forgotten:
            raise FederationRefused(
                dest, f"the operator removed {dest} from federation", forgotten=True
            )
        if not policy.admits(dest):
            self._log_held(kind, dest)
        await self._lock_destination(conn, dest)
        await conn.execute(
            sa.insert(fed_outbox).values(
                destination=dest, kind=kind, body=body, created_at=int(self.clock()), ref=ref
            )
        )
        after_commit(conn, self._wake.set)

    async def in_transit_in(self, conn: AsyncConnection, destination: str, ref: bytes) -> bool:
        """Whether an item tagged ``ref`` still waits here for ``destination`` (queued, or
        sent without an answer yet): the receiver has not applied it."""
        found = await conn.execute(
            sa.select(fed_outbox.c.id)
            .where(fed_outbox.c.destination == destination, fed_outbox.c.ref == ref)
            .limit(1)
        )
        return found.first() is not None

    async def peer_reachable(self, origin: str) -> None:
        """``origin`` just sent us a verified request, so it is up: if our deliveries to it
        wait out a backoff, make the next one due now (its members' commits wait for what
        we hold for them). At most once per ``CONTACT_RETRY_SECONDS`` per peer."""
        if origin not in self._backing_off:
            return
        now = time.monotonic()
        if now - self._backing_off[origin] < CONTACT_RETRY_SECONDS:
            return
        self._backing_off[origin] = now
        if await request_retry(self.db, origin, _ms(self.clock)):
            log.info("%s is reachable again: delivering to it now", origin)
            self._wake.set()

    async def lock_in(self, conn: AsyncConnection, destinations: Iterable[str]) -> None:
        """Lock the rows of every destination a transaction is about to queue for, in sorted
        order, before its first ``enqueue_in``: a transaction that queues in several phases
        (a commit's fan-out, then its Welcomes) then cannot deadlock with another one."""
        policy = await self.policy.load()
        for dest in sorted({d.strip().lower() for d in destinations}):
            if dest != self.home_domain and is_valid_domain(dest) and dest not in policy.forgotten:
                await self._lock_destination(conn, dest)

    def _log_held(self, kind: str, dest: str) -> None:
        now = time.monotonic()
        if now - self._held_logged.get(dest, -HELD_LOG_SECONDS) < HELD_LOG_SECONDS:
            return
        if len(self._held_logged) > 1000:
            self._held_logged.clear()
        self._held_logged[dest] = now
        log.warning(
            "%s for %s held: the federation policy refuses the domain for now; "
            "queued items go in order once it is admitted (roost admin outbox)",
            kind,
            dest,
        )

    async def _lock_destination(self, conn: AsyncConnection, dest: str) -> None:
        # Lock (or create) the destination row and hold it until commit: concurrent enqueues
        # to one destination then take their ids in commit order, so the receiver's
        # high-water mark never sees a lower id after a higher one.
        ins = _insert(conn, fed_destinations).values(
            destination=dest,
            attempts=0,
            next_attempt_ms=0,
            last_error=None,
            last_success_at=None,
            lease_owner=None,
            lease_until_ms=0,
        )
        await conn.execute(
            ins.on_conflict_do_update(
                index_elements=[fed_destinations.c.destination],
                set_={"destination": ins.excluded.destination},
            )
        )

    async def enqueue(self, destination: str, kind: str, body: bytes) -> None:
        """``enqueue_in`` in a transaction of its own."""
        async with self.db.transaction() as conn:
            await self.enqueue_in(conn, destination, kind, body)

    # -- operator --

    async def retry_now(self, destination: str | None = None) -> int:
        """Make the next attempt due now (one destination or all); number of destinations."""
        n = await request_retry(self.db, destination, _ms(self.clock))
        self._wake.set()
        return n

    async def status(self) -> list[DestinationStatus]:
        async with self.db.engine.connect() as conn:
            return await federation_outbox_status(conn, self.clock())

    # -- worker --

    async def start(self) -> None:
        """Start the delivery worker (one asyncio task per process)."""
        if self._task is not None:
            return
        async with self.db.engine.connect() as conn:  # backing off since before a restart
            failing = await conn.execute(
                sa.select(fed_destinations.c.destination).where(fed_destinations.c.attempts > 0)
            )
            self._backing_off = {r.destination: -CONTACT_RETRY_SECONDS for r in failing}
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="federation-outbox")

    async def stop(self) -> None:
        """Stop the worker; queued items stay in the database (leases are released)."""
        self._stopping = True
        self._wake.set()
        tasks = [t for t in (self._task, *self._deliveries.values()) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError, Exception):
                await asyncio.wait_for(t, timeout=5.0)
        self._task = None
        self._deliveries.clear()

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)
            self._wake.clear()
            if self._stopping:
                return
            try:
                await self._round()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the database may be away for a moment: poll again
                log.warning("federation outbox round failed: %s", type(e).__name__)

    async def _round(self) -> None:
        """Lease every due destination not already being delivered here and deliver each in
        its own task (a slow peer does not hold up the others)."""
        free = MAX_PARALLEL_DESTINATIONS - len(self._deliveries)
        if free <= 0:
            return
        now = _ms(self.clock)
        has_items = sa.exists().where(fed_outbox.c.destination == fed_destinations.c.destination)
        async with self.db.engine.connect() as conn:
            due = [
                r.destination
                for r in await conn.execute(
                    sa.select(fed_destinations.c.destination)
                    .where(
                        fed_destinations.c.next_attempt_ms <= now,
                        fed_destinations.c.lease_until_ms < now,
                        has_items,
                    )
                    .order_by(fed_destinations.c.next_attempt_ms)
                    .limit(free + len(self._deliveries))
                )
                if r.destination not in self._deliveries
            ]
        for dest in due[:free]:
            lease = await self._take_lease(dest)
            if lease is None:
                continue
            task = asyncio.create_task(self._deliver(lease), name="federation-deliver")
            self._deliveries[dest] = task
            task.add_done_callback(functools.partial(self._delivery_done, dest))

    def _delivery_done(self, dest: str, task: asyncio.Task[None]) -> None:
        self._deliveries.pop(dest, None)
        failed = not task.cancelled() and task.exception() is not None
        # Items queued while that delivery was finishing must not wait for the next poll (after
        # an unexpected failure the poll comes soon enough, and no loop spins on it).
        if not self._stopping and not failed:
            self._wake.set()

    async def _take_lease(self, dest: str) -> _Lease | None:
        now = _ms(self.clock)
        async with self.db.transaction() as conn:
            taken = await conn.execute(
                sa.update(fed_destinations)
                .where(
                    fed_destinations.c.destination == dest,
                    fed_destinations.c.lease_until_ms < now,
                    fed_destinations.c.next_attempt_ms <= now,
                )
                .values(lease_owner=self.owner, lease_until_ms=now + self.lease_ms)
            )
            if taken.rowcount != 1:
                return None
            attempts = (
                await conn.execute(
                    sa.select(fed_destinations.c.attempts).where(
                        fed_destinations.c.destination == dest
                    )
                )
            ).scalar_one()
        return _Lease(dest, int(attempts))

    def _mine(self, dest: str) -> sa.ColumnElement[bool]:
        return sa.and_(
            fed_destinations.c.destination == dest, fed_destinations.c.lease_owner == self.owner
        )

    async def _oldest(self, dest: str, max_items: int) -> list[BatchItem]:
        """The destination's oldest items within the batch caps (sizes first, so that only
        the bodies that go are read)."""
        async with self.db.engine.connect() as conn:
            heads = await conn.execute(
                sa.select(fed_outbox.c.id, sa.func.length(fed_outbox.c.body).label("size"))
                .where(fed_outbox.c.destination == dest)
                .order_by(fed_outbox.c.id)
                .limit(max_items)
            )
            chosen: list[int] = []
            total = 0
            for h in heads:
                if chosen and total + int(h.size) > self.batch_max_bytes:
                    break
                chosen.append(int(h.id))
                total += int(h.size)
            if not chosen:
                return []
            rows = await conn.execute(
                sa.select(fed_outbox.c.id, fed_outbox.c.kind, fed_outbox.c.body)
                .where(fed_outbox.c.id.in_(chosen))
                .order_by(fed_outbox.c.id)
            )
            return [BatchItem(int(r.id), r.kind, bytes(r.body)) for r in rows]

    async def _deliver(self, lease: _Lease) -> None:
        try:
            await self._deliver_batches(lease)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # e.g. the database went away: back off like a failed send
            log.warning("federation delivery to %s broke off: %s", lease.destination, _describe(e))
            with contextlib.suppress(Exception):
                await self._failed(lease.destination, lease, _describe(e))
            raise
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._release(lease.destination))

    async def _deliver_batches(self, lease: _Lease) -> None:
        dest = lease.destination
        max_items = self.batch_max_items
        while not self._stopping:
            policy = await self.policy.load()
            if dest in policy.forgotten:
                await self._discard(dest)
                return
            if not policy.admits(dest):
                await self._hold(dest)
                return
            items = await self._oldest(dest, max_items)
            if not items:
                return
            outcome = await self._send(dest, items)
            if outcome is None:
                await self._delivered(dest, items)
                lease.attempts = 0
                continue
            if outcome == "too_large" and len(items) > 1:
                max_items = 1  # the receiver's body cap is smaller: go one by one
                continue
            if outcome == "too_large":
                await self._drop(dest, items[0])
                continue
            if outcome == "refused":
                await self._hold(dest)
                return
            await self._failed(dest, lease, outcome)
            return

    async def _send(self, dest: str, items: list[BatchItem]) -> str | None:
        """None when the receiver applied the batch, else why not (no payloads)."""
        body = encode_batch(items)
        try:
            response = await self.client.request(
                dest, "POST", INBOX_PATH, body=body, content_type=BATCH_MEDIA_TYPE
            )
        except FederationRefused:
            return "refused"  # our own policy changed since the lease (a remote 403 is not this)
        except Problem as p:
            if p.status == 413:
                return "too_large"
            return f"{p.status} {p.code}: {p.detail}" if p.detail else f"{p.status} {p.code}"
        except Exception as e:
            return _describe(e)
        status = getattr(response, "status_code", 0)
        if status == 413:
            return "too_large"
        if not 200 <= status < 300:
            return f"HTTP {status}"
        self._log_rejected(dest, response)
        return None

    def _log_rejected(self, dest: str, response: Any) -> None:
        try:
            rejected = response.json().get("rejected") or []
        except Exception:
            return
        if rejected:
            log.warning("%s rejected %d federated item(s)", dest, len(rejected))

    async def _delivered(self, dest: str, items: list[BatchItem]) -> None:
        self._backing_off.pop(dest, None)
        now = _ms(self.clock)
        async with self.db.transaction() as conn:
            await conn.execute(
                sa.delete(fed_outbox).where(
                    fed_outbox.c.destination == dest,
                    fed_outbox.c.id.in_([i.outbox_id for i in items]),
                )
            )
            await conn.execute(
                sa.update(fed_destinations)
                .where(self._mine(dest))
                .values(
                    attempts=0,
                    last_error=None,
                    last_success_at=now // 1000,
                    lease_until_ms=now + self.lease_ms,
                )
            )

    async def _drop(self, dest: str, item: BatchItem) -> None:
        """An item the receiver can never take (too large for its body cap): dropped so that
        it does not block the queue for ever; the operator sees why."""
        log.warning(
            "dropped a federated %s item the receiver %s refused as too large", item.kind, dest
        )
        async with self.db.transaction() as conn:
            await conn.execute(sa.delete(fed_outbox).where(fed_outbox.c.id == item.outbox_id))
            await conn.execute(
                sa.update(fed_destinations)
                .where(self._mine(dest))
                .values(last_error=f"dropped one {item.kind} item: too large for {dest}")
            )

    async def _failed(self, dest: str, lease: _Lease, error: str) -> None:
        lease.attempts += 1
        if len(self._backing_off) > 1000:
            self._backing_off.clear()
        self._backing_off.setdefault(dest, -CONTACT_RETRY_SECONDS)
        delay = backoff_seconds(lease.attempts)
        log.info(
            "federation delivery to %s failed (%s); attempt %d, next in %.0f s",
            dest,
            error,
            lease.attempts,
            delay,
        )
        async with self.db.transaction() as conn:
            await conn.execute(
                sa.update(fed_destinations)
                .where(self._mine(dest))
                .values(
                    attempts=lease.attempts,
                    last_error=error[:ERROR_MAX],
                    next_attempt_ms=_ms(self.clock) + int(delay * 1000),
                )
            )

    async def _hold(self, dest: str) -> None:
        """The policy no longer admits ``dest``: keep its items, look again later."""
        async with self.db.transaction() as conn:
            await conn.execute(
                sa.update(fed_destinations)
                .where(self._mine(dest))
                .values(next_attempt_ms=_ms(self.clock) + int(BLOCKED_RECHECK_SECONDS * 1000))
            )

    async def _discard(self, dest: str) -> None:
        """The operator forgot ``dest``: items queued for it since (a server whose policy cache
        had not seen the change yet) go the way of those the command discarded."""
        async with self.db.transaction() as conn:
            n = await discard_destination_in(conn, dest)
        if n:
            log.info("discarded %d federated item(s) for %s: the operator forgot it", n, dest)

    async def _release(self, dest: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                sa.update(fed_destinations)
                .where(self._mine(dest))
                .values(lease_owner=None, lease_until_ms=0)
            )


def _describe(e: BaseException) -> str:
    """A short error text for ``last_error``: the exception type and its status or code."""
    name = type(e).__name__
    status = getattr(e, "status", None) or getattr(e, "status_code", None)
    code = getattr(e, "code", None)
    parts = [name] + [str(x) for x in (status, code) if x]
    return " ".join(parts)


# ---- receiving side ---------------------------------------------------------------------------


@dataclass(slots=True)
class InboxResult:
    applied: list[int] = field(default_factory=list)
    duplicate: list[int] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"applied": self.applied, "duplicate": self.duplicate, "rejected": self.rejected}


class _Rejected(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class InboxDispatcher:
    """Item kind -> handler for ``POST /federation/v1/inbox``; each item applied exactly once."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock
        self.handlers: dict[str, Handler] = {}

    def register(self, kind: str, handler: Handler) -> None:
        """``handler(conn, origin_domain, body)`` runs inside the receiving transaction; a
        ``Problem`` 4xx rejects the item permanently, anything else makes the sender retry."""
        if not KIND_RE.match(kind):
            raise ValueError(f"not a valid inbox kind: {kind!r}")
        if kind in self.handlers:
            raise ValueError(f"inbox kind {kind!r} registered twice")
        self.handlers[kind] = handler

    async def apply(self, origin: str, items: list[BatchItem]) -> InboxResult:
        """Apply ``items`` (ids ascending) from ``origin`` in order, one transaction each.
        An item that fails with anything but a 4xx stops the batch: ``Problem(503)`` (the
        sender retries; items already applied then come back as duplicates)."""
        result = InboxResult()
        for item in items:
            try:
                outcome = await self._apply_one(origin, item)
            except (Problem, _Rejected) as e:
                if isinstance(e, Problem) and not 400 <= e.status < 500:
                    raise self._retry_later(origin, item, e) from None
                code = e.code
                log.warning("rejected a federated %s item from %s: %s", item.kind, origin, code)
                outcome = await self._reject(origin, item)
                if outcome == "rejected":
                    result.rejected.append({"id": item.outbox_id, "code": code})
                    continue
            except Exception as e:
                raise self._retry_later(origin, item, e) from None
            getattr(result, outcome).append(item.outbox_id)
        return result

    def _retry_later(self, origin: str, item: BatchItem, e: BaseException) -> Problem:
        log.error(
            "a federated %s item from %s could not be applied now (%s); the sender retries",
            item.kind,
            origin,
            type(e).__name__,
        )
        return Problem(
            503,
            "service_unavailable",
            "an item could not be applied now; send the batch again later",
            headers={"Retry-After": "1"},
        )

    async def _lock_mark(self, conn: AsyncConnection, origin: str) -> int:
        """The origin's high-water mark, its row locked until this transaction ends (so two
        deliveries of one item serialise and the second sees it applied)."""
        ins = _insert(conn, fed_inbox_marks).values(
            origin=origin, last_outbox_id=0, updated_at=int(self.clock())
        )
        await conn.execute(ins.on_conflict_do_nothing(index_elements=[fed_inbox_marks.c.origin]))
        return int(
            (
                await conn.execute(
                    sa.select(fed_inbox_marks.c.last_outbox_id)
                    .where(fed_inbox_marks.c.origin == origin)
                    .with_for_update()
                )
            ).scalar_one()
        )

    async def _advance(self, conn: AsyncConnection, origin: str, outbox_id: int) -> None:
        await conn.execute(
            sa.update(fed_inbox_marks)
            .where(fed_inbox_marks.c.origin == origin)
            .values(last_outbox_id=outbox_id, updated_at=int(self.clock()))
        )

    async def _apply_one(self, origin: str, item: BatchItem) -> str:
        async with self.db.transaction() as conn:
            if item.outbox_id <= await self._lock_mark(conn, origin):
                return "duplicate"
            handler = self.handlers.get(item.kind)
            if handler is None:
                raise _Rejected("unknown_kind")
            await handler(conn, origin, item.body)
            await self._advance(conn, origin, item.outbox_id)
        return "applied"

    async def _reject(self, origin: str, item: BatchItem) -> str:
        """Record a rejected item (its handler's changes were rolled back): the mark moves past
        it so it cannot block the items behind it."""
        async with self.db.transaction() as conn:
            if item.outbox_id <= await self._lock_mark(conn, origin):
                return "duplicate"
            await self._advance(conn, origin, item.outbox_id)
        return "rejected"
