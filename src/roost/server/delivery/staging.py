"""The DS's use of the group observer (``roost.mls.group``): stage a commit (RFC 9420 §12.4.2)
into a verified result that the DS rules judge, and list the pending proposals (§12.1).

Interim shape until ``GroupObserver.stage``/``merge``/``pending_proposals`` land (branch
``observer``): this is the one module that reads the observer's proposal cache, and the result
mirrors the agreed ``roost.mls.group.StagedCommit`` (proposals with their senders, the roster
change, the next epoch) so switching is local to this file.
"""

from __future__ import annotations

from dataclasses import dataclass

from roost.mls.credential import Credential
from roost.mls.framing import PublicMessage, Sender
from roost.mls.group import GroupObserver
from roost.mls.group.proposal_rules import QueuedProposal
from roost.mls.group.state import resolve_proposals

from ..errors import Problem
from . import wire


@dataclass(frozen=True, slots=True)
class LeafChange:
    leaf_index: int
    credential: Credential
    signature_key: bytes


@dataclass(frozen=True, slots=True)
class RosterChange:
    added: tuple[LeafChange, ...]  # leaves that appear (Adds, an external joiner's leaf)
    removed: tuple[int, ...]  # leaves that go
    updated: tuple[LeafChange, ...]  # leaves whose credential or signature key changes


@dataclass(frozen=True, slots=True)
class StagedCommit:
    sender: Sender
    proposals: tuple[QueuedProposal, ...]  # resolved, with their senders
    roster: RosterChange
    epoch: int  # the next epoch


def stage_and_merge(obs: GroupObserver, pm: PublicMessage) -> StagedCommit:
    """Verify a PublicMessage commit of ``obs``'s epoch and move ``obs`` to the next epoch
    (``obs`` is the caller's disposable copy: nothing is stored unless the DS accepts).
    Raises ``MLSError``; credentials are not judged here (no policy: the DS checks the staged
    roster itself, after fetching the issuers it names)."""
    sender = pm.content.sender
    proposals = tuple(resolve_proposals(pm.content.content, sender, obs._proposals))  # noqa: SLF001
    before = {leaf: (credential, key) for leaf, credential, key in obs.roster()}
    observed = obs.apply(pm)
    removed = set(observed.removed)
    added: list[LeafChange] = []
    updated: list[LeafChange] = []
    for leaf, credential, key in obs.roster():
        old = before.get(leaf)
        if old is None or leaf in removed:
            added.append(LeafChange(leaf, credential, key))
        elif old != (credential, key):
            updated.append(LeafChange(leaf, credential, key))
    roster = RosterChange(tuple(added), tuple(sorted(removed)), tuple(updated))
    return StagedCommit(sender, proposals, roster, observed.epoch)


def pending_proposals(obs: GroupObserver) -> tuple[QueuedProposal, ...]:
    """The proposals cached for the observer's current epoch."""
    return tuple(obs._proposals.values())  # noqa: SLF001


def public_handshake(data: bytes) -> PublicMessage:
    """A handshake message as sent to the DS: an MLSMessage PublicMessage."""
    try:
        return wire.public_message(data)
    except wire.WrongWireFormat:
        raise Problem(
            422, "wrong_wire_format", "handshake messages must be PublicMessage"
        ) from None
