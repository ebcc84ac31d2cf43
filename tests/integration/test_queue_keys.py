"""Group-message queues are authorised by their own key, and no stored row says whose they are.

On a real ``roost serve`` (SQLite and PostgreSQL), over raw HTTP: the owner operations and the
requests that register a queue with the Delivery Service need the queue's key (403 ``forbidden``
without it or with another queue's, and nothing changes); the ``queues`` table, read directly
as a thief with a copy of the database would, holds no client or user id; a queue made before
keys existed is claimed once, by the client that made it, and then needs its key like any other.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass

import httpx
import sqlalchemy as sa

from roost.mls import Group
from roost.protocol.base64url import b64u, unb64u
from roost.protocol.commit_bundle import encode_commit_bundle
from roost.protocol.group_state import decode_group_state
from roost.server.store import Database

from ..server.delivery_helpers import (
    QUEUE_KEY,
    Member,
    add_members,
    connect,
    create_group,
    fetch,
    kp_bundle,
    post_commit,
    register_queue,
    send,
)
from ..server.helpers import MLS, add_client, register_user
from ..server.helpers import TestUser as User
from .conftest import unique_name

UNKNOWN_QUEUE = b64u(b"\x00" * 16)


@dataclass
class Queue:
    queue_id: str
    key: str


async def _user(http: httpx.AsyncClient, prefix: str, password: str | None = None) -> User:
    return await register_user(http, unique_name(prefix), password=password)


async def _queue(http: httpx.AsyncClient, user: User) -> Queue:
    r = await http.post("/v1/queues", headers=user.headers)
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"queue_id", "queue_key"}
    return Queue(body["queue_id"], body["queue_key"])


def _with_key(user: User, key: str | None) -> dict[str, str]:
    return {**user.headers, QUEUE_KEY: key} if key is not None else dict(user.headers)


async def _enqueue(http: httpx.AsyncClient, sender: User, q: Queue, payload: bytes) -> int:
    r = await http.post(
        f"/v1/queues/{q.queue_id}/messages", content=payload, headers={**sender.headers, **MLS}
    )
    assert r.status_code == 201, r.text
    return int(r.json()["seq"])


async def _fetch(http: httpx.AsyncClient, headers: dict[str, str], queue_id: str):  # type: ignore[no-untyped-def]
    return await http.get(f"/v1/queues/{queue_id}/messages", params={"after": 0}, headers=headers)


def _owner_calls(queue_id: str) -> list[tuple[str, str, dict]]:
    return [
        ("GET", f"/v1/queues/{queue_id}/messages", {}),
        ("POST", f"/v1/queues/{queue_id}/ack", {"json": {"up_to": 100}}),
        ("DELETE", f"/v1/queues/{queue_id}", {}),
    ]


def _problem(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == code, r.text


async def _queue_row(db: Database, queue_id: str) -> dict | None:
    async with db.engine.connect() as conn:
        row = (
            (
                await conn.execute(
                    sa.text("SELECT * FROM queues WHERE id = :id"), {"id": unb64u(queue_id)}
                )
            )
            .mappings()
            .one_or_none()
        )
    return dict(row) if row is not None else None


def _forms(value: str | bytes) -> list[bytes]:
    """The shapes an id may take in a cell: raw, hex, base64 (both alphabets)."""
    raw = value.encode() if isinstance(value, str) else value
    out = {raw, raw.hex().encode()}
    out.add(base64.urlsafe_b64encode(raw).rstrip(b"="))
    out.add(base64.b64encode(raw).rstrip(b"="))
    if isinstance(value, str):
        out.add(value.replace("-", "").encode())  # a uuid without its dashes
    return list(out)


def _cell_bytes(cell: object) -> bytes:
    if cell is None:
        return b""
    if isinstance(cell, bytes | bytearray | memoryview):
        return bytes(cell)
    return str(cell).encode()


def _holds(cell: object, value: str | bytes) -> bool:
    data = _cell_bytes(cell)
    return bool(data) and any(f in data for f in _forms(value))


def _identities(*users: User) -> list[str]:
    return [v for u in users for v in (u.user_id, u.user_uuid, *(c.client_uuid for c in u.clients))]


# ---- the owner operations ----------------------------------------------------------------------


async def test_a_new_queue_comes_with_its_key(http):
    alice = await _user(http, "alice")
    q = await _queue(http, alice)
    assert len(unb64u(q.queue_id)) == 16 and len(unb64u(q.key)) == 32
    other = await _queue(http, alice)
    assert other.key != q.key  # one key per queue, not per client


async def test_owner_operations_need_the_queues_own_key_and_change_nothing_without_it(http):
    alice = await _user(http, "alice")
    mallory = await _user(http, "mallory")
    q, sibling = await _queue(http, alice), await _queue(http, alice)
    malloried = await _queue(http, mallory)
    for i in range(3):
        await _enqueue(http, mallory, q, b"m%d" % i)  # the id alone lets anyone enqueue
    refusals = [
        _with_key(alice, None),  # the creator's token is not enough
        _with_key(alice, sibling.key),  # nor the key of her other queue
        _with_key(mallory, malloried.key),  # nor a stranger's own key
        _with_key(alice, b64u(secrets.token_bytes(32))),  # nor a guess
        _with_key(alice, "not base64 at all!"),
        _with_key(alice, b64u(unb64u(q.key)[:16])),  # nor a part of the right one
    ]
    for headers in refusals:
        for method, path, kwargs in _owner_calls(q.queue_id):
            r = await http.request(method, path, headers=headers, **kwargs)
            _problem(r, 403, "forbidden")
    # The key without a bearer token is not a login.
    for method, path, kwargs in _owner_calls(q.queue_id):
        r = await http.request(method, path, headers={QUEUE_KEY: q.key}, **kwargs)
        _problem(r, 401, "unauthenticated")
    # Nothing was acked or deleted: every message is still there for the key holder.
    r = await _fetch(http, _with_key(alice, q.key), q.queue_id)
    assert r.status_code == 200, r.text
    assert r.headers["roost-last-seq"] == "3"
    assert (
        await http.post(
            f"/v1/queues/{q.queue_id}/ack", json={"up_to": 2}, headers=_with_key(alice, q.key)
        )
    ).status_code == 204
    r = await http.delete(f"/v1/queues/{q.queue_id}", headers=_with_key(alice, q.key))
    assert r.status_code == 204
    # The sibling was never touched by the attempts made with its key.
    assert (await _fetch(http, _with_key(alice, sibling.key), sibling.queue_id)).status_code == 200


async def test_the_key_not_the_client_authorises(http):
    """No stored owner: whoever holds the key (with any valid token) reads the queue. A client
    hands its key to no one, so in practice that is the client that created it."""
    alice = await _user(http, "alice")
    bob = await _user(http, "bob")
    q = await _queue(http, alice)
    await _enqueue(http, bob, q, b"x")
    r = await _fetch(http, _with_key(bob, q.key), q.queue_id)
    assert r.status_code == 200 and r.headers["roost-last-seq"] == "1"


async def test_an_unknown_or_deleted_queue_is_404(http):
    alice = await _user(http, "alice")
    q = await _queue(http, alice)
    for method, path, kwargs in _owner_calls(UNKNOWN_QUEUE):
        r = await http.request(method, path, headers=_with_key(alice, q.key), **kwargs)
        _problem(r, 404, "queue_not_found")
    assert (
        await http.delete(f"/v1/queues/{q.queue_id}", headers=_with_key(alice, q.key))
    ).status_code == 204
    for method, path, kwargs in _owner_calls(q.queue_id):
        r = await http.request(method, path, headers=_with_key(alice, q.key), **kwargs)
        _problem(r, 404, "queue_not_found")


# ---- registering a queue with the Delivery Service ---------------------------------------------


async def _member(http: httpx.AsyncClient, prefix: str) -> Member:
    user = await _user(http, prefix)
    q = await _queue(http, user)
    return Member(user, user.client, q.queue_id, q.key)


async def _group_exists(http: httpx.AsyncClient, m: Member, gid: bytes) -> int:
    return (await http.get(f"/v1/groups/{b64u(gid)}", headers=m.headers)).status_code


async def test_creating_a_group_needs_the_key_of_the_queue_it_names(http):
    alice = await _member(http, "alice")
    other = await _queue(http, alice.user)
    for key in (None, other.key, b64u(secrets.token_bytes(32))):
        gid, r = await create_group(http, alice, headers=_with_key(alice.user, key))
        _problem(r, 403, "forbidden")
        assert await _group_exists(http, alice, gid) == 404  # no group was created
    alice.queue_id = UNKNOWN_QUEUE
    gid, r = await create_group(http, alice)
    _problem(r, 404, "queue_not_found")
    assert await _group_exists(http, alice, gid) == 404


async def test_registering_a_queue_after_a_welcome_needs_its_key(http):
    alice, bob = await _member(http, "alice"), await _member(http, "bob")
    gid, r = await create_group(http, alice)
    assert r.status_code == 201, r.text
    await connect(http, alice.user, bob.user)
    # alice adds bob; bob joins from the Welcome but registers his queue himself, below
    assert alice.group is not None
    bundle = kp_bundle(bob)
    out = alice.group.commit(add=[bundle.key_package])
    assert (await post_commit(http, alice, gid, out)).status_code == 201
    alice.group.merge_pending_commit()
    bob.group = Group.join_from_welcome(out.welcome, bundle)
    assert (await send(http, alice, gid, b"held for bob")).status_code == 201
    path = f"/v1/groups/{b64u(gid)}/queue"
    for key in (alice.queue_key, b64u(secrets.token_bytes(32))):
        r = await http.put(path, json={"queue_id": bob.queue_id}, headers=_with_key(bob.user, key))
        _problem(r, 403, "forbidden")
    r = await http.put(path, json={"queue_id": bob.queue_id}, headers=bob.headers)
    _problem(r, 403, "forbidden")
    r = await http.put(path, json={"queue_id": UNKNOWN_QUEUE}, headers=bob.queue_headers)
    _problem(r, 404, "queue_not_found")
    # Nothing reached bob's queue meanwhile; with his key, the held item arrives.
    assert (await _fetch(http, bob.queue_headers, bob.queue_id)).headers["roost-last-seq"] == "0"
    assert (await register_queue(http, bob, gid)).status_code == 204
    got = [bob.group.process(i.body).data for i in await fetch(http, bob) if i.item_type == 1]
    assert got == [b"held for bob"]


async def test_an_external_commit_registering_a_queue_needs_its_key(http):
    alice, bob = await _member(http, "alice"), await _member(http, "bob")
    gid, r = await create_group(http, alice, external_join=True)
    assert r.status_code == 201, r.text
    r = await http.get(f"/v1/groups/{b64u(gid)}/group-info", headers=bob.headers)
    assert r.status_code == 200, r.text
    state = decode_group_state(r.content)
    group, commit = Group.join_external(
        state.group_info, state.ratchet_tree, bob.client.mls_credential, bob.client.sig_priv
    )
    body = encode_commit_bundle(commit, group.group_info(), None)
    path = f"/v1/groups/{b64u(gid)}/commits"
    for key in (None, alice.queue_key, b64u(secrets.token_bytes(32))):
        r = await http.post(
            path,
            params={"queue_id": bob.queue_id},
            content=body,
            headers={**_with_key(bob.user, key), **MLS},
        )
        _problem(r, 403, "forbidden")
    info = (await http.get(f"/v1/groups/{b64u(gid)}", headers=alice.headers)).json()
    assert info["epoch"] == 0  # the commit was not applied
    r = await http.post(
        path,
        params={"queue_id": bob.queue_id},
        content=body,
        headers={**bob.queue_headers, **MLS},
    )
    assert r.status_code == 201, r.text


# ---- what a copy of the database says -----------------------------------------------------------


async def test_the_queues_table_names_no_client_or_user(http, db):
    alice = await _user(http, "alice", password="correct horse battery")
    phone = await add_client(http, alice)
    bob = await _user(http, "bob")
    made = [await _queue(http, alice) for _ in range(2)]
    made.append(await _queue(http, bob))
    r = await http.post("/v1/queues", headers=phone.headers)
    assert r.status_code == 201
    made.append(Queue(r.json()["queue_id"], r.json()["queue_key"]))
    # in use, too: in a group with bob, messages waiting
    m_alice = Member(alice, alice.client, made[0].queue_id, made[0].key)
    m_bob = Member(bob, bob.client, made[2].queue_id, made[2].key)
    gid, r = await create_group(http, m_alice)
    assert r.status_code == 201, r.text
    await connect(http, alice, bob)
    assert (await add_members(http, m_alice, gid, [m_bob])).status_code == 201
    assert (await send(http, m_alice, gid, b"hi")).status_code == 201
    for q in made:
        await _enqueue(http, bob, q, b"payload")

    who = _identities(alice, bob)
    async with db.engine.connect() as conn:
        result = await conn.execute(sa.text("SELECT * FROM queues"))
        columns = list(result.keys())
        rows = [dict(zip(columns, r, strict=True)) for r in result.all()]
    ours = {unb64u(q.queue_id) for q in made}
    ours_rows = [r for r in rows if bytes(r["id"]) in ours]
    assert len(ours_rows) == len(made)
    for row in ours_rows:
        for column, cell in row.items():
            for value in who:
                assert not _holds(cell, value), f"queues.{column} holds an id of a user/client"
        # the key itself is not stored: only its SHA-256
        key = unb64u(next(q.key for q in made if unb64u(q.queue_id) == bytes(row["id"])))
        assert all(key not in _cell_bytes(c) for c in row.values())
        assert bytes(row["key_hash"]) == hashlib.sha256(key).digest()
        assert row.get("legacy_owner") is None


async def test_a_queue_outside_any_group_is_tied_to_nobody_anywhere(http, db):
    """Read every table: no row holds both the queue's id and an id of its creator."""
    alice = await _user(http, "alice")
    bob = await _user(http, "bob")
    q = await _queue(http, alice)
    await _enqueue(http, bob, q, b"something")
    await _fetch(http, _with_key(alice, q.key), q.queue_id)
    r = await http.post(
        f"/v1/queues/{q.queue_id}/ack", json={"up_to": 1}, headers=_with_key(alice, q.key)
    )
    assert r.status_code == 204
    qid = unb64u(q.queue_id)
    who = _identities(alice)
    async with db.engine.connect() as conn:
        tables = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
        for table in tables:
            for row in (await conn.execute(sa.text(f'SELECT * FROM "{table}"'))).all():
                if not any(_holds(cell, qid) for cell in row):
                    continue
                for value in who:
                    assert not any(_holds(cell, value) for cell in row), (
                        f"a row of {table} ties alice's queue to her"
                    )


# ---- queues made before keys existed ------------------------------------------------------------


async def _insert_legacy_queue(db: Database, owner_client_uuid: str) -> str:
    """A queue row as the upgrade leaves a queue made before keys: no key, its creator kept
    until the key is claimed."""
    qid = secrets.token_bytes(16)
    async with db.transaction() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO queues (id, key_hash, legacy_owner, last_seq, created_at)"
                " VALUES (:id, NULL, :owner, 0, :now)"
            ),
            {"id": qid, "owner": owner_client_uuid, "now": int(time.time())},
        )
    return b64u(qid)


async def test_a_legacy_queue_is_claimed_once_by_its_creator(http, db):
    alice = await _user(http, "alice", password="correct horse battery")
    phone = await add_client(http, alice)
    mallory = await _user(http, "mallory")
    queue_id = await _insert_legacy_queue(db, alice.client.client_uuid)
    await _enqueue(http, mallory, Queue(queue_id, ""), b"from before the upgrade")
    # Unclaimed: the owner operations say what is missing, to the creator as to anyone.
    for method, path, kwargs in _owner_calls(queue_id):
        r = await http.request(method, path, headers=alice.headers, **kwargs)
        _problem(r, 403, "queue_key_required")
    claim = f"/v1/queues/{queue_id}/key"
    # Only the client that created it: not another user, not another client of the same user.
    for intruder in (mallory.headers, phone.headers):
        r = await http.post(claim, headers=intruder)
        assert r.status_code == 403, r.text
    _problem(
        await http.post(f"/v1/queues/{UNKNOWN_QUEUE}/key", headers=alice.headers),
        404,
        "queue_not_found",
    )
    r = await http.post(claim, headers=alice.headers)
    assert r.status_code == 200, r.text
    assert r.json()["queue_id"] == queue_id
    key = r.json()["queue_key"]
    assert len(unb64u(key)) == 32
    # Once: a second claim gets no key (not even the creator's).
    again = await http.post(claim, headers=alice.headers)
    assert again.status_code in (403, 409), again.text
    assert "queue_key" not in again.text or key not in again.text
    # The stored owner is gone; the key now authorises, and is required.
    row = await _queue_row(db, queue_id)
    assert row is not None and row["legacy_owner"] is None
    assert bytes(row["key_hash"]) == hashlib.sha256(unb64u(key)).digest()
    for column, cell in row.items():
        for value in _identities(alice):
            assert not _holds(cell, value), f"queues.{column} still names alice"
    r = await _fetch(http, _with_key(alice, key), queue_id)
    assert r.status_code == 200 and r.headers["roost-last-seq"] == "1"
    for method, path, kwargs in _owner_calls(queue_id):
        r = await http.request(method, path, headers=alice.headers, **kwargs)
        _problem(r, 403, "forbidden")
    r = await http.post(
        f"/v1/queues/{queue_id}/ack", json={"up_to": 1}, headers=_with_key(alice, key)
    )
    assert r.status_code == 204
