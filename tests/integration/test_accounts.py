"""Registration, more clients, credential verification, discovery, display name, deletion."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from roost.client import CredentialError, RoostClient, RoostError
from roost.client.credentials import load_certificate
from roost.mls.credential import Credential

from .conftest import PASSWORD, unique_name


async def test_server_info_and_as_certificate(server):
    info = await RoostClient.server_info(server.url)
    assert info.home_domain == "localhost"
    assert 1 in info.cipher_suites
    async with httpx.AsyncClient(base_url=server.url) as http:
        der = (await http.get("/v1/as/certificate")).content
    # The PEM in the discovery document and the DER endpoint are the same certificate.
    assert load_certificate(info.as_certificate_pem) == load_certificate(der)


async def test_register_issues_a_verifiable_credential(users):
    alice = await users.new("alice", display_name="Alice")
    assert alice.user_id.endswith("@localhost")
    assert alice.client_id.startswith(alice.user_id + "/")
    me = await alice.me()
    assert (me.user_id, me.client_id, me.display_name) == (
        alice.user_id,
        alice.client_id,
        "Alice",
    )
    assert [c.client_id for c in me.clients] == [alice.client_id]
    assert me.clients[0].signature_key == alice.signature_key
    # Our own credential verifies against the AS, binding our id to our MLS key.
    v = await alice.verify_credential(
        alice.credential, client_id=alice.client_id, signature_key=alice.signature_key
    )
    assert v.signature_key == alice.signature_key


async def test_register_twice_and_bad_names(users, server):
    alice = await users.new("dup")
    name = alice.user_id.split("@")[0]
    with pytest.raises(RoostError) as e:
        await RoostClient.register(server.url, name.upper())  # names are case-insensitive
    assert (e.value.status, e.value.code) == (409, "user_exists")
    for bad in ("-leading-dash", "has space", "x" * 64, ""):
        with pytest.raises(RoostError) as e:
            await RoostClient.register(server.url, bad)
        assert e.value.status in (400, 422), bad


async def test_second_client_with_password(users, server):
    alice = await users.new("alice", password=PASSWORD)
    phone = await users.second_client(alice, PASSWORD)
    assert phone.user_id == alice.user_id and phone.client_id != alice.client_id
    me = await phone.me()
    assert {c.client_id for c in me.clients} == {alice.client_id, phone.client_id}
    with pytest.raises(RoostError) as e:
        await RoostClient.add_with_password(server.url, alice.user_id, "wrong password!")
    assert (e.value.status, e.value.code) == (403, "invalid_password")
    with pytest.raises(RoostError) as e:
        await RoostClient.add_with_password(server.url, "nobody-here@localhost", PASSWORD)
    assert (e.value.status, e.value.code) == (403, "invalid_password")
    assert len((await alice.me()).clients) == 2


async def test_second_client_approved_by_an_existing_client(users, server):
    alice = await users.new("alice")
    pending = await RoostClient.request_approval(server.url, alice.user_id, device_name="laptop")
    assert await pending.poll() is None
    # The approver sees the new device's key (to compare fingerprints out of band) under a
    # public request id; the device's own request id is its capability and is not shown.
    [req] = await alice.client_requests()
    assert (req.device_name, req.signature_key) == ("laptop", pending.signature_key)
    assert req.request_id != pending.request_id
    info = await alice.approve_client(req.request_id)
    laptop = users.track(await pending.wait(timeout=10, interval=0.1))
    assert laptop.client_id == info.client_id
    assert laptop.signature_key == info.signature_key
    assert (await laptop.me()).user_id == alice.user_id


async def test_rejected_client_request(users, server):
    alice = await users.new("alice")
    pending = await RoostClient.request_approval(server.url, alice.user_id)
    [req] = await alice.client_requests()
    await alice.reject_client(req.request_id)
    with pytest.raises(RoostError) as e:
        await pending.poll()
    assert e.value.code == "client_request_rejected"
    assert len((await alice.me()).clients) == 1


async def test_request_for_unknown_user(server):
    with pytest.raises(RoostError) as e:
        await RoostClient.request_approval(server.url, "ghost-user-xyz@localhost")
    assert (e.value.status, e.value.code) == (404, "user_not_found")


async def test_one_client_verifies_another(users):
    alice = await users.new("alice")
    bob = await users.new("bob")
    v = await alice.verify_client(bob.client_id, signature_key=bob.signature_key)
    assert v.client_id == bob.client_id and v.signature_key == bob.signature_key
    # The credential does not vouch for another key or another client id.
    with pytest.raises(CredentialError):
        await alice.verify_credential(
            bob.credential, client_id=bob.client_id, signature_key=alice.signature_key
        )
    with pytest.raises(CredentialError):
        await alice.verify_credential(bob.credential, client_id=alice.client_id)
    # A leaf signed by someone else than the AS is refused.
    forged = Credential.x509([alice.credential.certificates[1]])
    with pytest.raises(CredentialError):
        await alice.verify_credential(forged, client_id=bob.client_id)


async def test_remove_client_revokes_it_at_once(users):
    alice = await users.new("alice")
    phone = await users.second_client(alice)
    await phone.me()  # phone now holds a valid token
    token = phone.state.token
    await alice.remove_client(phone.client_uuid)
    async with httpx.AsyncClient(base_url=alice.state.server) as http:
        r = await http.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    with pytest.raises(RoostError) as e:
        await phone.me()  # a new token is refused too
    assert e.value.status == 401
    assert [c.client_id for c in (await alice.me()).clients] == [alice.client_id]
    with pytest.raises(RoostError) as e:
        await alice.remove_client(alice.client_uuid)
    assert (e.value.status, e.value.code) == (409, "last_client")


async def test_lookup_and_directory_search(users):
    alice = await users.new("alice", display_name="Alice Liddell", discoverable=True)
    hidden = await users.new("hidden", display_name="Alice Hidden")
    u = await hidden.lookup_user(alice.user_id)
    assert (u.user_id, u.display_name) == (alice.user_id, "Alice Liddell")
    assert (await alice.lookup_user(hidden.user_id)).user_id == hidden.user_id  # exact: always
    with pytest.raises(RoostError) as e:
        await alice.lookup_user(unique_name("ghost") + "@localhost")
    assert (e.value.status, e.value.code) == (404, "user_not_found")
    name = alice.user_id.split("@")[0]
    found = await hidden.search_users(name[:8])
    assert alice.user_id in {x.user_id for x in found.users}
    assert hidden.user_id not in {
        x.user_id for x in (await alice.search_users(hidden.user_id.split("@")[0])).users
    }
    await hidden.update_me(discoverable=True)
    assert hidden.user_id in {
        x.user_id for x in (await alice.search_users(hidden.user_id.split("@")[0])).users
    }


async def test_directory_pagination(users):
    tag = unique_name("p", 5)
    made = [await users.new(tag, discoverable=True) for _ in range(3)]
    seen: list[str] = []
    cursor = None
    while True:
        page = await made[0].search_users(tag, limit=2, cursor=cursor)
        seen += [u.user_id for u in page.users]
        if not page.next_cursor:
            break
        cursor = page.next_cursor
    assert seen == sorted(c.user_id for c in made)


async def test_display_name_change(users):
    alice = await users.new("alice", display_name="Alice")
    bob = await users.new("bob")
    assert (await alice.set_display_name("Alice B.")).display_name == "Alice B."
    assert (await bob.lookup_user(alice.user_id)).display_name == "Alice B."
    assert (await alice.set_display_name(None)).display_name is None
    with pytest.raises(RoostError) as e:
        await alice.set_display_name("x" * 129)
    assert e.value.status in (400, 422)
    assert (await alice.me()).display_name is None


async def test_account_deletion(users, server):
    alice, bob = await users.connected_pair(keypackages=3)
    phone = await users.second_client(alice)
    phone_queue = await phone.create_queue()
    queue = await alice.create_queue()
    await alice.enqueue(queue, b"x")
    await bob.send_direct(alice.user_id, b"for alice")
    alice_token = await alice.bearer_token()
    await alice.delete_account()

    with pytest.raises(RoostError) as e:
        await bob.lookup_user(alice.user_id)
    assert e.value.code == "user_not_found"
    # Every client is gone: old tokens stop working and no new ones are issued.
    async with httpx.AsyncClient(base_url=server.url) as http:
        r = await http.get("/v1/me", headers={"Authorization": f"Bearer {alice_token}"})
        assert r.status_code == 401
    for client in (alice, phone):
        with pytest.raises(RoostError) as e:
            await client.authenticate()
        assert e.value.status == 401
    # Queues, KeyPackages and the connection went with the account.
    for q in (queue, phone_queue):
        with pytest.raises(RoostError) as e:
            await bob.enqueue(q, b"y")
        assert e.value.code == "queue_not_found"
    for call in (bob.claim_key_packages(alice.user_id), bob.send_direct(alice.user_id, b"?")):
        with pytest.raises(RoostError) as e:
            await call
        assert e.value.code == "user_not_found"
    assert await bob.connections() == []
    assert alice.home is None or not alice.home.exists()  # local keys are forgotten too
    with pytest.raises(RoostError) as e:
        await RoostClient.register(server.url, alice.user_id.split("@")[0])
    assert e.value.code == "user_exists"  # user names are never reused


async def test_longest_name_registers(server):
    # 63 characters is the longest valid name; its client id exceeds X.509's 64-character
    # CommonName limit, which must not break issuing the credential.
    name = unique_name("l", 12).ljust(63, "x")
    client = await RoostClient.register(server.url, name)
    try:
        assert client.user_id == f"{name}@localhost"
        await client.verify_client(client.client_id, client.signature_key)
    finally:
        await client.aclose()


async def test_concurrent_registration_of_one_name(server):
    name = unique_name("race")
    results = await asyncio.gather(
        *(RoostClient.register(server.url, name) for _ in range(5)), return_exceptions=True
    )
    ok = [r for r in results if isinstance(r, RoostClient)]
    errors = [r for r in results if isinstance(r, RoostError)]
    assert len(ok) == 1 and len(errors) == 4
    assert {e.code for e in errors} == {"user_exists"}
    for c in ok:
        await c.aclose()
