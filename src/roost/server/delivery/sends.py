"""The one parse of an application send (docs/api.md ``POST /v1/groups/{group_id}/messages``),
shared by the raw-ASGI fast path (``fastpath.py``, which serves every such request) and the
FastAPI route (``routes.py``, declared for the OpenAPI document; a test proves both answer
alike): the request's fields, then the PrivateMessage header the DS can read."""

from __future__ import annotations

from dataclasses import dataclass

from roost.mls.constants import ContentType
from roost.protocol.media_types import MLS_MEDIA_TYPE

from ..errors import Problem
from . import wire
from .path_params import group_id_param

MESSAGE_ID_MAX = 128


@dataclass(frozen=True, slots=True)
class SendRequest:
    group_id: bytes
    message_id: str
    body: bytes


def parse_send(
    group_text: str,
    message_id: str | None,
    content_type: str | None,
    body: bytes,
    max_bytes: int,
) -> SendRequest:
    """Check a send's path, ``Roost-Message-Id`` header and body, in the order a client sees
    the errors (after authentication): 404, 400, 413, 415, 400."""
    group_id, message_id = parse_send_head(group_text, message_id)
    check_send_body(content_type, body, max_bytes)
    return SendRequest(group_id, message_id, body)


def parse_send_head(group_text: str, message_id: str | None) -> tuple[bytes, str]:
    """The part of ``parse_send`` that needs no body: group id and message id."""
    group_id = group_id_param(group_text)
    if message_id is None or not 1 <= len(message_id) <= MESSAGE_ID_MAX:
        raise Problem(
            400,
            "invalid_request",
            f"the Roost-Message-Id header (1-{MESSAGE_ID_MAX} characters) is required",
            extra={"errors": [{"loc": ["header", "roost-message-id"], "msg": "required"}]},
        )
    return group_id, message_id


def body_too_large(max_bytes: int) -> Problem:
    return Problem(413, "body_too_large", f"the message exceeds {max_bytes} bytes")


def check_send_body(content_type: str | None, body: bytes, max_bytes: int) -> None:
    """The rest of ``parse_send``: size, media type, not empty."""
    if len(body) > max_bytes:
        raise body_too_large(max_bytes)
    if (content_type or "").split(";")[0].strip().lower() != MLS_MEDIA_TYPE:
        raise Problem(415, "unsupported_media_type", f"the body must be {MLS_MEDIA_TYPE}")
    if not body:
        raise Problem(400, "malformed_mls", "the body is empty")


def read_app_header(body: bytes, group_id: bytes) -> wire.AppHeader:
    """The cleartext header of an application PrivateMessage for ``group_id``."""
    try:
        header = wire.read_private_header(body)
    except wire.WrongWireFormat:
        raise Problem(422, "wrong_wire_format", "application messages are PrivateMessage") from None
    if header.content_type != ContentType.APPLICATION:
        raise Problem(422, "wrong_wire_format", "handshakes must be sent as PublicMessage")
    if header.group_id != group_id:
        raise Problem(422, "wrong_group", "the message is for another group")
    return header
