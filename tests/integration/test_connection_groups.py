"""A connection is established via a two-user MLS group on the requester's Delivery Service:
the request carries its Welcome, accepting joins it, and both users talk in it at once; a
rejected request's group is deleted by the requester's client."""

from __future__ import annotations

import asyncio

import pytest

from roost.client import Groups, RoostError
from tests.integration.conftest import ENGINES, PASSWORD, Users, _start

HELD_LIMIT = 3


@pytest.fixture(scope="module", params=ENGINES)
def held_limit_server(request, tmp_path_factory):
    srv = _start(
        request,
        tmp_path_factory,
        "roost-held",
        {"ROOST_LIMITS_MAX_HELD_PER_LEAF": str(HELD_LIMIT)},
    )
    yield srv
    srv.stop()


async def test_accepted_connection_is_a_group_both_users_talk_in(users):
    alice = await users.new("alice", keypackages=2)
    bob = await users.new("bob", keypackages=2)
    ga, gb = Groups(alice), Groups(bob)

    conn, gid = await ga.request_connection(bob.user_id)
    assert conn.state == "pending"
    # The DS added bob's client under the request but delivered no Welcome: the request
    # carries it, and nothing makes bob a member before he accepts.
    assert [e.type for e in (await bob.fetch_direct(0)).events] == ["connection_request"]
    assert await gb.sync() == []  # keeps the request's Welcome, acks the event
    assert await gb.list() == []

    accepted, joined = await gb.accept_connection(conn.connection_id)
    assert accepted.state == "accepted"
    assert joined is not None and (joined.kind, joined.group_id) == ("joined", gid)
    for g in (ga, gb):
        [summary] = await g.list()
        assert summary.group_id == gid and summary.my_leaf is not None
        assert summary.roles == {alice.user_id: "admin"}

    # The responder talks at once; the requester sees the accept, reads and answers.
    await gb.send(gid, "hi alice")
    events = await ga.sync()
    assert [(e.kind, e.group_id) for e in events] == [("connected", gid), ("message", gid)]
    assert events[1].message == "hi alice" and events[1].sender == bob.client_id
    await ga.send(gid, "hi bob")
    [reply] = await gb.sync()
    assert (reply.kind, reply.message, reply.sender) == ("message", "hi bob", alice.client_id)
    assert ga.group(gid).epoch_authenticator == gb.group(gid).epoch_authenticator


async def test_every_client_of_the_responder_joins(users):
    """The request adds each of bob's clients; when one accepts, the others join on their
    next sync (the answer reaches bob's own direct queue too) and read the conversation."""
    alice = await users.new("alice", keypackages=2)
    bob = await users.new("bob", password=PASSWORD, keypackages=2)
    phone = await users.second_client(bob, PASSWORD)
    await phone.publish_key_packages(2)
    ga, gb, gp = Groups(alice), Groups(bob), Groups(phone)
    conn, gid = await ga.request_connection(bob.user_id)
    assert len(ga.group(gid).roster()) == 3  # alice plus both of bob's clients
    assert await gp.sync() == []  # the phone keeps the request's Welcome

    _, joined = await gb.accept_connection(conn.connection_id)  # bob had not synced
    assert joined is not None and joined.kind == "joined"
    assert await gb.sync() == []  # neither the request nor the answer joins bob again
    await ga.send(gid, "hello both")
    [phone_joined, msg] = await gp.sync()
    assert (phone_joined.kind, phone_joined.group_id) == ("joined", gid)
    assert (msg.kind, msg.message) == ("message", "hello both")
    [msg] = await gb.sync()
    assert (msg.kind, msg.message) == ("message", "hello both")
    assert [s.group_id for s in await gp.list()] == [gid]
    epochs = {g.group(gid).epoch_authenticator for g in (ga, gb, gp)}
    assert len(epochs) == 1


async def test_rejected_request_leaves_no_group(users):
    alice = await users.new("alice", keypackages=2)
    bob = await users.new("bob", keypackages=2)
    ga, gb = Groups(alice), Groups(bob)
    conn, gid = await ga.request_connection(bob.user_id)
    await gb.sync()

    rejected = await gb.reject_connection(conn.connection_id, reply=b"no thanks")
    assert rejected.state == "rejected"
    # Alice's client sees the answer and deletes the group (its members, alice included,
    # get the DS's group_deleted notice).
    told, notice = await ga.sync()
    assert [(e.kind, e.group_id) for e in (told, notice)] == [("removed", gid), ("notice", gid)]
    assert "rejected by " + bob.user_id in told.text
    assert await ga.list() == [] and await gb.list() == []
    assert ga.local_group_ids() == [] and gb.local_group_ids() == []
    with pytest.raises(RoostError) as e:
        await ga.info(gid)
    assert (e.value.status, e.value.code) == (404, "group_not_found")
    # Accepting is over too; the request's Welcome was dropped with the answer.
    with pytest.raises(RoostError) as e:
        await gb.accept_connection(conn.connection_id)
    assert e.value.code == "invalid_state"


async def test_only_an_open_request_admits_the_add(users):
    """The DS's Add rule admits the responder only while the committer's request is open:
    after a rejection, adding the same claimed KeyPackage again is refused."""
    alice = await users.new("alice", keypackages=2)
    bob = await users.new("bob", keypackages=2)
    ga, gb = Groups(alice), Groups(bob)
    conn = await alice.open_connection(bob.user_id)
    kps = await alice.claim_key_packages(bob.user_id)
    await alice.send_connection_request(conn.connection_id, b"hello")
    await gb.reject_connection(conn.connection_id)
    group = await ga.create()
    with pytest.raises(RoostError) as e:
        await ga._commit(group.group_id, lambda g: g.commit(add=kps))
    assert (e.value.status, e.value.code) == (403, "no_connection")


async def test_request_needs_key_packages(users):
    alice = await users.new("alice")
    bob = await users.new("bob")  # published nothing
    with pytest.raises(RoostError) as e:
        await Groups(alice).request_connection(bob.user_id)
    assert e.value.code == "no_key_packages"
    assert await Groups(alice).list() == []


async def test_a_request_that_found_no_key_packages_goes_through_once_they_are_published(users):
    """The first try opens the connection but finds nothing to claim; that spends nothing.
    When bob has published, asking again resumes the same request instead of being refused
    as a second one, and bob can accept it."""
    alice = await users.new("alice")
    bob = await users.new("bob")  # published nothing yet
    ga, gb = Groups(alice), Groups(bob)
    with pytest.raises(RoostError) as e:
        await ga.request_connection(bob.user_id)
    assert e.value.code == "no_key_packages"
    [opening] = await alice.connections()
    assert opening.state == "opening"

    await bob.publish_key_packages(2)
    conn, gid = await ga.request_connection(bob.user_id.upper())
    assert (conn.connection_id, conn.state) == (opening.connection_id, "pending")
    assert await gb.sync() == []
    accepted, joined = await gb.accept_connection(conn.connection_id)
    assert accepted.state == "accepted"
    assert joined is not None and joined.group_id == gid
    await gb.send(gid, "hi alice")
    events = await ga.sync()
    assert [(ev.kind, ev.group_id) for ev in events] == [("connected", gid), ("message", gid)]
    assert events[1].message == "hi alice"


async def test_a_request_the_other_user_already_made_is_answered_not_repeated(users):
    alice = await users.new("alice", keypackages=2)
    bob = await users.new("bob", keypackages=2)
    conn, _ = await Groups(bob).request_connection(alice.user_id)
    with pytest.raises(RoostError) as e:
        await Groups(alice).request_connection(bob.user_id)
    assert (e.value.status, e.value.code) == (409, "connection_exists")
    [theirs] = await alice.connections()
    assert (theirs.connection_id, theirs.state) == (conn.connection_id, "pending")


async def test_welcome_for_someone_else_is_refused(users):
    alice = await users.new("alice", keypackages=2)
    bob = await users.new("bob", keypackages=2)
    carol = await users.new("carol", keypackages=2)
    conn, _ = await Groups(alice).request_connection(bob.user_id)
    [event] = (await bob.fetch_direct()).events
    with pytest.raises(RoostError) as e:
        carol.join_from_welcome(event.payload)
    assert e.value.code == "invalid_welcome"
    with pytest.raises(RoostError) as e:
        bob.join_from_welcome(b"\x00\x01\x00\x03garbage")
    assert e.value.code == "invalid_welcome"


async def test_items_held_for_an_unanswered_request_are_bounded(held_limit_server):
    """Until bob accepts, the DS holds what alice sends for his leaf, up to
    ``limits.max_held_per_leaf``; past it his leaf is dropped (the server proposes its
    removal) and accepting later finds the group without him."""
    users = Users(held_limit_server.url)
    try:
        alice = await users.new("alice", keypackages=2)
        bob = await users.new("bob", keypackages=2)
        ga, gb = Groups(alice), Groups(bob)
        conn, gid = await ga.request_connection(bob.user_id)
        for i in range(HELD_LIMIT + 1):
            await ga.send(gid, f"unanswered {i}")
        for _ in range(100):  # the server's Remove proposal follows within about a second
            if [e for e in await ga.sync() if e.kind == "proposal"]:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("no Remove proposal for bob's dropped leaf")
        await ga.commit_pending(gid)
        assert len(ga.group(gid).roster()) == 1

        _, joined = await gb.accept_connection(conn.connection_id)
        assert joined is not None and joined.kind == "welcome_failed"  # a stale Welcome
        assert await gb.list() == [] and gb.local_group_ids() == []
    finally:
        await users.aclose()
