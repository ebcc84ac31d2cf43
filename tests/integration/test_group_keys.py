"""Group keys: a group created with a key answers only requests that present it.

On a real ``roost serve`` (SQLite and PostgreSQL), over raw HTTP, as a client that speaks the
API directly: every request on a keyed group without its key is refused (``403
group_key_required``), with another key too (``403 wrong_group_key``), a malformed key is a
``422``, and nothing changes; with the key, everything works (the send fast path included). A
commit's ``Roost-Group-Key-Wrap`` reaches the joiner in the Welcome event unchanged. The
database keeps a check value of the key, never the key. A group made without a key asks for
none.
"""

from __future__ import annotations

import json
import secrets

import httpx
import sqlalchemy as sa

from roost.mls import Group
from roost.protocol.base64url import b64u, unb64u
from roost.protocol.commit_bundle import encode_commit_bundle
from roost.protocol.message_batch import decode_message_batch
from roost.server.store import Database

from ..server.delivery_helpers import (
    Member,
    connect,
    create_group,
    kp_bundle,
    member,
    register_queue,
    welcomes,
)
from ..server.helpers import MLS, register_user
from .conftest import unique_name

GROUP_KEY = "Roost-Group-Key"
WRAP = "Roost-Group-Key-Wrap"


async def _member(http: httpx.AsyncClient, prefix: str) -> Member:
    return await member(http, await register_user(http, unique_name(prefix)))


def _problem(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.json()["code"] == code, r.text


async def _keyed_group(http: httpx.AsyncClient, creator: Member) -> tuple[bytes, str]:
    key = b64u(secrets.token_bytes(32))
    gid, r = await create_group(http, creator, headers={**creator.queue_headers, GROUP_KEY: key})
    assert r.status_code == 201, r.text
    return gid, key


def _requests(gid: bytes, creator: Member) -> list[tuple[str, str, dict]]:
    path = f"/v1/groups/{b64u(gid)}"
    assert creator.group is not None
    return [
        ("GET", path, {}),
        ("GET", f"{path}/group-info", {}),
        ("PATCH", path, {"json": {"external_join": True}}),
        ("PUT", f"{path}/policy", {"json": {"policy": "mentions"}}),
        ("PUT", f"{path}/roles/{creator.user.user_id}", {"json": {"role": "admin"}}),
        (
            "POST",
            f"{path}/messages",
            {
                "content": creator.group.encrypt(b"hello"),
                "headers": {**MLS, "Roost-Message-Id": secrets.token_hex(8)},
            },
        ),
        ("DELETE", path, {}),
    ]


async def test_a_keyed_group_answers_only_its_key(http: httpx.AsyncClient) -> None:
    alice = await _member(http, "gk-alice")
    gid, key = await _keyed_group(http, alice)
    other = b64u(secrets.token_bytes(32))
    for method, path, kw in _requests(gid, alice):
        extra = kw.pop("headers", {})
        without = await http.request(method, path, headers={**alice.headers, **extra}, **kw)
        _problem(without, 403, "group_key_required")
        wrong = await http.request(
            method, path, headers={**alice.headers, **extra, GROUP_KEY: other}, **kw
        )
        _problem(wrong, 403, "wrong_group_key")
        bad = await http.request(
            method, path, headers={**alice.headers, **extra, GROUP_KEY: "short"}, **kw
        )
        _problem(bad, 422, "invalid_group_key")
        kw["headers"] = extra  # for the keyed round below
    # Nothing changed: the group is as created. With the key, every request goes through.
    r = await http.get(f"/v1/groups/{b64u(gid)}", headers={**alice.headers, GROUP_KEY: key})
    assert r.status_code == 200 and r.json()["external_join"] is False, r.text
    for method, path, kw in _requests(gid, alice):
        extra = kw.pop("headers", {})
        r = await http.request(
            method, path, headers={**alice.headers, **extra, GROUP_KEY: key}, **kw
        )
        assert r.status_code < 300, (method, path, r.status_code, r.text)


async def test_the_wrap_reaches_the_joiner_and_the_database_keeps_no_key(
    http: httpx.AsyncClient, db: Database
) -> None:
    alice, bob = await _member(http, "gk-alice"), await _member(http, "gk-bob")
    await connect(http, alice.user, bob.user)
    gid, key = await _keyed_group(http, alice)
    assert alice.group is not None
    bundle = kp_bundle(bob)
    out = alice.group.commit(add=[bundle.key_package])
    path = f"/v1/groups/{b64u(gid)}/commits"
    wrap = b64u(secrets.token_bytes(60))
    no_welcome = encode_commit_bundle(out.commit, out.group_info, None)
    r = await http.post(
        path, content=no_welcome, headers={**alice.headers, **MLS, GROUP_KEY: key, WRAP: wrap}
    )
    _problem(r, 422, "invalid_group_key")  # a wrap goes with a Welcome
    r = await http.post(
        path,
        content=encode_commit_bundle(out.commit, out.group_info, out.welcome),
        headers={**alice.headers, **MLS, GROUP_KEY: key, WRAP: b64u(b"too short")},
    )
    _problem(r, 422, "invalid_group_key")
    r = await http.post(
        path,
        content=encode_commit_bundle(out.commit, out.group_info, out.welcome),
        headers={**alice.headers, **MLS, GROUP_KEY: key, WRAP: wrap},
    )
    assert r.status_code == 201, r.text
    alice.group.merge_pending_commit()
    (event,) = await welcomes(http, bob.client)
    assert event["group_key_wrap"] == wrap
    bob.group = Group.join_from_welcome(out.welcome, bundle)
    _problem(await register_queue(http, bob, gid), 403, "group_key_required")
    r = await http.put(
        f"/v1/groups/{b64u(gid)}/queue",
        json={"queue_id": bob.queue_id},
        headers={**bob.queue_headers, GROUP_KEY: key},
    )
    assert r.status_code == 204, r.text
    async with db.engine.connect() as conn:
        cells = [
            bytes(c) if isinstance(c, (bytes, memoryview)) else str(c).encode()
            for row in (await conn.execute(sa.text("SELECT * FROM ds_groups"))).all()
            for c in row
        ]
    raw = unb64u(key)
    assert not any(raw in c or key.encode() in c for c in cells)


async def test_a_group_made_without_a_key_asks_for_none(http: httpx.AsyncClient) -> None:
    alice = await _member(http, "gk-alice")
    gid, r = await create_group(http, alice)
    assert r.status_code == 201, r.text
    r = await http.get(f"/v1/groups/{b64u(gid)}", headers=alice.headers)
    assert r.status_code == 200, r.text
    assert alice.group is not None
    r = await http.post(
        f"/v1/groups/{b64u(gid)}/messages",
        content=alice.group.encrypt(b"hi"),
        headers={**alice.headers, **MLS, "Roost-Message-Id": "m1"},
    )
    assert r.status_code == 201, r.text


async def test_a_connection_request_carries_the_wrap_to_the_responder(
    http: httpx.AsyncClient,
) -> None:
    alice, bob = await _member(http, "gk-alice"), await _member(http, "gk-bob")
    r = await http.post("/v1/connections", json={"to": bob.user.user_id}, headers=alice.headers)
    assert r.status_code == 201, r.text
    path = f"/v1/connections/{r.json()['connection_id']}/request"
    r = await http.post(path, content=b"\x00", headers={**alice.headers, **MLS, WRAP: "short"})
    _problem(r, 422, "invalid_group_key")  # and the request was not sent
    wrap = b64u(secrets.token_bytes(60))
    r = await http.post(path, content=b"\x00", headers={**alice.headers, **MLS, WRAP: wrap})
    assert r.status_code == 200, r.text
    r = await http.get("/v1/direct/messages", headers=bob.headers)
    events = [json.loads(p) for _, p in decode_message_batch(r.content)]
    (request,) = [e for e in events if e["type"] == "connection_request"]
    assert request["group_key_wrap"] == wrap


async def test_listing_groups_names_only_groups_without_a_key(http: httpx.AsyncClient) -> None:
    # The DS holds no key at rest: a keyed group's members are opened only with its key, so no
    # request can find it by member. A group made without a key is listed.
    alice = await _member(http, "gk-alice")
    keyed, _ = await _keyed_group(http, alice)
    unkeyed, r = await create_group(http, alice)
    assert r.status_code == 201, r.text
    r = await http.get("/v1/groups", headers=alice.headers)
    assert r.status_code == 200, r.text
    assert [g["group_id"] for g in r.json()["groups"]] == [b64u(unkeyed)]
    r = await http.get(f"/v1/groups/{b64u(keyed)}", headers=alice.headers)
    _problem(r, 403, "group_key_required")


async def test_listing_groups_is_rate_limited_per_client(http: httpx.AsyncClient) -> None:
    # Answering opens every sealed member row of the unkeyed groups: 30 times a minute.
    alice, bob = await _member(http, "gk-alice"), await _member(http, "gk-bob")
    gid, r = await create_group(http, alice)
    assert r.status_code == 201, r.text
    for _ in range(30):
        r = await http.get("/v1/groups", headers=alice.headers)
        assert r.status_code == 200, r.text
        assert [g["group_id"] for g in r.json()["groups"]] == [b64u(gid)]
    r = await http.get("/v1/groups", headers=alice.headers)
    _problem(r, 429, "rate_limited")
    assert int(r.headers["retry-after"]) >= 1
    r = await http.get("/v1/groups", headers=bob.headers)  # another client is not held back
    assert r.status_code == 200 and r.json()["groups"] == []
