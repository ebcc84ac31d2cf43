"""Client-side X.509 credential verification (roost.client.credentials), without a server."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from roost.client import CredentialError, verify_client_credential

NOW = dt.datetime.now(dt.UTC)
DER = serialization.Encoding.DER
CLIENT = "alice@example.org/0b0e8f4e-8d0c-4a8e-9a43-3b1f2f4a9b10"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn: str = "Roost AS example.org", *, ca: bool = True):
    key = ed25519.Ed25519PrivateKey.generate()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, None)
    )
    return key, cert


def make_leaf(
    issuer_key,
    issuer_cert,
    client_id: str = CLIENT,
    *,
    days: int = 365,
    start: dt.datetime | None = None,
    ca: bool = False,
    san: bool = True,
):
    key = ed25519.Ed25519PrivateKey.generate()
    start = start or NOW - dt.timedelta(minutes=5)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(client_id))
        .issuer_name(issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        b = b.add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("roost:client:" + client_id)]
            ),
            critical=False,
        )
    cert = b.sign(issuer_key, None)
    return key, cert


def raw(key) -> bytes:
    return key.public_key().public_bytes_raw()


@pytest.fixture(scope="module")
def authority():
    return make_ca()


def test_valid_chain_binds_client_id_and_key(authority):
    as_key, as_cert = authority
    key, leaf = make_leaf(as_key, as_cert)
    v = verify_client_credential(
        [leaf.public_bytes(DER), as_cert.public_bytes(DER)],
        as_cert.public_bytes(DER),
        client_id=CLIENT,
        signature_key=raw(key),
    )
    assert v.client_id == CLIENT
    assert v.signature_key == raw(key)
    assert v.not_after == leaf.not_valid_after_utc


def test_leaf_alone_and_pem_anchor_accepted(authority):
    as_key, as_cert = authority
    key, leaf = make_leaf(as_key, as_cert)
    pem = as_cert.public_bytes(serialization.Encoding.PEM).decode()
    v = verify_client_credential([leaf.public_bytes(DER)], pem, client_id=CLIENT)
    assert v.signature_key == raw(key)


def test_other_domains_as_is_refused(authority):
    as_key, as_cert = authority
    _, other = make_ca("Roost AS evil.example")
    _, leaf = make_leaf(as_key, as_cert)
    with pytest.raises(CredentialError, match="not signed"):
        verify_client_credential([leaf.public_bytes(DER)], other, client_id=CLIENT)


def test_same_name_different_key_is_refused(authority):
    # An attacker's CA with the same subject name must not pass the signature check.
    as_key, as_cert = authority
    fake_key, fake_ca = make_ca(as_cert.subject.rfc4514_string().split("=", 1)[1])
    _, leaf = make_leaf(fake_key, fake_ca)
    with pytest.raises(CredentialError):
        verify_client_credential([leaf.public_bytes(DER)], as_cert, client_id=CLIENT)


def test_wrong_client_id_is_refused(authority):
    as_key, as_cert = authority
    key, leaf = make_leaf(as_key, as_cert)
    with pytest.raises(CredentialError, match="does not name"):
        verify_client_credential([leaf], as_cert, client_id=CLIENT.replace("alice", "mallory"))


def test_cn_without_san_is_not_a_binding(authority):
    as_key, as_cert = authority
    _, leaf = make_leaf(as_key, as_cert, san=False)
    with pytest.raises(CredentialError, match="does not name"):
        verify_client_credential([leaf], as_cert, client_id=CLIENT)


def test_wrong_signature_key_is_refused(authority):
    as_key, as_cert = authority
    _, leaf = make_leaf(as_key, as_cert)
    other = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(CredentialError, match="signature key"):
        verify_client_credential([leaf], as_cert, client_id=CLIENT, signature_key=raw(other))


def test_expired_and_not_yet_valid_leaves_are_refused(authority):
    as_key, as_cert = authority
    _, old = make_leaf(as_key, as_cert, start=NOW - dt.timedelta(days=10), days=1)
    _, future = make_leaf(as_key, as_cert, start=NOW + dt.timedelta(days=1))
    for leaf in (old, future):
        with pytest.raises(CredentialError, match="validity"):
            verify_client_credential([leaf], as_cert, client_id=CLIENT)


def test_ca_leaf_and_non_ca_issuer_are_refused(authority):
    as_key, as_cert = authority
    _, ca_leaf = make_leaf(as_key, as_cert, ca=True)
    with pytest.raises(CredentialError, match="is a CA"):
        verify_client_credential([ca_leaf], as_cert, client_id=CLIENT)
    plain_key, plain_root = make_ca(ca=False)
    _, leaf = make_leaf(plain_key, plain_root)
    with pytest.raises(CredentialError, match="not a CA"):
        verify_client_credential([leaf], plain_root, client_id=CLIENT)


def test_tampered_leaf_and_garbage_are_refused(authority):
    as_key, as_cert = authority
    _, leaf = make_leaf(as_key, as_cert)
    der = bytearray(leaf.public_bytes(DER))
    der[-1] ^= 1  # flip a bit of the signature
    with pytest.raises(CredentialError):
        verify_client_credential([bytes(der)], as_cert, client_id=CLIENT)
    with pytest.raises(CredentialError, match="not a certificate"):
        verify_client_credential([b"\x30\x03junk"], as_cert, client_id=CLIENT)
    with pytest.raises(CredentialError, match="empty"):
        verify_client_credential([], as_cert, client_id=CLIENT)
