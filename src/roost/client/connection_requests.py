"""A connection's two-user group on the Delivery Service (docs/api.md, "Connections").

The requester claims one KeyPackage of each of the responder's clients (the request's single
claim), creates a group on its DS and commits the Adds there — the DS admits them under the
unanswered request and delivers no Welcome — then sends the Welcome as the request's payload,
with the group's key wrapped for the joiners (``group_key``; a ``Roost-Group-Key-Wrap`` header
that the request event may carry as ``group_key_wrap``, as Welcome events do). The responder's
client keeps the request's Welcome (and wrap) when it sees the event; accepting joins the group
from it and registers the client's queue, so both can send at once. When the request is
rejected the requester's client deletes the group.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from roost.protocol.base64url import b64u
from roost.protocol.user_id import canonical_user_id

from .client import RoostClient
from .errors import RoostError
from .group_events import GroupEvent
from .group_key import wrap_group_key, wrap_key_of
from .group_store import GroupStore
from .models import Connection, DirectEvent

if TYPE_CHECKING:
    from roost.mls.group import CommitOutput, Group

# Join from a Welcome: the Welcome, the inviter, the group key wrap that came with it.
Join = Callable[[bytes, str, str | None], Awaitable[GroupEvent | None]]


class ConnectionRequests:
    """Requesting, accepting and rejecting connections with their two-user group. Given by
    ``Groups`` at construction: creating a DS group, committing in one, deleting one, and
    joining from a Welcome (with our queue registered)."""

    def __init__(
        self,
        client: RoostClient,
        store: GroupStore,
        *,
        create: Callable[[], Awaitable[Group]],
        commit: Callable[[bytes, Callable[[Group], CommitOutput]], Awaitable[GroupEvent]],
        delete: Callable[[bytes], Awaitable[None]],
        join: Join,
    ) -> None:
        self.client = client
        self.store = store
        self.create = create
        self.commit = commit
        self.delete = delete
        self.join = join

    async def request(self, user_id: str) -> tuple[Connection, bytes]:
        """Open a connection to ``user_id`` whose request carries the Welcome to a new DS
        group of this client and one KeyPackage of each of the responder's clients. Returns
        the connection (``pending``) and the group id. Our own earlier request to the user
        that never went out (still ``opening``: say they had no KeyPackages then) is resumed."""
        conn = await self._open(user_id)
        kps = await self.client.claim_key_packages(user_id)  # the request's single claim
        if not kps:
            raise RoostError(0, "no_key_packages", f"{user_id} has no KeyPackages to claim")
        group = await self.create()
        outputs: list[CommitOutput] = []

        def add(g: Group) -> CommitOutput:
            outputs.append(g.commit(add=kps))
            return outputs[-1]

        requested = self.store.cursors.requested
        try:
            await self.commit(group.group_id, add)
            welcome = outputs[-1].welcome
            assert welcome is not None
            requested[conn.connection_id] = group.group_id  # before the answer can arrive
            self.store.save_cursors()
            conn = await self.client.send_connection_request(
                conn.connection_id, welcome, group_key_wrap=self._wrap(group.group_id)
            )
        except BaseException:
            # No request went out: the group would only ever hold us.
            requested.pop(conn.connection_id, None)
            self.store.save_cursors()
            with contextlib.suppress(RoostError):
                await self.delete(group.group_id)
            raise
        return conn, group.group_id

    async def _open(self, user_id: str) -> Connection:
        try:
            return await self.client.open_connection(user_id)
        except RoostError as e:
            if e.code != "connection_exists":
                raise
            to = canonical_user_id(user_id)
            for conn in await self.client.connections():
                mine = conn.requester == self.client.user_id and conn.responder == to
                if mine and conn.state == "opening":
                    return conn
            raise

    def _wrap(self, group_id: bytes) -> str | None:
        """The group's key wrapped for the epoch the Welcome joins: the group's current one,
        right after the adding commit merged (None: a legacy group)."""
        key = self.store.group_key(group_id)
        if key is None:
            return None
        return wrap_group_key(
            key, group_id, wrap_key_of(self.store.group(group_id).export_secret, group_id)
        )

    async def accept(
        self, connection_id: str, reply: bytes | None = None
    ) -> tuple[Connection, GroupEvent | None]:
        """Accept, then join the request's group from its Welcome and register our queue.
        The event is ``joined`` (or ``welcome_failed`` if the group is gone); ``None`` when the
        request carried no Welcome for this client."""
        requester, welcome, wrap = await self._request(connection_id)
        conn = await self.client.accept_connection(connection_id, reply)
        event = None
        if welcome:
            if "@" in requester:  # the group's members include the requester
                await self.client.ensure_as_certificates([requester.rpartition("@")[2]])
            event = await self.join(welcome, requester, wrap)
        self._answered(connection_id, requester)
        return conn, event

    async def reject(self, connection_id: str, reply: bytes | None = None) -> Connection:
        conn = await self.client.reject_connection(connection_id, reply)
        self._answered(connection_id, "")
        return conn

    def _answered(self, connection_id: str, requester: str) -> None:
        """Answered by this client: no Welcome is kept; the entry goes when our sync sees the
        answer, so that neither the request nor the answer event makes us join again."""
        self.store.cursors.received[connection_id] = (requester, b"")
        self.store.cursors.received_wraps.pop(connection_id, None)
        self.store.save_cursors()

    async def _request(self, connection_id: str) -> tuple[str, bytes | None, str | None]:
        """The requester, Welcome and group key wrap of a request: kept when our sync saw it,
        else looked up in the direct queue (from the start: another client may not have acked
        it yet)."""
        kept = self.store.cursors.received.get(connection_id)
        if kept is not None and kept[1]:
            return (*kept, self.store.cursors.received_wraps.get(connection_id))
        after = 0
        while True:
            page = await self.client.fetch_direct(after)
            for e in page.events:
                if e.type == "connection_request" and e.connection_id == connection_id:
                    return e.sender or "", e.payload, e.group_key_wrap
            if not page.has_more or not page.events:
                return "", None, None
            after = page.last_seq


async def on_connection_event(
    client: RoostClient,
    store: GroupStore,
    e: DirectEvent,
    join: Join,
) -> GroupEvent | None:
    """A connection event of our direct queue. A request's Welcome is kept for accepting; when
    another client of our user accepts it, we ``join`` the group from it too. An answer to our
    own request settles its group: kept when accepted, deleted on the DS when rejected."""
    async with store.lock:
        settled = await _settle(client, store, e)
    if isinstance(settled, tuple):
        inviter, welcome, wrap = settled
        return await join(welcome, inviter, wrap)
    return settled


async def _settle(
    client: RoostClient, store: GroupStore, e: DirectEvent
) -> GroupEvent | tuple[str, bytes, str | None] | None:
    conn_id = e.connection_id or ""
    c = store.cursors
    if e.type == "connection_request":
        if e.payload and conn_id not in c.received:  # not answered here already
            c.received[conn_id] = (e.sender or "", e.payload)
            if e.group_key_wrap:
                c.received_wraps[conn_id] = e.group_key_wrap
            store.save_cursors()
        return None
    kept = c.received.pop(conn_id, None)
    wrap = c.received_wraps.pop(conn_id, None)
    if kept is not None:  # a request to us answered (by this client: no Welcome kept)
        store.save_cursors()
        return (*kept, wrap) if e.type == "connection_accepted" and kept[1] else None
    group_id = store.cursors.requested.pop(conn_id, None)
    if group_id is None or e.type not in ("connection_accepted", "connection_rejected"):
        return None
    store.save_cursors()
    who = e.sender or "the responder"
    if e.type == "connection_accepted":
        return store.record(
            GroupEvent("connected", group_id, who, text=f"connection accepted by {who}")
        )
    deleted = False
    with contextlib.suppress(RoostError):  # already deleted, or no longer ours to delete
        await client.request(
            "DELETE", f"/v1/groups/{b64u(group_id)}", headers=store.key_headers(group_id)
        )
        deleted = True
    event = store.record(
        GroupEvent(
            "removed", group_id, who, text=f"connection request rejected by {who}: group deleted"
        )
    )
    if not deleted:
        store.forget(group_id)
    # Else the DS's group_deleted notice, the last item of the group's queue, forgets it (and
    # so the queue is deleted once that notice is read).
    return event
