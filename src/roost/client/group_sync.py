"""Keeping a client's groups in sync (docs/api.md, "What member queues receive" and "Welcome
delivery and joining"): joining from the Welcomes in the direct queue, processing the
``RoostQueueItem``s of our group queues in order (MLS messages and signed homeserver notices,
in the clear or sealed under the group's key), acking what was processed, and listening over
the realtime socket with reconnects.

Each membership has a queue of its own (made right before the DS registers it; deleted once
the membership ended), so a stored queue holds one group's items only. A home from before
has one queue shared by the groups registered on it: it is read first on every sync, and
deleted once no group we hold uses it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import replace

from roost.mls.constants import SenderType
from roost.mls.crypto.ciphersuite import get_cipher_suite
from roost.mls.errors import MLSError
from roost.protocol.base64url import b64u, unb64u
from roost.protocol.queue_item import ITEM_SEALED_NOTICE, ITEM_SERVER_NOTICE, QueueItem
from roost.protocol.sealed_notice import open_notice
from roost.protocol.signed_notice import SignedNotice

from .client import RoostClient
from .connection_requests import on_connection_event
from .errors import RoostError
from .group_events import (
    GroupEvent,
    Rosters,
    describe_commit,
    notice_text,
    proposal_text,
    sender_name,
)
from .group_key import key_headers
from .group_resync import GroupResync, joiner_of, needs_resync
from .group_store import GroupStore
from .models import DirectEvent, GroupQueue, QueueMessage
from .realtime import _FINAL_CLOSES, Delivery, Realtime, RealtimeClosed
from .server_keys import ServerKeys
from .welcome_join import (
    WelcomeFailed,
    WelcomeJoiner,
    WelcomeOutdated,
    is_welcome,
    transient_welcome_error,
)

EventSink = Callable[[list[GroupEvent]], Awaitable[None]]

# The ``removed`` event of a client that found, when it tried to resync, that it is no longer
# in the group.
REMOVED_WHILE_OUT_OF_STEP = "removed from the group (found when rejoining it)"
# Waits before a listener tries a Welcome again after a passing failure (seconds).
WELCOME_RETRY_FIRST = 1.0
WELCOME_RETRY_MAX = 60.0
# After a refused key claim: when to look in the home for the key another process claimed.
CLAIM_REREAD_WAITS = (0.0, 0.5, 1.5)
# How long a pushed delivery for a queue still being registered (by another task) waits for
# the registration to finish before it is left to the next sync.
REGISTERING_WAIT = 10.0


def _waiting_welcomes(events: Iterable[DirectEvent]) -> dict[bytes, int]:
    """Group -> the ``group_seq`` of its oldest Welcome among ``events`` (0: not known)."""
    out: dict[bytes, int] = {}
    for e in events:
        if e.type == "welcome" and e.group_id:
            seq = e.group_seq or 0
            out[e.group_id] = min(out.get(e.group_id, seq), seq)
    return out


def _same_group_welcome(w: DirectEvent, e: DirectEvent) -> bool:
    """``w`` is ``e`` or another Welcome to the same group."""
    if w.seq == e.seq:
        return True
    return (
        w.type == "welcome"
        and bool(w.payload)
        and e.group_id is not None
        and w.group_id == e.group_id
    )


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
        self.resync = GroupResync(client, store, self.queue_for_rejoin, self.adopt, self.abandon)
        self._rosters = Rosters()  # who sent what is received, by leaf
        # While a Welcome waits for a passing failure to clear: when to try again (monotonic
        # time) and the next wait. Pushed direct events are left for that retry meanwhile.
        self.welcome_retry_at: float | None = None
        self._welcome_backoff = WELCOME_RETRY_FIRST
        # Groups of Welcomes seen in the direct queue and not handled yet (a sync reads the
        # group queue first, and a Welcome may wait for a passing failure), each with the
        # ``group_seq`` of its oldest such Welcome (0: not known): their items wait for the join.
        self._welcomes_waiting: dict[bytes, int] = {}
        # A queue pass stopped before an item that waits for that Welcome: pushed items are
        # left alone too (they follow it) until a sync reads the queue from the cursor again.
        self._queue_waits = False
        # Events of items already processed (their cursor moved) and not yet handed out: an
        # error after the processing (a failed ack, a dropped socket, a later item's failure)
        # must not lose them, so they wait here for the next sync or listener emit.
        self._unreported: list[GroupEvent] = []
        self._unreported_ready = asyncio.Event()  # wakes a polling listener (a commit caught up)
        self._joins = 0  # groups joined from Welcomes so far (what a pass joined: the difference)
        # One key claim at a time (the second claim fails: the server hands a key out once).
        self._queue_lock = asyncio.Lock()
        # Queues made for a membership whose registration is under way (not deleted meanwhile).
        self._registering: set[str] = set()
        for queue, _ in store.cursors.all_queues().values():
            client.hold_queue(queue)  # ``fetch_queue(queue_id)`` finds its key

    def take_unreported(self) -> list[GroupEvent]:
        """The events processed since the last hand-out, oldest first (and forget them)."""
        events, self._unreported = self._unreported, []
        self._unreported_ready.clear()
        return events

    def hold(self, events: Iterable[GroupEvent]) -> None:
        """Keep events processed outside a sync (a commit's catch-up) for the next hand-out,
        and wake a polling listener for them."""
        self._unreported.extend(events)
        if self._unreported:
            self._unreported_ready.set()

    async def _wait(self, stop: asyncio.Event, timeout: float) -> None:
        """Until ``stop`` is set, events wait to be handed out, or ``timeout`` passes."""
        waits = [
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(self._unreported_ready.wait()),
        ]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    # ---- queue set-up ------------------------------------------------------------------------
    async def own_queue(self) -> GroupQueue | None:
        """Our group queue with its key, None if we have none yet. A queue from before queue
        keys (an id without a key in the home) gets its key claimed here, once, and saved."""
        queue = self.store.cursors.queue
        if queue is None or queue.claimed:
            return queue
        async with self._queue_lock:
            queue = self.store.cursors.queue
            if queue is not None and not queue.claimed:
                try:
                    queue = await self.client.claim_queue_key(queue.id)
                    self.store.cursors.queue = queue
                    self.store.save_cursors()  # at once: the server will not hand it out again
                except RoostError as e:
                    if e.status != 403:
                        raise
                    # Saved already by the process that claimed it (our cursors stay unsaved:
                    # that process may have moved them on).
                    queue = await self._claimed_by_another_process(queue.id, e)
                    self.store.cursors.queue = queue
                self.client.hold_queue(queue)
        return queue

    async def _claimed_by_another_process(self, queue_id: str, refused: RoostError) -> GroupQueue:
        """The claim was refused: another process on the same home (started from the same
        old files) may have claimed the key first; it saves it in the home at once."""
        for wait in CLAIM_REREAD_WAITS:
            await asyncio.sleep(wait)
            saved = self.store.saved_queue()
            if saved is not None and saved.id == queue_id and saved.claimed:
                return saved
        raise RoostError(
            refused.status,
            refused.code,
            "the key of this client's group queue was handed out already, and the home does "
            "not hold it",
        ) from refused

    async def new_queue(self, group_id: bytes) -> GroupQueue:
        """A queue for a membership of ``group_id`` about to be registered with the DS. Until
        ``adopt`` it is kept in the home as the group's joining queue: a retry of the join
        registers the same one (a lost answer may hide that the DS took it and released
        items into it); a final refusal retires it (``abandon``). A live realtime socket
        serves it before the DS can fill it."""
        cursors = self.store.cursors
        queue = cursors.joining.get(group_id)
        if queue is None:
            queue = await self.client.new_queue()
            cursors.joining[group_id] = queue
            self.store.save_cursors()
        self.client.hold_queue(queue)
        self._registering.add(queue.id)
        try:
            await self._serve(queue)
        except BaseException:
            self.abandon(group_id, queue, None)  # refused on the socket: not used
            raise
        return queue

    def adopt(self, group_id: bytes, queue: GroupQueue) -> None:
        """The DS took ``queue`` for our membership of ``group_id`` (the caller saves)."""
        self._registering.discard(queue.id)
        cursors = self.store.cursors
        if cursors.joining.get(group_id) == queue:
            del cursors.joining[group_id]
        if queue.id != cursors.queue_id:
            self.store.set_queue(group_id, queue)

    def abandon(self, group_id: bytes, queue: GroupQueue, error: BaseException | None) -> None:
        """The registration failed. With ``error`` None or a final refusal by the server the
        joining queue is retired (deleted later); any other failure (a transport error, a 5xx,
        a cancellation) may hide that the DS took it: it is kept for the retry."""
        self._registering.discard(queue.id)
        cursors = self.store.cursors
        if cursors.joining.get(group_id) != queue:
            return  # adopted, or the group's own queue (a resync)
        final = error is None or (
            isinstance(error, RoostError) and not transient_welcome_error(error)
        )
        if not final:
            return
        del cursors.joining[group_id]
        cursors.retired[queue.id] = queue
        self.store.save_cursors()

    @contextlib.asynccontextmanager
    async def registering(self, group_id: bytes, queue: GroupQueue) -> AsyncIterator[None]:
        """While the caller registers ``queue`` (a new group, an external join: no retry);
        adopted inside, or else retired."""
        try:
            yield
        finally:
            self.abandon(group_id, queue, None)

    async def _serve(self, queue: GroupQueue) -> None:
        """Have the live realtime socket (if any) serve ``queue``. A socket lost meanwhile
        presents it in its next ``hello`` (or the reconnect's ``subscribe``)."""
        rt = self.realtime
        if rt is None or queue.id in rt.queue_keys:
            return
        with contextlib.suppress(RealtimeClosed):
            await rt.subscribe({queue.id: queue.key}, {queue.id: 0})

    async def queue_for_rejoin(self, group_id: bytes) -> GroupQueue:
        """The queue a rejoin registers: the group's own; for a group an old home holds on
        its shared queue, that one; else (a first join by rejoin) a new one."""
        cursors = self.store.cursors
        own = cursors.group_queues.get(group_id)
        if own is not None:
            return own
        shared = await self.own_queue()
        if shared is not None and self.store.holds(group_id):
            return shared
        return await self.new_queue(group_id)

    async def delete_retired(self) -> None:
        """Delete the queues of memberships that ended (their last items are processed).
        One that is gone already is forgotten; a passing failure leaves it for later."""
        cursors = self.store.cursors
        done = False
        for qid, queue in list(cursors.retired.items()):
            if qid in self._registering:
                continue
            try:
                await self.client.delete_queue(queue)
            except RoostError as e:
                if e.status not in (403, 404):
                    continue  # e.g. the server unreachable: the next pass tries again
            cursors.retired.pop(qid, None)
            done = True
        if done:
            self.store.save_cursors()

    def _retire_shared_queue(self) -> None:
        """The shared queue of an old home, read to its end: once no group we hold is on it
        (each has a queue of its own), it is retired."""
        cursors = self.store.cursors
        shared = cursors.queue
        if shared is None or not shared.claimed:
            return
        if any(g not in cursors.group_queues for g in self.store.local_group_ids()):
            return
        cursors.retired[shared.id] = shared
        cursors.queue = None
        cursors.queue_after = 0
        self.store.save_cursors()

    # ---- polling -----------------------------------------------------------------------------
    async def sync(self, limit: int | None) -> list[GroupEvent]:
        """Handle the direct queue's events up to its first Welcome (connection answers),
        process everything waiting in our group queues (each in order; an old home's shared
        queue first), then join from the new Welcomes, then process what joining brought
        (items held for the new leaves), acking as we go. The queues come before Welcomes: a
        membership's items reach a queue only once its leaf is registered, so what waits there
        belongs to a membership older than any Welcome waiting beside it (a client removed
        while away and added again reads its old backlog on its old state before joining
        anew). Then the queues of memberships that ended are deleted. Also returns the events
        of items processed earlier whose hand-out an error cut short."""
        async with self.store.direct_lock:
            await self._sync_welcomes(until_welcome=True)  # e.g. connection answers
            await self._drain_queues(limit)
            # Again after a join (what the new leaves held) or where items waited for a
            # Welcome that is handled now.
            if await self._sync_welcomes() or self._queue_waits:
                await self._drain_queues(limit)
            await self.delete_retired()
        return self.take_unreported()

    async def _drain_queues(self, limit: int | None) -> None:
        """Every group queue in turn: the shared one of an old home first (it holds the older
        items of the groups on it), then each membership's own."""
        self._queue_waits = False
        shared = await self.own_queue()
        if shared is not None and not await self._drain_queue(None, limit):
            self._retire_shared_queue()  # read to its end
        for group_id in sorted(self.store.cursors.group_queues):
            if group_id in self.store.cursors.group_queues:  # not ended meanwhile
                await self._drain_queue(group_id, limit)

    async def _drain_welcome_groups(self, events: Iterable[DirectEvent]) -> None:
        """Before (and after) joining from pushed Welcomes: the shared queue of an old home
        and the queues of the groups they name (an old membership's backlog is read on the
        old state first); the other queues come over the socket."""
        self._queue_waits = False
        if await self.own_queue() is not None and not await self._drain_queue(None, None):
            self._retire_shared_queue()
        named = {e.group_id for e in events if e.type == "welcome" and e.group_id}
        for group_id in sorted(g for g in named if g in self.store.cursors.group_queues):
            await self._drain_queue(group_id, None)

    async def _drain_queue(
        self, group_id: bytes | None, limit: int | None, *, locked: bool = False
    ) -> bool:
        """Process what waits in one group queue (``group_id``'s own, None: the shared one),
        in order, acking as we go; stops before an item that waits for a Welcome's retry
        (``_awaits_welcome``; then True). ``locked``: the caller holds the store's lock (a
        commit's catch-up)."""
        cursors = self.store.cursors
        queue = cursors.queue if group_id is None else cursors.group_queues.get(group_id)
        if queue is None:
            return False
        while True:
            page = await self.client.fetch_queue(queue, cursors.after(group_id), limit=limit)
            if locked:
                waiting = await self._process_page(page.messages, group_id)
            else:
                async with self.store.lock:
                    waiting = await self._process_page(page.messages, group_id)
            ended = group_id is not None and cursors.group_queues.get(group_id) != queue
            if ended:
                return False  # the membership ended: its queue is deleted, unacked
            if page.messages:
                await self.client.ack_queue(queue, cursors.after(group_id))
            if waiting or not page.has_more or not page.messages:
                return waiting

    async def _process_page(self, messages: Iterable[QueueMessage], group_id: bytes | None) -> bool:
        """One fetched page, under the store's lock: the items past the cursor in order, then
        the states and the cursor saved. True when it stopped before an item that waits."""
        waiting = False
        for m in messages:
            if not await self._process_item(group_id, m.seq, m.payload):
                waiting = self._queue_waits = True
                break
        self.store.flush()
        return waiting

    async def _process_item(self, group_id: bytes | None, seq: int, payload: bytes) -> bool:
        """One item of a group queue, unless at or below its cursor (at-least-once delivery).
        False when it waits for a Welcome (the pass stops before it)."""
        cursors = self.store.cursors
        if seq <= cursors.after(group_id):
            return True
        if self._awaits_welcome(payload):
            return False
        self._unreported.extend(await self._handle_payload(payload))
        cursors.advance(group_id, seq)
        return True

    async def catch_up(self, group_id: bytes) -> None:
        """Process everything waiting in the queue that brings ``group_id``'s items, in order,
        while the caller holds the store's lock: a commit must not leave messages of older
        epochs behind (the group keeps only a few past epochs' secrets). The events wait for
        the next sync or listener."""
        cursors = self.store.cursors
        if group_id in cursors.group_queues:
            await self._drain_queue(group_id, None, locked=True)
        elif await self.own_queue() is not None:
            self._queue_waits = False
            await self._drain_queue(None, None, locked=True)
        if self._unreported:
            self._unreported_ready.set()

    async def handle_queue_messages(
        self, items: Iterable[tuple[int, bytes]], queue_id: str | None = None
    ) -> list[GroupEvent]:
        """Process items of one of our group queues (``queue_id``; None: the queue of the
        first item's group); those at or below its processed cursor are skipped (no
        duplicates). The changed group states and the cursor are saved once, after the batch
        (states first, so a crash never skips an item)."""
        items = list(items)
        if queue_id is None and items:
            try:
                queue = self.store.cursors.queue_of(QueueItem.decode(items[0][1]).group_id)
            except MLSError:
                queue = self.store.cursors.queue
            queue_id = queue.id if queue is not None else None
        if queue_id is not None:
            await self._process_queue_items(items, queue_id)
        return self.take_unreported()

    async def _process_queue_items(self, items: Iterable[tuple[int, bytes]], queue_id: str) -> None:
        cursors = self.store.cursors
        async with self.store.lock:
            group_id = cursors.group_of_queue(queue_id)
            if group_id is None and cursors.queue_id != queue_id:
                return  # not (or no longer) ours: a membership that ended
            for seq, payload in items:
                if self._queue_waits:
                    break  # fetched again by the sync that retries the Welcome
                if group_id is not None and cursors.group_queues.get(group_id) is None:
                    break  # the membership ended in this batch
                if not await self._process_item(group_id, seq, payload):
                    self._queue_waits = True
                    break
            self.store.flush()

    # ---- Welcomes ----------------------------------------------------------------------------
    async def _sync_welcomes(self, *, until_welcome: bool = False) -> bool:
        """Join from the Welcomes waiting in the direct queue and ack them (the caller holds
        ``direct_lock``); ``until_welcome``: only the events before the first Welcome. A
        Welcome that fails for a passing reason (``transient_welcome_error``) stops the pass
        before it, unacked: the next sync tries it again. True if something was joined."""
        joins = self._joins
        cursors = self.store.cursors
        while True:
            page = await self.client.fetch_direct(cursors.direct_after)
            before = cursors.direct_after
            done = await self._direct_events(
                page.events, self._unreported, until_welcome=until_welcome
            )
            if cursors.direct_after > before:
                self.store.save_cursors()
                await self.client.ack_direct(cursors.direct_after)
            if not done or not page.has_more or not page.events:
                return self._joins > joins

    async def _direct_events(
        self, items: Iterable[DirectEvent], out: list[GroupEvent], *, until_welcome: bool = False
    ) -> bool:
        """Join from the Welcomes among ``items`` (past the cursor), moving the cursor over
        each one handled. Of several Welcomes to one group, the newest (by ``group_seq``) that
        is for this client is joined and the older ones are passed over: they would replace
        the newer membership with an older one. False when a passing failure stopped before
        one (it is then tried again after a growing wait), or ``until_welcome`` stopped before
        the first Welcome; the cursor stays before it."""
        cursors = self.store.cursors
        batch = [e for e in items if e.seq > cursors.direct_after]
        settled: set[int] = set()  # Welcomes already handled with a newer one of their group
        for e in batch:
            if e.seq in settled:
                pass
            elif e.type == "welcome" and e.payload:
                if until_welcome:
                    self._welcomes_waiting = _waiting_welcomes(batch)
                    return False
                same = sorted(
                    (w for w in batch if w.seq >= e.seq and _same_group_welcome(w, e)),
                    key=lambda w: (w.group_seq or 0, w.seq),
                    reverse=True,
                )
                for w in same:
                    try:
                        event = await self._join(w)
                    except RoostError as err:
                        if not transient_welcome_error(err):
                            raise
                        self._welcomes_waiting = _waiting_welcomes(
                            x for x in batch if x.seq >= e.seq
                        )
                        self.welcome_retry_at = time.monotonic() + self._welcome_backoff
                        self._welcome_backoff = min(WELCOME_RETRY_MAX, self._welcome_backoff * 2)
                        return False
                    if event is not None:
                        self._joined(out, event)
                        break
                settled.update(w.seq for w in same)
            elif e.type.startswith("connection_"):
                event = await on_connection_event(self.client, self.store, e, self.join_welcome)
                if event is not None:
                    self._joined(out, event)
            cursors.direct_after = e.seq
        self.welcome_retry_at = None
        self._welcome_backoff = WELCOME_RETRY_FIRST
        self._welcomes_waiting = {}
        return True

    def _joined(self, out: list[GroupEvent], event: GroupEvent) -> None:
        out.append(event)
        if event.kind == "joined":
            self._joins += 1

    async def join_welcome(
        self, payload: bytes, inviter: str, key_wrap: str | None = None
    ) -> GroupEvent | None:
        """Join from a Welcome that came another way: a connection request's payload, which is
        no Welcome at all when the requester built no group (None then); ``key_wrap``: the
        group key wrap the request's event carried."""
        if not is_welcome(payload):
            return None
        return await self._join(
            DirectEvent(0, "welcome", inviter, None, payload, group_key_wrap=key_wrap)
        )

    async def _join(self, welcome: DirectEvent) -> GroupEvent | None:
        """Join from one Welcome event: ``joined``; ``welcome_failed`` when it is for us but
        unusable; None when it is for another client of our user."""
        inviter = welcome.sender or ""
        assert welcome.payload is not None
        if self._older_than_held(welcome):
            return None  # we hold a newer state of the group: nothing to join
        joiner = WelcomeJoiner(self.client)
        try:
            joined = await joiner.join(welcome.payload, welcome.group_key_wrap)
        except WelcomeOutdated as e:
            assert e.group_id is not None
            return await self._join_outdated(welcome, e.group_id, e.reason, e.group_key)
        except WelcomeFailed as e:
            return self._welcome_failed(welcome, e.group_id, e.reason)
        if joined is None:
            return None  # for another client of our user
        group = joined.group
        queue = await self.new_queue(group.group_id)  # the new membership's own queue
        async with self.store.lock:
            try:
                await self.client.request(
                    "PUT",
                    f"/v1/groups/{group_path(group.group_id)}/queue",
                    json={"queue_id": queue.id},
                    # A key held from before stands in for a Welcome that brought none.
                    headers={
                        **queue.headers,
                        **key_headers(joined.group_key or self.store.group_key(group.group_id)),
                    },
                )
            except RoostError as e:
                self.abandon(group.group_id, queue, e)
                if e.status not in (403, 404) or transient_welcome_error(e):
                    raise  # passing failures: the Welcome waits and is tried again
                # Deleted, or we were removed again, before we got here: nothing to join.
                joiner.keep(joined, save_group=False)
                return self._welcome_failed(welcome, group.group_id, f"the DS refused: {e}")
            except BaseException as e:
                self.abandon(group.group_id, queue, e)
                raise
            joiner.keep(joined, save_group=False)  # the KeyPackage is spent
            self.adopt(group.group_id, queue)  # an earlier membership's queue is retired
            self.store.set_group_key(group.group_id, joined.group_key)
            self.store.keep(group)  # a (re)join: a pending leave of ours is over
            # The new membership starts at the Welcome (any older state's position goes).
            self.store.cursors.group_seqs[group.group_id] = welcome.group_seq or 0
            self.store.save_cursors()
            return self.store.record(
                GroupEvent(
                    "joined",
                    group.group_id,
                    inviter,
                    epoch=group.epoch,
                    text=f"joined (invited by {inviter})",
                )
            )

    def _older_than_held(self, welcome: DirectEvent) -> bool:
        """A Welcome to a group whose state we hold at or past the Welcome's ``group_seq``
        (e.g. it waited while we were removed and added again, and we joined the newer one)."""
        gid, seq = welcome.group_id, welcome.group_seq
        if gid is None or not seq or not self.store.holds(gid):
            return False
        return self.store.cursors.group_seqs.get(gid, 0) >= seq

    async def _join_outdated(
        self, welcome: DirectEvent, group_id: bytes, reason: str, key: bytes | None
    ) -> GroupEvent:
        """The Welcome's epoch is gone from the DS: join by an external commit in place of the
        leaf the Welcome's commit added for us (the resync rule), or report why not."""
        inviter = welcome.sender or ""
        async with self.store.lock:
            try:
                return await self.resync.rejoin(
                    group_id,
                    f"invited by {inviter}; the Welcome's epoch had passed",
                    kind="joined",
                    key=key,
                )
            except RoostError as e:
                if transient_welcome_error(e):
                    raise  # the Welcome waits and is tried again
                if e.status in (403, 404, 409, 422):
                    return self._welcome_failed(welcome, group_id, f"{reason}; rejoin: {e}")
                raise

    def _welcome_failed(
        self, welcome: DirectEvent, group_id: bytes | None, reason: str
    ) -> GroupEvent:
        inviter = welcome.sender or ""
        return self.store.record(
            GroupEvent(
                "welcome_failed",
                group_id or welcome.group_id or b"",
                inviter,
                group_seq=welcome.group_seq or 0,
                text=f"could not join (invited by {inviter}): {reason}",
            )
        )

    # ---- queue items -------------------------------------------------------------------------
    def _awaits_welcome(self, payload: bytes) -> bool:
        """Whether an item must wait for a Welcome not handled yet (a sync reads the group
        queue first; a Welcome may wait for a passing failure to clear). The queue pass stops
        before it, unacked.

        - A group we do not hold: our queue registration may have reached the group's DS
          though its answer was lost (the DS then releases what it held for our leaf), and
          those items are readable only once we joined.
        - A group we hold whose Welcome waits: our state is of a membership that ended while
          we were away (a removed client is not sent the removing commit). Items past the
          Welcome's commit belong to the new membership; older ones are read on the old
          state first."""
        if self.welcome_retry_at is None and not self._welcomes_waiting:
            return False
        try:
            item = QueueItem.decode(payload)
        except MLSError:
            return False  # reported as undecodable by the pass
        if item.item_type == ITEM_SERVER_NOTICE:
            return False
        if item.item_type == ITEM_SEALED_NOTICE and self.store.group_key(item.group_id) is not None:
            # Opens with the key we hold (a group's key never changes); without one it waits
            # like an MLS message: the Welcome brings the key.
            return False
        if not self.store.holds(item.group_id):
            return self.welcome_retry_at is not None or item.group_id in self._welcomes_waiting
        welcome_seq = self._welcomes_waiting.get(item.group_id, 0)
        return bool(welcome_seq) and item.group_seq > welcome_seq

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
        if item.item_type in (ITEM_SERVER_NOTICE, ITEM_SEALED_NOTICE):
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
        if self.store.left_at(item.group_id) == item.group_seq:
            self.store.forget(item.group_id)  # our leave came back: nothing before it is due
            return []
        group = self.store.group(item.group_id)
        senders_before = self._rosters.of(group)
        try:
            received = await self.client.with_as_certificates(lambda: group.process(item.body))
        except MLSError as e:
            return await self._unreadable(item, group.epoch, e)
        self.store.reached(item.group_id, item.group_seq)
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
        after = self._rosters.of(group)
        added = tuple(after[i] for i in received.added if i in after)
        if received.sender.sender_type == SenderType.NEW_MEMBER_COMMIT:
            sender = joiner_of(item.body) or sender  # who joined (or rejoined) by itself
            added = (*added, sender)
        event = GroupEvent(
            "commit",
            item.group_id,
            sender,
            epoch=group.epoch,
            group_seq=item.group_seq,
            added=added,
            removed=tuple(senders_before.get(i, "") for i in received.removed),
        )
        return [self.store.record(describe_commit(event))]

    async def _unreadable(self, item: QueueItem, our_epoch: int, e: MLSError) -> list[GroupEvent]:
        """An item we cannot process, reported as such; when it shows our state has left the
        group's, we rejoin (``group_resync``) and say so, or say why we could not."""
        events = [
            GroupEvent(
                "rejected", item.group_id, group_seq=item.group_seq, text=f"could not be read: {e}"
            )
        ]
        if not needs_resync(item.body, our_epoch):
            return events
        if self.store.leaving(item.group_id):
            self.store.forget(item.group_id)  # no rejoining a group we asked to leave
            return events
        failure: Exception
        try:
            events.append(await self.resync.rejoin(item.group_id, str(e)))
            return events
        except RoostError as err:
            if err.code == "not_member":
                # Removed while our state was out of step (the DS sends a removed client
                # nothing, not even the removing commit): what we could not read is lost to us.
                self.store.forget(item.group_id)
                removed = GroupEvent(
                    "removed",
                    item.group_id,
                    group_seq=item.group_seq,
                    text=REMOVED_WHILE_OUT_OF_STEP,
                )
                events.append(self.store.record(removed))
                return events
            failure = err
        except MLSError as err:
            failure = err
        events.append(
            GroupEvent(
                "rejected",
                item.group_id,
                group_seq=item.group_seq,
                text=f"could not rejoin the group: {failure}",
            )
        )
        return events

    async def _handle_notice(self, item: QueueItem) -> GroupEvent:
        try:
            signed = SignedNotice.decode(self._notice_body(item))
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

    def _notice_body(self, item: QueueItem) -> bytes:
        """A notice item's encoded SignedNotice: a sealed one (item type 3) opened with the
        group's key; ValueError when we hold no key for the group or it does not open."""
        if item.item_type != ITEM_SEALED_NOTICE:
            return item.body
        key = self.store.group_key(item.group_id)
        if key is None:
            raise ValueError("it is sealed and we hold no key for its group")
        body = open_notice(key, item.group_id, item.body)
        if body is None:
            raise ValueError("it is sealed under another key than the group's")
        return body

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
                await self._wait(stop, poll_interval)
                await emit(await self.sync(None))
            return
        cursors = self.store.cursors
        backoff = 0.5
        while not stop.is_set():
            await self.own_queue()  # an old home's shared queue, its key claimed
            queues = cursors.all_queues()
            rt = Realtime(
                self.client,
                positions={qid: after for qid, (_, after) in queues.items()},
                direct=cursors.direct_after,
                queue_keys={qid: q.key for qid, (q, _) in queues.items()},
            )
            try:
                await rt.connect()
                self.realtime = rt
                # Queues made while the socket was opening (a join in another task).
                for queue, _ in cursors.all_queues().values():
                    await self._serve(queue)
                backoff = 0.5
                while not stop.is_set():
                    if (
                        self.welcome_retry_at is not None
                        and time.monotonic() >= self.welcome_retry_at
                    ):
                        # The queue too: items that waited for the Welcome come over HTTP.
                        await emit(await self.sync(None))
                    try:
                        delivery = await rt.receive(timeout=0.25)
                    except TimeoutError:
                        if self._unreported:  # a commit of ours caught up meanwhile
                            await emit(self.take_unreported())
                        continue
                    await self._handle_delivery(rt, delivery)
                    await emit(self.take_unreported())
                    if cursors.retired:
                        await self.delete_retired()
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
            # What was processed before the drop (e.g. the socket closed under its ack) is
            # past the cursor we resume from: hand it out now, or it is never seen.
            await emit(self.take_unreported())
            if stop.is_set():
                return
            # Catch up over HTTP too (cheap when nothing waits), then reconnect.
            with contextlib.suppress(RoostError):
                await emit(await self.sync(None))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=backoff)
            backoff = min(max_backoff, backoff * 2)

    async def _handle_delivery(self, rt: Realtime, delivery: Delivery) -> None:
        """Process one pushed delivery (its events wait in ``_unreported``) and ack it."""
        cursors = self.store.cursors
        if delivery.queue_id is None:  # the direct queue: Welcomes
            if self.welcome_retry_at is not None:
                return  # a Welcome before these waits: its retry fetches them in order
            # As in ``sync``: the group queues' backlog before the first Welcome (over HTTP;
            # pushed copies of it are skipped by their seq).
            direct = list(delivery.direct_events())
            async with self.store.direct_lock:
                await self._direct_events(direct, self._unreported, until_welcome=True)
                await self._drain_welcome_groups(direct)
                joins = self._joins
                await self._direct_events(direct, self._unreported)
                self.store.save_cursors()
                if self._joins > joins or self._queue_waits:
                    await self._drain_welcome_groups(direct)  # what the new leaves held
            await rt.ack(direct=cursors.direct_after, wait=False)
            return
        queue_id = delivery.queue_id
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REGISTERING_WAIT
        while queue_id in self._registering and loop.time() < deadline:
            await asyncio.sleep(0.05)  # another task registers it: it is ours once that is done
        await self._process_queue_items(((m.seq, m.payload) for m in delivery.messages), queue_id)
        group_id = cursors.group_of_queue(queue_id)
        if group_id is not None:
            await rt.ack({queue_id: cursors.after(group_id)}, wait=False)
        elif queue_id == cursors.queue_id:
            await rt.ack({queue_id: cursors.queue_after}, wait=False)
