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


def parse_positions(frame: dict[str, Any]) -> Positions:
    """The ``queues``/``direct``/``id`` fields shared by ``hello`` and ``ack``."""
    out = Positions(id=frame.get("id"))
    queues = frame.get("queues", {})
    if not isinstance(queues, dict):
        raise ProtocolError('"queues" must be an object of queue id -> seq')
    for text, value in queues.items():
        try:
            raw = unb64u(text)
        except ValueError:
            raw = b""
        if len(raw) != QUEUE_ID_LEN:
            raise ProtocolError(f"invalid queue id {text[:32]!r}")
        out.queues[raw] = _seq(value, "a queue position")
    if frame.get("direct") is not None:
        out.direct = _seq(frame["direct"], '"direct"')
    if out.id is not None and not isinstance(out.id, (int, str)):
        raise ProtocolError('"id" must be an integer or a string')
    return out
