"""A connection request carries the Welcome to a two-user MLS group; the responder's clients
join it with the keys of their published KeyPackages and can read what the requester sends."""

from __future__ import annotations

import pytest

from roost.client import Home, RoostClient, RoostError


async def test_connection_builds_a_working_two_user_group(users, server, tmp_path):
    alice = await users.new("alice", keypackages=2)
    bob = users.track(
        await RoostClient.register(server.url, "bob" + alice.user_id[5:15], home=Home(tmp_path))
    )
    phone = await users.second_client(bob)
    await bob.publish_key_packages(2)
    await phone.publish_key_packages(2)

    conn, group = await alice.request_connection(bob.user_id)
    assert conn.state == "pending"
    assert len(group.roster()) == 3  # alice plus both of bob's clients

    accepted, bob_group = await bob.accept_connection_request(conn.connection_id)
    assert accepted.state == "accepted" and bob_group is not None
    [event] = (await phone.fetch_direct()).events
    phone_group = phone.join_from_welcome(event.payload)
    for g in (bob_group, phone_group):
        assert (g.group_id, g.epoch) == (group.group_id, group.epoch)
        assert g.epoch_authenticator == group.epoch_authenticator
    # The group key schedule works end to end: a message from alice reaches both clients.
    await alice.send_direct(bob.user_id, group.encrypt(b"hello bob"))
    after = event.seq
    for client, g in ((bob, bob_group), (phone, phone_group)):
        [msg] = (await client.fetch_direct(after)).events
        received = g.process(msg.payload)
        assert (received.kind, received.data) == ("application", b"hello bob")
    # Bob's group state was saved in his home and loads again.
    again = bob.load_group(group.group_id)
    assert again.epoch_authenticator == group.epoch_authenticator


async def test_welcome_for_someone_else_is_refused(users):
    alice = await users.new("alice", keypackages=2)
    bob = await users.new("bob", keypackages=2)
    carol = await users.new("carol", keypackages=2)
    conn, _ = await alice.request_connection(bob.user_id)
    [event] = (await bob.fetch_direct()).events
    with pytest.raises(RoostError) as e:
        carol.join_from_welcome(event.payload)
    assert e.value.code == "invalid_welcome"
    with pytest.raises(RoostError) as e:
        bob.join_from_welcome(b"\x00\x01\x00\x03garbage")
    assert e.value.code == "invalid_welcome"


async def test_request_needs_key_packages(users):
    alice = await users.new("alice")
    bob = await users.new("bob")  # published nothing
    with pytest.raises(RoostError) as e:
        await alice.request_connection(bob.user_id)
    assert e.value.code == "no_key_packages"
