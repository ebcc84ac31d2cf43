"""base64url without padding (docs/api.md, introduction): binary values in JSON and paths.

Encoders never pad; decoders accept input with or without padding.
"""

from __future__ import annotations

import base64
import binascii


def b64u(data: bytes) -> str:
    """``data`` as unpadded base64url text."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64u(text: str) -> bytes:
    """Decode base64url with or without padding; raises ValueError on bad input."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"invalid base64url: {e}") from None


def unb64u_sized(text: str, size: int) -> bytes | None:
    """The ``size`` bytes ``text`` encodes; None if it is not base64url or of another size."""
    try:
        raw = unb64u(text)
    except ValueError:
        return None
    return raw if len(raw) == size else None
