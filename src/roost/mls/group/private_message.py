"""PrivateMessage encryption and decryption for a member (RFC 9420 section 6.3).

Signatures are checked by the caller (the group), which knows the sender's key; this module
only moves between ``PrivateMessage`` and ``AuthenticatedContent``.
"""

from __future__ import annotations

import os

from ..constants import WireFormat
from ..errors import DecodeError, ValidationError
from ..framing import (
    AuthenticatedContent,
    FramedContent,
    PrivateMessage,
    PrivateMessageContent,
    Sender,
    SenderData,
)
from ..secret_tree import SecretTree, sender_data_key_nonce


def _guarded(nonce: bytes, reuse_guard: bytes) -> bytes:
    head = bytes(a ^ b for a, b in zip(nonce[:4], reuse_guard, strict=True))
    return head + nonce[4:]


def encrypt(
    cs,
    secret_tree: SecretTree,
    sender_data_secret: bytes,
    ac: AuthenticatedContent,
    padding: int = 0,
) -> PrivateMessage:
    content = ac.content
    sender = content.sender
    ctype = content.content_type
    generation, key, nonce = secret_tree.ratchet(sender.index, ctype).next()
    reuse_guard = os.urandom(4)
    pm_unsealed = PrivateMessage(
        content.group_id, content.epoch, ctype, content.authenticated_data, b"", b""
    )
    plaintext = PrivateMessageContent(content.content, ac.auth, padding).encode()
    ciphertext = cs.aead_seal(
        key, _guarded(nonce, reuse_guard), pm_unsealed.content_aad(), plaintext
    )
    sd_key, sd_nonce = sender_data_key_nonce(cs, sender_data_secret, ciphertext)
    sender_data = SenderData(sender.index, generation, reuse_guard).encode()
    encrypted_sender_data = cs.aead_seal(
        sd_key, sd_nonce, pm_unsealed.sender_data_aad(), sender_data
    )
    return PrivateMessage(
        content.group_id,
        content.epoch,
        ctype,
        content.authenticated_data,
        encrypted_sender_data,
        ciphertext,
    )


def decrypt(
    cs, secret_tree: SecretTree, sender_data_secret: bytes, pm: PrivateMessage
) -> AuthenticatedContent:
    """Open ``pm``; raises CryptoError (AEAD), DecodeError or ValidationError. The ratchet key
    is consumed only after the content decrypted, so a forgery cannot burn it."""
    sd_key, sd_nonce = sender_data_key_nonce(cs, sender_data_secret, pm.ciphertext)
    sd = SenderData.decode(
        cs.aead_open(sd_key, sd_nonce, pm.sender_data_aad(), pm.encrypted_sender_data)
    )
    if sd.leaf_index >= secret_tree.n_leaves:
        raise ValidationError(f"PrivateMessage from leaf {sd.leaf_index} outside the tree")
    ratchet = secret_tree.ratchet(sd.leaf_index, pm.content_type)
    key, nonce = ratchet.get(sd.generation)
    plaintext = cs.aead_open(key, _guarded(nonce, sd.reuse_guard), pm.content_aad(), pm.ciphertext)
    ratchet.consume(sd.generation)
    try:
        pmc = PrivateMessageContent.decode_for(plaintext, pm.content_type)
    except DecodeError:
        raise
    content = FramedContent(
        pm.group_id, pm.epoch, Sender.member(sd.leaf_index), pm.authenticated_data, pmc.content
    )
    return AuthenticatedContent(WireFormat.PRIVATE_MESSAGE, content, pmc.auth)
