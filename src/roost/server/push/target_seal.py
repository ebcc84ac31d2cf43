"""Where a registration pushes to, sealed: the Web Push endpoint URL and keys, or the APNs/FCM
device token, are stored only sealed under the server's seal key file (``seal.py``).

The plaintext is JSON ``{"target": str, "p256dh": b64u | null, "auth": b64u | null}``, bound
to the registration's client so a seal copied into another client's row does not open. The
migration that sealed the registrations stored before (store/migrations, 0016) writes the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from roost.protocol.base64url import b64u, unb64u

from ..seal import Seal
from ..seal_key import SealKeyFile

LABEL = b"roost push target seal v1:"


@dataclass(frozen=True, slots=True)
class Target:
    target: str  # Web Push: the subscription endpoint URL; APNs/FCM: the device token
    p256dh: bytes | None  # Web Push only (RFC 8291)
    auth: bytes | None  # Web Push only (RFC 8291)


class TargetSeal:
    def __init__(self, key_file: SealKeyFile) -> None:
        self._seal = Seal(key_file, LABEL)

    def seal(self, client_uuid: str, target: Target) -> bytes:
        plain = {
            "target": target.target,
            "p256dh": None if target.p256dh is None else b64u(target.p256dh),
            "auth": None if target.auth is None else b64u(target.auth),
        }
        return self._seal.seal(json.dumps(plain, separators=(",", ":")), client_uuid.encode())

    def open(self, client_uuid: str, sealed: bytes) -> Target | None:
        """The target, or None if the seal does not open (made under another seal key)."""
        text = self._seal.open(bytes(sealed), client_uuid.encode())
        if text is None:
            return None
        plain = json.loads(text)
        p256dh, auth = plain.get("p256dh"), plain.get("auth")
        return Target(
            target=plain["target"],
            p256dh=None if p256dh is None else unb64u(p256dh),
            auth=None if auth is None else unb64u(auth),
        )
