"""At every level and in both formats the log holds no bearer token, queue id, queue key,
password or password hash: not in access lines and their query strings, not in the realtime upgrade's
headers, ticket or frames, not in SQL statements and their parameters."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from roost.client import Realtime, RoostClient
from roost.client.groups import Groups
from roost.client.push import register_web_push
from roost.protocol.base64url import b64u
from tests.push_services.process import StandIn

from .conftest import PASSWORD, unique_name
from .harness import ServerProcess


@pytest.fixture(params=["text", "json"])
def debug_server(request, tmp_path: Path, engine: str):
    database_url = ""
    if engine == "postgresql":
        database_url = request.getfixturevalue("postgres_database")()
    env = {"ROOST_LOG_LEVEL": "debug", "ROOST_LOG_FORMAT": request.param}
    server = ServerProcess(engine, tmp_path / "data", database_url, env).start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request) -> str:
    return request.param


async def test_debug_logs_hold_no_secrets(debug_server: ServerProcess) -> None:
    url = debug_server.url
    alice = await RoostClient.register(url, unique_name("alice"), password=PASSWORD)
    second = await RoostClient.add_with_password(url, alice.user_id, PASSWORD)  # a login
    try:
        token = await alice.bearer_token()
        second_token = await second.bearer_token()
        queue_id = await alice.create_queue()
        await alice.enqueue(queue_id, b"hello")
        await alice.fetch_queue(queue_id)  # the queue key in a request header
        groups = Groups(alice)
        group = await groups.create()  # POST /v1/groups?queue_id=<its queue id>, its key
        own = groups.queue_of(group.group_id)  # the membership's own queue
        assert own is not None
        group_queue = own.id
        queue_keys = alice.queue_keys()  # both queues' keys, as the hello frame carries them
        assert set(queue_keys) == {queue_id, group_queue}
        async with Realtime(alice, positions={queue_id: 0}) as rt:  # upgrade + hello frame
            await rt.receive(timeout=10)
        # A browser's upgrade: the ticket travels in the query string (used, then refused).
        ticket = (await second.request("POST", "/v1/realtime/tickets")).json()["ticket"]
        ticket_url = url.replace("http://", "ws://") + "/v1/realtime?ticket=" + ticket
        async with connect(ticket_url, proxy=None) as ws:
            await ws.send(json.dumps({"type": "hello"}))
            assert json.loads(await ws.recv())["type"] == "ready"
        with pytest.raises(InvalidStatus):
            await connect(ticket_url, proxy=None)
        assert group is not None
    finally:
        await second.aclose()
        await alice.aclose()
    debug_server.stop()  # flush everything
    log = debug_server.log_path.read_text(errors="replace")
    assert "GET /health" in log or '"route"' in log or "/v1/" in log  # it did log requests
    for name, secret in (
        ("bearer token", token),
        ("second bearer token", second_token),
        ("realtime ticket", ticket),
        ("queue id", queue_id),
        ("group queue id", group_queue),
        *((f"queue key of {q[:4]}…", key) for q, key in queue_keys.items()),
        ("password", PASSWORD),
        ("argon2 hash", "$argon2"),
    ):
        assert secret not in log, f"the {name} is in the log"


@pytest.fixture(scope="module")
def webpush() -> Iterator[StandIn]:
    s = StandIn("webpush")
    yield s
    s.close()


@pytest.fixture(params=["text", "json"])
def info_server(request, tmp_path: Path, engine: str):
    database_url = ""
    if engine == "postgresql":
        database_url = request.getfixturevalue("postgres_database")()
    env = {
        "ROOST_LOG_LEVEL": "info",
        "ROOST_LOG_FORMAT": request.param,
        "ROOST_PUSH_ALLOW_INSECURE_ENDPOINTS": "true",
        "ROOST_PUSH_COALESCE_SECONDS": "0",
    }
    server = ServerProcess(engine, tmp_path / "data", database_url, env).start()
    yield server
    server.stop()


def _encodings(raw: bytes) -> list[str]:
    return [b64u(raw), raw.hex(), base64.b64encode(raw).decode()]


async def test_info_logs_tie_no_group_to_anyone(
    info_server: ServerProcess, webpush: StandIn
) -> None:
    """The info-level log (what operators keep) names no group, user, client or connection: not
    even in the path of an access line, which also holds the caller's address and would say
    which groups that caller is in and whom it deals with. Nor does it hold queue ids, tokens,
    message ids or payloads."""
    url = info_server.url
    alice = await RoostClient.register(url, unique_name("alice"), password=PASSWORD)
    bob = await RoostClient.register(url, unique_name("bob"))
    second = await RoostClient.add_with_password(url, alice.user_id, PASSWORD)  # a login
    try:
        await bob.publish_key_packages(2)
        # bob is offline with a Web Push subscription: the connection request wakes him
        sub = await asyncio.to_thread(webpush.subscribe, f"log-{uuid.uuid4().hex[:8]}")
        await register_web_push(bob, sub["endpoint"], sub["keys"])
        conn = await alice.open_connection(bob.user_id)
        await alice.send_connection_request(conn.connection_id, b"hello")
        await _pushed(webpush, sub["endpoint"])
        await bob.accept_connection(conn.connection_id)
        queue_id = await alice.create_queue()
        payload = b"queue-payload-" + uuid.uuid4().hex.encode()
        await alice.enqueue(queue_id, payload)
        a_groups, b_groups = Groups(alice), Groups(bob)
        group = await a_groups.create()
        gid = group.group_id
        await a_groups.invite(gid, [bob.user_id])
        await b_groups.sync()
        await a_groups.set_role(gid, bob.user_id, "admin")  # group and user in one path
        sent = [await a_groups.send(gid, f"secret text {i}") for i in range(3)]
        keys = {**alice.queue_keys(), **bob.queue_keys()}
        assert len(keys) == 3  # alice's two queues and bob's group queue
        a_queue, b_queue = a_groups.queue_of(gid), b_groups.queue_of(gid)
        assert a_queue is not None and b_queue is not None
        async with Realtime(bob, positions={b_queue.id: 0}) as rt:
            await rt.receive(timeout=10)  # the upgrade and the hello frame
        events = await b_groups.sync()
        assert [e.message for e in events if e.kind == "message"] == [
            f"secret text {i}" for i in range(3)
        ]
        secrets = {
            "bearer token": await alice.bearer_token(),
            "bob's token": await bob.bearer_token(),
            "second token": await second.bearer_token(),
            "queue id": queue_id,
            "alice's group queue": a_queue.id,
            "bob's group queue": b_queue.id,
            "queue payload": payload.decode(),
            **{f"queue key {i}": key for i, key in enumerate(keys.values())},
            "push endpoint": sub["endpoint"],
            "push subscription": sub["endpoint"].rsplit("/", 1)[-1],
            "plaintext": "secret text",
            **{f"message id {i}": s.message_id for i, s in enumerate(sent)},
            **{
                f"ciphertext {i} ({e[:4]})": e[:24]
                for i, s in enumerate(sent)
                for e in _encodings(s.ciphertext)
            },
        }
        names = {
            "alice": alice.user_id,
            "bob": bob.user_id,
            "alice's client": alice.client_uuid,
            "bob's client": bob.client_uuid,
            "alice's second client": second.client_uuid,
        }
    finally:
        await second.aclose()
        await bob.aclose()
        await alice.aclose()
    info_server.stop()  # flush everything
    lines = info_server.log_path.read_text(errors="replace").splitlines()
    assert any("/v1/groups" in line for line in lines)  # it did log the group requests
    log = "\n".join(lines)
    for name, secret in secrets.items():
        assert secret not in log, f"the {name} is in the log"
    for encoded in _encodings(gid):
        assert encoded not in log, "the group id is in the log"
    for who, value in names.items():  # nor whom a request was about (user ids in paths)
        for form in (value, quote(value, safe="")):
            assert form not in log, f"{who} ({form}) is in the log"
    assert conn.connection_id not in log


async def _pushed(webpush: StandIn, endpoint: str) -> None:
    sub_id = endpoint.rsplit("/", 1)[-1]
    deadline = time.monotonic() + 10
    while not any(g.get("subscription") == sub_id for g in webpush.received()):
        assert time.monotonic() < deadline, "no push arrived"
        await asyncio.sleep(0.05)
