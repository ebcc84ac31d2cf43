"""Just enough RFC 9420 parsing for the harness to route messages and list members.

Deliberately independent of roost.mls's structure decoders (only the byte ``Reader`` is
shared): the harness must not trust the code it is testing.
"""

from __future__ import annotations

from roost.mls.codec import Reader

from .peer import Member

WIRE_PUBLIC_MESSAGE = 1
WIRE_PRIVATE_MESSAGE = 2
WIRE_WELCOME = 3
WIRE_GROUP_INFO = 4
WIRE_KEY_PACKAGE = 5

SENDER_MEMBER = 1
SENDER_EXTERNAL = 2
CREDENTIAL_BASIC = 1
CREDENTIAL_X509 = 2


def wire_format(message: bytes) -> int:
    r = Reader(message)
    r.u16()  # version
    return r.u16()


def message_group_id(message: bytes) -> bytes:
    """Group id of an MLSMessage carrying a PublicMessage or PrivateMessage."""
    r = Reader(message)
    r.u16()
    wf = r.u16()
    if wf not in (WIRE_PUBLIC_MESSAGE, WIRE_PRIVATE_MESSAGE):
        raise ValueError(f"wire format {wf} has no group id")
    return r.opaque()


def public_message_sender(message: bytes) -> tuple[int, int | None] | None:
    """(sender_type, leaf or sender index) of a PublicMessage; None for other wire formats."""
    r = Reader(message)
    r.u16()
    if r.u16() != WIRE_PUBLIC_MESSAGE:
        return None
    r.opaque()  # group_id
    r.u64()  # epoch
    sender_type = r.u8()
    index = r.u32() if sender_type in (SENDER_MEMBER, SENDER_EXTERNAL) else None
    return sender_type, index


def public_message_sender_leaf(message: bytes) -> int | None:
    """Leaf index of a member-sent PublicMessage; None for other senders / wire formats."""
    sender = public_message_sender(message)
    if sender is None or sender[0] != SENDER_MEMBER:
        return None
    return sender[1]


def _skip_leaf_node(r: Reader) -> tuple[bytes | None, bytes]:
    """Skip one LeafNode; return (basic identity or None, signature key)."""
    r.opaque()  # encryption_key
    signature_key = r.opaque()
    ctype = r.u16()
    identity = None
    if ctype == CREDENTIAL_BASIC:
        identity = r.opaque()
    elif ctype == CREDENTIAL_X509:
        r.opaque()  # certificates<V> (each cert_data<V>): skip as one vector
    else:
        raise ValueError(f"unknown credential type {ctype}")
    for _ in range(5):  # capabilities: versions, cipher_suites, extensions, proposals, credentials
        r.opaque()
    source = r.u8()
    if source == 1:
        r.fixed(16)  # lifetime
    elif source == 3:
        r.opaque()  # parent_hash
    elif source != 2:
        raise ValueError(f"bad leaf_node_source {source}")
    r.opaque()  # extensions
    r.opaque()  # signature
    return identity, signature_key


def tree_members(ratchet_tree: bytes) -> tuple[Member, ...]:
    """Members (non-blank leaves) of an encoded ``optional<Node> ratchet_tree<V>``."""
    r = Reader(ratchet_tree)
    end = r.varint() + r.pos
    out: list[Member] = []
    index = 0
    while r.pos < end:
        if r.u8() == 1:
            node_type = r.u8()
            if node_type == 1:
                identity, key = _skip_leaf_node(r)
                out.append(Member(index // 2, identity, key))
            elif node_type == 2:
                r.opaque()  # encryption_key
                r.opaque()  # parent_hash
                r.opaque()  # unmerged_leaves
            else:
                raise ValueError(f"bad node type {node_type}")
        index += 1
    r.finish()
    return tuple(out)
