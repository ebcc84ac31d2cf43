"""In-process realtime hub: which live connection listens for which queue, and wake-ups.

Producers never talk to connections. They tell the hub, through four calls, what happened:

- ``queue_item(wake)``: an enqueue committed (the QueueService's post-commit listener). A
  group-queue wake-up names only the queue (no stored row ties it to a client): it goes to the
  connections that accepted that queue, i.e. presented its key in ``hello`` or ``subscribe``.
  A direct-queue wake-up names the user and goes to every connection of that user. It carries
  the seq and the payload, so a connection can usually send it without reading it back;
- ``acked(client_uuid, queue, up_to)``: an ack committed, over the socket or over HTTP; a
  group-queue ack is routed by queue id, a direct-queue ack by client;
- ``client_gone(client_uuid)`` / ``user_gone(user_uuid)``: credentials revoked (after the
  deleting transaction committed), so the sockets close at once.

Several processes on one PostgreSQL put a LISTEN/NOTIFY bridge (pg_bridge.py) behind the same
calls: it publishes ``(queue, seq)`` (group) or ``(user, seq)`` (direct) and, in every
process, turns received notifications into ``queue_item`` calls with ``payload=None``
(connections then read the item from the database, as they already do whenever their
in-memory view has a gap).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from ..queues.service import ACKED_ALL, WakeUp
from ..store.async_engine import AsyncConnection
from ..store.engine import after_commit
from .protocol import CloseCode

log = logging.getLogger("roost.server.notify")


class Subscriber(Protocol):
    client_uuid: str
    user_uuid: str

    def on_item(self, wake: WakeUp) -> None: ...

    def on_acked(self, queue_id: bytes | None, up_to: int) -> None: ...

    def terminate(self, code: int, reason: str) -> None: ...


class PresenceSink(Protocol):
    """Told when a client gains or loses its connection to this process (notify/presence.py
    publishes that for the other processes on PostgreSQL)."""

    def mark(self, client_uuid: str, connected: bool) -> None: ...

    async def settled(self) -> None: ...


class Hub:
    """Live connections by client (one each), by user (for the shared direct queue) and by
    accepted group queue."""

    def __init__(self) -> None:
        self._by_client: dict[str, Subscriber] = {}
        self._by_user: dict[str, set[Subscriber]] = {}
        self._by_queue: dict[bytes, set[Subscriber]] = {}
        self._queues_of: dict[Subscriber, set[bytes]] = {}
        self.presence: PresenceSink | None = None  # set when several processes share a database

    def __len__(self) -> int:
        return len(self._by_client)

    def is_connected(self, client_uuid: str) -> bool:
        """Whether ``client_uuid`` has a live connection to *this* process."""
        return client_uuid in self._by_client

    def is_served(self, queue_id: bytes) -> bool:
        """Whether a connection to *this* process accepted the group queue ``queue_id``."""
        return queue_id in self._by_queue

    async def presence_settled(self) -> None:
        """Wait (briefly, never failing) until the other processes can see this process's
        connections, so a client told "ready" gets no push sent through another process."""
        if self.presence is not None:
            await self.presence.settled()

    def attach(self, sub: Subscriber) -> None:
        """Register ``sub``; an older connection of the same client is told to close (4409)."""
        old = self._by_client.get(sub.client_uuid)
        if old is not None and old is not sub:
            self.detach(old)
            old.terminate(CloseCode.REPLACED, "replaced by a newer connection of this client")
        self._by_client[sub.client_uuid] = sub
        self._by_user.setdefault(sub.user_uuid, set()).add(sub)
        if self.presence is not None:
            self.presence.mark(sub.client_uuid, True)

    def subscribe(self, sub: Subscriber, queue_ids: Iterable[bytes]) -> None:
        """Route the group queues ``queue_ids`` (their keys checked) to ``sub``."""
        mine = self._queues_of.setdefault(sub, set())
        for qid in queue_ids:
            mine.add(qid)
            self._by_queue.setdefault(qid, set()).add(sub)

    def _unsubscribe(self, sub: Subscriber, queue_id: bytes) -> None:
        subs = self._by_queue.get(queue_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._by_queue[queue_id]

    def detach(self, sub: Subscriber) -> None:
        for qid in self._queues_of.pop(sub, ()):
            self._unsubscribe(sub, qid)
        if self._by_client.get(sub.client_uuid) is sub:
            del self._by_client[sub.client_uuid]
            if self.presence is not None:
                self.presence.mark(sub.client_uuid, False)
        peers = self._by_user.get(sub.user_uuid)
        if peers is not None:
            peers.discard(sub)
            if not peers:
                del self._by_user[sub.user_uuid]

    # ---- producers -----------------------------------------------------------------------

    def queue_item(self, wake: WakeUp) -> None:
        if wake.queue_id is None:
            peers = self._by_user.get(wake.user_uuid or "", ())
        else:
            peers = self._by_queue.get(wake.queue_id, ())
        for peer in tuple(peers):
            self._deliver(peer, wake)

    def acked(self, client_uuid: str | None, queue_id: bytes | None, up_to: int) -> None:
        """An ack committed (over the socket or HTTP): the connections' windows free. A group
        queue's ack goes to whoever accepted the queue, a direct one to the acking client."""
        if queue_id is None:
            sub = self._by_client.get(client_uuid or "")
            if sub is not None:
                sub.on_acked(None, up_to)
            return
        for peer in tuple(self._by_queue.get(queue_id, ())):
            peer.on_acked(queue_id, up_to)
        if up_to >= ACKED_ALL:  # the queue was deleted: nothing more will come from it
            for peer in tuple(self._by_queue.get(queue_id, ())):
                self._queues_of.get(peer, set()).discard(queue_id)
                self._unsubscribe(peer, queue_id)

    def client_gone(self, client_uuid: str) -> None:
        sub = self._by_client.get(client_uuid)
        if sub is not None:
            self.detach(sub)
            sub.terminate(CloseCode.UNAUTHENTICATED, "the client was removed")

    def user_gone(self, user_uuid: str) -> None:
        for sub in tuple(self._by_user.get(user_uuid, ())):
            self.detach(sub)
            sub.terminate(CloseCode.UNAUTHENTICATED, "the account was deleted")

    def resync(self) -> None:
        """Wake-ups may have been missed (the cross-process LISTEN connection was down): every
        connection re-reads its queues from the database."""
        for sub in tuple(self._by_client.values()):
            resync = getattr(sub, "resync", None)
            if resync is not None:
                resync()

    @staticmethod
    def _deliver(sub: Subscriber, wake: WakeUp) -> None:
        try:
            sub.on_item(wake)
        except Exception:  # one broken connection must not stop the others' wake-ups
            log.exception("realtime wake-up failed")

    # ---- deletion hooks (run inside the AS's transaction; act after it commits) -----------

    async def on_client_removed(self, conn: AsyncConnection, client_uuid: str) -> None:
        after_commit(conn, lambda: self.client_gone(client_uuid))

    async def on_user_deleted(
        self, conn: AsyncConnection, user_uuid: str, _client_uuids: list[str]
    ) -> None:
        after_commit(conn, lambda: self.user_gone(user_uuid))
