"""Connection request / accept / reject, with the requester told, and the claim rule."""

from __future__ import annotations

import pytest

from roost.client import RoostClient, RoostError


async def _events(client: RoostClient, after: int = 0):
    return (await client.fetch_direct(after)).events


async def test_request_and_accept(users):
    alice = await users.new("alice", keypackages=2)
    bob = await users.new("bob", keypackages=2)
    conn = await alice.open_connection(bob.user_id)
    assert (conn.state, conn.requester, conn.responder) == ("opening", alice.user_id, bob.user_id)
    # The request itself may claim the responder's KeyPackages once, to build the group.
    claimed = await alice.claim_key_packages(bob.user_id)
    assert len(claimed) == 1
    welcome = b"\x00\x01welcome-for-two-user-group"
    conn = await alice.send_connection_request(conn.connection_id, welcome)
    assert conn.state == "pending"
    with pytest.raises(RoostError) as e:
        await alice.claim_key_packages(bob.user_id)  # the single claim is used up
    assert (e.value.status, e.value.code) == (403, "no_connection")

    [event] = await _events(bob)
    assert event.type == "connection_request"
    assert (event.sender, event.connection_id, event.payload) == (
        alice.user_id,
        conn.connection_id,
        welcome,
    )
    assert [c.state for c in await bob.connections()] == ["pending"]

    accepted = await bob.accept_connection(conn.connection_id, b"reply")
    assert accepted.state == "accepted"
    [told] = await _events(alice)
    assert (told.type, told.sender, told.connection_id, told.payload) == (
        "connection_accepted",
        bob.user_id,
        conn.connection_id,
        b"reply",
    )
    # Now both sides may claim, and send direct messages (e.g. Welcomes for more clients).
    assert len(await alice.claim_key_packages(bob.user_id)) == 1
    assert len(await bob.claim_key_packages(alice.user_id)) == 1
    await bob.send_direct(alice.user_id, b"welcome-for-your-phone")
    events = await _events(alice, told.seq)
    assert [(e.type, e.sender, e.payload) for e in events] == [
        ("message", bob.user_id, b"welcome-for-your-phone")
    ]
    assert [c.state for c in await alice.connections()] == ["accepted"]


async def test_request_and_reject(users):
    alice = await users.new("alice", keypackages=2)
    bob = await users.new("bob", keypackages=2)
    conn = await alice.open_connection(bob.user_id)
    await alice.send_connection_request(conn.connection_id, b"hi")
    rejected = await bob.reject_connection(conn.connection_id)
    assert rejected.state == "rejected"
    [told] = await _events(alice)
    assert (told.type, told.sender, told.connection_id) == (
        "connection_rejected",
        bob.user_id,
        conn.connection_id,
    )
    for a, b in ((alice, bob), (bob, alice)):
        with pytest.raises(RoostError) as e:
            await a.claim_key_packages(b.user_id)
        assert (e.value.status, e.value.code) == (403, "no_connection")
    with pytest.raises(RoostError) as e:
        await alice.send_direct(bob.user_id, b"let me in")
    assert (e.value.status, e.value.code) == (403, "no_connection")
    # A rejected request may be retried.
    again = await alice.open_connection(bob.user_id)
    assert again.connection_id != conn.connection_id and again.state == "opening"


async def test_only_the_responder_answers(users):
    alice = await users.new("alice")
    bob = await users.new("bob")
    carol = await users.new("carol")
    conn = await alice.open_connection(bob.user_id)
    await alice.send_connection_request(conn.connection_id, b"hi")
    for client in (alice, carol):
        for answer in (client.accept_connection, client.reject_connection):
            with pytest.raises(RoostError) as e:
                await answer(conn.connection_id)
            assert e.value.status in (403, 404)
    assert [c.state for c in await bob.connections()] == ["pending"]
    assert await carol.connections() == []


async def test_connection_errors(users):
    alice = await users.new("alice")
    bob = await users.new("bob")
    with pytest.raises(RoostError) as e:
        await alice.open_connection(alice.user_id)
    assert (e.value.status, e.value.code) == (422, "invalid_target")
    with pytest.raises(RoostError) as e:
        await alice.open_connection("nobody-at-all@localhost")
    assert (e.value.status, e.value.code) == (404, "user_not_found")
    conn = await alice.open_connection(bob.user_id)
    for a, b in ((alice, bob), (bob, alice)):
        with pytest.raises(RoostError) as e:
            await a.open_connection(b.user_id)
        assert (e.value.status, e.value.code) == (409, "connection_exists")
    with pytest.raises(RoostError) as e:
        await bob.accept_connection(conn.connection_id)  # not requested yet
    assert (e.value.status, e.value.code) == (409, "invalid_state")
    with pytest.raises(RoostError) as e:
        await alice.send_connection_request("00000000-0000-0000-0000-000000000000", b"x")
    assert (e.value.status, e.value.code) == (404, "connection_not_found")
    await alice.send_connection_request(conn.connection_id, b"x")
    with pytest.raises(RoostError) as e:
        await alice.send_connection_request(conn.connection_id, b"x")
    assert (e.value.status, e.value.code) == (409, "invalid_state")
    assert len((await bob.fetch_direct()).events) == 1


async def test_claims_need_a_connection(users):
    alice = await users.new("alice", keypackages=2)
    bob = await users.new("bob", keypackages=2)
    with pytest.raises(RoostError) as e:
        await alice.claim_key_packages(bob.user_id)
    assert (e.value.status, e.value.code) == (403, "no_connection")
    assert (await bob.key_package_count()).count == 2  # nothing handed out
