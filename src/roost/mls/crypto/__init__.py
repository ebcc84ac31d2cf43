"""Cryptographic primitives for roost.mls.

``get_cipher_suite(suite_id)`` is the entry point; see ``ciphersuite.py`` for the API.
``hpke.py`` implements RFC 9180 base mode; ``kdf.py``, ``aead.py`` and ``signature.py``
wrap the primitives with the encodings MLS uses.
"""

from .ciphersuite import SUPPORTED_SUITES, CipherSuite, get_cipher_suite

__all__ = ["SUPPORTED_SUITES", "CipherSuite", "get_cipher_suite"]
