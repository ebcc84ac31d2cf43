"""The client's group credential policy across domains (roost.client.credential_policy),
without a server: real AS certificates of two domains, real MLS groups.

A member of a domain whose AS certificate the client has not fetched yet is reported as a
typed ``MissingAsCertificate(domain)`` — through the MLS layer unchanged — so callers fetch
that certificate and retry without reading error texts."""

from __future__ import annotations

import pytest

from roost.client import CredentialError, MissingAsCertificate, RoostClient, RoostError
from roost.client.state import ClientState
from roost.mls import Credential, Group, get_cipher_suite
from roost.mls.errors import ValidationError
from roost.mls.key_package_gen import generate_key_package
from roost.server.auth.ca import CertificateAuthority

SUITE = 1


def _member(ca: CertificateAuthority, client_id: str) -> tuple[bytes, Credential]:
    sig_priv, sig_pub = get_cipher_suite(SUITE).generate_signature_key_pair()
    leaf = ca.issue_client_certificate(client_id, SUITE, sig_pub, 30)
    return sig_priv, Credential.x509([leaf, ca.certificate_der])


@pytest.fixture(scope="module")
def cas() -> tuple[CertificateAuthority, CertificateAuthority]:
    return CertificateAuthority.generate("a.test"), CertificateAuthority.generate("b.test")


def _alice(ca_a: CertificateAuthority) -> tuple[RoostClient, bytes, Credential]:
    sig_priv, cred = _member(ca_a, "alice@a.test/0b0e8f4e-8d0c-4a8e-9a43-3b1f2f4a9b10")
    state = ClientState(
        server="http://127.0.0.1:9",  # never contacted: everything needed is in the state
        signature_private=sig_priv,
        home_domain="a.test",
        user_id="alice@a.test",
        client_id="alice@a.test/0b0e8f4e-8d0c-4a8e-9a43-3b1f2f4a9b10",
        credential_chain=list(cred.certificates),
        as_certificate=ca_a.certificate_der,
    )
    return RoostClient(state), sig_priv, cred


async def test_missing_as_certificate_is_typed_and_names_the_domain(cas):
    ca_a, ca_b = cas
    alice, _, _ = _alice(ca_a)
    _, bob_cred = _member(ca_b, "bob@b.test/1c1e8f4e-8d0c-4a8e-9a43-3b1f2f4a9b10")
    policy = alice.credential_policy()
    with pytest.raises(MissingAsCertificate) as missing:
        policy(bob_cred, b"")
    assert missing.value.domain == "b.test"
    assert isinstance(missing.value, CredentialError) and isinstance(missing.value, RoostError)
    await alice.aclose()


async def test_missing_as_certificate_passes_through_mls_unchanged(cas):
    ca_a, ca_b = cas
    alice, alice_priv, alice_cred = _alice(ca_a)
    bob_priv, bob_cred = _member(ca_b, "bob@b.test/1c1e8f4e-8d0c-4a8e-9a43-3b1f2f4a9b10")
    bob_kp = generate_key_package(SUITE, bob_cred, bob_priv).key_package
    group = Group.create(SUITE, alice_cred, alice_priv, credential_policy=alice.credential_policy())
    with pytest.raises(MissingAsCertificate) as missing:
        group.commit(add=[bob_kp])
    assert missing.value.domain == "b.test"
    group.clear_pending_commit()

    # Once the certificate is at hand, the same add goes through.
    alice.state.remote_as_certificates["b.test"] = ca_b.certificate_der
    group = Group.create(SUITE, alice_cred, alice_priv, credential_policy=alice.credential_policy())
    out = group.commit(add=[bob_kp])
    assert out.welcome is not None
    await alice.aclose()


async def test_a_credential_of_the_wrong_as_is_still_refused(cas):
    ca_a, ca_b = cas
    alice, _, _ = _alice(ca_a)
    alice.state.remote_as_certificates["b.test"] = ca_b.certificate_der
    # A b.test client id signed by a.test's AS: fetched or not, it never verifies.
    priv, forged = _member(ca_a, "mallory@b.test/2c1e8f4e-8d0c-4a8e-9a43-3b1f2f4a9b10")
    pub = get_cipher_suite(SUITE).signature_public_key(priv)
    with pytest.raises(CredentialError):
        alice.credential_policy()(forged, pub)
    # Inside MLS, as for any policy refusal: a ValidationError, not a missing certificate.
    kp = generate_key_package(SUITE, forged, priv).key_package
    alice_group = Group.create(
        SUITE,
        Credential.x509(alice.state.credential_chain),
        alice.state.signature_private,
        credential_policy=alice.credential_policy(),
    )
    with pytest.raises(ValidationError) as refused:
        alice_group.commit(add=[kp])
    assert not isinstance(refused.value, MissingAsCertificate)
    await alice.aclose()
