"""Rejoining a group whose state this client lost track of (docs/api.md "Resync"; RFC 9420
§12.4.3.2): an external commit from the GroupInfo and tree the DS holds that removes our own
old leaf. The DS allows it in every group, only for the client that held that leaf, and keeps
our roles, queue and notification policy.

When: a handshake the DS accepted that we cannot process (a corrupted membership tag, a
commit we cannot decrypt), or any message of a later epoch than ours (we missed a commit, or
our state came back from an old copy). What we missed stays unreadable and is reported so.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from roost.mls.commit import Commit
from roost.mls.constants import ContentType
from roost.mls.errors import MLSError
from roost.mls.framing import MLSMessage, PrivateMessage, PublicMessage
from roost.protocol.base64url import b64u
from roost.protocol.commit_bundle import encode_commit_bundle
from roost.protocol.group_state import decode_group_state
from roost.protocol.media_types import MLS_MEDIA_TYPE

from .client import RoostClient
from .credential_policy import member_client_id
from .errors import RoostError
from .group_events import GroupEvent
from .group_key import key_headers
from .group_name import roost_capabilities
from .group_store import GroupStore
from .models import GroupQueue

if TYPE_CHECKING:
    from roost.mls.group import Group

# Another member's commit (or resync) can win the epoch between our fetch and our commit:
# fetch the new state and build again, this many times.
RESYNC_RETRIES = 5


def message_epoch(message: bytes) -> tuple[int, bool] | None:
    """(epoch, is a handshake) of a PublicMessage or PrivateMessage; None if neither."""
    try:
        body = MLSMessage.decode(message).body
    except MLSError:
        return None
    if isinstance(body, PublicMessage):
        return body.content.epoch, body.content.content_type != ContentType.APPLICATION
    if isinstance(body, PrivateMessage):
        return body.epoch, body.content_type != ContentType.APPLICATION
    return None


def needs_resync(message: bytes, our_epoch: int) -> bool:
    """Whether a message we failed to process means our state left the group's: a handshake
    of our epoch (the DS accepted it, so the other members moved on with it) or anything of a
    later epoch. Older messages and application messages of our epoch do not."""
    seen = message_epoch(message)
    if seen is None:
        return False
    epoch, handshake = seen
    return epoch > our_epoch or (epoch == our_epoch and handshake)


def joiner_of(message: bytes) -> str:
    """The client id of an external commit's committer (its path's new leaf; verified by
    ``Group.process`` before this is asked), "" if it names none."""
    body = MLSMessage.decode(message).body
    commit = body.content.content if isinstance(body, PublicMessage) else None
    if not isinstance(commit, Commit) or commit.path is None:
        return ""
    return member_client_id(commit.path.leaf_node.credential) or ""


class GroupResync:
    """Rejoins one group in place of our own leaf. The caller holds the store's lock."""

    def __init__(
        self,
        client: RoostClient,
        store: GroupStore,
        queue_for: Callable[[bytes], Awaitable[GroupQueue]],
        adopt: Callable[[bytes, GroupQueue], None],
        abandon: Callable[[bytes, GroupQueue, BaseException | None], None],
    ) -> None:
        self.client = client
        self.store = store
        self.queue_for = queue_for  # the group's queue, or a new one (not registered yet)
        self.adopt = adopt  # the DS took it
        self.abandon = abandon  # the DS did not: a new one is deleted

    async def rejoin(
        self, group_id: bytes, reason: str, *, kind: str = "resynced", key: bytes | None = None
    ) -> GroupEvent:
        """Rejoin from the DS's current state; on ``409 epoch_conflict`` (someone committed
        first, e.g. another member resyncing too) fetch again, up to ``RESYNC_RETRIES`` times.
        Returns the ``resynced`` event (``joined`` for a first join whose Welcome could not be
        used), kept in the history. ``key``: the group's key when we hold none yet (from that
        Welcome); else the one we hold is presented."""
        path = f"/v1/groups/{b64u(group_id)}"
        key = key if key is not None else self.store.group_key(group_id)
        queue = await self.queue_for(group_id)
        try:
            group, seq = await self._submit(path, queue, key_headers(key))
        except BaseException as e:
            self.abandon(group_id, queue, e)
            raise
        self.adopt(group_id, queue)
        self.store.set_group_key(group_id, key)
        self.store.keep(group)
        # A Welcome older than our rejoin (still waiting in the direct queue) is passed over.
        self.store.reached(group_id, seq)
        self.store.save_cursors()
        return self.store.record(
            GroupEvent(
                kind,
                group_id,
                self.client.client_id,
                epoch=group.epoch,
                group_seq=seq,
                text=f"{'joined' if kind == 'joined' else 'rejoined'} the group at epoch "
                f"{group.epoch} ({reason})",
            )
        )

    async def _submit(self, path: str, queue: GroupQueue, key: dict[str, str]) -> tuple[Group, int]:
        """Our external commit, built again on ``409 epoch_conflict``; the new state and the
        commit's ``group_seq``. ``key``: the group's key header (we hold the key already)."""
        for attempt in range(RESYNC_RETRIES + 1):
            group, commit = await self._build(path, key)
            try:
                resp = await self.client.request(
                    "POST",
                    f"{path}/commits",
                    params={"queue_id": queue.id},
                    content=encode_commit_bundle(commit, group.group_info(with_tree=True), None),
                    content_type=MLS_MEDIA_TYPE,
                    # The DS registers the queue: its key proves it ours.
                    headers={**queue.headers, **key},
                )
            except RoostError as e:
                if e.code != "epoch_conflict" or attempt == RESYNC_RETRIES:
                    raise
                continue
            return group, int(resp.json().get("group_seq", 0))
        raise AssertionError("unreachable")

    async def _build(self, path: str, key: dict[str, str]) -> tuple[Group, bytes]:
        """Our external commit on the DS's current GroupInfo and tree, removing the leaf the
        DS says is ours (our local state may be lost or out of date)."""
        from roost.mls.group import Group

        my_leaf = (await self.client.request("GET", path, headers=key)).json().get("my_leaf")
        if my_leaf is None:
            raise RoostError(403, "not_member", "this client holds no leaf in the group")
        resp = await self.client.request("GET", f"{path}/group-info", headers=key)
        try:
            state = decode_group_state(resp.content)
        except MLSError as e:
            raise RoostError(0, "malformed_server_answer", f"group-info: {e}") from e
        return await self.client.with_as_certificates(
            lambda: Group.join_external(
                state.group_info,
                state.ratchet_tree,
                self.client.credential,
                self.client.state.signature_private,
                capabilities=roost_capabilities(self.client.state.cipher_suite),
                remove_prior=int(my_leaf),
                credential_policy=self.client.credential_policy(),
            )
        )
