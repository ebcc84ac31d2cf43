"""Wire helpers for the client: base64url, MLS vectors of MLSMessages, queue fetch batches."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable

from roost.mls.codec import Reader, Writer, encode_varint
from roost.mls.framing import MLSMessage
from roost.mls.key_package import KeyPackage

MLS_MEDIA_TYPE = "message/mls"
MESSAGES_MEDIA_TYPE = "application/vnd.roost.messages"
PROBLEM_MEDIA_TYPE = "application/problem+json"


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64u(text: str) -> bytes:
    """Decode base64url with or without padding; raises ValueError on bad input."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"invalid base64url: {e}") from None


def opaque_concat(*parts: bytes) -> bytes:
    """``opaque a<V> || opaque b<V> || ...`` (the signed contents of the auth proofs)."""
    w = Writer()
    for p in parts:
        w.opaque(p)
    return w.getvalue()


def encode_key_package_batch(key_packages: Iterable[KeyPackage | bytes]) -> bytes:
    """``MLSMessage key_packages<V>``; items may be KeyPackages or already-encoded MLSMessages."""
    encoded = [kp if isinstance(kp, bytes) else MLSMessage(kp).encode() for kp in key_packages]
    payload = b"".join(encoded)
    return encode_varint(len(payload)) + payload


def decode_key_package_batch(body: bytes) -> list[KeyPackage]:
    """Decode a claim answer; raises DecodeError on anything but key_package MLSMessages."""
    from roost.mls.errors import DecodeError

    r = Reader(body)
    messages = r.vector(MLSMessage.decode_from)
    r.finish()
    out: list[KeyPackage] = []
    for m in messages:
        if not isinstance(m.body, KeyPackage):
            raise DecodeError(f"expected a KeyPackage, got wire format {m.wire_format}")
        out.append(m.body)
    return out


def decode_message_batch(body: bytes) -> list[tuple[int, bytes]]:
    """Queue fetch body: ``uint64 seq || opaque payload<V>`` per entry."""
    r = Reader(body)
    out: list[tuple[int, bytes]] = []
    while r.remaining():
        seq = r.u64()
        out.append((seq, r.opaque()))
    return out
