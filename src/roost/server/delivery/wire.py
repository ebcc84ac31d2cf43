"""What only the DS reads of a submitted message (docs/api.md "Groups"): the cleartext header
of an application message on the hot path, and the PublicMessage of a handshake.

The wire formats the client shares (group state, commit bundle, queue item, signed notice)
live in ``roost.protocol``.
"""

from __future__ import annotations

from dataclasses import dataclass

from roost.mls.codec import Reader
from roost.mls.constants import WireFormat
from roost.mls.errors import DecodeError
from roost.mls.framing import MLSMessage, PrivateMessage, PublicMessage

__all__ = [
    "AppHeader",
    "WrongWireFormat",
    "public_message",
    "read_private_header",
]


@dataclass(frozen=True, slots=True)
class AppHeader:
    """The cleartext header of a PrivateMessage, read without decoding the ciphertext."""

    group_id: bytes
    epoch: int
    content_type: int


class WrongWireFormat(Exception):
    def __init__(self, wire_format: int) -> None:
        super().__init__(f"wire format {wire_format}")
        self.wire_format = wire_format


def read_private_header(body: bytes) -> AppHeader:
    """Hot path: check the envelope and read group id, epoch and content type; the rest of
    the message must still be well formed (strictly decoded)."""
    r = Reader(body)
    if r.u16() != 1:
        raise DecodeError("unsupported protocol version")
    wf = r.u16()
    if wf != WireFormat.PRIVATE_MESSAGE:
        raise WrongWireFormat(wf)
    pm = PrivateMessage.decode_from(r)
    r.finish()
    return AppHeader(pm.group_id, pm.epoch, int(pm.content_type))


def public_message(body: bytes) -> PublicMessage:
    msg = MLSMessage.decode(body)
    if not isinstance(msg.body, PublicMessage):
        raise WrongWireFormat(int(msg.wire_format))
    return msg.body
