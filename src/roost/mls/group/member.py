"""``Group``: the member side of an MLS group (RFC 9420 sections 8-14).

A ``Group`` holds one epoch: the public state (GroupContext, ratchet tree, interim transcript
hash), the member's private tree keys, the epoch secrets and the secret tree. Every incoming
message is processed on copies and swapped in only when all checks passed, so a rejected
message leaves the group unchanged.

Handshake messages go out as PublicMessage by default (the homeserver must see them);
application messages are always PrivateMessage and always signature-checked.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, replace

from ..commit import Commit
from ..constants import (
    ContentType,
    ExtensionType,
    LeafNodeSource,
    ProposalType,
    PSKType,
    SenderType,
    WireFormat,
)
from ..credential import Credential
from ..crypto.ciphersuite import get_cipher_suite
from ..errors import CryptoError, ValidationError
from ..extension_types import ExternalPub
from ..extensions import Extension, find_extension
from ..framing import (
    AuthenticatedContent,
    FramedContent,
    FramedContentAuthData,
    MLSMessage,
    PrivateMessage,
    PublicMessage,
    Sender,
)
from ..group_context import GroupContext
from ..group_info import GroupInfo
from ..key_package import KeyPackage
from ..key_package_gen import KeyPackageBundle, default_capabilities, sign_leaf_node
from ..key_schedule import (
    EpochSecrets,
    external_init_receiver,
    external_init_sender,
    external_pub,
    joiner_secret,
    mls_exporter,
    welcome_key_nonce,
    welcome_secret_from_joiner,
)
from ..leaf_node import Capabilities, LeafNode, Lifetime
from ..proposals import (
    Add,
    ExternalInit,
    GroupContextExtensions,
    PreSharedKey,
    Proposal,
    ProposalOrRef,
    Remove,
    Update,
)
from ..psk import PreSharedKeyID
from ..ratchet_tree import RatchetTree
from ..secret_tree import SecretTree
from ..treekem import TreePrivateState, commit_leaf_node, decap, encap
from ..update_path import HPKECiphertext
from ..welcome import EncryptedGroupSecrets, GroupSecrets, Welcome
from . import private_message
from .proposal_rules import QueuedProposal, apply_proposals, check_proposal_list
from .state import (
    PublicState,
    check_content_header,
    confirmed_transcript_hash,
    interim_transcript_hash,
    queued_from_content,
    resolve_proposals,
    stage_commit,
    verify_content_signature,
)
from .validation import CredentialPolicy, validate_leaf_node, validate_tree_leaves
from .welcome_open import OpenedWelcome, open_welcome, resolve_psks, verify_group_info_signature

GROUP_STATE_MAGIC = b"RMLSG"
GROUP_STATE_VERSION = 1
RESUMPTION_PSKS_KEPT = 8  # past epochs whose resumption PSK stays available


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """The result of ``Group.process``.

    ``kind`` is "application", "proposal" or "commit"; ``data`` is the application data
    (application messages only); ``sender`` is the framing Sender.
    """

    kind: str
    sender: Sender
    data: bytes = b""
    authenticated_data: bytes = b""
    proposal: Proposal | None = None
    removed_self: bool = False
    added: tuple[int, ...] = ()  # commits: leaf indices of new members
    removed: tuple[int, ...] = ()  # commits: leaf indices removed
    epoch: int = 0  # the group's epoch after the message


@dataclass(frozen=True, slots=True)
class CommitOutput:
    """What ``Group.commit`` produces: send ``commit`` (+ ``group_info``) to the DS, and
    ``welcome`` to the new members; call ``merge_pending_commit`` once the DS accepted."""

    commit: bytes  # MLSMessage
    welcome: bytes | None  # MLSMessage (Welcome) when members were added
    group_info: bytes  # MLSMessage (GroupInfo) of the new epoch


@dataclass(slots=True)
class _Epoch:
    """Everything that changes together at a commit: swapped in one assignment."""

    public: PublicState
    secrets: EpochSecrets
    tree_keys: TreePrivateState
    secret_tree: SecretTree
    leaf_index: int


def _members_tree_leaf(tree: RatchetTree, index: int) -> LeafNode:
    leaf = tree.leaf(index)
    if leaf is None:
        raise ValidationError(f"leaf {index} is blank")
    return leaf


class Group:
    """A member's view of one MLS group. Create with ``create``, ``join_from_welcome``,
    ``join_external`` or ``from_bytes``."""

    def __init__(
        self,
        epoch: _Epoch,
        signature_private_key: bytes,
        *,
        credential_policy: CredentialPolicy | None = None,
        external_psks: dict[bytes, bytes] | None = None,
        resumption_psks: dict[int, bytes] | None = None,
        handshake_wire_format: WireFormat = WireFormat.PUBLIC_MESSAGE,
    ) -> None:
        self._epoch = epoch
        self._sig_priv = signature_private_key
        self.credential_policy = credential_policy
        self.external_psks: dict[bytes, bytes] = dict(external_psks or {})
        self._resumption: dict[int, bytes] = dict(resumption_psks or {})
        self._proposals: dict[bytes, QueuedProposal] = {}
        self._pending: tuple[_Epoch, bytes] | None = None  # (next epoch, our commit bytes)
        self.handshake_wire_format = handshake_wire_format
        # Private keys of our Update proposals, by public key, until one is committed.
        self._update_keys: dict[bytes, bytes] = {}
        self.active = True
        self._remember_resumption()

    # --- read-only views ------------------------------------------------------------------

    @property
    def cs(self):
        return self._epoch.public.cs

    @property
    def epoch(self) -> int:
        return self._epoch.public.epoch

    @property
    def group_id(self) -> bytes:
        return self._epoch.public.group_id

    @property
    def group_context(self) -> GroupContext:
        return self._epoch.public.context

    @property
    def tree(self) -> RatchetTree:
        return self._epoch.public.tree

    @property
    def public_state(self) -> PublicState:
        return self._epoch.public

    @property
    def leaf_index(self) -> int:
        return self._epoch.leaf_index

    @property
    def epoch_authenticator(self) -> bytes:
        return self._epoch.secrets.epoch_authenticator

    @property
    def interim_transcript_hash(self) -> bytes:
        return self._epoch.public.interim_transcript_hash

    def roster(self) -> list[tuple[int, Credential, bytes]]:
        return self._epoch.public.roster()  # type: ignore[return-value]

    def export_secret(self, label: bytes, context: bytes, length: int) -> bytes:
        return mls_exporter(self.cs, self._epoch.secrets.exporter_secret, label, context, length)

    def pending_proposal_refs(self) -> list[bytes]:
        return list(self._proposals)

    def _remember_resumption(self) -> None:
        self._resumption[self.epoch] = self._epoch.secrets.resumption_psk
        while len(self._resumption) > RESUMPTION_PSKS_KEPT:
            del self._resumption[min(self._resumption)]

    def _psk_lookup(self, pid: PreSharedKeyID) -> bytes | None:
        if pid.psktype == PSKType.EXTERNAL:
            return self.external_psks.get(pid.psk_id)
        if pid.psk_group_id != self.group_id:
            return None
        return self._resumption.get(pid.psk_epoch)

    # --- creation -------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        cipher_suite: int,
        credential: Credential,
        signature_private_key: bytes,
        *,
        group_id: bytes | None = None,
        extensions: Iterable[Extension] = (),
        capabilities: Capabilities | None = None,
        credential_policy: CredentialPolicy | None = None,
        lifetime: Lifetime | None = None,
    ) -> Group:
        """A new one-member group at epoch 0 (section 11)."""
        cs = get_cipher_suite(cipher_suite)
        gid = os.urandom(16) if group_id is None else group_id
        enc_priv, enc_pub = cs.generate_hpke_key_pair()
        leaf = sign_leaf_node(
            cs,
            LeafNode(
                enc_pub,
                cs.signature_public_key(signature_private_key),
                credential,
                capabilities or default_capabilities(cipher_suite),
                LeafNodeSource.KEY_PACKAGE,
                lifetime or Lifetime(0, (1 << 64) - 1),
            ),
            signature_private_key,
        )
        exts = tuple(extensions)
        validate_leaf_node(
            cs,
            leaf,
            source=LeafNodeSource.KEY_PACKAGE,
            group_id=gid,
            leaf_index=0,
            group_extensions=exts,
            members=(),
            credential_policy=credential_policy,
        )
        tree = RatchetTree.one_member(cs, leaf)
        context = GroupContext(1, cipher_suite, gid, 0, tree.tree_hash(), b"", exts)
        secrets = EpochSecrets.from_init(cs, os.urandom(cs.hash_len), None, None, context)
        tag = cs.mac(secrets.confirmation_key, b"")
        public = PublicState(cs, context, tree, interim_transcript_hash(cs, b"", tag))
        epoch = _Epoch(
            public,
            secrets,
            TreePrivateState.for_leaf(cs, 0, enc_priv),
            SecretTree(cs, secrets.encryption_secret, 1),
            0,
        )
        return cls(epoch, signature_private_key, credential_policy=credential_policy)

    @classmethod
    def join_from_welcome(
        cls,
        welcome: bytes | MLSMessage | Welcome,
        key_package: KeyPackageBundle | tuple[KeyPackage, bytes, bytes, bytes],
        ratchet_tree: RatchetTree | bytes | None = None,
        *,
        external_psks: dict[bytes, bytes] | None = None,
        resumption_psks: dict[int, bytes] | None = None,
        credential_policy: CredentialPolicy | None = None,
    ) -> Group:
        """Join from a Welcome (section 12.4.3.1). ``key_package`` is the bundle from
        ``generate_key_package`` or (KeyPackage, init_priv, encryption_priv, signature_priv).
        ``ratchet_tree`` is needed when the GroupInfo carries no ratchet_tree extension."""
        w = _unwrap(welcome, Welcome)
        if isinstance(key_package, KeyPackageBundle):
            kp, init_priv = key_package.key_package, key_package.init_private_key
            enc_priv, sig_priv = (
                key_package.encryption_private_key,
                key_package.signature_private_key,
            )
        else:
            kp, init_priv, enc_priv, sig_priv = key_package
        cs = get_cipher_suite(w.cipher_suite)
        ext_psks = dict(external_psks or {})

        def lookup(pid: PreSharedKeyID) -> bytes | None:
            if pid.psktype == PSKType.EXTERNAL:
                return ext_psks.get(pid.psk_id)
            return (resumption_psks or {}).get(pid.psk_epoch)

        opened = open_welcome(cs, w, kp, init_priv, lookup)
        return cls._from_opened_welcome(
            cs, opened, kp, enc_priv, sig_priv, ratchet_tree, ext_psks, credential_policy
        )

    @classmethod
    def _from_opened_welcome(
        cls, cs, opened: OpenedWelcome, kp, enc_priv, sig_priv, ratchet_tree, ext_psks, policy
    ) -> Group:
        gi = opened.group_info
        gc = gi.group_context
        tree = _tree_from(cs, gi.extensions, ratchet_tree)
        verify_public_tree(cs, tree, gc)
        signer = tree.leaf(gi.signer)
        if signer is None:
            raise ValidationError(f"GroupInfo signer leaf {gi.signer} is blank")
        verify_group_info_signature(cs, gi, signer.signature_key)
        my_index = tree.find_leaf(kp.leaf_node)
        if my_index is None:
            raise ValidationError("our KeyPackage leaf is not in the ratchet tree")
        if policy is not None:
            for i, leaf in tree.leaves():
                if i != my_index:
                    validate_leaf_policy(policy, leaf, i)
        keys = TreePrivateState.for_leaf(cs, my_index, enc_priv)
        if keys.keys[2 * my_index][1] != kp.leaf_node.encryption_key:
            raise ValidationError("encryption private key does not match the KeyPackage")
        ps = opened.group_secrets.path_secret
        if ps is not None:
            keys.add_joiner_path(cs, tree, gi.signer, ps)
        secrets = EpochSecrets.from_joiner(
            cs, opened.group_secrets.joiner_secret, opened.psk_secret, gc.encode()
        )
        if not cs.verify_mac(
            secrets.confirmation_key, gc.confirmed_transcript_hash, gi.confirmation_tag
        ):
            raise CryptoError("GroupInfo confirmation tag does not match the derived epoch")
        public = PublicState(
            cs,
            gc,
            tree,
            interim_transcript_hash(cs, gc.confirmed_transcript_hash, gi.confirmation_tag),
        )
        epoch = _Epoch(
            public,
            secrets,
            keys,
            SecretTree(cs, secrets.encryption_secret, tree.leaf_count),
            my_index,
        )
        return cls(epoch, sig_priv, credential_policy=policy, external_psks=ext_psks)

    # --- proposals --------------------------------------------------------------------------

    def _frame(
        self, body, *, authenticated_data: bytes = b"", wire_format: WireFormat | None = None
    ) -> tuple[AuthenticatedContent, WireFormat]:
        wf = wire_format or self.handshake_wire_format
        content = FramedContent(
            self.group_id, self.epoch, Sender.member(self.leaf_index), authenticated_data, body
        )
        unsigned = AuthenticatedContent(wf, content, FramedContentAuthData(b""))
        sig = self.cs.sign_with_label(
            self._sig_priv, b"FramedContentTBS", unsigned.tbs(self._epoch.public.context_bytes)
        )
        return replace(unsigned, auth=FramedContentAuthData(sig)), wf

    def _send(self, ac: AuthenticatedContent, epoch: _Epoch | None = None) -> bytes:
        e = epoch or self._epoch
        if ac.wire_format == WireFormat.PUBLIC_MESSAGE:
            tag = self.cs.mac(e.secrets.membership_key, ac.tbm(e.public.context_bytes))
            return MLSMessage(PublicMessage.from_authenticated(ac, tag)).encode()
        pm = private_message.encrypt(self.cs, e.secret_tree, e.secrets.sender_data_secret, ac)
        return MLSMessage(pm).encode()

    def _propose(self, body, authenticated_data: bytes = b"") -> bytes:
        ac, _ = self._frame(Proposal(body), authenticated_data=authenticated_data)
        q = queued_from_content(self.cs, ac)
        self._proposals[q.ref] = q  # type: ignore[index]
        return self._send(ac)

    def propose_add(self, key_package: KeyPackage, authenticated_data: bytes = b"") -> bytes:
        self._check_active()
        return self._propose(Add(key_package), authenticated_data)

    def propose_remove(self, leaf_index: int, authenticated_data: bytes = b"") -> bytes:
        self._check_active()
        _members_tree_leaf(self.tree, leaf_index)
        return self._propose(Remove(leaf_index), authenticated_data)

    def propose_update(self, authenticated_data: bytes = b"", **leaf_changes) -> bytes:
        """An Update proposal with a fresh encryption key (section 12.1.2)."""
        self._check_active()
        cs = self.cs
        enc_priv, enc_pub = cs.generate_hpke_key_pair()
        current = _members_tree_leaf(self.tree, self.leaf_index)
        leaf = sign_leaf_node(
            cs,
            replace(
                current,
                encryption_key=enc_pub,
                leaf_node_source=LeafNodeSource.UPDATE,
                lifetime=None,
                parent_hash=b"",
                signature=b"",
                **leaf_changes,
            ),
            self._sig_priv,
            self.group_id,
            self.leaf_index,
        )
        # Keep the new private key until the Update is committed (by someone else).
        self._update_keys[enc_pub] = enc_priv
        return self._propose(Update(leaf), authenticated_data)

    def propose_psk(self, psk_id: PreSharedKeyID, authenticated_data: bytes = b"") -> bytes:
        self._check_active()
        return self._propose(PreSharedKey(psk_id), authenticated_data)

    def propose_group_context_extensions(
        self, extensions: Iterable[Extension], authenticated_data: bytes = b""
    ) -> bytes:
        self._check_active()
        return self._propose(GroupContextExtensions(tuple(extensions)), authenticated_data)

    # --- commits ----------------------------------------------------------------------------

    def commit(
        self,
        *,
        add: Iterable[KeyPackage] = (),
        remove: Iterable[int] = (),
        psks: Iterable[PreSharedKeyID] = (),
        group_context_extensions: Iterable[Extension] | None = None,
        include_pending: bool = True,
        force_path: bool = False,
        ratchet_tree_in_welcome: bool = True,
        authenticated_data: bytes = b"",
        now: int | None = None,
    ) -> CommitOutput:
        """Commit the given proposals by value plus, with ``include_pending``, every proposal
        received this epoch by reference. A path (self-update) is added when required or
        when ``force_path``. The result is pending until ``merge_pending_commit``."""
        self._check_active()
        me = Sender.member(self.leaf_index)
        by_value: list[Proposal] = []
        if group_context_extensions is not None:
            by_value.append(Proposal(GroupContextExtensions(tuple(group_context_extensions))))
        by_value += [Proposal(Remove(i)) for i in remove]
        by_value += [Proposal(Add(kp)) for kp in add]
        by_value += [Proposal(PreSharedKey(p)) for p in psks]
        queued = [QueuedProposal(p, SenderType.MEMBER, self.leaf_index) for p in by_value]
        refs: list[bytes] = []
        if include_pending:
            for ref, q in self._proposals.items():
                own = q.sender_type == SenderType.MEMBER and q.sender_index == self.leaf_index
                if own and q.proposal.proposal_type == ProposalType.UPDATE:
                    continue  # our own Update cannot be committed by us (12.2)
                refs.append(ref)
                queued.append(q)
        return self._build_commit(
            queued,
            tuple(ProposalOrRef.by_value(p) for p in by_value)
            + tuple(ProposalOrRef.by_reference(r) for r in refs),
            force_path=force_path,
            ratchet_tree_in_welcome=ratchet_tree_in_welcome,
            authenticated_data=authenticated_data,
            now=now,
            sender=me,
        )

    def _build_commit(
        self,
        queued: list[QueuedProposal],
        proposal_refs: tuple[ProposalOrRef, ...],
        *,
        force_path: bool,
        ratchet_tree_in_welcome: bool,
        authenticated_data: bytes,
        now: int | None,
        sender: Sender,
    ) -> CommitOutput:
        cs = self.cs
        cur = self._epoch
        ctx = cur.public.context
        # Order the by-reference proposals as the receivers will see them.
        check_proposal_list(
            queued,
            committer_type=SenderType.MEMBER,
            committer_index=self.leaf_index,
            hash_len=cs.hash_len,
        )
        applied = apply_proposals(
            cs,
            cur.public.tree,
            group_id=ctx.group_id,
            cipher_suite=ctx.cipher_suite,
            extensions=ctx.extensions,
            proposals=queued,
            now=now,
            credential_policy=self.credential_policy,
        )
        tree = applied.tree
        if applied.reinit is not None:
            raise ValidationError("committing a ReInit is not supported")
        if tree.leaf(self.leaf_index) is None:
            raise ValidationError("a commit cannot remove the committer")
        added = [i for i, _ in applied.added]
        keys = cur.tree_keys.copy()
        commit_secret = None
        path = None
        prepared = None
        if applied.path_required or force_path:
            current_leaf = _members_tree_leaf(tree, self.leaf_index)

            def make_leaf(enc_key: bytes, parent_hash: bytes) -> LeafNode:
                return commit_leaf_node(
                    cs,
                    current_leaf,
                    enc_key,
                    parent_hash,
                    self._sig_priv,
                    ctx.group_id,
                    self.leaf_index,
                )

            def make_context(tree_hash: bytes) -> bytes:
                return GroupContext(
                    ctx.version,
                    ctx.cipher_suite,
                    ctx.group_id,
                    ctx.epoch + 1,
                    tree_hash,
                    ctx.confirmed_transcript_hash,
                    applied.extensions,
                ).encode()

            result = encap(cs, tree, self.leaf_index, make_leaf, make_context, added)
            path, commit_secret, prepared = (
                result.update_path,
                result.commit_secret,
                result.prepared,
            )
            keys = result.private_state
        _drop_outside(keys, tree)
        keys.prune(tree)
        commit = Commit(proposal_refs, path)
        ac, wf = self._frame(commit, authenticated_data=authenticated_data)
        confirmed = confirmed_transcript_hash(cs, cur.public.interim_transcript_hash, ac)
        new_ctx = GroupContext(
            ctx.version,
            ctx.cipher_suite,
            ctx.group_id,
            ctx.epoch + 1,
            tree.tree_hash(),
            confirmed,
            applied.extensions,
        )
        psk_secret = resolve_psks(cs, applied.psks, self._psk_lookup)
        new_ctx_bytes = new_ctx.encode()
        joiner = joiner_secret(cs, cur.secrets.init_secret, commit_secret, new_ctx_bytes)
        secrets = EpochSecrets.from_joiner(cs, joiner, psk_secret, new_ctx_bytes)
        tag = cs.mac(secrets.confirmation_key, confirmed)
        ac = replace(ac, auth=FramedContentAuthData(ac.auth.signature, tag))
        commit_bytes = self._send(ac)
        public = PublicState(
            cs, new_ctx, tree, interim_transcript_hash(cs, confirmed, tag), new_ctx_bytes
        )
        nxt = _Epoch(
            public,
            secrets,
            keys,
            SecretTree(cs, secrets.encryption_secret, tree.leaf_count),
            self.leaf_index,
        )
        group_info = self._sign_group_info(nxt, with_tree=ratchet_tree_in_welcome)
        welcome = None
        if applied.added:
            welcome = self._welcome(
                nxt, group_info, applied.added, applied.psks, prepared, psk_secret
            )
        self._pending = (nxt, commit_bytes)
        return CommitOutput(commit_bytes, welcome, MLSMessage(group_info).encode())

    def _welcome(
        self, nxt: _Epoch, group_info: GroupInfo, added, psks, prepared, psk_secret
    ) -> bytes:
        cs = self.cs
        key, nonce = welcome_key_nonce(
            cs, welcome_secret_from_joiner(cs, nxt.secrets.joiner_secret, psk_secret)
        )
        encrypted_group_info = cs.aead_seal(key, nonce, b"", group_info.encode())
        entries = []
        for index, kp in added:
            ps = prepared.path_secret_for(index) if prepared is not None else None
            gs = GroupSecrets(nxt.secrets.joiner_secret, ps[1] if ps else None, tuple(psks))
            kem_output, ct = cs.encrypt_with_label(
                kp.init_key, b"Welcome", encrypted_group_info, gs.encode()
            )
            entries.append(
                EncryptedGroupSecrets(
                    cs.key_package_ref(kp.encode()), HPKECiphertext(kem_output, ct)
                )
            )
        return MLSMessage(Welcome(cs.suite_id, tuple(entries), encrypted_group_info)).encode()

    def _sign_group_info(self, e: _Epoch, *, with_tree: bool) -> GroupInfo:
        cs = self.cs
        exts = [ExternalPub(external_pub(cs, e.secrets.external_secret)).to_extension()]
        if with_tree:
            exts.append(Extension(ExtensionType.RATCHET_TREE, e.public.tree.to_bytes()))
        tag = cs.mac(e.secrets.confirmation_key, e.public.context.confirmed_transcript_hash)
        unsigned = GroupInfo(e.public.context, tuple(exts), tag, e.leaf_index, b"")
        sig = cs.sign_with_label(self._sig_priv, b"GroupInfoTBS", unsigned.tbs())
        return replace(unsigned, signature=sig)

    def group_info(self, *, with_tree: bool = True) -> bytes:
        """A signed GroupInfo of the current epoch (MLSMessage), with external_pub so that
        others can join by external commit, and the ratchet tree unless ``with_tree=False``."""
        return MLSMessage(self._sign_group_info(self._epoch, with_tree=with_tree)).encode()

    def merge_pending_commit(self) -> None:
        if self._pending is None:
            raise ValidationError("no pending commit")
        self._advance(self._pending[0])

    def clear_pending_commit(self) -> None:
        self._pending = None

    def _advance(self, nxt: _Epoch) -> None:
        self._epoch = nxt
        self._proposals = {}
        self._pending = None
        self._update_keys = {}
        self._remember_resumption()

    # --- external join -----------------------------------------------------------------------

    @classmethod
    def join_external(
        cls,
        group_info: bytes | MLSMessage | GroupInfo,
        ratchet_tree: RatchetTree | bytes | None,
        credential: Credential,
        signature_private_key: bytes,
        *,
        remove_prior: int | None = None,
        capabilities: Capabilities | None = None,
        credential_policy: CredentialPolicy | None = None,
        authenticated_data: bytes = b"",
    ) -> tuple[Group, bytes]:
        """Join by external commit (section 12.4.3.2). Returns the group (already at the new
        epoch) and the commit (MLSMessage/PublicMessage) to submit to the DS."""
        gi = _unwrap(group_info, GroupInfo)
        gc = gi.group_context
        cs = get_cipher_suite(gc.cipher_suite)
        tree = _tree_from(cs, gi.extensions, ratchet_tree)
        verify_public_tree(cs, tree, gc)
        signer = tree.leaf(gi.signer)
        if signer is None:
            raise ValidationError(f"GroupInfo signer leaf {gi.signer} is blank")
        verify_group_info_signature(cs, gi, signer.signature_key)
        if credential_policy is not None:
            for i, leaf in tree.leaves():
                validate_leaf_policy(credential_policy, leaf, i)
        ext = find_extension(gi.extensions, ExtensionType.EXTERNAL_PUB)
        if ext is None:
            raise ValidationError("GroupInfo has no external_pub extension")
        ext_pub = ExternalPub.from_extension(ext).external_pub
        kem_output, init_secret = external_init_sender(cs, ext_pub)
        public = PublicState(
            cs,
            gc,
            tree,
            interim_transcript_hash(cs, gc.confirmed_transcript_hash, gi.confirmation_tag),
        )
        proposals = [Proposal(ExternalInit(kem_output))]
        if remove_prior is not None:
            proposals.append(Proposal(Remove(remove_prior)))
        queued = [QueuedProposal(p, SenderType.NEW_MEMBER_COMMIT, None) for p in proposals]
        check_proposal_list(
            queued,
            committer_type=SenderType.NEW_MEMBER_COMMIT,
            committer_index=None,
            hash_len=cs.hash_len,
        )
        applied = apply_proposals(
            cs,
            tree,
            group_id=gc.group_id,
            cipher_suite=gc.cipher_suite,
            extensions=gc.extensions,
            proposals=queued,
            credential_policy=credential_policy,
        )
        new_tree = applied.tree
        enc_priv, enc_pub = cs.generate_hpke_key_pair()
        sig_pub = cs.signature_public_key(signature_private_key)
        caps = capabilities or default_capabilities(gc.cipher_suite)
        placeholder = LeafNode(
            enc_pub, sig_pub, credential, caps, LeafNodeSource.COMMIT, None, b"", (), b""
        )
        my_index = new_tree.add_leaf(placeholder)

        def make_leaf(key: bytes, parent_hash: bytes) -> LeafNode:
            return commit_leaf_node(
                cs, placeholder, key, parent_hash, signature_private_key, gc.group_id, my_index
            )

        def make_context(tree_hash: bytes) -> bytes:
            return GroupContext(
                gc.version,
                gc.cipher_suite,
                gc.group_id,
                gc.epoch + 1,
                tree_hash,
                gc.confirmed_transcript_hash,
                applied.extensions,
            ).encode()

        result = encap(cs, new_tree, my_index, make_leaf, make_context, ())
        validate_leaf_node(
            cs,
            new_tree.leaf(my_index),
            source=LeafNodeSource.COMMIT,
            group_id=gc.group_id,
            leaf_index=my_index,
            group_extensions=applied.extensions,
            members=new_tree.leaves(),
            replaces=my_index,
            credential_policy=credential_policy,
        )
        content = FramedContent(
            gc.group_id,
            gc.epoch,
            Sender.new_member_commit(),
            authenticated_data,
            Commit(tuple(ProposalOrRef.by_value(p) for p in proposals), result.update_path),
        )
        unsigned = AuthenticatedContent(
            WireFormat.PUBLIC_MESSAGE, content, FramedContentAuthData(b"")
        )
        sig = cs.sign_with_label(
            signature_private_key, b"FramedContentTBS", unsigned.tbs(public.context_bytes)
        )
        ac = replace(unsigned, auth=FramedContentAuthData(sig))
        confirmed = confirmed_transcript_hash(cs, public.interim_transcript_hash, ac)
        new_ctx = GroupContext(
            gc.version,
            gc.cipher_suite,
            gc.group_id,
            gc.epoch + 1,
            new_tree.tree_hash(),
            confirmed,
            applied.extensions,
        )
        new_ctx_bytes = new_ctx.encode()
        psk_secret = resolve_psks(cs, applied.psks, None)
        secrets = EpochSecrets.from_init(
            cs, init_secret, result.commit_secret, psk_secret, new_ctx_bytes
        )
        tag = cs.mac(secrets.confirmation_key, confirmed)
        ac = replace(ac, auth=FramedContentAuthData(sig, tag))
        commit_bytes = MLSMessage(PublicMessage.from_authenticated(ac, None)).encode()
        keys = result.private_state
        keys.prune(new_tree)
        epoch = _Epoch(
            PublicState(
                cs, new_ctx, new_tree, interim_transcript_hash(cs, confirmed, tag), new_ctx_bytes
            ),
            secrets,
            keys,
            SecretTree(cs, secrets.encryption_secret, new_tree.leaf_count),
            my_index,
        )
        return cls(epoch, signature_private_key, credential_policy=credential_policy), commit_bytes

    # --- application messages ---------------------------------------------------------------

    def encrypt(self, data: bytes, authenticated_data: bytes = b"", padding: int = 0) -> bytes:
        """An application message (PrivateMessage, signed by us)."""
        self._check_active()
        ac, _ = self._frame(
            data, authenticated_data=authenticated_data, wire_format=WireFormat.PRIVATE_MESSAGE
        )
        e = self._epoch
        pm = private_message.encrypt(
            self.cs, e.secret_tree, e.secrets.sender_data_secret, ac, padding
        )
        return MLSMessage(pm).encode()

    # --- incoming messages ----------------------------------------------------------------------

    def process(self, message: bytes | MLSMessage) -> ReceivedMessage:
        """Process a PublicMessage or PrivateMessage of this group. Raises DecodeError /
        ValidationError / CryptoError and leaves the group unchanged on any failure."""
        self._check_active()
        if (
            self._pending is not None
            and (message if isinstance(message, bytes) else message.encode()) == self._pending[1]
        ):
            # The DS echoed our own commit: it was accepted, so move to the new epoch.
            self.merge_pending_commit()
            return ReceivedMessage("commit", Sender.member(self.leaf_index), epoch=self.epoch)
        msg = MLSMessage.decode(message) if isinstance(message, bytes) else message
        body = msg.body
        e = self._epoch
        if isinstance(body, PublicMessage):
            ac = body.authenticated_content()
            check_content_header(e.public, ac.content)
            if ac.content.content_type == ContentType.APPLICATION:
                raise ValidationError("application data must be sent as PrivateMessage")
            verify_content_signature(e.public, ac)
            if ac.content.sender.sender_type == SenderType.MEMBER and (
                body.membership_tag is None
                or not self.cs.verify_mac(
                    e.secrets.membership_key, ac.tbm(e.public.context_bytes), body.membership_tag
                )
            ):
                raise CryptoError("invalid membership tag")
        elif isinstance(body, PrivateMessage):
            if body.group_id != self.group_id or body.epoch != self.epoch:
                raise ValidationError(
                    f"PrivateMessage for epoch {body.epoch}, group is at {self.epoch}"
                )
            # Decrypt on a copy of the secret tree state? The ratchet only advances for keys
            # that decrypt, so a forged message cannot change it.
            ac = private_message.decrypt(self.cs, e.secret_tree, e.secrets.sender_data_secret, body)
            if e.public.tree.leaf(ac.content.sender.index) is None:
                raise ValidationError(f"PrivateMessage from blank leaf {ac.content.sender.index}")
            verify_content_signature(e.public, ac)
        else:
            raise ValidationError(f"cannot process a {msg.wire_format.name} here")
        ctype = ac.content.content_type
        if ctype == ContentType.APPLICATION:
            return ReceivedMessage(
                "application",
                ac.content.sender,
                ac.content.content,  # type: ignore[arg-type]
                ac.content.authenticated_data,
            )
        if ctype == ContentType.PROPOSAL:
            return self._receive_proposal(ac)
        return self._receive_commit(ac)

    def _receive_proposal(self, ac: AuthenticatedContent) -> ReceivedMessage:
        sender = ac.content.sender
        if sender.sender_type == SenderType.MEMBER and sender.index == self.leaf_index:
            raise ValidationError("cannot process our own proposal")
        q = queued_from_content(self.cs, ac)
        prop = q.proposal
        if prop.proposal_type == ProposalType.UPDATE and sender.sender_type != SenderType.MEMBER:
            raise ValidationError("Update proposal from a non-member")
        self._proposals[q.ref] = q  # type: ignore[index]
        return ReceivedMessage("proposal", sender, b"", ac.content.authenticated_data, prop)

    def _receive_commit(self, ac: AuthenticatedContent) -> ReceivedMessage:
        cs = self.cs
        cur = self._epoch
        sender = ac.content.sender
        if sender.sender_type == SenderType.MEMBER and sender.index == self.leaf_index:
            raise ValidationError("cannot process our own commit; use merge_pending_commit")
        proposals = resolve_proposals(ac.content.content, sender, self._proposals)
        staged = stage_commit(cur.public, ac, proposals, credential_policy=self.credential_policy)
        applied = staged.applied
        new_public = staged.state
        if self.leaf_index in applied.removed:
            self.active = False
            self._pending = None
            return ReceivedMessage(
                "commit",
                sender,
                removed_self=True,
                added=tuple(i for i, _ in applied.added),
                removed=tuple(applied.removed),
                epoch=new_public.epoch,
            )
        keys = cur.tree_keys.copy()
        _drop_outside(keys, new_public.tree)  # the tree may have shrunk (truncation)
        # An Update we proposed that got committed: install its private key.
        for idx in applied.updated:
            if idx == self.leaf_index:
                leaf = new_public.tree.leaf(idx)
                priv = self._update_keys.get(leaf.encryption_key)
                if priv is None:
                    raise ValidationError("committed Update for our leaf that we did not send")
                keys.keys[2 * idx] = (priv, leaf.encryption_key)
        commit_secret = None
        if staged.path is not None:
            result = decap(
                cs,
                new_public.tree,
                keys,
                staged.committer,
                staged.path,
                staged.provisional_context_bytes,
                [i for i, _ in applied.added],
            )
            commit_secret, keys = result.commit_secret, result.private_state
        _drop_outside(keys, new_public.tree)
        keys.prune(new_public.tree)
        if applied.external_init is not None:
            init_secret = external_init_receiver(
                cs, cur.secrets.external_secret, applied.external_init.kem_output
            )
        else:
            init_secret = cur.secrets.init_secret
        psk_secret = resolve_psks(cs, applied.psks, self._psk_lookup)
        secrets = EpochSecrets.from_init(
            cs, init_secret, commit_secret, psk_secret, new_public.context_bytes
        )
        if not cs.verify_mac(
            secrets.confirmation_key,
            new_public.context.confirmed_transcript_hash,
            ac.auth.confirmation_tag,
        ):
            raise CryptoError("confirmation tag does not match")
        self._advance(
            _Epoch(
                new_public,
                secrets,
                keys,
                SecretTree(cs, secrets.encryption_secret, new_public.tree.leaf_count),
                self.leaf_index,
            )
        )
        return ReceivedMessage(
            "commit",
            sender,
            authenticated_data=ac.content.authenticated_data,
            added=tuple(i for i, _ in applied.added),
            removed=tuple(applied.removed),
            epoch=self.epoch,
        )

    def _check_active(self) -> None:
        if not self.active:
            raise ValidationError("we were removed from this group")

    # --- persistence ----------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The whole member state in a strict, versioned binary form (contains secrets)."""
        from .persist import encode_group

        return encode_group(self)

    @classmethod
    def from_bytes(cls, data: bytes, *, credential_policy: CredentialPolicy | None = None) -> Group:
        from .persist import decode_group

        return decode_group(cls, data, credential_policy)


def _drop_outside(keys: TreePrivateState, tree: RatchetTree) -> None:
    width = tree.node_width
    for x in [x for x in keys.keys if x >= width]:
        del keys.keys[x]
        keys.path_secrets.pop(x, None)


def validate_leaf_policy(policy: CredentialPolicy, leaf: LeafNode, index: int) -> None:
    try:
        ok = policy(leaf.credential, leaf.signature_key)
    except ValidationError:
        raise
    except Exception as e:
        raise ValidationError(f"leaf {index}: credential rejected by policy: {e}") from None
    if ok is False:
        raise ValidationError(f"leaf {index}: credential rejected by policy")


def _unwrap(value, cls):
    if isinstance(value, cls):
        return value
    msg = MLSMessage.decode(value) if isinstance(value, bytes) else value
    if not isinstance(msg, MLSMessage) or not isinstance(msg.body, cls):
        raise ValidationError(f"expected a {cls.__name__} message")
    return msg.body


def _tree_from(cs, extensions, ratchet_tree) -> RatchetTree:
    if isinstance(ratchet_tree, RatchetTree):
        return ratchet_tree.copy()
    if isinstance(ratchet_tree, bytes):
        return RatchetTree.from_bytes(cs, ratchet_tree)
    ext = find_extension(tuple(extensions), ExtensionType.RATCHET_TREE)
    if ext is None:
        raise ValidationError("no ratchet tree: GroupInfo lacks the extension and none given")
    return RatchetTree.from_bytes(cs, ext.extension_data)


def verify_public_tree(cs, tree: RatchetTree, gc: GroupContext) -> None:
    """A received tree must hash to the GroupContext's tree_hash and be valid (12.4.3.1)."""
    if tree.tree_hash() != gc.tree_hash:
        raise ValidationError("ratchet tree does not match the GroupContext tree_hash")
    tree.verify(gc.group_id)
    validate_tree_leaves(tree, gc.extensions)
    del cs
