"""A commit adding a leaf whose certificate cannot even be parsed cleanly is the committer's
error (422), never a server failure: the DS's credential check runs as the observer's
credential policy, and the observer now lets a policy's own exceptions through unchanged."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from roost.mls.credential import Credential
from roost.mls.crypto.ciphersuite import get_cipher_suite
from roost.mls.key_package_gen import generate_key_package

from .delivery_helpers import create_group, member, post_commit


def _certificate_with_a_repeated_extension(client_id: str) -> bytes:
    """A leaf naming a client id in two SubjectAlternativeName extensions (RFC 5280 4.2
    forbids repeating an extension; parsers refuse it)."""
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mallory")])
    now = dt.datetime.now(dt.UTC)
    uri = x509.UniformResourceIdentifier(f"roost:client:{client_id}")
    der = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([uri]), critical=False)
        .add_extension(x509.IssuerAlternativeName([uri]), critical=False)
        .sign(key, None)
        .public_bytes(serialization.Encoding.DER)
    )
    # Turn the IssuerAlternativeName (2.5.29.18) into a second SubjectAlternativeName (.17).
    repeated = der.replace(bytes.fromhex("0603551d12"), bytes.fromhex("0603551d11"))
    assert repeated != der
    return repeated


async def test_an_added_leaf_with_a_malformed_certificate_is_refused(server) -> None:  # type: ignore[no-untyped-def]
    http = server.http
    alice = await member(http, await server.user("alice"))
    gid, r = await create_group(http, alice)
    assert r.status_code == 201, r.text
    sig_priv, _ = get_cipher_suite(1).generate_signature_key_pair()
    cert = _certificate_with_a_repeated_extension("mallory@localhost/" + "0" * 36)
    kp = generate_key_package(1, Credential.x509([cert]), sig_priv)
    out = alice.group.commit(add=[kp.key_package])

    r = await post_commit(http, alice, gid, out)

    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_commit"
