"""Realtime wake-ups across ``roost serve`` processes sharing one PostgreSQL (LISTEN/NOTIFY).

Publishing: the hub's events are told to the bridge *inside* the transaction that caused them
(``QueueService.tx_listeners`` / ``tx_ack_listeners``, the AS's deletion hooks). They are
batched per transaction and sent with ``pg_notify`` just before the commit, so PostgreSQL
delivers them only if the transaction commits, and in commit order (a realtime ack write is a
single statement that commits by itself: its notifications go in that statement,
``ack_notices``). A notification carries what
the hub needs and nothing more: for a group queue the queue and the seq (no owner: the hub
routes by queue id), for the direct queue the user (items) or client (acks) and the seq; never
the message payload nor a queue key. Each is at most ``MAX_PAYLOAD`` bytes (PostgreSQL's limit is 8000), a large batch is split.

Receiving: each process holds one dedicated asyncpg connection that LISTENs. Notifications
from other processes become ``Hub`` calls (``queue_item`` with ``payload=None``: the session
reads the items from the database); a process ignores its own (the hub already had them in
memory, after commit). When the LISTEN connection drops it is re-opened with backoff, and then
every local session re-reads its queues from the database, so a wake-up missed while deaf is
only late, never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..auth.token_cache import TokenCache, token_cache
from ..queues.service import WakeUp
from ..store.async_engine import AsyncConnection
from ..store.engine import BEFORE_COMMIT, before_commit
from ..store.pg_driver import pg_driver
from .hub import Hub

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger("roost.server.notify")

CHANNEL = "roost_realtime"
MAX_PAYLOAD = 7900  # PostgreSQL refuses NOTIFY payloads of 8000 bytes or more
APPLICATION_NAME = "roost-realtime-listen"
_BATCH = "roost_pg_notify_batch"
_NOTIFY = sa.text("SELECT pg_notify(:channel, :payload)")
# All of a transaction's payloads in one round trip (unnest yields them in array order).
_NOTIFY_ON_DRIVER = "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p"
# One encoder for every event (``json.dumps`` with options builds a new one per call).
_encode_event = json.JSONEncoder(separators=(",", ":")).encode

# Event kinds on the wire: [kind, ...] inside {"o": origin, "e": [...]}.
_ITEM, _ACK, _CLIENT_GONE, _USER_GONE = "q", "a", "c", "u"


def listen_dsn(database_url: str) -> str:
    """asyncpg's DSN for the configured ``postgresql://`` URL (no SQLAlchemy driver part)."""
    for prefix in ("postgresql+asyncpg://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql://" + database_url[len(prefix) :]
    return database_url


def _payload_head(origin: str) -> str:
    """How every payload of ``origin`` starts (a process skips its own by it)."""
    return f'{{"o":"{origin}","e":['


def encode_batches(origin: str, events: list[list[Any]]) -> list[str]:
    """Split ``events`` into notification payloads of at most ``MAX_PAYLOAD`` bytes each."""
    head = _payload_head(origin)
    out: list[str] = []
    parts: list[str] = []
    size = len(head) + 2
    for event in events:
        part = _encode_event(event)
        if parts and size + len(part) + 1 > MAX_PAYLOAD:
            out.append(head + ",".join(parts) + "]}")
            parts, size = [], len(head) + 2
        parts.append(part)
        size += len(part) + 1
    if parts:
        out.append(head + ",".join(parts) + "]}")
    return out


def _qid(queue_id: bytes | None) -> str:
    return "" if queue_id is None else queue_id.hex()


def _unqid(text: str) -> bytes | None:
    return None if text == "" else bytes.fromhex(text)


class PgBridge:
    def __init__(
        self,
        hub: Hub,
        database_url: str,
        *,
        min_backoff: float = 0.2,
        max_backoff: float = 10.0,
        keepalive: float = 5.0,
    ) -> None:
        self._hub = hub
        self._dsn = listen_dsn(database_url)
        self.origin = secrets.token_hex(8)  # this process, so its own notifications are skipped
        self._own_head = _payload_head(self.origin)
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._keepalive = keepalive
        self._task: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection | None = None
        self.connected = asyncio.Event()
        self.reconnects = 0  # LISTEN connections opened after the first (metrics / tests)
        self.tokens: TokenCache | None = None  # evicted on the other processes' revocations

    # ---- publishing (inside the producing transaction) -------------------------------------

    def on_enqueue(self, conn: AsyncConnection, wake: WakeUp) -> None:
        # A group queue's item names no user ("" on the wire).
        user = wake.user_uuid if wake.queue_id is None else None
        self._add(conn, [_ITEM, user or "", _qid(wake.queue_id), wake.seq])

    def on_ack(
        self, conn: AsyncConnection, client_uuid: str | None, queue_id: bytes | None, up_to: int
    ) -> None:
        # A group queue's ack names no client ("" on the wire).
        client = client_uuid if queue_id is None else None
        self._add(conn, [_ACK, client or "", _qid(queue_id), up_to])

    def ack_notices(self, acks: list[tuple[bytes, int]]) -> tuple[str, list[str]]:
        """The notifications for realtime acks of group queues, which ``QueueService`` sends in
        the ack statement itself (a transaction of one statement, no commit hook)."""
        events: list[list[Any]] = [[_ACK, "", _qid(qid), up_to] for qid, up_to in acks]
        return CHANNEL, encode_batches(self.origin, events)

    async def on_client_removed(self, conn: AsyncConnection, client_uuid: str) -> None:
        self._add(conn, [_CLIENT_GONE, client_uuid])

    async def on_user_deleted(
        self, conn: AsyncConnection, user_uuid: str, _client_uuids: list[str]
    ) -> None:
        self._add(conn, [_USER_GONE, user_uuid])

    def _add(self, conn: AsyncConnection, event: list[Any]) -> None:
        # conn.info outlives the transaction (it is the pooled connection's), so the batch is
        # tied to this transaction's hook list: a rolled-back batch is never reused.
        tx = conn.info.get(BEFORE_COMMIT)
        entry = conn.info.get(_BATCH)
        if entry is not None and entry[0] is tx and tx is not None:
            entry[1].append(event)
            return
        if tx is None or not before_commit(conn, self._flush):
            # Every producer runs in a Database.transaction(); should one not, the other
            # processes' sessions still get the item on their next read (a late wake-up).
            log.warning("realtime event outside a transaction not published across processes")
            return
        conn.info[_BATCH] = (tx, [event])

    async def _flush(self, conn: AsyncConnection) -> None:
        entry = conn.info.pop(_BATCH, None)
        if entry is not None and entry[1]:
            await self._notify_now(conn, entry[1])

    async def _notify_now(self, conn: AsyncConnection, events: list[list[Any]]) -> None:
        # On the asyncpg connection, in the same transaction: through SQLAlchemy's execution
        # path it cost about as much again as the NOTIFY (once per send batch and ack write).
        driver = await pg_driver(conn)
        await driver.execute(_NOTIFY_ON_DRIVER, CHANNEL, encode_batches(self.origin, events))

    # ---- receiving ------------------------------------------------------------------------

    def _on_notification(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if payload.startswith(self._own_head):
            return  # ours (not even parsed): the hub already woke the local sessions after commit
        try:
            for event in json.loads(payload)["e"]:
                self._dispatch(event)
        except Exception:  # a malformed notification must not stop the listener
            log.exception("bad realtime notification")

    def _dispatch(self, event: list[Any]) -> None:
        kind = event[0]
        if kind == _ITEM:
            self._hub.queue_item(
                WakeUp(_unqid(event[2]), int(event[3]), None, user_uuid=event[1] or None)
            )
        elif kind == _ACK:
            self._hub.acked(event[1] or None, _unqid(event[2]), int(event[3]))
        elif kind == _CLIENT_GONE:
            if self.tokens is not None:  # its tokens stop working here at once too
                self.tokens.evict_clients({event[1]})
            self._hub.client_gone(event[1])
        elif kind == _USER_GONE:
            if self.tokens is not None:
                self.tokens.evict_user(event[1])
            self._hub.user_gone(event[1])

    # ---- life cycle -----------------------------------------------------------------------

    async def start(self, wait: float = 10.0) -> None:
        """Start listening; wait up to ``wait`` seconds for the first LISTEN (then go on: the
        loop keeps retrying and sessions re-read once it is up)."""
        self._task = asyncio.create_task(self._run(), name="roost-pg-listen")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), wait)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        backoff = self._min_backoff
        first = True
        while True:
            try:
                await self._listen_once(first)
                first = False
                backoff = self._min_backoff  # it was up: retry quickly
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect with backoff
                log.warning("realtime LISTEN connection failed: %s", type(exc).__name__)
            self.connected.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)

    async def _listen_once(self, first: bool) -> None:
        import asyncpg  # PostgreSQL only: a SQLite server never loads the driver

        conn: asyncpg.Connection = await asyncpg.connect(
            self._dsn, server_settings={"application_name": APPLICATION_NAME}, timeout=10
        )
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _c: lost.set())
        try:
            await conn.add_listener(CHANNEL, self._on_notification)
            self._conn = conn
            if not first:
                self.reconnects += 1
            # Anything committed while no LISTEN was up was not heard: read it back.
            self._hub.resync()
            self.connected.set()
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), self._keepalive)
                if not lost.is_set():  # a half-open TCP connection tells nobody: probe it
                    await conn.fetchval("SELECT 1", timeout=self._keepalive)
            raise ConnectionError("LISTEN connection closed")
        finally:
            self._conn = None
            with contextlib.suppress(Exception):
                conn.terminate()


def install_pg_bridge(hub: Hub, services: Any, database_url: str) -> PgBridge:
    """Connect the bridge's publishing side to the producers (receiving starts with
    ``start()``)."""
    bridge = PgBridge(hub, database_url)
    services.queues.tx_listeners.append(bridge.on_enqueue)
    services.queues.tx_ack_listeners.append(bridge.on_ack)
    services.queues.ack_notices = bridge.ack_notices
    services.auth.on_client_removed.append(bridge.on_client_removed)
    services.auth.on_user_deleted.append(bridge.on_user_deleted)
    bridge.tokens = token_cache(services.auth)
    return bridge


async def publish_user_revoked(conn: AsyncConnection, user_uuid: str) -> None:
    """Tell every serving process, when ``conn``'s transaction commits, that all tokens of
    ``user_uuid`` are gone (for ``roost admin``, which runs no bridge). No-op on SQLite."""
    if conn.dialect.name == "postgresql":
        for payload in encode_batches("admin", [[_USER_GONE, user_uuid]]):
            await conn.execute(_NOTIFY, {"channel": CHANNEL, "payload": payload})


__all__ = ["PgBridge", "encode_batches", "install_pg_bridge", "listen_dsn", "publish_user_revoked"]
