"""A server notice sealed under the group key (queue item type 3, docs/api.md "What member
queues receive"): it opens with the group's key and id only, and its layout is the documented
one (nonce || AES-256-GCM under HKDF-SHA256 of the key, no salt, the label as info and, with
the group id, as aad)."""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from roost.mls import get_cipher_suite
from roost.protocol.sealed_notice import LABEL, open_notice, seal_notice
from roost.protocol.signed_notice import sign_notice, verify_notice

GID = b"group-one@localhost"
KEY = bytes(range(32))


def _signed() -> tuple[bytes, bytes]:
    cs = get_cipher_suite(1)
    priv, pub = cs.generate_signature_key_pair()
    notice = {"type": "display_name_changed", "group_id": "Z3JvdXA", "user_id": "bob@localhost"}
    return sign_notice(cs, priv, notice), pub


def test_round_trip_gives_the_signed_notice_back_verifiable():
    signed, pub = _signed()
    body = seal_notice(KEY, GID, signed)
    assert len(body) == 12 + len(signed) + 16  # nonce, ciphertext, GCM tag
    assert signed not in body
    opened = open_notice(KEY, GID, body)
    assert opened == signed
    assert verify_notice(get_cipher_suite(1), pub, opened)["type"] == "display_name_changed"
    again = seal_notice(KEY, GID, signed)
    assert again != body and open_notice(KEY, GID, again) == signed  # a fresh nonce each time


def test_the_layout_is_the_documented_one():
    """Opened here from the spec alone: HKDF-SHA256 (RFC 5869) with no salt, i.e. a zero salt
    of the hash length, and one output block."""
    signed, _ = _signed()
    body = seal_notice(KEY, GID, signed)
    prk = hmac.new(b"\x00" * 32, KEY, hashlib.sha256).digest()
    key = hmac.new(prk, b"roost sealed notice v1" + b"\x01", hashlib.sha256).digest()
    assert LABEL == b"roost sealed notice v1"
    assert AESGCM(key).decrypt(body[:12], body[12:], LABEL + GID) == signed


def test_another_key_group_or_a_damaged_body_opens_to_none():
    signed, _ = _signed()
    body = seal_notice(KEY, GID, signed)
    assert open_notice(bytes(32), GID, body) is None
    assert open_notice(KEY, b"group-two@localhost", body) is None
    assert open_notice(KEY, GID + b"x", body) is None
    tampered = bytearray(body)
    tampered[20] ^= 1
    assert open_notice(KEY, GID, bytes(tampered)) is None
    for truncated in (body[:-1], body[:28], body[:12], body[:5], b""):
        assert open_notice(KEY, GID, truncated) is None
    # The clear notice (item type 2's body) is not a sealed one.
    assert open_notice(KEY, GID, signed) is None
