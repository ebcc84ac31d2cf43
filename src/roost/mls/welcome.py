"""Welcome and the group secrets it carries (RFC 9420 section 12.4.3.1)."""

from __future__ import annotations

from dataclasses import dataclass

from .codec import Reader, Struct, Writer
from .psk import PreSharedKeyID
from .update_path import HPKECiphertext


@dataclass(frozen=True, slots=True)
class PathSecret(Struct):
    path_secret: bytes

    def encode_to(self, w: Writer) -> None:
        w.opaque(self.path_secret)

    @classmethod
    def decode_from(cls, r: Reader) -> PathSecret:
        return cls(r.opaque())


def _write_path_secret(w: Writer, secret: bytes) -> None:
    w.opaque(secret)


@dataclass(frozen=True, slots=True)
class GroupSecrets(Struct):
    joiner_secret: bytes
    # optional<PathSecret>: the bytes of PathSecret.path_secret, or None when absent.
    path_secret: bytes | None = None
    psks: tuple[PreSharedKeyID, ...] = ()

    def encode_to(self, w: Writer) -> None:
        w.opaque(self.joiner_secret)
        w.optional(self.path_secret, _write_path_secret)
        w.vector(self.psks, Struct.write)

    @classmethod
    def decode_from(cls, r: Reader) -> GroupSecrets:
        return cls(
            r.opaque(),
            r.optional(Reader.opaque),
            tuple(r.vector(PreSharedKeyID.decode_from)),
        )


@dataclass(frozen=True, slots=True)
class EncryptedGroupSecrets(Struct):
    new_member: bytes  # KeyPackageRef
    encrypted_group_secrets: HPKECiphertext

    def encode_to(self, w: Writer) -> None:
        w.opaque(self.new_member)
        self.encrypted_group_secrets.encode_to(w)

    @classmethod
    def decode_from(cls, r: Reader) -> EncryptedGroupSecrets:
        return cls(r.opaque(), HPKECiphertext.decode_from(r))


@dataclass(frozen=True, slots=True)
class Welcome(Struct):
    cipher_suite: int
    secrets: tuple[EncryptedGroupSecrets, ...]
    encrypted_group_info: bytes

    def find_secrets(self, key_package_ref: bytes) -> EncryptedGroupSecrets | None:
        for s in self.secrets:
            if s.new_member == key_package_ref:
                return s
        return None

    def encode_to(self, w: Writer) -> None:
        w.u16(self.cipher_suite)
        w.vector(self.secrets, Struct.write)
        w.opaque(self.encrypted_group_info)

    @classmethod
    def decode_from(cls, r: Reader) -> Welcome:
        return cls(r.u16(), tuple(r.vector(EncryptedGroupSecrets.decode_from)), r.opaque())
