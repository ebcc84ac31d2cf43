"""Building a Commit (RFC 9420 section 12.4.1), for members and external joiners alike.

``build_commit`` validates and applies the proposals on a copy of the tree, runs TreeKEM for
the path, signs the FramedContent, and derives the next epoch (transcript hashes, key
schedule, confirmation tag). Nothing of the caller's state is modified.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from ..commit import Commit
from ..constants import LeafNodeSource, SenderType, WireFormat
from ..crypto import CipherSuite
from ..errors import ValidationError
from ..framing import AuthenticatedContent, FramedContent, FramedContentAuthData, Sender
from ..group_context import GroupContext
from ..key_schedule import EpochSecrets
from ..leaf_node import LeafNode
from ..proposals import ProposalOrRef
from ..psk import PreSharedKeyID
from ..transcript import confirmed_transcript_hash, interim_transcript_hash
from ..treekem import PreparedPath, TreePrivateState, commit_leaf_node, encap
from .epoch_state import EpochState
from .proposal_rules import AppliedProposals, QueuedProposal, apply_proposals, check_proposal_list
from .state import PublicState
from .validation import CredentialPolicy, validate_leaf_node
from .welcome_open import resolve_psks


@dataclass(slots=True)
class BuiltCommit:
    ac: AuthenticatedContent  # signed and with its confirmation tag
    next: EpochState  # the epoch this commit starts
    applied: AppliedProposals
    prepared: PreparedPath | None  # our path secrets (for the Welcome), if there is a path
    psk_secret: bytes


def build_commit(
    cs: CipherSuite,
    public: PublicState,
    *,
    sender: Sender,
    proposals: list[QueuedProposal],
    proposal_refs: tuple[ProposalOrRef, ...],
    signature_private_key: bytes,
    init_secret: bytes,
    tree_keys: TreePrivateState,
    psk_lookup: Callable[[PreSharedKeyID], bytes | None] | None,
    force_path: bool = False,
    new_leaf: LeafNode | None = None,
    wire_format: WireFormat = WireFormat.PUBLIC_MESSAGE,
    authenticated_data: bytes = b"",
    now: int | None = None,
    credential_policy: CredentialPolicy | None = None,
) -> BuiltCommit:
    """``sender`` is ``Sender.member(i)`` or ``Sender.new_member_commit()``; an external
    committer passes its (unsigned) ``new_leaf``, which lands in the leftmost free leaf."""
    ctx = public.context
    external = sender.sender_type == SenderType.NEW_MEMBER_COMMIT
    check_proposal_list(
        proposals,
        committer_type=sender.sender_type,
        committer_index=sender.index,
        hash_len=cs.hash_len,
    )
    applied = apply_proposals(
        cs,
        public.tree,
        group_id=ctx.group_id,
        cipher_suite=ctx.cipher_suite,
        extensions=ctx.extensions,
        proposals=proposals,
        now=now,
        credential_policy=credential_policy,
    )
    tree = applied.tree
    if external:
        if new_leaf is None:
            raise ValidationError("an external commit needs the joiner's leaf node")
        leaf_index = tree.add_leaf(new_leaf)
    else:
        leaf_index = sender.leaf_index
    current = tree.leaf(leaf_index)
    if current is None:
        raise ValidationError("a commit cannot remove the committer")
    keys = tree_keys.copy()
    commit_secret = None
    path = None
    prepared = None
    if external or applied.path_required or force_path:

        def make_leaf(enc_key: bytes, parent_hash: bytes) -> LeafNode:
            return commit_leaf_node(
                cs, current, enc_key, parent_hash, signature_private_key, ctx.group_id, leaf_index
            )

        def make_context(tree_hash: bytes) -> bytes:
            # Path secrets are encrypted under the provisional GroupContext (12.4.1).
            return replace(
                ctx, epoch=ctx.epoch + 1, tree_hash=tree_hash, extensions=applied.extensions
            ).encode()

        result = encap(cs, tree, leaf_index, make_leaf, make_context, [i for i, _ in applied.added])
        path, commit_secret, prepared = result.update_path, result.commit_secret, result.prepared
        keys = result.private_state
        if external:
            validate_leaf_node(
                cs,
                path.leaf_node,
                source=LeafNodeSource.COMMIT,
                group_id=ctx.group_id,
                leaf_index=leaf_index,
                group_extensions=applied.extensions,
                members=tree.leaves(),
                replaces=leaf_index,
                credential_policy=credential_policy,
            )
    content = FramedContent(
        ctx.group_id, ctx.epoch, sender, authenticated_data, Commit(proposal_refs, path)
    )
    unsigned = AuthenticatedContent(wire_format, content, FramedContentAuthData(b""))
    signature = cs.sign_with_label(
        signature_private_key, b"FramedContentTBS", unsigned.tbs(public.context_bytes)
    )
    ac = replace(unsigned, auth=FramedContentAuthData(signature))
    confirmed = confirmed_transcript_hash(cs, public.interim_transcript_hash, ac)
    new_ctx = GroupContext(
        ctx.version,
        ctx.cipher_suite,
        ctx.group_id,
        ctx.epoch + 1,
        tree.tree_hash(),
        confirmed,
        applied.extensions,
    )
    new_ctx_bytes = new_ctx.encode()
    psk_secret = resolve_psks(cs, applied.psks, psk_lookup)
    secrets = EpochSecrets.from_init(cs, init_secret, commit_secret, psk_secret, new_ctx_bytes)
    tag = cs.mac(secrets.confirmation_key, confirmed)
    ac = replace(ac, auth=FramedContentAuthData(signature, tag))
    next_public = PublicState(
        cs, new_ctx, tree, interim_transcript_hash(cs, confirmed, tag), new_ctx_bytes
    )
    return BuiltCommit(
        ac,
        EpochState.start(next_public, secrets, keys, leaf_index),
        applied,
        prepared,
        psk_secret,
    )
