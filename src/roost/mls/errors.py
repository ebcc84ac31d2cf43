"""The error types raised by roost.mls.

Every failure in the MLS core is an ``MLSError``. Decoders raise only ``DecodeError``;
protocol validation raises ``ValidationError`` (or a subclass); cryptographic failures
(bad signature, failed AEAD open, wrong membership tag) raise ``CryptoError``.
"""


class MLSError(Exception):
    """Base class of every error raised by roost.mls."""


class DecodeError(MLSError):
    """Bytes that are not a valid encoding of the expected structure."""


class ValidationError(MLSError):
    """A well-formed structure that breaks an RFC 9420 rule (or the application's policy)."""


class CryptoError(ValidationError):
    """A signature, MAC, AEAD or HPKE operation failed."""


class UnsupportedError(ValidationError):
    """A ciphersuite, credential type or feature this implementation does not support.

    A ``ValidationError``: the input is well formed, but we reject what it asks for.
    """
