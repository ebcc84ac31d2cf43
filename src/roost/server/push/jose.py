"""Compact JWS signing (ES256 for VAPID and APNs, RS256 for the FCM OAuth assertion)."""

from __future__ import annotations

import json
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from roost.protocol.base64url import b64u


def _segment(obj: dict[str, Any]) -> str:
    return b64u(json.dumps(obj, separators=(",", ":")).encode())


def es256_jwt(key: ec.EllipticCurvePrivateKey, claims: dict[str, Any], **header: str) -> str:
    signing_input = f"{_segment({'typ': 'JWT', 'alg': 'ES256', **header})}.{_segment(claims)}"
    der = key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)  # JWS wants raw r || s, not DER
    return f"{signing_input}.{b64u(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def rs256_jwt(key: rsa.RSAPrivateKey, claims: dict[str, Any]) -> str:
    signing_input = f"{_segment({'typ': 'JWT', 'alg': 'RS256'})}.{_segment(claims)}"
    sig = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64u(sig)}"
