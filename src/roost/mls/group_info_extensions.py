"""The extensions a GroupInfo carries, checked strictly as RFC 9420 encodes them — what a
party without the group's secrets (a Delivery Service serving GroupInfos to joiners) can check:

- ``external_pub`` (§12.4.3.2): ``struct { HPKEPublicKey external_pub; }`` with
  ``opaque HPKEPublicKey<V>``: a public key of the suite's KEM;
- ``ratchet_tree`` (§12.4.3.3): ``optional<Node> ratchet_tree<V>``;
- ``external_senders`` (§12.1.8.1): ``ExternalSender external_senders<V>``, every signature key
  one of the suite's signature scheme;
- ``required_capabilities`` (§11.1): three ``uint16`` vectors.

The first two sit in ``GroupInfo.extensions``, the last two in the GroupContext's; each is
checked wherever it appears. Every body must be consumed exactly. Other extension types are
not this module's business (the registry is open).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .constants import ExtensionType
from .crypto.ciphersuite import CipherSuite, get_cipher_suite
from .errors import DecodeError, MLSError, ValidationError
from .extension_types import ExternalPub, ExternalSenders, RequiredCapabilities
from .extensions import Extension
from .group_info import GroupInfo
from .ratchet_tree import RatchetTree


class MalformedExtension(ValidationError):
    """A known extension whose data is not what RFC 9420 defines; ``name`` is its RFC name."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"invalid {name} extension: {reason}")
        self.name = name


def _external_pub(cs: CipherSuite, data: bytes) -> None:
    key = ExternalPub.decode(data).external_pub
    if len(key) != cs.kem.n_pk:
        raise DecodeError(f"the key is {len(key)} bytes, the suite's KEM takes {cs.kem.n_pk}")
    cs.kem.check_public_key(key)


def _ratchet_tree(cs: CipherSuite, data: bytes) -> None:
    RatchetTree.from_bytes(cs, data)


def _external_senders(cs: CipherSuite, data: bytes) -> None:
    for i, sender in enumerate(ExternalSenders.decode(data).senders):
        try:
            cs.signature.check_public_key(sender.signature_key)
        except MLSError as e:
            raise DecodeError(f"sender {i}: {e}") from None


def _required_capabilities(cs: CipherSuite, data: bytes) -> None:
    RequiredCapabilities.decode(data)


_CHECKS: dict[int, tuple[str, Callable[[CipherSuite, bytes], None]]] = {
    ExtensionType.EXTERNAL_PUB: ("external_pub", _external_pub),
    ExtensionType.RATCHET_TREE: ("ratchet_tree", _ratchet_tree),
    ExtensionType.EXTERNAL_SENDERS: ("external_senders", _external_senders),
    ExtensionType.REQUIRED_CAPABILITIES: ("required_capabilities", _required_capabilities),
}


def check_extensions(cs: CipherSuite, extensions: Iterable[Extension]) -> None:
    """Each known extension in ``extensions`` decodes as RFC 9420 defines it for ``cs``, else
    ``MalformedExtension`` naming the first that does not."""
    for ext in extensions:
        check = _CHECKS.get(ext.extension_type)
        if check is None:
            continue
        name, decode = check
        try:
            decode(cs, ext.extension_data)
        except MLSError as e:
            raise MalformedExtension(name, str(e)) from None
        except (ValueError, IndexError, OverflowError) as e:
            raise MalformedExtension(name, f"{type(e).__name__}: {e}") from None


def check_group_info_extensions(gi: GroupInfo) -> None:
    """The GroupInfo's own extensions and its GroupContext's, as ``check_extensions``."""
    cs = get_cipher_suite(gi.group_context.cipher_suite)
    check_extensions(cs, gi.extensions)
    check_extensions(cs, gi.group_context.extensions)
