"""Small wire helpers shared by the modules: base64url, MLS vectors of MLSMessages, queue batches."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable

from roost.mls.codec import Reader, Writer, encode_varint
from roost.mls.errors import DecodeError

MLS_MEDIA_TYPE = "message/mls"
MESSAGES_MEDIA_TYPE = "application/vnd.roost.messages"


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64u(text: str) -> bytes:
    """Decode base64url with or without padding; raises ValueError on bad input."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"invalid base64url: {e}") from None


def mls_vector_reader(body: bytes) -> Reader:
    """A Reader over the items of an MLS vector ``T items<V>``; the outer length must be exact."""
    r = Reader(body)
    n = r.varint()
    if n != r.remaining():
        raise DecodeError(f"vector length {n} does not match the {r.remaining()} bytes that follow")
    return r


def join_mls_vector(items: Iterable[bytes]) -> bytes:
    """Encode already-encoded items as one MLS variable-length vector."""
    payload = b"".join(items)
    return encode_varint(len(payload)) + payload


def encode_message_batch(entries: Iterable[tuple[int, bytes]]) -> bytes:
    """Queue fetch body: ``uint64 seq || opaque payload<V>`` per entry."""
    w = Writer()
    for seq, payload in entries:
        w.u64(seq)
        w.opaque(payload)
    return w.getvalue()


def decode_message_batch(body: bytes) -> list[tuple[int, bytes]]:
    r = Reader(body)
    out: list[tuple[int, bytes]] = []
    while r.remaining():
        seq = r.u64()
        out.append((seq, r.opaque()))
    return out
