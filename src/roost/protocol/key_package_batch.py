"""``MLSMessage key_packages<V>`` (docs/api.md, "KeyPackages": the publish body and the claim
answer), and the MLS vector framing it uses."""

from __future__ import annotations

from collections.abc import Iterable

from roost.mls.codec import Reader, encode_varint
from roost.mls.errors import DecodeError
from roost.mls.framing import MLSMessage
from roost.mls.key_package import KeyPackage


def join_mls_vector(items: Iterable[bytes]) -> bytes:
    """Encode already-encoded items as one MLS variable-length vector."""
    payload = b"".join(items)
    return encode_varint(len(payload)) + payload


def mls_vector_reader(body: bytes) -> Reader:
    """A Reader over the items of an MLS vector ``T items<V>``; the outer length must be exact."""
    r = Reader(body)
    n = r.varint()
    if n != r.remaining():
        raise DecodeError(f"vector length {n} does not match the {r.remaining()} bytes that follow")
    return r


def encode_key_package_batch(key_packages: Iterable[KeyPackage | bytes]) -> bytes:
    """``MLSMessage key_packages<V>``; items may be KeyPackages or already-encoded MLSMessages."""
    return join_mls_vector(
        kp if isinstance(kp, bytes) else MLSMessage(kp).encode() for kp in key_packages
    )


def decode_key_package_batch(body: bytes) -> list[KeyPackage]:
    """Decode a batch; raises DecodeError on anything but key_package MLSMessages."""
    r = Reader(body)
    messages = r.vector(MLSMessage.decode_from)
    r.finish()
    out: list[KeyPackage] = []
    for m in messages:
        if not isinstance(m.body, KeyPackage):
            raise DecodeError(f"expected a KeyPackage, got wire format {m.wire_format}")
        out.append(m.body)
    return out
