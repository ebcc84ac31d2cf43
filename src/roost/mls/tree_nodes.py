"""Ratchet tree nodes on the wire (RFC 9420 sections 7.1, 7.2 and 12.4.3.3).

``decode_ratchet_tree`` reads ``optional<Node> ratchet_tree<V>`` and enforces the structure
the RFC fixes for the array form: leaves at even indices, parent nodes at odd indices, and a
non-blank last entry (senders must drop trailing blanks, receivers must check).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .codec import Reader, Struct, Writer, encode_varint
from .constants import NodeType
from .errors import DecodeError
from .leaf_node import LeafNode


def _write_u32(w: Writer, v: int) -> None:
    w.u32(v)


@dataclass(frozen=True, slots=True)
class ParentNode(Struct):
    encryption_key: bytes
    parent_hash: bytes = b""
    unmerged_leaves: tuple[int, ...] = ()

    def encode_to(self, w: Writer) -> None:
        w.opaque(self.encryption_key)
        w.opaque(self.parent_hash)
        w.vector(self.unmerged_leaves, _write_u32)

    @classmethod
    def decode_from(cls, r: Reader) -> ParentNode:
        encryption_key = r.opaque()
        parent_hash = r.opaque()
        raw = r.opaque()
        if len(raw) % 4:
            raise DecodeError(f"unmerged_leaves length {len(raw)} is not a multiple of 4")
        # One slice per entry instead of a Reader call per uint32: this is on the hot path.
        leaves = tuple(int.from_bytes(raw[i : i + 4], "big") for i in range(0, len(raw), 4))
        return cls(encryption_key, parent_hash, leaves)


@dataclass(frozen=True, slots=True)
class Node(Struct):
    """The ``Node`` select: exactly one of ``leaf_node`` / ``parent_node`` is set."""

    node_type: NodeType
    leaf_node: LeafNode | None = None
    parent_node: ParentNode | None = None

    @classmethod
    def leaf(cls, leaf_node: LeafNode) -> Node:
        return cls(NodeType.LEAF, leaf_node=leaf_node)

    @classmethod
    def parent(cls, parent_node: ParentNode) -> Node:
        return cls(NodeType.PARENT, parent_node=parent_node)

    @classmethod
    def of(cls, value: Node | LeafNode | ParentNode) -> Node:
        if isinstance(value, Node):
            return value
        if isinstance(value, LeafNode):
            return cls.leaf(value)
        if isinstance(value, ParentNode):
            return cls.parent(value)
        raise TypeError(f"not a tree node: {type(value).__name__}")

    @property
    def value(self) -> LeafNode | ParentNode:
        v = self.leaf_node if self.node_type == NodeType.LEAF else self.parent_node
        assert v is not None
        return v

    @property
    def encryption_key(self) -> bytes:
        return self.value.encryption_key

    def encode_to(self, w: Writer) -> None:
        w.u8(self.node_type)
        if self.node_type == NodeType.LEAF:
            if self.leaf_node is None:
                raise ValueError("leaf Node without leaf_node")
            self.leaf_node.encode_to(w)
        elif self.node_type == NodeType.PARENT:
            if self.parent_node is None:
                raise ValueError("parent Node without parent_node")
            self.parent_node.encode_to(w)
        else:
            raise ValueError(f"cannot encode node type {self.node_type}")

    @classmethod
    def decode_from(cls, r: Reader) -> Node:
        t = r.u8()
        if t == NodeType.LEAF:
            return cls(NodeType.LEAF, leaf_node=LeafNode.decode_from(r))
        if t == NodeType.PARENT:
            return cls(NodeType.PARENT, parent_node=ParentNode.decode_from(r))
        raise DecodeError(f"unknown node type {t}")


TreeEntry = Node | LeafNode | ParentNode | None


def _write_optional_node(w: Writer, node: TreeEntry) -> None:
    w.optional(None if node is None else Node.of(node), Struct.write)


def write_ratchet_tree(w: Writer, nodes: Sequence[TreeEntry]) -> None:
    """Write ``optional<Node> ratchet_tree<V>``; trailing blank entries are dropped (12.4.3.3)."""
    end = len(nodes)
    while end and nodes[end - 1] is None:
        end -= 1
    w.vector(nodes[:end], _write_optional_node)


def encode_ratchet_tree(nodes: Sequence[TreeEntry]) -> bytes:
    """Encode the ratchet tree array (entries may be Node, LeafNode, ParentNode or None)."""
    # Hot (every GroupInfo and state save): one buffer, no Node wrapper or inner Writer
    # per entry; a LeafNode's memoised content is copied as is.
    end = len(nodes)
    while end and nodes[end - 1] is None:
        end -= 1
    w = Writer()
    for node in nodes[:end]:
        if node is None:
            w.buf.append(0)
            continue
        if isinstance(node, Node):
            node = node.value
        if isinstance(node, LeafNode):
            w.buf += _PRESENT_LEAF
        elif isinstance(node, ParentNode):
            w.buf += _PRESENT_PARENT
        else:
            raise TypeError(f"not a tree node: {type(node).__name__}")
        node.encode_to(w)
    return encode_varint(len(w.buf)) + w.buf


_PRESENT_LEAF = bytes((1, NodeType.LEAF))
_PRESENT_PARENT = bytes((1, NodeType.PARENT))


def _read_optional_node(r: Reader) -> Node | None:
    return r.optional(Node.decode_from)


def read_ratchet_tree(r: Reader) -> list[Node | None]:
    nodes = r.vector(_read_optional_node)
    if not nodes:
        raise DecodeError("empty ratchet tree")
    if nodes[-1] is None:
        raise DecodeError("ratchet tree ends with a blank node")
    for i, node in enumerate(nodes):
        if node is None:
            continue
        want = NodeType.PARENT if i & 1 else NodeType.LEAF
        if node.node_type != want:
            raise DecodeError(f"ratchet tree entry {i} is a {node.node_type.name.lower()} node")
    return nodes


def decode_tree_entries(data: bytes) -> list[LeafNode | ParentNode | None]:
    """Like ``decode_ratchet_tree`` but returns the bare LeafNode/ParentNode values (no
    ``Node`` wrappers): the form ``RatchetTree`` keeps. Same checks, same errors."""
    r = Reader(data)
    try:
        length = r.varint()
        end = r.pos + length
        if end != r.end:
            raise DecodeError(f"ratchet tree length {length} does not fill the buffer")
        out: list[LeafNode | ParentNode | None] = []
        append = out.append
        while r.pos < end:
            present = r.u8()
            if present == 0:
                append(None)
                continue
            if present != 1:
                raise DecodeError(f"invalid optional presence byte {present}")
            t = r.u8()
            i = len(out)
            if t == NodeType.LEAF and not i & 1:
                append(LeafNode.decode_from(r))
            elif t == NodeType.PARENT and i & 1:
                append(ParentNode.decode_from(r))
            elif t in (NodeType.LEAF, NodeType.PARENT):
                name = "leaf" if t == NodeType.LEAF else "parent"
                raise DecodeError(f"ratchet tree entry {i} is a {name} node")
            else:
                raise DecodeError(f"unknown node type {t}")
    except DecodeError:
        raise
    except (ValueError, IndexError, KeyError, TypeError, OverflowError) as e:
        raise DecodeError(f"invalid ratchet tree: {e}") from None
    if not out:
        raise DecodeError("empty ratchet tree")
    if out[-1] is None:
        raise DecodeError("ratchet tree ends with a blank node")
    return out


def decode_ratchet_tree(data: bytes) -> list[Node | None]:
    """Decode a whole buffer holding ``optional<Node> ratchet_tree<V>`` (no trailing bytes).

    Returns the array as sent (not extended to a full tree): ``None`` marks a blank node.
    """
    r = Reader(data)
    try:
        nodes = read_ratchet_tree(r)
    except DecodeError:
        raise
    except (ValueError, IndexError, KeyError, TypeError, OverflowError) as e:
        raise DecodeError(f"invalid ratchet tree: {e}") from None
    r.finish()
    return nodes
