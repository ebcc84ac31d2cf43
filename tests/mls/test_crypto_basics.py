"""crypto-basics.json for every ciphersuite, plus HPKE/AEAD/signature behaviour checks."""

from __future__ import annotations

import pytest

from roost.mls.crypto import SUPPORTED_SUITES, get_cipher_suite
from roost.mls.errors import CryptoError, UnsupportedError

from .vectors import cases, h


def test_all_seven_suites_supported():
    assert SUPPORTED_SUITES == (1, 2, 3, 4, 5, 6, 7)
    with pytest.raises(UnsupportedError):
        get_cipher_suite(0x7777)


@pytest.mark.parametrize("case", cases("crypto-basics"))
def test_crypto_basics_vector(case):
    cs = get_cipher_suite(case["cipher_suite"])

    v = case["ref_hash"]
    assert cs.ref_hash(v["label"].encode(), h(v["value"])) == h(v["out"])

    v = case["expand_with_label"]
    out = cs.expand_with_label(h(v["secret"]), v["label"].encode(), h(v["context"]), v["length"])
    assert out == h(v["out"])

    v = case["derive_secret"]
    assert cs.derive_secret(h(v["secret"]), v["label"].encode()) == h(v["out"])

    v = case["derive_tree_secret"]
    out = cs.derive_tree_secret(h(v["secret"]), v["label"].encode(), v["generation"], v["length"])
    assert out == h(v["out"])

    v = case["sign_with_label"]
    label, content = v["label"].encode(), h(v["content"])
    assert cs.signature_public_key(h(v["priv"])) == h(v["pub"])
    assert cs.verify_with_label(h(v["pub"]), label, content, h(v["signature"]))
    own = cs.sign_with_label(h(v["priv"]), label, content)
    assert cs.verify_with_label(h(v["pub"]), label, content, own)
    assert not cs.verify_with_label(h(v["pub"]), label, content + b"x", own)
    assert not cs.verify_with_label(h(v["pub"]), b"other", content, own)

    v = case["encrypt_with_label"]
    priv, pub, label, ctx = h(v["priv"]), h(v["pub"]), v["label"].encode(), h(v["context"])
    assert cs.hpke_public_key(priv) == pub
    pt = cs.decrypt_with_label(priv, label, ctx, h(v["kem_output"]), h(v["ciphertext"]))
    assert pt == h(v["plaintext"])
    kem_output, ct = cs.encrypt_with_label(pub, label, ctx, h(v["plaintext"]))
    assert cs.decrypt_with_label(priv, label, ctx, kem_output, ct) == h(v["plaintext"])
    with pytest.raises(CryptoError):
        cs.decrypt_with_label(priv, label, ctx + b"x", kem_output, ct)


@pytest.mark.parametrize("suite", SUPPORTED_SUITES)
def test_hpke_roundtrip_export_and_derive(suite):
    cs = get_cipher_suite(suite)
    priv, pub = cs.generate_hpke_key_pair()
    assert cs.hpke_public_key(priv) == pub
    enc, ct = cs.hpke_seal(pub, b"info", b"aad", b"hello")
    assert cs.hpke_open(priv, enc, b"info", b"aad", ct) == b"hello"
    with pytest.raises(CryptoError):
        cs.hpke_open(priv, enc, b"info", b"other aad", ct)
    with pytest.raises(CryptoError):
        cs.hpke_open(priv, b"\x00" * len(enc), b"info", b"aad", ct)

    enc, secret = cs.hpke_export_sender(pub, b"", b"ctx", 42)
    assert len(secret) == 42
    assert cs.hpke_export_receiver(priv, enc, b"", b"ctx", 42) == secret

    d1 = cs.derive_hpke_key_pair(b"seed")
    assert d1 == cs.derive_hpke_key_pair(b"seed")
    assert d1 != cs.derive_hpke_key_pair(b"seed2")
    assert cs.hpke_public_key(d1[0]) == d1[1]


@pytest.mark.parametrize("suite", SUPPORTED_SUITES)
def test_signature_and_aead(suite):
    cs = get_cipher_suite(suite)
    priv, pub = cs.generate_signature_key_pair()
    assert cs.signature_public_key(priv) == pub
    sig = cs.sign_with_label(priv, b"L", b"content")
    assert cs.verify_with_label(pub, b"L", b"content", sig)
    assert not cs.verify_with_label(pub, b"L", b"content", b"\x00" * len(sig))
    assert not cs.verify_with_label(b"garbage", b"L", b"content", sig)

    key, nonce = bytes(cs.aead_key_len), bytes(cs.aead_nonce_len)
    ct = cs.aead_seal(key, nonce, b"aad", b"pt")
    assert cs.aead_open(key, nonce, b"aad", ct) == b"pt"
    with pytest.raises(CryptoError):
        cs.aead_open(key, nonce, b"aad", ct[:-1] + bytes([ct[-1] ^ 1]))


def test_x25519_small_order_point_rejected():
    cs = get_cipher_suite(1)
    priv, _ = cs.generate_hpke_key_pair()
    with pytest.raises(CryptoError):
        cs.hpke_open(priv, bytes(32), b"", b"", bytes(32))


def test_long_kdf_expand():
    cs = get_cipher_suite(1)
    out = cs.kdf_expand(cs.kdf_extract(b"", b"ikm"), b"info", 100)
    assert len(out) == 100 and out[:32] == cs.kdf_expand(cs.kdf_extract(b"", b"ikm"), b"info", 32)


def test_hpke_rfc9180_a_1_1_known_answer():
    """RFC 9180 Appendix A.1.1 (base mode, X25519, HKDF-SHA256, AES-128-GCM): derive key
    pairs, decap, key schedule, first open, and the first exported value."""
    from roost.mls.crypto import hpke
    from roost.mls.crypto.aead import AES_128_GCM

    suite = hpke.Hpke(hpke.DHKEM_X25519, hpke.KDF_HKDF_SHA256, AES_128_GCM)
    kem = hpke.DHKEM_X25519
    sk_e = h("52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736")
    pk_e = h("37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431")
    sk_r = h("4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8")
    pk_r = h("3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d")
    ikm_e = h("7268600d403fce431561aef583ee1613527cff655c1343f29812e66706df3234")
    ikm_r = h("6db9df30aa07dd42ee5e8181afdb977e538f5e1fec8a06223f33f7013e525037")
    assert kem.derive_key_pair(ikm_e) == (sk_e, pk_e)
    assert kem.derive_key_pair(ikm_r) == (sk_r, pk_r)
    shared = kem.decap(pk_e, sk_r)
    assert shared == h("fe0e18c9f024ce43799ae393c7e8fe8fce9d218875e8227b0187c04e7d2ea1fc")
    info = h("4f6465206f6e2061204772656369616e2055726e")
    key, nonce, exporter = suite._key_schedule(shared, info)
    assert key == h("4531685d41d65f03dc48f6b8302c05b0")
    assert nonce == h("56d890e5accaaf011cff4b7d")
    assert exporter == h("45ff1c2e220db587171952c0592d5f5ebe103f1561a2614e38f2ffd47e99e3f8")
    ct = h(
        "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a"
    )
    pt = suite.open(sk_r, pk_e, info, b"Count-0", ct)
    assert pt == b"Beauty is truth, truth beauty"
    exported = suite.export_receiver(sk_r, pk_e, info, b"", 32)
    assert exported == h("3853fe2b4035195a573ffc53856e77058e15d9ea064de3e59f4961d0095250ee")
