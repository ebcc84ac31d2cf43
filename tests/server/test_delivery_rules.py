"""Delivery Service rules over ASGI on both engines: one commit per epoch, roles, membership,
idempotence, joins, removal, deletion, server Removes and signed notices."""

from __future__ import annotations

import asyncio

import pytest

from roost.mls import Group
from roost.mls.constants import SenderType
from roost.mls.crypto.ciphersuite import get_cipher_suite
from roost.mls.framing import MLSMessage
from roost.protocol.base64url import b64u, unb64u
from roost.protocol.commit_bundle import encode_commit_bundle
from roost.protocol.group_state import decode_group_state
from roost.protocol.queue_item import ITEM_SERVER_NOTICE
from roost.protocol.signed_notice import verify_notice

from .delivery_helpers import (
    add_members,
    connect,
    create_group,
    fetch,
    member,
    post_commit,
    process_all,
    send,
    send_raw,
)
from .helpers import MLS, login


async def trio(server):  # type: ignore[no-untyped-def]
    """alice (admin) with bob and carol in a group at epoch 1 (all connected to alice)."""
    http = server.http
    alice = await member(http, await server.user("alice"))
    bob = await member(http, await server.user("bob"))
    carol = await member(http, await server.user("carol"))
    gid, r = await create_group(http, alice)
    assert r.status_code == 201, r.text
    await connect(http, alice.user, bob.user)
    await connect(http, alice.user, carol.user)
    r = await add_members(http, alice, gid, [bob, carol])
    assert r.status_code == 201, r.text
    return http, gid, alice, bob, carol


async def test_creation_checks(server) -> None:  # type: ignore[no-untyped-def]
    http = server.http
    alice = await member(http, await server.user("alice"))
    gid, r = await create_group(http, alice, with_server=False)
    assert r.status_code == 422 and r.json()["code"] == "missing_external_sender"
    _, r = await create_group(http, alice, group_id=b"x" * 22 + b"@elsewhere.example")
    assert r.status_code == 422 and r.json()["code"] == "invalid_group_id"
    gid, r = await create_group(http, alice)
    assert r.status_code == 201
    _, r = await create_group(http, alice, group_id=gid)
    assert r.status_code == 409 and r.json()["code"] == "group_exists"
    # someone else's queue cannot be used: bob's key does not open alice's queue
    bob = await member(http, await server.user("bob"))
    bob.queue_id = alice.queue_id
    _, r = await create_group(http, bob)
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    r = await http.post(
        "/v1/groups",
        params={"queue_id": alice.queue_id},
        content=b"\x00\x01",
        headers={**alice.queue_headers, **MLS},
    )
    assert r.status_code == 400 and r.json()["code"] == "malformed_mls"


async def test_one_commit_per_epoch(server) -> None:  # type: ignore[no-untyped-def]
    http, gid, alice, bob, carol = await trio(server)
    await process_all(http, bob)
    await process_all(http, carol)
    outs = [m.group.commit(force_path=True) for m in (alice, bob, carol)]
    rs = await asyncio.gather(
        *(post_commit(http, m, gid, o) for m, o in zip((alice, bob, carol), outs, strict=True))
    )
    codes = sorted(r.status_code for r in rs)
    assert codes == [201, 409, 409]
    for r in rs:
        if r.status_code == 409:
            assert r.json()["code"] == "epoch_conflict" and r.json()["epoch"] == 2
    winner = next(i for i, r in enumerate(rs) if r.status_code == 201)
    members = (alice, bob, carol)
    for i, m in enumerate(members):
        if i == winner:
            m.group.merge_pending_commit()
        else:
            m.group.clear_pending_commit()
            got = await process_all(http, m)
            assert [g.kind for g in got] == ["commit"]
    assert len({m.group.epoch_authenticator for m in members}) == 1
    # a stale commit (built for epoch 1) is refused with the current epoch
    r = await post_commit(http, alice, gid, outs[(winner + 1) % 3])
    assert r.status_code == 409 and r.json()["epoch"] == 2
    # the winner's retry of the identical commit gets the same answer
    again = await post_commit(http, members[winner], gid, outs[winner])
    assert again.status_code == 201 and again.json() == rs[winner].json()


async def test_roles_and_connections(server) -> None:  # type: ignore[no-untyped-def]
    http, gid, alice, bob, carol = await trio(server)
    for m in (bob, carol):
        await process_all(http, m)
    dave = await member(http, await server.user("dave"))
    await connect(http, bob.user, dave.user)
    r = await add_members(http, bob, gid, [dave])  # bob is no admin
    assert r.status_code == 403 and r.json()["code"] == "role_required"
    out = bob.group.commit(remove=[carol.group.leaf_index])
    r = await post_commit(http, bob, gid, out)
    assert r.status_code == 403 and r.json()["code"] == "role_required"
    bob.group.clear_pending_commit()
    # alice is admin but not connected to dave
    r = await add_members(http, alice, gid, [dave])
    assert r.status_code == 403 and r.json()["code"] == "no_connection"
    # role changes: only admins
    r = await http.put(
        f"/v1/groups/{b64u(gid)}/roles/carol@localhost", json={"role": "admin"}, headers=bob.headers
    )
    assert r.status_code == 403 and r.json()["code"] == "role_required"
    r = await http.put(
        f"/v1/groups/{b64u(gid)}/roles/bob@localhost", json={"role": "admin"}, headers=alice.headers
    )
    assert r.status_code == 204
    r = await http.put(
        f"/v1/groups/{b64u(gid)}/roles/dave@localhost",
        json={"role": "admin"},
        headers=alice.headers,
    )
    assert r.status_code == 404 and r.json()["code"] == "user_not_member"
    r = await add_members(http, bob, gid, [dave])  # now admin and connected
    assert r.status_code == 201, r.text
    info = (await http.get(f"/v1/groups/{b64u(gid)}", headers=dave.headers)).json()
    assert info["roles"] == {"alice@localhost": "admin", "bob@localhost": "admin"}
    # anyone may update itself
    await process_all(http, alice)
    await process_all(http, carol)
    out = carol.group.commit(force_path=True)
    r = await post_commit(http, carol, gid, out)
    assert r.status_code == 201, r.text


async def test_membership_and_idempotent_send(server) -> None:  # type: ignore[no-untyped-def]
    http, gid, alice, bob, carol = await trio(server)
    for m in (bob, carol):
        await process_all(http, m)
    r1 = await send(http, bob, gid, b"once", message_id="m-1")
    msg = bob.group.encrypt(b"twice?")
    r2 = await send_raw(http, bob, gid, msg, message_id="m-1")
    assert r1.status_code == r2.status_code == 201
    assert r1.json() == r2.json()
    got = await process_all(http, carol)
    assert [g.data for g in got] == [b"once"]
    # a stranger (not in the group) cannot send, even with a well-formed message
    eve = await member(http, await server.user("eve"))
    eve.group = alice.group
    r = await send_raw(http, eve, gid, alice.group.encrypt(b"x"))
    assert r.status_code == 403 and r.json()["code"] == "not_member"
    # handshakes are not application messages; garbage is 400; another group's id is refused
    out = alice.group.commit(force_path=True)
    r = await send_raw(http, alice, gid, out.commit)
    assert r.status_code == 422 and r.json()["code"] == "wrong_wire_format"
    alice.group.clear_pending_commit()
    r = await send_raw(http, alice, gid, b"\x00\x01\x00\x02garbage")
    assert r.status_code == 400
    r = await send_raw(http, alice, b"nope", alice.group.encrypt(b"x"))
    assert r.status_code == 422 and r.json()["code"] == "wrong_group"
    r = await http.post(
        f"/v1/groups/{b64u(gid)}/messages",
        content=alice.group.encrypt(b"x"),
        headers={**alice.headers, **MLS},
    )
    assert r.status_code == 400  # Roost-Message-Id is required


async def test_epoch_window(server) -> None:  # type: ignore[no-untyped-def]
    http, gid, alice, bob, carol = await trio(server)
    for m in (bob, carol):
        await process_all(http, m)
    old = bob.group.encrypt(b"epoch 1")
    for _ in range(2):
        out = alice.group.commit(force_path=True)
        assert (await post_commit(http, alice, gid, out)).status_code == 201
        alice.group.merge_pending_commit()
    r = await send_raw(http, bob, gid, old)
    assert r.status_code == 409 and r.json()["code"] == "epoch_too_old" and r.json()["epoch"] == 3


async def test_remove_and_leave(server) -> None:  # type: ignore[no-untyped-def]
    http, gid, alice, bob, carol = await trio(server)
    for m in (bob, carol):
        await process_all(http, m)
    carol_late = carol.group.encrypt(b"written before the removal")
    out = alice.group.commit(remove=[carol.group.leaf_index])
    r = await post_commit(http, alice, gid, out)
    assert r.status_code == 201, r.text
    alice.group.merge_pending_commit()
    assert await fetch(http, carol) == []  # not even the removing commit
    assert [g.kind for g in await process_all(http, bob)] == ["commit"]
    r = await send(http, bob, gid, b"after carol left")
    assert r.status_code == 201
    assert await fetch(http, carol) == []  # nothing further for the removed member
    r = await send_raw(http, carol, gid, carol_late)
    assert r.status_code == 403 and r.json()["code"] == "not_member"
    r = await http.get(f"/v1/groups/{b64u(gid)}/group-info", headers=carol.headers)
    assert r.status_code == 403
    # bob leaves: a Remove proposal for his own leaf, committed by alice
    proposal = bob.group.propose_remove(bob.group.leaf_index)
    r = await http.post(
        f"/v1/groups/{b64u(gid)}/proposals", content=proposal, headers={**bob.headers, **MLS}
    )
    assert r.status_code == 201, r.text
    got = await process_all(http, alice)
    assert [g.kind for g in got] == ["application", "proposal"]
    out = alice.group.commit()
    r = await post_commit(http, alice, gid, out)
    assert r.status_code == 201, r.text
    alice.group.merge_pending_commit()
    assert [m for m in alice.group.roster()] and len(alice.group.roster()) == 1
    # a non-admin may not propose to remove someone else
    r = await http.get(f"/v1/groups/{b64u(gid)}", headers=bob.headers)
    assert r.status_code == 403


async def test_external_join_and_group_info(server) -> None:  # type: ignore[no-untyped-def]
    http = server.http
    alice = await member(http, await server.user("alice"))
    bob = await member(http, await server.user("bob"))
    gid, r = await create_group(http, alice)
    path = f"/v1/groups/{b64u(gid)}"
    r = await http.get(f"{path}/group-info", headers=bob.headers)
    assert r.status_code == 403
    r = await http.patch(path, json={"external_join": True}, headers=alice.headers)
    assert r.status_code == 200 and r.json()["external_join"] is True
    r = await http.get(f"{path}/group-info", headers=bob.headers)
    assert r.status_code == 200 and r.headers["content-type"] == "message/mls"
    state = decode_group_state(r.content)
    assert state.ratchet_tree is not None
    bob.group, commit = Group.join_external(
        state.group_info, state.ratchet_tree, bob.client.mls_credential, bob.client.sig_priv
    )
    gi = bob.group.group_info()
    body = encode_commit_bundle(commit, gi, None)
    r = await http.post(f"{path}/commits", content=body, headers={**bob.headers, **MLS})
    assert r.status_code == 422 and r.json()["code"] == "queue_required"
    r = await http.post(
        f"{path}/commits",
        content=body,
        params={"queue_id": bob.queue_id},
        headers={**bob.queue_headers, **MLS},
    )
    assert r.status_code == 201, r.text
    got = await process_all(http, alice)
    assert [g.kind for g in got] == ["commit"]
    r = await send(http, alice, gid, b"welcome, bob")
    assert [g.data for g in await process_all(http, bob)] == [b"welcome, bob"]


async def test_held_until_queue_registered_and_policy(server) -> None:  # type: ignore[no-untyped-def]
    http, gid, alice, bob, carol = await trio(server)
    # a fourth member added but registering late still gets everything after its Add, in order
    dave = await member(http, await server.user("dave"))
    await connect(http, alice.user, dave.user)
    from .delivery_helpers import kp_bundle, register_queue

    bundle = kp_bundle(dave)
    out = alice.group.commit(add=[bundle.key_package])
    assert (await post_commit(http, alice, gid, out)).status_code == 201
    alice.group.merge_pending_commit()
    dave.group = Group.join_from_welcome(out.welcome, bundle)
    for i in range(3):
        assert (await send(http, alice, gid, f"m{i}".encode())).status_code == 201
    r = await http.put(
        f"/v1/groups/{b64u(gid)}/policy", json={"policy": "mute"}, headers=dave.headers
    )
    assert r.status_code == 204
    r = await register_queue(http, dave, gid)
    assert r.status_code == 204
    got = await process_all(http, dave)
    assert [g.data for g in got] == [b"m0", b"m1", b"m2"]
    assert all(i.policy == "mute" for i in dave.seen)
    assert all(i.policy == "" for i in await fetch(http, bob))
    seqs = [i.group_seq for i in dave.seen]
    assert seqs == sorted(seqs)


async def test_delete_group_notifies_members(server) -> None:  # type: ignore[no-untyped-def]
    http, gid, alice, bob, carol = await trio(server)
    for m in (bob, carol):
        await process_all(http, m)
    r = await http.delete(f"/v1/groups/{b64u(gid)}", headers=bob.headers)
    assert r.status_code == 403 and r.json()["code"] == "role_required"
    r = await http.delete(f"/v1/groups/{b64u(gid)}", headers=alice.headers)
    assert r.status_code == 204
    key = (await http.get("/v1/ds/external-sender")).json()
    cs = get_cipher_suite(1)
    for m in (bob, carol):
        [item] = await fetch(http, m)
        assert item.item_type == ITEM_SERVER_NOTICE
        notice = verify_notice(cs, unb64u(key["signature_key"]), item.body)
        assert notice["type"] == "group_deleted" and notice["group_id"] == b64u(gid)
    r = await http.get(f"/v1/groups/{b64u(gid)}", headers=alice.headers)
    assert r.status_code == 404
    r = await send(http, bob, gid, b"hello?")
    assert r.status_code == 404


async def test_account_deletion_removes_and_notices(server) -> None:  # type: ignore[no-untyped-def]
    http, gid, alice, bob, carol = await trio(server)
    for m in (bob, carol):
        await process_all(http, m)
    r = await http.patch("/v1/me", json={"display_name": "Caroline"}, headers=carol.headers)
    assert r.status_code == 200
    r = await http.delete("/v1/me", headers=bob.headers)
    assert r.status_code == 204
    ds = server.app.state.services.delivery
    await ds.process_account_events()
    key = unb64u((await http.get("/v1/ds/external-sender")).json()["signature_key"])
    cs = get_cipher_suite(1)
    items = await fetch(http, alice)
    notices = [verify_notice(cs, key, i.body) for i in items if i.item_type == ITEM_SERVER_NOTICE]
    assert [(n["type"], n["user_id"]) for n in notices] == [
        ("display_name_changed", "carol@localhost"),
        ("user_deleted", "bob@localhost"),
    ]
    assert notices[0]["display_name"] == "Caroline"
    proposals = [i.body for i in items if i.item_type == 1]
    assert len(proposals) == 1
    got = alice.group.process(proposals[0])
    assert got.kind == "proposal" and got.sender.sender_type == SenderType.EXTERNAL
    await process_all(http, carol)
    out = carol.group.commit()  # any member commits the server's Remove
    r = await post_commit(http, carol, gid, out)
    assert r.status_code == 201, r.text
    carol.group.merge_pending_commit()
    assert len(carol.group.roster()) == 2
    got = await process_all(http, alice)
    assert [g.kind for g in got] == ["commit"] and len(alice.group.roster()) == 2


async def test_external_sender_endpoint(server) -> None:  # type: ignore[no-untyped-def]
    r = await server.http.get("/v1/ds/external-sender", params={"cipher_suite": 1})
    assert r.status_code == 200
    body = r.json()
    assert len(body["credential"]) == 2
    r2 = await server.http.get("/v1/ds/external-sender")
    assert r2.json() == body  # stable
    r = await server.http.get("/v1/ds/external-sender", params={"cipher_suite": 99})
    assert r.status_code == 422
    assert MLSMessage  # imported for type use in other tests


async def test_commit_and_group_info_validated_together(server) -> None:  # type: ignore[no-untyped-def]
    http, gid, alice, bob, carol = await trio(server)
    old_gi = alice.group.group_info()
    out = alice.group.commit(force_path=True)
    path = f"/v1/groups/{b64u(gid)}/commits"
    headers = {**alice.headers, **MLS}
    r = await http.post(
        path, content=encode_commit_bundle(out.commit, old_gi, None), headers=headers
    )
    assert r.status_code == 422 and r.json()["code"] == "invalid_group_info"
    tampered = bytearray(out.commit)
    tampered[-40] ^= 1  # inside the signature / tags
    r = await http.post(
        path, content=encode_commit_bundle(bytes(tampered), out.group_info, None), headers=headers
    )
    assert r.status_code in (400, 422), r.text
    r = await http.post(
        path,
        content=encode_commit_bundle(out.commit, out.group_info, out.group_info),
        headers=headers,
    )
    assert r.status_code == 422 and r.json()["code"] == "wrong_wire_format"
    # nothing was stored: the untouched commit still goes through, as epoch 2
    r = await post_commit(http, alice, gid, out)
    assert r.status_code == 201 and r.json()["epoch"] == 2


async def test_send_refusals_on_the_fast_path(server) -> None:  # type: ignore[no-untyped-def]
    http, gid, alice, bob, carol = await trio(server)
    path = f"/v1/groups/{b64u(gid)}/messages"
    msg = alice.group.encrypt(b"x")
    r = await http.post(path, content=msg, headers={**MLS, "Roost-Message-Id": "a"})
    assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
    assert r.headers["content-type"] == "application/problem+json"
    r = await http.post(path, content=msg, headers={**alice.headers, "Roost-Message-Id": "a"})
    assert r.status_code == 415 and r.json()["code"] == "unsupported_media_type"
    r = await http.post(path, content=msg, headers={**alice.headers, **MLS})
    assert r.status_code == 400 and r.json()["code"] == "invalid_request"
    big = b"\x00" * (server.app.state.services.config.limits.max_message_bytes + 1)
    r = await http.post(
        path, content=big, headers={**alice.headers, **MLS, "Roost-Message-Id": "b"}
    )
    assert r.status_code == 413 and r.json()["code"] == "body_too_large"
    r = await http.post(
        path, content=b"", headers={**alice.headers, **MLS, "Roost-Message-Id": "c"}
    )
    assert r.status_code == 400 and r.json()["code"] == "malformed_mls"
    r = await http.post(
        "/v1/groups/%2A%2A/messages",
        content=msg,
        headers={**alice.headers, **MLS, "Roost-Message-Id": "d"},
    )
    assert r.status_code == 404 and r.json()["code"] == "group_not_found"
    r = await http.post(
        path, content=msg, headers={**alice.headers, **MLS, "Roost-Message-Id": "e"}
    )
    assert r.status_code == 201 and r.headers["content-type"] == "application/json"
    assert r.json() == {"group_seq": 2}  # after the Add commit (1); refusals took no seq


async def test_send_token_cache_honours_deletion_and_expiry(server) -> None:  # type: ignore[no-untyped-def]
    http, gid, alice, bob, carol = await trio(server)
    for m in (bob, carol):
        await process_all(http, m)
    assert (await send(http, bob, gid, b"cached now")).status_code == 201
    assert (await send(http, carol, gid, b"cached too")).status_code == 201
    r = await http.delete("/v1/me", headers=bob.headers)
    assert r.status_code == 204
    r = await send(http, bob, gid, b"after deletion")
    assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
    ttl = server.app.state.services.config.token_ttl_seconds
    server.clock.advance(ttl + 1)
    r = await send(http, carol, gid, b"expired")
    assert r.status_code == 401 and r.json()["code"] == "token_expired"


async def test_idempotency_records_are_pruned(server) -> None:  # type: ignore[no-untyped-def]
    http, gid, alice, bob, carol = await trio(server)
    first = await send(http, alice, gid, b"one", message_id="same")
    ds = server.app.state.services.delivery
    assert await ds.prune() == 0
    server.clock.advance(24 * 3600 + 1)
    await login(http, alice.client)  # the old token expired with the clock
    await ds.prune()  # (the DS's periodic sweep may have pruned it already: the clock jumped)
    assert await ds.prune() == 0
    again = await send(http, alice, gid, b"one", message_id="same")
    assert again.json()["group_seq"] == first.json()["group_seq"] + 1


async def test_account_events_have_one_consumer_across_processes(server, db_url) -> None:  # type: ignore[no-untyped-def]
    """On PostgreSQL, a process whose peer holds the consumer lock leaves the account events
    to it; once the lock is free every event yields exactly one Remove and one notice."""
    if db_url.startswith("sqlite"):
        pytest.skip("SQLite serves a single process; the cross-process lock is PostgreSQL's")
    import asyncpg

    from roost.server.delivery.account_events import ACCOUNT_EVENTS_LOCK_KEY

    http, gid, alice, bob, carol = await trio(server)
    for m in (bob, carol):
        await process_all(http, m)
    ds = server.app.state.services.delivery

    other = await asyncpg.connect(db_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:  # another process is consuming (once our own background consumer is done)
        for _ in range(100):
            if await other.fetchval("SELECT pg_try_advisory_lock($1)", ACCOUNT_EVENTS_LOCK_KEY):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the consumer lock was never released")
        # The deletion's event now waits: neither our background consumer nor a direct call
        # may take it while the other process holds the lock.
        assert (await http.delete("/v1/me", headers=bob.headers)).status_code == 204
        await asyncio.sleep(0.3)
        assert await ds.process_account_events() == 0
        assert not [i for i in await fetch(http, alice) if i.item_type == ITEM_SERVER_NOTICE]
        await other.execute("SELECT pg_advisory_unlock($1)", ACCOUNT_EVENTS_LOCK_KEY)
    finally:
        await other.close()

    # Lock free: this call or the background consumer (whichever comes first) handles it once.
    await ds.process_account_events()
    items: list = []
    for _ in range(100):
        items += await fetch(http, alice)
        types = {i.item_type for i in items}
        if ITEM_SERVER_NOTICE in types and 1 in types:  # the notice and the Remove proposal
            break
        await asyncio.sleep(0.05)
    assert await ds.process_account_events() == 0  # nothing left to handle twice
    items += await fetch(http, alice)
    notices = [i for i in items if i.item_type == ITEM_SERVER_NOTICE]
    assert len(notices) == 1
    assert len([i for i in items if i.item_type == 1]) == 1  # one Remove proposal


async def test_commit_racing_another_commit_gets_a_conflict_not_a_role_error(server) -> None:  # type: ignore[no-untyped-def]
    """A commit whose group row was read just before another commit landed must be answered
    409 epoch_conflict. Reading the member list after that commit (without bob) used to make
    carol's commit of bob's leave look like a non-admin removing someone: 403 role_required."""
    http, gid, alice, bob, carol = await trio(server)
    for m in (bob, carol):
        await process_all(http, m)
    proposal = bob.group.propose_remove(bob.group.leaf_index)
    r = await http.post(
        f"/v1/groups/{b64u(gid)}/proposals", content=proposal, headers={**bob.headers, **MLS}
    )
    assert r.status_code == 201, r.text
    for m in (alice, carol):
        assert [g.kind for g in await process_all(http, m)] == ["proposal"]
    alice_out, carol_out = alice.group.commit(), carol.group.commit()

    # Land alice's commit between the DS's read of the group row and of its members for
    # carol's commit: the widest window of the race, made certain.
    store = server.app.state.services.delivery.store
    members_of = store.members
    landed: list[int] = []

    async def members_after_alice_commits(conn, group_id):  # type: ignore[no-untyped-def]
        if not landed:
            landed.append(0)  # once: alice's own commit reads members through here too
            landed[0] = (await post_commit(http, alice, gid, alice_out)).status_code
        return await members_of(conn, group_id)

    store.members = members_after_alice_commits
    try:
        r = await post_commit(http, carol, gid, carol_out)
    finally:
        store.members = members_of
    assert landed == [201]
    assert r.status_code == 409 and r.json()["code"] == "epoch_conflict", r.text
    assert r.json()["epoch"] == 2
    alice.group.merge_pending_commit()
    carol.group.clear_pending_commit()
    assert [g.kind for g in await process_all(http, carol)] == ["commit"]
    assert carol.group.epoch_authenticator == alice.group.epoch_authenticator


async def test_role_rules_judge_only_verified_commits(server) -> None:  # type: ignore[no-untyped-def]
    """The DS's rules run on the staged commit, after MLS verified it: a commit whose signature
    does not verify is an invalid commit, whatever it proposes (it used to be judged by the
    role rules first and answered 403 role_required, so a forger learned about roles)."""
    from dataclasses import replace

    from roost.mls.framing import MLSMessage
    from roost.protocol.commit_bundle import encode_commit_bundle

    http, gid, alice, bob, carol = await trio(server)
    for m in (bob, carol):
        await process_all(http, m)
    out = bob.group.commit(remove=[carol.group.leaf_index])  # bob is no admin
    pm = MLSMessage.decode(out.commit).body
    signature = bytes([pm.auth.signature[0] ^ 1]) + pm.auth.signature[1:]
    forged = MLSMessage(replace(pm, auth=replace(pm.auth, signature=signature))).encode()
    r = await http.post(
        f"/v1/groups/{b64u(gid)}/commits",
        content=encode_commit_bundle(forged, out.group_info, out.welcome),
        headers={**bob.headers, **MLS},
    )
    assert r.status_code == 422 and r.json()["code"] == "invalid_commit", r.text
    # The same commit, signed as it was: now the role rule speaks.
    r = await post_commit(http, bob, gid, out)
    assert r.status_code == 403 and r.json()["code"] == "role_required", r.text
