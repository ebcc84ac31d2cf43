"""Proposal-list rules and proposal application (RFC 9420 sections 12.2 and 12.3).

``check_proposal_list`` enforces the rules that only depend on the list itself;
``apply_proposals`` applies the list to a *copy* of the tree in the RFC's order
(GroupContextExtensions, Update, Remove, Add, PreSharedKey), validating every new leaf and
KeyPackage against the state it lands in. Nothing is mutated in the caller's state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..constants import LeafNodeSource, ProposalType, PSKType, ResumptionPSKUsage, SenderType
from ..errors import ValidationError
from ..extensions import Extension
from ..key_package import KeyPackage
from ..proposals import ExternalInit, Proposal, ReInit
from ..psk import PreSharedKeyID
from .validation import (
    CredentialPolicy,
    MemberIndex,
    check_supports_extensions,
    validate_key_package,
    validate_leaf_node,
)

# Proposal types whose presence makes the Commit's path mandatory (section 17.4 "Path
# Required" column); an empty proposal list needs a path too.
_PATH_REQUIRED = frozenset(
    {
        ProposalType.UPDATE,
        ProposalType.REMOVE,
        ProposalType.EXTERNAL_INIT,
        ProposalType.GROUP_CONTEXT_EXTENSIONS,
    }
)
# What each sender type may propose (section 12.1.8 and the "External" column of 17.4).
_ALLOWED_BY_SENDER = {
    SenderType.MEMBER: frozenset(ProposalType) - {ProposalType.EXTERNAL_INIT},
    SenderType.EXTERNAL: frozenset(
        {
            ProposalType.ADD,
            ProposalType.REMOVE,
            ProposalType.PSK,
            ProposalType.REINIT,
            ProposalType.GROUP_CONTEXT_EXTENSIONS,
        }
    ),
    SenderType.NEW_MEMBER_PROPOSAL: frozenset({ProposalType.ADD}),
    # By-value proposals of an external commit carry the committer as sender.
    SenderType.NEW_MEMBER_COMMIT: frozenset(
        {ProposalType.EXTERNAL_INIT, ProposalType.REMOVE, ProposalType.PSK}
    ),
}


@dataclass(frozen=True, slots=True)
class QueuedProposal:
    """A proposal together with who proposed it; ``ref`` is None for by-value proposals."""

    proposal: Proposal
    sender_type: SenderType
    sender_index: int | None  # leaf index (member) or external sender index
    ref: bytes | None = None


@dataclass(slots=True)
class AppliedProposals:
    tree: object  # RatchetTree (a private copy)
    extensions: tuple[Extension, ...]
    added: list[tuple[int, KeyPackage]] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    psks: list[PreSharedKeyID] = field(default_factory=list)
    external_init: ExternalInit | None = None
    reinit: ReInit | None = None
    path_required: bool = False
    # The members after these proposals, kept incrementally (section 7.3 checks of the path leaf).
    members: MemberIndex | None = None


# Proposals cached per epoch are bounded (every cache in Roost is); a group that
# needs more in one epoch is misbehaving.
MAX_PENDING_PROPOSALS = 4096


def cache_proposal(cache: dict[bytes, QueuedProposal], q: QueuedProposal) -> None:
    if q.ref not in cache and len(cache) >= MAX_PENDING_PROPOSALS:
        raise ValidationError(f"more than {MAX_PENDING_PROPOSALS} proposals in one epoch")
    cache[q.ref] = q  # type: ignore[index]


def check_proposal_list(
    proposals: list[QueuedProposal],
    *,
    committer_type: SenderType,
    committer_index: int | None,
    hash_len: int,
) -> None:
    """Section 12.2: the rules about the list as a whole (no tree needed)."""
    external_commit = committer_type == SenderType.NEW_MEMBER_COMMIT
    counts: dict[int, int] = {}
    touched: set[int] = set()
    psk_ids: set[bytes] = set()
    add_keys: set[bytes] = set()
    for q in proposals:
        t = q.proposal.proposal_type
        counts[t] = counts.get(t, 0) + 1
        allowed = _ALLOWED_BY_SENDER.get(q.sender_type, frozenset())
        if t not in allowed:
            raise ValidationError(
                f"{ProposalType(t).name} proposal not allowed from a "
                f"{SenderType(q.sender_type).name.lower()} sender"
            )
        body = q.proposal.body
        if t == ProposalType.UPDATE:
            if q.ref is None:
                raise ValidationError("Update proposals must be committed by reference")
            if q.sender_index == committer_index and committer_type == SenderType.MEMBER:
                raise ValidationError("the committer cannot commit its own Update proposal")
            if q.sender_index in touched:
                raise ValidationError(f"more than one Update/Remove for leaf {q.sender_index}")
            touched.add(q.sender_index)  # type: ignore[arg-type]
        elif t == ProposalType.REMOVE:
            if committer_type == SenderType.MEMBER and body.removed == committer_index:
                raise ValidationError("the committer cannot remove itself")
            if body.removed in touched:
                raise ValidationError(f"more than one Update/Remove for leaf {body.removed}")
            touched.add(body.removed)
        elif t == ProposalType.ADD:
            sk = body.key_package.leaf_node.signature_key
            if sk in add_keys:
                raise ValidationError("two Add proposals for the same signature key")
            add_keys.add(sk)
        elif t == ProposalType.PSK:
            psk = body.psk
            key = psk.encode()
            if key in psk_ids:
                raise ValidationError("duplicate PreSharedKey proposal")
            psk_ids.add(key)
            if len(psk.psk_nonce) != hash_len:
                raise ValidationError("PSK nonce length differs from the hash length")
            if psk.psktype == PSKType.RESUMPTION and psk.usage != ResumptionPSKUsage.APPLICATION:
                raise ValidationError("resumption PSK in a commit must have usage application")
    if counts.get(ProposalType.GROUP_CONTEXT_EXTENSIONS, 0) > 1:
        raise ValidationError("more than one GroupContextExtensions proposal")
    if counts.get(ProposalType.REINIT, 0) and len(proposals) != 1:
        raise ValidationError("a ReInit proposal must be the only proposal in a commit")
    if external_commit:
        if counts.get(ProposalType.EXTERNAL_INIT, 0) != 1:
            raise ValidationError("an external commit needs exactly one ExternalInit proposal")
        if counts.get(ProposalType.REMOVE, 0) > 1:
            raise ValidationError("an external commit may remove at most one leaf")
        if any(q.ref is not None for q in proposals):
            raise ValidationError("an external commit cannot include proposals by reference")
    elif counts.get(ProposalType.EXTERNAL_INIT, 0):
        raise ValidationError("ExternalInit is only allowed in an external commit")


def path_required(proposals: list[QueuedProposal]) -> bool:
    return not proposals or any(q.proposal.proposal_type in _PATH_REQUIRED for q in proposals)


def apply_proposals(
    cs,
    tree,
    *,
    group_id: bytes,
    cipher_suite: int,
    extensions: tuple[Extension, ...],
    proposals: list[QueuedProposal],
    check_lifetime: bool = True,
    now: int | None = None,
    credential_policy: CredentialPolicy | None = None,
) -> AppliedProposals:
    """Apply ``proposals`` to a copy of ``tree`` (section 12.3) and validate each change."""
    new_tree = tree.copy()
    out = AppliedProposals(new_tree, extensions, path_required=path_required(proposals))
    by_type: dict[int, list[QueuedProposal]] = {}
    for q in proposals:
        by_type.setdefault(q.proposal.proposal_type, []).append(q)

    for q in by_type.get(ProposalType.GROUP_CONTEXT_EXTENSIONS, ()):
        out.extensions = q.proposal.body.extensions
        for idx, leaf in new_tree.leaves():
            check_supports_extensions(leaf, out.extensions, f"leaf {idx}")

    members = out.members = MemberIndex(new_tree.leaves())
    for q in by_type.get(ProposalType.UPDATE, ()):
        idx = q.sender_index
        assert idx is not None
        old = new_tree.leaf(idx)
        if old is None:
            raise ValidationError(f"Update from blank leaf {idx}")
        leaf = q.proposal.body.leaf_node
        members.remove(idx, old)
        validate_leaf_node(
            cs,
            leaf,
            source=LeafNodeSource.UPDATE,
            group_id=group_id,
            leaf_index=idx,
            group_extensions=out.extensions,
            members=members,
            # The policy judges (credential, signature key): re-ask only if either changed.
            credential_policy=(
                credential_policy
                if (old.credential, old.signature_key) != (leaf.credential, leaf.signature_key)
                else None
            ),
        )
        members.add(idx, leaf)
        new_tree.update_leaf(idx, leaf)
        out.updated.append(idx)

    for q in by_type.get(ProposalType.REMOVE, ()):
        removed = q.proposal.body.removed
        old = new_tree.leaf(removed)
        if old is None:
            raise ValidationError(f"Remove of blank or missing leaf {removed}")
        members.remove(removed, old)
        new_tree.remove_leaf(removed)
        out.removed.append(removed)

    for q in by_type.get(ProposalType.ADD, ()):
        kp = q.proposal.body.key_package
        validate_key_package(
            cs,
            kp,
            cipher_suite=cipher_suite,
            group_id=group_id,
            group_extensions=out.extensions,
            members=members,
            check_lifetime=check_lifetime,
            now=now,
            credential_policy=credential_policy,
        )
        index = new_tree.add_leaf(kp.leaf_node)
        members.add(index, kp.leaf_node)
        out.added.append((index, kp))

    out.psks = [q.proposal.body.psk for q in by_type.get(ProposalType.PSK, ())]
    for q in by_type.get(ProposalType.EXTERNAL_INIT, ()):
        out.external_init = q.proposal.body
    for q in by_type.get(ProposalType.REINIT, ()):
        out.reinit = q.proposal.body
        if q.proposal.body.version < 1:
            raise ValidationError("ReInit to an older protocol version")
    return out


def select_pending(
    cache: dict[bytes, QueuedProposal],
    by_value: list[QueuedProposal],
    tree,
    committer: int,
) -> list[tuple[bytes, QueuedProposal]]:
    """The received proposals a committer can include next to ``by_value`` without breaking
    section 12.2: a committer must leave out proposals that conflict (12.4). Skipped: our own
    Updates, a second Update/Remove of a leaf, Removes of blank leaves or of ourselves, Adds
    of a signature key already present, extra GroupContextExtensions, duplicate PSKs, and a
    ReInit unless it is the only proposal.
    KeyPackage and leaf validity are still checked when the commit is built."""
    touched: set[int] = {committer}
    sig_keys: set[bytes] = set()
    psks: set[bytes] = set()
    have_gce = False
    for q in by_value:
        t = q.proposal.proposal_type
        body = q.proposal.body
        if t == ProposalType.REMOVE:
            touched.add(body.removed)
        elif t == ProposalType.ADD:
            sig_keys.add(body.key_package.leaf_node.signature_key)
        elif t == ProposalType.PSK:
            psks.add(body.psk.encode())
        elif t == ProposalType.GROUP_CONTEXT_EXTENSIONS:
            have_gce = True
    out = []
    for ref, q in cache.items():
        t = q.proposal.proposal_type
        body = q.proposal.body
        if t in (ProposalType.UPDATE, ProposalType.REMOVE):
            leaf = q.sender_index if t == ProposalType.UPDATE else body.removed
            if leaf in touched or tree.leaf(leaf) is None:
                continue
            touched.add(leaf)
        elif t == ProposalType.ADD:
            key = body.key_package.leaf_node.signature_key
            if key in sig_keys or tree.find_signature_key(key) is not None:
                continue
            sig_keys.add(key)
        elif t == ProposalType.PSK:
            if body.psk.encode() in psks:
                continue
            psks.add(body.psk.encode())
        elif t == ProposalType.GROUP_CONTEXT_EXTENSIONS:
            if have_gce:
                continue
            have_gce = True
        elif t in (ProposalType.REINIT, ProposalType.EXTERNAL_INIT):
            continue
        out.append((ref, q))
    if not out and not by_value:
        # A ReInit must be committed alone (12.2): only when nothing else is on the table.
        for ref, q in cache.items():
            if q.proposal.proposal_type == ProposalType.REINIT:
                return [(ref, q)]
    return out
