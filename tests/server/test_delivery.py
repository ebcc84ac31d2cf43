"""Delivery Service over ASGI on SQLite and PostgreSQL: creation, commits, sends, joins."""

from __future__ import annotations

from roost.protocol.base64url import b64u

from .delivery_helpers import (
    add_members,
    connect,
    create_group,
    member,
    process_all,
    send,
    welcome_bytes,
    welcomes,
)


async def test_create_add_send_roundtrip(server) -> None:  # type: ignore[no-untyped-def]
    http = server.http
    alice = await member(http, await server.user("alice"))
    bob = await member(http, await server.user("bob"))
    gid, r = await create_group(http, alice)
    assert r.status_code == 201, r.text
    view = r.json()
    assert view["epoch"] == 0 and view["roles"] == {"alice@localhost": "admin"}
    await connect(http, alice.user, bob.user)
    r = await add_members(http, alice, gid, [bob])
    assert r.status_code == 201, r.text
    assert r.json() == {"epoch": 1, "group_seq": 1}
    [event] = await welcomes(http, bob.client)
    assert event["group_seq"] == 1 and event["from"] == "alice@localhost"
    assert welcome_bytes(event)
    r = await send(http, alice, gid, b"hello bob")
    assert r.status_code == 201, r.text
    assert r.json() == {"group_seq": 2}
    got = await process_all(http, bob)
    assert [g.data for g in got] == [b"hello bob"]
    r = await send(http, bob, gid, b"hi alice")
    assert r.status_code == 201, r.text
    got = await process_all(http, alice)
    assert [g.data for g in got] == [b"hi alice"]
    assert [i.group_seq for i in alice.seen] == [3]
    r = await http.get(f"/v1/groups/{b64u(gid)}", headers=bob.headers)
    assert r.status_code == 200 and r.json()["my_leaf"] == 1 and r.json()["epoch"] == 1
