"""message-protection.json (public and private forms of proposal/commit/application,
verify the given ones and protect+unprotect our own), plus tamper and replay checks."""

from __future__ import annotations

import dataclasses

import pytest

from roost.mls import protection as P
from roost.mls.constants import WireFormat
from roost.mls.crypto import get_cipher_suite
from roost.mls.errors import CryptoError, DecodeError, ValidationError
from roost.mls.framing import (
    AuthenticatedContent,
    FramedContent,
    MLSMessage,
    PrivateMessage,
    PublicMessage,
    Sender,
    SenderDataAAD,
)
from roost.mls.group_context import GroupContext
from roost.mls.secret_tree import SecretTree, sender_data_key_nonce

from .vectors import cases, h

SENDER = 1  # the vectors' sender is leaf 1 of a 2-member group


def _raw(body) -> bytes:
    return body if isinstance(body, bytes) else body.encode()


def _setup(case):
    cs = get_cipher_suite(case["cipher_suite"])
    gc = GroupContext(
        1,
        cs.suite_id,
        h(case["group_id"]),
        case["epoch"],
        h(case["tree_hash"]),
        h(case["confirmed_transcript_hash"]),
    )
    return cs, gc.encode()


@pytest.mark.parametrize("kind", ["proposal", "commit"])
@pytest.mark.parametrize("case", cases("message-protection"))
def test_public_vector(case, kind):
    cs, gc = _setup(case)
    mkey, spub, spriv = (
        h(case["membership_key"]),
        h(case["signature_pub"]),
        h(case["signature_priv"]),
    )
    raw_msg = h(case[f"{kind}_pub"])
    msg = MLSMessage.decode(raw_msg)
    assert msg.encode() == raw_msg
    ac = P.from_public_message(cs, msg.body, gc, mkey, spub)
    assert ac.content.sender == Sender.member(SENDER)
    assert _raw(ac.content.content) == h(case[kind])

    # Protect the same content ourselves and check it verifies.
    tag = ac.auth.confirmation_tag
    own = P.authenticate(cs, spriv, WireFormat.PUBLIC_MESSAGE, ac.content, gc, tag)
    pm = P.to_public_message(cs, own, gc, mkey)
    again = PublicMessage.decode(MLSMessage(pm).encode()[4:])
    assert P.from_public_message(cs, again, gc, mkey, spub).content == ac.content

    # Tampering: wrong membership key, wrong group context, flipped signature.
    with pytest.raises(CryptoError):
        P.from_public_message(cs, pm, gc, bytes(len(mkey)), spub)
    other_gc = gc[:-1] + b"\x01" if gc[-1] == 0 else gc[:-1] + b"\x00"
    with pytest.raises((CryptoError, DecodeError)):
        P.from_public_message(cs, pm, other_gc, mkey, spub)
    bad_sig = dataclasses.replace(
        pm.auth, signature=pm.auth.signature[:-1] + bytes([pm.auth.signature[-1] ^ 1])
    )
    bad = dataclasses.replace(pm, auth=bad_sig)
    bad = P.to_public_message(cs, bad.authenticated_content(), gc, mkey)
    with pytest.raises(CryptoError):
        P.from_public_message(cs, bad, gc, mkey, spub)


@pytest.mark.parametrize("kind", ["proposal", "commit", "application"])
@pytest.mark.parametrize("case", cases("message-protection"))
def test_private_vector(case, kind):
    cs, gc = _setup(case)
    enc_secret, sds = h(case["encryption_secret"]), h(case["sender_data_secret"])
    spub, spriv = h(case["signature_pub"]), h(case["signature_priv"])
    raw_msg = h(case[f"{kind}_priv"])
    msg = MLSMessage.decode(raw_msg)
    assert msg.encode() == raw_msg
    ac = P.unprotect_private(cs, msg.body, gc, SecretTree(cs, enc_secret, 2), sds, spub)
    assert ac.content.sender == Sender.member(SENDER)
    assert _raw(ac.content.content) == h(case[kind])

    # Our own PrivateMessage for the same content, with padding, decrypts on a fresh tree.
    sender_tree, receiver_tree = SecretTree(cs, enc_secret, 2), SecretTree(cs, enc_secret, 2)
    pm = P.protect_private(
        cs, spriv, ac.content, gc, sender_tree, sds, ac.auth.confirmation_tag, padding=17
    )
    wire = MLSMessage(pm).encode()
    back = P.unprotect_private(cs, MLSMessage.decode(wire).body, gc, receiver_tree, sds, spub)
    # (ECDSA signatures are randomized, so compare everything but the signature bytes.)
    assert back.content == ac.content
    assert back.auth.confirmation_tag == ac.auth.confirmation_tag
    # Replaying the same message fails: its key was consumed.
    with pytest.raises(ValidationError):
        P.unprotect_private(cs, pm, gc, receiver_tree, sds, spub)


def _app_setup(suite=1):
    cs = get_cipher_suite(suite)
    priv, pub = cs.generate_signature_key_pair()
    gc = GroupContext(1, suite, b"group", 5, b"t" * cs.hash_len, b"c" * cs.hash_len).encode()
    enc, sds = b"e" * cs.hash_len, b"s" * cs.hash_len
    content = FramedContent(b"group", 5, Sender.member(0), b"ad", b"hello" * 50)
    return cs, priv, pub, gc, enc, sds, content


def test_private_tampering_is_rejected_without_burning_the_key():
    cs, priv, pub, gc, enc, sds, content = _app_setup()
    pm = P.protect_private(cs, priv, content, gc, SecretTree(cs, enc, 4), sds)
    receiver = SecretTree(cs, enc, 4)
    flipped = pm.ciphertext[:-1] + bytes([pm.ciphertext[-1] ^ 1])
    for bad in (
        dataclasses.replace(pm, ciphertext=flipped),
        dataclasses.replace(pm, authenticated_data=b"other"),
        dataclasses.replace(pm, epoch=6),
    ):
        with pytest.raises(CryptoError):
            P.unprotect_private(cs, bad, gc, receiver, sds, pub)
    # A bad signature is caught after decryption.
    _, other_pub = cs.generate_signature_key_pair()
    with pytest.raises(CryptoError):
        P.unprotect_private(cs, pm, gc, SecretTree(cs, enc, 4), sds, other_pub)
    # The genuine message still decrypts on the receiver that saw the forgeries.
    assert P.unprotect_private(cs, pm, gc, receiver, sds, pub).content == content


def test_nonzero_padding_rejected():
    cs, priv, pub, gc, enc, sds, content = _app_setup()
    ac = P.authenticate(cs, priv, WireFormat.PRIVATE_MESSAGE, content, gc)
    pm = P.encrypt(cs, ac, SecretTree(cs, enc, 4), sds, padding=8)
    # Re-encrypt a plaintext whose padding has a non-zero byte, with the same keys.
    tree = SecretTree(cs, enc, 4)
    sd = P.decrypt_sender_data(cs, pm, sds)
    key, nonce = tree.ratchet(0, content.content_type).get(sd.generation)
    nonce = P._apply_reuse_guard(nonce, sd.reuse_guard)
    aad = dataclasses.replace(pm, ciphertext=b"").content_aad()
    plain = cs.aead_open(key, nonce, aad, pm.ciphertext)
    assert plain.endswith(bytes(8))
    forged_ct = cs.aead_seal(key, nonce, aad, plain[:-1] + b"\x01")
    sd_key_nonce = sender_data_key_nonce(cs, sds, forged_ct)
    sd_aad = SenderDataAAD(pm.group_id, pm.epoch, pm.content_type).encode()
    esd = cs.aead_seal(*sd_key_nonce, sd_aad, sd.encode())
    forged = dataclasses.replace(pm, ciphertext=forged_ct, encrypted_sender_data=esd)
    with pytest.raises(DecodeError):
        P.decrypt(cs, forged, SecretTree(cs, enc, 4), sds)


def test_rule_checks():
    cs, priv, pub, gc, enc, sds, content = _app_setup()
    public_ac = P.authenticate(cs, priv, WireFormat.PUBLIC_MESSAGE, content, gc)
    with pytest.raises(ValidationError):
        P.encrypt(cs, public_ac, SecretTree(cs, enc, 4), sds)
    private_ac = P.authenticate(cs, priv, WireFormat.PRIVATE_MESSAGE, content, gc)
    with pytest.raises(ValidationError):
        P.to_public_message(cs, private_ac, gc, b"m" * 32)
    ext = dataclasses.replace(content, sender=Sender.external(0))
    ext_ac = P.authenticate(cs, priv, WireFormat.PRIVATE_MESSAGE, ext, gc)
    with pytest.raises(ValidationError):
        P.encrypt(cs, ext_ac, SecretTree(cs, enc, 4), sds)
    with pytest.raises(ValidationError):
        P.authenticate(cs, priv, WireFormat.PUBLIC_MESSAGE, content, gc, b"tag")
    # A member PublicMessage without membership key cannot be built or checked.
    with pytest.raises(ValidationError):
        P.to_public_message(cs, public_ac, gc, None)
    # Sender leaf outside the tree.
    far = dataclasses.replace(content, sender=Sender.member(9))
    with pytest.raises(ValidationError):
        P.protect_private(cs, priv, far, gc, SecretTree(cs, enc, 4), sds)


def test_external_sender_public_message_has_no_membership_tag():
    cs, priv, pub, gc, enc, sds, content = _app_setup()
    from roost.mls.proposals import Proposal  # noqa: F401  (body type for proposals)

    ext = dataclasses.replace(content, sender=Sender.new_member_proposal())
    ac = AuthenticatedContent(
        WireFormat.PUBLIC_MESSAGE,
        ext,
        P.authenticate(cs, priv, WireFormat.PUBLIC_MESSAGE, ext, None).auth,
    )
    pm = P.to_public_message(cs, ac, gc, None)
    assert pm.membership_tag is None
    assert P.from_public_message(cs, pm, gc, None, pub) == ac


@pytest.mark.parametrize("suite", [1, 2, 3, 4, 5, 6, 7])
def test_application_roundtrip_out_of_order_all_suites(suite):
    cs, priv, pub, gc, enc, sds, content = _app_setup(suite)
    sender, receiver = SecretTree(cs, enc, 4), SecretTree(cs, enc, 4)
    msgs = [P.protect_private(cs, priv, content, gc, sender, sds) for _ in range(4)]
    assert isinstance(msgs[0], PrivateMessage)
    for pm in (msgs[2], msgs[0], msgs[3], msgs[1]):
        assert P.unprotect_private(cs, pm, gc, receiver, sds, pub).content == content
