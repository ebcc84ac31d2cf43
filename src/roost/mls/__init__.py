"""roost.mls: the project's own RFC 9420 (Messaging Layer Security) implementation.

See docs/mls.md for what is supported and the public API. The names below are loaded lazily
(PEP 562) so that ``import roost.mls`` stays cheap and the error types never depend on the
heavier modules.
"""

from importlib import import_module
from typing import Any

from .errors import CryptoError, DecodeError, MLSError, UnsupportedError, ValidationError

# public name -> module (relative to this package) that defines it
_LAZY = {
    "Group": ".group",
    "CommitOutput": ".group",
    "ReceivedMessage": ".group",
    "GroupObserver": ".group.observer",
    "ObservedMessage": ".group.observer",
    "PublicState": ".group.state",
    "KeyPackageBundle": ".key_package_gen",
    "generate_key_package": ".key_package_gen",
    "verify_key_package_signatures": ".group.validation",
    "validate_key_package": ".group.validation",
    "external_proposal": ".group.external",
    "external_remove": ".group.external",
    "external_senders_extension": ".group.external",
    "new_member_add_proposal": ".group.external",
    "Credential": ".credential",
    "KeyPackage": ".key_package",
    "MLSMessage": ".framing",
    "GroupInfo": ".group_info",
    "Welcome": ".welcome",
    "RatchetTree": ".ratchet_tree",
    "PreSharedKeyID": ".psk",
    "get_cipher_suite": ".crypto.ciphersuite",
    "SUPPORTED_SUITES": ".crypto.ciphersuite",
}

__all__ = [
    "MLSError",
    "DecodeError",
    "ValidationError",
    "CryptoError",
    "UnsupportedError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'roost.mls' has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value
