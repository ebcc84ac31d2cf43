"""``RoostGroupState`` (docs/api.md, "Groups", "Identifiers and wire structures"): the group
creation body and the ``GET …/group-info`` answer.

    MLSMessage group_info || optional<Node> ratchet_tree<V>

``ratchet_tree`` always means the *encoded vector with its length prefix* (what
``RatchetTree.to_bytes()`` gives and ``Group.join_external`` takes); an empty vector is
``b"\\x00"`` on the wire and ``None`` once decoded.
"""

from __future__ import annotations

from dataclasses import dataclass

from roost.mls.codec import Reader

from .mls_message_span import mls_message_span

EMPTY_TREE = b"\x00"


@dataclass(frozen=True, slots=True)
class GroupState:
    group_info: bytes  # the GroupInfo MLSMessage bytes
    ratchet_tree: bytes | None  # the encoded ratchet_tree<V> vector, None when it is empty


def encode_group_state(group_info: bytes, ratchet_tree: bytes | None = None) -> bytes:
    """``group_info`` is the GroupInfo MLSMessage; ``ratchet_tree`` the encoded vector (with
    its length), or None/empty when the GroupInfo carries the ratchet_tree extension."""
    return group_info + (ratchet_tree or EMPTY_TREE)


def decode_group_state(body: bytes) -> GroupState:
    """Strictly decode a ``RoostGroupState``; raises DecodeError on malformed input."""
    r = Reader(body)
    group_info = mls_message_span(r)
    start = r.pos
    n = r.varint()
    r.fixed(n)
    r.finish()
    return GroupState(group_info, body[start:] if n else None)
