"""Realtime delivery over WebSocket against real server processes (SQLite and PostgreSQL).

Items are enqueued through the ordinary HTTP paths (group-message queues, direct messages) and
must arrive over the socket without polling, for exactly the group queues whose keys the client
presented (``hello``'s ``queue_keys``, or a ``subscribe`` frame); acks travel over the socket; reconnects resume
with no loss, no duplicates and each queue's order kept — also across network drops in the
middle of a stream (a TCP proxy in the test cuts every connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import defaultdict

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from roost.client import RoostClient
from roost.client.realtime import Realtime, listen, parse_delivery_frame
from roost.protocol.base64url import b64u
from roost.protocol.message_batch import decode_message_batch

from .conftest import ENGINES, _start, unique_name

pytestmark = pytest.mark.timeout(120)

SHORT_IDLE = 2
SHORT_WINDOW = 5


# ---- helpers ----------------------------------------------------------------------------


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://", 1) + "/v1/realtime"


async def open_raw(
    base: str, token: str, hello: dict | None = None
) -> tuple[ClientConnection, dict]:
    """A bare protocol connection (no library): upgrade, hello, ready."""
    ws = await connect(
        ws_url(base),
        additional_headers={"Authorization": f"Bearer {token}"},
        compression=None,
        ping_interval=None,
        proxy=None,
        max_size=None,
    )
    await ws.send(json.dumps({"type": "hello", **(hello or {})}))
    ready = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert ready["type"] == "ready"
    return ws, ready


async def new_queue(client: RoostClient) -> tuple[str, str]:
    """A group-message queue created over HTTP: (queue id, its key, returned only now)."""
    body = (await client.request("POST", "/v1/queues")).json()
    return body["queue_id"], body["queue_key"]


def key_header(key: str) -> dict[str, str]:
    return {"Roost-Queue-Key": key}


async def fetch_seqs(client: RoostClient, q: str, key: str) -> list[int]:
    """The seqs still stored in ``q`` (HTTP fetch, authorised by the queue's key)."""
    r = await client.request("GET", f"/v1/queues/{q}/messages", headers=key_header(key))
    return [seq for seq, _ in decode_message_batch(r.content)]


async def ack_http(client: RoostClient, q: str, key: str, up_to: int) -> None:
    await client.request(
        "POST", f"/v1/queues/{q}/ack", json={"up_to": up_to}, headers=key_header(key)
    )


async def delete_http(client: RoostClient, q: str, key: str) -> None:
    await client.request("DELETE", f"/v1/queues/{q}", headers=key_header(key))


async def subscribe(ws: ClientConnection, keys: dict[str, str], **extra: object) -> dict:
    """Add queues to a live socket; the ``subscribed`` answer."""
    await ws.send(json.dumps({"type": "subscribe", "queue_keys": keys, **extra}))
    return await recv_control(ws, "subscribed")


async def recv_items(ws: ClientConnection, n: int, timeout: float = 10.0) -> list[tuple]:
    """``n`` items (queue id or None, seq, payload) from delivery frames; controls skipped."""
    out: list[tuple] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        frame = await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
        if isinstance(frame, bytes):
            d = parse_delivery_frame(frame)
            out.extend((d.queue_id, m.seq, m.payload) for m in d.messages)
    return out


async def recv_control(ws: ClientConnection, kind: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        frame = await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
        if isinstance(frame, str) and json.loads(frame)["type"] == kind:
            return json.loads(frame)


async def nothing_more(ws: ClientConnection, wait: float = 0.5) -> bool:
    with contextlib.suppress(TimeoutError):
        while True:
            frame = await asyncio.wait_for(ws.recv(), wait)
            if isinstance(frame, bytes):
                return False
    return True


async def close_code(ws: ClientConnection, timeout: float = 10.0) -> int | None:
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(timeout):
            async for _ in ws:
                pass
    return ws.close_code


class _Link:
    def __init__(self, *writers: asyncio.StreamWriter) -> None:
        self.writers = writers
        self.frozen = False  # swallow bytes both ways: a link dead without a FIN

    def abort(self) -> None:
        for w in self.writers:
            w.transport.abort()


class Proxy:
    """A TCP relay to the server: ``cut()`` aborts every connection through it (a network
    failure; HTTP keeps working, clients reconnect), ``freeze()`` silently drops everything on
    the current connections (a dead link that only pings can detect). ``drop_upgrades = n``:
    the next n WebSocket connections are cut right after the server accepted the upgrade (a
    link lost during the realtime handshake)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._links: list[_Link] = []
        self._server: asyncio.Server | None = None
        self.drop_upgrades = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        link = _Link(writer, up_writer)
        self._links.append(link)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    if not link.frozen:
                        dst.write(data)
                        await dst.drain()
                    if dst is writer and self.drop_upgrades and b" 101 " in data[:16]:
                        self.drop_upgrades -= 1
                        link.abort()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def freeze(self) -> None:
        for link in self._links:
            link.frozen = True

    def cut(self) -> None:
        links, self._links = self._links, []
        for link in links:
            link.abort()

    async def aclose(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)


@pytest.fixture(scope="module", params=ENGINES)
def short_server(request, tmp_path_factory):
    """A server with a 2 s idle timeout, 1 s ping advice and a 5-item unacked window."""
    srv = _start(
        request,
        tmp_path_factory,
        "roost-realtime",
        {
            "ROOST_LIMITS_REALTIME_IDLE_TIMEOUT_SECONDS": str(SHORT_IDLE),
            "ROOST_LIMITS_REALTIME_PING_INTERVAL_SECONDS": "1",
            "ROOST_LIMITS_REALTIME_WINDOW_MESSAGES": str(SHORT_WINDOW),
        },
    )
    yield srv
    srv.stop()


# ---- delivery, acks, order ---------------------------------------------------------------


async def test_items_arrive_without_polling_and_acks_delete_them(server, users):
    alice, bob = await users.connected_pair()
    q, key = await new_queue(bob)
    ws, ready = await open_raw(server.url, await bob.bearer_token(), {"queue_keys": {q: key}})
    try:
        assert ready["client_id"] == bob.client_id and ready["queues"] == [q]
        assert ready["refused"] == {}
        assert ready["window_messages"] >= 1 and ready["ping_interval"] > 0
        # The pairing's request and bob's own answer wait on the direct queue (not acked).
        pairing = await recv_items(ws, 2)
        assert [(w, json.loads(e)["type"]) for w, _, e in pairing] == [
            (None, "connection_request"),
            (None, "connection_accepted"),
        ]
        seq0 = pairing[-1][1]

        t0 = time.monotonic()
        assert await alice.enqueue(q, b"\x01" * 1024) == 1  # the queue id is the capability
        [(where, seq, payload)] = await recv_items(ws, 1)
        assert (where, seq, payload) == (q, 1, b"\x01" * 1024)
        assert time.monotonic() - t0 < 2.0
        await alice.send_direct(bob.user_id, b"direct hello")
        [(where, dseq, event)] = await recv_items(ws, 1)
        assert where is None and dseq == seq0 + 1
        assert json.loads(event)["type"] == "message"

        for i in range(2, 5):
            await alice.enqueue(q, bytes([i]))
        assert [s for _, s, _ in await recv_items(ws, 3)] == [2, 3, 4]

        # Acks over the socket: confirmed once committed, then gone for HTTP fetches too.
        await ws.send(json.dumps({"type": "ack", "queues": {q: 3}, "direct": dseq, "id": 11}))
        assert (await recv_control(ws, "acked"))["id"] == 11
        assert await fetch_seqs(bob, q, key) == [4]
        assert (await bob.fetch_direct(0)).events == ()  # bob is the user's only client
        await ws.send(json.dumps({"type": "ping", "id": 5}))
        assert await recv_control(ws, "pong") == {"type": "pong", "id": 5}
        # Acking a queue this socket did not accept (no key shown) breaks the protocol.
        foreign, foreign_key = await new_queue(alice)
        await alice.enqueue(foreign, b"keep me")
        await ws.send(json.dumps({"type": "ack", "queues": {foreign: 1}, "id": "x"}))
        assert await close_code(ws) == 4400
        assert await fetch_seqs(alice, foreign, foreign_key) == [1]  # nothing deleted
    finally:
        await ws.close()


async def test_a_wrong_key_is_refused_and_nothing_of_its_queue_arrives(server, users):
    alice = await users.new("a")
    bob = await users.new("b")
    mine, mine_key = await new_queue(bob)
    theirs, theirs_key = await new_queue(alice)
    await alice.enqueue(theirs, b"stored before")
    unknown = b64u(b"\x00" * 16)
    ws, ready = await open_raw(
        server.url,
        await bob.bearer_token(),
        {
            # bob knows alice's queue id (it is the write capability), not its key
            "queue_keys": {mine: mine_key, theirs: mine_key, unknown: mine_key},
            "queues": {theirs: 0},
        },
    )
    try:
        assert ready["queues"] == [mine]
        assert ready["refused"] == {theirs: "forbidden", unknown: "queue_not_found"}
        await alice.enqueue(theirs, b"live")
        await alice.enqueue(mine, b"for bob")
        assert await recv_items(ws, 1) == [(mine, 1, b"for bob")]
        assert await nothing_more(ws)
        # The socket stays usable; acking the refused queue is a protocol error.
        await ws.send(json.dumps({"type": "ack", "queues": {theirs: 2}}))
        assert await close_code(ws) == 4400
        assert await fetch_seqs(alice, theirs, theirs_key) == [1, 2]
    finally:
        await ws.close()
    # The key holder's socket gets them.
    ws, ready = await open_raw(
        server.url, await alice.bearer_token(), {"queue_keys": {theirs: theirs_key}}
    )
    try:
        assert ready["queues"] == [theirs] and ready["refused"] == {}
        assert await recv_items(ws, 2) == [(theirs, 1, b"stored before"), (theirs, 2, b"live")]
    finally:
        await ws.close()


async def test_queue_created_after_connecting_is_delivered_once_subscribed(server, users):
    alice = await users.new("a")
    ws, ready = await open_raw(server.url, await alice.bearer_token(), {"queue_keys": {}})
    try:
        assert ready["queues"] == [] and ready["refused"] == {}
        q, key = await new_queue(alice)
        await alice.enqueue(q, b"late queue")
        assert await nothing_more(ws)  # no key shown yet: not served
        other, other_key = await new_queue(alice)
        answer = await subscribe(ws, {q: key, other: key}, id=3)
        assert answer == {
            "type": "subscribed",
            "queues": [q],
            "refused": {other: "forbidden"},
            "id": 3,
        }
        assert await recv_items(ws, 1) == [(q, 1, b"late queue")]
        await alice.enqueue(q, b"live")
        await alice.enqueue(other, b"not subscribed")
        assert await recv_items(ws, 1) == [(q, 2, b"live")]
        assert await nothing_more(ws)
        # A position skips what was already processed (e.g. fetched over HTTP).
        await alice.enqueue(other, b"after")
        answer = await subscribe(ws, {other: other_key}, queues={other: 1})
        assert answer["queues"] == [other] and answer["refused"] == {}
        assert await recv_items(ws, 1) == [(other, 2, b"after")]
        await ws.send(json.dumps({"type": "ack", "queues": {q: 2, other: 2}, "id": 4}))
        assert (await recv_control(ws, "acked"))["id"] == 4
        assert (
            await fetch_seqs(alice, q, key) == []
            and await fetch_seqs(alice, other, other_key) == []
        )
    finally:
        await ws.close()


async def test_many_queues_interleaved_keep_their_order(server, users):
    alice, bob = await users.connected_pair()
    keys = dict([await new_queue(bob) for _ in range(3)])
    queues = list(keys)
    ws, _ = await open_raw(server.url, await bob.bearer_token(), {"queue_keys": keys})
    try:
        await recv_items(ws, 2)  # the connection request and bob's own answer

        async def producer(q: str) -> None:
            for i in range(40):
                await alice.enqueue(q, f"{q}:{i}".encode())

        await asyncio.gather(*(producer(q) for q in queues))
        got = await recv_items(ws, 120, timeout=30)
        by_queue: dict[str, list[int]] = defaultdict(list)
        for where, seq, payload in got:
            assert payload == f"{where}:{seq - 1}".encode()
            by_queue[where].append(seq)
        assert {q: by_queue[q] for q in queues} == {q: list(range(1, 41)) for q in queues}
        assert await nothing_more(ws)
    finally:
        await ws.close()


# ---- resume --------------------------------------------------------------------------------


async def test_resume_after_drop_mid_stream_without_loss_or_duplicates(server, users):
    alice, bob = await users.connected_pair()
    q, key = await new_queue(bob)
    keys = {q: key}
    for i in range(1, 11):
        await alice.enqueue(q, b"m%d" % i)
    ws, _ = await open_raw(server.url, await bob.bearer_token(), {"queue_keys": keys})
    first = await recv_items(ws, 12)
    assert [s for w, s, _ in first if w == q] == list(range(1, 11))
    # the connection request and bob's own answer
    *_, request_seq = [s for w, s, _ in first if w is None]
    # The client processed 1..6, acked 1..3, then the network dropped (before more acks).
    await ws.send(json.dumps({"type": "ack", "queues": {q: 3}, "id": 1}))
    await recv_control(ws, "acked")
    ws.transport.abort()
    for i in range(11, 16):  # enqueued while disconnected
        await alice.enqueue(q, b"m%d" % i)

    # Resuming after what was processed: exactly the rest, in order.
    ws, _ = await open_raw(
        server.url, await bob.bearer_token(), {"queue_keys": keys, "queues": {q: 6}}
    )
    try:
        rest = [(s, p) for w, s, p in await recv_items(ws, 10) if w == q]
        assert rest == [(i, b"m%d" % i) for i in range(7, 16)]
        assert await nothing_more(ws)
    finally:
        await ws.close()

    # Without positions the server resends everything not acked (at-least-once), from 4.
    ws, _ = await open_raw(
        server.url, await bob.bearer_token(), {"queue_keys": keys, "direct": request_seq}
    )
    try:
        again = [s for w, s, _ in await recv_items(ws, 12) if w == q]
        assert again == list(range(4, 16))
    finally:
        await ws.close()


async def test_library_listen_reconnects_when_the_link_drops_during_the_handshake(server, users):
    """A link lost after the upgrade but before ``ready`` is a closed connection like any
    other: ``listen`` reconnects (it used to end with a websockets exception)."""
    proxy = await Proxy(server.port).start()
    alice = await users.new("a")
    bob = users.track(await RoostClient.register(proxy.url, unique_name("b")))
    q = await bob.create_queue()
    await alice.enqueue(q, b"waiting")
    proxy.drop_upgrades = 2  # the first two realtime connections die in the handshake
    deliveries = listen(bob, max_backoff=0.2)
    try:
        d = await asyncio.wait_for(anext(deliveries), 30)
        assert d.queue_id == q and [m.payload for m in d.messages] == [b"waiting"]
        assert proxy.drop_upgrades == 0
    finally:
        await deliveries.aclose()
        await proxy.aclose()


async def test_library_listen_survives_network_drops(server, users):
    """``listen`` across three network cuts while two producers keep sending: every item of
    every queue arrives once, in order (group queues and the direct queue)."""
    proxy = await Proxy(server.port).start()
    alice = await users.new("a")
    bob = users.track(await RoostClient.register(proxy.url, unique_name("b")))
    conn = await alice.open_connection(bob.user_id)
    await alice.send_connection_request(conn.connection_id, b"hi")
    await bob.accept_connection(conn.connection_id)
    queues = [await bob.create_queue() for _ in range(2)]
    per_queue = 60
    expected = {q: per_queue for q in queues}
    received: dict[str | None, list[tuple[int, bytes]]] = defaultdict(list)
    done = asyncio.Event()

    async def consume() -> None:
        async for d in listen(bob, max_backoff=0.5):
            received[d.queue_id].extend((m.seq, m.payload) for m in d.messages)
            if (
                all(len(received[q]) >= n for q, n in expected.items())
                and len(received[None]) >= per_queue + 2
            ):
                done.set()

    consumer = asyncio.create_task(consume())
    try:

        async def produce() -> None:
            for i in range(per_queue):
                for q in queues:
                    await alice.enqueue(q, f"{q}/{i}".encode())
                await alice.send_direct(bob.user_id, f"d{i}".encode())
                if i in (10, 30, 45):
                    proxy.cut()

        await produce()
        await asyncio.wait_for(done.wait(), 60)
    finally:
        consumer.cancel()
        with contextlib.suppress(BaseException):
            await consumer
        await proxy.aclose()
    for q in queues:
        assert received[q] == [(i + 1, f"{q}/{i}".encode()) for i in range(per_queue)]
    direct = received[None]
    seqs = [s for s, _ in direct]
    # the request, bob's own answer, the messages
    assert seqs == sorted(set(seqs)) and len(seqs) == per_queue + 2
    assert seqs == list(range(seqs[0], seqs[0] + per_queue + 2))
    assert [json.loads(p)["payload"] for _, p in direct[2:]] == [
        b64u(f"d{i}".encode()) for i in range(per_queue)
    ]


async def test_library_realtime_acks_and_resume(server, users):
    alice, bob = await users.connected_pair()
    q = await bob.create_queue()
    async with Realtime(bob) as rt:
        while (rt.direct or 0) < 2:  # the connection request and bob's own answer (direct)
            await rt.receive(timeout=10)
        for i in range(5):
            await alice.enqueue(q, bytes([i]))
        seqs: list[int] = []
        while len(seqs) < 5:
            d = await rt.receive(timeout=10)
            seqs += [m.seq for m in d.messages]
        assert seqs == [1, 2, 3, 4, 5]
        await rt.ack({q: 2})  # waits for the server's confirmation
        assert [m.seq for m in (await bob.fetch_queue(q)).messages] == [3, 4, 5]
        positions, direct = dict(rt.positions), rt.direct
    assert positions == {q: 5} and direct == 2
    await alice.enqueue(q, b"after")
    async with Realtime(bob, positions=positions, direct=direct) as rt:
        d = await rt.receive(timeout=10)
        assert d.queue_id == q and [(m.seq, m.payload) for m in d.messages] == [(6, b"after")]


# ---- flow control, pings, idle timeout (short server) ---------------------------------------


async def test_unacked_window_bounds_what_is_sent(short_server):
    alice = await RoostClient.register(short_server.url, unique_name("w"))
    try:
        q, key = await new_queue(alice)
        for i in range(12):
            await alice.enqueue(q, bytes([i]) * 100)
        ws, ready = await open_raw(
            short_server.url, await alice.bearer_token(), {"queue_keys": {q: key}}
        )
        try:
            assert ready["window_messages"] == SHORT_WINDOW
            first = await recv_items(ws, SHORT_WINDOW)
            assert [s for _, s, _ in first] == [1, 2, 3, 4, 5]
            assert await nothing_more(ws)  # the window is full until an ack
            await ws.send(json.dumps({"type": "ack", "queues": {q: 3}}))
            assert [s for _, s, _ in await recv_items(ws, 3)] == [6, 7, 8]
            # An ack made over HTTP frees the socket's window as well.
            await ack_http(alice, q, key, 8)
            assert [s for _, s, _ in await recv_items(ws, 4)] == [9, 10, 11, 12]
        finally:
            await ws.close()
    finally:
        await alice.aclose()


async def test_deleting_a_queue_frees_the_window(short_server):
    alice = await RoostClient.register(short_server.url, unique_name("w"))
    try:
        keys = dict([await new_queue(alice), await new_queue(alice)])
        full, other = keys
        for i in range(SHORT_WINDOW):
            await alice.enqueue(full, bytes([i]))
        ws, _ = await open_raw(short_server.url, await alice.bearer_token(), {"queue_keys": keys})
        try:
            assert len(await recv_items(ws, SHORT_WINDOW)) == SHORT_WINDOW
            await alice.enqueue(other, b"waiting")
            assert await nothing_more(ws)  # the window is full of the first queue's items
            await delete_http(alice, full, keys[full])  # never acked, but gone: not in flight
            assert await recv_items(ws, 1) == [(other, 1, b"waiting")]
        finally:
            await ws.close()
    finally:
        await alice.aclose()


async def test_pings_keep_an_idle_connection_alive_and_silence_closes_it(short_server):
    alice = await RoostClient.register(short_server.url, unique_name("p"))
    try:
        ws, ready = await open_raw(short_server.url, await alice.bearer_token())
        assert ready["idle_timeout"] == SHORT_IDLE and ready["ping_interval"] == 1
        for i in range(8):  # 4 s, twice the idle timeout
            await ws.send(json.dumps({"type": "ping", "id": i}))
            assert (await recv_control(ws, "pong"))["id"] == i
            await asyncio.sleep(0.5)
        q, key = await new_queue(alice)
        assert (await subscribe(ws, {q: key}))["queues"] == [q]
        await alice.enqueue(q, b"still here")
        assert await recv_items(ws, 1) == [(q, 1, b"still here")]
        t0 = time.monotonic()
        assert await close_code(ws) == 4408  # silence: closed for idleness
        assert time.monotonic() - t0 < SHORT_IDLE + 2
    finally:
        await alice.aclose()


async def test_library_pings_on_its_own(short_server):
    """The library pings every ping_interval from ready: idle twice the timeout, still open."""
    alice = await RoostClient.register(short_server.url, unique_name("p"))
    try:
        q = await alice.create_queue()
        await alice.enqueue(q, b"first")
        async with Realtime(alice, positions={q: 1}) as rt:
            await asyncio.sleep(SHORT_IDLE * 2 + 1)
            await alice.enqueue(q, b"library")
            d = await rt.receive(timeout=5)
            assert [m.payload for m in d.messages] == [b"library"]
    finally:
        await alice.aclose()


# ---- authentication and protocol errors ----------------------------------------------------


async def test_auth_failures_are_refused(server, users):
    alice = await users.new("a")
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic x"}):
        with pytest.raises(InvalidStatus) as e:
            await connect(ws_url(server.url), additional_headers=headers, proxy=None)
        assert e.value.response.status_code == 401
        assert json.loads(e.value.response.body)["code"] == "unauthenticated"
    # A plain GET explains itself (and the route is in the OpenAPI document).
    r = httpx.get(server.url + "/v1/realtime")
    assert r.status_code == 426 and r.json()["code"] == "upgrade_required"

    # Switching to a bad token in-band closes with 4001; a good one is accepted.
    ws, _ = await open_raw(server.url, await alice.bearer_token())
    await ws.send(json.dumps({"type": "auth", "token": await alice.authenticate()}))
    await recv_control(ws, "authed")
    await ws.send(json.dumps({"type": "auth", "token": "AAAA"}))
    assert await close_code(ws) == 4001


async def test_removed_client_is_disconnected_at_once(server, users):
    alice = await users.new("a")
    phone = await users.second_client(alice)
    ws, _ = await open_raw(server.url, await phone.bearer_token())
    await alice.remove_client(phone.client_uuid)
    assert await close_code(ws, timeout=5) == 4001
    with pytest.raises(InvalidStatus) as e:
        await connect(
            ws_url(server.url),
            additional_headers={"Authorization": f"Bearer {phone.state.token}"},
            proxy=None,
        )
    assert e.value.response.status_code == 401


async def test_protocol_errors_and_replacement(server, users):
    alice = await users.new("a")
    token = await alice.bearer_token()
    headers = {"Authorization": f"Bearer {token}"}
    for first in ("not json", json.dumps({"type": "ack"}), b"\x01binary"):
        ws = await connect(ws_url(server.url), additional_headers=headers, proxy=None)
        await ws.send(first)
        assert await close_code(ws) == 4400
    ws, _ = await open_raw(server.url, token)
    await ws.send(json.dumps({"type": "nonsense"}))
    assert await close_code(ws) == 4400
    ws, _ = await open_raw(server.url, token)
    await ws.send(json.dumps({"type": "ping", "id": "x" * 100_000}))  # above 64 KiB
    assert await close_code(ws) == 1009
    for keys in ([], {"not-an-id": "AAAA"}, {b64u(b"\x01" * 16): 7}):  # malformed queue_keys
        ws = await connect(ws_url(server.url), additional_headers=headers, proxy=None)
        await ws.send(json.dumps({"type": "hello", "queue_keys": keys}))
        assert await close_code(ws) == 4400

    # One socket per client: a newer connection replaces the older one (4409).
    old, _ = await open_raw(server.url, token)
    new, _ = await open_raw(server.url, token)
    try:
        assert await close_code(old) == 4409
        q, key = await new_queue(alice)
        await subscribe(new, {q: key})
        await alice.enqueue(q, b"to the new one")
        assert await recv_items(new, 1) == [(q, 1, b"to the new one")]
    finally:
        await new.close()


async def test_library_detects_a_dead_link_by_its_pings(short_server):
    """A link that swallows everything (no FIN): the library notices the missing pongs,
    reconnects, and resumes; items enqueued meanwhile arrive once."""
    proxy = await Proxy(short_server.port).start()
    alice = await RoostClient.register(proxy.url, unique_name("d"))
    sender = await RoostClient.register(short_server.url, unique_name("s"))  # not via the proxy
    try:
        q = await alice.create_queue()
        deliveries = listen(alice, max_backoff=0.5)
        await sender.enqueue(q, b"before")
        first = await asyncio.wait_for(deliveries.__anext__(), 10)
        assert [(m.seq, m.payload) for m in first.messages] == [(1, b"before")]
        proxy.freeze()
        t0 = time.monotonic()
        await sender.enqueue(q, b"during")
        second = await asyncio.wait_for(deliveries.__anext__(), 15)
        assert [(m.seq, m.payload) for m in second.messages] == [(2, b"during")]
        assert time.monotonic() - t0 < 10  # ping interval 1 s: dead after 3 s, then resumed
        await deliveries.aclose()
    finally:
        await proxy.aclose()
        await alice.aclose()
        await sender.aclose()
