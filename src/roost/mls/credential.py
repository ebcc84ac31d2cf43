"""Credential (RFC 9420 section 5.3): basic and x509."""

from __future__ import annotations

from dataclasses import dataclass

from .codec import Reader, Struct, Writer
from .constants import CredentialType
from .errors import DecodeError


@dataclass(frozen=True, slots=True)
class Credential(Struct):
    credential_type: int
    identity: bytes = b""  # basic
    certificates: tuple[bytes, ...] = ()  # x509: DER, leaf first

    @classmethod
    def basic(cls, identity: bytes) -> Credential:
        return cls(CredentialType.BASIC, identity=identity)

    @classmethod
    def x509(cls, chain: list[bytes] | tuple[bytes, ...]) -> Credential:
        return cls(CredentialType.X509, certificates=tuple(chain))

    def encode_to(self, w: Writer) -> None:
        w.u16(self.credential_type)
        if self.credential_type == CredentialType.BASIC:
            w.opaque(self.identity)
        elif self.credential_type == CredentialType.X509:
            w.vector(self.certificates, Writer.opaque)
        else:
            raise ValueError(f"cannot encode credential type {self.credential_type}")

    @classmethod
    def decode_from(cls, r: Reader) -> Credential:
        ctype = r.u16()
        if ctype == CredentialType.BASIC:
            return cls(ctype, identity=r.opaque())
        if ctype == CredentialType.X509:
            certs = r.vector(Reader.opaque)
            if not certs:
                raise DecodeError("x509 credential with no certificates")
            return cls(ctype, certificates=tuple(certs))
        raise DecodeError(f"unknown credential type {ctype}")
