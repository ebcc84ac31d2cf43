"""Message protection (RFC 9420 section 6): signatures, membership tags, PrivateMessage.

Signing and verifying (any wire format):
- ``sign_content(cs, sig_priv, wire_format, content, group_context) -> signature``
  over FramedContentTBS with label "FramedContentTBS".
- ``verify_content_signature(cs, sig_pub, ac, group_context)`` raises ``CryptoError``.
- ``authenticate(cs, sig_priv, wire_format, content, group_context, confirmation_tag=None)``
  builds an ``AuthenticatedContent`` (commits: compute the confirmation tag first, or sign
  with ``sign_content`` and assemble the AuthenticatedContent yourself).

PublicMessage:
- ``to_public_message(cs, ac, group_context, membership_key)`` adds the membership tag for
  member senders.
- ``from_public_message(cs, pm, group_context, membership_key, sig_pub=None)`` checks the
  membership tag (member senders) and, if ``sig_pub`` is given, the signature.

PrivateMessage (member senders only; ``ac.wire_format`` must be private_message):
- ``encrypt(cs, ac, secret_tree, sender_data_secret, padding=0)`` -> ``PrivateMessage``.
- ``decrypt(cs, pm, secret_tree, sender_data_secret)`` -> ``(AuthenticatedContent,
  SenderData)``; the signature is NOT verified here because the key comes from the
  sender's leaf: call ``verify_content_signature`` next (and check the leaf is occupied).
- ``protect_private`` / ``unprotect_private`` do sign+encrypt / decrypt+verify in one go.

Application messages of a member (the hot path): ``ApplicationKeys`` holds what is constant
for one epoch (TBS, AAD and wire prefixes, GroupContext bytes, the sender-data HMAC key, the
members' verifiers); ``seal_application`` signs and encrypts straight to MLSMessage bytes and
``open_application`` decrypts and verifies the fields from ``read_private_application``.
Both produce and accept exactly what the generic functions do, with every check kept.

``group_context`` is a GroupContext or its encoding (pass bytes on hot paths: it is
encoded once per epoch by the caller). Failures: ``CryptoError`` for bad signatures, tags
and AEAD; ``ValidationError`` for rule violations; ``DecodeError`` for malformed plaintext.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from cryptography.exceptions import InvalidTag

from .codec import Reader, encode_varint
from .constants import ContentType, SenderType, WireFormat
from .crypto.aead import Aead
from .crypto.ciphersuite import CipherSuite
from .errors import CryptoError, DecodeError, ValidationError
from .framing import (
    AuthenticatedContent,
    FramedContent,
    FramedContentAuthData,
    PrivateMessage,
    PrivateMessageContent,
    PublicMessage,
    Sender,
    SenderData,
    framed_content_tbs,
)
from .group_context import GroupContext
from .secret_tree import SecretTree, sender_data_key_nonce

_TBS_LABEL = b"FramedContentTBS"
GroupContextLike = GroupContext | bytes


def _ctx(group_context: GroupContextLike) -> bytes:
    return group_context if isinstance(group_context, bytes) else group_context.encode()


# Signatures ---------------------------------------------------------------------------------
def sign_content(
    cs: CipherSuite,
    sig_priv: bytes,
    wire_format: WireFormat,
    content: FramedContent,
    group_context: GroupContextLike | None,
) -> bytes:
    ctx = None if group_context is None else _ctx(group_context)
    return cs.sign_with_label(sig_priv, _TBS_LABEL, framed_content_tbs(wire_format, content, ctx))


def verify_content_signature(
    cs: CipherSuite,
    sig_pub: bytes,
    ac: AuthenticatedContent,
    group_context: GroupContextLike | None,
) -> None:
    ctx = None if group_context is None else _ctx(group_context)
    if not cs.verify_with_label(sig_pub, _TBS_LABEL, ac.tbs(ctx), ac.auth.signature):
        raise CryptoError("invalid FramedContent signature")


def authenticate(
    cs: CipherSuite,
    sig_priv: bytes,
    wire_format: WireFormat,
    content: FramedContent,
    group_context: GroupContextLike | None,
    confirmation_tag: bytes | None = None,
) -> AuthenticatedContent:
    if (content.content_type == ContentType.COMMIT) != (confirmation_tag is not None):
        raise ValidationError("a confirmation tag is required exactly for commits")
    signature = sign_content(cs, sig_priv, wire_format, content, group_context)
    return AuthenticatedContent(
        wire_format, content, FramedContentAuthData(signature, confirmation_tag)
    )


# PublicMessage ------------------------------------------------------------------------------
def membership_tag(
    cs: CipherSuite,
    membership_key: bytes,
    ac: AuthenticatedContent,
    group_context: GroupContextLike,
) -> bytes:
    return cs.mac(membership_key, ac.tbm(_ctx(group_context)))


def to_public_message(
    cs: CipherSuite,
    ac: AuthenticatedContent,
    group_context: GroupContextLike,
    membership_key: bytes | None,
) -> PublicMessage:
    if ac.wire_format != WireFormat.PUBLIC_MESSAGE:
        raise ValidationError("content was not authenticated for a PublicMessage")
    tag = None
    if ac.content.sender.sender_type == SenderType.MEMBER:
        if membership_key is None:
            raise ValidationError("member senders need the membership key")
        tag = membership_tag(cs, membership_key, ac, group_context)
    return PublicMessage(ac.content, ac.auth, tag)


def from_public_message(
    cs: CipherSuite,
    pm: PublicMessage,
    group_context: GroupContextLike,
    membership_key: bytes | None,
    sig_pub: bytes | None = None,
) -> AuthenticatedContent:
    ac = pm.authenticated_content()
    ctx = _ctx(group_context)
    if pm.content.sender.sender_type == SenderType.MEMBER:
        if membership_key is None or pm.membership_tag is None:
            raise ValidationError("member PublicMessage needs a membership tag and key")
        if not cs.verify_mac(membership_key, ac.tbm(ctx), pm.membership_tag):
            raise CryptoError("invalid membership tag")
    if sig_pub is not None:
        verify_content_signature(cs, sig_pub, ac, ctx)
    return ac


# PrivateMessage -----------------------------------------------------------------------------
def _apply_reuse_guard(nonce: bytes, guard: bytes) -> bytes:
    head = int.from_bytes(nonce[:4], "big") ^ int.from_bytes(guard, "big")
    return head.to_bytes(4, "big") + nonce[4:]


def _opaque(b: bytes) -> bytes:
    n = len(b)
    return (bytes((n,)) if n < 0x40 else encode_varint(n)) + b


def _sender_data_aad(group_id: bytes, epoch: int, content_type: int) -> bytes:
    # SenderDataAAD, built directly: this runs for every PrivateMessage.
    return _opaque(group_id) + epoch.to_bytes(8, "big") + bytes((content_type,))


def _content_aad(
    group_id: bytes, epoch: int, content_type: int, authenticated_data: bytes
) -> bytes:
    return _sender_data_aad(group_id, epoch, content_type) + _opaque(authenticated_data)


def encrypt(
    cs: CipherSuite,
    ac: AuthenticatedContent,
    secret_tree: SecretTree,
    sender_data_secret: bytes,
    padding: int = 0,
    reuse_guard: bytes | None = None,
) -> PrivateMessage:
    """``reuse_guard`` is random unless given (tests compare two encoders with it)."""
    content = ac.content
    if ac.wire_format != WireFormat.PRIVATE_MESSAGE:
        raise ValidationError("content was not authenticated for a PrivateMessage")
    if content.sender.sender_type != SenderType.MEMBER:
        raise ValidationError("only members can send a PrivateMessage")
    content_type = content.content_type
    leaf = content.sender.leaf_index
    if padding < 0:
        raise ValueError("negative padding")

    generation, key, nonce = secret_tree.ratchet(leaf, content_type).next()
    if reuse_guard is None:
        reuse_guard = os.urandom(4)
    elif len(reuse_guard) != 4:
        raise ValueError("reuse_guard must be 4 bytes")
    body = content.content
    if isinstance(body, bytes):  # application data: skip the generic encoder
        auth = ac.auth
        plaintext = _opaque(body) + _opaque(auth.signature) + bytes(padding)
    else:
        plaintext = PrivateMessageContent(body, ac.auth, padding).encode()
    aad = _content_aad(content.group_id, content.epoch, content_type, content.authenticated_data)
    ciphertext = cs.aead.seal(
        key, _apply_reuse_guard(nonce, reuse_guard), aad, plaintext, cache=False
    )

    sd_key, sd_nonce = sender_data_key_nonce(cs, sender_data_secret, ciphertext)
    sd_aad = _sender_data_aad(content.group_id, content.epoch, content_type)
    sender_data = leaf.to_bytes(4, "big") + generation.to_bytes(4, "big") + reuse_guard
    encrypted_sender_data = cs.aead.seal(sd_key, sd_nonce, sd_aad, sender_data, cache=False)
    return PrivateMessage(
        content.group_id,
        content.epoch,
        content_type,
        content.authenticated_data,
        encrypted_sender_data,
        ciphertext,
    )


def decrypt_sender_data(
    cs: CipherSuite, pm: PrivateMessage, sender_data_secret: bytes
) -> SenderData:
    sd_key, sd_nonce = sender_data_key_nonce(cs, sender_data_secret, pm.ciphertext)
    sd_aad = _sender_data_aad(pm.group_id, pm.epoch, pm.content_type)
    plain = cs.aead.open(sd_key, sd_nonce, sd_aad, pm.encrypted_sender_data, cache=False)
    if len(plain) != 12:
        raise DecodeError(f"SenderData must be 12 bytes, got {len(plain)}")
    return SenderData(
        int.from_bytes(plain[:4], "big"), int.from_bytes(plain[4:8], "big"), plain[8:]
    )


def decrypt(
    cs: CipherSuite,
    pm: PrivateMessage,
    secret_tree: SecretTree,
    sender_data_secret: bytes,
) -> tuple[AuthenticatedContent, SenderData]:
    sender_data = decrypt_sender_data(cs, pm, sender_data_secret)
    ratchet = secret_tree.ratchet(sender_data.leaf_index, pm.content_type)
    key, nonce = ratchet.get(sender_data.generation)
    aad = _content_aad(pm.group_id, pm.epoch, pm.content_type, pm.authenticated_data)
    plain = cs.aead.open(
        key, _apply_reuse_guard(nonce, sender_data.reuse_guard), aad, pm.ciphertext, cache=False
    )
    # Only a message that decrypted may use up the key (a forgery must not burn it).
    ratchet.consume(sender_data.generation)
    pmc = PrivateMessageContent.decode_for(plain, pm.content_type)
    content = FramedContent(
        pm.group_id,
        pm.epoch,
        Sender.member(sender_data.leaf_index),
        pm.authenticated_data,
        pmc.content,
    )
    return AuthenticatedContent(WireFormat.PRIVATE_MESSAGE, content, pmc.auth), sender_data


def protect_private(
    cs: CipherSuite,
    sig_priv: bytes,
    content: FramedContent,
    group_context: GroupContextLike,
    secret_tree: SecretTree,
    sender_data_secret: bytes,
    confirmation_tag: bytes | None = None,
    padding: int = 0,
) -> PrivateMessage:
    ac = authenticate(
        cs, sig_priv, WireFormat.PRIVATE_MESSAGE, content, group_context, confirmation_tag
    )
    return encrypt(cs, ac, secret_tree, sender_data_secret, padding)


def unprotect_private(
    cs: CipherSuite,
    pm: PrivateMessage,
    group_context: GroupContextLike,
    secret_tree: SecretTree,
    sender_data_secret: bytes,
    sig_pub: bytes,
) -> AuthenticatedContent:
    """Decrypt and verify with a known sender key (the caller maps leaf -> key beforehand
    only if it already knows the sender; otherwise use ``decrypt`` + ``verify``)."""
    ac, _ = decrypt(cs, pm, secret_tree, sender_data_secret)
    verify_content_signature(cs, sig_pub, ac, group_context)
    return ac


# Application messages of a member: the hot path -----------------------------------------------
_TBS_LABEL_OPAQUE = _opaque(b"MLS 1.0 " + _TBS_LABEL)  # SignWithLabel's label, encoded once
_MLS10_PRIVATE = b"\x00\x01\x00\x02"  # MLSMessage header: mls10, private_message
_APPLICATION = bytes((ContentType.APPLICATION,))
_MEMBER = bytes((SenderType.MEMBER,))


def read_private_application(data: bytes) -> tuple[bytes, int, bytes, bytes, bytes] | None:
    """``(group_id, epoch, authenticated_data, encrypted_sender_data, ciphertext)`` of an
    MLSMessage holding an application PrivateMessage, read as strictly as
    ``MLSMessage.decode`` (``DecodeError``); None for any other message (decode it fully)."""
    if data[:4] != _MLS10_PRIVATE:
        return None
    r = Reader(data, 4)
    group_id = r.opaque()
    epoch = r.u64()
    if r.u8() != ContentType.APPLICATION:
        return None
    fields = (group_id, epoch, r.opaque(), r.opaque(), r.opaque())
    r.finish()
    return fields


class ApplicationKeys:
    """What one epoch's application messages share, computed once per epoch.

    ``secret_tree`` is the epoch's secret tree itself (the ratchets move as messages go);
    ``signature_key_of(leaf_index)`` gives a sender's signature key, None for a blank leaf
    (asked once per sender and epoch).
    """

    __slots__ = (
        "cs",
        "secret_tree",
        "signature_key_of",
        "group_id",
        "epoch",
        "_context",
        "_sd_key",
        "_sd_aad",
        "_tbs_head",
        "_wire_head",
        "_verifiers",
        "_senders",
    )

    def __init__(
        self,
        cs: CipherSuite,
        group_id: bytes,
        epoch: int,
        context_bytes: bytes,
        secret_tree: SecretTree,
        sender_data_secret: bytes,
        signature_key_of: Callable[[int], bytes | None],
    ) -> None:
        self.cs = cs
        self.secret_tree = secret_tree
        self.signature_key_of = signature_key_of
        self.group_id = group_id
        self.epoch = epoch
        self._context = context_bytes
        self._sd_key = cs.hmac_key(sender_data_secret)
        gid_epoch = _opaque(group_id) + epoch.to_bytes(8, "big")
        self._sd_aad = gid_epoch + _APPLICATION  # SenderDataAAD; + authenticated_data: AAD
        # FramedContentTBS up to the sender's leaf index: version, wire format, group_id,
        # epoch, sender type.
        self._tbs_head = _MLS10_PRIVATE + gid_epoch + _MEMBER
        # MLSMessage up to authenticated_data: version, wire format, group_id, epoch, type.
        self._wire_head = _MLS10_PRIVATE + gid_epoch + _APPLICATION
        self._verifiers: dict[int, Callable[[bytes, bytes], bool]] = {}
        self._senders: dict[int, Sender] = {}

    def _sign_content(self, leaf: bytes, ad_len: bytes, ad: bytes, data: bytes) -> bytes:
        """SignWithLabel's SignContent over the FramedContentTBS, built by one join."""
        data_len = _vlen(len(data))
        ctx = self._context
        head = self._tbs_head
        # FramedContentTBS: head, leaf index (4), authenticated_data, content type (1),
        # application data, GroupContext.
        n = len(head) + 5 + len(ad_len) + len(ad) + len(data_len) + len(data) + len(ctx)
        return b"".join(
            (_TBS_LABEL_OPAQUE, _vlen(n), head, leaf, ad_len, ad, _APPLICATION, data_len, data, ctx)
        )

    def seal_application(
        self,
        sign: Callable[[bytes], bytes],
        leaf_index: int,
        data: bytes,
        authenticated_data: bytes = b"",
        padding: int = 0,
        reuse_guard: bytes | None = None,
    ) -> bytes:
        """Sign (``sign`` takes SignContent) and encrypt an application message from our
        leaf; returns the MLSMessage bytes, equal to ``authenticate`` + ``encrypt``."""
        if padding < 0:
            raise ValueError("negative padding")
        if reuse_guard is None:
            reuse_guard = os.urandom(4)
        elif len(reuse_guard) != 4:
            raise ValueError("reuse_guard must be 4 bytes")
        cs = self.cs
        leaf = leaf_index.to_bytes(4, "big")
        ad = authenticated_data
        ad_len = _vlen(len(ad))
        signature = sign(self._sign_content(leaf, ad_len, ad, data))
        generation, key, nonce = self.secret_tree.application_ratchet(leaf_index).next()
        plaintext = b"".join((_vlen(len(data)), data, _vlen(len(signature)), signature))
        if padding:
            plaintext += bytes(padding)
        aead = cs.aead
        ciphertext = aead.fresh(key).encrypt(
            _apply_reuse_guard(nonce, reuse_guard), plaintext, self._sd_aad + ad_len + ad
        )
        sd_key, sd_nonce = cs.sender_data_key_nonce(self._sd_key, ciphertext)
        encrypted_sender_data = aead.fresh(sd_key).encrypt(
            sd_nonce, leaf + generation.to_bytes(4, "big") + reuse_guard, self._sd_aad
        )
        return b"".join(
            (
                self._wire_head,
                ad_len,
                ad,
                _vlen(len(encrypted_sender_data)),
                encrypted_sender_data,
                _vlen(len(ciphertext)),
                ciphertext,
            )
        )

    def open_application(
        self, authenticated_data: bytes, encrypted_sender_data: bytes, ciphertext: bytes
    ) -> tuple[Sender, bytes]:
        """Decrypt and verify an application message of this epoch (fields from
        ``read_private_application``; the caller checked group and epoch). Returns the sender
        and the data; raises ``CryptoError``, ``ValidationError`` or ``DecodeError`` exactly
        where ``decrypt`` + ``verify_content_signature`` would."""
        cs = self.cs
        aead = cs.aead
        sd_aad = self._sd_aad
        sd_key, sd_nonce = cs.sender_data_key_nonce(self._sd_key, ciphertext)
        sender_data = _aead_open(aead, sd_key, sd_nonce, encrypted_sender_data, sd_aad)
        if len(sender_data) != 12:
            raise DecodeError(f"SenderData must be 12 bytes, got {len(sender_data)}")
        leaf = sender_data[:4]
        leaf_index = int.from_bytes(leaf, "big")
        generation = int.from_bytes(sender_data[4:8], "big")
        ratchet = self.secret_tree.application_ratchet(leaf_index)
        key, nonce = ratchet.get(generation)
        ad = authenticated_data
        ad_len = _vlen(len(ad))
        plain = _aead_open(
            aead, key, _apply_reuse_guard(nonce, sender_data[8:]), ciphertext, sd_aad + ad_len + ad
        )
        # Only a message that decrypted may use up the key (a forgery must not burn it).
        ratchet.consume(generation)
        r = Reader(plain)
        data = r.opaque()
        signature = r.opaque()
        if r.pos != r.end and plain[r.pos :].lstrip(b"\x00"):
            raise DecodeError("PrivateMessageContent padding is not all zero bytes")
        verify = self._verifiers.get(leaf_index)
        if verify is None:
            signature_key = self.signature_key_of(leaf_index)
            if signature_key is None:
                raise ValidationError(f"PrivateMessage from blank leaf {leaf_index}")
            verify = self._verifiers[leaf_index] = cs.signature.verifier(signature_key)
        if not verify(self._sign_content(leaf, ad_len, ad, data), signature):
            raise CryptoError("invalid FramedContent signature")
        sender = self._senders.get(leaf_index)
        if sender is None:
            sender = self._senders[leaf_index] = Sender.member(leaf_index)
        return sender, data


def _vlen(n: int) -> bytes:
    """The varint length prefix of an opaque<V> of ``n`` bytes."""
    return bytes((n,)) if n < 0x40 else encode_varint(n)


def _aead_open(aead: Aead, key: bytes, nonce: bytes, ct: bytes, aad: bytes) -> bytes:
    try:
        return aead.fresh(key).decrypt(nonce, ct, aad)
    except InvalidTag:
        raise CryptoError("AEAD authentication failed") from None
    except ValueError as e:  # as Aead.open
        raise CryptoError(f"AEAD open failed: {e}") from None
