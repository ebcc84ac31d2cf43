"""Operator service (``roost admin`` backend) against the real database on both engines, with
the served app checking what the operator changed: suspension enforced by the AS, deletion
through the AS's account deletion, registration tokens, federation policy, status reports."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from roost.server.auth.tables import account_events
from roost.server.federation.policy import FederationPolicy, PolicyError
from roost.server.operator.service import AdminError, AdminService
from roost.server.store import Database

from .conftest import make_config, running_server
from .helpers import MLS, client_from, login, new_key


@pytest.fixture
async def admin(server, db_url):  # noqa: ARG001 - the app must be up (and the schema current)
    svc = AdminService.open(make_config(db_url))
    try:
        yield svc
    finally:
        await svc.close()


async def test_created_user_adds_first_client_with_password(server, admin):
    made = await admin.create_user("Carol", password="pw for carol 123", display_name="C")
    assert made.user_id == "carol@localhost" and made.clients == 0 and made.suspended_at is None
    priv, pub, key = new_key(made.user_id)
    r = await server.http.post(
        "/v1/clients",
        json={"user_id": made.user_id, "password": "pw for carol 123", "client": key},
    )
    assert r.status_code == 201, r.text
    client = client_from(r.json(), priv, pub)
    await login(server.http, client)
    me = await server.http.get("/v1/me", headers=client.headers)
    assert me.status_code == 200 and me.json()["user_id"] == "carol@localhost"
    listed = {u.user_id: u for u in await admin.list_users()}
    assert listed["carol@localhost"].clients == 1
    with pytest.raises(AdminError):
        await admin.create_user("carol", password=None)
    with pytest.raises(AdminError):
        await admin.create_user("carol@elsewhere.example", password=None)


async def test_list_users_pages_by_name(server, admin):
    for n in ("a1", "b2", "c3"):
        await server.user(n)
    first = await admin.list_users(limit=2)
    rest = await admin.list_users(limit=2, after=first[-1].user_id.split("@")[0])
    assert [u.user_id for u in first + rest] == ["a1@localhost", "b2@localhost", "c3@localhost"]


async def test_suspension_blocks_auth_and_sends_until_lifted(server, admin):
    alice = await server.user("alice")
    r = await server.http.post("/v1/queues", headers=alice.headers)
    assert r.status_code == 201, r.text
    queue_id, queue_key = r.json()["queue_id"], r.json()["queue_key"]
    await admin.set_suspended("alice", True)
    # the live token is revoked and any token is refused while suspended
    r = await server.http.get("/v1/me", headers=alice.headers)
    assert r.status_code in (401, 403)
    # the queue's key does not stand in for the refused token
    r = await server.http.post(
        f"/v1/queues/{queue_id}/ack",
        json={"up_to": 0},
        headers={**alice.headers, "Roost-Queue-Key": queue_key},
    )
    assert r.status_code in (401, 403) and r.json()["code"] != "forbidden"
    r = await server.http.post("/v1/auth/challenge", json={"client_id": alice.client.client_id})
    from roost.mls.crypto.ciphersuite import get_cipher_suite
    from roost.protocol.base64url import b64u, unb64u
    from roost.server.auth.service import AUTH_LABEL, auth_content

    ch = r.json()
    sig = get_cipher_suite(1).sign_with_label(
        alice.client.sig_priv,
        AUTH_LABEL,
        auth_content("localhost", alice.client.client_id, unb64u(ch["nonce"])),
    )
    r = await server.http.post(
        "/v1/auth/token", json={"challenge_id": ch["challenge_id"], "signature": b64u(sig)}
    )
    assert r.status_code == 403 and r.json()["code"] == "account_suspended"
    _, _, key = new_key(alice.user_id)
    r = await server.http.post(
        "/v1/clients", json={"user_id": alice.user_id, "password": alice.password, "client": key}
    )
    assert r.status_code == 403 and r.json()["code"] == "account_suspended"
    assert (await admin.get_user("alice")).suspended_at is not None
    # lifting it: a fresh login works again and so do requests
    await admin.set_suspended("alice@localhost", False)
    await login(server.http, alice.client)
    r = await server.http.get("/v1/me", headers=alice.headers)
    assert r.status_code == 200
    with pytest.raises(AdminError):
        await admin.set_suspended("nobody", True)


async def test_token_of_suspended_user_refused_even_if_kept(server, admin, db_url):
    """A token issued before the suspension (not deleted, e.g. a race) is still refused."""
    bob = await server.user("bob")
    db = Database(make_config(db_url).sqlalchemy_url)
    try:
        async with db.transaction() as conn:
            await conn.execute(sa.text("UPDATE users SET suspended_at = 1 WHERE name = 'bob'"))
    finally:
        await db.dispose()
    r = await server.http.post("/v1/keypackages", content=b"\x00", headers={**bob.headers, **MLS})
    assert r.status_code == 403 and r.json()["code"] == "account_suspended"


async def test_delete_goes_through_account_deletion(server, admin):
    dave = await server.user("dave")
    delivery = server.app.state.services.delivery
    await delivery.stop()  # the DS's consumer waits, so the event can be read before it goes
    try:
        deleted = await admin.delete_user("dave")
        assert deleted == "dave@localhost"
        r = await server.http.get("/v1/me", headers=dave.headers)
        assert r.status_code == 401
        async with admin.db.engine.connect() as conn:
            events = list(await conn.execute(sa.select(account_events)))
        assert [(e.event_type, e.user_id) for e in events] == [("user_deleted", "dave@localhost")]
        outbox = {o.outbox: o for o in await admin.outbox_status()}
        assert outbox["account_events"].depth == 1
    finally:
        await delivery.start()
    # The DS handles it and keeps nothing of it.
    await delivery.process_account_events()
    async with admin.db.engine.connect() as conn:
        assert list(await conn.execute(sa.select(account_events))) == []
    outbox = {o.outbox: o for o in await admin.outbox_status()}
    assert outbox["account_events"].depth == 0
    with pytest.raises(AdminError):  # names are never reused
        await admin.create_user("dave", password=None)
    with pytest.raises(AdminError):
        await admin.delete_user("dave")


async def test_registration_tokens_create_list_revoke(db_url):
    config = make_config(db_url, registration_policy="token")
    async with running_server(config) as server:
        admin = AdminService.open(config)
        try:
            token, tid = await admin.create_token(uses=2, ttl_seconds=3600)
            token2, tid2 = await admin.create_token(uses=None, ttl_seconds=None)
            listed = {t.id: t for t in await admin.list_tokens()}
            assert listed[tid].uses_left == 2 and listed[tid].usable
            assert listed[tid2].uses_left is None and listed[tid2].expires_at is None
            assert token not in repr(listed) and token2 not in repr(listed)
            await admin.revoke_token(tid2[:8])
            assert tid2 not in {t.id for t in await admin.list_tokens()}
            _, _, key = new_key("eve@localhost")
            r = await server.http.post(
                "/v1/register", json={"name": "eve", "client": key, "registration_token": token2}
            )
            assert r.status_code == 403
            r = await server.http.post(
                "/v1/register", json={"name": "eve", "client": key, "registration_token": token}
            )
            assert r.status_code == 201, r.text
            assert {t.id: t for t in await admin.list_tokens()}[tid].uses_left == 1
            for bad in ("zz", "abc", "0" * 12):
                with pytest.raises(AdminError):
                    await admin.revoke_token(bad)
            with pytest.raises(AdminError):
                await admin.create_token(uses=0, ttl_seconds=None)
        finally:
            await admin.close()


async def test_federation_policy_stored_and_explicit(server, admin):
    store = admin.federation
    policy = await store.load()
    # default: allowlist mode with an empty allowlist admits nobody
    assert policy == FederationPolicy("allowlist", frozenset(), frozenset())
    assert not policy.admits("b.example")
    assert await store.add("allow", "B.example")
    assert not await store.add("allow", "b.example")
    policy = await store.load()
    assert policy.admits("b.example") and not policy.admits("c.example")
    await store.set_mode("open")
    assert await store.add("block", "evil.example")
    policy = await store.load()
    assert policy.admits("c.example") and not policy.admits("evil.example")
    # the blocklist wins over the allowlist in both modes
    await store.add("allow", "evil.example")
    await store.set_mode("allowlist")
    assert not (await store.load()).admits("evil.example")
    assert await store.remove("block", "evil.example")
    assert not await store.remove("block", "evil.example")
    assert (await store.load()).admits("evil.example")
    for bad in (lambda: store.set_mode("all"), lambda: store.add("deny", "x.example")):
        with pytest.raises(PolicyError):
            await bad()
    with pytest.raises(PolicyError):
        await store.add("allow", "not a domain")


async def test_queue_status_and_storage_stats(server, admin):
    alice = await server.user("alice")
    r = await server.http.post("/v1/queues", headers=alice.headers)
    queue_id = r.json()["queue_id"]
    for i in range(3):
        r = await server.http.post(
            f"/v1/queues/{queue_id}/messages", content=b"m%d" % i, headers={**alice.headers, **MLS}
        )
        assert r.status_code in (200, 201, 202), r.text
    status = {q.kind: q for q in await admin.queue_status()}
    assert status["group"].depth == 3 and status["group"].queues == 1
    assert status["group"].oldest_age_seconds is not None
    assert status["direct"].depth == 0 and status["direct"].oldest_age_seconds is None
    assert queue_id not in repr(status)
    stats = await admin.storage_stats()
    assert stats.rows["users"] == 1 and stats.rows["queue_messages"] == 3
    assert stats.database_bytes > 0
    assert stats.engine in ("sqlite", "postgresql")
