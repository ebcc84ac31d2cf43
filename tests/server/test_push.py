"""Push notifications over ASGI on SQLite and PostgreSQL, against stand-in push services that
run as separate processes: Web Push (VAPID checked, RFC 8291 payload decrypted), APNs (ES256
provider token) and FCM (OAuth JWT-bearer grant). Policies, coalescing, realtime presence."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from roost.protocol.base64url import b64u, unb64u
from tests.push_services.process import StandIn

from .conftest import Server, make_config, running_server
from .delivery_helpers import Member, add_members, connect, create_group, member, send

WAKE = {"type": "wake"}
SECRET_TEXT = b"the launch code is 0000"


@dataclass
class Services:
    webpush: StandIn
    apns: StandIn
    fcm: StandIn
    apns_key: Path
    fcm_account: Path


def _pem_private(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_public(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def push_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    d = tmp_path_factory.mktemp("push")
    apns_key = ec.generate_private_key(ec.SECP256R1())
    (d / "apns.p8").write_bytes(_pem_private(apns_key))
    (d / "apns.pub").write_bytes(_pem_public(apns_key))
    fcm_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (d / "fcm.pub").write_bytes(_pem_public(fcm_key))
    started = [
        StandIn("webpush"),
        StandIn("apns", d / "apns.pub"),
        StandIn("fcm", d / "fcm.pub"),
    ]
    account = {
        "type": "service_account",
        "client_email": "roost-push@example.iam.gserviceaccount.com",
        "private_key": _pem_private(fcm_key).decode(),
        "token_uri": f"{started[2].base_url}/token",
    }
    (d / "fcm.json").write_text(json.dumps(account))
    try:
        yield Services(*started, d / "apns.p8", d / "fcm.json")
    finally:
        for s in started:
            s.close()


def push_config(db_url: str, ps: Services, **overrides: object):  # type: ignore[no-untyped-def]
    return make_config(
        db_url,
        push_allow_insecure_endpoints=True,
        push_coalesce_seconds=10,
        push_apns_key_file=str(ps.apns_key),
        push_apns_key_id="KEYID12345",
        push_apns_team_id="TEAMID1234",
        push_apns_topic="org.roost.app",
        push_apns_base_url=ps.apns.base_url,
        push_fcm_service_account_file=str(ps.fcm_account),
        push_fcm_project_id="roost-test",
        push_fcm_base_url=ps.fcm.base_url,
        **overrides,
    )


@pytest.fixture
async def server(db_url: str, push_services: Services) -> AsyncIterator[Server]:
    for s in (push_services.webpush, push_services.apns, push_services.fcm):
        await asyncio.to_thread(s.reset)
    async with running_server(push_config(db_url, push_services)) as s:
        yield s


async def settle(server: Server) -> None:
    await server.app.state.push.idle()  # type: ignore[attr-defined]


async def received(standin: StandIn) -> list[dict]:
    return await asyncio.to_thread(standin.received)


async def pair(server: Server) -> tuple[Member, Member, bytes]:
    """alice and bob in one group (bob joined through a Welcome)."""
    http = server.http
    alice = await member(http, await server.user("alice"))
    bob = await member(http, await server.user("bob"))
    gid, r = await create_group(http, alice)
    assert r.status_code == 201, r.text
    await connect(http, alice.user, bob.user)
    r = await add_members(http, alice, gid, [bob])
    assert r.status_code == 201, r.text
    return alice, bob, gid


async def register_webpush(
    server: Server, ps: Services, m: Member, sub_id: str, default_policy: str = "all"
) -> dict:
    sub = await asyncio.to_thread(ps.webpush.subscribe, sub_id)
    r = await server.http.put(
        "/v1/push",
        json={"kind": "webpush", **sub, "default_policy": default_policy},
        headers=m.headers,
    )
    assert r.status_code == 204, r.text
    return sub


async def set_group_policy(server: Server, m: Member, gid: bytes, policy: str | None) -> None:
    r = await server.http.put(
        f"/v1/groups/{b64u(gid)}/policy", json={"policy": policy}, headers=m.headers
    )
    assert r.status_code == 204, r.text


async def test_webpush_is_encrypted_vapid_signed_and_carries_no_content(server, push_services):  # type: ignore[no-untyped-def]
    alice, bob, gid = await pair(server)
    await settle(server)
    sub = await register_webpush(server, push_services, bob, "bob-1")
    r = await server.http.get("/v1/push/server")
    assert r.status_code == 200
    vapid_key = r.json()["public_key"]
    assert r.json()["kinds"] == ["apns", "fcm", "webpush"]
    r = await server.http.get("/v1/push", headers=bob.headers)
    assert r.json() == {
        "kind": "webpush",
        "endpoint": sub["endpoint"],
        "token": None,
        "default_policy": "all",
    }
    assert (await send(server.http, alice, gid, SECRET_TEXT)).status_code == 201
    await settle(server)
    [got] = await received(push_services.webpush)
    # The stand-in verified the VAPID JWT and decrypted the body with bob's subscription key.
    assert got["subscription"] == "bob-1" and got["vapid_key"] == vapid_key
    assert json.loads(got["plaintext"]) == WAKE
    assert SECRET_TEXT.decode() not in json.dumps(got)


async def stored_registrations(server: Server) -> bytes:
    """Every stored cell of the push registrations, as bytes a reader could search."""
    from roost.server.push.tables import push_registrations

    push = server.app.state.push  # type: ignore[attr-defined]
    async with push.db.engine.connect() as conn:
        rows = (await conn.execute(sa.select(push_registrations))).all()
    return b"".join(c if isinstance(c, bytes) else str(c).encode() for row in rows for c in row)


async def test_the_endpoint_keys_and_tokens_are_stored_sealed(server, push_services):  # type: ignore[no-untyped-def]
    """What a copy of the database shows of a registration: its client, user, kind and
    policy, not where the pushes go; the server still opens it to answer and to send."""
    bob = await member(server.http, await server.user("bob"))
    carol = await member(server.http, await server.user("carol"))
    sub = await register_webpush(server, push_services, bob, "bob-sealed")
    r = await server.http.put(
        "/v1/push", json={"kind": "fcm", "token": "carol-device-token"}, headers=carol.headers
    )
    assert r.status_code == 204, r.text
    stored = await stored_registrations(server)
    for secret in (
        sub["endpoint"].encode(),
        sub["keys"]["p256dh"].encode(),
        sub["keys"]["auth"].encode(),
        unb64u(sub["keys"]["p256dh"]),
        unb64u(sub["keys"]["auth"]),
        b"carol-device-token",
    ):
        assert secret not in stored
    r = await server.http.get("/v1/push", headers=carol.headers)
    assert r.json()["token"] == "carol-device-token"
    r = await server.http.get("/v1/push", headers=bob.headers)
    assert r.json()["endpoint"] == sub["endpoint"]


async def test_muted_group_sends_no_push(server, push_services):  # type: ignore[no-untyped-def]
    alice, bob, gid = await pair(server)
    await register_webpush(server, push_services, bob, "bob-muted")
    await set_group_policy(server, bob, gid, "mute")
    assert (await send(server.http, alice, gid, b"shh")).status_code == 201
    await settle(server)
    assert await received(push_services.webpush) == []


async def test_default_policy_applies_without_a_group_policy(server, push_services):  # type: ignore[no-untyped-def]
    alice, bob, gid = await pair(server)
    await register_webpush(server, push_services, bob, "bob-default-mute", default_policy="mute")
    assert (await send(server.http, alice, gid, b"x")).status_code == 201
    await settle(server)
    assert await received(push_services.webpush) == []


async def test_attached_group_policy_wins_over_the_default(server, push_services):  # type: ignore[no-untyped-def]
    alice, bob, gid = await pair(server)
    await register_webpush(server, push_services, bob, "bob-wins", default_policy="mute")
    await set_group_policy(server, bob, gid, "all")
    assert (await send(server.http, alice, gid, b"x")).status_code == 201
    await settle(server)
    assert [g["plaintext"] for g in await received(push_services.webpush)] == ['{"type":"wake"}']


async def test_welcome_notifies_by_the_default_policy(server, push_services):  # type: ignore[no-untyped-def]
    http = server.http
    alice = await member(http, await server.user("alice"))
    bob = await member(http, await server.user("bob"))
    carol = await member(http, await server.user("carol"))
    gid, _ = await create_group(http, alice)
    await connect(http, alice.user, bob.user)
    await connect(http, alice.user, carol.user)
    await register_webpush(server, push_services, bob, "bob-welcome", default_policy="all")
    await register_webpush(server, push_services, carol, "carol-welcome", default_policy="mute")
    assert (await add_members(http, alice, gid, [bob, carol])).status_code == 201
    await settle(server)
    assert [g["subscription"] for g in await received(push_services.webpush)] == ["bob-welcome"]


async def test_a_burst_is_coalesced_into_one_push_then_one_trailing(server, push_services):  # type: ignore[no-untyped-def]
    alice, bob, gid = await pair(server)
    await settle(server)
    await register_webpush(server, push_services, bob, "bob-burst")
    for i in range(5):
        assert (await send(server.http, alice, gid, b"%d" % i)).status_code == 201
    await settle(server)
    assert len(await received(push_services.webpush)) == 1
    # The window ends: the swallowed wake-ups turn into one trailing push, no more.
    server.clock.advance(11)
    for _ in range(50):
        if len(await received(push_services.webpush)) == 2:
            break
        await asyncio.sleep(0.1)
    assert len(await received(push_services.webpush)) == 2
    await asyncio.sleep(1.2)
    assert len(await received(push_services.webpush)) == 2


class _Connected:
    """Stands for a live realtime connection of a client in the hub."""

    def __init__(self, client_uuid: str, user_uuid: str) -> None:
        self.client_uuid = client_uuid
        self.user_uuid = user_uuid

    def on_item(self, wake: object) -> None:
        pass

    def on_acked(self, queue_id: bytes | None, up_to: int) -> None:
        pass

    def terminate(self, code: int, reason: str) -> None:
        pass


async def test_a_client_connected_over_realtime_gets_no_push(server, push_services):  # type: ignore[no-untyped-def]
    alice, bob, gid = await pair(server)
    await settle(server)
    await register_webpush(server, push_services, bob, "bob-online")
    me = (await server.http.get("/v1/push", headers=bob.headers)).status_code
    assert me == 200
    principal = await server.app.state.services.auth.authenticate(bob.client.token)  # type: ignore[attr-defined]
    hub = server.app.state.notify  # type: ignore[attr-defined]
    online = _Connected(principal.client_uuid, principal.user_uuid)
    hub.attach(online)
    assert (await send(server.http, alice, gid, b"x")).status_code == 201
    await settle(server)
    assert await received(push_services.webpush) == []
    hub.detach(online)
    assert (await send(server.http, alice, gid, b"y")).status_code == 201
    await settle(server)
    assert len(await received(push_services.webpush)) == 1


async def test_an_expired_subscription_is_unregistered(server, push_services):  # type: ignore[no-untyped-def]
    alice, bob, gid = await pair(server)
    await settle(server)
    await register_webpush(server, push_services, bob, "gone-bob")
    assert (await send(server.http, alice, gid, b"x")).status_code == 201
    await settle(server)
    [got] = await received(push_services.webpush)
    assert got["refused"] == 410
    r = await server.http.get("/v1/push", headers=bob.headers)
    assert r.status_code == 404 and r.json()["code"] == "push_not_registered"


@pytest.mark.parametrize("kind", ["apns", "fcm"])
async def test_vendor_push_has_the_right_shape_and_authentication(server, push_services, kind):  # type: ignore[no-untyped-def]
    alice, bob, gid = await pair(server)
    await settle(server)
    r = await server.http.put(
        "/v1/push", json={"kind": kind, "token": "device-token-1"}, headers=bob.headers
    )
    assert r.status_code == 204, r.text
    assert (await send(server.http, alice, gid, SECRET_TEXT)).status_code == 201
    await settle(server)
    standin = getattr(push_services, kind)
    [got] = await received(standin)
    assert got["token"] == "device-token-1", got
    if kind == "apns":
        assert got["payload"] == {"aps": {"content-available": 1}}
    else:
        assert got["message"]["data"] == WAKE and "notification" not in got["message"]
    assert SECRET_TEXT.decode() not in json.dumps(got)


@pytest.mark.parametrize("kind", ["apns", "fcm"])
async def test_vendor_unregistered_token_is_dropped(server, push_services, kind):  # type: ignore[no-untyped-def]
    alice, bob, gid = await pair(server)
    await settle(server)
    r = await server.http.put(
        "/v1/push", json={"kind": kind, "token": "gone-token"}, headers=bob.headers
    )
    assert r.status_code == 204, r.text
    assert (await send(server.http, alice, gid, b"x")).status_code == 201
    await settle(server)
    r = await server.http.get("/v1/push", headers=bob.headers)
    assert r.status_code == 404


async def test_registration_is_validated(server, push_services):  # type: ignore[no-untyped-def]
    bob = await member(server.http, await server.user("bob"))
    put = server.http.put
    r = await put(
        "/v1/push",
        json={"kind": "webpush", "endpoint": "http://127.0.0.1:1/x"},
        headers=bob.headers,
    )
    assert r.status_code == 400 and r.json()["code"] == "invalid_subscription"
    keys = {"p256dh": b64u(b"\x04" + b"\x01" * 64), "auth": b64u(b"a" * 16)}
    r = await put(
        "/v1/push",
        json={"kind": "webpush", "endpoint": "http://127.0.0.1:1/x", "keys": keys},
        headers=bob.headers,
    )
    assert r.status_code == 400 and r.json()["code"] == "invalid_subscription"
    r = await put("/v1/push", json={"kind": "apns"}, headers=bob.headers)
    assert r.status_code == 400
    r = await put(
        "/v1/push",
        json={"kind": "fcm", "token": "t", "default_policy": "loud"},
        headers=bob.headers,
    )
    assert r.status_code in (400, 422)
    r = await server.http.put("/v1/push", json={"kind": "fcm", "token": "t"})
    assert r.status_code == 401
    r = await server.http.delete("/v1/push", headers=bob.headers)
    assert r.status_code == 404


async def test_without_the_test_flag_only_public_https_endpoints(db_url, push_services):  # type: ignore[no-untyped-def]
    config = make_config(db_url)
    async with running_server(config) as s:
        bob = await member(s.http, await s.user("bob"))
        sub = await asyncio.to_thread(push_services.webpush.subscribe, "strict")
        for endpoint in (sub["endpoint"], "https://127.0.0.1/x", "https://10.0.0.1/x"):
            r = await s.http.put(
                "/v1/push",
                json={"kind": "webpush", **sub, "endpoint": endpoint},
                headers=bob.headers,
            )
            assert r.status_code == 400, endpoint
        r = await s.http.put("/v1/push", json={"kind": "apns", "token": "t"}, headers=bob.headers)
        assert r.status_code == 422 and r.json()["code"] == "push_kind_unavailable"
        r = await s.http.put(
            "/v1/push",
            json={"kind": "webpush", **sub, "endpoint": "https://push.example/x"},
            headers=bob.headers,
        )
        assert r.status_code == 204
        r = await s.http.delete("/v1/push", headers=bob.headers)
        assert r.status_code == 204
