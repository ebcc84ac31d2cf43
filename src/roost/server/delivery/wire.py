"""What only the DS reads of a submitted message (docs/api.md "Groups"): the cleartext header
of an application message on the hot path, and the PublicMessage of a handshake.

The wire formats the client shares (group state, commit bundle, queue item, signed notice)
live in ``roost.protocol``; they are re-exported here under their former names for the
DS modules that still import them from this module.
"""

from __future__ import annotations

from dataclasses import dataclass

from roost.mls.codec import Reader
from roost.mls.constants import ContentType, WireFormat
from roost.mls.errors import DecodeError
from roost.mls.framing import MLSMessage, PrivateMessage, PublicMessage
from roost.protocol.commit_bundle import CommitBundle as CommitBundle
from roost.protocol.commit_bundle import decode_commit_bundle as decode_commit_bundle
from roost.protocol.commit_bundle import encode_commit_bundle as encode_commit_bundle
from roost.protocol.group_state import GroupState as GroupStateBundle
from roost.protocol.group_state import decode_group_state as decode_group_state
from roost.protocol.group_state import encode_group_state as encode_group_state
from roost.protocol.queue_item import ITEM_MLS_MESSAGE as ITEM_MLS_MESSAGE
from roost.protocol.queue_item import ITEM_SERVER_NOTICE as ITEM_SERVER_NOTICE
from roost.protocol.queue_item import QueueItem as QueueItem
from roost.protocol.queue_item import decode_queue_item as decode_queue_item
from roost.protocol.queue_item import encode_queue_item as queue_item
from roost.protocol.signed_notice import NOTICE_LABEL as NOTICE_LABEL
from roost.protocol.signed_notice import sign_notice as signed_notice
from roost.protocol.signed_notice import verify_notice as verify_notice

__all__ = [
    "ITEM_MLS_MESSAGE",
    "ITEM_SERVER_NOTICE",
    "NOTICE_LABEL",
    "AppHeader",
    "CommitBundle",
    "GroupStateBundle",
    "QueueItem",
    "WrongWireFormat",
    "decode_commit_bundle",
    "decode_group_state",
    "decode_queue_item",
    "encode_commit_bundle",
    "encode_group_state",
    "is_application",
    "public_message",
    "queue_item",
    "read_private_header",
    "signed_notice",
    "verify_notice",
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


def is_application(content_type: int) -> bool:
    return content_type == ContentType.APPLICATION
