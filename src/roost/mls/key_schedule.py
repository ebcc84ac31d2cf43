"""The MLS key schedule (RFC 9420 section 8).

Who calls what:
- A committer / group creator: ``EpochSecrets.from_init(cs, init_secret, commit_secret,
  psk_secret, group_context)`` — computes ``joiner_secret`` and everything after it.
  (At group creation ``init_secret`` is fresh randomness: ``fresh_init_secret(cs)``.)
- A Welcome joiner: ``welcome_key_nonce(cs, welcome_secret_from_joiner(...))`` to open the
  GroupInfo, then ``EpochSecrets.from_joiner(cs, joiner_secret, psk_secret, group_context)``.
- Everyone: ``mls_exporter``, ``confirmation_tag`` / ``verify_confirmation_tag``.
- External commit: the joiner runs ``external_init_sender(cs, external_pub)`` to get
  ``(kem_output, init_secret)``; members run ``external_init_receiver(cs, external_secret,
  kem_output)``. ``external_pub(cs, external_secret)`` is the key published in GroupInfo.

``group_context`` arguments take a ``GroupContext`` or its encoding. ``commit_secret`` and
``psk_secret`` default to ``Nh`` zero bytes when ``None``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .crypto.ciphersuite import CipherSuite
from .errors import CryptoError
from .group_context import GroupContext

EXTERNAL_INIT_EXPORTER_CONTEXT = b"MLS 1.0 external init secret"


def _ctx(group_context: GroupContext | bytes) -> bytes:
    return group_context if isinstance(group_context, bytes) else group_context.encode()


def fresh_init_secret(cs: CipherSuite) -> bytes:
    return os.urandom(cs.hash_len)


def joiner_secret(
    cs: CipherSuite,
    init_secret: bytes,
    commit_secret: bytes | None,
    group_context: GroupContext | bytes,
) -> bytes:
    prk = cs.kdf_extract(init_secret, commit_secret or cs.zero)
    return cs.expand_with_label(prk, b"joiner", _ctx(group_context), cs.hash_len)


def _member_prk(cs: CipherSuite, joiner: bytes, psk_secret: bytes | None) -> bytes:
    return cs.kdf_extract(joiner, psk_secret or cs.zero)


def welcome_secret_from_joiner(
    cs: CipherSuite, joiner: bytes, psk_secret: bytes | None = None
) -> bytes:
    return cs.derive_secret(_member_prk(cs, joiner, psk_secret), b"welcome")


def welcome_key_nonce(cs: CipherSuite, welcome_secret: bytes) -> tuple[bytes, bytes]:
    """AEAD key and nonce that encrypt the GroupInfo in a Welcome (section 12.4.3.1)."""
    key = cs.expand_with_label(welcome_secret, b"key", b"", cs.aead_key_len)
    nonce = cs.expand_with_label(welcome_secret, b"nonce", b"", cs.aead_nonce_len)
    return key, nonce


@dataclass(frozen=True, slots=True)
class EpochSecrets:
    """Every secret of one epoch. ``init_secret`` is the one for the NEXT epoch."""

    joiner_secret: bytes
    welcome_secret: bytes
    epoch_secret: bytes
    sender_data_secret: bytes
    encryption_secret: bytes
    exporter_secret: bytes
    external_secret: bytes
    confirmation_key: bytes
    membership_key: bytes
    resumption_psk: bytes
    epoch_authenticator: bytes
    init_secret: bytes

    @classmethod
    def from_joiner(
        cls,
        cs: CipherSuite,
        joiner: bytes,
        psk_secret: bytes | None,
        group_context: GroupContext | bytes,
    ) -> EpochSecrets:
        member_prk = _member_prk(cs, joiner, psk_secret)
        epoch = cs.expand_with_label(member_prk, b"epoch", _ctx(group_context), cs.hash_len)
        d = cs.derive_secret
        return cls(
            joiner_secret=joiner,
            welcome_secret=d(member_prk, b"welcome"),
            epoch_secret=epoch,
            sender_data_secret=d(epoch, b"sender data"),
            encryption_secret=d(epoch, b"encryption"),
            exporter_secret=d(epoch, b"exporter"),
            external_secret=d(epoch, b"external"),
            confirmation_key=d(epoch, b"confirm"),
            membership_key=d(epoch, b"membership"),
            resumption_psk=d(epoch, b"resumption"),
            epoch_authenticator=d(epoch, b"authentication"),
            init_secret=d(epoch, b"init"),
        )

    @classmethod
    def from_init(
        cls,
        cs: CipherSuite,
        init_secret: bytes,
        commit_secret: bytes | None,
        psk_secret: bytes | None,
        group_context: GroupContext | bytes,
    ) -> EpochSecrets:
        ctx = _ctx(group_context)
        return cls.from_joiner(
            cs, joiner_secret(cs, init_secret, commit_secret, ctx), psk_secret, ctx
        )

    def welcome_key_nonce(self, cs: CipherSuite) -> tuple[bytes, bytes]:
        return welcome_key_nonce(cs, self.welcome_secret)

    def export(self, cs: CipherSuite, label: bytes, context: bytes, n: int) -> bytes:
        return mls_exporter(cs, self.exporter_secret, label, context, n)

    def external_pub(self, cs: CipherSuite) -> bytes:
        return external_pub(cs, self.external_secret)


def mls_exporter(
    cs: CipherSuite, exporter_secret: bytes, label: bytes, context: bytes, n: int
) -> bytes:
    """MLS-Exporter(Label, Context, Length) (section 8.5)."""
    secret = cs.derive_secret(exporter_secret, label)
    return cs.expand_with_label(secret, b"exported", cs.hash(context), n)


def confirmation_tag(cs: CipherSuite, confirmation_key: bytes, confirmed_hash: bytes) -> bytes:
    return cs.mac(confirmation_key, confirmed_hash)


def verify_confirmation_tag(
    cs: CipherSuite, confirmation_key: bytes, confirmed_hash: bytes, tag: bytes
) -> None:
    if not cs.verify_mac(confirmation_key, confirmed_hash, tag):
        raise CryptoError("confirmation tag does not match")


def external_key_pair(cs: CipherSuite, external_secret: bytes) -> tuple[bytes, bytes]:
    return cs.derive_hpke_key_pair(external_secret)


def external_pub(cs: CipherSuite, external_secret: bytes) -> bytes:
    return cs.derive_hpke_key_pair(external_secret)[1]


def external_init_sender(cs: CipherSuite, ext_pub: bytes) -> tuple[bytes, bytes]:
    """The external joiner's side: returns ``(kem_output, init_secret)`` (section 8.3)."""
    return cs.hpke_export_sender(ext_pub, b"", EXTERNAL_INIT_EXPORTER_CONTEXT, cs.hash_len)


def external_init_receiver(cs: CipherSuite, external_secret: bytes, kem_output: bytes) -> bytes:
    """A member's side of an ExternalInit proposal: the init_secret for the new epoch."""
    priv, _ = external_key_pair(cs, external_secret)
    return cs.hpke_export_receiver(
        priv, kem_output, b"", EXTERNAL_INIT_EXPORTER_CONTEXT, cs.hash_len
    )
