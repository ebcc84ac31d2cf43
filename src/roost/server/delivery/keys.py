"""The homeserver's identity as an MLS external sender: one signature key per cipher suite,
with an X.509 certificate from the AS CA naming the server (SAN ``roost:server:<domain>``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from roost.mls.credential import Credential
from roost.mls.crypto.ciphersuite import get_cipher_suite
from roost.mls.extension_types import ExternalSender

from ..auth.ca import CertificateAuthority, mls_public_key_to_x509
from ..store import Database
from .tables import ds_keys

SERVER_URI_PREFIX = "roost:server:"
SERVER_CERT_DAYS = 3650


@dataclass(frozen=True, slots=True)
class ServerKey:
    cipher_suite: int
    private_key: bytes
    public_key: bytes
    credential: Credential  # x509 [server leaf, AS]

    @property
    def external_sender(self) -> ExternalSender:
        return ExternalSender(self.public_key, self.credential)


def issue_server_certificate(
    ca: CertificateAuthority, cipher_suite: int, signature_key: bytes
) -> bytes:
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Roost homeserver")]))
        .issuer_name(ca.certificate.subject)
        .public_key(mls_public_key_to_x509(cipher_suite, signature_key))
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(
            min(now + dt.timedelta(days=SERVER_CERT_DAYS), ca.certificate.not_valid_after_utc)
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(SERVER_URI_PREFIX + ca.domain)]
            ),
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
        .sign(ca.private_key, None)
    )
    return cert.public_bytes(serialization.Encoding.DER)


class ServerKeys:
    """Loads or creates the per-suite key on first use; cached for the process lifetime."""

    def __init__(
        self,
        db: Database,
        ca: Callable[[], CertificateAuthority],
        clock: Callable[[], float],
    ) -> None:
        self.db = db
        self._ca = ca
        self.clock = clock
        self._cache: dict[int, ServerKey] = {}

    async def get(self, cipher_suite: int) -> ServerKey:
        key = self._cache.get(cipher_suite)
        if key is not None:
            return key
        cs = get_cipher_suite(cipher_suite)  # UnsupportedError for unknown suites
        ca = self._ca()
        async with self.db.transaction() as conn:
            row = (
                await conn.execute(sa.select(ds_keys).where(ds_keys.c.cipher_suite == cipher_suite))
            ).first()
            if row is None:
                priv, pub = cs.generate_signature_key_pair()
                cert = issue_server_certificate(ca, cipher_suite, pub)
                insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
                await conn.execute(
                    insert(ds_keys)
                    .values(
                        cipher_suite=cipher_suite,
                        private_key=priv,
                        public_key=pub,
                        certificate=cert,
                        created_at=int(self.clock()),
                    )
                    .on_conflict_do_nothing(index_elements=["cipher_suite"])
                )
                row = (
                    await conn.execute(
                        sa.select(ds_keys).where(ds_keys.c.cipher_suite == cipher_suite)
                    )
                ).one()
        key = ServerKey(
            cipher_suite,
            row.private_key,
            row.public_key,
            Credential.x509([row.certificate, ca.certificate_der]),
        )
        self._cache[cipher_suite] = key
        return key
