"""A verified, not yet merged commit: what a ``GroupObserver`` hands out between stage and merge.

``GroupObserver.stage`` runs the whole commit pipeline (RFC 9420 section 12.4.2, with the
proposal rules of sections 12.1-12.3) on copies and returns a ``StagedCommit``: the resolved
proposals, the roster change with every leaf's credential, and the next epoch's GroupContext.
An application (the Delivery Service) inspects it — roles, credentials — and only then calls
``GroupObserver.merge``. Only the observer builds one; nothing here can be edited afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..constants import SenderType
from ..credential import Credential
from ..framing import Sender
from ..group_context import GroupContext
from ..leaf_node import LeafNode
from .proposal_rules import QueuedProposal
from .state import PublicState
from .state import StagedCommit as ComputedCommit  # the pipeline's internal result


@dataclass(frozen=True, slots=True)
class LeafChange:
    """One leaf a commit adds, removes or changes."""

    leaf_index: int
    credential: Credential  # the leaf's credential (the new one for added/updated leaves)
    signature_key: bytes
    old_credential: Credential | None = None  # set for updated/removed leaves


@dataclass(frozen=True, slots=True)
class RosterChange:
    """Who joins, leaves or changes their leaf with a commit (section 12.3 order)."""

    added: tuple[LeafChange, ...]  # Add proposals, then an external joiner's own leaf
    removed: tuple[LeafChange, ...]  # credential = the departing one
    updated: tuple[LeafChange, ...]  # Update proposals, then the committer's UpdatePath leaf


@dataclass(frozen=True, slots=True)
class EpochMark:
    """Identifies one epoch of one observer: its GroupContext (group id, epoch, tree hash,
    confirmed transcript hash) and interim transcript hash (which binds the confirmation tag)."""

    context: bytes
    interim_transcript_hash: bytes

    @classmethod
    def of(cls, state: PublicState) -> EpochMark:
        return cls(state.context_bytes, state.interim_transcript_hash)


@dataclass(frozen=True, slots=True)
class StagedCommit:
    """A fully verified commit of the current epoch, not applied yet."""

    sender: Sender
    proposals: tuple[QueuedProposal, ...]  # resolved by-reference and by-value, with senders
    roster: RosterChange
    group_context: GroupContext  # the next epoch's
    epoch: int  # the next epoch number
    confirmation_tag: bytes
    # What merge swaps in, and the epoch it may be merged into.
    _next_state: PublicState = field(repr=False, compare=False)
    _staged_from: EpochMark = field(repr=False, compare=False)


def staged_commit(
    current: PublicState, sender: Sender, computed: ComputedCommit, confirmation_tag: bytes
) -> StagedCommit:
    """The public view of ``computed``, a commit staged on top of ``current``."""
    nxt = computed.state
    return StagedCommit(
        sender,
        tuple(computed.proposals),
        roster_change(current, sender, computed),
        nxt.context,
        nxt.epoch,
        confirmation_tag,
        nxt,
        EpochMark.of(current),
    )


def roster_change(current: PublicState, sender: Sender, computed: ComputedCommit) -> RosterChange:
    old_tree = current.tree
    new_tree = computed.state.tree
    applied = computed.applied

    def departing(index: int) -> LeafChange:
        leaf = _present(old_tree.leaf(index), index)
        return LeafChange(index, leaf.credential, leaf.signature_key, leaf.credential)

    def changed(index: int, new: LeafNode) -> LeafChange:
        old = _present(old_tree.leaf(index), index)
        return LeafChange(index, new.credential, new.signature_key, old.credential)

    added = [
        LeafChange(i, kp.leaf_node.credential, kp.leaf_node.signature_key)
        for i, kp in applied.added
    ]
    updated = [changed(i, _present(new_tree.leaf(i), i)) for i in applied.updated]
    path = computed.path
    if path is not None:
        leaf = path.leaf_node
        if sender.sender_type == SenderType.NEW_MEMBER_COMMIT:
            added.append(LeafChange(computed.committer, leaf.credential, leaf.signature_key))
        else:
            updated.append(changed(computed.committer, leaf))
    return RosterChange(tuple(added), tuple(departing(i) for i in applied.removed), tuple(updated))


def _present(leaf: LeafNode | None, index: int) -> LeafNode:
    # The pipeline already refused blank leaves here; this only narrows the type.
    if leaf is None:
        raise AssertionError(f"leaf {index} is blank after a verified commit")
    return leaf
