"""One epoch's secrets (RFC 9420 section 8) as the group state machine uses them."""

from __future__ import annotations

from dataclasses import dataclass

from ..codec import Reader, Writer

# Secrets derived from epoch_secret with DeriveSecret (section 8, table 4), in wire order.
_LABELS = (
    ("sender_data_secret", b"sender data"),
    ("encryption_secret", b"encryption"),
    ("exporter_secret", b"exporter"),
    ("external_secret", b"external"),
    ("confirmation_key", b"confirm"),
    ("membership_key", b"membership"),
    ("resumption_psk", b"resumption"),
    ("epoch_authenticator", b"authentication"),
    ("init_secret", b"init"),
)


@dataclass(frozen=True, slots=True)
class EpochSecrets:
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

    def encode_to(self, w: Writer) -> None:
        for name in self.__slots__:  # type: ignore[attr-defined]
            w.opaque(getattr(self, name))

    @classmethod
    def decode_from(cls, r: Reader) -> EpochSecrets:
        return cls(*(r.opaque() for _ in cls.__slots__))  # type: ignore[attr-defined]


def joiner_secret(cs, init_secret: bytes, commit_secret: bytes, context_bytes: bytes) -> bytes:
    prk = cs.kdf_extract(init_secret, commit_secret)
    return cs.expand_with_label(prk, b"joiner", context_bytes, cs.hash_len)


def welcome_key_nonce(cs, joiner: bytes, psk_secret: bytes) -> tuple[bytes, bytes]:
    """Key and nonce that encrypt the GroupInfo inside a Welcome (section 12.4.3.1)."""
    welcome_secret = cs.derive_secret(cs.kdf_extract(joiner, psk_secret), b"welcome")
    return (
        cs.expand_with_label(welcome_secret, b"key", b"", cs.aead_key_len),
        cs.expand_with_label(welcome_secret, b"nonce", b"", cs.aead_nonce_len),
    )


def epoch_secrets_from_joiner(
    cs, joiner: bytes, psk_secret: bytes, context_bytes: bytes
) -> EpochSecrets:
    member_prk = cs.kdf_extract(joiner, psk_secret)
    welcome_secret = cs.derive_secret(member_prk, b"welcome")
    epoch_secret = cs.expand_with_label(member_prk, b"epoch", context_bytes, cs.hash_len)
    derived = [cs.derive_secret(epoch_secret, label) for _, label in _LABELS]
    return EpochSecrets(joiner, welcome_secret, epoch_secret, *derived)


def epoch_secrets(
    cs, init_secret: bytes, commit_secret: bytes, psk_secret: bytes, context_bytes: bytes
) -> EpochSecrets:
    j = joiner_secret(cs, init_secret, commit_secret, context_bytes)
    return epoch_secrets_from_joiner(cs, j, psk_secret, context_bytes)


def external_init_secret_sender(cs, external_pub: bytes) -> tuple[bytes, bytes]:
    """(kem_output, init_secret) for an external joiner (section 8.3)."""
    return cs.hpke_export_sender(external_pub, b"", b"MLS 1.0 external init secret", cs.hash_len)


def external_key_pair(cs, external_secret: bytes) -> tuple[bytes, bytes]:
    return cs.derive_hpke_key_pair(external_secret)


def exporter(cs, exporter_secret: bytes, label: bytes, context: bytes, n: int) -> bytes:
    """MLS-Exporter (section 8.5)."""
    return cs.expand_with_label(
        cs.derive_secret(exporter_secret, label), b"exported", cs.hash(context), n
    )
