"""Proposal-list rules and proposal application (RFC 9420 sections 12.2 and 12.3).

``check_proposal_list`` enforces the rules that only depend on the list itself;
``apply_proposals`` applies the list to a *copy* of the tree in the RFC's order
(GroupContextExtensions, Update, Remove, Add, PreSharedKey), validating every new leaf and
KeyPackage against the state it lands in. Nothing is mutated in the caller's state.

Each rule dispatches with ``match`` on the proposal body's class, so every branch knows the
body's type (the ``proposal_type`` tag alone tells a type checker nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..constants import LeafNodeSource, ProposalType, PSKType, ResumptionPSKUsage, SenderType
from ..crypto import CipherSuite
from ..errors import ValidationError
from ..extensions import Extension
from ..key_package import KeyPackage
from ..proposals import (
    Add,
    ExternalInit,
    GroupContextExtensions,
    PreSharedKey,
    Proposal,
    ReInit,
    Remove,
    Update,
)
from ..psk import PreSharedKeyID
from ..ratchet_tree import RatchetTree
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
_ALLOWED_BY_SENDER: dict[SenderType, frozenset[ProposalType]] = {
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
    tree: RatchetTree  # a private copy
    extensions: tuple[Extension, ...]
    # The members after these proposals, kept incrementally (section 7.3 checks of the path leaf).
    members: MemberIndex
    added: list[tuple[int, KeyPackage]] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    psks: list[PreSharedKeyID] = field(default_factory=list)
    external_init: ExternalInit | None = None
    reinit: ReInit | None = None
    path_required: bool = False


# Proposals cached per epoch are bounded (docs/design.md: caches are bounded); a group that
# needs more in one epoch is misbehaving.
MAX_PENDING_PROPOSALS = 4096


def cache_proposal(cache: dict[bytes, QueuedProposal], q: QueuedProposal) -> None:
    ref = q.ref
    if ref is None:  # only received (framed) proposals are cached, and they all have a ref
        raise ValueError("a proposal without a ProposalRef cannot be cached")
    if ref not in cache and len(cache) >= MAX_PENDING_PROPOSALS:
        raise ValidationError(f"more than {MAX_PENDING_PROPOSALS} proposals in one epoch")
    cache[ref] = q


def _updated_leaf(q: QueuedProposal) -> int:
    """The leaf an Update replaces: its sender's (only members may send one, section 12.1.2)."""
    if q.sender_type != SenderType.MEMBER or q.sender_index is None:
        raise ValidationError("Update proposal from a non-member")
    return q.sender_index


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
        match q.proposal.body:
            case Update():
                if q.ref is None:
                    raise ValidationError("Update proposals must be committed by reference")
                leaf = _updated_leaf(q)
                if leaf == committer_index and committer_type == SenderType.MEMBER:
                    raise ValidationError("the committer cannot commit its own Update proposal")
                if leaf in touched:
                    raise ValidationError(f"more than one Update/Remove for leaf {leaf}")
                touched.add(leaf)
            case Remove(removed=removed):
                if committer_type == SenderType.MEMBER and removed == committer_index:
                    raise ValidationError("the committer cannot remove itself")
                if removed in touched:
                    raise ValidationError(f"more than one Update/Remove for leaf {removed}")
                touched.add(removed)
            case Add(key_package=kp):
                sk = kp.leaf_node.signature_key
                if sk in add_keys:
                    raise ValidationError("two Add proposals for the same signature key")
                add_keys.add(sk)
            case PreSharedKey(psk=psk):
                key = psk.encode()
                if key in psk_ids:
                    raise ValidationError("duplicate PreSharedKey proposal")
                psk_ids.add(key)
                if len(psk.psk_nonce) != hash_len:
                    raise ValidationError("PSK nonce length differs from the hash length")
                if (
                    psk.psktype == PSKType.RESUMPTION
                    and psk.usage != ResumptionPSKUsage.APPLICATION
                ):
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


@dataclass(slots=True)
class _ByKind:
    """A proposal list split by body class, each part in list order (section 12.3 applies
    the kinds in a fixed order, not in list order)."""

    group_context_extensions: list[GroupContextExtensions] = field(default_factory=list)
    updates: list[tuple[int, Update]] = field(default_factory=list)  # (sender leaf, body)
    removes: list[Remove] = field(default_factory=list)
    adds: list[Add] = field(default_factory=list)
    psks: list[PreSharedKey] = field(default_factory=list)
    external_inits: list[ExternalInit] = field(default_factory=list)
    reinits: list[ReInit] = field(default_factory=list)


def _split_by_kind(proposals: list[QueuedProposal]) -> _ByKind:
    kinds = _ByKind()
    for q in proposals:
        match q.proposal.body:
            case GroupContextExtensions() as gce:
                kinds.group_context_extensions.append(gce)
            case Update() as update:
                kinds.updates.append((_updated_leaf(q), update))
            case Remove() as remove:
                kinds.removes.append(remove)
            case Add() as add:
                kinds.adds.append(add)
            case PreSharedKey() as psk:
                kinds.psks.append(psk)
            case ExternalInit() as external_init:
                kinds.external_inits.append(external_init)
            case ReInit() as reinit:
                kinds.reinits.append(reinit)
    return kinds


def apply_proposals(
    cs: CipherSuite,
    tree: RatchetTree,
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
    kinds = _split_by_kind(proposals)
    new_tree = tree.copy()
    for gce in kinds.group_context_extensions:
        extensions = gce.extensions
        for idx, leaf in new_tree.leaves():
            check_supports_extensions(leaf, extensions, f"leaf {idx}")

    members = MemberIndex(new_tree.leaves())
    out = AppliedProposals(new_tree, extensions, members, path_required=path_required(proposals))
    for idx, update in kinds.updates:
        old = new_tree.leaf(idx)
        if old is None:
            raise ValidationError(f"Update from blank leaf {idx}")
        leaf = update.leaf_node
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

    for remove in kinds.removes:
        removed = remove.removed
        old = new_tree.leaf(removed)
        if old is None:
            raise ValidationError(f"Remove of blank or missing leaf {removed}")
        members.remove(removed, old)
        new_tree.remove_leaf(removed)
        out.removed.append(removed)

    for add in kinds.adds:
        kp = add.key_package
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

    out.psks = [psk.psk for psk in kinds.psks]
    for external_init in kinds.external_inits:
        out.external_init = external_init
    for reinit in kinds.reinits:
        out.reinit = reinit
        if reinit.version < 1:
            raise ValidationError("ReInit to an older protocol version")
    return out


def select_pending(
    cache: dict[bytes, QueuedProposal],
    by_value: list[QueuedProposal],
    tree: RatchetTree,
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
        match q.proposal.body:
            case Remove(removed=removed):
                touched.add(removed)
            case Add(key_package=kp):
                sig_keys.add(kp.leaf_node.signature_key)
            case PreSharedKey(psk=psk):
                psks.add(psk.encode())
            case GroupContextExtensions():
                have_gce = True

    def claim_leaf(leaf: int | None) -> bool:
        """Whether an Update/Remove of ``leaf`` fits: a filled leaf nobody else touches."""
        if leaf is None or leaf in touched or tree.leaf(leaf) is None:
            return False
        touched.add(leaf)
        return True

    out = []
    for ref, q in cache.items():
        match q.proposal.body:
            case Update():
                if not claim_leaf(q.sender_index):
                    continue
            case Remove(removed=removed):
                if not claim_leaf(removed):
                    continue
            case Add(key_package=kp):
                key = kp.leaf_node.signature_key
                if key in sig_keys or tree.find_signature_key(key) is not None:
                    continue
                sig_keys.add(key)
            case PreSharedKey(psk=psk):
                if psk.encode() in psks:
                    continue
                psks.add(psk.encode())
            case GroupContextExtensions():
                if have_gce:
                    continue
                have_gce = True
            case ReInit() | ExternalInit():
                continue
        out.append((ref, q))
    if not out and not by_value:
        # A ReInit must be committed alone (12.2): only when nothing else is on the table.
        for ref, q in cache.items():
            if isinstance(q.proposal.body, ReInit):
                return [(ref, q)]
    return out
