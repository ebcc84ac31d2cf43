"""Commit (RFC 9420 section 12.4)."""

from __future__ import annotations

from dataclasses import dataclass

from .codec import Reader, Struct, Writer
from .proposals import ProposalOrRef
from .update_path import UpdatePath


@dataclass(frozen=True, slots=True)
class Commit(Struct):
    proposals: tuple[ProposalOrRef, ...] = ()
    path: UpdatePath | None = None

    def encode_to(self, w: Writer) -> None:
        w.vector(self.proposals, Struct.write)
        w.optional(self.path, Struct.write)

    @classmethod
    def decode_from(cls, r: Reader) -> Commit:
        return cls(tuple(r.vector(ProposalOrRef.decode_from)), r.optional(UpdatePath.decode_from))
