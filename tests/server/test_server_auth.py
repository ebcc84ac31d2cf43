"""Authentication Service: registration, token auth, clients, discovery, profile, deletion."""

from __future__ import annotations

import json

import sqlalchemy as sa

from roost.protocol.base64url import b64u, unb64u
from roost.server.auth.ca import verify_client_certificate
from roost.server.auth.tables import account_events
from roost.server.store import Database

from .conftest import make_config, running_server
from .helpers import DOMAIN, client_from, login, new_key


async def test_register_issues_verifiable_x509_credential(server):
    alice = await server.user("alice", display_name="Alice")
    assert alice.user_id == "alice@localhost"
    leaf, as_cert = alice.client.credential
    r = await server.http.get("/v1/as/certificate")
    assert r.status_code == 200 and r.headers["content-type"] == "application/pkix-cert"
    assert r.content == as_cert
    client_id, key = verify_client_certificate(leaf, r.content)
    assert client_id == alice.client.client_id and key == alice.client.sig_pub
    wk = (await server.http.get("/.well-known/roost")).json()
    assert wk["home_domain"] == DOMAIN and "BEGIN CERTIFICATE" in wk["as_certificate"]


async def test_register_rejects_duplicates_bad_names_and_bad_proofs(server):
    await server.user("alice")
    priv, pub, key = new_key("alice@localhost")
    r = await server.http.post("/v1/register", json={"name": "Alice", "client": key})
    assert r.status_code == 409 and r.json()["code"] == "user_exists"
    r = await server.http.post("/v1/register", json={"name": "-bad", "client": key})
    assert r.status_code == 422 and r.json()["code"] == "invalid_name"
    # proof made for another user id does not verify
    r = await server.http.post("/v1/register", json={"name": "bob", "client": key})
    assert r.status_code == 422 and r.json()["code"] == "invalid_proof"
    _, _, key = new_key("carol@localhost", 1)
    key["cipher_suite"] = 999
    r = await server.http.post("/v1/register", json={"name": "carol", "client": key})
    assert r.status_code == 422 and r.json()["code"] == "unsupported_cipher_suite"
    r = await server.http.post(
        "/v1/register", content=b"{", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"


async def test_registration_token_policy(db_url):
    async with running_server(make_config(db_url, registration_policy="token")) as s:
        _, _, key = new_key("alice@localhost")
        r = await s.http.post("/v1/register", json={"name": "alice", "client": key})
        assert r.status_code == 403 and r.json()["code"] == "registration_token_invalid"
        token = await s.app.state.services.auth.create_registration_token(uses=1)
        body = {"name": "alice", "client": key, "registration_token": token}
        assert (await s.http.post("/v1/register", json=body)).status_code == 201
        _, _, key = new_key("bob@localhost")
        body = {"name": "bob", "client": key, "registration_token": token}
        r = await s.http.post("/v1/register", json=body)
        assert r.status_code == 403  # single-use token is spent


async def test_registration_rate_limit(db_url):
    cfg = make_config(db_url, limits={"registrations_per_minute": 2})
    async with running_server(cfg) as s:
        codes = []
        for name in ("a1", "a2", "a3"):
            _, _, key = new_key(f"{name}@localhost")
            r = await s.http.post("/v1/register", json={"name": name, "client": key})
            codes.append(r.status_code)
        assert codes == [201, 201, 429]
        assert r.json()["code"] == "rate_limited" and "retry-after" in r.headers


async def test_token_auth_failures(server):
    alice = await server.user("alice")
    r = await server.http.post("/v1/auth/challenge", json={"client_id": alice.client.client_id})
    ch = r.json()
    bad = {"challenge_id": ch["challenge_id"], "signature": b64u(b"\x00" * 64)}
    r = await server.http.post("/v1/auth/token", json=bad)
    assert r.status_code == 401 and r.json()["code"] == "auth_failed"
    # the challenge was single use
    r = await server.http.post("/v1/auth/token", json=bad)
    assert r.status_code == 401
    # unknown clients still get a challenge (no probing) but never a token
    r = await server.http.post("/v1/auth/challenge", json={"client_id": "nobody@localhost/x"})
    assert r.status_code == 200
    # expired tokens
    assert (await server.http.get("/v1/me", headers=alice.headers)).status_code == 200
    server.clock.advance(901)
    r = await server.http.get("/v1/me", headers=alice.headers)
    assert r.status_code == 401 and r.json()["code"] == "token_expired"
    await login(server.http, alice.client)
    assert (await server.http.get("/v1/me", headers=alice.headers)).status_code == 200


async def test_add_client_with_password_and_remove(server):
    alice = await server.user("alice")
    priv, pub, key = new_key(alice.user_id)
    body = {"user_id": alice.user_id, "password": "wrong password", "client": key}
    r = await server.http.post("/v1/clients", json=body)
    assert r.status_code == 403 and r.json()["code"] == "invalid_password"
    body["password"] = alice.password
    r = await server.http.post("/v1/clients", json=body)
    assert r.status_code == 201, r.text
    second = client_from(r.json(), priv, pub)
    await login(server.http, second)
    me = (await server.http.get("/v1/me", headers=second.headers)).json()
    assert me["client_id"] == second.client_id and len(me["clients"]) == 2
    # one client verifies the other's credential
    listed = (
        await server.http.get(f"/v1/users/{alice.user_id}/clients", headers=alice.headers)
    ).json()
    creds = {c["client_id"]: [unb64u(x) for x in c["credential"]] for c in listed["clients"]}
    cid, key_bytes = verify_client_certificate(*creds[second.client_id])
    assert cid == second.client_id and key_bytes == second.sig_pub
    # remove the second client from the first: its token dies at once
    r = await server.http.delete(f"/v1/clients/{second.client_uuid}", headers=alice.headers)
    assert r.status_code == 204
    assert (await server.http.get("/v1/me", headers=second.headers)).status_code == 401
    r = await server.http.delete(f"/v1/clients/{alice.client.client_uuid}", headers=alice.headers)
    assert r.status_code == 409 and r.json()["code"] == "last_client"


async def test_add_client_by_approval(server):
    alice = await server.user("alice")
    bob = await server.user("bob")
    priv, pub, key = new_key(alice.user_id)
    r = await server.http.post(
        "/v1/client-requests",
        json={"user_id": alice.user_id, "client": key, "device_name": "laptop"},
    )
    assert r.status_code == 201
    request_id = r.json()["request_id"]
    assert (await server.http.get(f"/v1/client-requests/{request_id}")).json()["state"] == "pending"
    pending = (await server.http.get("/v1/client-requests", headers=alice.headers)).json()[
        "requests"
    ]
    assert [p["device_name"] for p in pending] == ["laptop"]
    public_id = pending[0]["request_id"]
    # another user cannot see or approve it
    assert (await server.http.get("/v1/client-requests", headers=bob.headers)).json()[
        "requests"
    ] == []
    r = await server.http.post(f"/v1/client-requests/{public_id}/approve", headers=bob.headers)
    assert r.status_code == 404  # not disclosed: answered as an unknown id
    r = await server.http.post(f"/v1/client-requests/{public_id}/approve", headers=alice.headers)
    assert r.status_code == 201
    polled = (await server.http.get(f"/v1/client-requests/{request_id}")).json()
    assert polled["state"] == "approved"
    new = client_from(polled["client"], priv, pub)
    await login(server.http, new)
    assert (await server.http.get("/v1/me", headers=new.headers)).json()["user_id"] == alice.user_id


async def test_discovery_and_display_name(server):
    alice = await server.user("alice", display_name="Alice Liddell")
    bob = await server.user("bob", discoverable=True, display_name="Bob Builder")
    r = await server.http.get("/v1/users/bob@localhost", headers=alice.headers)
    assert r.json() == {
        "user_id": "bob@localhost",
        "user_uuid": bob.user_uuid,
        "display_name": "Bob Builder",
    }
    r = await server.http.get("/v1/users/nobody@localhost", headers=alice.headers)
    assert r.status_code == 404 and r.json()["code"] == "user_not_found"
    found = (await server.http.get("/v1/directory?q=build", headers=alice.headers)).json()
    assert [u["user_id"] for u in found["users"]] == ["bob@localhost"]
    # alice has not opted in: not listed, until she does
    assert (await server.http.get("/v1/directory?q=ali", headers=bob.headers)).json()["users"] == []
    r = await server.http.patch(
        "/v1/me", json={"discoverable": True, "display_name": "Alice L."}, headers=alice.headers
    )
    assert r.status_code == 200 and r.json()["display_name"] == "Alice L."
    found = (await server.http.get("/v1/directory?q=ali", headers=bob.headers)).json()
    assert [u["display_name"] for u in found["users"]] == ["Alice L."]
    events = await server.app.state.services.auth.pending_account_events()
    assert [e.event_type for e in events] == ["display_name_changed"]


async def test_account_deletion(server, db_url):
    alice = await server.user("alice")
    bob = await server.user("bob")
    # The DS's consumer waits, so that the event can be read before it is handled (and gone).
    await server.app.state.services.delivery.stop()
    r = await server.http.delete("/v1/me", headers=alice.headers)
    assert r.status_code == 204
    assert (await server.http.get("/v1/me", headers=alice.headers)).status_code == 401
    r = await server.http.get("/v1/users/alice@localhost", headers=bob.headers)
    assert r.status_code == 404
    _, _, key = new_key("alice@localhost")
    r = await server.http.post("/v1/register", json={"name": "alice", "client": key})
    assert r.status_code == 409  # user ids are immutable: never reissued
    db = Database(db_url)
    try:
        async with db.engine.connect() as conn:
            rows = (await conn.execute(sa.select(account_events))).all()
    finally:
        await db.dispose()
    assert [r.event_type for r in rows] == ["user_deleted"]
    payload = json.loads(rows[0].payload)
    assert payload["user_id"] == "alice@localhost"
    assert payload["client_ids"] == [alice.client.client_id]
    # Once the DS has handled it, the event is not kept (it names the deleted account).
    assert await server.app.state.services.delivery.process_account_events() == 1
    db = Database(db_url)
    try:
        async with db.engine.connect() as conn:
            assert (await conn.execute(sa.select(account_events))).all() == []
    finally:
        await db.dispose()


async def test_longest_name_gets_a_valid_certificate(server):
    name = "a" * 63
    user = await server.user(name)
    leaf, as_cert = user.client.credential
    assert (
        verify_client_certificate(leaf, as_cert)[0] == f"{name}@localhost/{user.client.client_uuid}"
    )
