"""GroupInfo (RFC 9420 section 12.4.3)."""

from __future__ import annotations

from dataclasses import dataclass

from .codec import Reader, Struct, Writer
from .extensions import Extension, read_extensions, write_extensions
from .group_context import GroupContext


@dataclass(frozen=True, slots=True)
class GroupInfo(Struct):
    group_context: GroupContext
    extensions: tuple[Extension, ...]
    confirmation_tag: bytes
    signer: int  # leaf index of the signing member
    signature: bytes = b""

    def _encode_tbs(self, w: Writer) -> None:
        self.group_context.encode_to(w)
        write_extensions(w, self.extensions)
        w.opaque(self.confirmation_tag)
        w.u32(self.signer)

    def tbs(self) -> bytes:
        """GroupInfoTBS: everything but the signature (signed with label "GroupInfoTBS")."""
        w = Writer()
        self._encode_tbs(w)
        return w.getvalue()

    def encode_to(self, w: Writer) -> None:
        self._encode_tbs(w)
        w.opaque(self.signature)

    @classmethod
    def decode_from(cls, r: Reader) -> GroupInfo:
        return cls(
            GroupContext.decode_from(r),
            read_extensions(r),
            r.opaque(),
            r.u32(),
            r.opaque(),
        )
