"""The DS's role rule for Adds, over ASGI on both engines: a plain member may add clients of
its own user (decided from the added leaf's verified credential), by commit or by a standalone
proposal that anyone then commits; Adds of another user's clients still need an admin."""

from __future__ import annotations

from roost.mls import Group
from roost.protocol.base64url import b64u

from .delivery_helpers import (
    add_members,
    connect,
    create_group,
    kp_bundle,
    member,
    post_commit,
    process_all,
    send,
)
from .helpers import MLS, add_client


async def _alice_and_bob(server):  # type: ignore[no-untyped-def]
    """alice (admin) and bob (a plain member) in a group at epoch 1."""
    http = server.http
    alice = await member(http, await server.user("alice"))
    bob = await member(http, await server.user("bob"))
    gid, r = await create_group(http, alice)
    assert r.status_code == 201, r.text
    await connect(http, alice.user, bob.user)
    assert (await add_members(http, alice, gid, [bob])).status_code == 201
    return http, gid, alice, bob


async def _propose(http, m, gid, proposal: bytes):  # type: ignore[no-untyped-def]
    return await http.post(
        f"/v1/groups/{b64u(gid)}/proposals", content=proposal, headers={**m.headers, **MLS}
    )


async def test_a_member_commits_an_add_of_its_own_new_client(server) -> None:  # type: ignore[no-untyped-def]
    http, gid, alice, bob = await _alice_and_bob(server)
    phone = await member(http, bob.user, await add_client(http, bob.user))
    r = await add_members(http, bob, gid, [phone])
    assert r.status_code == 201, r.text
    await process_all(http, alice)
    assert (await send(http, phone, gid, b"from the phone")).status_code == 201
    got = await process_all(http, alice)
    assert [g.data for g in got] == [b"from the phone"]
    r = await http.get(f"/v1/groups/{b64u(gid)}", headers=phone.headers)
    assert r.status_code == 200 and r.json()["roles"] == {alice.user.user_id: "admin"}


async def test_own_client_by_proposal_anyone_commits_it(server) -> None:  # type: ignore[no-untyped-def]
    http, gid, alice, bob = await _alice_and_bob(server)
    dave = await member(http, await server.user("dave"))
    await connect(http, bob.user, dave.user)
    # bob may not propose dave: another user
    r = await _propose(http, bob, gid, bob.group.propose_add(kp_bundle(dave).key_package))
    assert r.status_code == 403 and r.json()["code"] == "role_required"
    # his own new client he may
    phone = await member(http, bob.user, await add_client(http, bob.user))
    bundle = kp_bundle(phone)
    r = await _propose(http, bob, gid, bob.group.propose_add(bundle.key_package))
    assert r.status_code == 201, r.text
    # alice commits it by reference: the proposer (bob) is judged, and his own user is added
    await process_all(http, alice)
    out = alice.group.commit()
    r = await post_commit(http, alice, gid, out)
    assert r.status_code == 201, r.text
    alice.group.merge_pending_commit()
    phone.group = Group.join_from_welcome(out.welcome, bundle)
    assert phone.group.epoch_authenticator == alice.group.epoch_authenticator


async def test_a_member_cannot_add_another_users_client_with_its_own(server) -> None:  # type: ignore[no-untyped-def]
    http, gid, alice, bob = await _alice_and_bob(server)
    dave = await member(http, await server.user("dave"))
    await connect(http, bob.user, dave.user)
    phone = await member(http, bob.user, await add_client(http, bob.user))
    epoch = bob.group.epoch
    r = await add_members(http, bob, gid, [phone, dave])
    assert r.status_code == 403 and r.json()["code"] == "role_required"
    r = await http.get(f"/v1/groups/{b64u(gid)}", headers=alice.headers)
    assert r.json()["epoch"] == epoch  # nothing changed
