"""KeyPackage (RFC 9420 section 10)."""

from __future__ import annotations

from dataclasses import dataclass

from .codec import Reader, Struct, Writer
from .extensions import Extension, read_extensions, write_extensions
from .leaf_node import LeafNode


@dataclass(frozen=True, slots=True)
class KeyPackage(Struct):
    # version and cipher_suite stay ints: an unknown value is a validation failure
    # (section 10.1), not a malformed encoding.
    version: int
    cipher_suite: int
    init_key: bytes
    leaf_node: LeafNode
    extensions: tuple[Extension, ...] = ()
    signature: bytes = b""

    def _encode_tbs(self, w: Writer) -> None:
        w.u16(self.version)
        w.u16(self.cipher_suite)
        w.opaque(self.init_key)
        self.leaf_node.encode_to(w)
        write_extensions(w, self.extensions)

    def tbs(self) -> bytes:
        """KeyPackageTBS: everything but the signature (signed with label "KeyPackageTBS")."""
        w = Writer()
        self._encode_tbs(w)
        return w.getvalue()

    def encode_to(self, w: Writer) -> None:
        self._encode_tbs(w)
        w.opaque(self.signature)

    @classmethod
    def decode_from(cls, r: Reader) -> KeyPackage:
        return cls(
            r.u16(),
            r.u16(),
            r.opaque(),
            LeafNode.decode_from(r),
            read_extensions(r),
            r.opaque(),
        )
