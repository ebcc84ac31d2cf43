"""Groups spanning domains, the Delivery-Service half. Two real homeserver processes
(a.test, b.test; separate SQLite databases; open federation): the group lives on its creator's
DS (a.test); b.test's clients reach it only through their own server, which forwards signed;
a.test delivers to b.test's queues through the outbox."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from roost.client import RoostError
from roost.client.groups import group_path
from roost.protocol.commit_bundle import encode_commit_bundle

from ..e2e.helpers import Member, member, sync_until
from .harness import Federation
from .test_as_flows import signed_request

A, B, C = "a.test", "b.test", "c.test"
TIMEOUT = 30.0


async def new(fed: Federation, domain: str, prefix: str) -> Member:
    return member(await fed.users(domain).new(prefix, keypackages=3))


async def connect(a: Member, b: Member) -> None:
    """An accepted connection across domains (the answer travels through the outbox)."""
    conn = await a.client.open_connection(b.user_id)
    await a.client.send_connection_request(conn.connection_id, b"hello")
    deadline = time.monotonic() + TIMEOUT
    while True:  # the request reaches b's server through a's outbox
        try:
            await b.client.accept_connection(conn.connection_id)
            break
        except RoostError as e:
            if time.monotonic() > deadline or e.code not in ("invalid_state",):
                raise
        await asyncio.sleep(0.2)
    while True:
        [c] = [c for c in await a.client.connections() if c.connection_id == conn.connection_id]
        if c.state == "accepted":
            return
        assert time.monotonic() < deadline, c
        await asyncio.sleep(0.2)


async def message(m: Member, gid: bytes, text: str):  # type: ignore[no-untyped-def]
    return await sync_until(
        m, lambda e: e.kind == "message" and e.group_id == gid and e.message == text, TIMEOUT
    )


async def group_with_remote_member(fed: Federation) -> tuple[Member, Member, bytes]:
    """alice@a.test creates a group and invites bob@b.test, who joins from the Welcome."""
    alice, bob = await new(fed, A, "alice"), await new(fed, B, "bob")
    await connect(alice, bob)
    group = await alice.groups.create()
    gid = group.group_id
    assert gid.endswith(b"@" + A.encode())
    await alice.groups.invite(gid, [bob.user_id])  # bob's KeyPackage claimed through b.test
    joined = await sync_until(bob, lambda e: e.kind == "joined" and e.group_id == gid, TIMEOUT)
    assert joined.sender == alice.user_id
    return alice, bob, gid


async def test_remote_member_joins_talks_commits_and_is_removed(fed: Federation):
    alice, bob, gid = await group_with_remote_member(fed)
    info = await bob.groups.info(gid)  # forwarded by b.test to a.test's DS
    assert info.epoch == 1 and info.roles == {alice.user_id: "admin"}
    assert info.my_leaf is not None
    assert [s.group_id for s in await bob.groups.list()] == [gid]

    # Messages both ways: a.test's DS fans out to bob's queue on b.test (outbox), bob's sends
    # are forwarded to a.test.
    await alice.groups.send(gid, "hello bob")
    await message(bob, gid, "hello bob")
    await bob.groups.send(gid, "hello alice")
    got = await message(alice, gid, "hello alice")
    assert got.sender == bob.client_id

    # A commit from the remote member (self-update) is accepted by a.test's DS.
    await bob.groups.update(gid)
    await sync_until(alice, lambda e: e.kind == "commit" and e.epoch == 2, TIMEOUT)
    assert alice.groups.group(gid).epoch_authenticator == bob.groups.group(gid).epoch_authenticator

    # Roles hold for remote members: bob may not promote himself; alice may promote him.
    with pytest.raises(RoostError) as info_err:
        await bob.groups.set_role(gid, bob.user_id, "admin")
    assert (info_err.value.status, info_err.value.code) == (403, "role_required")
    await alice.groups.promote(gid, bob.user_id)
    assert (await bob.groups.info(gid)).roles[bob.user_id] == "admin"

    # Removal of the remote member: nothing further reaches it.
    await alice.groups.remove(gid, bob.user_id)
    await alice.groups.send(gid, "bob is gone")
    await asyncio.sleep(2.0)  # the outbox would have delivered by now
    events = await bob.sync()
    assert not [e for e in events if e.kind == "message"], events
    with pytest.raises(RoostError) as gone:
        await bob.groups.info(gid)
    assert (gone.value.status, gone.value.code) == (403, "not_member")
    assert await bob.groups.list() == []


async def test_remote_policy_attached_and_epoch_conflict_forwarded(fed: Federation):
    alice, bob, gid = await group_with_remote_member(fed)
    # bob's notification policy (set through b.test) travels with the items to its queue.
    await bob.groups.set_policy(gid, "mentions")
    await alice.groups.send(gid, "with a policy")
    got = await message(bob, gid, "with a policy")
    assert got.policy == "mentions"

    # A commit for an epoch that is gone: 409 epoch_conflict with the current epoch, as the
    # group's DS answered it.
    stale = bob.groups.group(gid)
    out = stale.commit(force_path=True)
    stale_epoch = stale.epoch
    await alice.groups.update(gid)
    with pytest.raises(RoostError) as conflict:
        await bob.client.request(
            "POST",
            f"/v1/groups/{group_path(gid)}/commits",
            content=encode_commit_bundle(out.commit, out.group_info, out.welcome),
            content_type="message/mls",
            headers=bob.groups.key_headers(gid),
        )
    stale.clear_pending_commit()
    assert (conflict.value.status, conflict.value.code) == (409, "epoch_conflict")
    assert conflict.value.problem["epoch"] == stale_epoch + 1

    # bob catches up (the winning commit reaches b.test) and the group carries on.
    await sync_until(bob, lambda e: e.kind == "commit" and e.epoch == stale_epoch + 1, TIMEOUT)
    await bob.groups.send(gid, "caught up")
    await message(alice, gid, "caught up")


async def test_remote_admin_adds_a_user_of_its_own_domain(fed: Federation):
    alice, bob, gid = await group_with_remote_member(fed)
    dave = await new(fed, B, "dave")
    conn = await bob.client.open_connection(dave.user_id)  # both on b.test: a local connection
    await bob.client.send_connection_request(conn.connection_id, b"hi")
    await dave.client.accept_connection(conn.connection_id)

    # A plain member may not add (the DS checks roles for remote committers too).
    with pytest.raises(RoostError) as refused:
        await bob.groups.invite(gid, [dave.user_id])
    assert (refused.value.status, refused.value.code) == (403, "role_required")

    await alice.groups.promote(gid, bob.user_id)
    await bob.groups.invite(gid, [dave.user_id])
    await sync_until(dave, lambda e: e.kind == "joined" and e.group_id == gid, TIMEOUT)
    await sync_until(alice, lambda e: e.kind == "commit" and dave.client_id in e.added, TIMEOUT)
    await dave.groups.send(gid, "dave here")
    await message(alice, gid, "dave here")
    await message(bob, gid, "dave here")

    # Deleting the group: the remote members get a.test's signed notice and verify it against
    # the group's external sender certified by a.test's AS.
    await alice.groups.delete(gid)
    for m in (bob, dave):
        got = await sync_until(m, lambda e: e.kind in ("notice", "rejected"), TIMEOUT)
        assert got.kind == "notice" and got.notice["type"] == "group_deleted", got
        assert gid not in m.groups.local_group_ids()


async def test_remote_client_joins_by_external_commit(fed: Federation):
    alice = await new(fed, A, "alice")
    group = await alice.groups.create(external_join=True)
    gid = group.group_id
    # No connection needed: carol@b.test reads the group through b.test and commits herself in
    # with a queue of b.test (checked there, stored by a.test's DS as a remote queue).
    carol = await new(fed, B, "carol")
    # The group id alone is not enough: a.test's DS asks for the key, through b.test.
    with pytest.raises(RoostError) as no_key:
        await carol.groups.join_external(gid)
    assert (no_key.value.status, no_key.value.code) == (403, "group_key_required")
    joined = await carol.groups.join_external(gid, key=alice.groups.group_key(gid))
    assert joined.epoch == 1
    assert carol.groups.group_key(gid) == alice.groups.group_key(gid)
    await sync_until(alice, lambda e: e.kind == "commit" and e.epoch == 1, TIMEOUT)
    assert alice.groups.leaves_of(gid, carol.user_id)
    await alice.groups.send(gid, "welcome carol")
    await message(carol, gid, "welcome carol")
    await carol.groups.send(gid, "thanks")
    await message(alice, gid, "thanks")
    # A foreign queue in an external commit is refused by carol's own server: without its
    # key, or with the key of erin's own queue.
    erin = await new(fed, B, "erin")
    foreign = await carol.client.create_queue()
    erins = await erin.client.new_queue()
    for headers in (None, erins.headers):
        with pytest.raises(RoostError) as err:
            await erin.client.request(
                "POST",
                f"/v1/groups/{group_path(gid)}/commits",
                params={"queue_id": foreign},
                content=b"\x00",
                content_type="message/mls",
                headers=headers,
            )
        assert (err.value.status, err.value.code) == (403, "forbidden")


async def test_remote_group_unknown_and_queue_not_owned(fed: Federation):
    alice, bob, gid = await group_with_remote_member(fed)
    # The queue a remote DS will deliver to must be one whose key the member holds, checked by
    # the member's own server: not another client's queue, with no key or with bob's own.
    other = await new(fed, B, "other")
    foreign = await other.client.create_queue()
    bobs = bob.groups.queue_of(gid)
    assert bobs is not None
    for headers in (None, bobs.headers):
        with pytest.raises(RoostError) as err:
            await bob.client.request(
                "PUT",
                f"/v1/groups/{group_path(gid)}/queue",
                json={"queue_id": foreign},
                headers=headers,
            )
        assert (err.value.status, err.value.code) == (403, "forbidden")
    # An unknown queue of b.test: b.test says so (the DS on a.test is not asked).
    with pytest.raises(RoostError) as err:
        await bob.client.request(
            "PUT",
            f"/v1/groups/{group_path(gid)}/queue",
            json={"queue_id": "A" * 22},
            headers=bobs.headers,
        )
    assert (err.value.status, err.value.code) == (404, "queue_not_found")
    # A group id of a.test that does not exist: a.test's DS answers 404, passed through.
    missing = b"A" * 22 + b"@" + A.encode()
    with pytest.raises(RoostError) as nf:
        await bob.client.request("GET", f"/v1/groups/{group_path(missing)}")
    assert (nf.value.status, nf.value.code) == (404, "group_not_found")


async def test_a_server_speaks_only_for_its_own_clients(fed: Federation):
    alice, bob, gid = await group_with_remote_member(fed)
    path = f"/federation/v1/groups/{group_path(gid)}"
    # b.test's real signature, but claiming a client of a.test: refused.
    as_alice = {"Roost-Client": alice.client_id, "Roost-User-Uuid": alice.client.state.user_uuid}
    r = await signed_request(fed[B], fed[A], "GET", path, headers=as_alice)
    assert (r.status_code, r.json()["code"]) == (403, "forbidden")
    # A b.test user id with the client uuid of a.test's alice: refused too (members are
    # matched by client uuid).
    forged = f"{bob.user_id}/{alice.client_id.rpartition('/')[2]}"
    r = await signed_request(
        fed[B],
        fed[A],
        "GET",
        path,
        headers={"Roost-Client": forged, "Roost-User-Uuid": bob.client.state.user_uuid},
    )
    assert (r.status_code, r.json()["code"]) == (403, "forbidden")
    # bob's own identity, as b.test forwards it: the group as bob sees it.
    as_bob = {
        "Roost-Client": bob.client_id,
        "Roost-User-Uuid": bob.client.state.user_uuid,
        **bob.groups.key_headers(gid),
    }
    r = await signed_request(fed[B], fed[A], "GET", path, headers=as_bob)
    assert r.status_code == 200 and r.json()["my_leaf"] == 1
    # Unsigned: refused before anything else.
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.get(fed[A].url + path, headers=as_bob)
    assert (r.status_code, r.json()["code"]) == (401, "invalid_signature")


@pytest.fixture(scope="module")
def trio(make_federation) -> Federation:
    return make_federation(domains=(A, B, C))


async def test_remote_admin_adds_a_user_of_a_third_domain(trio: Federation):
    try:
        alice, bob, gid = await group_with_remote_member(trio)
        carol = await new(trio, C, "carol")
        await connect(bob, carol)  # b.test <-> c.test: a.test keeps no row for it
        await alice.groups.promote(gid, bob.user_id)
        # The KeyPackage comes from c.test under its claim rule; a.test's DS takes the Add from
        # b.test's admin, and c.test checks bob <-> carol again when the Welcome arrives.
        await bob.groups.invite(gid, [carol.user_id])
        await sync_until(carol, lambda e: e.kind == "joined" and e.group_id == gid, TIMEOUT)
        await carol.groups.send(gid, "carol from c.test")
        await message(alice, gid, "carol from c.test")
        await message(bob, gid, "carol from c.test")
    finally:
        await trio.aclose_users()


def test_forwarder_tells_local_from_remote_group_ids():
    """The forwarder recognises this domain's groups by the tail of the path segment; domains
    differing in one character (also in the first one's high bits: "p" vs "0") are told apart."""
    import os
    import types

    from roost.protocol.base64url import b64u
    from roost.server.federation.group_forwarder import GroupForwarder

    services = types.SimpleNamespace(
        config=types.SimpleNamespace(home_domain=A), federation=object()
    )
    app = types.SimpleNamespace(state=types.SimpleNamespace(services=services))
    forwarder = GroupForwarder(None)  # type: ignore[arg-type]
    for domain in (A, B, "p.test", "0.test", "a.tesu", "aa.test", "a.tes", "a.test:8443"):
        for _ in range(20):
            gid = b64u(f"{b64u(os.urandom(16))}@{domain}".encode())
            scope = {"type": "http", "path": f"/v1/groups/{gid}/messages", "app": app}
            assert forwarder._remote_domain(scope) == (None if domain == A else domain)
    # Not a group id, or another route: never forwarded.
    for path in ("/v1/groups/bm90LWEtZ3JvdXA/messages", "/v1/groups", "/v1/me"):
        assert forwarder._remote_domain({"type": "http", "path": path, "app": app}) is None
