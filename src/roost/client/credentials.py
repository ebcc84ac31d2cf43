"""Verify another client's X.509 MLS credential against its domain's AS certificate.

The AS of each domain is a certificate authority. A client's credential is an X.509 chain
(leaf first) whose leaf binds the client id to the client's MLS signature key. Verification
checks: every link is signed by the next, the chain ends at (or directly under) the AS
certificate, every certificate is inside its validity window, issuers are CAs, the leaf is not
a CA, the leaf's SAN URI ``roost:client:<client id>`` names the expected client, and the leaf's public key is the MLS signature key.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from .errors import CredentialError

CLIENT_URI_PREFIX = "roost:client:"
_RAW = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True, slots=True)
class VerifiedClient:
    client_id: str
    signature_key: bytes
    not_after: dt.datetime


def load_certificate(data: bytes | str | x509.Certificate) -> x509.Certificate:
    """Accept a certificate as an object, DER bytes, or PEM text/bytes."""
    if isinstance(data, x509.Certificate):
        return data
    raw = data.encode() if isinstance(data, str) else data
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(raw)
        return x509.load_der_x509_certificate(raw)
    except ValueError as e:
        raise CredentialError(f"not a certificate: {e}") from e


def certificate_client_ids(cert: x509.Certificate) -> list[str]:
    """The client ids a leaf binds: its SubjectAlternativeName URIs ``roost:client:<id>``
    (the authoritative binding; the subject CN is informational and not trusted)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [
        uri[len(CLIENT_URI_PREFIX) :]
        for uri in san.get_values_for_type(x509.UniformResourceIdentifier)
        if uri.startswith(CLIENT_URI_PREFIX)
    ]


def public_key_bytes(cert: x509.Certificate) -> bytes:
    """The raw public key, as MLS encodes signature keys (Ed25519/Ed448: the raw key;
    ECDSA: the uncompressed point)."""
    key = cert.public_key()
    try:
        return key.public_bytes(*_RAW)
    except ValueError:
        return key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _check_validity(cert: x509.Certificate, now: dt.datetime, what: str) -> None:
    if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
        raise CredentialError(f"{what} certificate is outside its validity window")


def _check_issued(child: x509.Certificate, issuer: x509.Certificate, what: str) -> None:
    if not _is_ca(issuer):
        raise CredentialError(f"issuer of the {what} certificate is not a CA")
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature) as e:
        raise CredentialError(f"{what} certificate is not signed by its issuer: {e}") from e


def verify_chain(
    chain: Sequence[bytes | x509.Certificate],
    as_certificate: bytes | str | x509.Certificate,
    *,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """Check the chain (leaf first) up to the AS certificate; return the verified leaf."""
    if not chain:
        raise CredentialError("empty certificate chain")
    now = now or dt.datetime.now(dt.UTC)
    root = load_certificate(as_certificate)
    _check_validity(root, now, "AS")
    certs = [load_certificate(c) for c in chain]
    # A chain may include the AS certificate itself as its last element; it adds nothing.
    if len(certs) > 1 and certs[-1] == root:
        certs.pop()
    for i, cert in enumerate(certs):
        what = "leaf" if i == 0 else f"intermediate #{i}"
        _check_validity(cert, now, what)
        issuer = certs[i + 1] if i + 1 < len(certs) else root
        _check_issued(cert, issuer, what)
    leaf = certs[0]
    if _is_ca(leaf):
        raise CredentialError("leaf certificate is a CA")
    return leaf


def verify_client_credential(
    chain: Sequence[bytes | x509.Certificate],
    as_certificate: bytes | str | x509.Certificate,
    *,
    client_id: str,
    signature_key: bytes | None = None,
    now: dt.datetime | None = None,
) -> VerifiedClient:
    """Verify that ``chain`` is a valid credential for ``client_id`` issued by the AS.

    ``signature_key`` is the MLS signature key seen in the client's LeafNode/KeyPackage;
    when given, the leaf certificate must certify exactly that key.
    """
    leaf = verify_chain(chain, as_certificate, now=now)
    if client_id not in certificate_client_ids(leaf):
        raise CredentialError(f"certificate does not name client {client_id}")
    key = public_key_bytes(leaf)
    if signature_key is not None and key != signature_key:
        raise CredentialError("certificate key is not the client's MLS signature key")
    return VerifiedClient(client_id, key, leaf.not_valid_after_utc)
