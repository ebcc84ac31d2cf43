"""Robustness of every top-level decoder against random and mutated input.

Two properties, for each decoder:
* only ``DecodeError`` ever comes out of a decoder, whatever the bytes;
* whatever decodes re-encodes byte-exact (so it also decodes equal): with strict decoding
  (minimal varints, exact lengths, presence bytes 0/1, closed enums) every accepted encoding
  is the unique encoding of its value.

The bulk (100,000 inputs per decoder) comes from a seeded plain-Python mutation loop over the valid
bytes in messages.json, which is much faster per input than hypothesis; hypothesis adds a
generator of *valid* structures (encode -> decode -> encode byte-exact) and its own shrinking
fuzzers on top.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roost.mls.codec import Reader, Struct
from roost.mls.commit import Commit
from roost.mls.constants import (
    ContentType,
    LeafNodeSource,
    ProposalType,
    ResumptionPSKUsage,
    WireFormat,
)
from roost.mls.credential import Credential
from roost.mls.errors import DecodeError
from roost.mls.extension_types import ExternalPub, RequiredCapabilities
from roost.mls.extensions import Extension
from roost.mls.framing import (
    FramedContent,
    FramedContentAuthData,
    MLSMessage,
    PrivateMessage,
    PrivateMessageContent,
    PublicMessage,
    Sender,
)
from roost.mls.group_context import GroupContext
from roost.mls.group_info import GroupInfo
from roost.mls.key_package import KeyPackage
from roost.mls.leaf_node import Capabilities, LeafNode, Lifetime
from roost.mls.proposals import (
    Add,
    ExternalInit,
    GroupContextExtensions,
    PreSharedKey,
    Proposal,
    ProposalOrRef,
    ReInit,
    Remove,
    Update,
)
from roost.mls.psk import PreSharedKeyID
from roost.mls.tree_nodes import (
    Node,
    ParentNode,
    decode_ratchet_tree,
    encode_ratchet_tree,
    read_ratchet_tree,
)
from roost.mls.update_path import HPKECiphertext, UpdatePath, UpdatePathNode
from roost.mls.welcome import EncryptedGroupSecrets, GroupSecrets, Welcome

from .vectors import h, load

INPUTS_PER_DECODER = 100_000


@dataclass(frozen=True)
class Target:
    decode: Callable[[bytes], object]
    encode: Callable[[object], bytes]
    seeds: Callable[[], list[bytes]]


def _strictly(read: Callable[[Reader], object]) -> Callable[[bytes], object]:
    """Decode a whole buffer WITHOUT Struct.decode's conversion of stray exceptions, so the
    fuzzers prove the decoders raise DecodeError themselves."""

    def decode(data: bytes) -> object:
        r = Reader(data)
        value = read(r)
        r.finish()
        return value

    return decode


def _struct(cls: type[Struct], seeds: Callable[[], list[bytes]]) -> Target:
    return Target(_strictly(cls.decode_from), lambda v: v.encode(), seeds)  # type: ignore[attr-defined]


def _field(name: str, skip: int = 0) -> Callable[[], list[bytes]]:
    return lambda: [h(c[name])[skip:] for c in load("messages")]


MESSAGE_FIELDS = [
    "mls_welcome",
    "mls_group_info",
    "mls_key_package",
    "public_message_application",
    "public_message_proposal",
    "public_message_commit",
    "private_message",
]
PROPOSAL_FIELDS = {
    "add_proposal": ProposalType.ADD,
    "update_proposal": ProposalType.UPDATE,
    "remove_proposal": ProposalType.REMOVE,
    "pre_shared_key_proposal": ProposalType.PSK,
    "re_init_proposal": ProposalType.REINIT,
    "external_init_proposal": ProposalType.EXTERNAL_INIT,
    "group_context_extensions_proposal": ProposalType.GROUP_CONTEXT_EXTENSIONS,
}


def _message_seeds() -> list[bytes]:
    return [h(c[f]) for c in load("messages") for f in MESSAGE_FIELDS]


def _proposal_seeds() -> list[bytes]:
    return [
        int(t).to_bytes(2, "big") + h(c[f])
        for c in load("messages")
        for f, t in PROPOSAL_FIELDS.items()
    ]


def _public_seeds() -> list[bytes]:
    return [h(c[f])[4:] for c in load("messages") for f in MESSAGE_FIELDS if f.startswith("public")]


def _update_path_seeds() -> list[bytes]:
    out = []
    for c in load("messages"):
        path = Commit.decode(h(c["commit"])).path
        if path is not None:
            out.append(path.encode())
    return out


def _group_context_seeds() -> list[bytes]:
    return [GroupInfo.decode(d).group_context.encode() for d in _field("mls_group_info", 4)()]


def _extension_seeds(cls: type) -> Callable[[], list[bytes]]:
    def seeds() -> list[bytes]:
        out = []
        for d in _field("mls_group_info", 4)():
            gi = GroupInfo.decode(d)
            for ext in gi.extensions + gi.group_context.extensions:
                if ext.extension_type == cls.extension_type:
                    out.append(ext.extension_data)
        return out

    return seeds


def _private_content_seeds() -> list[bytes]:
    """PrivateMessageContent plaintexts built from the public messages' content and auth,
    each prefixed with its content type (see ``_decode_private_content``)."""
    out = []
    for i, data in enumerate(_public_seeds()):
        pub = PublicMessage.decode(data)
        pmc = PrivateMessageContent(pub.content.content, pub.auth, i % 5)
        out.append(bytes([pmc.content_type]) + pmc.encode())
    return out


def _decode_private_content(data: bytes) -> PrivateMessageContent:
    # The content type travels outside the plaintext (in PrivateMessage); the harness puts it
    # in the first byte so that all three content selects get exercised by one input stream.
    if not data or data[0] not in (1, 2, 3):
        raise DecodeError("harness: no content type prefix")
    return _strictly(lambda r: PrivateMessageContent.read(r, ContentType(data[0])))(data[1:])


def _private_content_target() -> Target:
    return Target(
        _decode_private_content,
        lambda v: bytes([v.content_type]) + v.encode(),  # type: ignore[attr-defined]
        _private_content_seeds,
    )


TARGETS: dict[str, Target] = {
    "MLSMessage": _struct(MLSMessage, _message_seeds),
    "KeyPackage": _struct(KeyPackage, _field("mls_key_package", 4)),
    "Welcome": _struct(Welcome, _field("mls_welcome", 4)),
    "GroupInfo": _struct(GroupInfo, _field("mls_group_info", 4)),
    "GroupSecrets": _struct(GroupSecrets, _field("group_secrets")),
    "RatchetTree": Target(
        _strictly(read_ratchet_tree), encode_ratchet_tree, _field("ratchet_tree")
    ),  # type: ignore[arg-type]
    "Commit": _struct(Commit, _field("commit")),
    "Proposal": _struct(Proposal, _proposal_seeds),
    "LeafNode": _struct(LeafNode, _field("update_proposal")),
    "PublicMessage": _struct(PublicMessage, _public_seeds),
    "PrivateMessage": _struct(PrivateMessage, _field("private_message", 4)),
    "UpdatePath": _struct(UpdatePath, _update_path_seeds),
    "PrivateMessageContent": _private_content_target(),
    "GroupContext": _struct(GroupContext, _group_context_seeds),
    "RequiredCapabilities": _struct(RequiredCapabilities, _extension_seeds(RequiredCapabilities)),
    "ExternalPub": _struct(ExternalPub, _extension_seeds(ExternalPub)),
}

# Bytes that hit varint prefixes, presence bytes, enum edges and length extremes.
INTERESTING = (0x00, 0x01, 0x02, 0x03, 0x3F, 0x40, 0x7F, 0x80, 0xBF, 0xC0, 0xFF)


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    """Apply 1-4 random edits: flip, set, insert, delete, truncate, duplicate, splice."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        n = len(buf)
        op = rng.randrange(9)
        pos = rng.randrange(n) if n else 0
        if op == 0 and n:
            buf[pos] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            buf[pos] = rng.choice(INTERESTING)
        elif op == 2:
            buf[pos:pos] = rng.randbytes(rng.randint(1, 4))
        elif op == 3 and n:
            del buf[pos : pos + rng.randint(1, 8)]
        elif op == 4:
            del buf[rng.randint(0, n) :]
        elif op == 5 and n:
            end = min(n, pos + rng.randint(1, 32))
            buf[pos:pos] = buf[pos:end]
        elif op == 6:
            other = rng.choice(pool)
            cut = rng.randint(0, len(other))
            buf[pos:] = other[cut:]
        elif op == 7 and n:
            buf[pos] = rng.randrange(256)
        elif op == 8 and n >= 2:
            # Bump a would-be length/count byte up or down by one.
            buf[pos] = (buf[pos] + rng.choice((-1, 1))) & 0xFF
    return bytes(buf)


def check_one(target: Target, data: bytes) -> bool:
    """Feed one input; return True when it decoded (and then round-tripped)."""
    try:
        value = target.decode(data)
    except DecodeError:
        return False
    except Exception as e:  # noqa: BLE001 - anything else is the bug being hunted
        raise AssertionError(f"{type(e).__name__} escaped the decoder for {data.hex()}") from e
    again = target.encode(value)
    assert again == data, f"accepted input does not re-encode byte-exact: {data.hex()}"
    assert target.decode(again) == value
    return True


@pytest.mark.parametrize("name", list(TARGETS))
def test_mutation_fuzz(name: str) -> None:
    target = TARGETS[name]
    seeds = target.seeds()
    assert seeds, f"no seeds for {name}"
    rng = random.Random(f"roost-fuzz-{name}")
    fed = accepted = 0
    for data in seeds:  # every seed is valid and must round-trip
        assert check_one(target, data), f"valid seed rejected by {name}"
        fed += 1
    while fed < INPUTS_PER_DECODER:
        if fed % 10 == 0:  # some purely random input, most of it mutated valid input
            data = rng.randbytes(rng.randint(0, 64))
        else:
            data = mutate(rng, rng.choice(seeds), seeds)
        accepted += check_one(target, data)
        fed += 1
    print(f"{name}: fed {fed} inputs ({len(seeds)} valid seeds), {accepted} mutants decoded")


# --- hypothesis: shrinking fuzzers over raw and mutated bytes -----------------------------

FUZZ_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@FUZZ_SETTINGS
@given(name=st.sampled_from(list(TARGETS)), data=st.binary(max_size=200))
def test_hypothesis_random_bytes(name: str, data: bytes) -> None:
    check_one(TARGETS[name], data)


@FUZZ_SETTINGS
@given(name=st.sampled_from(list(TARGETS)), seed=st.integers(0, 2**32 - 1))
def test_hypothesis_mutated_seeds(name: str, seed: int) -> None:
    target = TARGETS[name]
    seeds = target.seeds()
    rng = random.Random(seed)
    check_one(target, mutate(rng, rng.choice(seeds), seeds))


# --- hypothesis: valid structures round-trip byte-exact ----------------------------------

small = st.binary(max_size=12)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, 2**64 - 1)

credentials = st.one_of(
    st.builds(Credential.basic, small),
    st.builds(Credential.x509, st.lists(small, min_size=1, max_size=3)),
)
extension_lists = st.lists(
    st.builds(Extension, u16, small), max_size=3, unique_by=lambda e: e.extension_type
).map(tuple)
u16_tuples = st.lists(u16, max_size=4).map(tuple)
capabilities = st.builds(Capabilities, u16_tuples, u16_tuples, u16_tuples, u16_tuples, u16_tuples)


@st.composite
def leaf_nodes(draw: st.DrawFn) -> LeafNode:
    source = draw(st.sampled_from(LeafNodeSource))
    return LeafNode(
        draw(small),
        draw(small),
        draw(credentials),
        draw(capabilities),
        source,
        draw(st.builds(Lifetime, u64, u64)) if source == LeafNodeSource.KEY_PACKAGE else None,
        draw(small) if source == LeafNodeSource.COMMIT else b"",
        draw(extension_lists),
        draw(small),
    )


key_packages = st.builds(KeyPackage, u16, u16, small, leaf_nodes(), extension_lists, small)
psk_ids = st.one_of(
    st.builds(PreSharedKeyID.external, small, small),
    st.builds(PreSharedKeyID.resumption, st.sampled_from(ResumptionPSKUsage), small, u64, small),
)
proposal_bodies = st.one_of(
    st.builds(Add, key_packages),
    st.builds(Update, leaf_nodes()),
    st.builds(Remove, u32),
    st.builds(PreSharedKey, psk_ids),
    st.builds(ReInit, small, u16, u16, extension_lists),
    st.builds(ExternalInit, small),
    st.builds(GroupContextExtensions, extension_lists),
)
proposals = st.builds(Proposal, proposal_bodies)
hpke_cts = st.builds(HPKECiphertext, small, small)
update_paths = st.builds(
    UpdatePath,
    leaf_nodes(),
    st.lists(
        st.builds(UpdatePathNode, small, st.lists(hpke_cts, max_size=2).map(tuple)), max_size=3
    ).map(tuple),
)
proposal_or_refs = st.one_of(
    st.builds(ProposalOrRef.by_value, proposals), st.builds(ProposalOrRef.by_reference, small)
)
commits = st.builds(
    Commit, st.lists(proposal_or_refs, max_size=3).map(tuple), st.none() | update_paths
)
senders = st.one_of(
    st.builds(Sender.member, u32),
    st.builds(Sender.external, u32),
    st.just(Sender.new_member_commit()),
    st.just(Sender.new_member_proposal()),
)
bodies = st.one_of(small, proposals, commits)


@st.composite
def public_messages(draw: st.DrawFn) -> PublicMessage:
    sender = draw(senders)
    content = FramedContent(draw(small), draw(u64), sender, draw(small), draw(bodies))
    tag = draw(small) if content.content_type == ContentType.COMMIT else None
    auth = FramedContentAuthData(draw(small), tag)
    membership = draw(small) if sender.sender_type == 1 else None
    return PublicMessage(content, auth, membership)


private_messages = st.builds(
    PrivateMessage, small, u64, st.sampled_from(ContentType), small, small, small
)
group_contexts = st.builds(GroupContext, u16, u16, small, u64, small, small, extension_lists)
group_infos = st.builds(GroupInfo, group_contexts, extension_lists, small, u32, small)
welcomes = st.builds(
    Welcome,
    u16,
    st.lists(st.builds(EncryptedGroupSecrets, small, hpke_cts), max_size=3).map(tuple),
    small,
)
group_secrets = st.builds(
    GroupSecrets, small, st.none() | small, st.lists(psk_ids, max_size=2).map(tuple)
)
messages = st.builds(
    MLSMessage, st.one_of(public_messages(), private_messages, welcomes, group_infos, key_packages)
)


@st.composite
def ratchet_trees(draw: st.DrawFn) -> list[Node | None]:
    n_leaves = draw(st.integers(1, 5))
    nodes: list[Node | None] = []
    for i in range(2 * n_leaves - 1):
        if i % 2:
            parent = ParentNode(draw(small), draw(small), tuple(draw(st.lists(u32, max_size=2))))
            nodes.append(draw(st.none() | st.just(Node.parent(parent))))
        elif i == 2 * n_leaves - 2:
            nodes.append(Node.leaf(draw(leaf_nodes())))  # the last entry is never blank
        else:
            nodes.append(draw(st.none() | leaf_nodes().map(Node.leaf)))
    return nodes


VALID_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@VALID_SETTINGS
@given(
    value=st.one_of(
        messages, commits, proposals, key_packages, leaf_nodes(), group_secrets, update_paths
    )
)
def test_valid_structures_round_trip(value: Struct) -> None:
    data = value.encode()
    decoded = type(value).decode(data)
    assert decoded == value
    assert decoded.encode() == data


@VALID_SETTINGS
@given(nodes=ratchet_trees())
def test_valid_ratchet_trees_round_trip(nodes: list[Node | None]) -> None:
    data = encode_ratchet_tree(nodes)
    decoded = decode_ratchet_tree(data)
    assert decoded == nodes
    assert encode_ratchet_tree(decoded) == data


@VALID_SETTINGS
@given(msg=public_messages(), padding=st.integers(0, 64))
def test_valid_private_content_round_trip(msg: PublicMessage, padding: int) -> None:
    pmc = PrivateMessageContent(msg.content.content, msg.auth, padding)
    data = pmc.encode()
    assert PrivateMessageContent.decode_for(data, pmc.content_type) == pmc
    assert MLSMessage.decode(MLSMessage(msg).encode()).wire_format == WireFormat.PUBLIC_MESSAGE
