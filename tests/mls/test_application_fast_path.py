"""The application-message hot path (protection.ApplicationKeys, used by Group.encrypt and
Group.process) against the test vectors and the generic protection functions: same bytes
on the wire, same messages accepted, every forgery rejected."""

from __future__ import annotations

import random

import pytest

from roost.mls import protection as P
from roost.mls.codec import opaque
from roost.mls.constants import ContentType, WireFormat
from roost.mls.credential import Credential
from roost.mls.crypto import get_cipher_suite
from roost.mls.crypto.ciphersuite import SUPPORTED_SUITES
from roost.mls.errors import CryptoError, DecodeError, ValidationError
from roost.mls.framing import (
    FramedContent,
    MLSMessage,
    PrivateContentAAD,
    PrivateMessage,
    Sender,
    SenderData,
    SenderDataAAD,
)
from roost.mls.group import Group
from roost.mls.group_context import GroupContext
from roost.mls.key_package_gen import generate_key_package
from roost.mls.secret_tree import SecretTree, sender_data_key_nonce

from .vectors import cases, h

SENDER = 1  # the vectors' sender is leaf 1 of a 2-member group
DETERMINISTIC_SIGNATURES = {1, 3, 4, 6}  # EdDSA; ECDSA signatures are randomised


def _vector_keys(case, tree: SecretTree | None = None, signature_keys=None):
    cs = get_cipher_suite(case["cipher_suite"])
    gc = GroupContext(
        1,
        cs.suite_id,
        h(case["group_id"]),
        case["epoch"],
        h(case["tree_hash"]),
        h(case["confirmed_transcript_hash"]),
    ).encode()
    enc, sds = h(case["encryption_secret"]), h(case["sender_data_secret"])
    keys = P.ApplicationKeys(
        cs,
        h(case["group_id"]),
        case["epoch"],
        gc,
        tree or SecretTree(cs, enc, 2),
        sds,
        (signature_keys or {SENDER: h(case["signature_pub"])}).get,
    )
    return cs, gc, enc, sds, keys


@pytest.mark.parametrize("case", cases("message-protection"))
def test_vector_application_message_opens(case):
    cs, gc, enc, sds, keys = _vector_keys(case)
    fields = P.read_private_application(h(case["application_priv"]))
    assert fields is not None and fields[:2] == (h(case["group_id"]), case["epoch"])
    sender, data = keys.open_application(*fields[2:])
    assert sender == Sender.member(SENDER) and data == h(case["application"])
    # Handshake PrivateMessages are not for the hot path: decoded in full by the caller.
    assert P.read_private_application(h(case["proposal_priv"])) is None
    assert P.read_private_application(h(case["commit_priv"])) is None


@pytest.mark.parametrize("case", cases("message-protection"))
def test_sealed_bytes_equal_the_generic_encoder(case):
    cs, gc, enc, sds, keys = _vector_keys(case)
    spriv, spub = h(case["signature_priv"]), h(case["signature_pub"])
    data, ad, guard = b"x" * 1024, b"authenticated", b"\x01\x02\x03\x04"
    wire = keys.seal_application(cs.signature.signer(spriv), SENDER, data, ad, 17, guard)

    content = FramedContent(h(case["group_id"]), case["epoch"], Sender.member(SENDER), ad, data)
    ac = P.authenticate(cs, spriv, WireFormat.PRIVATE_MESSAGE, content, gc)
    generic = MLSMessage(P.encrypt(cs, ac, SecretTree(cs, enc, 2), sds, 17, guard)).encode()
    if cs.suite_id in DETERMINISTIC_SIGNATURES:  # (ECDSA: checked by decryption below)
        assert wire == generic

    # The generic decoder and decrypter accept the hot path's message ...
    msg = MLSMessage.decode(wire)
    assert msg.encode() == wire
    back = P.unprotect_private(cs, msg.body, gc, SecretTree(cs, enc, 2), sds, spub)
    assert back.content == content
    # ... and the hot path accepts the generic one.
    _, _, _, _, receiver = _vector_keys(case)
    fields = P.read_private_application(generic)
    assert receiver.open_application(*fields[2:]) == (Sender.member(SENDER), data)


def _app_keys(tree: SecretTree, signature_keys: dict[int, bytes]):
    cs = get_cipher_suite(1)
    gc = GroupContext(1, 1, b"group", 5, b"t" * 32, b"c" * 32).encode()
    return P.ApplicationKeys(cs, b"group", 5, gc, tree, b"s" * 32, signature_keys.get)


def _seal_raw(leaf: int, plaintext: bytes, ad: bytes = b"") -> tuple[bytes, bytes, bytes]:
    """A PrivateMessage around an arbitrary plaintext, with the real keys of ``_app_keys``."""
    cs = get_cipher_suite(1)
    generation, key, nonce = SecretTree(cs, b"e" * 32, 4).application_ratchet(leaf).next()
    aad = PrivateContentAAD(b"group", 5, ContentType.APPLICATION, ad).encode()
    ct = cs.aead_seal(key, nonce, aad, plaintext)
    sd_key, sd_nonce = sender_data_key_nonce(cs, b"s" * 32, ct)
    sd_aad = SenderDataAAD(b"group", 5, ContentType.APPLICATION).encode()
    esd = cs.aead_seal(sd_key, sd_nonce, sd_aad, SenderData(leaf, generation, bytes(4)).encode())
    return ad, esd, ct


def test_forgeries_rejected_and_the_key_kept():
    cs = get_cipher_suite(1)
    priv, pub = cs.generate_signature_key_pair()
    other_priv, _ = cs.generate_signature_key_pair()
    sender = _app_keys(SecretTree(cs, b"e" * 32, 4), {0: pub})
    receiver = _app_keys(SecretTree(cs, b"e" * 32, 4), {0: pub})
    wire = sender.seal_application(cs.signature.signer(priv), 0, b"hello", b"ad")
    _, _, ad, esd, ct = P.read_private_application(wire)

    flipped = ct[:-1] + bytes([ct[-1] ^ 1])
    for bad in ((ad, esd, flipped), (b"other", esd, ct), (ad, esd[:-1], ct)):
        with pytest.raises(CryptoError):
            receiver.open_application(*bad)
    assert receiver.open_application(ad, esd, ct) == (Sender.member(0), b"hello")
    with pytest.raises(ValidationError):  # replay: the key is used up
        receiver.open_application(ad, esd, ct)

    # Signed by another key, and not signed at all.
    for signer in (cs.signature.signer(other_priv), lambda content: b""):
        forged = _app_keys(SecretTree(cs, b"e" * 32, 4), {0: pub})
        _, _, ad, esd, ct = P.read_private_application(
            forged.seal_application(signer, 0, b"forged")
        )
        with pytest.raises(CryptoError, match="signature"):
            _app_keys(SecretTree(cs, b"e" * 32, 4), {0: pub}).open_application(ad, esd, ct)


def test_padding_plaintext_and_sender_checks():
    cs = get_cipher_suite(1)
    priv, pub = cs.generate_signature_key_pair()
    signature = cs.signature.signer(priv)(b"anything")
    good = opaque(b"hi") + opaque(signature)

    def open_raw(leaf: int, plaintext: bytes, keys: dict[int, bytes]):
        return _app_keys(SecretTree(cs, b"e" * 32, 4), keys).open_application(
            *_seal_raw(leaf, plaintext)
        )

    with pytest.raises(DecodeError, match="padding"):
        open_raw(0, good + b"\x00\x00\x01", {0: pub})
    with pytest.raises(DecodeError):
        open_raw(0, opaque(b"hi")[:-1], {0: pub})
    with pytest.raises(ValidationError, match="blank leaf"):
        open_raw(2, good + bytes(5), {0: pub})
    with pytest.raises(CryptoError, match="signature"):  # zero padding is fine; the
        open_raw(0, good + bytes(5), {0: pub})  # signature covers other content
    with pytest.raises(ValidationError):  # a leaf outside the secret tree
        _app_keys(SecretTree(cs, b"e" * 32, 4), {}).seal_application(lambda c: b"", 4, b"x")


def _two_members():
    cs = get_cipher_suite(1)
    alice = Group.create(1, Credential.basic(b"alice"), cs.generate_signature_key_pair()[0])
    bob_kp = generate_key_package(1, Credential.basic(b"bob"), cs.generate_signature_key_pair()[0])
    out = alice.commit(add=[bob_kp.key_package])
    alice.merge_pending_commit()
    return alice, Group.join_from_welcome(out.welcome, bob_kp)


def test_group_hot_path_matches_the_generic_path():
    alice, bob = _two_members()
    bob_copy = Group.from_bytes(bob.to_bytes())
    wire = alice.encrypt(b"x" * 1024, authenticated_data=b"ad", padding=32)
    fast = bob.process(wire)  # bytes: the hot path
    generic = bob_copy.process(MLSMessage.decode(wire))  # a decoded message: generic path
    assert fast == generic
    assert (fast.kind, fast.data, fast.authenticated_data) == ("application", b"x" * 1024, b"ad")
    assert fast.sender == Sender.member(alice.leaf_index)
    # The hot path moved the same ratchet: both copies saved the same state.
    assert bob.to_bytes() == bob_copy.to_bytes()


def test_group_rejects_other_groups_and_epochs():
    alice, bob = _two_members()
    carol, dave = _two_members()
    with pytest.raises(ValidationError, match="another group"):
        bob.process(carol.encrypt(b"elsewhere"))
    with pytest.raises(TypeError):
        alice.encrypt(bytearray(b"not bytes"))  # type: ignore[arg-type]
    ahead = Group.from_bytes(alice.to_bytes())
    ahead.commit(force_path=True)
    ahead.merge_pending_commit()
    with pytest.raises(ValidationError, match="epoch"):
        bob.process(ahead.encrypt(b"from the future"))
    assert bob.process(alice.encrypt(b"still fine")).data == b"still fine"


def _decoded_fields(data: bytes):
    try:
        body = MLSMessage.decode(data).body
    except DecodeError:
        return "error"
    if isinstance(body, PrivateMessage) and body.content_type == ContentType.APPLICATION:
        return (body.group_id, body.epoch, body.authenticated_data) + (
            body.encrypted_sender_data,
            body.ciphertext,
        )
    return "other"


def test_hot_path_reader_is_as_strict_as_the_full_decoder():
    """Random mutations of an application message: read_private_application accepts exactly
    what MLSMessage.decode accepts as an application PrivateMessage, with the same fields."""
    alice, _ = _two_members()
    wire = alice.encrypt(b"m" * 100, authenticated_data=b"a" * 70)  # 2-byte varints too
    rng = random.Random(9420)
    outcomes = set()
    for _ in range(3000):
        b = bytearray(wire)
        for _ in range(rng.randint(1, 3)):
            if len(b) < 2:
                break
            i, op = rng.randrange(1, len(b)), rng.random()
            if op < 0.5:
                b[i] = rng.randrange(256)
            elif op < 0.75:
                del b[i:]
            else:
                b[i:i] = bytes([rng.randrange(256)])
        data = bytes(b)
        try:
            fast = P.read_private_application(data)
        except DecodeError:
            fast = "error"
        full = _decoded_fields(data)
        if fast is None:  # not an application PrivateMessage: the full decoder decides
            assert full in ("other", "error")
        else:
            assert fast == full
        outcomes.add(fast if isinstance(fast, str | None) else "fields")
    assert outcomes == {None, "error", "fields"}


@pytest.mark.parametrize("suite", SUPPORTED_SUITES)
def test_prepared_hmac_key_derivations_equal_expand_with_label(suite):
    """The hot path's derivations (one prepared HMAC key, several MACs) give exactly the
    KDF outputs of the generic ExpandWithLabel, for every suite's hash."""
    cs = get_cipher_suite(suite)
    secret, nh = bytes(range(cs.hash_len)), cs.hash_len
    for generation in (0, 1, 0xFFFFFFFE):
        g = generation.to_bytes(4, "big")
        assert cs.ratchet_step(secret, generation) == (
            cs.expand_with_label(secret, b"key", g, cs.aead_key_len),
            cs.expand_with_label(secret, b"nonce", g, cs.aead_nonce_len),
            cs.expand_with_label(secret, b"secret", g, nh),
        )
    for ciphertext in (b"", b"short", bytes(range(200))):
        assert cs.sender_data_key_nonce(cs.hmac_key(secret), ciphertext) == (
            sender_data_key_nonce(cs, secret, ciphertext)
        )
    requests = [(b"tree", b"left", nh), (b"application", b"", nh), (b"x", b"c" * 70, 12)]
    assert cs.expand_with_labels(secret, *requests) == [
        cs.expand_with_label(secret, label, context, n) for label, context, n in requests
    ]
    long_key = bytes(200)  # longer than a hash block: hashed first, as HMAC does
    assert cs.mac_with(cs.hmac_key(long_key), b"msg") == cs.mac(long_key, b"msg")
