"""roost.mls: the project's own RFC 9420 (Messaging Layer Security) implementation.

See docs/mls.md for what is supported and the public API.
"""

from .errors import CryptoError, DecodeError, MLSError, UnsupportedError, ValidationError

__all__ = ["MLSError", "DecodeError", "ValidationError", "CryptoError", "UnsupportedError"]
