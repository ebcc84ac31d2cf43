"""The homeserver's identity as an MLS external sender: one signature key per cipher suite,
with an X.509 certificate from the AS CA naming the server (SAN ``roost:server:<domain>``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from roost.mls.credential import Credential
from roost.mls.crypto.ciphersuite import get_cipher_suite
from roost.mls.extension_types import ExternalSender

from ..auth.ca import CertificateAuthority
from ..store import Database
from ..store.dialect_insert import dialect_insert
from .tables import ds_keys

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
                cert = ca.issue_server_certificate(cipher_suite, pub, SERVER_CERT_DAYS)
                await conn.execute(
                    dialect_insert(conn, ds_keys)
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
