"""HKDF (RFC 5869) on ``hmac.digest``: one C call per block, no per-call objects.

Why not ``cryptography``'s HKDF: building an HKDF object per derivation costs several
microseconds, and MLS derives a handful of secrets per message on the hot path.
"""

from __future__ import annotations

import hmac


def extract(hash_name: str, hash_len: int, salt: bytes, ikm: bytes) -> bytes:
    # RFC 5869: an empty salt is the same as HashLen zero bytes.
    return hmac.digest(salt or bytes(hash_len), ikm, hash_name)


def expand(hash_name: str, hash_len: int, prk: bytes, info: bytes, n: int) -> bytes:
    if n <= hash_len:
        # The common case: a single block.
        return hmac.digest(prk, info + b"\x01", hash_name)[:n]
    if n > 255 * hash_len:
        raise ValueError("HKDF-Expand output too long")
    out = bytearray()
    block = b""
    counter = 1
    while len(out) < n:
        block = hmac.digest(prk, block + info + bytes((counter,)), hash_name)
        out += block
        counter += 1
    return bytes(out[:n])
