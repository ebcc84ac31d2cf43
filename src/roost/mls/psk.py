"""Pre-shared keys (RFC 9420 section 8.4).

- ``PreSharedKeyID``: the wire codec (external: ``psk_id``; resumption: ``usage``,
  ``psk_group_id``, ``psk_epoch``; both carry ``psk_nonce``), with ``external()`` and
  ``resumption()`` constructors.
- ``psk_label(id, index, count)``: the encoded ``PSKLabel``.
- ``psk_secret(cs, [(PreSharedKeyID, psk_bytes), ...])``: the chained ``psk_secret`` fed into
  the key schedule (``Nh`` zero bytes when the list is empty).
- ``check_psk_nonce(cs, id)``: a nonce must be ``Nh`` bytes long (section 8.4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .codec import Reader, Struct, Writer, enum_value
from .constants import PSKType, ResumptionPSKUsage
from .crypto.ciphersuite import CipherSuite
from .errors import DecodeError, ValidationError


@dataclass(frozen=True, slots=True)
class PreSharedKeyID(Struct):
    psktype: PSKType
    psk_nonce: bytes
    psk_id: bytes = b""  # external
    usage: ResumptionPSKUsage | None = None  # resumption
    psk_group_id: bytes = b""  # resumption
    psk_epoch: int = 0  # resumption

    @classmethod
    def external(cls, psk_id: bytes, psk_nonce: bytes) -> PreSharedKeyID:
        return cls(PSKType.EXTERNAL, psk_nonce, psk_id=psk_id)

    @classmethod
    def resumption(
        cls, usage: ResumptionPSKUsage, group_id: bytes, epoch: int, psk_nonce: bytes
    ) -> PreSharedKeyID:
        return cls(
            PSKType.RESUMPTION, psk_nonce, usage=usage, psk_group_id=group_id, psk_epoch=epoch
        )

    def encode_to(self, w: Writer) -> None:
        w.u8(self.psktype)
        if self.psktype == PSKType.EXTERNAL:
            w.opaque(self.psk_id)
        elif self.psktype == PSKType.RESUMPTION:
            if self.usage is None:
                raise ValueError("resumption PSK id needs a usage")
            w.u8(self.usage)
            w.opaque(self.psk_group_id)
            w.u64(self.psk_epoch)
        else:
            raise ValueError(f"cannot encode psk type {self.psktype}")
        w.opaque(self.psk_nonce)

    @classmethod
    def decode_from(cls, r: Reader) -> PreSharedKeyID:
        t = r.u8()
        if t == PSKType.EXTERNAL:
            psk_id = r.opaque()
            return cls(PSKType.EXTERNAL, r.opaque(), psk_id=psk_id)
        if t == PSKType.RESUMPTION:
            usage = enum_value(ResumptionPSKUsage, r.u8(), "resumption PSK usage")
            group_id = r.opaque()
            epoch = r.u64()
            return cls(
                PSKType.RESUMPTION, r.opaque(), usage=usage, psk_group_id=group_id, psk_epoch=epoch
            )
        raise DecodeError(f"unknown psk type {t}")


def psk_label(psk_id: PreSharedKeyID, index: int, count: int) -> bytes:
    """``struct { PreSharedKeyID id; uint16 index; uint16 count; } PSKLabel``."""
    w = Writer()
    psk_id.encode_to(w)
    w.u16(index)
    w.u16(count)
    return w.getvalue()


def check_psk_nonce(cs: CipherSuite, psk_id: PreSharedKeyID) -> None:
    if len(psk_id.psk_nonce) != cs.hash_len:
        raise ValidationError(f"psk_nonce must be {cs.hash_len} bytes, got {len(psk_id.psk_nonce)}")


def psk_secret(cs: CipherSuite, psks: Sequence[tuple[PreSharedKeyID, bytes]]) -> bytes:
    """Chain the PSKs in order (section 8.4); ``psks`` pairs each id with its secret."""
    secret = cs.zero
    count = len(psks)
    for index, (psk_id, psk) in enumerate(psks):
        extracted = cs.kdf_extract(cs.zero, psk)
        psk_input = cs.expand_with_label(
            extracted, b"derived psk", psk_label(psk_id, index, count), cs.hash_len
        )
        secret = cs.kdf_extract(psk_input, secret)
    return secret
