"""Opening a Welcome (RFC 9420 section 12.4.3.1): group secrets, then the GroupInfo.

A joiner may have to fetch the ratchet tree before it can join (section 12.4.3.3: the tree may
come out of band): ``OpenedWelcome`` tells it which group the Welcome is for and whether the
GroupInfo carries the tree."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..constants import ExtensionType
from ..crypto import CipherSuite
from ..errors import CryptoError, DecodeError, ValidationError
from ..extensions import find_extension
from ..group_info import GroupInfo
from ..key_package import KeyPackage
from ..key_schedule import EpochSecrets, welcome_key_nonce, welcome_secret_from_joiner
from ..psk import PreSharedKeyID
from ..welcome import GroupSecrets, Welcome

# Looks up the secret of a PSK id (external PSKs and resumption PSKs); None when unknown.
PskLookup = Callable[[PreSharedKeyID], bytes | None]


@dataclass(frozen=True, slots=True)
class OpenedWelcome:
    group_secrets: GroupSecrets
    group_info: GroupInfo
    psk_secret: bytes

    @property
    def group_id(self) -> bytes:
        return self.group_info.group_context.group_id

    @property
    def epoch(self) -> int:
        return self.group_info.group_context.epoch

    @property
    def carries_ratchet_tree(self) -> bool:
        """False when the tree must come out of band (section 12.4.3.3)."""
        return find_extension(self.group_info.extensions, ExtensionType.RATCHET_TREE) is not None


def resolve_psks(
    cs: CipherSuite, psk_ids: Sequence[PreSharedKeyID], lookup: PskLookup | None
) -> bytes:
    """psk_secret over ``psk_ids`` (section 8.4); an unknown PSK is a ValidationError."""
    if not psk_ids:
        return bytes(cs.hash_len)
    pairs = []
    for pid in psk_ids:
        value = lookup(pid) if lookup is not None else None
        if value is None:
            raise ValidationError(f"unknown pre-shared key {pid.psk_id.hex() or pid.psktype}")
        pairs.append((pid, value))
    from ..psk import psk_secret  # the crypto helper's section 8.4 derivation

    return psk_secret(cs, pairs)


def open_welcome(
    cs: CipherSuite,
    welcome: Welcome,
    key_package: KeyPackage,
    init_private_key: bytes,
    psk_lookup: PskLookup | None = None,
) -> OpenedWelcome:
    if welcome.cipher_suite != cs.suite_id:
        raise ValidationError(
            f"Welcome cipher suite {welcome.cipher_suite} differs from the KeyPackage's"
        )
    if key_package.cipher_suite != welcome.cipher_suite:
        raise ValidationError("Welcome cipher suite differs from the KeyPackage's")
    ref = cs.key_package_ref(key_package.encode())
    entry = welcome.find_secrets(ref)
    if entry is None:
        raise ValidationError("Welcome has no secrets for this KeyPackage")
    ct = entry.encrypted_group_secrets
    plaintext = cs.decrypt_with_label(
        init_private_key, b"Welcome", welcome.encrypted_group_info, ct.kem_output, ct.ciphertext
    )
    try:
        secrets = GroupSecrets.decode(plaintext)
    except DecodeError as e:
        raise ValidationError(f"undecodable GroupSecrets in Welcome: {e}") from None
    if len({p.encode() for p in secrets.psks}) != len(secrets.psks):
        raise ValidationError("duplicate PSK in Welcome")
    psk = resolve_psks(cs, secrets.psks, psk_lookup)
    key, nonce = welcome_key_nonce(cs, welcome_secret_from_joiner(cs, secrets.joiner_secret, psk))
    gi_bytes = cs.aead_open(key, nonce, b"", welcome.encrypted_group_info)
    try:
        group_info = GroupInfo.decode(gi_bytes)
    except DecodeError as e:
        raise ValidationError(f"undecodable GroupInfo in Welcome: {e}") from None
    if group_info.group_context.cipher_suite != cs.suite_id:
        raise ValidationError("GroupInfo cipher suite differs from the Welcome's")
    return OpenedWelcome(secrets, group_info, psk)


def verify_group_info_signature(cs: CipherSuite, group_info: GroupInfo, signer_key: bytes) -> None:
    if not cs.verify_with_label(
        signer_key, b"GroupInfoTBS", group_info.tbs(), group_info.signature
    ):
        raise CryptoError(f"invalid GroupInfo signature (signer leaf {group_info.signer})")


def epoch_from_welcome(cs: CipherSuite, opened: OpenedWelcome) -> EpochSecrets:
    """The new epoch's secrets; checks the GroupInfo's confirmation tag (section 12.4.3.1)."""
    gc = opened.group_info.group_context
    secrets = EpochSecrets.from_joiner(
        cs, opened.group_secrets.joiner_secret, opened.psk_secret, gc.encode()
    )
    if not cs.verify_mac(
        secrets.confirmation_key, gc.confirmed_transcript_hash, opened.group_info.confirmation_tag
    ):
        raise CryptoError("GroupInfo confirmation tag does not match the derived epoch")
    return secrets
