"""Claiming the KeyPackage of one given client (``POST /v1/users/{user}/clients/{client}/
keypackages/claim``), on both engines: the user claim's rule (own user, connected users, an
opening request's one claim), 404 for a client the user does not have, nothing else handed out."""

from __future__ import annotations

import uuid

from .helpers import add_client, batch, make_kp, publish, split_claim
from .test_server_keypackages import connect, count


async def claim_client(server, claimer, user_id: str, client_uuid: str, suite: int = 1):
    return await server.http.post(
        f"/v1/users/{user_id}/clients/{client_uuid}/keypackages/claim",
        params={"cipher_suite": suite},
        headers=claimer.headers,
    )


async def _publish(server, client, ordinary: int = 2) -> None:
    now = server.clock.now
    kps = [make_kp(client, now=now) for _ in range(ordinary)]
    kps.append(make_kp(client, last_resort=True, now=now))
    assert (await publish(server.http, client, batch(*kps))).status_code == 201


def _owner(kp) -> bytes:  # type: ignore[no-untyped-def]
    return kp.leaf_node.signature_key


async def test_own_user_claims_one_given_client(server):
    bob = await server.user("bob")
    phone = await add_client(server.http, bob)
    tablet = await add_client(server.http, bob)
    for c in (bob.client, phone, tablet):
        await _publish(server, c)
    r = await claim_client(server, bob, bob.user_id, phone.client_uuid)
    assert r.status_code == 200 and r.headers["content-type"] == "message/mls"
    (kp,) = split_claim(r.content)
    assert _owner(kp) == phone.sig_pub
    # only that client's packages were taken
    assert (await count(server, phone))["count"] == 2
    for c in (bob.client, tablet):
        assert (await server.http.get("/v1/keypackages/count", headers=c.headers)).json()[
            "count"
        ] == 3
    # the uuid is matched whatever its case
    r = await claim_client(server, bob, bob.user_id, tablet.client_uuid.upper())
    assert r.status_code == 200 and _owner(split_claim(r.content)[0]) == tablet.sig_pub


async def test_connected_user_claims_one_client_and_a_client_without_packages_gives_none(server):
    alice = await server.user("alice")
    bob = await server.user("bob")
    phone = await add_client(server.http, bob)
    await _publish(server, phone)
    await connect(server, alice, bob)
    r = await claim_client(server, alice, bob.user_id, phone.client_uuid)
    assert r.status_code == 200
    (kp,) = split_claim(r.content)
    assert _owner(kp) == phone.sig_pub
    # bob's first client published nothing: an empty vector, not an error
    r = await claim_client(server, alice, bob.user_id, bob.client.client_uuid)
    assert r.status_code == 200 and split_claim(r.content) == []
    # another suite: none either
    r = await claim_client(server, alice, bob.user_id, phone.client_uuid, suite=3)
    assert r.status_code == 200 and split_claim(r.content) == []


async def test_without_a_connection_403_and_unknown_clients_404(server):
    alice = await server.user("alice")
    bob = await server.user("bob")
    carol = await server.user("carol")
    await _publish(server, bob.client)
    before = await count(server, bob)

    r = await claim_client(server, alice, bob.user_id, bob.client.client_uuid)
    assert r.status_code == 403 and r.json()["code"] == "no_connection"
    # without a connection the answer says nothing about which clients exist
    r = await claim_client(server, alice, bob.user_id, str(uuid.uuid4()))
    assert r.status_code == 403 and r.json()["code"] == "no_connection"

    await connect(server, alice, bob)
    for unknown in (str(uuid.uuid4()), "not-a-uuid", carol.client.client_uuid):
        r = await claim_client(server, alice, bob.user_id, unknown)
        assert r.status_code == 404 and r.json()["code"] == "client_not_found", unknown
    r = await claim_client(server, alice, "ghost@localhost", bob.client.client_uuid)
    assert r.status_code == 404 and r.json()["code"] == "user_not_found"
    assert await count(server, bob) == before  # no refusal took anything


async def test_an_opening_request_keeps_its_one_claim_after_a_404(server):
    alice = await server.user("alice")
    bob = await server.user("bob")
    await _publish(server, bob.client)
    r = await server.http.post("/v1/connections", json={"to": bob.user_id}, headers=alice.headers)
    assert r.status_code == 201, r.text
    r = await claim_client(server, alice, bob.user_id, str(uuid.uuid4()))
    assert r.status_code == 404 and r.json()["code"] == "client_not_found"
    # the refused claim did not use up the opening request's one claim
    r = await claim_client(server, alice, bob.user_id, bob.client.client_uuid)
    assert r.status_code == 200 and len(split_claim(r.content)) == 1
    r = await claim_client(server, alice, bob.user_id, bob.client.client_uuid)
    assert r.status_code == 403 and r.json()["code"] == "no_connection"
