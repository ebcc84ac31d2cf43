"""Keeping a client's groups in sync (docs/api.md, "What member queues receive" and "Welcome
delivery and joining"): joining from the Welcomes in the direct queue, processing the
``RoostQueueItem``s of our group queue in order (MLS messages and signed homeserver notices),
acking what was processed, and listening over the realtime socket with reconnects."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace

from roost.mls.crypto.ciphersuite import get_cipher_suite
from roost.mls.errors import MLSError
from roost.protocol.base64url import b64u, unb64u
from roost.protocol.queue_item import ITEM_SERVER_NOTICE, QueueItem
from roost.protocol.signed_notice import SignedNotice

from .client import RoostClient
from .connection_requests import on_connection_event
from .errors import RoostError
from .group_events import (
    GroupEvent,
    describe_commit,
    notice_text,
    proposal_text,
    roster_clients,
    sender_name,
)
from .group_store import GroupStore
from .realtime import _FINAL_CLOSES, Delivery, Realtime, RealtimeClosed
from .server_keys import ServerKeys

EventSink = Callable[[list[GroupEvent]], Awaitable[None]]


def group_path(group_id: bytes) -> str:
    """A group id as a path segment (``/v1/groups/{group_id}``): b64u, which needs no quoting."""
    return b64u(group_id)


class GroupSync:
    """Processes what arrives for one client's groups, under the store's lock."""

    def __init__(self, client: RoostClient, store: GroupStore, server_keys: ServerKeys) -> None:
        self.client = client
        self.store = store
        self.server_keys = server_keys
        self.realtime: Realtime | None = None  # the live realtime connection while listening

    # ---- queue set-up ------------------------------------------------------------------------
    async def ensure_queue(self) -> str:
        cursors = self.store.cursors
        if not cursors.queue_id:
            cursors.queue_id = await self.client.create_queue()
            cursors.queue_after = 0
            self.store.save_cursors()
        return cursors.queue_id

    # ---- polling -----------------------------------------------------------------------------
    async def sync(self, limit: int | None) -> list[GroupEvent]:
        """Join from any new Welcome, then process everything waiting in our group queue (in
        order) and ack it."""
        events = await self.sync_welcomes()
        cursors = self.store.cursors
        if not cursors.queue_id:
            return events
        while True:
            page = await self.client.fetch_queue(cursors.queue_id, cursors.queue_after, limit=limit)
            async with self.store.lock:
                for m in page.messages:
                    if m.seq <= cursors.queue_after:
                        continue  # already processed (at-least-once delivery)
                    events.extend(await self._handle_payload(m.payload))
                    cursors.queue_after = m.seq
                self.store.flush()
            if page.messages:
                await self.client.ack_queue(cursors.queue_id, cursors.queue_after)
            if not page.has_more or not page.messages:
                return events

    async def handle_queue_messages(self, items: Iterable[tuple[int, bytes]]) -> list[GroupEvent]:
        """Process items of our group queue; those at or below the processed cursor are skipped
        (no duplicates). The changed group states and the cursor are saved once, after the
        batch (states first, so a crash never skips an item)."""
        events: list[GroupEvent] = []
        cursors = self.store.cursors
        async with self.store.lock:
            for seq, payload in items:
                if seq <= cursors.queue_after:
                    continue
                events.extend(await self._handle_payload(payload))
                cursors.queue_after = seq
            self.store.flush()
        return events

    # ---- Welcomes ----------------------------------------------------------------------------
    async def sync_welcomes(self) -> list[GroupEvent]:
        events: list[GroupEvent] = []
        cursors = self.store.cursors
        while True:
            page = await self.client.fetch_direct(cursors.direct_after)
            for e in page.events:
                if e.type == "welcome" and e.payload:
                    event = await self._join(e.payload, e.sender or "")
                    if event is not None:
                        events.append(event)
                elif e.type.startswith("connection_"):
                    event = await on_connection_event(self.client, self.store, e, self._join)
                    if event is not None:
                        events.append(event)
                cursors.direct_after = max(cursors.direct_after, e.seq)
            if page.events:
                self.store.save_cursors()
                await self.client.ack_direct(cursors.direct_after)
            if not page.has_more or not page.events:
                return events

    async def _join(self, welcome: bytes, inviter: str) -> GroupEvent | None:
        try:
            group = await self.client.with_as_certificates(
                lambda: self.client.join_from_welcome(welcome)
            )
        except RoostError as e:
            if e.code == "invalid_welcome":
                return None  # for another client of our user
            raise
        queue_id = await self.ensure_queue()
        async with self.store.lock:
            self.store.groups[group.group_id] = group
            try:
                await self.client.request(
                    "PUT",
                    f"/v1/groups/{group_path(group.group_id)}/queue",
                    json={"queue_id": queue_id},
                )
            except RoostError as e:
                if e.status not in (403, 404):
                    raise
                # Deleted, or we were removed again, before we got here: nothing to join.
                self.store.forget(group.group_id)
                return GroupEvent("rejected", group.group_id, inviter, text=f"stale Welcome: {e}")
            return self.store.record(
                GroupEvent(
                    "joined",
                    group.group_id,
                    inviter,
                    epoch=group.epoch,
                    text=f"joined (invited by {inviter})",
                )
            )

    # ---- queue items -------------------------------------------------------------------------
    async def _handle_payload(self, payload: bytes) -> list[GroupEvent]:
        try:
            item = QueueItem.decode(payload)
        except MLSError as e:
            return [GroupEvent("rejected", b"", text=f"undecodable queue item: {e}")]
        events = await self._handle_item(item)
        if item.policy:  # our notification policy for the group, as the DS attached it
            events = [replace(e, policy=item.policy) for e in events]
        return events

    async def _handle_item(self, item: QueueItem) -> list[GroupEvent]:
        if item.item_type == ITEM_SERVER_NOTICE:
            return [await self._handle_notice(item)]
        if not self.store.holds(item.group_id):
            return [
                GroupEvent(
                    "rejected",
                    item.group_id,
                    group_seq=item.group_seq,
                    text="message for a group we are not in",
                )
            ]
        group = self.store.group(item.group_id)
        senders_before = roster_clients(group)
        try:
            received = await self.client.with_as_certificates(lambda: group.process(item.body))
        except MLSError as e:
            return [GroupEvent("rejected", item.group_id, group_seq=item.group_seq, text=str(e))]
        sender = sender_name(received.sender, senders_before)
        if received.kind == "application":
            self.store.touch(group)  # the receive ratchet moved
            return [
                self.store.record(
                    GroupEvent(
                        "message", item.group_id, sender, received.data, group.epoch, item.group_seq
                    )
                )
            ]
        if received.kind == "proposal":
            self.store.touch(group)
            return [
                GroupEvent(
                    "proposal",
                    item.group_id,
                    sender,
                    epoch=group.epoch,
                    group_seq=item.group_seq,
                    text=proposal_text(received),
                )
            ]
        if received.removed_self:
            self.store.forget(item.group_id)
            return [
                self.store.record(
                    GroupEvent(
                        "removed",
                        item.group_id,
                        sender,
                        epoch=received.epoch,
                        group_seq=item.group_seq,
                        text=f"removed from the group by {sender}",
                    )
                )
            ]
        self.store.touch(group)
        after = roster_clients(group)
        event = GroupEvent(
            "commit",
            item.group_id,
            sender,
            epoch=group.epoch,
            group_seq=item.group_seq,
            added=tuple(after[i] for i in received.added if i in after),
            removed=tuple(senders_before.get(i, "") for i in received.removed),
        )
        return [self.store.record(describe_commit(event))]

    async def _handle_notice(self, item: QueueItem) -> GroupEvent:
        try:
            signed = SignedNotice.decode(item.body)
            suite = self._suite_of(item.group_id)
            key = await self.server_keys.notice_key(item.group_id, suite)
            notice = signed.verified(get_cipher_suite(suite), key)
            if unb64u(str(notice.get("group_id", ""))) != item.group_id:
                raise ValueError("notice names another group")
        except (MLSError, ValueError, KeyError) as e:
            return GroupEvent(
                "rejected",
                item.group_id,
                group_seq=item.group_seq,
                text=f"unverified server notice: {e}",
            )
        event = GroupEvent(
            "notice",
            item.group_id,
            "",
            group_seq=item.group_seq,
            text=notice_text(notice),
            notice=notice,
        )
        self.store.record(event)
        if notice["type"] == "group_deleted":
            self.store.forget(item.group_id)
        return event

    def _suite_of(self, group_id: bytes) -> int:
        try:
            return self.store.group(group_id).cs.suite_id
        except RoostError:
            return self.client.state.cipher_suite

    # ---- realtime ----------------------------------------------------------------------------
    async def listen(
        self,
        emit: EventSink,
        *,
        stop: asyncio.Event,
        realtime: bool,
        poll_interval: float,
        max_backoff: float,
    ) -> None:
        """Hand what arrives to ``emit`` until ``stop`` is set: pushed over the realtime
        WebSocket (reconnecting with capped backoff and resuming from the processed positions:
        no loss, no duplicates), or with ``realtime=False`` by polling every ``poll_interval``."""
        await emit(await self.sync(None))
        if not realtime:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=poll_interval)
                await emit(await self.sync(None))
            return
        queue_id = await self.ensure_queue()
        cursors = self.store.cursors
        backoff = 0.5
        while not stop.is_set():
            rt = Realtime(
                self.client,
                positions={queue_id: cursors.queue_after},
                direct=cursors.direct_after,
            )
            self.realtime = rt
            try:
                await rt.connect()
                backoff = 0.5
                while not stop.is_set():
                    try:
                        delivery = await rt.receive(timeout=0.25)
                    except TimeoutError:
                        continue
                    await emit(await self._handle_delivery(rt, delivery, queue_id))
            except RealtimeClosed as e:
                if e.close_code in _FINAL_CLOSES:
                    raise
                if e.close_code == 4001:
                    self.client.state.token = ""
            except RoostError as e:
                if e.code in ("token_expired", "unauthenticated"):
                    self.client.state.token = ""
                elif e.status not in (0, 429, 502, 503, 504):
                    raise
            finally:
                self.realtime = None
                await rt.close()
            if stop.is_set():
                return
            # Catch up over HTTP too (cheap when nothing waits), then reconnect.
            with contextlib.suppress(RoostError):
                await emit(await self.sync(None))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=backoff)
            backoff = min(max_backoff, backoff * 2)

    async def _handle_delivery(
        self, rt: Realtime, delivery: Delivery, queue_id: str
    ) -> list[GroupEvent]:
        events: list[GroupEvent] = []
        cursors = self.store.cursors
        if delivery.queue_id is None:  # the direct queue: Welcomes
            for e in delivery.direct_events():
                if e.seq <= cursors.direct_after:
                    continue
                if e.type == "welcome" and e.payload:
                    event = await self._join(e.payload, e.sender or "")
                    if event is not None:
                        events.append(event)
                elif e.type.startswith("connection_"):
                    event = await on_connection_event(self.client, self.store, e, self._join)
                    if event is not None:
                        events.append(event)
                cursors.direct_after = e.seq
            self.store.save_cursors()
            await rt.ack(direct=cursors.direct_after, wait=False)
        elif delivery.queue_id == queue_id:
            events += await self.handle_queue_messages(
                (m.seq, m.payload) for m in delivery.messages
            )
            await rt.ack({queue_id: cursors.queue_after}, wait=False)
        return events
