"""Wire format of the realtime WebSocket (docs/api.md, "Realtime"): frames and close codes.

Text frames carry small JSON control messages; binary frames carry queue items (server to
client only) in the HTTP fetch entry format, so payloads are never base64-encoded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from roost.protocol.base64url import unb64u
from roost.protocol.delivery_frame import QUEUE_ID_LEN, encode_delivery_frame

MAX_CLIENT_FRAME = 64 * 1024
MAX_SEQ = (1 << 63) - 1
MAX_KEY_LEN = 64  # queue keys are 32 bytes; anything far longer is not one


class CloseCode:
    NORMAL = 1000
    GOING_AWAY = 1001
    INTERNAL_ERROR = 1011
    UNAUTHENTICATED = 4001
    PROTOCOL_ERROR = 4400
    IDLE_TIMEOUT = 4408
    REPLACED = 4409
    TOO_SLOW = 4429


class ProtocolError(Exception):
    """The client broke the protocol; the connection is closed with 4400."""


# The binary frame is shared with the client (roost.protocol); the sessions use this name.
delivery_frame = encode_delivery_frame


def control(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields}, separators=(",", ":"))


@dataclass(slots=True)
class Positions:
    """Per-queue sequence numbers from a ``hello`` (after) or an ``ack`` (up_to)."""

    queues: dict[bytes, int] = field(default_factory=dict)
    direct: int | None = None
    id: Any = None


def parse_text(text: str) -> dict[str, Any]:
    if len(text) > MAX_CLIENT_FRAME:
        raise ProtocolError("frame too large")
    try:
        frame = json.loads(text)
    except ValueError:
        raise ProtocolError("a text frame must be JSON") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise ProtocolError('a frame must be a JSON object with a "type"')
    return frame


def _seq(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SEQ:
        raise ProtocolError(f"{what} must be an integer between 0 and 2^63-1")
    return value


def _queue_id(text: Any) -> bytes:
    try:
        raw = unb64u(text) if isinstance(text, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != QUEUE_ID_LEN:
        raise ProtocolError(f"invalid queue id {str(text)[:32]!r}")
    return raw


def parse_queue_keys(frame: dict[str, Any]) -> dict[bytes, bytes]:
    """The ``queue_keys`` of a ``hello`` or ``subscribe``: queue id -> its key (absent: none).
    A key that is not base64url is a broken client; a wrong one is refused per queue."""
    keys = frame.get("queue_keys", {})
    if keys is None:
        return {}
    if not isinstance(keys, dict):
        raise ProtocolError('"queue_keys" must be an object of queue id -> key')
    out: dict[bytes, bytes] = {}
    for text, value in keys.items():
        qid = _queue_id(text)
        try:
            key = unb64u(value) if isinstance(value, str) and value else None
        except ValueError:
            key = None
        if not key or len(key) > MAX_KEY_LEN:
            raise ProtocolError("a queue key must be a base64url string")
        out[qid] = key
    return out


def parse_positions(frame: dict[str, Any]) -> Positions:
    """The ``queues``/``direct``/``id`` fields shared by ``hello`` and ``ack``."""
    out = Positions(id=frame.get("id"))
    queues = frame.get("queues", {})
    if not isinstance(queues, dict):
        raise ProtocolError('"queues" must be an object of queue id -> seq')
    for text, value in queues.items():
        out.queues[_queue_id(text)] = _seq(value, "a queue position")
    if frame.get("direct") is not None:
        out.direct = _seq(frame["direct"], '"direct"')
    if out.id is not None and not isinstance(out.id, (int, str)):
        raise ProtocolError('"id" must be an integer or a string')
    return out
