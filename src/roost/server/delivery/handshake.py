"""A handshake as the DS receives it: an MLSMessage PublicMessage (RFC 9420 §6.2), and how an
MLS refusal of one is answered (``422`` with the error's kind and message)."""

from __future__ import annotations

from roost.mls.framing import PublicMessage

from ..errors import Problem
from . import wire


def public_handshake(data: bytes) -> PublicMessage:
    try:
        return wire.public_message(data)
    except wire.WrongWireFormat:
        raise Problem(
            422, "wrong_wire_format", "handshake messages must be PublicMessage"
        ) from None


def mls_problem(code: str, e: Exception) -> Problem:
    return Problem(422, code, f"{type(e).__name__}: {e}")
