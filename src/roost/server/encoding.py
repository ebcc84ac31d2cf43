"""The wire helpers the server modules import from here, now defined once in ``roost.protocol``
(shared with the client library) and re-exported under their former names."""

from __future__ import annotations

from roost.protocol.base64url import b64u as b64u
from roost.protocol.base64url import unb64u as unb64u
from roost.protocol.key_package_batch import join_mls_vector as join_mls_vector
from roost.protocol.key_package_batch import mls_vector_reader as mls_vector_reader
from roost.protocol.media_types import MESSAGES_MEDIA_TYPE as MESSAGES_MEDIA_TYPE
from roost.protocol.media_types import MLS_MEDIA_TYPE as MLS_MEDIA_TYPE
from roost.protocol.message_batch import decode_message_batch as decode_message_batch
from roost.protocol.message_batch import encode_message_batch as encode_message_batch

__all__ = [
    "MESSAGES_MEDIA_TYPE",
    "MLS_MEDIA_TYPE",
    "b64u",
    "decode_message_batch",
    "encode_message_batch",
    "join_mls_vector",
    "mls_vector_reader",
    "unb64u",
]
