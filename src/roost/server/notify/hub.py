"""In-process realtime hub: which live connection listens for which client, and wake-ups.

Producers never talk to connections. They tell the hub, through four calls, what happened:

- ``queue_item(wake)``: an enqueue committed (the QueueService's post-commit listener); the
  wake-up names the owner (client uuid for a group queue, user uuid for a direct queue), the
  queue, the seq and the payload, so a connection can usually send it without reading it back;
- ``acked(client_uuid, queue, up_to)``: an ack committed, over the socket or over HTTP;
- ``client_gone(client_uuid)`` / ``user_gone(user_uuid)``: credentials revoked (after the
  deleting transaction committed), so the sockets close at once.

Several processes on one PostgreSQL would put a LISTEN/NOTIFY bridge behind the same
calls: publish ``(owner, queue, seq)`` with NOTIFY and, in every process, turn received
notifications into ``queue_item`` calls with ``payload=None`` (connections then read the item
from the database, as they already do whenever their in-memory view has a gap). Callers do not
change.
"""

from __future__ import annotations

import logging
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from ..queues.service import WakeUp
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
    """Live connections by client (one each) and by user (for the shared direct queue)."""

    def __init__(self) -> None:
        self._by_client: dict[str, Subscriber] = {}
        self._by_user: dict[str, set[Subscriber]] = {}
        self.presence: PresenceSink | None = None  # set when several processes share a database

    def __len__(self) -> int:
        return len(self._by_client)

    def is_connected(self, client_uuid: str) -> bool:
        """Whether ``client_uuid`` has a live connection to *this* process."""
        return client_uuid in self._by_client

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

    def detach(self, sub: Subscriber) -> None:
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
            for peer in tuple(self._by_user.get(wake.owner, ())):
                self._deliver(peer, wake)
        else:
            sub = self._by_client.get(wake.owner)
            if sub is not None:
                self._deliver(sub, wake)

    def acked(self, client_uuid: str, queue_id: bytes | None, up_to: int) -> None:
        """An ack committed (over the socket or HTTP): the connection's window frees."""
        sub = self._by_client.get(client_uuid)
        if sub is not None:
            sub.on_acked(queue_id, up_to)

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
