"""The AS as its domain's X.509 certificate authority (Ed25519), see docs/api.md "X.509 profile".

The leaf certificate binds the client id (SubjectAlternativeName URI ``roost:client:<client id>``)
to the client's MLS signature public key.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from roost.mls.crypto.ciphersuite import get_cipher_suite

SERVER_URI_PREFIX = "roost:server:"
CLIENT_URI_PREFIX = "roost:client:"
AS_VALIDITY_DAYS = 3650
_BACKDATE = dt.timedelta(minutes=5)  # tolerate clients whose clocks run a little behind

# MLS signature scheme -> how its raw public key becomes an X.509 SubjectPublicKeyInfo.
_EC_CURVES: dict[str, ec.EllipticCurve] = {
    "p256": ec.SECP256R1(),
    "p384": ec.SECP384R1(),
    "p521": ec.SECP521R1(),
}


class InvalidSignatureKey(ValueError):
    """The bytes are not a public key of the suite's signature scheme."""


# The public keys of the MLS signature schemes, as `cryptography` objects.
SignaturePublicKey = ed25519.Ed25519PublicKey | ed448.Ed448PublicKey | ec.EllipticCurvePublicKey


def mls_public_key_to_x509(cipher_suite: int, raw: bytes) -> SignaturePublicKey:
    """Load an MLS-encoded signature public key as a `cryptography` public key object."""
    name = get_cipher_suite(cipher_suite).name
    try:
        if name.endswith("_Ed25519"):
            return ed25519.Ed25519PublicKey.from_public_bytes(raw)
        if name.endswith("_Ed448"):
            return ed448.Ed448PublicKey.from_public_bytes(raw)
        curve = _EC_CURVES[name.rsplit("_", 1)[1].lower()]
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, raw)
    except (ValueError, KeyError) as e:
        raise InvalidSignatureKey(
            f"not a valid signature key for suite {cipher_suite}: {e}"
        ) from None


def x509_public_key_to_mls(key: CertificatePublicKeyTypes) -> bytes:
    """The MLS encoding of a certificate's public key (raw EdDSA key or uncompressed SEC1 point)."""
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return key.public_bytes_raw()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    raise InvalidSignatureKey(f"unsupported key type {type(key).__name__}")


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    domain: str
    private_key: ed25519.Ed25519PrivateKey
    certificate: x509.Certificate

    @property
    def certificate_der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def certificate_pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    @classmethod
    def generate(cls, domain: str, now: dt.datetime | None = None) -> CertificateAuthority:
        now = now or dt.datetime.now(dt.UTC)
        key = ed25519.Ed25519PrivateKey.generate()
        # Name attributes are capped at 64 characters; the domain (up to 253) goes in the SAN.
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Roost AS")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + dt.timedelta(days=AS_VALIDITY_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
            .sign(key, None)
        )
        return cls(domain, key, cert)

    def private_key_der(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def load(
        cls, domain: str, private_key_der: bytes, certificate_der: bytes
    ) -> CertificateAuthority:
        key = serialization.load_der_private_key(private_key_der, None)
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        return cls(domain, key, x509.load_der_x509_certificate(certificate_der))

    def issue_client_certificate(
        self,
        client_id: str,
        cipher_suite: int,
        signature_key: bytes,
        validity_days: int,
        now: dt.datetime | None = None,
    ) -> bytes:
        """DER leaf certificate binding ``client_id`` to the MLS ``signature_key``."""
        # CN is capped at 64 characters (RFC 5280), so it holds the client uuid only; the
        # full client id is in the SAN URI, which is the authoritative binding.
        return self._issue_leaf(
            client_id.rsplit("/", 1)[1],
            CLIENT_URI_PREFIX + client_id,
            mls_public_key_to_x509(cipher_suite, signature_key),
            validity_days,
            now,
        )

    def issue_server_certificate(
        self,
        cipher_suite: int,
        signature_key: bytes,
        validity_days: int,
        now: dt.datetime | None = None,
    ) -> bytes:
        """DER leaf certificate naming this homeserver (SAN ``roost:server:<domain>``): the
        credential of its MLS external-sender key."""
        return self._issue_leaf(
            "Roost homeserver",
            SERVER_URI_PREFIX + self.domain,
            mls_public_key_to_x509(cipher_suite, signature_key),
            validity_days,
            now,
        )

    def _issue_leaf(
        self,
        common_name: str,
        san_uri: str,
        public_key: SignaturePublicKey,
        validity_days: int,
        now: dt.datetime | None,
    ) -> bytes:
        now = now or dt.datetime.now(dt.UTC)
        not_after = min(
            now + dt.timedelta(days=validity_days), self.certificate.not_valid_after_utc
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(not_after)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(san_uri)]),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.private_key.public_key()),
                critical=False,
            )
            .sign(self.private_key, None)
        )
        return cert.public_bytes(serialization.Encoding.DER)


def client_id_of_certificate(cert: x509.Certificate) -> str | None:
    """The client id bound by a Roost leaf certificate, or None if it carries none; a
    malformed certificate (a repeated extension) raises ValueError."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    except x509.DuplicateExtension as e:  # not a ValueError: callers refuse ValueErrors
        raise ValueError(f"certificate repeats an extension: {e}") from None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(CLIENT_URI_PREFIX):
            return uri[len(CLIENT_URI_PREFIX) :]
    return None


def verify_client_certificate(
    leaf_der: bytes, as_certificate_der: bytes, now: dt.datetime | None = None
) -> tuple[str, bytes]:
    """Check a leaf against an AS certificate; return (client id, MLS-encoded public key).

    Raises ValueError on any failure. Clients use the same rules (docs/api.md).
    """
    now = now or dt.datetime.now(dt.UTC)
    leaf = x509.load_der_x509_certificate(leaf_der)
    issuer = x509.load_der_x509_certificate(as_certificate_der)
    try:
        leaf.verify_directly_issued_by(issuer)
    except Exception as e:  # cryptography raises ValueError/TypeError/InvalidSignature
        raise ValueError(f"leaf certificate is not issued by this AS: {e}") from None
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        raise ValueError("leaf certificate is outside its validity period")
    client_id = client_id_of_certificate(leaf)
    if client_id is None:
        raise ValueError("leaf certificate names no Roost client id")
    return client_id, x509_public_key_to_mls(leaf.public_key())
