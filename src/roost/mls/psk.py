"""Pre-shared keys (RFC 9420 section 8.4).

Minimal codec for ``PreSharedKeyID`` written by the codec helper so that proposals and
GroupSecrets can use it; the crypto helper owns this module and adds ``psk_secret``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .codec import Reader, Struct, Writer, enum_value
from .constants import PSKType, ResumptionPSKUsage
from .errors import DecodeError


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
