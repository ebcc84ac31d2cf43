"""LeafNode, Capabilities and Lifetime (RFC 9420 section 7.2)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from .codec import Memoized, Reader, Struct, Writer, _memo_of, _set_memo, enum_value, unpack_u16s
from .constants import LeafNodeSource
from .credential import Credential
from .errors import DecodeError
from .extensions import Extension, read_extensions, write_extensions


@dataclass(frozen=True, slots=True)
class Capabilities(Struct):
    versions: tuple[int, ...] = (1,)
    cipher_suites: tuple[int, ...] = (1,)
    extensions: tuple[int, ...] = ()
    proposals: tuple[int, ...] = ()
    credentials: tuple[int, ...] = (1, 2)

    def encode_to(self, w: Writer) -> None:
        for field in (
            self.versions,
            self.cipher_suites,
            self.extensions,
            self.proposals,
            self.credentials,
        ):
            w.vector(field, Writer.u16)

    @classmethod
    def decode_from(cls, r: Reader) -> Capabilities:
        # Most leaves of a group carry byte-identical capabilities: intern the decoded
        # (immutable) value by its encoding and skip the five list decodes on a hit.
        start = r.pos
        raws = [r.opaque() for _ in range(5)]
        encoded = r.data[start : r.pos]
        caps = _INTERNED_CAPABILITIES.get(encoded)
        if caps is None:
            if any(len(raw) & 1 for raw in raws):
                raise DecodeError("uint16 vector with odd byte length")
            caps = cls(*(unpack_u16s(raw) for raw in raws))
            if len(_INTERNED_CAPABILITIES) >= _INTERNED_MAX:
                _INTERNED_CAPABILITIES.clear()
            _INTERNED_CAPABILITIES[encoded] = caps
        return caps


_INTERNED_CAPABILITIES: dict[bytes, Capabilities] = {}
_INTERNED_MAX = 256


@dataclass(frozen=True, slots=True)
class Lifetime(Struct):
    not_before: int
    not_after: int

    def encode_to(self, w: Writer) -> None:
        w.u64(self.not_before)
        w.u64(self.not_after)

    @classmethod
    def decode_from(cls, r: Reader) -> Lifetime:
        return cls(r.u64(), r.u64())


class LeafNodeChanges(TypedDict, total=False):
    """The fields a member may choose for its own new leaf (Update or commit path); the
    encryption key, source, lifetime, parent hash and signature are the caller's to set."""

    signature_key: bytes
    credential: Credential
    capabilities: Capabilities
    extensions: tuple[Extension, ...]


@dataclass(frozen=True, slots=True)
class LeafNode(Memoized):
    """The memo holds the LeafNodeContent encoding (everything but the signature): tree
    hashes, LeafNodeTBS and KeyPackage encodings reuse it."""

    encryption_key: bytes
    signature_key: bytes
    credential: Credential
    capabilities: Capabilities
    leaf_node_source: LeafNodeSource
    lifetime: Lifetime | None = None  # key_package source only
    parent_hash: bytes = b""  # commit source only
    extensions: tuple[Extension, ...] = ()
    signature: bytes = b""

    def _encode_content(self, w: Writer) -> None:
        w.opaque(self.encryption_key)
        w.opaque(self.signature_key)
        self.credential.encode_to(w)
        self.capabilities.encode_to(w)
        w.u8(self.leaf_node_source)
        if self.leaf_node_source == LeafNodeSource.KEY_PACKAGE:
            assert self.lifetime is not None, "key_package leaf needs a lifetime"
            self.lifetime.encode_to(w)
        elif self.leaf_node_source == LeafNodeSource.COMMIT:
            w.opaque(self.parent_hash)
        write_extensions(w, self.extensions)

    def content_bytes(self) -> bytes:
        """The LeafNodeContent encoding (memoised: the node is immutable)."""
        content = _memo_of(self)
        if content is None:
            w = Writer()
            self._encode_content(w)
            content = bytes(w.buf)
            _set_memo(self, content)
        return content

    def encode_to(self, w: Writer) -> None:
        w.fixed(self.content_bytes())
        w.opaque(self.signature)

    def tbs(self, group_id: bytes | None = None, leaf_index: int | None = None) -> bytes:
        """LeafNodeTBS: group id and leaf index are bound for update and commit sources."""
        content = self.content_bytes()
        if self.leaf_node_source == LeafNodeSource.KEY_PACKAGE:
            return content
        if group_id is None or leaf_index is None:
            raise ValueError("update/commit leaf TBS needs group_id and leaf_index")
        w = Writer()
        w.fixed(content)
        w.opaque(group_id)
        w.u32(leaf_index)
        return w.getvalue()

    @classmethod
    def decode_from(cls, r: Reader) -> LeafNode:
        start = r.pos
        encryption_key = r.opaque()
        signature_key = r.opaque()
        credential = Credential.decode_from(r)
        capabilities = Capabilities.decode_from(r)
        source = enum_value(LeafNodeSource, r.u8(), "leaf node source")
        lifetime = None
        parent_hash = b""
        if source == LeafNodeSource.KEY_PACKAGE:
            lifetime = Lifetime.decode_from(r)
        elif source == LeafNodeSource.COMMIT:
            parent_hash = r.opaque()
        extensions = read_extensions(r)
        # The strict decoder accepts only canonical encodings, so these bytes are exactly
        # what encoding the node would produce.
        content = r.data[start : r.pos]
        signature = r.opaque()
        node = cls(
            encryption_key,
            signature_key,
            credential,
            capabilities,
            source,
            lifetime,
            parent_hash,
            extensions,
            signature,
        )
        _set_memo(node, content)
        return node
