"""Push building blocks without a server: RFC 8291 round trip (server encrypts, client
decrypts), policy resolution, VAPID JWT shape, and the push settings' validation."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from roost.client.errors import RoostError
from roost.client.push import WebPushKeys
from roost.server.config import ConfigError, build_config
from roost.server.push import policy
from roost.server.push.webpush import Vapid, encrypt, generate_vapid_private_bytes


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_rfc8291_round_trip_and_tamper_detection() -> None:
    keys = WebPushKeys.generate()
    body = encrypt(keys.p256dh, keys.auth, b'{"type":"wake"}')
    assert body[16:20] == (4096).to_bytes(4, "big") and body[20] == 65
    assert keys.decrypt(body) == b'{"type":"wake"}'
    # Fresh salt and ephemeral key every time: two pushes never look alike.
    assert encrypt(keys.p256dh, keys.auth, b"x") != encrypt(keys.p256dh, keys.auth, b"x")
    for bad in (body[:-1] + bytes((body[-1] ^ 1,)), body[:40]):
        with pytest.raises(RoostError):
            keys.decrypt(bad)
    with pytest.raises(RoostError):
        WebPushKeys.generate().decrypt(body)  # another subscription's key


def test_vapid_authorization_is_a_valid_es256_jwt_for_the_origin() -> None:
    vapid = Vapid.from_private_bytes(generate_vapid_private_bytes(), "mailto:ops@example.org")
    header = vapid.authorization("https://push.example.net:8443/sub/abc?x=1")
    t, k = (part.split("=", 1)[1] for part in header.removeprefix("vapid ").split(", "))
    assert _unb64(k) == vapid.public_key and len(vapid.public_key) == 65
    h, c, s = t.split(".")
    assert json.loads(_unb64(h)) == {"typ": "JWT", "alg": "ES256"}
    claims = json.loads(_unb64(c))
    assert claims["aud"] == "https://push.example.net:8443"
    assert claims["sub"] == "mailto:ops@example.org"
    sig = _unb64(s)
    pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), vapid.public_key)
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    pub.verify(der, f"{h}.{c}".encode(), ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize(
    ("attached", "default", "pushes"),
    [
        (None, "all", True),
        (None, "mute", False),
        ("mute", "all", False),
        ("none", "all", False),
        ("all", "mute", True),
        ("ALL", "mute", True),
        ("mentions", "mute", False),  # unknown to the server: the default decides
        ("mentions", "all", True),
    ],
)
def test_policy_resolution(attached: str | None, default: str, pushes: bool) -> None:
    assert policy.should_push(attached, default) is pushes


def test_push_settings_defaults_env_and_validation(tmp_path) -> None:  # type: ignore[no-untyped-def]
    c = build_config({}, {})
    assert (c.push_coalesce_seconds, c.push_allow_insecure_endpoints) == (10, False)
    assert c.push_apns_base_url == "https://api.push.apple.com"
    c = build_config(
        {}, {"ROOST_PUSH_COALESCE_SECONDS": "3", "ROOST_PUSH_VAPID_SUBJECT": "https://x.org"}
    )
    assert c.push_coalesce_seconds == 3 and c.push_vapid_subject == "https://x.org"
    key = tmp_path / "k.p8"
    key.write_text("not used at validation")
    with pytest.raises(ConfigError) as e:
        build_config(
            {
                "push_queue_size": 0,
                "push_apns_key_file": str(key),
                "push_fcm_service_account_file": str(tmp_path / "missing.json"),
                "push_vapid_subject": "ops@example.org",
                "push_fcm_base_url": "ftp://x",
            }
        )
    text = str(e.value)
    for expected in (
        "push_queue_size",
        "push_apns_key_id",
        "push_fcm_project_id",
        "missing.json",
        "push_vapid_subject",
        "push_fcm_base_url",
    ):
        assert expected in text, expected
