"""Fan-out: one item of a group's order to its members' queues, inside the caller's
transaction — local queues in one multi-row enqueue, remote members' queues through the
federation outbox, leaves without a queue yet (fresh joiners) held until they register one."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import sqlalchemy as sa

from roost.protocol.queue_item import encode_queue_item

from ..queues.service import QueueService
from ..store.async_engine import AsyncConnection
from .federation_port import DsFederation
from .group_store import GroupStore, Member
from .tables import ds_held

log = logging.getLogger("roost.server.delivery")


class Fanout:
    def __init__(
        self,
        queues: QueueService,
        federation: DsFederation | None,
        store: GroupStore,
        max_held_per_leaf: int,
    ) -> None:
        self.queues = queues
        self.store = store
        self.federation = federation
        self.max_held = max_held_per_leaf

    async def fanout(
        self,
        conn: AsyncConnection,
        group_id: bytes,
        group_seq: int,
        item_type: int,
        body: bytes,
        members: Iterable[Member],
        exclude_leaf: int | None = None,
    ) -> None:
        """One item to every member but ``exclude_leaf``: one multi-row enqueue for registered
        queues; leaves without a queue yet (fresh joiners) get it held, in group order."""
        items: list[tuple[bytes, bytes]] = []
        remote: dict[str, list[tuple[bytes, bytes]]] = {}
        held: list[dict[str, object]] = []
        held_leaves: list[int] = []
        for m in members:
            if m.leaf_index == exclude_leaf or m.gone:
                continue
            if m.queue_id is None:
                held_leaves.append(m.leaf_index)
                held.append(
                    {
                        "group_id": group_id,
                        "leaf_index": m.leaf_index,
                        "group_seq": group_seq,
                        "item_type": item_type,
                        "body": body,
                    }
                )
            else:
                policy = m.policy.encode() if m.policy else b""
                item = encode_queue_item(group_id, group_seq, policy, item_type, body)
                if m.queue_domain is None:
                    items.append((m.queue_id, item))
                else:  # on the member's home QS, through the outbox (same transaction)
                    remote.setdefault(m.queue_domain, []).append((m.queue_id, item))
        if items:
            await self.queues.enqueue_many_in(conn, items)
        if held:
            await conn.execute(sa.insert(ds_held), held)
            await self._drop_overfull(conn, group_id, held_leaves)
        if remote:
            await self.remote_items(conn, group_id, remote)

    async def _drop_overfull(
        self, conn: AsyncConnection, group_id: bytes, leaves: list[int]
    ) -> None:
        """A leaf holding more than ``max_held`` items never came to register its queue: it
        is marked gone (nothing more is held for it; the account-events task issues the
        server's Remove proposal for gone leaves) and its held items are deleted."""
        counts = await conn.execute(
            sa.select(ds_held.c.leaf_index, sa.func.count())
            .where(ds_held.c.group_id == group_id, ds_held.c.leaf_index.in_(leaves))
            .group_by(ds_held.c.leaf_index)
        )
        full = sorted(leaf for leaf, n in counts if n > self.max_held)
        if not full:
            return
        await self.store.mark_leaves_gone(conn, group_id, full)
        log.info("held items over the limit: %d leaves of a group dropped", len(full))

    async def remote_items(
        self,
        conn: AsyncConnection,
        group_id: bytes,
        by_domain: dict[str, list[tuple[bytes, bytes]]],
    ) -> None:
        if self.federation is None:
            log.warning("items for remote members dropped: federation is not running")
            return
        for domain in sorted(by_domain):
            await self.federation.items_in(conn, domain, group_id, by_domain[domain])

    async def in_transit(self, conn: AsyncConnection, domain: str, group_id: bytes) -> bool:
        """Whether items of the group are still on their way to ``domain``'s queues."""
        if self.federation is None:
            return False
        return await self.federation.items_in_transit(conn, domain, group_id)

    async def lock_destinations(self, conn: AsyncConnection, domains: set[str]) -> None:
        """Before a transaction's first remote item: its destinations, locked in one order."""
        if domains and self.federation is not None:
            await self.federation.lock_destinations_in(conn, domains)

    async def welcome_remote(
        self, conn: AsyncConnection, domain: str, user_id: str, event: bytes
    ) -> None:
        """A Welcome event to a user of another domain (its direct queue there, via outbox)."""
        if self.federation is None:
            log.warning("a Welcome for a remote user dropped: federation is not running")
            return
        await self.federation.welcome_in(conn, domain, user_id, event)
