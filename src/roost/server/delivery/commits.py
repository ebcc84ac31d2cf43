"""The commit pipeline (docs/api.md "Commits"): one commit per epoch, judged on the staged
result, then written with a conditional update and fanned out in one transaction.

1. Snapshot the group once (row, members, roles as of one ``rev``); a commit for another epoch
   is ``409 epoch_conflict`` (a retried success gets its first answer).
2. Stage the commit (``GroupObserver.stage``, RFC 9420 §12.4.2) off the event loop: signature,
   proposal resolution and rules, leaves, tree, transcript — everything MLS says. The observer
   has no credential policy: the DS checks the staged roster itself, in step 3.
3. Judge the staged result: the credentials of every added or updated leaf (the remote AS
   certificates they name fetched first, in one batch), the role rules on the resolved
   proposals, the Welcome, the roster; then merge (a copy of the group's observer) and check
   the GroupInfo against the next epoch.
4. The connection requirement for Adds (database reads).
5. One transaction: the update conditional on the epoch (first commit of an epoch wins, on both
   engines), the fan-out to the members that stay, the member rows, the Welcome, the roles of
   users who left. The snapshot's member list serves unless the group changed since (``rev``).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import sqlalchemy as sa

from roost.mls.commit import Commit
from roost.mls.constants import ContentType, SenderType, WireFormat
from roost.mls.errors import MLSError
from roost.mls.framing import MLSMessage, PublicMessage
from roost.mls.group import GroupObserver, StagedCommit
from roost.mls.proposals import GroupContextExtensions, Remove
from roost.protocol.commit_bundle import CommitBundle, decode_commit_bundle
from roost.protocol.queue_item import ITEM_MLS_MESSAGE

from ..auth.service import Principal
from ..errors import Problem
from ..queues.service import QueueService
from ..store import Database
from .credentials import Credentials
from .external_sender import ExternalSender
from .fanout import Fanout
from .federation_port import RemotePrincipal, domain_of
from .group_info_check import check_extensions_of
from .group_store import GroupSnapshot, GroupStore, Member
from .handshake import mls_problem, public_handshake
from .rules import AddedClient, AddRule, check_roles, epoch_conflict, resync_target
from .send_writer import SEND_ID_RETENTION
from .succession import AdminSuccession
from .tables import ds_groups, ds_held, ds_members, ds_sends
from .welcomes import Welcomes

# Observer work (decode state, validate, encode) runs here so the event loop keeps serving
# sends and socket timers while a big commit is checked.
_CPU = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ds-observer")


@dataclass(slots=True)
class _Judged:
    """A staged commit the DS rules accepted: what the write needs."""

    observer: GroupObserver  # at the next epoch
    state: bytes
    epoch: int
    committer_leaf: int | None
    committer_user: str
    new_rows: dict[int, tuple[str, str]]  # leaf -> (client uuid, user id)
    removed: frozenset[int]
    changes_extensions: bool
    replaced: Member | None  # a resync: the joiner's old leaf, whose queue and policy it keeps


def _removes_by_value(pm: PublicMessage) -> list[int]:
    """The leaves an external commit's Remove proposals name (before staging)."""
    commit = pm.content.content
    if not isinstance(commit, Commit):
        return []
    return [
        q.proposal.body.removed
        for q in commit.proposals
        if q.proposal is not None and isinstance(q.proposal.body, Remove)
    ]


def _joiner(
    leaf: int,
    client_uuid: str,
    user_id: str,
    queue_id: bytes | None,
    queue_domain: str | None,
    replaced: Member | None,
    joined_seq: int,
) -> Member:
    """The committer's new row: a resync keeps the old leaf's queue (unless it names a new
    one), notification policy and standing."""
    if replaced is not None and queue_id is None:
        queue_id, queue_domain = replaced.queue_id, replaced.queue_domain
    policy = replaced.policy if replaced is not None else None
    return Member(leaf, client_uuid, user_id, queue_id, policy, False, queue_domain, joined_seq)


class CommitPipeline:
    def __init__(
        self,
        db: Database,
        home_domain: str,
        store: GroupStore,
        credentials: Credentials,
        external_sender: ExternalSender,
        add_rule: AddRule,
        fanout: Fanout,
        welcomes: Welcomes,
        queues: QueueService,
        succession: AdminSuccession,
        wake_account_events: Callable[[], None],
        now: Callable[[], int],
    ) -> None:
        self.db = db
        self.domain = home_domain
        self.store = store
        self.credentials = credentials
        self.external_sender = external_sender
        self.add_rule = add_rule
        self.fanout = fanout
        self.welcomes = welcomes
        self.queues = queues
        self.succession = succession
        self.wake_account_events = wake_account_events
        self.now = now

    async def submit(
        self,
        p: Principal,
        group_id: bytes,
        body: bytes,
        queue_id: bytes | None,
        queue_key: bytes | None = None,
        group_key_wrap: bytes | None = None,
    ) -> tuple[int, int]:
        """(new epoch, group_seq of the commit). ``queue_key``: the key of ``queue_id``, a
        queue here an external joiner registers (a remote one's server checked it).
        ``group_key_wrap``: the group key wrapped for the Welcome's joiners, passed on opaque."""
        bundle = decode_commit_bundle(body)
        if group_key_wrap is not None and bundle.welcome is None:
            raise Problem(422, "invalid_group_key", "a group key wrap goes with a Welcome")
        pm = public_handshake(bundle.commit)
        content = pm.content
        if content.content_type != ContentType.COMMIT:
            raise Problem(422, "wrong_wire_format", "the first message must be a commit")
        if content.group_id != group_id:
            raise Problem(422, "wrong_group", "the commit is for another group")
        commit_hash = hashlib.sha256(bundle.commit).digest()
        snap = await self.store.snapshot(group_id)
        row = snap.row
        if content.epoch != row.epoch:
            if content.epoch + 1 == row.epoch and row.last_commit_hash == commit_hash:
                return row.epoch, row.last_commit_seq  # a retried success: same answer
            raise epoch_conflict(row.epoch, row.last_seq, row.last_commit_seq)
        committer_leaf, committer_user = self._committer(p, snap, pm, queue_id)
        if committer_leaf is not None and isinstance(p, RemotePrincipal):
            await self._require_delivered(p.domain, group_id)
        loop = asyncio.get_running_loop()
        obs, staged = await loop.run_in_executor(
            _CPU, self._stage, self.store.state_of(row), pm, bundle.group_info
        )
        # Every issuer the staged leaves name, fetched at once before verification.
        changed = staged.roster.added + staged.roster.updated
        await self.credentials.prefetch(
            self.credentials.issuers_needed(c.credential for c in changed)
        )
        judged = await loop.run_in_executor(
            _CPU, self._judge, p, snap, obs, staged, bundle, committer_leaf, committer_user
        )
        if judged.changes_extensions:
            await self.external_sender.require_in(judged.observer)
        added = [
            AddedClient(leaf, cu, uid)
            for leaf, (cu, uid) in judged.new_rows.items()
            if leaf != judged.committer_leaf
        ]
        added_users = await self.add_rule.check(p, judged.committer_user, added)
        return await self._write(
            p, snap, judged, bundle, commit_hash, (queue_id, queue_key), added_users, group_key_wrap
        )

    async def _require_delivered(self, domain: str, group_id: bytes) -> None:
        """A member of another domain commits only once the group's items for that domain
        left our outbox: it keeps a few past epochs' secrets, and its commits must not move
        it further on while messages of older epochs are still on their way to it. (Items
        queued after this check are of the current epoch: still readable.)"""
        async with self.db.engine.connect() as conn:
            if await self.fanout.in_transit(conn, domain, group_id):
                raise Problem(
                    409,
                    "items_in_transit",
                    f"items of this group are still on their way to {domain}; commit again "
                    "once they have arrived",
                )

    def _committer(
        self, p: Principal, snap: GroupSnapshot, pm: PublicMessage, queue_id: bytes | None
    ) -> tuple[int | None, str]:
        """The committing leaf (None for an external joiner, known once staged) and user."""
        sender = pm.content.sender
        if sender.sender_type == SenderType.NEW_MEMBER_COMMIT:
            # A resync (the member rejoins in place of its own leaf) is allowed in every group;
            # the staged Removes are judged again in ``_judge``.
            if (
                resync_target(_removes_by_value(pm), snap.by_leaf(), (p.client_uuid, p.user_id))
                is None
            ):
                if not snap.row.external_join:
                    raise Problem(403, "external_join_disabled", "this group does not allow joins")
                if queue_id is None:
                    raise Problem(422, "queue_required", "an external commit registers a queue_id")
            return None, p.user_id
        if sender.sender_type == SenderType.MEMBER:
            m = snap.by_leaf().get(sender.index)  # type: ignore[arg-type]
            if m is None or m.gone or (m.client_uuid, m.user_id) != (p.client_uuid, p.user_id):
                raise Problem(403, "not_member", "the commit's sender is not the calling client")
            return m.leaf_index, m.user_id
        raise Problem(422, "invalid_commit", "commits come from members or new members")

    @staticmethod
    def _stage(
        state: bytes, pm: PublicMessage, group_info: bytes
    ) -> tuple[GroupObserver, StagedCommit]:
        """CPU work: a copy of the group's observer and the commit staged on it. The
        GroupInfo's extensions are checked first: they are what joiners will be served, and a
        malformed one proposed in a GroupContextExtensions would fail staging less precisely."""
        check_extensions_of(group_info)
        obs = GroupObserver.from_bytes(state)
        try:
            return obs, obs.stage(pm)
        except MLSError as e:
            raise mls_problem("invalid_commit", e) from None

    def _judge(
        self,
        p: Principal,
        snap: GroupSnapshot,
        obs: GroupObserver,
        staged: StagedCommit,
        bundle: CommitBundle,
        committer_leaf: int | None,
        committer_user: str,
    ) -> _Judged:
        """The DS rules on the staged commit (CPU work: X.509 checks of new leaves)."""
        external = committer_leaf is None
        by_leaf = snap.by_leaf()
        clients: dict[int, tuple[str, str]] = {}
        for change in staged.roster.added + staged.roster.updated:
            try:
                clients[change.leaf_index] = self.credentials.client_of(
                    change.credential, change.signature_key
                )
            except Problem as e:  # as the observer's credential policy reported it
                raise Problem(422, "invalid_commit", f"ValidationError: {e.detail}") from None
        adds = check_roles(
            staged.proposals,
            by_leaf,
            snap.roles,
            committer_user,
            external,
            self.credentials.user_of_add,
        )
        # This copy of the observer moves on; if the GroupInfo does not match, it is simply
        # not stored: commit and GroupInfo are accepted together or not at all.
        obs.merge(staged)
        try:
            obs.check_group_info(bundle.group_info)
        except MLSError as e:
            raise mls_problem("invalid_group_info", e) from None
        if bundle.welcome is not None and MLSMessage.decode(bundle.welcome).wire_format != (
            WireFormat.WELCOME
        ):
            raise Problem(422, "wrong_wire_format", "the third message must be a Welcome")
        if adds and bundle.welcome is None:
            raise Problem(422, "welcome_required", "a commit with Adds carries the Welcome")
        if not adds and bundle.welcome is not None:
            raise Problem(422, "unexpected_welcome", "a Welcome without Adds")
        # The new roster: removed leaves go, added leaves come (client from the credential);
        # a leaf that stays keeps its client.
        removed = frozenset(c.leaf_index for c in staged.roster.removed)
        new_rows = {c.leaf_index: clients[c.leaf_index] for c in staged.roster.added}
        for change in staged.roster.updated:
            old = by_leaf.get(change.leaf_index)
            if old is None:
                new_rows[change.leaf_index] = clients[change.leaf_index]
            elif clients[change.leaf_index] != (old.client_uuid, old.user_id):
                raise Problem(422, "invalid_commit", "a leaf cannot change its client")
        replaced = None
        if external:
            mine = [leaf for leaf, c in new_rows.items() if c == (p.client_uuid, p.user_id)]
            if len(mine) != 1:
                raise Problem(422, "credential_mismatch", "the joiner's leaf is not the caller")
            committer_leaf = mine[0]
            replaced = resync_target(sorted(removed), by_leaf, (p.client_uuid, p.user_id))
            if replaced is None and not snap.row.external_join:
                raise Problem(403, "external_join_disabled", "this group does not allow joins")
        changes_extensions = any(
            isinstance(q.proposal.body, GroupContextExtensions) for q in staged.proposals
        )
        return _Judged(
            obs,
            obs.to_bytes(),
            staged.epoch,
            committer_leaf,
            committer_user,
            new_rows,
            removed,
            changes_extensions,
            replaced,
        )

    async def _write(
        self,
        p: Principal,
        snap: GroupSnapshot,
        judged: _Judged,
        bundle: CommitBundle,
        commit_hash: bytes,
        queue: tuple[bytes | None, bytes | None],
        added_users: dict[str, str],
        group_key_wrap: bytes | None,
    ) -> tuple[int, int]:
        group_id, row = snap.row.id, snap.row
        queue_id, queue_key = queue
        committer_leaf = judged.committer_leaf
        queue_domain = p.domain if isinstance(p, RemotePrincipal) else None
        # Signs an admin_promoted notice should the commit take the last admin away.
        server_key = await self.external_sender.key(row.cipher_suite)
        async with self.db.transaction() as conn:
            if queue_id is not None and queue_domain is None:  # a remote one: its server checked
                await self.queues.check_key(conn, queue_id, queue_key)
            written = (
                await conn.execute(
                    sa.update(ds_groups)
                    .where(ds_groups.c.id == group_id, ds_groups.c.epoch == row.epoch)
                    .values(
                        epoch=judged.epoch,
                        last_seq=ds_groups.c.last_seq + 1,
                        rev=ds_groups.c.rev + 1,
                        **self.store.sealed_state(group_id, judged.state, bundle.group_info),
                        last_commit_hash=commit_hash,
                        last_commit_seq=ds_groups.c.last_seq + 1,
                    )
                    .returning(ds_groups.c.last_seq, ds_groups.c.rev)
                )
            ).first()
            if written is None:
                current = await self.store.find_group(conn, group_id)
                if current is None:
                    raise Problem(404, "group_not_found", "no such group")
                raise epoch_conflict(current.epoch, current.last_seq, current.last_commit_seq)
            seq, rev = written
            # The group row is locked now. Members and roles are the snapshot's unless they
            # changed since (a joiner's queue, a policy, a client gone: ``rev`` moved on).
            members, roles = snap.members, snap.roles
            if rev != row.rev + 1:
                members = await self.store.members(conn, group_id)
                roles = await self.store.roles(conn, group_id)
            # The commit goes to the members that stay; removed leaves get nothing from this
            # commit on (they learn it from 403 not_member), new members start from the Welcome.
            staying = [m for m in members if m.leaf_index not in judged.removed]
            remote_domains = {m.queue_domain for m in staying if m.queue_domain} | {
                domain_of(u) for u in added_users if domain_of(u) != self.domain
            }
            await self.fanout.lock_destinations(conn, remote_domains)
            await self.fanout.fanout(
                conn, group_id, seq, ITEM_MLS_MESSAGE, bundle.commit, staying, committer_leaf
            )
            # Replaced leaves go too.
            gone_leaves = {
                m.leaf_index
                for m in members
                if m.leaf_index in judged.removed or m.leaf_index in judged.new_rows
            }
            if gone_leaves:
                for t in (ds_members, ds_held):
                    await conn.execute(
                        sa.delete(t).where(
                            t.c.group_id == group_id, t.c.leaf_index.in_(sorted(gone_leaves))
                        )
                    )
            # A client that replaced its own leaf (an external rejoin) keeps its standing.
            joined = {m.client_uuid: m.joined_seq for m in members if m.leaf_index in gone_leaves}
            new_members = [
                Member(leaf, cu, uid, None, None, False, None, joined.get(cu, seq))
                if leaf != committer_leaf
                else _joiner(
                    leaf, cu, uid, queue_id, queue_domain, judged.replaced, joined.get(cu, seq)
                )
                for leaf, (cu, uid) in judged.new_rows.items()
            ]
            if new_members:
                await conn.execute(
                    sa.insert(ds_members), [self.store.member_row(group_id, m) for m in new_members]
                )
            remaining = [m for m in members if m.leaf_index not in gone_leaves] + new_members
            if bundle.welcome is not None:
                await self.welcomes.deliver_in(
                    conn,
                    group_id,
                    seq,
                    judged.committer_user,
                    added_users,
                    bundle.welcome,
                    group_key_wrap,
                )
            # Roles of users who left the group entirely go with them; if that took the last
            # admin, the longest-standing member is promoted (a notice after the commit).
            still = {m.user_id for m in remaining}
            for uid in roles:
                if uid not in still:
                    await self.store.set_role(conn, group_id, uid, None)
            kept_roles = {uid: role for uid, role in roles.items() if uid in still}
            await self.succession.keep_admin_in(conn, group_id, server_key, remaining, kept_roles)
            await conn.execute(
                sa.delete(ds_sends).where(
                    ds_sends.c.group_id == group_id,
                    ds_sends.c.created_at < self.now() - SEND_ID_RETENTION,
                )
            )
        if any(m.gone for m in remaining):
            self.wake_account_events()  # outstanding server Removes issued again for the epoch
        return judged.epoch, seq
