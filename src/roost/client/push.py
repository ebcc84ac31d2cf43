"""Push notifications, client side: register a means of notification and a default policy, and
read a Web Push payload (RFC 8291) when the client receives pushes itself (UnifiedPush).

A push only says "fetch your queues" (``{"type":"wake"}``); it never carries content.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from roost.protocol.base64url import b64u

from .errors import RoostError

if TYPE_CHECKING:
    from .session import Session

POLICIES = ("all", "mute")


@dataclass(frozen=True, slots=True)
class WebPushKeys:
    """A subscription's receiving keys: keep ``private_key`` on the device."""

    private_key: ec.EllipticCurvePrivateKey
    auth: bytes

    @classmethod
    def generate(cls) -> WebPushKeys:
        return cls(ec.generate_private_key(ec.SECP256R1()), os.urandom(16))

    @property
    def p256dh(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    def subscription_keys(self) -> dict[str, str]:
        return {"p256dh": b64u(self.p256dh), "auth": b64u(self.auth)}

    def decrypt(self, body: bytes) -> bytes:
        """Open one RFC 8291 ``aes128gcm`` message (single record)."""
        try:
            salt, rs, idlen = body[:16], int.from_bytes(body[16:20], "big"), body[20]
            sender_public = body[21 : 21 + idlen]
            record = body[21 + idlen :]
            if idlen != 65 or len(record) > rs:
                raise ValueError("bad header")
            sender = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), sender_public)
            ecdh = self.private_key.exchange(ec.ECDH(), sender)
            info = b"WebPush: info\x00" + self.p256dh + sender_public
            ikm = _hkdf(self.auth, ecdh, info, 32)
            cek = _hkdf(salt, ikm, b"Content-Encoding: aes128gcm\x00", 16)
            nonce = _hkdf(salt, ikm, b"Content-Encoding: nonce\x00", 12)
            padded = AESGCM(cek).decrypt(nonce, record, None).rstrip(b"\x00")
        except Exception as e:  # any malformed or forged push
            raise RoostError(0, "push_undecryptable", f"cannot decrypt the push: {e}") from None
        if not padded.endswith(b"\x02"):
            raise RoostError(0, "push_undecryptable", "the push is not a single last record")
        return padded[:-1]


def _hkdf(salt: bytes, ikm: bytes, info: bytes, n: int) -> bytes:
    return HKDF(hashes.SHA256(), n, salt, info).derive(ikm)


async def push_server_info(client: Session) -> dict[str, Any]:
    """``{"public_key" (VAPID applicationServerKey, b64u), "kinds", "policies"}``."""
    return (await client.request("GET", "/v1/push/server", auth=False)).json()


async def register_web_push(
    client: Session, endpoint: str, keys: dict[str, str], default_policy: str = "all"
) -> None:
    """Register a Web Push / UnifiedPush subscription (``keys``: p256dh and auth, b64u)."""
    body = {"kind": "webpush", "endpoint": endpoint, "keys": keys, "default_policy": default_policy}
    await client.request("PUT", "/v1/push", json=body)


async def register_device_token(
    client: Session, kind: str, token: str, default_policy: str = "all"
) -> None:
    """Register an APNs device token (``kind="apns"``) or FCM registration token (``"fcm"``)."""
    body = {"kind": kind, "token": token, "default_policy": default_policy}
    await client.request("PUT", "/v1/push", json=body)


async def push_registration(client: Session) -> dict[str, Any] | None:
    """This client's registration, or None (never registered, or dropped by the server after
    the push service reported it gone: register again)."""
    try:
        return (await client.request("GET", "/v1/push")).json()
    except RoostError as e:
        if e.code == "push_not_registered":
            return None
        raise


async def unregister_push(client: Session) -> None:
    await client.request("DELETE", "/v1/push")


async def set_group_policy(
    client: Session,
    group_id_b64u: str,
    policy: str | None,
    *,
    headers: Mapping[str, str] | None = None,
) -> None:
    """This client's policy for one group (``all``, ``mute``, or None for the default).
    ``headers``: the group's key header (``Groups.key_headers``) for a sealed group."""
    await client.request(
        "PUT", f"/v1/groups/{group_id_b64u}/policy", json={"policy": policy}, headers=headers
    )
