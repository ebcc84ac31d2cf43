"""Authentication-Service flows across two real homeservers (a.test and b.test: separate
processes, separate databases (SQLite, and PostgreSQL when ROOST_TEST_POSTGRES_URL is set),
loopback ports, open federation policy).

Clients talk only to their own homeserver; discovery, AS certificates, connections, KeyPackage
claims and direct messages for a user of the other domain are forwarded by it (docs/federation.md).
"""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import quote

import httpx
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from roost.client import Groups, RoostClient
from roost.client.credentials import verify_client_credential
from roost.client.errors import CredentialError, RoostError
from roost.client.models import DirectEvent
from roost.protocol.base64url import b64u
from roost.server.auth.ca import CertificateAuthority
from roost.server.config import load_config
from roost.server.federation import signing
from roost.server.federation.identity import SigningKey
from roost.server.federation.tables import fed_keys
from roost.server.store import Database
from tests.integration.conftest import PASSWORD, unique_name
from tests.integration.test_cli import Cli

from ..e2e.helpers import Member, sync_until
from .harness import Federation, Homeserver

A, B = "a.test", "b.test"
EVENT_TIMEOUT = 30.0


async def wait_event(
    client: RoostClient, kind: str, connection_id: str | None = None
) -> DirectEvent:
    """The first ``kind`` event (for ``connection_id``) in the client's direct queue."""
    deadline = time.monotonic() + EVENT_TIMEOUT
    while True:
        page = await client.fetch_direct(0)
        for e in page.events:
            if e.type == kind and (connection_id is None or e.connection_id == connection_id):
                return e
        if time.monotonic() > deadline:
            raise AssertionError(f"no {kind} event for {client.user_id}: {page.events}")
        await asyncio.sleep(0.2)


async def expect_error(status: int, code: str, call) -> RoostError:  # type: ignore[no-untyped-def]
    with pytest.raises(RoostError) as info:
        await call
    assert (info.value.status, info.value.code) == (status, code), info.value
    return info.value


# ---- a homeserver acting on its own (a compromised or buggy peer) --------------------------


async def signing_key_of(server: Homeserver) -> SigningKey:
    """The server's current federation signing key, read from its database."""
    db = Database(load_config(env=server.env).sqlalchemy_url)
    try:
        async with db.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(fed_keys.c.key_id, fed_keys.c.private_key)
                    .where(fed_keys.c.retired_at.is_(None))
                    .order_by(fed_keys.c.created_at.desc())
                    .limit(1)
                )
            ).one()
    finally:
        await db.dispose()
    key = Ed25519PrivateKey.from_private_bytes(row.private_key)
    return SigningKey(row.key_id, key, key.public_key().public_bytes_raw())


async def signed_request(
    origin: Homeserver,
    dest: Homeserver,
    method: str,
    path: str,
    *,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> httpx.Response:
    """A request signed with ``origin``'s real key, as ``origin`` itself would send it."""
    url = httpx.URL(dest.url + path, params=params)
    wire = {k.lower(): v for k, v in (headers or {}).items()}
    wire.update(
        {
            "content-digest": signing.content_digest(body),
            "roost-origin": origin.domain,
            "roost-destination": dest.domain,
        }
    )
    if body:
        wire["content-type"] = "application/json"
    target = signing.Target(method, url.raw_path.split(b"?", 1)[0].decode(), url.query.decode())
    key = await signing_key_of(origin)
    wire.update(signing.sign(key, target, wire, created=int(time.time())))
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.request(method, url, content=body, headers=wire)


# ---- discovery and credentials --------------------------------------------------------------


async def test_discovery_of_a_remote_user_goes_through_the_home_server(fed: Federation) -> None:
    alice = await fed.users(A).new("alice")
    bob = await fed.users(B).new("bob", discoverable=True, display_name="Bob B")

    found = await alice.lookup_user(bob.user_id)
    assert (found.user_id, found.user_uuid, found.display_name) == (
        bob.user_id,
        bob.state.user_uuid,
        "Bob B",
    )
    [client] = await alice.user_clients(bob.user_id)
    assert client.client_id == bob.client_id
    assert client.signature_key == bob.signature_key
    # Without a domain the directory search stays local: b's users are not listed by a.
    assert (await alice.search_users(bob.user_id.split("@")[0])).users == ()

    missing = f"nobody-{int(time.time() * 1000)}@{B}"
    await expect_error(404, "user_not_found", alice.lookup_user(missing))
    await expect_error(404, "user_not_found", alice.user_clients(missing))
    # Not a domain name (a port, a path): nobody's, and nothing is sent anywhere.
    for odd in ("bob@127.0.0.1:22", "bob@b.test%2Fadmin"):
        await expect_error(404, "user_not_found", alice.lookup_user(odd))


async def test_remote_credentials_verify_against_their_domains_as_certificate(
    fed: Federation,
) -> None:
    alice = await fed.users(A).new("alice")
    bob = await fed.users(B).new("bob")

    b_cert = httpx.get(fed[B].url + "/v1/as/certificate", timeout=10).content
    assert await alice.as_certificate(B) == b_cert
    assert alice.state.remote_as_certificates[B] == b_cert  # cached in the client's state
    assert await alice.as_certificate(A) == alice.state.as_certificate != b_cert

    verified = await alice.verify_client(bob.client_id, bob.signature_key)
    assert (verified.client_id, verified.signature_key) == (bob.client_id, bob.signature_key)

    # Same client id and key, but issued by another CA that calls itself b.test: refused.
    forger = CertificateAuthority.generate(B)
    forged = forger.issue_client_certificate(bob.client_id, 1, bob.signature_key, 30)
    chain = [forged, forger.certificate_der]
    verify_client_credential(chain, forger.certificate_der, client_id=bob.client_id)  # well-formed
    with pytest.raises(CredentialError):
        await alice.verify_credential(chain, client_id=bob.client_id)
    # Bob's real chain does not pass for another client id either.
    with pytest.raises(CredentialError):
        await alice.verify_credential(bob.state.credential_chain, client_id=alice.client_id)


# ---- connections ----------------------------------------------------------------------------


async def test_connection_request_and_accept_across_domains(fed: Federation) -> None:
    alice = await fed.users(A).new("alice", keypackages=3)
    bob = await fed.users(B).new("bob", keypackages=3)
    ga, gb = Groups(alice), Groups(bob)

    conn, gid = await ga.request_connection(bob.user_id)
    assert (conn.requester, conn.responder, conn.state) == (alice.user_id, bob.user_id, "pending")
    assert gid.endswith(b"@" + A.encode())  # on the requester's DS

    request = await wait_event(bob, "connection_request", conn.connection_id)
    assert request.sender == alice.user_id
    [seen] = await bob.connections()
    assert (seen.connection_id, seen.requester, seen.state) == (
        conn.connection_id,
        alice.user_id,
        "pending",
    )

    accepted, joined = await gb.accept_connection(conn.connection_id)
    assert accepted.state == "accepted"
    assert joined is not None and (joined.kind, joined.group_id) == ("joined", gid)
    assert bob.state.remote_as_certificates[A] == alice.state.as_certificate
    assert [s.group_id for s in await gb.list()] == [gid]  # a.test's DS, through b.test

    answer = await wait_event(alice, "connection_accepted", conn.connection_id)
    assert answer.sender == bob.user_id
    [mine] = await alice.connections()
    assert mine.state == "accepted"
    assert [s.group_id for s in await ga.list()] == [gid]

    # Both talk in the connection's group: bob's send is forwarded to a.test, alice's reply
    # reaches bob's queue on b.test through the outbox.
    await gb.send(gid, "hi alice")
    got = await sync_until(Member(alice, ga), lambda e: e.kind == "message", EVENT_TIMEOUT)
    assert (got.group_id, got.message, got.sender) == (gid, "hi alice", bob.client_id)
    await ga.send(gid, "hi bob")
    got = await sync_until(Member(bob, gb), lambda e: e.kind == "message", EVENT_TIMEOUT)
    assert (got.group_id, got.message, got.sender) == (gid, "hi bob", alice.client_id)

    # Connected: KeyPackages of the other side can be claimed, in both directions.
    assert len(await alice.claim_key_packages(bob.user_id)) == 1
    assert len(await bob.claim_key_packages(alice.user_id)) == 1
    # Opening again while accepted is refused on the requester's server.
    await expect_error(409, "connection_exists", alice.open_connection(bob.user_id))


async def test_connection_request_from_b_rejected_on_a(fed: Federation) -> None:
    carol = await fed.users(B).new("carol", keypackages=2)
    dave = await fed.users(A).new("dave", keypackages=2)

    conn = await carol.open_connection(dave.user_id)
    assert conn.state == "opening"
    conn = await carol.send_connection_request(conn.connection_id, b"hello dave")
    request = await wait_event(dave, "connection_request", conn.connection_id)
    assert (request.sender, request.payload) == (carol.user_id, b"hello dave")

    rejected = await dave.reject_connection(conn.connection_id, b"no thanks")
    assert rejected.state == "rejected"
    answer = await wait_event(carol, "connection_rejected", conn.connection_id)
    assert (answer.sender, answer.payload) == (dave.user_id, b"no thanks")
    [mine] = await carol.connections()
    assert mine.state == "rejected"

    # Rejected: no claim and no direct message; a new request may be opened.
    await expect_error(403, "no_connection", carol.claim_key_packages(dave.user_id))
    await expect_error(403, "no_connection", carol.send_direct(dave.user_id, b"psst"))
    again = await carol.open_connection(dave.user_id)
    assert again.state == "opening" and again.connection_id != conn.connection_id


async def test_only_the_responder_answers_and_only_once(fed: Federation) -> None:
    alice = await fed.users(A).new("alice")
    bob = await fed.users(B).new("bob")
    conn = await alice.open_connection(bob.user_id)
    # Not yet requested: bob's server has it as opening.
    await expect_error(409, "invalid_state", bob.accept_connection(conn.connection_id))
    await alice.send_connection_request(conn.connection_id, b"hi")
    await wait_event(bob, "connection_request", conn.connection_id)
    await expect_error(403, "forbidden", alice.accept_connection(conn.connection_id))
    await bob.accept_connection(conn.connection_id)
    await expect_error(409, "invalid_state", bob.reject_connection(conn.connection_id))


# ---- KeyPackage claims ----------------------------------------------------------------------


async def test_claim_rule_holds_on_both_servers(fed: Federation) -> None:
    alice = await fed.users(A).new("alice")
    # More ordinary packages than the reserve kept from users bob has not accepted.
    bob = await fed.users(B).new("bob", keypackages=8)

    # No connection: a refuses without asking b.
    await expect_error(403, "no_connection", alice.claim_key_packages(bob.user_id))
    # b refuses too, even when a (its real key) asks on alice's behalf.
    path = f"/federation/v1/users/{quote(bob.user_id, safe='@')}/keypackages/claim"
    claim_as_a = {"Roost-Client": alice.client_id, "Roost-User-Uuid": alice.state.user_uuid}
    r = await signed_request(fed[A], fed[B], "POST", path, headers=claim_as_a)
    assert (r.status_code, r.json()["code"]) == (403, "no_connection")
    # A server speaks only for its own users.
    carol = await fed.users(B).new("carol")
    r = await signed_request(
        fed[A], fed[B], "POST", path, headers={"Roost-Client": carol.client_id}
    )
    assert (r.status_code, r.json()["code"]) == (403, "forbidden")

    # An opening request allows exactly one claim: the same bytes bob published.
    await alice.open_connection(bob.user_id)
    [kp] = await alice.claim_key_packages(bob.user_id)
    ref = bob.cs.key_package_ref(kp.encode()).hex()
    assert ref in bob.state.keypackages
    await expect_error(403, "no_connection", alice.claim_key_packages(bob.user_id))
    # ... and b enforces the one claim itself, whatever a says.
    r = await signed_request(fed[A], fed[B], "POST", path, headers=claim_as_a)
    assert (r.status_code, r.json()["code"]) == (403, "no_connection")
    # Nothing was handed out twice: bob has 7 left (one claimed, the last-resort kept).
    assert (await bob.key_package_count()).count == 7


async def test_a_remote_claim_that_finds_nothing_keeps_the_one_claim(fed: Federation) -> None:
    """bob has published nothing: the claim under alice's opening request gets nothing and
    spends nothing, on either server; once bob publishes, it gets his package."""
    alice = await fed.users(A).new("alice")
    bob = await fed.users(B).new("bob")
    await alice.open_connection(bob.user_id)
    assert await alice.claim_key_packages(bob.user_id) == []
    await bob.publish_key_packages(8)
    [kp] = await alice.claim_key_packages(bob.user_id)
    assert bob.cs.key_package_ref(kp.encode()).hex() in bob.state.keypackages
    await expect_error(403, "no_connection", alice.claim_key_packages(bob.user_id))


async def test_a_peer_cannot_report_a_uuid_of_another_user(fed: Federation) -> None:
    bob = await fed.users(B).new("bob")
    carol = await fed.users(B).new("carol")
    body = json.dumps(
        {
            "connection_id": "0d6c2b59-3f57-4d53-9c38-3f0b4c1b6f10",
            "requester": f"mallory@{A}",
            "requester_uuid": carol.state.user_uuid,  # a local user of b
            "responder": bob.user_id,
        }
    ).encode()
    r = await signed_request(fed[A], fed[B], "POST", "/federation/v1/connections", body=body)
    assert (r.status_code, r.json()["code"]) == (403, "forbidden")
    impostor = json.loads(body) | {"requester": carol.user_id}
    r = await signed_request(
        fed[A], fed[B], "POST", "/federation/v1/connections", body=json.dumps(impostor).encode()
    )
    assert (r.status_code, r.json()["code"]) == (403, "forbidden")
    assert await bob.connections() == []


# ---- direct messages ------------------------------------------------------------------------


async def test_direct_message_across_domains(fed: Federation) -> None:
    alice = await fed.users(A).new("alice")
    bob = await fed.users(B).new("bob")
    await expect_error(403, "no_connection", alice.send_direct(bob.user_id, b"too early"))

    conn = await alice.open_connection(bob.user_id)
    await alice.send_connection_request(conn.connection_id, b"hi")
    await wait_event(bob, "connection_request", conn.connection_id)
    await bob.accept_connection(conn.connection_id)
    await wait_event(alice, "connection_accepted", conn.connection_id)

    await alice.send_direct(bob.user_id, b"\x00welcome-bytes\xff")
    message = await wait_event(bob, "message")
    assert (message.sender, message.payload) == (alice.user_id, b"\x00welcome-bytes\xff")
    await bob.send_direct(alice.user_id, b"back")
    reply = await wait_event(alice, "message")
    assert (reply.sender, reply.payload) == (bob.user_id, b"back")


# ---- policy and availability ----------------------------------------------------------------


async def test_blocked_domain_is_refused_to_the_client(fed: Federation) -> None:
    alice = await fed.users(A).new("alice")
    bob = await fed.users(B).new("bob", keypackages=2)
    fed.policy(A, "open", block=[B])
    fed.wait_policy()
    try:
        await expect_error(403, "federation_refused", alice.lookup_user(bob.user_id))
        await expect_error(403, "federation_refused", alice.user_clients(bob.user_id))
        await expect_error(403, "federation_refused", alice.as_certificate(B))
        await expect_error(403, "federation_refused", alice.open_connection(bob.user_id))
        assert await alice.connections() == []
    finally:
        fed.policy(A, "open")
    # b blocking a: a's requests are refused by b, and the client hears it from its server.
    fed.policy(B, "open", block=[A])
    fed.wait_policy()
    try:
        await expect_error(403, "federation_refused", alice.lookup_user(bob.user_id))
    finally:
        fed.policy(B, "open")
        fed.wait_policy()
    assert (await alice.lookup_user(bob.user_id)).user_id == bob.user_id


async def test_remote_down_is_a_502_and_nothing_is_recorded(fed: Federation) -> None:
    alice = await fed.users(A).new("alice")
    bob = await fed.users(B).new("bob", keypackages=2)
    fed.stop(B)
    try:
        await expect_error(502, "federation_unavailable", alice.lookup_user(bob.user_id))
        await expect_error(502, "federation_unavailable", alice.open_connection(bob.user_id))
        assert await alice.connections() == []
    finally:
        fed.start(B)
    conn = await alice.open_connection(bob.user_id)
    assert conn.state == "opening"


# ---- the command line, with user ids of the other domain ------------------------------------


def test_cli_with_a_remote_user(pair: Federation, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ROOST_PASSWORD", PASSWORD)
    alice = Cli(pair[A].url, tmp_path / "alice")
    bob = Cli(pair[B].url, tmp_path / "bob")
    a = alice.run("register", unique_name("ca"), "--keypackages", "2")
    b = bob.run("register", unique_name("cb"), "--keypackages", "2")

    assert alice.run("lookup", b["user_id"])["user_id"] == b["user_id"]
    assert alice.run("verify", b["client_id"])["client_id"] == b["client_id"]
    assert alice.run("keypackages", "claim", b["user_id"], ok=False)["error"] == "no_connection"

    conn = alice.run("connections", "request", b["user_id"])
    assert conn["state"] == "pending" and conn["group_id"]
    deadline = time.monotonic() + EVENT_TIMEOUT
    while not (events := bob.run("queue", "fetch")["events"]):
        assert time.monotonic() < deadline, "the request did not reach bob"
        time.sleep(0.2)
    assert [(e["type"], e["connection_id"]) for e in events] == [
        ("connection_request", conn["connection_id"])
    ]
    accepted = bob.run("connections", "accept", conn["connection_id"])
    assert (accepted["state"], accepted["group_id"]) == ("accepted", conn["group_id"])
    assert [g["group_id"] for g in bob.run("group", "list")] == [conn["group_id"]]
    bob.run("group", "send", conn["group_id"], "hi", "alice")
    deadline = time.monotonic() + EVENT_TIMEOUT
    got: list[dict] = []
    while not [e for e in got if e["kind"] == "message"]:
        assert time.monotonic() < deadline, f"bob's message did not reach alice: {got}"
        got += alice.run("group", "sync")
        time.sleep(0.2)
    assert [e["data"] for e in got if e["kind"] == "message"] == [b64u(b"hi alice")]
    assert len(bob.run("keypackages", "claim", a["user_id"])["key_package_refs"]) == 1
