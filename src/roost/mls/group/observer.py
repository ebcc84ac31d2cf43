"""``GroupObserver``: the homeserver's non-member view of a group (docs/mls.md, "Server side").

The observer tracks the public state (GroupContext, ratchet tree, interim transcript hash)
from PublicMessage handshakes (RFC 9420 section 6). It verifies every signature against the
tracked tree and runs the full commit pipeline of section 12.4.2 (proposal rules of 12.2,
leaf and KeyPackage validation of 7.3 and 10.1, parent hashes, the next GroupContext and
transcript hashes of 8.2).

A commit is handled in two steps: ``stage`` verifies it and returns a ``StagedCommit`` (the
resolved proposals, the roster change, the next GroupContext) without changing anything;
``merge`` swaps the staged epoch in. ``apply`` does both, and caches proposals.

What it cannot check without the group's secrets: membership tags (membership_key),
confirmation tags (confirmation_key), path secret encryption, and PrivateMessage content.
PrivateMessage handshakes are therefore rejected: the server requires PublicMessage.
Every failure raises ``ValidationError``/``DecodeError`` and leaves the observer unchanged
(an exception a credential policy raises that is not an ``MLSError`` propagates as it is).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..codec import Reader, Writer
from ..constants import ContentType, ExtensionType, SenderType
from ..credential import Credential
from ..crypto.ciphersuite import get_cipher_suite
from ..errors import DecodeError, ValidationError
from ..extensions import find_extension
from ..framing import AuthenticatedContent, MLSMessage, PrivateMessage, PublicMessage, Sender
from ..group_context import GroupContext
from ..group_info import GroupInfo
from ..proposals import Proposal
from ..ratchet_tree import RatchetTree
from ..transcript import interim_transcript_hash
from .join import tree_from, unwrap, verify_group_info
from .proposal_rules import QueuedProposal, cache_proposal
from .staged import EpochMark, StagedCommit, staged_commit
from .state import (
    PublicState,
    check_content_header,
    queued_from_content,
    resolve_proposals,
    stage_commit,
    verify_content_signature,
)
from .validation import CredentialPolicy
from .welcome_open import verify_group_info_signature

OBSERVER_MAGIC = b"RMLSO"
OBSERVER_VERSION = 1


@dataclass(frozen=True, slots=True)
class ObservedMessage:
    """What ``GroupObserver.apply`` accepted: a proposal (with its ref) or a commit."""

    kind: str  # "proposal" or "commit"
    sender: Sender
    proposal: Proposal | None = None
    proposal_ref: bytes | None = None
    epoch: int = 0  # the observer's epoch after the message
    added: tuple[int, ...] = ()
    removed: tuple[int, ...] = ()


class GroupObserver:
    __slots__ = ("_state", "_confirmation_tag", "_proposals", "credential_policy", "check_lifetime")

    def __init__(
        self,
        state: PublicState,
        confirmation_tag: bytes,
        *,
        credential_policy: CredentialPolicy | None = None,
        check_lifetime: bool = True,
    ) -> None:
        self._state = state
        self._confirmation_tag = confirmation_tag
        self._proposals: dict[bytes, QueuedProposal] = {}
        self.credential_policy = credential_policy
        self.check_lifetime = check_lifetime

    # --- construction ---------------------------------------------------------------------

    @classmethod
    def from_group_info(
        cls,
        group_info: bytes | MLSMessage | GroupInfo,
        ratchet_tree: RatchetTree | bytes | None = None,
        **kwargs: Any,
    ) -> GroupObserver:
        """Start following a group from its signed GroupInfo and tree (given here or in the
        GroupInfo's ratchet_tree extension): checks the signature by the ``signer`` leaf,
        the tree hash against the GroupContext, and the tree's validity."""
        gi = unwrap(group_info, GroupInfo)
        gc = gi.group_context
        cs = get_cipher_suite(gc.cipher_suite)
        tree = tree_from(cs, gi.extensions, ratchet_tree)
        verify_group_info(cs, gi, tree)
        state = PublicState(
            cs,
            gc,
            tree,
            interim_transcript_hash(cs, gc.confirmed_transcript_hash, gi.confirmation_tag),
        )
        return cls(state, gi.confirmation_tag, **kwargs)

    @classmethod
    def from_public_state(
        cls, state: PublicState, confirmation_tag: bytes = b"", **kwargs: Any
    ) -> GroupObserver:
        """Follow a group whose public state is already trusted (e.g. a member's view)."""
        copy = PublicState(
            state.cs,
            state.context,
            state.tree.copy(),
            state.interim_transcript_hash,
            state.context_bytes,
        )
        return cls(copy, confirmation_tag, **kwargs)

    # --- views --------------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return self._state.epoch

    @property
    def group_id(self) -> bytes:
        return self._state.group_id

    @property
    def group_context(self) -> GroupContext:
        return self._state.context

    @property
    def tree(self) -> RatchetTree:
        return self._state.tree

    @property
    def public_state(self) -> PublicState:
        return self._state

    @property
    def confirmation_tag(self) -> bytes:
        """The confirmation tag of the commit that started the current epoch."""
        return self._confirmation_tag

    def roster(self) -> list[tuple[int, Credential, bytes]]:
        return [(i, leaf.credential, leaf.signature_key) for i, leaf in self.tree.leaves()]

    def pending_proposal_refs(self) -> list[bytes]:
        return list(self._proposals)

    def pending_proposals(self) -> tuple[QueuedProposal, ...]:
        """The proposals cached this epoch (with their senders and refs), oldest first."""
        return tuple(self._proposals.values())

    # --- messages -------------------------------------------------------------------------------

    def apply(
        self,
        message: bytes | MLSMessage | PublicMessage,
        group_info: bytes | MLSMessage | GroupInfo | None = None,
    ) -> ObservedMessage:
        """Verify and apply a PublicMessage proposal or commit of the current epoch.

        A proposal is cached for the epoch's commit; a commit is ``stage`` then ``merge``.
        With ``group_info`` (a commit's companion GroupInfo), the commit is applied only if
        that GroupInfo also matches the new epoch (see ``check_group_info``): both are
        accepted together or not at all."""
        ac = self._verified_content(message)
        if ac.content.content_type == ContentType.PROPOSAL:
            return self._cache_proposal(ac, group_info)
        staged = self._stage_verified(ac, group_info)
        self.merge(staged)
        adds = staged.roster.added
        if staged.sender.sender_type == SenderType.NEW_MEMBER_COMMIT:
            adds = adds[:-1]  # the joiner's own leaf: ``added`` lists Add proposals only
        return ObservedMessage(
            "commit",
            staged.sender,
            epoch=staged.epoch,
            added=tuple(c.leaf_index for c in adds),
            removed=tuple(c.leaf_index for c in staged.roster.removed),
        )

    def stage(
        self,
        message: bytes | MLSMessage | PublicMessage,
        group_info: bytes | MLSMessage | GroupInfo | None = None,
    ) -> StagedCommit:
        """Fully verify a PublicMessage commit of the current epoch (section 12.4.2) and return
        what it would change; the observer itself is left as it is until ``merge``.

        With ``group_info``, that companion GroupInfo is checked against the next epoch too
        (as ``check_group_info`` does after a merge). A proposal is refused: use ``apply``."""
        ac = self._verified_content(message)
        if ac.content.content_type == ContentType.PROPOSAL:
            raise ValidationError("stage takes a commit; proposals go through apply")
        return self._stage_verified(ac, group_info)

    def merge(self, staged: StagedCommit) -> None:
        """Swap in the epoch ``staged`` leads to; it must have been staged from this epoch."""
        if staged._staged_from != EpochMark.of(self._state):  # noqa: SLF001
            raise ValidationError(
                f"the commit was staged from another state than this observer's epoch "
                f"{self._state.epoch}"
            )
        self._state = staged._next_state  # noqa: SLF001
        self._confirmation_tag = staged.confirmation_tag
        self._proposals = {}

    def _verified_content(
        self, message: bytes | MLSMessage | PublicMessage
    ) -> AuthenticatedContent:
        """A handshake of the current epoch whose signature checks out (section 6)."""
        pm = _public_message(message)
        state = self._state
        ac = pm.authenticated_content()
        check_content_header(state, ac.content)
        if ac.content.content_type == ContentType.APPLICATION:
            raise ValidationError("application data must be sent as PrivateMessage")
        sender = ac.content.sender
        if sender.sender_type == SenderType.MEMBER and pm.membership_tag is None:
            raise ValidationError("member PublicMessage without membership tag")
        verify_content_signature(state, ac)
        return ac

    def _cache_proposal(
        self, ac: AuthenticatedContent, group_info: bytes | MLSMessage | GroupInfo | None
    ) -> ObservedMessage:
        sender = ac.content.sender
        if sender.sender_type == SenderType.NEW_MEMBER_COMMIT:
            raise ValidationError("a new_member_commit sender cannot send proposals")
        if group_info is not None:
            raise ValidationError("a GroupInfo accompanies commits, not proposals")
        state = self._state
        q = queued_from_content(state.cs, ac)
        cache_proposal(self._proposals, q)
        return ObservedMessage("proposal", sender, q.proposal, q.ref, state.epoch)

    def _stage_verified(
        self, ac: AuthenticatedContent, group_info: bytes | MLSMessage | GroupInfo | None
    ) -> StagedCommit:
        state = self._state
        sender = ac.content.sender
        proposals = resolve_proposals(ac.content.content, sender, self._proposals)
        computed = stage_commit(
            state,
            ac,
            proposals,
            check_lifetime=self.check_lifetime,
            credential_policy=self.credential_policy,
        )
        tag = ac.auth.confirmation_tag
        assert tag is not None  # stage_commit refuses a commit without one
        if group_info is not None:
            _check_group_info(computed.state, tag, group_info)
        return staged_commit(state, sender, computed, tag)

    def check_group_info(self, group_info: bytes | MLSMessage | GroupInfo) -> GroupInfo:
        """Check a GroupInfo submitted with the latest commit against the computed state:
        same GroupContext, the commit's confirmation tag, a member signer with a valid
        signature, and (if present) a ratchet_tree extension equal to the tracked tree."""
        return _check_group_info(self._state, self._confirmation_tag, group_info)

    # --- persistence ----------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        w = Writer()
        w.fixed(OBSERVER_MAGIC)
        w.u16(OBSERVER_VERSION)
        self._state.encode_to(w)
        w.opaque(self._confirmation_tag)
        w.u32(len(self._proposals))
        for q in self._proposals.values():
            _write_queued(w, q)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, **kwargs: Any) -> GroupObserver:
        r = Reader(data)
        try:
            if r.fixed(len(OBSERVER_MAGIC)) != OBSERVER_MAGIC:
                raise DecodeError("not a serialised GroupObserver")
            version = r.u16()
            if version != OBSERVER_VERSION:
                raise DecodeError(f"unsupported observer state version {version}")
            state = PublicState.decode_from(r, get_cipher_suite)
            tag = r.opaque()
            proposals = [_read_queued(r) for _ in range(r.u32())]
            r.finish()
        except DecodeError:
            raise
        except (ValueError, IndexError, KeyError, TypeError, OverflowError) as e:
            raise DecodeError(f"invalid observer state: {e}") from None
        obs = cls(state, tag, **kwargs)
        obs._proposals = {q.ref: q for q in proposals}  # type: ignore[misc]
        return obs


def _check_group_info(
    state: PublicState, confirmation_tag: bytes, group_info: bytes | MLSMessage | GroupInfo
) -> GroupInfo:
    gi = unwrap(group_info, GroupInfo)
    if gi.group_context.encode() != state.context_bytes:
        raise ValidationError("GroupInfo GroupContext differs from the group's state")
    if gi.confirmation_tag != confirmation_tag:
        raise ValidationError("GroupInfo confirmation tag differs from the commit's")
    signer = state.tree.leaf(gi.signer)
    if signer is None:
        raise ValidationError(f"GroupInfo signer leaf {gi.signer} is not a member")
    verify_group_info_signature(state.cs, gi, signer.signature_key)
    ext = find_extension(gi.extensions, ExtensionType.RATCHET_TREE)
    if ext is not None and ext.extension_data != state.tree.to_bytes():
        raise ValidationError("GroupInfo ratchet_tree differs from the group's tree")
    return gi


def _write_queued(w: Writer, q: QueuedProposal) -> None:
    q.proposal.encode_to(w)
    w.u8(q.sender_type)
    w.optional(q.sender_index, Writer.u32)
    w.optional(q.ref, Writer.opaque)


def _read_queued(r: Reader) -> QueuedProposal:
    proposal = Proposal.decode_from(r)
    sender_type = SenderType(r.u8())
    index = r.optional(Reader.u32)
    ref = r.optional(Reader.opaque)
    return QueuedProposal(proposal, sender_type, index, ref)


def _public_message(message: bytes | MLSMessage | PublicMessage) -> PublicMessage:
    if isinstance(message, PublicMessage):
        return message
    msg = MLSMessage.decode(message) if isinstance(message, bytes) else message
    if not isinstance(msg, MLSMessage):
        raise ValidationError("expected an MLSMessage")
    if isinstance(msg.body, PrivateMessage):
        raise ValidationError(
            "the server cannot read PrivateMessage handshakes: send proposals and commits "
            "as PublicMessage"
        )
    if not isinstance(msg.body, PublicMessage):
        raise ValidationError(f"expected a PublicMessage, got {msg.wire_format.name}")
    return msg.body
