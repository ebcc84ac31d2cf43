"""HPKECiphertext, UpdatePathNode and UpdatePath (RFC 9420 section 7.6)."""

from __future__ import annotations

from dataclasses import dataclass

from .codec import Reader, Struct, Writer
from .leaf_node import LeafNode


@dataclass(frozen=True, slots=True)
class HPKECiphertext(Struct):
    kem_output: bytes
    ciphertext: bytes

    def encode_to(self, w: Writer) -> None:
        w.opaque(self.kem_output)
        w.opaque(self.ciphertext)

    @classmethod
    def decode_from(cls, r: Reader) -> HPKECiphertext:
        return cls(r.opaque(), r.opaque())


@dataclass(frozen=True, slots=True)
class UpdatePathNode(Struct):
    encryption_key: bytes
    # One ciphertext per node in the resolution of the copath child, in resolution order.
    encrypted_path_secret: tuple[HPKECiphertext, ...] = ()

    def encode_to(self, w: Writer) -> None:
        w.opaque(self.encryption_key)
        w.vector(self.encrypted_path_secret, Struct.write)

    @classmethod
    def decode_from(cls, r: Reader) -> UpdatePathNode:
        return cls(r.opaque(), tuple(r.vector(HPKECiphertext.decode_from)))


@dataclass(frozen=True, slots=True)
class UpdatePath(Struct):
    leaf_node: LeafNode
    nodes: tuple[UpdatePathNode, ...] = ()

    def encode_to(self, w: Writer) -> None:
        self.leaf_node.encode_to(w)
        w.vector(self.nodes, Struct.write)

    @classmethod
    def decode_from(cls, r: Reader) -> UpdatePath:
        return cls(LeafNode.decode_from(r), tuple(r.vector(UpdatePathNode.decode_from)))
