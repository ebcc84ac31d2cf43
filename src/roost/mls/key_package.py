"""KeyPackage (RFC 9420 section 10)."""

from __future__ import annotations

from dataclasses import dataclass

from .codec import Memoized, Reader, Writer, _memo_of, _set_memo
from .extensions import Extension, read_extensions, write_extensions
from .leaf_node import LeafNode


@dataclass(frozen=True, slots=True)
class KeyPackage(Memoized):
    """The memo holds the KeyPackageTBS encoding (everything but the signature)."""

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
        tbs = _memo_of(self)
        if tbs is None:
            w = Writer()
            self._encode_tbs(w)
            tbs = bytes(w.buf)
            _set_memo(self, tbs)
        return tbs

    def encode_to(self, w: Writer) -> None:
        w.fixed(self.tbs())
        w.opaque(self.signature)

    @classmethod
    def decode_from(cls, r: Reader) -> KeyPackage:
        start = r.pos
        version, suite, init_key = r.u16(), r.u16(), r.opaque()
        leaf = LeafNode.decode_from(r)
        extensions = read_extensions(r)
        tbs = r.data[start : r.pos]  # canonical (strict decoder): equal to re-encoding
        kp = cls(version, suite, init_key, leaf, extensions, r.opaque())
        _set_memo(kp, tbs)
        return kp
