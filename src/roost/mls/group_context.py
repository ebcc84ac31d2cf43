"""GroupContext (RFC 9420 section 8.1)."""

from __future__ import annotations

from dataclasses import dataclass

from .codec import Reader, Struct, Writer
from .extensions import Extension, read_extensions, write_extensions


@dataclass(frozen=True, slots=True)
class GroupContext(Struct):
    version: int
    cipher_suite: int
    group_id: bytes
    epoch: int
    tree_hash: bytes
    confirmed_transcript_hash: bytes
    extensions: tuple[Extension, ...] = ()

    def encode_to(self, w: Writer) -> None:
        w.u16(self.version)
        w.u16(self.cipher_suite)
        w.opaque(self.group_id)
        w.u64(self.epoch)
        w.opaque(self.tree_hash)
        w.opaque(self.confirmed_transcript_hash)
        write_extensions(w, self.extensions)

    @classmethod
    def decode_from(cls, r: Reader) -> GroupContext:
        return cls(
            r.u16(),
            r.u16(),
            r.opaque(),
            r.u64(),
            r.opaque(),
            r.opaque(),
            read_extensions(r),
        )
