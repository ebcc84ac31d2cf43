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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Unpack

from .. import protection
from ..constants import ContentType, LeafNodeSource, ProposalType, PSKType, SenderType, WireFormat
from ..credential import Credential
from ..crypto import CipherSuite
from ..crypto.ciphersuite import get_cipher_suite
from ..errors import CryptoError, ValidationError
from ..extensions import Extension
from ..framing import (
    AuthenticatedContent,
    ContentBody,
    FramedContent,
    FramedContentAuthData,
    MLSMessage,
    PrivateMessage,
    PublicMessage,
    Sender,
    framed_content_tbs,
)
from ..group_context import GroupContext
from ..group_info import GroupInfo
from ..key_package import KeyPackage
from ..key_package_gen import KeyPackageBundle, default_capabilities, sign_leaf_node
from ..key_schedule import EpochSecrets, external_init_receiver, mls_exporter
from ..leaf_node import Capabilities, LeafNode, LeafNodeChanges, Lifetime
from ..proposals import (
    Add,
    GroupContextExtensions,
    PreSharedKey,
    Proposal,
    ProposalBody,
    ProposalOrRef,
    ReInit,
    Remove,
    Update,
)
from ..psk import PreSharedKeyID
from ..ratchet_tree import RatchetTree
from ..transcript import interim_transcript_hash
from ..treekem import TreePrivateState, decap
from ..welcome import Welcome
from .commit_builder import build_commit
from .epoch_state import EpochState, drop_outside
from .join import build_welcome, epoch_from_welcome, external_commit, sign_group_info, unwrap
from .proposal_rules import QueuedProposal, cache_proposal, select_pending
from .state import (
    PublicState,
    check_content_header,
    queued_from_content,
    resolve_proposals,
    stage_commit,
    verify_content_signature,
)
from .validation import CredentialPolicy, validate_leaf_node
from .welcome_open import OpenedWelcome, open_welcome, resolve_psks
from .welcome_open import epoch_from_welcome as epoch_secrets_of_welcome

RESUMPTION_PSKS_KEPT = 8  # past epochs whose resumption PSK stays available
# Past epochs whose application secrets stay available for late messages: the DS accepts a
# message of the previous epoch, and the receiver's own commits may have moved it further on
# while the message travelled between servers. Kept keys weaken forward secrecy for this long.
PAST_EPOCHS_KEPT = 3


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
    reinit: ReInit | None = None  # commits: a committed ReInit closes the group


@dataclass(frozen=True, slots=True)
class CommitOutput:
    """What ``Group.commit`` produces: send ``commit`` (+ ``group_info``) to the DS, and
    ``welcome`` to the new members; call ``merge_pending_commit`` once the DS accepted."""

    commit: bytes  # MLSMessage
    welcome: bytes | None  # MLSMessage (Welcome) when members were added
    group_info: bytes  # MLSMessage (GroupInfo) of the new epoch


@dataclass(frozen=True, slots=True)
class WelcomeToJoin:
    """A Welcome opened with one of our KeyPackages, not joined yet (``Group.open_welcome``):
    ``opened.group_id`` names the group, ``opened.carries_ratchet_tree`` says whether the tree
    must be fetched first."""

    cs: CipherSuite
    opened: OpenedWelcome
    key_package: KeyPackage
    encryption_private_key: bytes
    signature_private_key: bytes
    external_psks: dict[bytes, bytes]

    def export_secret(self, label: bytes, context: bytes, length: int) -> bytes:
        """The MLS exporter (section 8.5) of the epoch this Welcome joins: known from the
        group secrets and the GroupContext alone, before the ratchet tree is at hand (the
        GroupInfo's confirmation tag is checked; a mismatch is a ``CryptoError``)."""
        secrets = epoch_secrets_of_welcome(self.cs, self.opened)
        return mls_exporter(self.cs, secrets.exporter_secret, label, context, length)


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
        epoch: EpochState,
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
        # Our own commit until the DS accepts it: (next epoch, commit bytes, committed ReInit).
        self._pending: tuple[EpochState, bytes, ReInit | None] | None = None
        self.handshake_wire_format = handshake_wire_format
        # Private keys of our Update proposals, by public key, until one is committed.
        self._update_keys: dict[bytes, bytes] = {}
        # Set once a ReInit was committed: the group is then closed (section 12.1.5).
        self.reinit: ReInit | None = None
        # The epochs before the current one, oldest first (at most ``PAST_EPOCHS_KEPT``),
        # kept only to read late application messages.
        self._past: list[EpochState] = []
        # Our signing key parsed on first use (application messages), with the bytes it
        # was parsed from.
        self._signer: tuple[bytes, Callable[[bytes], bytes]] | None = None
        self.active = True
        self._remember_resumption()

    # --- read-only views ------------------------------------------------------------------

    @property
    def cs(self) -> CipherSuite:
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
        return self._epoch.public.roster()

    def export_secret(self, label: bytes, context: bytes, length: int) -> bytes:
        return mls_exporter(self.cs, self._epoch.secrets.exporter_secret, label, context, length)

    def pending_export_secret(self, label: bytes, context: bytes, length: int) -> bytes:
        """The MLS exporter of the epoch our pending commit creates (before the DS accepted
        it and ``merge_pending_commit`` moved us there): what a committer hands its joiners
        alongside the Welcome is bound to the epoch they start in."""
        if self._pending is None:
            raise ValidationError("no pending commit")
        nxt = self._pending[0]
        return mls_exporter(self.cs, nxt.secrets.exporter_secret, label, context, length)

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
        epoch = EpochState.start(public, secrets, TreePrivateState.for_leaf(cs, 0, enc_priv), 0)
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
        opened = cls.open_welcome(
            welcome, key_package, external_psks=external_psks, resumption_psks=resumption_psks
        )
        return cls.join_opened(opened, ratchet_tree, credential_policy=credential_policy)

    @staticmethod
    def open_welcome(
        welcome: bytes | MLSMessage | Welcome,
        key_package: KeyPackageBundle | tuple[KeyPackage, bytes, bytes, bytes],
        *,
        external_psks: dict[bytes, bytes] | None = None,
        resumption_psks: dict[int, bytes] | None = None,
    ) -> WelcomeToJoin:
        """The first half of ``join_from_welcome``: decrypt the group secrets and the GroupInfo
        (section 12.4.3.1), so that a joiner whose Welcome lacks the tree can learn the group
        and fetch the tree (section 12.4.3.3) before ``join_opened``."""
        w = unwrap(welcome, Welcome)
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
        return WelcomeToJoin(cs, opened, kp, enc_priv, sig_priv, ext_psks)

    @classmethod
    def join_opened(
        cls,
        welcome: WelcomeToJoin,
        ratchet_tree: RatchetTree | bytes | None = None,
        *,
        credential_policy: CredentialPolicy | None = None,
    ) -> Group:
        """The second half of ``join_from_welcome``: the tree (from the Welcome, or given out
        of band) gets every check of section 12.4.3.1 — tree hash against the GroupContext,
        parent hashes, leaves, the GroupInfo signature — then we take our first epoch."""
        epoch = epoch_from_welcome(
            welcome.cs,
            welcome.opened,
            welcome.key_package,
            welcome.encryption_private_key,
            ratchet_tree,
            credential_policy,
        )
        return cls(
            epoch,
            welcome.signature_private_key,
            credential_policy=credential_policy,
            external_psks=welcome.external_psks,
        )

    # --- proposals --------------------------------------------------------------------------

    def _frame(
        self,
        body: ContentBody,
        *,
        authenticated_data: bytes = b"",
        wire_format: WireFormat | None = None,
    ) -> tuple[AuthenticatedContent, WireFormat]:
        wf = wire_format or self.handshake_wire_format
        content = FramedContent(
            self.group_id, self.epoch, Sender.member(self.leaf_index), authenticated_data, body
        )
        tbs = framed_content_tbs(wf, content, self._epoch.public.context_bytes)
        sig = self.cs.sign_with_label(self._sig_priv, b"FramedContentTBS", tbs)
        return AuthenticatedContent(wf, content, FramedContentAuthData(sig)), wf

    def _send(self, ac: AuthenticatedContent, epoch: EpochState | None = None) -> bytes:
        e = epoch or self._epoch
        if ac.wire_format == WireFormat.PUBLIC_MESSAGE:
            tag = self.cs.mac(e.secrets.membership_key, ac.tbm(e.public.context_bytes))
            return MLSMessage(PublicMessage.from_authenticated(ac, tag)).encode()
        pm = protection.encrypt(self.cs, ac, e.secret_tree, e.secrets.sender_data_secret)
        return MLSMessage(pm).encode()

    def _propose(self, body: ProposalBody, authenticated_data: bytes = b"") -> bytes:
        ac, _ = self._frame(Proposal(body), authenticated_data=authenticated_data)
        q = queued_from_content(self.cs, ac)
        cache_proposal(self._proposals, q)
        return self._send(ac)

    def propose_add(self, key_package: KeyPackage, authenticated_data: bytes = b"") -> bytes:
        self._check_active()
        return self._propose(Add(key_package), authenticated_data)

    def propose_remove(self, leaf_index: int, authenticated_data: bytes = b"") -> bytes:
        self._check_active()
        _members_tree_leaf(self.tree, leaf_index)
        return self._propose(Remove(leaf_index), authenticated_data)

    def propose_update(
        self, authenticated_data: bytes = b"", **leaf_changes: Unpack[LeafNodeChanges]
    ) -> bytes:
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

    def propose_reinit(
        self,
        group_id: bytes,
        cipher_suite: int,
        extensions: Iterable[Extension] = (),
        authenticated_data: bytes = b"",
    ) -> bytes:
        """Propose to close this group and continue in a new one (section 12.1.5)."""
        self._check_active()
        body = ReInit(group_id, 1, cipher_suite, tuple(extensions))
        return self._propose(body, authenticated_data)

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
            for ref, q in select_pending(self._proposals, queued, self.tree, self.leaf_index):
                refs.append(ref)
                queued.append(q)
        built = build_commit(
            self.cs,
            self._epoch.public,
            sender=me,
            proposals=queued,
            proposal_refs=tuple(ProposalOrRef.by_value(p) for p in by_value)
            + tuple(ProposalOrRef.by_reference(r) for r in refs),
            signature_private_key=self._sig_priv,
            init_secret=self._epoch.secrets.init_secret,
            tree_keys=self._epoch.tree_keys,
            psk_lookup=self._psk_lookup,
            force_path=force_path,
            wire_format=self.handshake_wire_format,
            authenticated_data=authenticated_data,
            now=now,
            credential_policy=self.credential_policy,
        )
        commit_bytes = self._send(built.ac)
        group_info = sign_group_info(
            self.cs, built.next, self._sig_priv, with_tree=ratchet_tree_in_welcome
        )
        welcome = build_welcome(self.cs, built, group_info) if built.applied.added else None
        self._pending = (built.next, commit_bytes, built.applied.reinit)
        return CommitOutput(commit_bytes, welcome, MLSMessage(group_info).encode())

    def group_info(self, *, with_tree: bool = True) -> bytes:
        """A signed GroupInfo of the current epoch (MLSMessage), with external_pub so that
        others can join by external commit, and the ratchet tree unless ``with_tree=False``."""
        gi = sign_group_info(self.cs, self._epoch, self._sig_priv, with_tree=with_tree)
        return MLSMessage(gi).encode()

    def merge_pending_commit(self) -> None:
        if self._pending is None:
            raise ValidationError("no pending commit")
        nxt, _, reinit = self._pending
        self._advance(nxt)
        self.reinit = reinit

    def clear_pending_commit(self) -> None:
        self._pending = None

    def _advance(self, nxt: EpochState) -> None:
        self._past = [*self._past, self._epoch][-PAST_EPOCHS_KEPT:]
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
        gi = unwrap(group_info, GroupInfo)
        cs = get_cipher_suite(gi.group_context.cipher_suite)
        built = external_commit(
            cs,
            gi,
            ratchet_tree,
            credential,
            signature_private_key,
            capabilities or default_capabilities(cs.suite_id),
            remove_prior=remove_prior,
            credential_policy=credential_policy,
            authenticated_data=authenticated_data,
        )
        commit = MLSMessage(PublicMessage.from_authenticated(built.ac, None)).encode()
        group = cls(built.next, signature_private_key, credential_policy=credential_policy)
        return group, commit

    # --- application messages ---------------------------------------------------------------

    def encrypt(self, data: bytes, authenticated_data: bytes = b"", padding: int = 0) -> bytes:
        """An application message (PrivateMessage, signed by us)."""
        self._check_active()
        if not isinstance(data, bytes) or not isinstance(authenticated_data, bytes):
            raise TypeError("application data and authenticated data must be bytes")
        signer = self._signer
        if signer is None or signer[0] is not self._sig_priv:
            signer = self._signer = (self._sig_priv, self.cs.signature.signer(self._sig_priv))
        e = self._epoch
        return e.application_keys().seal_application(
            signer[1], e.leaf_index, data, authenticated_data, padding
        )

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
        if isinstance(message, bytes):
            app = protection.read_private_application(message)
            if app is not None:  # the hot path: no framing objects
                return self._receive_application(*app)
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
            if body.group_id != self.group_id:
                raise ValidationError("message for another group")
            if body.epoch != self.epoch:
                e = self._late_application_epoch(body.epoch, body.content_type)
            # The ratchet only moves for keys that decrypted: a forgery cannot change it.
            ac, _ = protection.decrypt(self.cs, body, e.secret_tree, e.secrets.sender_data_secret)
            sender_leaf = ac.content.sender.leaf_index  # a PrivateMessage's sender is a member
            if e.public.tree.leaf(sender_leaf) is None:
                raise ValidationError(f"PrivateMessage from blank leaf {sender_leaf}")
            verify_content_signature(e.public, ac)
        else:
            raise ValidationError(f"cannot process a {msg.wire_format.name} here")
        content = ac.content.content
        if isinstance(content, bytes):  # application data
            return ReceivedMessage(
                "application", ac.content.sender, content, ac.content.authenticated_data
            )
        if isinstance(content, Proposal):
            return self._receive_proposal(ac)
        return self._receive_commit(ac)

    def _receive_application(
        self, group_id: bytes, epoch: int, authenticated_data: bytes, esd: bytes, ct: bytes
    ) -> ReceivedMessage:
        """An application PrivateMessage: the checks of ``process``, without framing objects
        (``protection.ApplicationKeys``)."""
        if group_id != self.group_id:
            raise ValidationError("message for another group")
        e = self._epoch
        if epoch != e.public.epoch:
            e = self._late_application_epoch(epoch, ContentType.APPLICATION)
        sender, data = e.application_keys().open_application(authenticated_data, esd, ct)
        return ReceivedMessage("application", sender, data, authenticated_data)

    def _late_application_epoch(self, epoch: int, content_type: ContentType) -> EpochState:
        """Application messages of the last ``PAST_EPOCHS_KEPT`` epochs stay readable (a
        member may have sent one while the commit that ended its epoch was in flight, and
        our own commits may have moved us on before it reached us); nothing else does."""
        if content_type == ContentType.APPLICATION:
            for past in self._past:
                if past.public.epoch == epoch:
                    return past
        raise ValidationError(f"PrivateMessage for epoch {epoch}, group is at {self.epoch}")

    def _receive_proposal(self, ac: AuthenticatedContent) -> ReceivedMessage:
        sender = ac.content.sender
        if sender.sender_type == SenderType.MEMBER and sender.index == self.leaf_index:
            raise ValidationError("cannot process our own proposal")
        q = queued_from_content(self.cs, ac)
        prop = q.proposal
        if prop.proposal_type == ProposalType.UPDATE and sender.sender_type != SenderType.MEMBER:
            raise ValidationError("Update proposal from a non-member")
        cache_proposal(self._proposals, q)
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
        drop_outside(keys, new_public.tree)  # the tree may have shrunk (truncation)
        # An Update we proposed that got committed: install its private key.
        for idx in applied.updated:
            if idx == self.leaf_index:
                leaf = new_public.tree.leaf(idx)
                assert leaf is not None  # 12.2: a leaf is not both updated and removed
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
        tag = ac.auth.confirmation_tag  # stage_commit refused a commit without one
        if tag is None or not cs.verify_mac(
            secrets.confirmation_key, new_public.context.confirmed_transcript_hash, tag
        ):
            raise CryptoError("confirmation tag does not match")
        self._advance(EpochState.start(new_public, secrets, keys, self.leaf_index))
        self.reinit = applied.reinit
        return ReceivedMessage(
            "commit",
            sender,
            authenticated_data=ac.content.authenticated_data,
            added=tuple(i for i, _ in applied.added),
            removed=tuple(applied.removed),
            epoch=self.epoch,
            reinit=applied.reinit,
        )

    def _check_active(self) -> None:
        if self.reinit is not None:
            raise ValidationError("this group was re-initialised (ReInit): use the new group")
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
