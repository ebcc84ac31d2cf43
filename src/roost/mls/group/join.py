"""Joining a group and helping others join (RFC 9420 sections 12.4.3.1-12.4.3.2).

Joiner side: ``epoch_from_welcome`` turns an opened Welcome into our first epoch, and
``external_commit`` builds an external commit from a GroupInfo. Committer side:
``sign_group_info`` and ``build_welcome``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import TypeVar

from ..constants import ExtensionType, LeafNodeSource, SenderType
from ..credential import Credential
from ..crypto import CipherSuite
from ..errors import CryptoError, ValidationError
from ..extension_types import ExternalPub
from ..extensions import Extension, find_extension
from ..framing import MLSMessage, Sender
from ..group_context import GroupContext
from ..group_info import GroupInfo
from ..key_package import KeyPackage
from ..key_schedule import (
    EpochSecrets,
    external_init_sender,
    external_pub,
    welcome_key_nonce,
    welcome_secret_from_joiner,
)
from ..leaf_node import Capabilities, LeafNode
from ..proposals import ExternalInit, Proposal, ProposalOrRef, Remove
from ..ratchet_tree import RatchetTree
from ..transcript import interim_transcript_hash
from ..treekem import PreparedPath, TreePrivateState
from ..update_path import HPKECiphertext
from ..welcome import EncryptedGroupSecrets, GroupSecrets, Welcome
from .commit_builder import BuiltCommit, build_commit
from .epoch_state import EpochState
from .proposal_rules import QueuedProposal
from .state import PublicState
from .validation import CredentialPolicy, validate_tree_leaves
from .welcome_open import OpenedWelcome, verify_group_info_signature

_Body = TypeVar("_Body", Welcome, GroupInfo)


def unwrap(value: _Body | MLSMessage | bytes, cls: type[_Body]) -> _Body:
    """``value`` as a ``cls`` body: accepts the struct, an MLSMessage or its bytes."""
    if isinstance(value, cls):
        return value
    msg = MLSMessage.decode(value) if isinstance(value, bytes) else value
    if not isinstance(msg, MLSMessage) or not isinstance(msg.body, cls):
        raise ValidationError(f"expected a {cls.__name__} message")
    return msg.body


def tree_from(
    cs: CipherSuite, extensions: Iterable[Extension], ratchet_tree: RatchetTree | bytes | None
) -> RatchetTree:
    """The tree given out of band, else the one in the ``ratchet_tree`` extension."""
    if isinstance(ratchet_tree, RatchetTree):
        return ratchet_tree.copy()
    if isinstance(ratchet_tree, bytes):
        return RatchetTree.from_bytes(cs, ratchet_tree)
    ext = find_extension(tuple(extensions), ExtensionType.RATCHET_TREE)
    if ext is None:
        raise ValidationError("no ratchet tree: GroupInfo lacks the extension and none given")
    return RatchetTree.from_bytes(cs, ext.extension_data)


def verify_public_tree(tree: RatchetTree, gc: GroupContext) -> None:
    """A received tree must hash to the GroupContext's tree_hash and be valid (12.4.3.1)."""
    if tree.tree_hash() != gc.tree_hash:
        raise ValidationError("ratchet tree does not match the GroupContext tree_hash")
    tree.verify(gc.group_id)
    validate_tree_leaves(tree, gc.extensions)


def verify_group_info(cs: CipherSuite, gi: GroupInfo, tree: RatchetTree) -> None:
    """Tree valid for the GroupContext, and signed by the member at ``signer``."""
    verify_public_tree(tree, gi.group_context)
    signer = tree.leaf(gi.signer)
    if signer is None:
        raise ValidationError(f"GroupInfo signer leaf {gi.signer} is blank")
    verify_group_info_signature(cs, gi, signer.signature_key)


def check_tree_policy(policy: CredentialPolicy | None, tree: RatchetTree, skip: int = -1) -> None:
    if policy is None:
        return
    for i, leaf in tree.leaves():
        if i == skip:
            continue
        try:
            ok = policy(leaf.credential, leaf.signature_key)
        except ValidationError:
            raise
        except Exception as e:  # application code: report, never crash
            raise ValidationError(f"leaf {i}: credential rejected by policy: {e}") from None
        if ok is False:
            raise ValidationError(f"leaf {i}: credential rejected by policy")


def epoch_from_welcome(
    cs: CipherSuite,
    opened: OpenedWelcome,
    key_package: KeyPackage,
    encryption_private_key: bytes,
    ratchet_tree: RatchetTree | bytes | None,
    policy: CredentialPolicy | None,
) -> EpochState:
    gi = opened.group_info
    gc = gi.group_context
    tree = tree_from(cs, gi.extensions, ratchet_tree)
    verify_group_info(cs, gi, tree)
    my_index = tree.find_leaf(key_package.leaf_node)
    if my_index is None:
        raise ValidationError("our KeyPackage leaf is not in the ratchet tree")
    check_tree_policy(policy, tree, skip=my_index)
    keys = TreePrivateState.for_leaf(cs, my_index, encryption_private_key)
    if keys.keys[2 * my_index][1] != key_package.leaf_node.encryption_key:
        raise ValidationError("encryption private key does not match the KeyPackage")
    if opened.group_secrets.path_secret is not None:
        keys.add_joiner_path(cs, tree, gi.signer, opened.group_secrets.path_secret)
    secrets = EpochSecrets.from_joiner(
        cs, opened.group_secrets.joiner_secret, opened.psk_secret, gc.encode()
    )
    if not cs.verify_mac(
        secrets.confirmation_key, gc.confirmed_transcript_hash, gi.confirmation_tag
    ):
        raise CryptoError("GroupInfo confirmation tag does not match the derived epoch")
    interim = interim_transcript_hash(cs, gc.confirmed_transcript_hash, gi.confirmation_tag)
    return EpochState.start(PublicState(cs, gc, tree, interim), secrets, keys, my_index)


def sign_group_info(
    cs: CipherSuite, e: EpochState, signature_private_key: bytes, *, with_tree: bool
) -> GroupInfo:
    """A GroupInfo for epoch ``e`` with external_pub (and the tree unless ``with_tree`` is
    false), signed by us."""
    exts = [ExternalPub(external_pub(cs, e.secrets.external_secret)).to_extension()]
    if with_tree:
        exts.append(Extension(ExtensionType.RATCHET_TREE, e.public.tree.to_bytes()))
    tag = cs.mac(e.secrets.confirmation_key, e.public.context.confirmed_transcript_hash)
    unsigned = GroupInfo(e.public.context, tuple(exts), tag, e.leaf_index, b"")
    sig = cs.sign_with_label(signature_private_key, b"GroupInfoTBS", unsigned.tbs())
    return replace(unsigned, signature=sig)


def build_welcome(
    cs: CipherSuite,
    built: BuiltCommit,
    group_info: GroupInfo,
) -> bytes:
    """The Welcome for the members ``built`` added: the GroupInfo encrypted under the welcome
    secret, and per new member its GroupSecrets (with the path secret of our lowest common
    ancestor, if we sent a path) encrypted to its init key."""
    joiner = built.next.secrets.joiner_secret
    key, nonce = welcome_key_nonce(cs, welcome_secret_from_joiner(cs, joiner, built.psk_secret))
    encrypted_group_info = cs.aead_seal(key, nonce, b"", group_info.encode())
    prepared: PreparedPath | None = built.prepared
    psks = tuple(built.applied.psks)
    entries = []
    for index, kp in built.applied.added:
        ps = prepared.path_secret_for(index) if prepared is not None else None
        secrets = GroupSecrets(joiner, ps[1] if ps else None, psks)
        kem_output, ct = cs.encrypt_with_label(
            kp.init_key, b"Welcome", encrypted_group_info, secrets.encode()
        )
        entries.append(
            EncryptedGroupSecrets(cs.key_package_ref(kp.encode()), HPKECiphertext(kem_output, ct))
        )
    return MLSMessage(Welcome(cs.suite_id, tuple(entries), encrypted_group_info)).encode()


def _external_pub(cs: CipherSuite, data: bytes) -> bytes:
    """The key of an ``external_pub`` extension (``opaque HPKEPublicKey<V>``).

    Interop: ts-mls 1.6.4 writes the bare key without its length prefix. A body exactly one
    KEM public key long is that bare form; the RFC form is always longer (length prefix).
    """
    if len(data) == cs.kem.n_pk:
        return data
    return ExternalPub.decode(data).external_pub


def external_commit(
    cs: CipherSuite,
    gi: GroupInfo,
    ratchet_tree: RatchetTree | bytes | None,
    credential: Credential,
    signature_private_key: bytes,
    capabilities: Capabilities,
    *,
    remove_prior: int | None,
    credential_policy: CredentialPolicy | None,
    authenticated_data: bytes,
) -> BuiltCommit:
    """Join by external commit (12.4.3.2): ExternalInit (+ optional Remove of our old
    leaf), our leaf at the leftmost free position, and a full path."""
    gc = gi.group_context
    tree = tree_from(cs, gi.extensions, ratchet_tree)
    verify_group_info(cs, gi, tree)
    check_tree_policy(credential_policy, tree)
    ext = find_extension(gi.extensions, ExtensionType.EXTERNAL_PUB)
    if ext is None:
        raise ValidationError("GroupInfo has no external_pub extension")
    kem_output, init_secret = external_init_sender(cs, _external_pub(cs, ext.extension_data))
    interim = interim_transcript_hash(cs, gc.confirmed_transcript_hash, gi.confirmation_tag)
    public = PublicState(cs, gc, tree, interim)
    proposals = [Proposal(ExternalInit(kem_output))]
    if remove_prior is not None:
        proposals.append(Proposal(Remove(remove_prior)))
    # The encryption key is a placeholder: TreeKEM gives the committed leaf a fresh one.
    new_leaf = LeafNode(
        cs.generate_hpke_key_pair()[1],
        cs.signature_public_key(signature_private_key),
        credential,
        capabilities,
        LeafNodeSource.COMMIT,
    )
    return build_commit(
        cs,
        public,
        sender=Sender.new_member_commit(),
        proposals=[QueuedProposal(p, SenderType.NEW_MEMBER_COMMIT, None) for p in proposals],
        proposal_refs=tuple(ProposalOrRef.by_value(p) for p in proposals),
        signature_private_key=signature_private_key,
        init_secret=init_secret,
        tree_keys=TreePrivateState(0),
        psk_lookup=None,
        new_leaf=new_leaf,
        authenticated_data=authenticated_data,
        credential_policy=credential_policy,
    )
