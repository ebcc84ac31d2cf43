"""``Groups``: a client's MLS groups over the Delivery Service (docs/api.md, "Groups").

The facade: create with the homeserver as external sender, invite, send, commit, leave,
remove, promote, delete — the DS calls — composed with the parts that do the rest: the group
store (``group_store``: states, cursors, history), syncing what arrives (``group_sync``), the
homeserver's keys (``server_keys``) and the events it all yields (``group_events``).
"""

from __future__ import annotations

import asyncio
import builtins
import os
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from roost.mls.errors import MLSError
from roost.mls.extension_types import ExternalSender, ExternalSenders
from roost.protocol.base64url import b64u
from roost.protocol.commit_bundle import encode_commit_bundle
from roost.protocol.group_state import GroupState, decode_group_state, encode_group_state
from roost.protocol.media_types import MLS_MEDIA_TYPE

from .client import RoostClient
from .connection_requests import ConnectionRequests
from .credential_policy import member_client_id
from .errors import RoostError
from .group_events import (
    GroupEvent,
    GroupSummary,
    SentMessage,
    client_of,
    describe_commit,
    roster_clients,
)
from .group_key import (
    GROUP_KEY_WRAP_HEADER,
    key_headers,
    new_group_key,
    wrap_group_key,
    wrap_key_of,
)
from .group_name import group_name, roost_capabilities
from .group_store import GroupStore
from .group_sync import GroupSync, group_path
from .history import History
from .models import Connection, GroupQueue
from .own_devices import add_own_devices
from .realtime import Realtime
from .server_keys import ServerKeys, ServerSender
from .session import user_path

if TYPE_CHECKING:
    from roost.mls.group import CommitOutput, Group

COMMIT_RETRIES = 5
# How long a commit that lost the epoch race waits for the winning commit to reach our queue
# (it may be on its way from another domain's DS) before it gives up for now.
COMMIT_WAIT_SECONDS = 10.0

__all__ = [
    "COMMIT_RETRIES",
    "GroupEvent",
    "GroupSummary",
    "Groups",
    "SentMessage",
    "ServerSender",
    "group_path",
    "new_group_id",
]


def new_group_id(domain: str) -> bytes:
    """``<b64u of 16 random bytes>@<domain>`` (the DS routes a group by its domain)."""
    return f"{b64u(os.urandom(16))}@{domain}".encode("ascii")


class _NothingPending(Exception):
    """No proposal is left to commit (another member committed them first)."""


def _commit_of_pending(group: Group) -> CommitOutput:
    if not group.pending_proposal_refs():
        raise _NothingPending
    return group.commit()


class Groups:
    """Group operations of one ``RoostClient``: create, invite, send, receive, leave, remove,
    promote, delete. Group states live in the client's home (``groups/<id>.mls``), the message
    history under ``history/``; without a home both stay in memory.

    All operations of one ``Groups`` are serialised (one MLS state per group must never be
    used by two operations at once)."""

    def __init__(self, client: RoostClient, *, history: History | None = None) -> None:
        self.client = client
        self.store = GroupStore(client, history)
        self.server_keys = ServerKeys(client, self.store)
        self._sync = GroupSync(client, self.store, self.server_keys)
        self._connections = ConnectionRequests(
            client,
            self.store,
            create=self.create,
            commit=lambda gid, build: self._commit(gid, build),
            delete=self.delete,
            join=self._sync.join_welcome,
        )

    # ---- local state ------------------------------------------------------------------------
    @property
    def history(self) -> History:
        return self.store.history

    @property
    def queue_id(self) -> str:
        """The id of the queue an old home shares among the groups registered on it ("" in
        a newer home: each membership has its own queue, ``queue_of``)."""
        return self.store.cursors.queue_id

    async def own_queue(self) -> GroupQueue | None:
        """The queue an old home shares among its groups, with its key (None in a newer home
        or once it is deleted). A home written before queue keys holds the id alone: its key is
        claimed here once and saved (every sync and listen does this first)."""
        return await self._sync.own_queue()

    def queue_of(self, group_id: bytes) -> GroupQueue | None:
        """The queue that brings a group's items to this client (its membership's own, or an
        old home's shared one), with its key."""
        return self.store.cursors.queue_of(group_id)

    def queues(self) -> dict[str, GroupQueue]:
        """Every group queue this client reads, by id."""
        return {qid: q for qid, (q, _) in self.store.cursors.all_queues().items()}

    @property
    def realtime(self) -> Realtime | None:
        """The live realtime connection while ``listen`` runs."""
        return self._sync.realtime

    def group(self, group_id: bytes) -> Group:
        """The local MLS state of a group we are in (loaded from the home on first use); not
        of one we asked to leave."""
        if self.store.leaving(group_id):
            raise RoostError(0, "unknown_group", f"left group {group_id!r}")
        return self.store.group(group_id)

    def group_name(self, group_id: bytes) -> str | None:
        """The name a group's GroupContext gives it (the browser messenger names its group
        conversations), or None."""
        return group_name(self.group(group_id))

    def local_group_ids(self) -> list[bytes]:
        return [g for g in self.store.local_group_ids() if not self.store.leaving(g)]

    def group_key(self, group_id: bytes) -> bytes | None:
        """The key of a sealed group we are in (``group_key``; None: a legacy group). Whoever
        is invited to join an ``external_join`` group by its id needs it too."""
        return self.store.group_key(group_id)

    def key_headers(self, group_id: bytes) -> dict[str, str]:
        """The ``Roost-Group-Key`` header for requests on the group ({} for a legacy group)."""
        return self.store.key_headers(group_id)

    def _keep(self, group: Group) -> None:
        self.store.keep(group)

    async def server_sender(self, cipher_suite: int | None = None) -> ServerSender:
        """The homeserver's external-sender key and credential, verified against the pinned AS
        certificate (SAN ``roost:server:<our domain>``, key = the certificate's key)."""
        return await self.server_keys.server_sender(cipher_suite)

    # ---- DS calls ----------------------------------------------------------------------------
    async def list(self) -> list[GroupSummary]:
        """The groups this client is in: those the home DS lists (it cannot list sealed
        groups: it keeps no index of their members), plus every group this client holds,
        asked of its DS with the group's key (through the home server for other domains)."""
        d = (await self.client.request("GET", "/v1/groups")).json()
        out = [
            summary
            for summary in map(GroupSummary.from_json, d["groups"])
            if not self.store.leaving(summary.group_id)
        ]
        listed = {summary.group_id for summary in out}
        for group_id in self.local_group_ids():
            if group_id in listed:
                continue
            try:
                out.append(await self.info(group_id))
            except RoostError as e:
                if e.status not in (403, 404):  # no longer a member, or deleted: not listed
                    raise
        return out

    async def info(self, group_id: bytes) -> GroupSummary:
        resp = await self.client.request(
            "GET", f"/v1/groups/{group_path(group_id)}", headers=self.key_headers(group_id)
        )
        return GroupSummary.from_json(resp.json())

    async def create(self, *, external_join: bool = False) -> Group:
        """A new group with this client as its only member and the homeserver as external
        sender; the DS records our user as admin. Its key (``group_key``) is chosen here and
        kept with the group: every request on the group presents it."""
        from roost.mls.group import Group

        server = await self.server_sender()
        st = self.client.state
        group_id = new_group_id(st.home_domain)
        key = new_group_key()
        queue = await self._sync.new_queue(group_id)  # the membership's own
        ext = ExternalSenders((ExternalSender.decode(server.external_sender),)).to_extension()
        async with self._sync.registering(group_id, queue), self.store.lock:
            group = Group.create(
                st.cipher_suite,
                self.client.credential,
                st.signature_private,
                group_id=group_id,
                extensions=[ext],
                capabilities=roost_capabilities(st.cipher_suite),
                credential_policy=self.client.credential_policy(),
            )
            body = encode_group_state(group.group_info(with_tree=True))
            await self.client.request(
                "POST",
                "/v1/groups",
                params={"queue_id": queue.id, "external_join": str(external_join).lower()},
                content=body,
                content_type=MLS_MEDIA_TYPE,
                # The DS registers our queue (its key proves it ours) and keeps the group key's check.
                headers={**queue.headers, **key_headers(key)},
            )
            self._sync.adopt(group.group_id, queue)
            self.store.set_group_key(group.group_id, key)
            self.store.keep(group)
            self.store.save_cursors()
            self.store.record(
                GroupEvent("joined", group.group_id, self.client.client_id, text="created")
            )
        return group

    async def _commit(
        self,
        group_id: bytes,
        build: Callable[[Group], CommitOutput],
        *,
        retries: int = COMMIT_RETRIES,
    ) -> GroupEvent:
        """Build a commit, submit it with its GroupInfo (and Welcome), merge it once accepted.
        First, under the store's lock, process what waits in our group queue (``catch_up``):
        messages of older epochs would be unreadable after our commit (a group keeps only a few
        past epochs' secrets). On ``epoch_conflict`` wait for the winner's commit to reach our queue
        (``_await_commit``), catch up again (a rejoin if the queue cannot bring us to the DS's
        epoch) and rebuild, up to ``retries`` times. On ``items_in_transit`` (items of the
        group are still on their way from the DS's server to ours) catch up and try again
        until they came, for at most ``COMMIT_WAIT_SECONDS``. Events of the catch-up are
        held: the next ``sync`` returns them first, a running ``listen`` hands them to its
        sink."""
        ds_epoch = commit_seq = 0
        attempt = 0
        loop = asyncio.get_running_loop()
        transit_deadline: float | None = None
        transit_delay = 0.05
        while True:
            if ds_epoch:
                await self._await_commit(group_id, ds_epoch, commit_seq)
            async with self.store.lock:
                await self._sync.catch_up(group_id)
                if self.group(group_id).epoch < ds_epoch:  # the queue cannot bring us there
                    rejoined = await self._sync.resync.rejoin(
                        group_id, f"the group is at epoch {ds_epoch}"
                    )
                    self._sync.hold([rejoined])
                group = self.group(group_id)
                out = build(group)
                body = encode_commit_bundle(out.commit, out.group_info, out.welcome)
                headers = self.key_headers(group_id)
                key = self.store.group_key(group_id)
                if out.welcome is not None and key is not None:
                    # The joiners' key, wrapped for the epoch they start in (this commit's).
                    wrap_key = wrap_key_of(group.pending_export_secret, group_id)
                    headers[GROUP_KEY_WRAP_HEADER] = wrap_group_key(key, group_id, wrap_key)
                try:
                    resp = await self.client.request(
                        "POST",
                        f"/v1/groups/{group_path(group_id)}/commits",
                        content=body,
                        content_type=MLS_MEDIA_TYPE,
                        headers=headers,
                    )
                except RoostError as e:
                    group.clear_pending_commit()
                    if e.code == "items_in_transit":
                        # Items of the group are on their way to our server: committing
                        # before we read them could leave them too many epochs behind.
                        now = loop.time()
                        transit_deadline = transit_deadline or now + COMMIT_WAIT_SECONDS
                        if now >= transit_deadline:
                            raise
                    elif e.code != "epoch_conflict" or attempt == retries:
                        raise
                    else:
                        attempt += 1
                        ds_epoch = int(e.problem.get("epoch", 0))
                        commit_seq = int(e.problem.get("commit_seq", 0))
                        continue
                else:
                    before = roster_clients(group)
                    group.merge_pending_commit()
                    after = roster_clients(group)
                    self.store.keep(group)
                    seq = int(resp.json().get("group_seq", 0))
                    self.store.reached(group_id, seq)
                    event = GroupEvent(
                        "commit",
                        group_id,
                        self.client.client_id,
                        epoch=group.epoch,
                        group_seq=seq,
                        added=tuple(c for i, c in after.items() if before.get(i) != c),
                        removed=tuple(c for i, c in before.items() if after.get(i) != c),
                    )
                    return self.store.record(describe_commit(event), outgoing=True)
            await asyncio.sleep(transit_delay)  # outside the lock: our queue is read meanwhile
            transit_delay = min(transit_delay * 2, 1.0)

    async def _await_commit(self, group_id: bytes, epoch: int, commit_seq: int) -> None:
        """After an ``epoch_conflict``: let our queue bring the commit that began the DS's
        ``epoch`` (its ``group_seq`` is ``commit_seq``). Returns once our state is at that
        epoch, or once our queue has brought that far and our state still is not (it cannot
        get there: the caller rejoins). A commit from another domain's member may still be on
        its way between servers (held by a block, a peer down): rejoining then would make the
        messages behind it unreadable, so after ``COMMIT_WAIT_SECONDS`` this gives up with
        ``commit_in_transit`` instead (``resync`` rejoins at once if that is wanted)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + COMMIT_WAIT_SECONDS
        delay = 0.05
        while True:
            async with self.store.lock:
                await self._sync.catch_up(group_id)
                if (
                    self.group(group_id).epoch >= epoch
                    or self.store.cursors.group_seqs.get(group_id, 0) >= commit_seq
                ):
                    return
            if loop.time() >= deadline:
                raise RoostError(
                    409,
                    "commit_in_transit",
                    f"the group is at epoch {epoch} and the commit that got it there has not "
                    "reached this client yet; try again later (or resync to rejoin now)",
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def commit(
        self, group_id: bytes, *, retries: int = COMMIT_RETRIES, force_path: bool = True
    ) -> GroupEvent:
        """Commit every pending proposal (e.g. a member's leave or the server's Removes),
        with a fresh path (a self-update)."""
        return await self._commit(
            group_id, lambda g: g.commit(force_path=force_path), retries=retries
        )

    async def commit_pending(
        self, group_id: bytes, *, attempts: int = COMMIT_RETRIES
    ) -> GroupEvent | None:
        """Commit the proposals received this epoch (a member's leave, the homeserver's
        Removes), unless another member commits them first; ``None`` when nothing is left to
        commit. Safe to run on every member at once: the DS takes one commit per epoch and the
        losers find the proposals already committed."""
        for _ in range(attempts):
            try:
                if not self.group(group_id).pending_proposal_refs():
                    return None
            except RoostError:
                return None  # no longer in the group
            try:
                return await self._commit(group_id, _commit_of_pending, retries=0)
            except _NothingPending:
                return None  # the commit's catch-up found them committed by another member
            except RoostError as e:
                if e.code != "epoch_conflict":
                    raise
            async with self.store.lock:  # the winner's commit; its events are held
                await self._sync.catch_up(group_id)
        return None

    async def update(self, group_id: bytes, *, retries: int = COMMIT_RETRIES) -> GroupEvent:
        """A self-update: fresh keys for our leaf (plus whatever proposals are pending)."""
        return await self.commit(group_id, retries=retries)

    async def invite(
        self,
        group_id: bytes,
        user_ids: Iterable[str],
        *,
        retries: int = COMMIT_RETRIES,
        ratchet_tree_in_welcome: bool = True,
    ) -> GroupEvent:
        """Add every client of each user (one claimed, verified KeyPackage per client). Our
        own user may be named to bring in our other clients. ``ratchet_tree_in_welcome=False``
        sends a smaller Welcome without the tree: the joiners fetch it from the DS."""
        group = self.group(group_id)
        present = set(roster_clients(group).values())
        kps = []
        for user_id in user_ids:
            for kp in await self.client.claim_key_packages(user_id):
                if member_client_id(kp.leaf_node.credential) not in present:
                    kps.append(kp)
        if not kps:
            raise RoostError(0, "no_key_packages", "no client to add")
        return await self._commit(
            group_id,
            lambda g: g.commit(add=kps, ratchet_tree_in_welcome=ratchet_tree_in_welcome),
            retries=retries,
        )

    async def add_own_devices(
        self, group_id: bytes | None = None, *, retries: int = COMMIT_RETRIES
    ) -> builtins.list[GroupEvent]:
        """Add our user's other clients that are not in the group yet (in every group we hold
        when ``group_id`` is None), one claimed KeyPackage per missing client; no admin needed.
        One ``commit`` event per group that gained a client."""
        return await add_own_devices(
            self.client,
            self.group,
            [group_id] if group_id is not None else self.local_group_ids(),
            lambda gid, build: self._commit(gid, build, retries=retries),
            one_group=group_id is not None,
        )

    def leaves_of(self, group_id: bytes, user_id: str) -> builtins.list[int]:
        group = self.group(group_id)
        return [
            i for i, _, _ in group.roster() if client_of(group, i).rpartition("/")[0] == user_id
        ]

    async def remove(
        self, group_id: bytes, user_id: str, *, retries: int = COMMIT_RETRIES
    ) -> GroupEvent:
        """Remove every client of ``user_id`` from the group (admins only, says the DS)."""

        def build(g: Group) -> CommitOutput:
            leaves = [i for i, _, _ in g.roster() if client_of(g, i).rpartition("/")[0] == user_id]
            if not leaves:
                raise RoostError(404, "user_not_member", f"{user_id} is not in the group")
            return g.commit(remove=leaves)

        return await self._commit(group_id, build, retries=retries)

    async def remove_clients(
        self, group_id: bytes, client_ids: Iterable[str], *, retries: int = COMMIT_RETRIES
    ) -> GroupEvent:
        wanted = set(client_ids)

        def build(g: Group) -> CommitOutput:
            return g.commit(remove=[i for i, _, _ in g.roster() if client_of(g, i) in wanted])

        return await self._commit(group_id, build, retries=retries)

    async def leave(self, group_id: bytes) -> int:
        """Propose our own removal (any member or admin then commits it; the homeserver
        proposes it again should it lapse); the group is gone for the caller at once. Its
        state is kept, hidden, until the DS hands the proposal back as the last item for us:
        what was sent before the leave is still read into the history. Returns the
        proposal's ``group_seq``."""
        async with self.store.lock:
            group = self.group(group_id)
            resp = await self.client.request(
                "POST",
                f"/v1/groups/{group_path(group_id)}/proposals",
                content=group.propose_remove(group.leaf_index),
                content_type=MLS_MEDIA_TYPE,
                headers=self.key_headers(group_id),
            )
            seq = int(resp.json().get("group_seq", 0))
            self.store.mark_leaving(group_id, seq)
            self.store.record(
                GroupEvent("removed", group_id, self.client.client_id, group_seq=seq, text="left")
            )
        return seq

    async def set_role(self, group_id: bytes, user_id: str, role: str = "admin") -> None:
        await self.client.request(
            "PUT",
            f"/v1/groups/{group_path(group_id)}/roles/{user_path(user_id)}",
            json={"role": role},
            headers=self.key_headers(group_id),
        )

    async def promote(self, group_id: bytes, user_id: str) -> None:
        await self.set_role(group_id, user_id, "admin")

    async def set_policy(self, group_id: bytes, policy: str | None) -> None:
        await self.client.request(
            "PUT",
            f"/v1/groups/{group_path(group_id)}/policy",
            json={"policy": policy},
            headers=self.key_headers(group_id),
        )

    async def set_external_join(self, group_id: bytes, allowed: bool) -> GroupSummary:
        resp = await self.client.request(
            "PATCH",
            f"/v1/groups/{group_path(group_id)}",
            json={"external_join": allowed},
            headers=self.key_headers(group_id),
        )
        return GroupSummary.from_json(resp.json())

    async def delete(self, group_id: bytes) -> None:
        """Delete the group on the DS (admins only); members get a ``group_deleted`` notice."""
        await self.client.request(
            "DELETE", f"/v1/groups/{group_path(group_id)}", headers=self.key_headers(group_id)
        )
        async with self.store.lock:
            self.store.record(GroupEvent("notice", group_id, text="group deleted by us"))
            self.store.forget(group_id)
            self.store.save_cursors()
        await self._sync.delete_retired()  # the membership's queue

    async def group_state(self, group_id: bytes, *, key: bytes | None = None) -> GroupState:
        """The latest GroupInfo and encoded ratchet tree the DS holds for a group (``key``: the
        group's key when we hold none yet, e.g. before an external join)."""
        resp = await self.client.request(
            "GET",
            f"/v1/groups/{group_path(group_id)}/group-info",
            headers=key_headers(key) if key is not None else self.key_headers(group_id),
        )
        try:
            return decode_group_state(resp.content)
        except MLSError as e:
            raise RoostError(0, "malformed_server_answer", f"group-info: {e}") from e

    async def join_external(self, group_id: bytes, *, key: bytes | None = None) -> GroupEvent:
        """Join a group that allows it by external commit. ``key``: the group's key, which an
        invitation to a sealed group carries with its id (``group_key``; a key we hold
        already is used without it; none: a legacy group)."""
        key = key if key is not None else self.store.group_key(group_id)
        queue = await self._sync.new_queue(group_id)  # the membership's own
        async with self._sync.registering(group_id, queue):
            return await self._join_external(group_id, queue, key)

    async def _join_external(
        self, group_id: bytes, queue: GroupQueue, key: bytes | None
    ) -> GroupEvent:
        from roost.mls.group import Group

        state = await self.group_state(group_id, key=key)
        st = self.client.state
        async with self.store.lock:
            group, commit = await self.client.with_as_certificates(
                lambda: Group.join_external(
                    state.group_info,
                    state.ratchet_tree,
                    self.client.credential,
                    st.signature_private,
                    capabilities=roost_capabilities(st.cipher_suite),
                    credential_policy=self.client.credential_policy(),
                )
            )
            resp = await self.client.request(
                "POST",
                f"/v1/groups/{group_path(group_id)}/commits",
                params={"queue_id": queue.id},
                content=encode_commit_bundle(commit, group.group_info(with_tree=True), None),
                content_type=MLS_MEDIA_TYPE,
                headers={**queue.headers, **key_headers(key)},
            )
            self._sync.adopt(group_id, queue)  # an earlier membership's queue is retired
            self.store.set_group_key(group_id, key)
            self.store.keep(group)
            self.store.save_cursors()
            seq = int(resp.json().get("group_seq", 0))
            return self.store.record(
                GroupEvent(
                    "joined",
                    group_id,
                    self.client.client_id,
                    epoch=group.epoch,
                    group_seq=seq,
                    text="joined by external commit",
                )
            )

    async def resync(self, group_id: bytes, *, reason: str = "asked to") -> GroupEvent:
        """Rejoin a group we are a member of in place of our own leaf (``group_resync``), from
        the GroupInfo the DS holds: after our state was lost or went out of date. ``sync`` and
        ``listen`` do this by themselves when an item shows it is needed. Returns the
        ``resynced`` event."""
        try:
            async with self.store.lock:
                return await self._sync.resync.rejoin(group_id, reason)
        except RoostError as e:
            await self._not_member(group_id, e, "found when rejoining it")
            raise

    async def _not_member(self, group_id: bytes, e: RoostError, how: str) -> None:
        """The DS says we hold no leaf in a group we hold (removed while away: a removed
        client is not sent the removing commit): the membership is over. What arrived before
        the removal is read first; then the group is forgotten, its queue deleted, and a
        ``removed`` event waits (after those items' events) for the next hand-out."""
        if e.code != "not_member":
            return
        async with self.store.lock:
            if not self.store.holds(group_id):
                return
            try:
                await self._sync.catch_up(group_id)
            except RoostError:
                return  # the queue is kept until it can be read
            if not self.store.holds(group_id):
                return  # its items ended the membership themselves
            self.store.forget(group_id)
            self.store.save_cursors()
            event = GroupEvent("removed", group_id, text=f"removed from the group ({how})")
            self._sync.hold([self.store.record(event)])
        await self._sync.delete_retired()

    # ---- connections (docs/api.md, "Connections") ----------------------------------------------
    async def request_connection(self, user_id: str) -> tuple[Connection, bytes]:
        """Request a connection to ``user_id``; the request carries the Welcome to the
        connection's two-user group, created on our DS. Returns the connection and group id."""
        return await self._connections.request(user_id)

    async def accept_connection(
        self, connection_id: str, *, reply: bytes | None = None
    ) -> tuple[Connection, GroupEvent | None]:
        """Accept a request and join its group (``joined``; None if it had no Welcome for us)."""
        return await self._connections.accept(connection_id, reply)

    async def reject_connection(
        self, connection_id: str, *, reply: bytes | None = None
    ) -> Connection:
        """Reject a request; the requester's client deletes the group when it sees the answer."""
        return await self._connections.reject(connection_id, reply)

    # ---- sending -------------------------------------------------------------------------------
    async def send(
        self, group_id: bytes, data: bytes | str, *, message_id: str | None = None
    ) -> SentMessage:
        """Encrypt and send an application message; the state is saved before it leaves (a
        ratchet generation is never used twice, even after a crash). The group lock covers
        the encryption and the history, not the round trip: this client's receiving never
        waits behind its own sends (receivers take generations out of order)."""
        payload = data.encode() if isinstance(data, str) else data
        async with self.store.lock:
            group = self.group(group_id)
            ciphertext = group.encrypt(payload)
            epoch = group.epoch
            self.store.keep(group)
        try:
            sent = await self.send_raw(group_id, ciphertext, message_id=message_id)
        except RoostError as e:
            await self._not_member(group_id, e, "found when sending")
            raise
        async with self.store.lock:
            self.store.record(
                GroupEvent(
                    "message", group_id, self.client.client_id, payload, epoch, sent.group_seq
                ),
                outgoing=True,
            )
        return sent

    async def send_raw(
        self, group_id: bytes, ciphertext: bytes, *, message_id: str | None = None
    ) -> SentMessage:
        """Send an already-encrypted PrivateMessage (e.g. retry with the same message id)."""
        mid = message_id or uuid.uuid4().hex
        resp = await self.client.request(
            "POST",
            f"/v1/groups/{group_path(group_id)}/messages",
            content=ciphertext,
            content_type=MLS_MEDIA_TYPE,
            headers={"Roost-Message-Id": mid, **self.key_headers(group_id)},
        )
        return SentMessage(int(resp.json()["group_seq"]), mid, ciphertext)

    # ---- receiving -------------------------------------------------------------------------------
    async def sync(
        self, *, limit: int | None = None, auto_commit: bool = False
    ) -> builtins.list[GroupEvent]:
        """Process everything waiting in our group queue (in order), then join from any new
        Welcome (then what that brought), and ack it. With ``auto_commit``, proposals received
        (leaves, the homeserver's Removes; also those still pending from before, e.g. read
        by a ``listen`` without it) are then committed (``commit_pending``); if that
        fails, the error is raised and the events wait for the next call. Returns what
        happened, oldest first, beginning with what our commits' catch-ups processed since the
        last call."""
        events = await self._sync.sync(limit)
        if auto_commit:
            try:
                for gid in self._to_commit(events):
                    event = await self.commit_pending(gid)
                    if event is not None:
                        events.append(event)
            except BaseException:
                # What the sync processed is acked: the next sync hands it out, not the error.
                self._sync.hold(events)
                raise
        return events

    def _to_commit(self, events: Iterable[GroupEvent]) -> builtins.list[bytes]:
        """The groups an auto-commit commits: those ``events`` brought proposals for, and any
        other group in use whose proposals still wait (received by a ``listen`` that does not
        commit, or left by a commit that failed)."""
        gids = {e.group_id for e in events if e.kind == "proposal"}
        gids.update(gid for gid, g in self.store.groups.items() if g.pending_proposal_refs())
        return sorted(g for g in gids if not self.store.leaving(g))

    async def handle_queue_message(
        self, seq: int, payload: bytes, *, queue_id: str | None = None
    ) -> builtins.list[GroupEvent]:
        """Process one item of one of our group queues delivered by other means (e.g. the
        realtime socket); items at or below its processed cursor are skipped (no duplicates)."""
        return await self.handle_queue_messages([(seq, payload)], queue_id=queue_id)

    async def handle_queue_messages(
        self, items: Iterable[tuple[int, bytes]], *, queue_id: str | None = None
    ) -> builtins.list[GroupEvent]:
        """A batch of ``handle_queue_message`` from one queue (``queue_id``; None: the queue
        of the first item's group): the changed group states and the cursor are saved once,
        after the batch (states first, so a crash never skips an item)."""
        return await self._sync.handle_queue_messages(items, queue_id)

    async def listen(
        self,
        on_event: Callable[[GroupEvent], Any] | None = None,
        *,
        stop: asyncio.Event | None = None,
        realtime: bool = True,
        poll_interval: float = 1.0,
        max_backoff: float = 10.0,
        auto_commit: bool = False,
    ) -> None:
        """Process group traffic as it arrives until ``stop`` is set: pushed over the realtime
        WebSocket (reconnecting with capped backoff and resuming from the processed positions:
        no loss, no duplicates), or with ``realtime=False`` by polling every ``poll_interval``.
        What a commit of ours processed while catching up reaches ``on_event`` too, at once."""

        async def emit(events: list[GroupEvent]) -> None:
            if auto_commit:  # commit what was proposed (leaves, the homeserver's Removes)
                for gid in self._to_commit(events):
                    event = await self.commit_pending(gid)
                    if event is not None:
                        events = [*events, event]
            if on_event is None:
                return
            for ev in events:
                r = on_event(ev)
                if asyncio.iscoroutine(r):
                    await r

        await self._sync.listen(
            emit,
            stop=stop or asyncio.Event(),
            realtime=realtime,
            poll_interval=poll_interval,
            max_backoff=max_backoff,
        )
