"""Two real ``roost serve`` processes on one PostgreSQL database (several processes).

A client connected by WebSocket to process A receives, without polling and in order, what
another client sent through process B: DS group traffic and direct/queue items — also after
the LISTEN connections were killed. Acks over HTTP on B free A's window; removing a client or
deleting an account through B closes its socket on A; a realtime ticket issued through B
opens one socket on A. Ends with a cross-process latency table.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time

import asyncpg
import httpx
import pytest

from roost.protocol.base64url import unb64u
from roost.protocol.media_types import MLS_MEDIA_TYPE
from roost.server.notify.pg_bridge import APPLICATION_NAME

from .conftest import Users
from .harness import ServerProcess
from .test_realtime_delivery import (
    close_code,
    fetch_seqs,
    new_queue,
    nothing_more,
    open_raw,
    recv_items,
    subscribe,
)
from .test_realtime_groups import Listening, wait_until
from .test_realtime_tickets import hello, open_with_ticket, refusal

pytestmark = pytest.mark.timeout(180)

WINDOW = 5


@pytest.fixture(scope="module")
def two_servers(postgres_database, tmp_path_factory):
    """Processes A and B (different loopback ports) on one fresh PostgreSQL database, sharing
    the queue seal key as the processes of one server must."""
    url = postgres_database()
    env = {
        "ROOST_LIMITS_REALTIME_WINDOW_MESSAGES": str(WINDOW),
        "ROOST_QUEUE_SEAL_KEY_FILE": str(tmp_path_factory.mktemp("mp-seal") / "queue-seal.key"),
    }
    a = ServerProcess("postgresql", tmp_path_factory.mktemp("mp-a"), url, env).start()
    try:
        b = ServerProcess("postgresql", tmp_path_factory.mktemp("mp-b"), url, env).start()
    except BaseException:
        a.stop()
        raise
    yield a, b, url
    b.stop()
    a.stop()


@pytest.fixture
async def on_a(two_servers):
    u = Users(two_servers[0].url)
    yield u
    await u.aclose()


@pytest.fixture
async def on_b(two_servers):
    u = Users(two_servers[1].url)
    yield u
    await u.aclose()


async def pair(on_a: Users, on_b: Users):
    """Alice registered through B, Bob through A, with an accepted connection."""
    alice = await on_b.new("a")
    bob = await on_a.new("b")
    conn = await alice.open_connection(bob.user_id)
    await alice.send_connection_request(conn.connection_id, b"hello")
    await bob.accept_connection(conn.connection_id)
    return alice, bob


async def listen_connections(url: str) -> list[int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 "
            "AND datname = current_database()",
            APPLICATION_NAME,
        )
        return [r["pid"] for r in rows]
    finally:
        await conn.close()


async def kill_listen_connections(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = $1 AND datname = current_database()",
            APPLICATION_NAME,
        )
    finally:
        await conn.close()


async def test_each_process_holds_one_listen_connection(two_servers):
    assert len(await listen_connections(two_servers[2])) == 2


async def test_queue_and_direct_items_sent_through_b_arrive_on_a_in_order(two_servers, on_a, on_b):
    a, _b, _ = two_servers
    alice, bob = await pair(on_a, on_b)
    q, key = await new_queue(bob)
    ws, _ = await open_raw(a.url, await bob.bearer_token(), {"queue_keys": {q: key}})
    try:
        pairing = await recv_items(ws, 2)  # the connection request and bob's own answer
        assert [(w, json.loads(e)["type"]) for w, _, e in pairing] == [
            (None, "connection_request"),
            (None, "connection_accepted"),
        ]
        seq0 = pairing[-1][1]
        await bob.ack_direct(seq0)
        t0 = time.monotonic()
        await alice.enqueue(q, b"first")
        [item] = await recv_items(ws, 1)
        assert item == (q, 1, b"first")
        assert time.monotonic() - t0 < 2.0  # pushed, not polled
        await ws.send(json.dumps({"type": "ack", "queues": {q: 1}}))  # room in the window
        for i in range(2, 5):
            assert await alice.enqueue(q, b"q%d" % i) == i
        await alice.send_direct(bob.user_id, b"d1")
        await alice.send_direct(bob.user_id, b"d2")
        got = await recv_items(ws, 5, timeout=20)
        assert [x for x in got if x[0] == q] == [(q, i, b"q%d" % i) for i in range(2, 5)]
        direct = [(s, json.loads(p)) for w, s, p in got if w is None]
        assert [s for s, _ in direct] == [seq0 + 1, seq0 + 2]
        assert [unb64u(e["payload"]) for _, e in direct] == [b"d1", b"d2"]
        assert await nothing_more(ws)  # no duplicate from the origin's own notification
        # A queue added on A with subscribe hears what is sent through B too; a queue whose
        # key was not shown does not (the window emptied first).
        await ws.send(json.dumps({"type": "ack", "queues": {q: 4}, "direct": seq0 + 2}))
        later, later_key = await new_queue(bob)
        unshown, _ = await new_queue(bob)
        assert (await subscribe(ws, {later: later_key}))["queues"] == [later]
        await alice.enqueue(unshown, b"not served")
        await alice.enqueue(later, b"later")
        assert await recv_items(ws, 1) == [(later, 1, b"later")]
        assert await nothing_more(ws)
    finally:
        await ws.close()


async def test_group_traffic_sent_through_b_arrives_over_the_socket_on_a(on_a, on_b):
    from tests.e2e.helpers import connect, member

    alice = member(await on_b.new("ga", keypackages=3))
    bob = member(await on_a.new("gb", keypackages=3))
    await connect(alice, bob)
    gid = (await alice.groups.create()).group_id
    bob_rt = Listening(bob)
    try:
        await wait_until(lambda: bob.groups.realtime is not None)
        await alice.groups.invite(gid, [bob.user_id])  # the Welcome crosses processes too
        await wait_until(lambda: bool(bob_rt.of(gid, "joined")))
        for i in range(5):
            await alice.groups.send(gid, f"hello {i}", message_id=f"m{i}")
        await wait_until(lambda: len(bob_rt.of(gid, "message")) == 5)
        assert [e.message for e in bob_rt.of(gid, "message")] == [f"hello {i}" for i in range(5)]
    finally:
        await bob_rt.aclose()


async def test_delivery_resumes_after_the_listen_connections_drop(two_servers, on_a, on_b):
    a, _b, url = two_servers
    alice, bob = await pair(on_a, on_b)
    q, key = await new_queue(bob)
    ws, _ = await open_raw(
        a.url, await bob.bearer_token(), {"queue_keys": {q: key}, "direct": 10**9}
    )
    try:
        await alice.enqueue(q, b"before")
        assert await recv_items(ws, 1) == [(q, 1, b"before")]
        assert await kill_listen_connections(url) == 2
        # Sent while the processes may be deaf: heard live, or re-read after the reconnect.
        for i in range(2, 6):
            await alice.enqueue(q, b"during %d" % i)
        got = await recv_items(ws, 4, timeout=30)
        assert got == [(q, i, b"during %d" % i) for i in range(2, 6)]
        await ws.send(json.dumps({"type": "ack", "queues": {q: 5}}))  # room in the window
        # Both processes listen again, and live wake-ups work as before.
        deadline = time.monotonic() + 30
        while len(await listen_connections(url)) != 2:
            assert time.monotonic() < deadline, "LISTEN connections not re-opened"
            await asyncio.sleep(0.2)
        await alice.enqueue(q, b"after")
        assert await recv_items(ws, 1) == [(q, 6, b"after")]
    finally:
        await ws.close()


async def test_an_ack_over_http_on_b_frees_the_window_on_a(two_servers, on_a, on_b):
    a, b, _ = two_servers
    alice, bob = await pair(on_a, on_b)
    q, key = await new_queue(bob)
    token = await bob.bearer_token()
    ws, _ = await open_raw(a.url, token, {"queue_keys": {q: key}, "direct": 10**9})
    try:
        for i in range(1, WINDOW + 3):
            await alice.enqueue(q, b"w%d" % i)
        assert [s for _, s, _ in await recv_items(ws, WINDOW)] == list(range(1, WINDOW + 1))
        assert await nothing_more(ws)  # the window is full
        async with httpx.AsyncClient(base_url=b.url) as http:
            r = await http.post(
                f"/v1/queues/{q}/ack",
                json={"up_to": WINDOW},
                headers={"Authorization": f"Bearer {token}", "Roost-Queue-Key": key},
            )
            assert r.status_code < 300, r.text
        rest = await recv_items(ws, 2)
        assert [s for _, s, _ in rest] == [WINDOW + 1, WINDOW + 2]
    finally:
        await ws.close()


async def test_a_realtime_ack_on_b_frees_the_window_on_a(two_servers, on_a, on_b):
    """The same queue listened to on both processes: acks sent over B's socket (written as one
    statement with its notifications) reach A, whose socket gets the rest, and the acked items
    are gone from the queue."""
    a, b, _ = two_servers
    alice, bob = await pair(on_a, on_b)
    q, key = await new_queue(bob)
    on_a_ws, _ = await open_raw(
        a.url, await bob.bearer_token(), {"queue_keys": {q: key}, "direct": 10**9}
    )
    on_b_ws, _ = await open_raw(
        b.url, await bob.bearer_token(), {"queue_keys": {q: key}, "direct": 10**9}
    )
    try:
        for i in range(1, WINDOW + 3):
            await alice.enqueue(q, b"w%d" % i)
        assert [s for _, s, _ in await recv_items(on_a_ws, WINDOW)] == list(range(1, WINDOW + 1))
        assert await nothing_more(on_a_ws)  # A's window is full
        assert [s for _, s, _ in await recv_items(on_b_ws, WINDOW)] == list(range(1, WINDOW + 1))
        await on_b_ws.send(json.dumps({"type": "ack", "queues": {q: WINDOW}}))
        rest = await recv_items(on_a_ws, 2)
        assert [s for _, s, _ in rest] == [WINDOW + 1, WINDOW + 2]
        assert await fetch_seqs(bob, q, key) == [WINDOW + 1, WINDOW + 2]
    finally:
        await on_a_ws.close()
        await on_b_ws.close()


async def test_removing_a_client_through_b_closes_its_socket_on_a(two_servers, on_a, on_b):
    a, _b, _ = two_servers
    owner = await on_b.new("owner", password="correct horse battery staple")
    second = await on_a.second_client(owner)
    ws, _ = await open_raw(a.url, await second.bearer_token(), {"direct": 10**9})
    t0 = time.monotonic()
    await owner.remove_client(second.client_uuid)
    assert await close_code(ws) == 4001
    assert time.monotonic() - t0 < 3.0  # at once, not at the next token re-check


async def test_deleting_an_account_through_b_closes_its_sockets_on_a(two_servers, on_a, on_b):
    a, b, _ = two_servers
    user = await on_a.new("gone")
    token = await user.bearer_token()
    ws, _ = await open_raw(a.url, token, {"direct": 10**9})
    t0 = time.monotonic()
    async with httpx.AsyncClient(base_url=b.url) as http:
        r = await http.delete("/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code < 300, r.text
    assert await close_code(ws) == 4001
    assert time.monotonic() - t0 < 3.0


async def test_a_ticket_issued_through_b_opens_one_socket_on_a(two_servers, on_a, on_b):
    a, b, _ = two_servers
    alice, bob = await pair(on_a, on_b)
    q, key = await new_queue(bob)
    async with httpx.AsyncClient(base_url=b.url) as http:
        r = await http.post(
            "/v1/realtime/tickets",
            headers={"Authorization": f"Bearer {await bob.bearer_token()}"},
        )
        assert r.status_code == 200, r.text
    ticket = r.json()["ticket"]
    ws = await open_with_ticket(a.url, ticket)
    try:
        await hello(ws, direct=10**9, queue_keys={q: key})
        await alice.enqueue(q, b"through b")
        assert await recv_items(ws, 1) == [(q, 1, b"through b")]
        # Used on A: refused on B as on A (one row in the shared database, deleted once).
        assert await refusal(b.url, ticket) == (401, "invalid_ticket")
        assert await refusal(a.url, ticket) == (401, "invalid_ticket")
    finally:
        await ws.close()


async def test_cross_process_latency_table(two_servers, on_a, on_b):
    """Send through B → receive on A's socket, against the same path within one process."""
    a, b, _ = two_servers
    alice, bob = await pair(on_a, on_b)
    q, key = await new_queue(bob)
    token = await bob.bearer_token()
    sender_token = await alice.bearer_token()
    rows = []
    last = 0
    for label, base in (("same process (A→A)", a.url), ("cross process (B→A)", b.url)):
        ws, _ = await open_raw(
            a.url, token, {"direct": 10**9, "queues": {q: last}, "queue_keys": {q: key}}
        )
        lat: list[float] = []
        try:
            async with httpx.AsyncClient(base_url=base) as http:
                for _ in range(60):
                    t0 = time.perf_counter()
                    r = await http.post(
                        f"/v1/queues/{q}/messages",
                        content=b"x" * 256,
                        headers={
                            "Authorization": f"Bearer {sender_token}",
                            "Content-Type": MLS_MEDIA_TYPE,
                        },
                    )
                    assert r.status_code < 300, r.text
                    [(_, seq, _)] = await recv_items(ws, 1)
                    last = seq
                    lat.append((time.perf_counter() - t0) * 1000)
                    await ws.send(json.dumps({"type": "ack", "queues": {q: seq}}))
        finally:
            await ws.close()
        lat.sort()
        rows.append((label, statistics.median(lat), lat[int(len(lat) * 0.99) - 1]))
    print("\n| path | p50 ms | p99 ms |\n|---|---|---|")
    for label, p50, p99 in rows:
        print(f"| {label} | {p50:.1f} | {p99:.1f} |")
    assert rows[1][1] < 250  # cross-process wake-ups are live, not polled
