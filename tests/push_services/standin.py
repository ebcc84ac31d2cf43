"""A push-service stand-in process: ``python -m tests.push_services.standin MODE [KEYFILE]``.

Prints its port on the first line of stdout, then serves on 127.0.0.1 until killed.

- ``webpush``: ``POST /_subscribe`` creates a subscription (it keeps the P-256 private key and
  answers the endpoint and keys); ``POST /push/<id>`` verifies the VAPID JWT (RFC 8292) and
  decrypts the aes128gcm body (RFC 8291) with the subscription's private key.
- ``apns``: ``POST /3/device/<token>`` checks the headers and the provider JWT (ES256, KEYFILE
  is the PEM public key).
- ``fcm``: ``POST /token`` checks the RS256 JWT-bearer assertion (KEYFILE: PEM public key) and
  issues an access token; ``POST /v1/projects/<p>/messages:send`` checks bearer and body.

Tokens/ids starting with ``gone`` are answered as unregistered. ``GET /_received`` lists what
arrived (with the check result), ``POST /_reset`` forgets it.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MODE = sys.argv[1]
PUBLIC_KEY = (
    serialization.load_pem_public_key(Path(sys.argv[2]).read_bytes()) if len(sys.argv) > 2 else None
)
LOCK = threading.Lock()
RECEIVED: list[dict[str, Any]] = []
SUBSCRIPTIONS: dict[str, tuple[ec.EllipticCurvePrivateKey, bytes]] = {}
ACCESS_TOKENS: set[str] = set()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def hkdf(salt: bytes, ikm: bytes, info: bytes, n: int) -> bytes:
    return HKDF(hashes.SHA256(), n, salt, info).derive(ikm)


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def jwt_claims(token: str, key: Any, alg: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Verify a compact JWS with ``key``; return (header, claims)."""
    try:
        h, c, s = token.split(".")
        header, claims, sig = json.loads(unb64(h)), json.loads(unb64(c)), unb64(s)
    except ValueError:
        raise Refused(401, "malformed JWT") from None
    if header.get("alg") != alg:
        raise Refused(401, f"JWT alg must be {alg}")
    signed = f"{h}.{c}".encode()
    try:
        if alg == "ES256":
            if len(sig) != 64:
                raise Refused(401, "ES256 signature must be raw r||s")
            der = encode_dss_signature(int.from_bytes(sig[:32]), int.from_bytes(sig[32:]))
            key.verify(der, signed, ec.ECDSA(hashes.SHA256()))
        else:
            key.verify(sig, signed, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise Refused(403, "bad JWT signature") from None
    return header, claims


def webpush(handler: BaseHTTPRequestHandler, sub_id: str, body: bytes) -> dict[str, Any]:
    if sub_id.startswith("gone"):
        raise Refused(410, "subscription expired")
    if sub_id not in SUBSCRIPTIONS:
        raise Refused(404, "no such subscription")
    auth_header = handler.headers.get("Authorization", "")
    if not auth_header.startswith("vapid "):
        raise Refused(401, "VAPID authorization required")
    params = dict(p.strip().split("=", 1) for p in auth_header[6:].split(","))
    k = unb64(params["k"])
    vapid_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), k)
    _, claims = jwt_claims(params["t"], vapid_key, "ES256")
    origin = f"http://127.0.0.1:{handler.server.server_address[1]}"
    if claims.get("aud") != origin:
        raise Refused(403, f"aud {claims.get('aud')!r} != {origin}")
    now = time.time()
    if not now < claims.get("exp", 0) <= now + 86400:
        raise Refused(403, "exp missing, past or more than 24 h ahead")
    if not str(claims.get("sub", "")).startswith(("mailto:", "https:")):
        raise Refused(403, "sub must be mailto: or https:")
    if handler.headers.get("Content-Encoding") != "aes128gcm":
        raise Refused(415, "Content-Encoding must be aes128gcm")
    if not handler.headers.get("TTL", "").isdigit():
        raise Refused(400, "TTL header required")
    # RFC 8291 decryption with the user agent's private key
    ua_priv, auth_secret = SUBSCRIPTIONS[sub_id]
    salt, rs, idlen = body[:16], int.from_bytes(body[16:20]), body[20]
    as_public = body[21 : 21 + idlen]
    ciphertext = body[21 + idlen :]
    if idlen != 65 or rs < 18 or len(ciphertext) > rs:
        raise Refused(400, "bad aes128gcm header")
    as_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), as_public)
    ecdh = ua_priv.exchange(ec.ECDH(), as_key)
    ua_public = point(ua_priv.public_key())
    ikm = hkdf(auth_secret, ecdh, b"WebPush: info\x00" + ua_public + as_public, 32)
    cek = hkdf(salt, ikm, b"Content-Encoding: aes128gcm\x00", 16)
    nonce = hkdf(salt, ikm, b"Content-Encoding: nonce\x00", 12)
    try:
        padded = AESGCM(cek).decrypt(nonce, ciphertext, None)
    except Exception:
        raise Refused(400, "decryption failed") from None
    plaintext = padded.rstrip(b"\x00")
    if not plaintext.endswith(b"\x02"):
        raise Refused(400, "last record delimiter missing")
    return {
        "subscription": sub_id,
        "plaintext": plaintext[:-1].decode(),
        "vapid_key": b64(k),
        "urgency": handler.headers.get("Urgency"),
    }


def apns(handler: BaseHTTPRequestHandler, token: str, body: bytes) -> dict[str, Any]:
    auth_header = handler.headers.get("authorization", "")
    if not auth_header.startswith("bearer "):
        raise Refused(403, "MissingProviderToken")
    header, claims = jwt_claims(auth_header[7:], PUBLIC_KEY, "ES256")
    if header.get("kid") != "KEYID12345" or claims.get("iss") != "TEAMID1234":
        raise Refused(403, "InvalidProviderToken")
    if abs(time.time() - claims.get("iat", 0)) > 3600:
        raise Refused(403, "ExpiredProviderToken")
    if handler.headers.get("apns-topic") != "org.roost.app":
        raise Refused(400, "TopicDisallowed")
    if handler.headers.get("apns-push-type") != "background":
        raise Refused(400, "InvalidPushType")
    if handler.headers.get("apns-priority") != "5":
        raise Refused(400, "BadPriority")
    if token.startswith("gone"):
        raise Refused(410, "Unregistered")
    return {"token": token, "payload": json.loads(body)}


def fcm_token(body: bytes) -> dict[str, Any]:
    form = dict(urllib.parse.parse_qsl(body.decode()))
    if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
        raise Refused(400, "unsupported_grant_type")
    _, claims = jwt_claims(form.get("assertion", ""), PUBLIC_KEY, "RS256")
    if claims.get("scope") != "https://www.googleapis.com/auth/firebase.messaging":
        raise Refused(400, "invalid_scope")
    if claims.get("iss") != "roost-push@example.iam.gserviceaccount.com":
        raise Refused(400, "invalid_grant")
    token = secrets.token_urlsafe(24)
    ACCESS_TOKENS.add(token)
    return {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}


def fcm_send(handler: BaseHTTPRequestHandler, project: str, body: bytes) -> dict[str, Any]:
    bearer = handler.headers.get("authorization", "")
    if not bearer.startswith("Bearer ") or bearer[7:] not in ACCESS_TOKENS:
        raise Refused(401, "UNAUTHENTICATED")
    message = json.loads(body)["message"]
    if project != "roost-test" or not message.get("token"):
        raise Refused(400, "INVALID_ARGUMENT")
    if message["token"].startswith("gone"):
        raise Refused(404, "UNREGISTERED")
    return {"token": message["token"], "message": message}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _answer(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        with LOCK:
            self._answer(200, RECEIVED)

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        path = self.path
        try:
            if path == "/_reset":
                with LOCK:
                    RECEIVED.clear()
                return self._answer(200, {})
            if MODE == "webpush" and path == "/_subscribe":
                return self._answer(200, self._subscribe(body))
            if MODE == "fcm" and path == "/token":
                return self._answer(200, fcm_token(body))
            if MODE == "webpush" and path.startswith("/push/"):
                entry = webpush(self, path[6:], body)
            elif MODE == "apns" and path.startswith("/3/device/"):
                entry = apns(self, path[10:], body)
            elif MODE == "fcm" and path.startswith("/v1/projects/"):
                entry = fcm_send(self, path.split("/")[3], body)
            else:
                raise Refused(404, "unknown path")
        except Refused as e:
            with LOCK:
                RECEIVED.append({"refused": e.status, "reason": e.reason, "path": path})
            reply: Any = {"reason": e.reason}
            if MODE == "fcm":
                reply = {"error": {"status": e.reason}}
            return self._answer(e.status, reply)
        with LOCK:
            RECEIVED.append(entry)
        self._answer(201 if MODE == "webpush" else 200, {})

    def _subscribe(self, body: bytes) -> dict[str, Any]:
        sub_id = json.loads(body or b"{}").get("id") or secrets.token_hex(8)
        key = ec.generate_private_key(ec.SECP256R1())
        auth = os.urandom(16)
        with LOCK:
            SUBSCRIPTIONS[sub_id] = (key, auth)
        port = self.server.server_address[1]
        return {
            "endpoint": f"http://127.0.0.1:{port}/push/{sub_id}",
            "keys": {"p256dh": b64(point(key.public_key())), "auth": b64(auth)},
        }


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
