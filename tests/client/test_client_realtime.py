"""The realtime client against a small in-test WebSocket server speaking docs/api.md's protocol."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from websockets.asyncio.server import serve

from roost.client import ClientState, RoostClient
from roost.client.realtime import Realtime, RealtimeClosed, listen, parse_delivery_frame
from roost.mls.codec import Writer
from roost.mls.errors import DecodeError

QID = bytes(range(16))
KEY = "k" * 43  # the queue's key, as the server handed it out (b64u of 32 bytes)


def frame(kind: int, entries: list[tuple[int, bytes]], queue_id: bytes = b"") -> bytes:
    w = Writer()
    w.u8(kind)
    w.fixed(queue_id)
    for seq, payload in entries:
        w.u64(seq)
        w.opaque(payload)
    return w.getvalue()


def test_parse_delivery_frames():
    d = parse_delivery_frame(frame(1, [(3, b"a"), (4, b"bc")], QID))
    assert d.queue_id is not None and d.last_seq == 4
    assert [(m.seq, m.payload) for m in d.messages] == [(3, b"a"), (4, b"bc")]
    ev = json.dumps({"type": "message", "from": "a@b", "payload": "AQ"}).encode()
    direct = parse_delivery_frame(frame(2, [(7, ev)]))
    assert direct.queue_id is None and direct.direct_events()[0].payload == b"\x01"
    for bad in (b"", b"\x03", frame(1, [], QID), frame(2, [(1, b"x")])[:-1], b"\x01" + QID[:5]):
        with pytest.raises(DecodeError):
            parse_delivery_frame(bad)


class FakeServer:
    """Accepts hello, replays what is stored after the client's positions, answers pings and
    acks; ``drop_after_first`` closes the first connection with 1011 after one delivery."""

    def __init__(self, drop_after_first: bool = False) -> None:
        self.stored = [(1, b"one"), (2, b"two"), (3, b"three")]
        self.hellos: list[dict] = []
        self.acks: list[dict] = []
        self.auth_headers: list[str] = []
        self.connections = 0
        self.drop_after_first = drop_after_first

    async def handler(self, ws) -> None:
        self.connections += 1
        self.auth_headers.append(ws.request.headers.get("Authorization", ""))
        hello = json.loads(await ws.recv())
        self.hellos.append(hello)
        after = hello["queues"].get(_b64(QID), 0)
        await ws.send(json.dumps({"type": "ready", "queues": [_b64(QID)], "ping_interval": 1}))
        pending = [e for e in self.stored if e[0] > after]
        if self.drop_after_first and self.connections == 1:
            await ws.send(frame(1, pending[:1], QID))
            await asyncio.sleep(0.05)
            await ws.close(1011, "boom")
            return
        if pending:
            await ws.send(frame(1, pending, QID))
        await ws.send(frame(2, [(5, json.dumps({"type": "message", "from": "x@y"}).encode())]))
        async for msg in ws:
            m = json.loads(msg)
            if m["type"] == "ack":
                self.acks.append(m)
                if "id" in m:
                    await ws.send(json.dumps({"type": "acked", "id": m["id"]}))
            elif m["type"] == "ping":
                await ws.send(json.dumps({"type": "pong", "id": m.get("id")}))
            elif m["type"] == "bye":
                await ws.close(1000)


def _b64(b: bytes) -> str:
    from roost.protocol.base64url import b64u

    return b64u(b)


async def _client_for(port: int) -> RoostClient:
    state = ClientState(server=f"http://127.0.0.1:{port}", signature_private=b"\x01" * 32)
    state.client_id = "a@localhost/c"
    state.token = "tok"
    state.token_expires_at = time.time() + 3600  # no HTTP auth needed in these tests
    return RoostClient(state)


async def test_hello_deliveries_acks_and_close():
    fake = FakeServer()
    async with serve(fake.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        client = await _client_for(port)
        async with Realtime(
            client, positions={_b64(QID): 1}, direct=4, queue_keys={_b64(QID): KEY}
        ) as rt:
            assert rt.ready["queues"] == [_b64(QID)]
            d = await rt.receive(timeout=5)
            assert [m.seq for m in d.messages] == [2, 3]
            assert rt.positions[_b64(QID)] == 3
            d = await rt.receive(timeout=5)
            assert d.queue_id is None and d.direct_events()[0].type == "message"
            assert rt.direct == 5
            await rt.ack({_b64(QID): 3}, direct=5)  # waits for "acked"
            await rt._send({"type": "bye"})
            assert [x async for x in rt] == []  # normal close ends iteration
        await client.aclose()
    assert fake.hellos == [
        {"type": "hello", "queues": {_b64(QID): 1}, "queue_keys": {_b64(QID): KEY}, "direct": 4}
    ]
    assert fake.acks[0]["queues"] == {_b64(QID): 3} and fake.acks[0]["direct"] == 5
    assert fake.auth_headers == ["Bearer tok"]
    assert client.state.direct_acked == 5


async def test_listen_resumes_after_a_drop():
    fake = FakeServer(drop_after_first=True)
    async with serve(fake.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        client = await _client_for(port)
        client.state.queue_keys[_b64(QID)] = KEY  # as ``create_queue`` keeps it
        seen: list[int] = []
        gen = listen(client, max_backoff=0.2)
        async for d in gen:
            if d.queue_id is not None:
                seen += [m.seq for m in d.messages]
            if seen and seen[-1] == 3:
                break
        await gen.aclose()
        await client.aclose()
    assert seen == [1, 2, 3]  # nothing lost, nothing repeated
    assert fake.connections == 2
    assert fake.hellos[1]["queues"] == {_b64(QID): 1}  # resumed after what was processed
    assert [h["queue_keys"] for h in fake.hellos] == [{_b64(QID): KEY}] * 2


async def test_ack_after_the_server_went_away_is_a_realtime_close():
    """The server restarts (1012) between a delivery and its ack: the ack raises
    ``RealtimeClosed``, on which ``Groups.listen`` reconnects, not a websockets exception that
    would end ``listen`` for good."""

    async def handler(ws) -> None:
        await ws.recv()  # hello
        await ws.send(json.dumps({"type": "ready", "queues": [_b64(QID)], "ping_interval": 30}))
        await ws.send(frame(1, [(1, b"one")], QID))
        await ws.close(1012, "restart")

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        client = await _client_for(port)
        rt = Realtime(client, positions={_b64(QID): 0}, queue_keys={_b64(QID): KEY})
        await rt.connect()
        try:
            assert [m.seq for m in (await rt.receive(timeout=5)).messages] == [1]
            with pytest.raises(RealtimeClosed):
                await rt.receive(timeout=5)
            with pytest.raises(RealtimeClosed) as closed:
                await rt.ack({_b64(QID): 1}, wait=False)
            assert closed.value.close_code == 1012
        finally:
            await rt.close()
            await client.aclose()
