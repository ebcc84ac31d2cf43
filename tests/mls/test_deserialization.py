"""Decoder strictness: the official ``deserialization.json`` varint vectors, plus the
structural rules the RFC's select/optional/vector syntax imposes on our wire structures."""

from __future__ import annotations

import pytest

from roost.mls.codec import Reader, Writer, encode_varint
from roost.mls.commit import Commit
from roost.mls.constants import ContentType, PSKType, ResumptionPSKUsage, SenderType, WireFormat
from roost.mls.credential import Credential
from roost.mls.errors import DecodeError
from roost.mls.extension_types import (
    ApplicationId,
    ExternalPub,
    ExternalSender,
    ExternalSenders,
    LastResort,
    RatchetTreeExtension,
    RequiredCapabilities,
)
from roost.mls.extensions import Extension
from roost.mls.framing import (
    AuthenticatedContent,
    FramedContent,
    FramedContentAuthData,
    MLSMessage,
    PrivateContentAAD,
    PrivateMessage,
    PrivateMessageContent,
    PublicMessage,
    Sender,
    SenderData,
    SenderDataAAD,
    framed_content_tbs,
)
from roost.mls.group_context import GroupContext
from roost.mls.proposals import Proposal, ProposalOrRef, Remove
from roost.mls.psk import PreSharedKeyID
from roost.mls.tree_nodes import (
    Node,
    ParentNode,
    decode_ratchet_tree,
    encode_ratchet_tree,
)
from roost.mls.welcome import GroupSecrets

from .vectors import cases, h, load

# --- official vectors -------------------------------------------------------------------


@pytest.mark.parametrize("case", cases("deserialization"))
def test_vlbytes_header(case: dict) -> None:
    header = h(case["vlbytes_header"])
    length = case["length"]
    r = Reader(header)
    assert r.varint() == length
    r.finish()
    assert encode_varint(length) == header
    # As the header of an opaque<V>: a missing body is truncation, not a short read.
    if length:
        with pytest.raises(DecodeError, match="truncated"):
            Reader(header + b"\x00" * min(length - 1, 1 << 16)).opaque()
    if length <= 1 << 16:  # exactly `length` bytes follow and are consumed
        body = bytes(i & 0xFF for i in range(length))
        r = Reader(header + body)
        assert r.opaque() == body
        r.finish()
        w = Writer()
        w.opaque(body)
        assert w.getvalue() == header + body


# --- samples taken from messages.json ---------------------------------------------------

FIRST = load("messages")[0]
PUB_COMMIT = MLSMessage.decode(h(FIRST["public_message_commit"])).body
PUB_APP = MLSMessage.decode(h(FIRST["public_message_application"])).body
TREE = decode_ratchet_tree(h(FIRST["ratchet_tree"]))
CONTEXT = GroupContext(1, 1, b"group", 7, b"t" * 32, b"c" * 32, ())


def _vec(*items: bytes) -> bytes:
    body = b"".join(items)
    return encode_varint(len(body)) + body


# --- ratchet tree -----------------------------------------------------------------------


def test_ratchet_tree_rejects_empty() -> None:
    with pytest.raises(DecodeError, match="empty"):
        decode_ratchet_tree(b"\x00")


def test_ratchet_tree_rejects_trailing_blank() -> None:
    leaf = Node.of(TREE[0]).encode()
    with pytest.raises(DecodeError, match="blank"):
        decode_ratchet_tree(_vec(b"\x01" + leaf, b"\x00"))


def test_ratchet_tree_rejects_node_at_wrong_position() -> None:
    leaf = Node.of(TREE[0]).encode()
    parent = Node.parent(ParentNode(b"k" * 32)).encode()
    with pytest.raises(DecodeError, match="entry 1"):
        decode_ratchet_tree(_vec(b"\x01" + leaf, b"\x01" + leaf, b"\x01" + leaf))
    with pytest.raises(DecodeError, match="entry 0"):
        decode_ratchet_tree(_vec(b"\x01" + parent))


def test_ratchet_tree_rejects_bad_presence_and_node_type() -> None:
    leaf = Node.of(TREE[0]).encode()
    with pytest.raises(DecodeError, match="presence"):
        decode_ratchet_tree(_vec(b"\x02" + leaf))
    with pytest.raises(DecodeError, match="node type"):
        decode_ratchet_tree(_vec(b"\x01\x03" + leaf[1:]))


def test_ratchet_tree_encoder_drops_trailing_blanks() -> None:
    assert encode_ratchet_tree([*TREE, None, None]) == encode_ratchet_tree(TREE)


def test_parent_node_unmerged_leaves() -> None:
    node = ParentNode(b"k", b"ph", (1, 2, 0xFFFFFFFF))
    assert ParentNode.decode(node.encode()) == node
    bad = node.encode()[:-13] + _vec(b"\x00\x00\x00\x01\x00")
    with pytest.raises(DecodeError, match="multiple of 4"):
        ParentNode.decode(bad)


# --- framing ----------------------------------------------------------------------------


def test_mls_message_rejects_unknown_version_and_wire_format() -> None:
    good = h(FIRST["mls_key_package"])
    with pytest.raises(DecodeError, match="version"):
        MLSMessage.decode(b"\x00\x02" + good[2:])
    for wf in (0, 6, 0xFFFF):
        with pytest.raises(DecodeError, match="wire format"):
            MLSMessage.decode(good[:2] + wf.to_bytes(2, "big") + good[4:])
    with pytest.raises(DecodeError, match="trailing"):
        MLSMessage.decode(good + b"\x00")


def test_unknown_content_sender_proposal_types_rejected() -> None:
    content = PUB_APP.content
    enc = content.encode()
    # group_id<V> (1+16), epoch (8), then the sender type byte.
    off = 1 + len(content.group_id) + 8
    for bad in (0, 5):
        with pytest.raises(DecodeError, match="sender type"):
            FramedContent.decode(enc[:off] + bytes([bad]) + enc[off + 1 :])
    ct_off = off + 5 + 1 + len(content.authenticated_data)
    for bad in (0, 4):
        with pytest.raises(DecodeError, match="content type"):
            FramedContent.decode(enc[:ct_off] + bytes([bad]) + enc[ct_off + 1 :])
    with pytest.raises(DecodeError, match="proposal type"):
        Proposal.decode(b"\x00\x08\x00\x00\x00\x01")
    with pytest.raises(DecodeError, match="ProposalOrRef"):
        ProposalOrRef.decode(b"\x03\x00")


def test_public_message_membership_tag_follows_sender_type() -> None:
    external = FramedContent(b"g", 1, Sender.external(0), b"", Proposal(Remove(3)))
    msg = PublicMessage(external, FramedContentAuthData(b"sig"))
    assert PublicMessage.decode(msg.encode()) == msg
    # A member-sent message without its membership tag is truncated.
    member = PublicMessage(PUB_APP.content, PUB_APP.auth, PUB_APP.membership_tag)
    with pytest.raises(DecodeError):
        PublicMessage.decode(member.encode()[: -len(PUB_APP.membership_tag) - 1])
    with pytest.raises(ValueError, match="membership_tag"):
        PublicMessage(PUB_APP.content, PUB_APP.auth, None).encode()
    with pytest.raises(ValueError, match="membership_tag"):
        PublicMessage(external, FramedContentAuthData(b"sig"), b"tag").encode()


def test_confirmation_tag_exactly_for_commits() -> None:
    with pytest.raises(ValueError, match="confirmation_tag"):
        PublicMessage(PUB_APP.content, FramedContentAuthData(b"s", b"tag"), b"m").encode()
    with pytest.raises(ValueError, match="confirmation_tag"):
        PublicMessage(PUB_COMMIT.content, FramedContentAuthData(b"s"), b"m").encode()


def test_sender_index_presence() -> None:
    for s in (Sender.new_member_commit(), Sender.new_member_proposal()):
        assert Sender.decode(s.encode()) == s
        assert len(s.encode()) == 1
    assert Sender.decode(Sender.member(5).encode()).leaf_index == 5
    with pytest.raises(ValueError):
        Sender(SenderType.MEMBER).encode()
    with pytest.raises(ValueError):
        Sender(SenderType.NEW_MEMBER_COMMIT, 1).encode()
    with pytest.raises(ValueError):
        _ = Sender.external(1).leaf_index


def test_framed_content_tbs_binds_context_only_for_member_senders() -> None:
    member = PUB_APP.content
    tbs = framed_content_tbs(WireFormat.PUBLIC_MESSAGE, member, CONTEXT)
    assert tbs == b"\x00\x01\x00\x01" + member.encode() + CONTEXT.encode()
    assert tbs == framed_content_tbs(WireFormat.PUBLIC_MESSAGE, member, CONTEXT.encode())
    with pytest.raises(ValueError, match="GroupContext"):
        framed_content_tbs(WireFormat.PUBLIC_MESSAGE, member, None)
    external = FramedContent(b"g", 1, Sender.external(0), b"", Proposal(Remove(3)))
    assert framed_content_tbs(WireFormat.PUBLIC_MESSAGE, external, CONTEXT) == (
        b"\x00\x01\x00\x01" + external.encode()
    )


def test_authenticated_content_tbm_and_transcript_input() -> None:
    ac = PUB_COMMIT.authenticated_content()
    assert ac.wire_format == WireFormat.PUBLIC_MESSAGE
    assert ac.tbm(CONTEXT) == ac.tbs(CONTEXT) + PUB_COMMIT.auth.encode()
    assert AuthenticatedContent.decode(ac.encode()) == ac
    assert ac.confirmed_transcript_hash_input() == (
        b"\x00\x01" + ac.content.encode() + _vec(ac.auth.signature)
    )
    assert PublicMessage.from_authenticated(ac, PUB_COMMIT.membership_tag) == PUB_COMMIT


def test_private_message_content_padding() -> None:
    pmc = PrivateMessageContent(b"hello", FramedContentAuthData(b"sig"), padding=7)
    data = pmc.encode()
    assert data.endswith(bytes(7))
    assert PrivateMessageContent.decode_for(data, ContentType.APPLICATION) == pmc
    with pytest.raises(DecodeError, match="padding"):
        PrivateMessageContent.decode_for(data[:-1] + b"\x01", ContentType.APPLICATION)
    with pytest.raises(DecodeError):
        PrivateMessageContent.decode_for(data[:3], ContentType.APPLICATION)
    commit = PrivateMessageContent(Commit(), FramedContentAuthData(b"s", b"conf"))
    assert PrivateMessageContent.decode_for(commit.encode(), ContentType.COMMIT) == commit
    with pytest.raises(DecodeError):
        PrivateMessageContent.decode(data)


def test_private_message_aads_and_sender_data() -> None:
    pm = MLSMessage.decode(h(FIRST["private_message"])).body
    assert isinstance(pm, PrivateMessage)
    assert pm.sender_data_aad() == SenderDataAAD(pm.group_id, pm.epoch, pm.content_type).encode()
    aad = PrivateContentAAD(pm.group_id, pm.epoch, pm.content_type, pm.authenticated_data)
    assert pm.content_aad() == aad.encode()
    assert PrivateContentAAD.decode(aad.encode()) == aad
    sd = SenderData(3, 9, b"\x01\x02\x03\x04")
    assert sd.encode() == b"\x00\x00\x00\x03\x00\x00\x00\x09\x01\x02\x03\x04"
    assert SenderData.decode(sd.encode()) == sd
    with pytest.raises(DecodeError):
        SenderData.decode(sd.encode()[:-1])
    with pytest.raises(ValueError):
        SenderData(0, 0, b"abc").encode()


# --- proposals, PSKs, welcome, extensions ------------------------------------------------


def test_psk_ids() -> None:
    ext = PreSharedKeyID.external(b"id", b"nonce")
    res = PreSharedKeyID.resumption(ResumptionPSKUsage.BRANCH, b"g", 5, b"n")
    for v in (ext, res):
        assert PreSharedKeyID.decode(v.encode()) == v
    assert res.psktype == PSKType.RESUMPTION
    with pytest.raises(DecodeError, match="psk type"):
        PreSharedKeyID.decode(b"\x03" + ext.encode()[1:])
    with pytest.raises(DecodeError, match="usage"):
        PreSharedKeyID.decode(b"\x02\x00" + res.encode()[2:])


def test_group_secrets_optional_path_secret() -> None:
    for gs in (
        GroupSecrets(b"j"),
        GroupSecrets(b"j", b"p", (PreSharedKeyID.external(b"i", b"n"),)),
    ):
        assert GroupSecrets.decode(gs.encode()) == gs
    with pytest.raises(DecodeError, match="presence"):
        GroupSecrets.decode(b"\x01j\x02\x01p\x00")


def test_extension_bodies_round_trip() -> None:
    bodies = [
        ApplicationId(b"app"),
        RequiredCapabilities((10,), (1, 7), (2,)),
        ExternalPub(b"pub"),
        ExternalSenders((ExternalSender(b"sk", Credential.basic(b"server")),)),
        LastResort(),
        RatchetTreeExtension.of(TREE),
    ]
    for body in bodies:
        ext = body.to_extension()
        assert type(body).from_extension(Extension.decode(ext.encode())) == body
    assert LastResort().to_extension().extension_data == b""
    with pytest.raises(DecodeError, match="not ExternalPub"):
        ExternalPub.from_extension(ApplicationId(b"x").to_extension())
    with pytest.raises(DecodeError):
        ExternalPub.from_extension(Extension(ExternalPub.extension_type, b"\x05ab"))


def test_duplicate_extensions_rejected_in_group_info() -> None:
    gi = MLSMessage.decode(h(FIRST["mls_group_info"])).body
    ext = gi.extensions[0]
    dup = type(gi)(gi.group_context, (ext, ext), gi.confirmation_tag, gi.signer, gi.signature)
    with pytest.raises(DecodeError, match="duplicate"):
        type(gi).decode(dup.encode())
