"""Standalone proposals (docs/api.md "Proposals"): a member's own (RFC 9420 §12.1, e.g. a
Remove of its own leaf to leave, or an Update), and the server's external Remove proposals for
leaves whose client or user was deleted (§12.1.8). Either is cached in the group's observer
state, with a store conditional on ``rev`` (a lost race is retried), and fanned out in order."""

from __future__ import annotations

import logging

import sqlalchemy as sa

from roost.mls.constants import ContentType, SenderType
from roost.mls.credential import Credential
from roost.mls.errors import MLSError
from roost.mls.group import GroupObserver
from roost.mls.group.external import external_remove
from roost.mls.group.proposal_rules import QueuedProposal
from roost.mls.proposals import Add, Proposal, Remove, Update
from roost.protocol.queue_item import ITEM_MLS_MESSAGE

from ..auth.service import Principal
from ..errors import Problem
from ..store import Database
from .credentials import Credentials
from .external_sender import ExternalSender
from .fanout import Fanout
from .group_store import GroupStore, Member
from .handshake import mls_problem, public_handshake
from .rules import AddedClient, AddRule, check_roles, epoch_conflict
from .tables import ds_groups

PROPOSAL_RETRIES = 8

log = logging.getLogger("roost.server.delivery")


def _new_leaf(proposal: Proposal) -> tuple[Credential, bytes] | None:
    """The credential and signature key a proposal brings into the tree, if any."""
    body = proposal.body
    if isinstance(body, Add):
        leaf = body.key_package.leaf_node
    elif isinstance(body, Update):
        leaf = body.leaf_node
    else:
        return None
    return leaf.credential, leaf.signature_key


class Proposals:
    def __init__(
        self,
        db: Database,
        store: GroupStore,
        credentials: Credentials,
        external_sender: ExternalSender,
        add_rule: AddRule,
        fanout: Fanout,
    ) -> None:
        self.db = db
        self.store = store
        self.credentials = credentials
        self.external_sender = external_sender
        self.add_rule = add_rule
        self.fanout = fanout

    async def submit(self, p: Principal, group_id: bytes, body: bytes) -> int:
        """A member's proposal: verified by the observer, judged by the role rules, stored."""
        pm = public_handshake(body)
        content = pm.content
        if content.content_type != ContentType.PROPOSAL:
            raise Problem(422, "wrong_wire_format", "expected a proposal")
        if content.group_id != group_id:
            raise Problem(422, "wrong_group", "the proposal is for another group")
        if content.sender.sender_type != SenderType.MEMBER:
            raise Problem(403, "not_member", "proposals come from members")
        for _ in range(PROPOSAL_RETRIES):
            snap = await self.store.snapshot(group_id)
            row = snap.row
            if content.epoch != row.epoch:
                raise epoch_conflict(row.epoch, row.last_seq, row.last_commit_seq)
            by_leaf = snap.by_leaf()
            m = by_leaf.get(content.sender.index)  # type: ignore[arg-type]
            if m is None or m.gone or (m.client_uuid, m.user_id) != (p.client_uuid, p.user_id):
                raise Problem(403, "not_member", "the proposal's sender is not the calling client")
            obs = GroupObserver.from_bytes(self.store.state_of(row))
            try:
                observed = obs.apply(pm)
            except MLSError as e:
                raise mls_problem("invalid_proposal", e) from None
            proposal: Proposal = observed.proposal  # type: ignore[assignment]
            new_leaf = _new_leaf(proposal)
            client: tuple[str, str] | None = None
            if new_leaf is not None:
                credential, key = new_leaf
                await self.credentials.prefetch(self.credentials.issuers_needed([credential]))
                try:
                    client = self.credentials.client_of(credential, key)
                except Problem as e:  # as the observer's credential policy reported it
                    raise Problem(422, "invalid_proposal", f"ValidationError: {e.detail}") from None
            q = QueuedProposal(proposal, SenderType.MEMBER, m.leaf_index)
            adds = check_roles(
                [q], by_leaf, snap.roles, m.user_id, False, self.credentials.user_of_add
            )
            if adds and client is not None:
                await self.add_rule.check(p, m.user_id, [AddedClient(-1, *client)])
            leaving = isinstance(proposal.body, Remove) and proposal.body.removed == m.leaf_index
            seq = await self._store(
                group_id, row.rev, obs.to_bytes(), [body], snap.members, m.leaf_index, leaving
            )
            if seq is not None:
                return seq
        raise Problem(409, "conflict", "the group changed concurrently; retry")

    async def issue_removes(self, group_id: bytes) -> int:
        """External Remove proposals for this epoch for every gone leaf not yet proposed."""
        for _ in range(PROPOSAL_RETRIES):
            async with self.db.engine.connect() as conn:
                row = await self.store.find_group(conn, group_id)
                if row is None:
                    return 0
                members = await self.store.members(conn, group_id)
            gone = [m.leaf_index for m in members if m.gone]
            if not gone:
                return 0
            obs = GroupObserver.from_bytes(self.store.state_of(row))
            found = await self.external_sender.index_in(obs)
            if found is None:
                log.warning("group without the homeserver as external sender; cannot remove")
                return 0
            key, index = found
            # Removes already proposed this epoch: ours, and a member's of its own leaf.
            proposed = {
                q.proposal.body.removed
                for q in obs.pending_proposals()
                if isinstance(q.proposal.body, Remove)
                and (
                    q.sender_type == SenderType.EXTERNAL
                    or q.sender_index == q.proposal.body.removed
                )
            }
            in_tree = {leaf for leaf, _, _ in obs.roster()}
            messages = []
            for leaf in gone:
                if leaf in proposed or leaf not in in_tree:
                    continue
                msg = external_remove(obs.group_context, index, key.private_key, leaf)
                obs.apply(msg)
                messages.append(msg)
            if not messages:
                return 0
            seq = await self._store(group_id, row.rev, obs.to_bytes(), messages, members, None)
            if seq is not None:
                return len(messages)
        return 0

    async def _store(
        self,
        group_id: bytes,
        rev: int,
        state: bytes,
        messages: list[bytes],
        members: list[Member],
        exclude_leaf: int | None,
        leaving: bool = False,
    ) -> int | None:
        """Store the observer with new cached proposals if nobody changed it meanwhile, and fan
        the proposal messages out (one group_seq each). None: lost the race, retry.

        ``leaving``: the member at ``exclude_leaf`` proposed its own removal. The proposal goes
        to its leaf too, as the last item it gets: what was sent before it may still be on its
        way (between servers), and the leaving client reads it until its own proposal comes
        back. Its leaf is marked gone in the same transaction, so nothing more is delivered to
        it, and should the proposal die uncommitted with its epoch, the homeserver proposes
        the removal again in the next (as for a deleted account's leaves)."""
        n = len(messages)
        async with self.db.transaction() as conn:
            last = (
                await conn.execute(
                    sa.update(ds_groups)
                    .where(ds_groups.c.id == group_id, ds_groups.c.rev == rev)
                    .values(
                        state=self.store.at_rest.seal_state(group_id, state),
                        rev=rev + 1,
                        last_seq=ds_groups.c.last_seq + n,
                    )
                    .returning(ds_groups.c.last_seq)
                )
            ).scalar_one_or_none()
            if last is None:
                return None
            for i, msg in enumerate(messages):
                await self.fanout.fanout(
                    conn,
                    group_id,
                    last - n + 1 + i,
                    ITEM_MLS_MESSAGE,
                    msg,
                    members,
                    None if leaving else exclude_leaf,
                )
            if leaving and exclude_leaf is not None:
                await self.store.mark_leaves_gone(conn, group_id, [exclude_leaf])
            return last
