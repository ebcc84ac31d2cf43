"""Official RFC 9420 ``messages.json`` vectors: every field decodes to the right type and
re-encodes byte-exact (test-vectors.md, "Messages")."""

from __future__ import annotations

import pytest

from roost.mls.codec import Struct
from roost.mls.commit import Commit
from roost.mls.constants import ContentType, NodeType, SenderType, WireFormat
from roost.mls.framing import MLSMessage, PrivateMessage, PublicMessage
from roost.mls.group_info import GroupInfo
from roost.mls.key_package import KeyPackage
from roost.mls.proposals import (
    Add,
    ExternalInit,
    GroupContextExtensions,
    PreSharedKey,
    Proposal,
    ReInit,
    Remove,
    Update,
)
from roost.mls.tree_nodes import decode_ratchet_tree, encode_ratchet_tree
from roost.mls.welcome import GroupSecrets, Welcome

from .vectors import cases, h, load

# Field -> the struct its bytes encode (the proposal fields hold the bare proposal bodies).
PLAIN_FIELDS: dict[str, type[Struct]] = {
    "group_secrets": GroupSecrets,
    "add_proposal": Add,
    "update_proposal": Update,
    "remove_proposal": Remove,
    "pre_shared_key_proposal": PreSharedKey,
    "re_init_proposal": ReInit,
    "external_init_proposal": ExternalInit,
    "group_context_extensions_proposal": GroupContextExtensions,
    "commit": Commit,
}

# Field -> (wire format, body type, content type for public messages) of an MLSMessage.
MESSAGE_FIELDS: dict[str, tuple[WireFormat, type, ContentType | None]] = {
    "mls_welcome": (WireFormat.WELCOME, Welcome, None),
    "mls_group_info": (WireFormat.GROUP_INFO, GroupInfo, None),
    "mls_key_package": (WireFormat.KEY_PACKAGE, KeyPackage, None),
    "public_message_application": (
        WireFormat.PUBLIC_MESSAGE,
        PublicMessage,
        ContentType.APPLICATION,
    ),
    "public_message_proposal": (WireFormat.PUBLIC_MESSAGE, PublicMessage, ContentType.PROPOSAL),
    "public_message_commit": (WireFormat.PUBLIC_MESSAGE, PublicMessage, ContentType.COMMIT),
    "private_message": (WireFormat.PRIVATE_MESSAGE, PrivateMessage, None),
}

ALL_FIELDS = {*PLAIN_FIELDS, *MESSAGE_FIELDS, "ratchet_tree"}


def test_vector_file_covers_every_field() -> None:
    data = load("messages")
    assert len(data) > 0
    for case in data:
        assert set(case) == ALL_FIELDS


@pytest.mark.parametrize("case", cases("messages"))
@pytest.mark.parametrize("field", sorted(PLAIN_FIELDS))
def test_plain_structs_round_trip(case: dict, field: str) -> None:
    data = h(case[field])
    value = PLAIN_FIELDS[field].decode(data)
    assert type(value) is PLAIN_FIELDS[field]
    assert value.encode() == data
    assert PLAIN_FIELDS[field].decode(value.encode()) == value
    if field.endswith("_proposal"):
        # The same body inside the Proposal union round-trips too, with the right tag.
        wrapped = Proposal(value)
        assert Proposal.decode(wrapped.encode()) == wrapped
        assert wrapped.encode()[2:] == data


@pytest.mark.parametrize("case", cases("messages"))
@pytest.mark.parametrize("field", sorted(MESSAGE_FIELDS))
def test_mls_messages_round_trip(case: dict, field: str) -> None:
    wire_format, body_type, content_type = MESSAGE_FIELDS[field]
    data = h(case[field])
    msg = MLSMessage.decode(data)
    assert msg.wire_format == wire_format
    assert type(msg.body) is body_type
    assert msg.encode() == data
    # The body alone is the message minus the 4-byte version + wire_format header.
    assert body_type.decode(data[4:]) == msg.body
    assert msg.body.encode() == data[4:]
    if content_type is not None:
        content = msg.body.content
        assert content.content_type == content_type
        has_tag = content.sender.sender_type == SenderType.MEMBER
        assert (msg.body.membership_tag is not None) == has_tag
        assert (msg.body.auth.confirmation_tag is not None) == (content_type == ContentType.COMMIT)


@pytest.mark.parametrize("case", cases("messages"))
def test_ratchet_tree_round_trip(case: dict) -> None:
    data = h(case["ratchet_tree"])
    nodes = decode_ratchet_tree(data)
    assert nodes and nodes[-1] is not None
    for i, node in enumerate(nodes):
        if node is not None:
            assert node.node_type == (NodeType.PARENT if i % 2 else NodeType.LEAF)
    assert encode_ratchet_tree(nodes) == data
    # Entries may also be given unwrapped (LeafNode / ParentNode) with trailing blanks.
    unwrapped = [None if n is None else n.value for n in nodes] + [None, None]
    assert encode_ratchet_tree(unwrapped) == data
