"""The public group state and the side-effect-free commit pipeline.

``PublicState`` is what both a member and the server's observer know: GroupContext, ratchet
tree and interim transcript hash. ``stage_commit`` computes the next public state from a
Commit without touching the current one; callers swap it in only after every check passed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from ..codec import Reader, Writer
from ..commit import Commit
from ..constants import LeafNodeSource, SenderType
from ..credential import Credential
from ..crypto import CipherSuite
from ..errors import CryptoError, DecodeError, UnsupportedError, ValidationError
from ..extension_types import ExternalSenders
from ..extensions import find_extension
from ..framing import AuthenticatedContent, ContentBody, FramedContent, Sender
from ..group_context import GroupContext
from ..proposals import Add, Proposal
from ..ratchet_tree import RatchetTree
from ..transcript import confirmed_transcript_hash, interim_transcript_hash
from ..update_path import UpdatePath
from .proposal_rules import AppliedProposals, QueuedProposal, apply_proposals, check_proposal_list
from .validation import CredentialPolicy, validate_leaf_node

STATE_VERSION = 1


@dataclass(slots=True)
class PublicState:
    """Public group state; ``context_bytes`` caches the GroupContext encoding."""

    cs: CipherSuite
    context: GroupContext
    tree: RatchetTree
    interim_transcript_hash: bytes
    context_bytes: bytes = b""

    def __post_init__(self) -> None:
        if not self.context_bytes:
            self.context_bytes = self.context.encode()

    @property
    def epoch(self) -> int:
        return self.context.epoch

    @property
    def group_id(self) -> bytes:
        return self.context.group_id

    def roster(self) -> list[tuple[int, Credential, bytes]]:
        """(leaf index, credential, signature key) of every member."""
        return [(i, leaf.credential, leaf.signature_key) for i, leaf in self.tree.leaves()]

    # --- strict, versioned encoding (no pickle) ---------------------------------------------

    def encode_to(self, w: Writer) -> None:
        w.u16(STATE_VERSION)
        w.opaque(self.context_bytes)
        w.opaque(self.tree.to_bytes())
        w.opaque(self.interim_transcript_hash)

    @classmethod
    def decode_from(cls, r: Reader, cs_lookup: Callable[[int], CipherSuite]) -> PublicState:
        version = r.u16()
        if version != STATE_VERSION:
            raise DecodeError(f"unsupported group state version {version}")
        context_bytes = r.opaque()
        context = GroupContext.decode(context_bytes)
        try:
            cs = cs_lookup(context.cipher_suite)
        except UnsupportedError as e:  # stored state names a suite we never accepted: corrupt
            raise DecodeError(f"stored group state: {e}") from None
        tree = RatchetTree.from_bytes(cs, r.opaque())
        return cls(cs, context, tree, r.opaque(), context_bytes)


# --- signature checks ------------------------------------------------------------------------


def external_sender_key(state: PublicState, index: int) -> bytes:
    ext = find_extension(state.context.extensions, ExternalSenders.extension_type)
    if ext is None:
        raise ValidationError("external sender but the group has no external_senders extension")
    try:
        senders = ExternalSenders.from_extension(ext).senders
    except DecodeError as e:
        raise ValidationError(f"invalid external_senders extension: {e}") from None
    if index >= len(senders):
        raise ValidationError(f"external sender index {index} out of range")
    return senders[index].signature_key


def sender_signature_key(state: PublicState, ac: AuthenticatedContent) -> bytes:
    """The key that must have signed ``ac`` (section 6.1)."""
    sender = ac.content.sender
    body = ac.content.content
    match sender.sender_type:
        case SenderType.MEMBER:
            index = sender.leaf_index
            leaf = state.tree.leaf(index) if index < state.tree.leaf_count else None
            if leaf is None:
                raise ValidationError(f"sender leaf {index} is not a member")
            return leaf.signature_key
        case SenderType.EXTERNAL:
            return external_sender_key(state, sender.sender_index)
        case SenderType.NEW_MEMBER_PROPOSAL:
            match body:
                case Proposal(body=Add(key_package=kp)):
                    return kp.leaf_node.signature_key
            raise ValidationError("a new_member_proposal sender may only send an Add proposal")
        case SenderType.NEW_MEMBER_COMMIT:
            match body:
                case Commit(path=UpdatePath(leaf_node=path_leaf)):
                    return path_leaf.signature_key
            raise ValidationError("a new_member_commit must be a Commit with a path")
    raise ValidationError(f"unknown sender type {sender.sender_type}")


def verify_content_signature(state: PublicState, ac: AuthenticatedContent) -> None:
    key = sender_signature_key(state, ac)
    if not state.cs.verify_with_label(
        key, b"FramedContentTBS", ac.tbs(state.context_bytes), ac.auth.signature
    ):
        raise CryptoError("invalid FramedContent signature")


def check_content_header(state: PublicState, content: FramedContent) -> None:
    if content.group_id != state.group_id:
        raise ValidationError("message for another group")
    if content.epoch != state.epoch:
        raise ValidationError(f"message for epoch {content.epoch}, group is at {state.epoch}")


# --- proposal resolution ----------------------------------------------------------------------


def queued_from_content(cs: CipherSuite, ac: AuthenticatedContent) -> QueuedProposal:
    """A received proposal message as a cache entry keyed by its ProposalRef."""
    sender = ac.content.sender
    proposal = ac.content.content
    if not isinstance(proposal, Proposal):
        raise ValidationError("expected a proposal message")
    return QueuedProposal(
        proposal,
        sender.sender_type,
        sender.index,
        cs.proposal_ref(ac.encode()),
    )


def resolve_proposals(
    commit: ContentBody, committer: Sender, cache: dict[bytes, QueuedProposal]
) -> list[QueuedProposal]:
    """The proposals a commit covers: its by-value ones (sent by the committer) and the cached
    ones it references. Takes any content body (callers pass the framed content's) and
    rejects what is not a Commit."""
    if not isinstance(commit, Commit):
        raise ValidationError("expected a commit message")
    out: list[QueuedProposal] = []
    for por in commit.proposals:
        if por.proposal is not None:
            out.append(QueuedProposal(por.proposal, committer.sender_type, committer.index))
            continue
        ref = por.reference or b""  # decoding guarantees one of proposal / reference
        q = cache.get(ref)
        if q is None:
            raise ValidationError(f"commit references unknown proposal {ref.hex()}")
        out.append(q)
    return out


def check_path_keys_fresh(tree: RatchetTree, committer: int, path: UpdatePath) -> None:
    """Encryption keys are unique in the tree (7.3, 7.9): the path's keys must be new, apart
    from nodes of the committer's own direct path, which the path replaces."""
    # An external committer's leaf is already in the tree with the path's leaf node.
    replaced = {2 * committer, *tree.direct_path(2 * committer)}
    seen: set[bytes] = set()
    for key in (path.leaf_node.encryption_key, *(n.encryption_key for n in path.nodes)):
        if key in seen:
            raise ValidationError("update path repeats an encryption key")
        seen.add(key)
        holder = tree.find_encryption_key(key)
        if holder is not None and holder not in replaced:
            raise ValidationError(f"update path reuses the encryption key of node {holder}")


def check_path_ciphertext_counts(
    tree: RatchetTree, committer: int, path: UpdatePath, new_leaves: list[int]
) -> None:
    """Each UpdatePath node holds one path-secret ciphertext per node in the resolution of its
    copath child, less the leaves this commit adds (12.4.2). A public check: a member decrypts
    only one node, so without it the observer accepted paths its members refuse."""
    fdp = tree.filtered_direct_path_with_copath(committer)
    if len(fdp) != len(path.nodes):
        raise ValidationError("update path length does not match the filtered direct path")
    for (_, copath), node in zip(fdp, path.nodes, strict=True):
        if len(node.encrypted_path_secret) != len(tree.resolution(copath, new_leaves)):
            raise ValidationError("update path node has the wrong number of ciphertexts")


# --- the commit pipeline ------------------------------------------------------------------------


@dataclass(slots=True)
class StagedCommit:
    """Everything a commit changes, computed on copies; nothing is applied yet."""

    state: PublicState  # the next epoch's public state
    applied: AppliedProposals
    committer: int  # the committer's leaf index in the new tree
    path: UpdatePath | None
    provisional_context_bytes: bytes  # GroupContext used to encrypt the path secrets
    proposals: list[QueuedProposal]


def stage_commit(
    state: PublicState,
    ac: AuthenticatedContent,
    proposals: list[QueuedProposal],
    *,
    check_lifetime: bool = True,
    now: int | None = None,
    credential_policy: CredentialPolicy | None = None,
) -> StagedCommit:
    """Validate and apply a commit to copies of the public state (sections 12.2-12.4.2).

    The caller has already checked the header and the signature. The confirmation tag is
    taken from ``ac`` as is; only a member can verify it.
    """
    cs = state.cs
    ctx = state.context
    commit = ac.content.content
    if not isinstance(commit, Commit):
        raise ValidationError("expected a commit message")
    sender = ac.content.sender
    external = sender.sender_type == SenderType.NEW_MEMBER_COMMIT
    if sender.sender_type not in (SenderType.MEMBER, SenderType.NEW_MEMBER_COMMIT):
        raise ValidationError("a commit must come from a member or a new_member_commit sender")
    if ac.auth.confirmation_tag is None:
        raise ValidationError("commit without confirmation tag")
    check_proposal_list(
        proposals,
        committer_type=sender.sender_type,
        committer_index=None if external else sender.index,
        hash_len=cs.hash_len,
    )
    applied = apply_proposals(
        cs,
        state.tree,
        group_id=ctx.group_id,
        cipher_suite=ctx.cipher_suite,
        extensions=ctx.extensions,
        proposals=proposals,
        check_lifetime=check_lifetime,
        now=now,
        credential_policy=credential_policy,
    )
    tree = applied.tree
    path: UpdatePath | None = commit.path
    if applied.path_required and path is None:
        raise ValidationError("this commit requires a path")
    if external:
        assert path is not None  # sender_signature_key enforced it
        committer = tree.add_leaf(path.leaf_node)
    else:
        committer = sender.leaf_index
        if tree.leaf(committer) is None:
            raise ValidationError(f"committer leaf {committer} was removed by its own commit")
    if path is not None:
        old_leaf = None if external else tree.leaf(committer)
        new_leaf = path.leaf_node
        members = applied.members  # never holds an external joiner's leaf
        if old_leaf is not None:
            members.remove(committer, old_leaf)
        validate_leaf_node(
            cs,
            new_leaf,
            source=LeafNodeSource.COMMIT,
            group_id=ctx.group_id,
            leaf_index=committer,
            group_extensions=applied.extensions,
            members=members,
            credential_policy=(
                credential_policy
                if old_leaf is None
                or (old_leaf.credential, old_leaf.signature_key)
                != (new_leaf.credential, new_leaf.signature_key)
                else None
            ),
        )
        if old_leaf is not None and old_leaf.encryption_key == new_leaf.encryption_key:
            raise ValidationError("commit path must change the committer's encryption key")
        check_path_keys_fresh(tree, committer, path)
        tree.merge_update_path(committer, path)
        check_path_ciphertext_counts(tree, committer, path, [i for i, _ in applied.added])
    provisional = GroupContext(
        ctx.version,
        ctx.cipher_suite,
        ctx.group_id,
        ctx.epoch + 1,
        tree.tree_hash(),
        ctx.confirmed_transcript_hash,
        applied.extensions,
    )
    confirmed = confirmed_transcript_hash(cs, state.interim_transcript_hash, ac)
    new_context = replace(provisional, confirmed_transcript_hash=confirmed)
    new_state = PublicState(
        cs,
        new_context,
        tree,
        interim_transcript_hash(cs, confirmed, ac.auth.confirmation_tag),
    )
    return StagedCommit(new_state, applied, committer, path, provisional.encode(), proposals)
