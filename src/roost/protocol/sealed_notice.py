"""A server notice sealed under the group key (docs/api.md, "What member queues receive"): what
the DS puts in a member's queue for a group whose members hold a group key, so a queue row
does not say which user a notice names in which group.

    item_type = 3 (ITEM_SEALED_NOTICE); body = nonce (12 bytes) || AES-256-GCM ciphertext
    key  = HKDF-SHA256(ikm = group key, salt = none, info = "roost sealed notice v1"), 32 bytes
    aad  = "roost sealed notice v1" || group_id
    plaintext = an encoded SignedNotice (signed_notice.py), verified as an unsealed one is

Groups without a group key keep item type 2 (the notice in the clear).
"""

from __future__ import annotations

import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

LABEL = b"roost sealed notice v1"
_NONCE = 12


def _cipher(group_key: bytes) -> AESGCM:
    return AESGCM(HKDF(hashes.SHA256(), 32, salt=None, info=LABEL).derive(group_key))


def seal_notice(group_key: bytes, group_id: bytes, signed_notice: bytes) -> bytes:
    nonce = secrets.token_bytes(_NONCE)
    return nonce + _cipher(group_key).encrypt(nonce, signed_notice, LABEL + group_id)


def open_notice(group_key: bytes, group_id: bytes, body: bytes) -> bytes | None:
    """The encoded SignedNotice, or None if ``body`` was not sealed under this key and group."""
    try:
        return _cipher(group_key).decrypt(body[:_NONCE], body[_NONCE:], LABEL + group_id)
    except (InvalidTag, ValueError):
        return None
