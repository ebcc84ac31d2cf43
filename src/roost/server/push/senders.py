"""The three transports. Each returns an ``Outcome``; none logs tokens, endpoints or keys."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .jose import es256_jwt, rs256_jwt
from .webpush import Vapid, encrypt

if TYPE_CHECKING:
    import httpx

    from ..outbound_client import OutboundClient

# What every push says: "fetch your queues". No group, sender or message content.
WAKE_PAYLOAD = b'{"type":"wake"}'
PUSH_TTL_SECONDS = 3600


class Outcome(Enum):
    SENT = "sent"
    GONE = "gone"  # the service says the registration no longer exists: unregister it
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Registration:
    client_uuid: str
    kind: str
    target: str
    p256dh: bytes | None
    auth: bytes | None
    default_policy: str


class Sender(Protocol):
    async def send(self, reg: Registration) -> Outcome: ...


def _outcome(status: int, gone: bool = False) -> Outcome:
    if 200 <= status < 300:
        return Outcome.SENT
    if status in (404, 410) or gone:
        return Outcome.GONE
    return Outcome.FAILED


class WebPushSender:
    def __init__(self, http: OutboundClient, vapid: Vapid) -> None:
        self.http = http
        self.vapid = vapid

    async def send(self, reg: Registration) -> Outcome:
        assert reg.p256dh is not None and reg.auth is not None
        body = encrypt(reg.p256dh, reg.auth, WAKE_PAYLOAD)
        r = await self.http.post(
            reg.target,
            content=body,
            headers={
                "Content-Encoding": "aes128gcm",
                "Content-Type": "application/octet-stream",
                "TTL": str(PUSH_TTL_SECONDS),
                "Urgency": "high",
                "Authorization": self.vapid.authorization(reg.target),
            },
        )
        return _outcome(r.status_code)


class ApnsSender:
    """APNs provider API with token-based (JWT ES256) authentication; background wake-ups."""

    TOKEN_REFRESH_SECONDS = 45 * 60  # Apple: refresh between 20 and 60 minutes

    def __init__(
        self,
        http: OutboundClient,
        base_url: str,
        team_id: str,
        key_id: str,
        key_file: Path,
        topic: str,
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.team_id = team_id
        self.key_id = key_id
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the APNs key must be a P-256 (ES256) private key")
        self.key = key
        self.topic = topic
        self._jwt: tuple[float, str] | None = None

    def _bearer(self) -> str:
        now = time.time()
        if self._jwt is None or now - self._jwt[0] > self.TOKEN_REFRESH_SECONDS:
            token = es256_jwt(self.key, {"iss": self.team_id, "iat": int(now)}, kid=self.key_id)
            self._jwt = (now, token)
        return self._jwt[1]

    async def send(self, reg: Registration) -> Outcome:
        r = await self.http.post(
            f"{self.base_url}/3/device/{reg.target}",
            content=b'{"aps":{"content-available":1}}',
            headers={
                "authorization": f"bearer {self._bearer()}",
                "apns-topic": self.topic,
                "apns-push-type": "background",
                "apns-priority": "5",  # background pushes must use 5
                "apns-expiration": str(int(time.time()) + PUSH_TTL_SECONDS),
                "content-type": "application/json",
            },
        )
        reason = _json_field(r, "reason")
        return _outcome(r.status_code, gone=reason in ("BadDeviceToken", "Unregistered"))


class FcmSender:
    """FCM HTTP v1 with an OAuth 2 access token from a service-account key (JWT bearer grant)."""

    SCOPE = "https://www.googleapis.com/auth/firebase.messaging"

    def __init__(
        self, http: OutboundClient, base_url: str, project_id: str, account_file: Path
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.project_id = project_id
        account = json.loads(account_file.read_text())
        self.client_email: str = account["client_email"]
        self.token_uri: str = account.get("token_uri", "https://oauth2.googleapis.com/token")
        key = serialization.load_pem_private_key(account["private_key"].encode(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("the FCM service account key must be an RSA private key")
        self.key = key
        self._token: tuple[float, str] | None = None  # (expires at, access token)

    async def _access_token(self) -> str:
        now = time.time()
        if self._token is None or self._token[0] - 60 < now:
            claims = {
                "iss": self.client_email,
                "scope": self.SCOPE,
                "aud": self.token_uri,
                "iat": int(now),
                "exp": int(now) + 3600,
            }
            r = await self.http.post(
                self.token_uri,
                data={
                    "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                    "assertion": rs256_jwt(self.key, claims),
                },
            )
            r.raise_for_status()
            body = r.json()
            self._token = (now + float(body.get("expires_in", 3600)), body["access_token"])
        return self._token[1]

    async def send(self, reg: Registration) -> Outcome:
        message = {
            "message": {
                "token": reg.target,
                "data": {"type": "wake"},
                "android": {"priority": "high", "ttl": f"{PUSH_TTL_SECONDS}s"},
            }
        }
        r = await self.http.post(
            f"{self.base_url}/v1/projects/{self.project_id}/messages:send",
            json=message,
            headers={"authorization": f"Bearer {await self._access_token()}"},
        )
        if r.status_code == 401:
            self._token = None  # revoked or expired early: fetch a new one next time
        status = _json_field(r, "error", "status")
        return _outcome(r.status_code, gone=status == "UNREGISTERED")


def _json_field(r: httpx.Response, *path: str) -> str | None:
    try:
        value = r.json()
        for key in path:
            value = value[key]
    except (ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, str) else None
