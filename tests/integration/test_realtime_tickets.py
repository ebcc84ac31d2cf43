"""Realtime sockets opened the way a browser must: no ``Authorization`` header, only a
single-use ticket from ``POST /v1/realtime/tickets`` in the URL (SQLite and PostgreSQL).

Such a socket delivers live, takes acks and resumes like one opened with the header; a used,
unknown, expired or revoked ticket is refused before the upgrade; the socket stays bound to the
token the ticket was issued with and closes when its client is removed.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from urllib.parse import quote

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from roost.client import RoostClient, RoostError
from roost.client.realtime import Realtime, listen
from roost.protocol.base64url import b64u

from .conftest import ENGINES, _start
from .test_realtime_delivery import (
    close_code,
    fetch_seqs,
    new_queue,
    recv_control,
    recv_items,
    ws_url,
)

pytestmark = pytest.mark.timeout(120)

BROWSER_ORIGIN = "https://app.example"


async def new_ticket(client: RoostClient) -> str:
    resp = await client.request("POST", "/v1/realtime/tickets")
    body = resp.json()
    assert set(body) == {"ticket", "expires_at"}
    return body["ticket"]


async def open_with_ticket(base: str, ticket: str, **headers: str) -> ClientConnection:
    """The upgrade a browser's ``new WebSocket(url)`` sends: an Origin, no Authorization."""
    return await connect(
        ws_url(base) + "?ticket=" + quote(ticket, safe=""),
        additional_headers=headers,
        origin=BROWSER_ORIGIN,
        compression=None,
        ping_interval=None,
        proxy=None,
        max_size=None,
    )


async def hello(ws: ClientConnection, **positions: object) -> dict:
    await ws.send(json.dumps({"type": "hello", **positions}))
    ready = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert ready["type"] == "ready"
    return ready


async def refusal(base: str, ticket: str, **headers: str) -> tuple[int, str]:
    """(HTTP status, problem code) of a refused upgrade."""
    with pytest.raises(InvalidStatus) as e:
        await open_with_ticket(base, ticket, **headers)
    resp = e.value.response
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    return resp.status_code, json.loads(resp.body)["code"]


@pytest.fixture(scope="module", params=ENGINES)
def short_ticket_server(request, tmp_path_factory):
    """A server whose tickets live 1 s."""
    srv = _start(
        request,
        tmp_path_factory,
        "roost-tickets",
        {"ROOST_LIMITS_REALTIME_TICKET_TTL_SECONDS": "1"},
    )
    yield srv
    srv.stop()


# ---- delivery ------------------------------------------------------------------------------


async def test_a_ticket_alone_opens_a_socket_that_delivers_and_takes_acks(server, users):
    alice, bob = await users.connected_pair()
    q, key = await new_queue(bob)
    ws = await open_with_ticket(server.url, await new_ticket(bob))
    try:
        ready = await hello(ws, queue_keys={q: key})
        assert ready["client_id"] == bob.client_id and ready["queues"] == [q]
        pairing = await recv_items(ws, 2)  # the connection request and bob's own answer
        assert [w for w, _, _ in pairing] == [None, None]

        await alice.enqueue(q, b"live one")
        await alice.send_direct(bob.user_id, b"live two")
        got = await recv_items(ws, 2)
        assert got[0] == (q, 1, b"live one")
        assert got[1][0] is None and json.loads(got[1][2])["type"] == "message"

        await ws.send(json.dumps({"type": "ack", "queues": {q: 1}, "direct": got[1][1], "id": 7}))
        assert (await recv_control(ws, "acked"))["id"] == 7
        assert await fetch_seqs(bob, q, key) == []
        assert (await bob.fetch_direct(0)).events == ()
        await ws.send(json.dumps({"type": "ping", "id": 1}))
        assert await recv_control(ws, "pong") == {"type": "pong", "id": 1}
        # In-band token renewal works on a ticket socket as on any other.
        await ws.send(json.dumps({"type": "auth", "token": await bob.authenticate()}))
        await recv_control(ws, "authed")
    finally:
        await ws.close()


async def test_a_ticket_socket_resumes_after_the_positions_sent(server, users):
    alice = await users.new("a")
    bob = await users.new("b")
    q, key = await new_queue(bob)
    for i in range(1, 4):
        await alice.enqueue(q, bytes([i]))
    ws = await open_with_ticket(server.url, await new_ticket(bob))
    await hello(ws, queue_keys={q: key})
    assert [s for _, s, _ in await recv_items(ws, 3)] == [1, 2, 3]
    await ws.close()  # processed up to 3, acked nothing

    await alice.enqueue(q, b"\x04")
    ws = await open_with_ticket(server.url, await new_ticket(bob))  # every socket: a new ticket
    try:
        await hello(ws, queue_keys={q: key}, queues={q: 3})
        assert await recv_items(ws, 1) == [(q, 4, b"\x04")]
    finally:
        await ws.close()


async def test_library_connects_with_tickets_and_resumes(server, users):
    alice = await users.new("a")
    bob = await users.new("b")
    q = await bob.create_queue()
    await alice.enqueue(q, b"first")
    async with Realtime(bob, use_ticket=True) as rt:
        assert rt.ready["queues"] == [q]
        d = await rt.receive(timeout=10)
        assert (d.queue_id, d.last_seq) == (q, 1)
        await rt.ack({q: 1})
    assert [m.seq for m in (await bob.fetch_queue(q)).messages] == []

    # listen() reconnects with a fresh ticket each time and resumes where the last one stopped.
    await alice.enqueue(q, b"second")
    stream = listen(bob, positions={q: 1}, use_ticket=True)
    try:
        d = await asyncio.wait_for(anext(stream), 10)
        assert [(m.seq, m.payload) for m in d.messages] == [(2, b"second")]
    finally:
        await stream.aclose()
    # The header path of the library keeps working beside it.
    await alice.enqueue(q, b"third")
    async with Realtime(bob, positions={q: 2}) as rt:
        d = await rt.receive(timeout=10)
        assert [(m.seq, m.payload) for m in d.messages] == [(3, b"third")]


# ---- refusals ------------------------------------------------------------------------------


async def test_used_unknown_and_malformed_tickets_are_refused(server, users):
    alice = await users.new("a")
    ticket = await new_ticket(alice)
    ws = await open_with_ticket(server.url, ticket)
    await hello(ws)
    await ws.close()
    assert await refusal(server.url, ticket) == (401, "invalid_ticket")  # single use
    assert await refusal(server.url, b64u(secrets.token_bytes(32))) == (401, "invalid_ticket")
    assert await refusal(server.url, "not-a-ticket") == (401, "invalid_ticket")
    assert await refusal(server.url, await alice.bearer_token()) == (401, "invalid_ticket")
    # A ticket and a bearer token at once is ambiguous: refused, and the ticket stays unused.
    both = await new_ticket(alice)
    header = {"Authorization": f"Bearer {await alice.bearer_token()}"}
    assert await refusal(server.url, both, **header) == (400, "invalid_request")
    ws = await open_with_ticket(server.url, both)
    await hello(ws)
    await ws.close()
    # Issuing needs a bearer token; a plain GET of the endpoint explains the upgrade.
    r = httpx.post(server.url + "/v1/realtime/tickets")
    assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
    r = httpx.get(server.url + "/v1/realtime", params={"ticket": "x"})
    assert r.status_code == 426 and r.json()["code"] == "upgrade_required"


async def test_an_expired_ticket_is_refused(short_ticket_server):
    alice = await RoostClient.register(short_ticket_server.url, f"a{secrets.token_hex(5)}")
    try:
        ticket = await new_ticket(alice)
        await asyncio.sleep(2.1)
        assert await refusal(short_ticket_server.url, ticket) == (401, "invalid_ticket")
    finally:
        await alice.aclose()


async def test_tickets_of_a_removed_client_or_deleted_account_are_refused(server, users):
    alice = await users.new("a")
    phone = await users.second_client(alice)
    unused = await new_ticket(phone)
    ws = await open_with_ticket(server.url, await new_ticket(phone))
    await hello(ws)
    await alice.remove_client(phone.client_uuid)
    assert await close_code(ws, timeout=5) == 4001  # the open socket closes at once
    assert await refusal(server.url, unused) == (401, "invalid_ticket")

    bob = await users.new("b")
    unused = await new_ticket(bob)
    await bob.delete_account()
    assert await refusal(server.url, unused) == (401, "invalid_ticket")


async def test_unused_tickets_per_client_are_bounded(server, users):
    alice = await users.new("a")
    tickets = [await new_ticket(alice) for _ in range(8)]
    with pytest.raises(RoostError) as e:
        await new_ticket(alice)
    assert (e.value.status, e.value.code) == (429, "too_many_tickets")
    ws = await open_with_ticket(server.url, tickets[0])  # using one makes room for another
    await hello(ws)
    await ws.close()
    await new_ticket(alice)
