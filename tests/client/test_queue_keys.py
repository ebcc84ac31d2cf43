"""Group-queue keys on the client side: kept with the queue id in the home, loaded from homes
written before keys existed (id alone: unclaimed), kept out of reprs and error messages, and a
queue the realtime server refuses is an error the caller sees."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from websockets.asyncio.server import serve

from roost.client import ClientState, GroupQueue, Home, QueueRefused, RoostClient
from roost.client.group_store import GroupStore
from roost.client.realtime import Realtime, listen

QID = "AAECAwQFBgcICQoLDA0ODw"
KEY = "c2VjcmV0LXF1ZXVlLWtleS1ub2JvZHktZWxzZS1ob2xkcw"
OTHER = "EBESExQVFhcYGRobHB0eHw"


def _client(home: Home | None = None, port: int = 1) -> RoostClient:
    state = ClientState(server=f"http://127.0.0.1:{port}", signature_private=b"\x01" * 32)
    state.client_id = "a@localhost/c"
    state.token = "tok"
    state.token_expires_at = time.time() + 3600  # no HTTP auth needed in these tests
    return RoostClient(state, home=home)


async def test_group_queue_key_is_saved_next_to_its_id(tmp_path):
    home = Home(tmp_path)
    client = _client(home)
    store = GroupStore(client)
    store.cursors.queue = GroupQueue(QID, KEY)
    store.cursors.queue_after = 7
    store.save_cursors()
    saved = json.loads((tmp_path / "group_client.json").read_text())
    assert (saved["queue_id"], saved["queue_key"], saved["queue_after"]) == (QID, KEY, 7)
    again = GroupStore(client).cursors
    assert again.queue == GroupQueue(QID, KEY) and again.queue.claimed
    assert again.queue_id == QID and again.queue_after == 7
    await client.aclose()


async def test_each_groups_queue_is_saved_with_its_position_and_retired_when_it_ends(tmp_path):
    home = Home(tmp_path)
    client = _client(home)
    store = GroupStore(client)
    one, two = b"one@localhost", b"two@localhost"
    store.set_queue(one, GroupQueue(QID, KEY))
    store.set_queue(two, GroupQueue(OTHER, "o" * 43))
    store.cursors.advance(one, 5)
    store.cursors.joining[b"three@localhost"] = GroupQueue("j" * 22, "j" * 43)
    store.save_cursors()
    again = GroupStore(client)
    c = again.cursors
    assert c.queue is None and c.queue_of(one) == GroupQueue(QID, KEY)
    assert (c.after(one), c.after(two)) == (5, 0)
    assert c.group_of_queue(OTHER) == two
    assert c.joining == {b"three@localhost": GroupQueue("j" * 22, "j" * 43)}
    again.forget(one)  # the membership ended: its queue is to be deleted
    assert c.queue_of(one) is None and c.retired == {QID: GroupQueue(QID, KEY)}
    c.advance(two, 3)
    again.set_queue(two, GroupQueue(OTHER, "o" * 43))  # the same queue (a resync): read on
    assert c.after(two) == 3 and OTHER not in c.retired
    again.save_cursors()
    assert GroupStore(client).cursors.retired == {QID: GroupQueue(QID, KEY)}
    await client.aclose()


async def test_a_home_from_before_queue_keys_loads_with_the_key_unclaimed(tmp_path):
    home = Home(tmp_path)
    client = _client(home)
    # What an older version wrote: the queue id and cursors, no key.
    (tmp_path / "group_client.json").write_text(
        json.dumps({"queue_id": QID, "queue_after": 3, "direct_after": 2})
    )
    cursors = GroupStore(client).cursors
    assert cursors.queue == GroupQueue(QID, "") and not cursors.queue.claimed
    assert cursors.queue.headers == {}  # nothing to send until the key is claimed
    assert (cursors.queue_after, cursors.direct_after) == (3, 2)
    await client.aclose()


async def test_keys_of_created_queues_survive_a_restart(tmp_path):
    home = Home(tmp_path)
    state = _client().state
    state.queue_keys[QID] = KEY
    home.save(state)
    client = RoostClient(home.load(), home=home)
    assert client.queue(QID) == GroupQueue(QID, KEY)
    assert client.queue(QID).headers == {"Roost-Queue-Key": KEY}
    assert client.queue(OTHER).headers == {}  # not ours: asked without a key, refused
    client.hold_queue(GroupQueue(OTHER, "b" * 43))
    assert client.queue_keys() == {QID: KEY, OTHER: "b" * 43}
    await client.aclose()


def test_keys_stay_out_of_reprs():
    assert KEY not in repr(GroupQueue(QID, KEY)) and QID in repr(GroupQueue(QID, KEY))
    state = ClientState(server="s", signature_private=b"k", queue_keys={QID: KEY})
    assert KEY not in repr(state)


class RefusingServer:
    """Serves the direct queue and refuses every group queue named in ``hello``."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.hellos: list[dict] = []

    async def handler(self, ws) -> None:
        hello = json.loads(await ws.recv())
        self.hellos.append(hello)
        refused = {q: self.code for q in hello.get("queue_keys", {})}
        await ws.send(json.dumps({"type": "ready", "queues": [], "refused": refused}))
        await ws.wait_closed()  # the socket stays open on the server's side


@pytest.mark.parametrize(("code", "status"), [("forbidden", 403), ("queue_not_found", 404)])
async def test_a_refused_queue_is_an_error_not_a_silent_socket(code, status):
    fake = RefusingServer(code)
    async with serve(fake.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        client = _client(port=port)
        rt = Realtime(client, queue_keys={QID: KEY})
        with pytest.raises(QueueRefused) as refused:
            await rt.connect()
        assert (refused.value.status, refused.value.code) == (status, code)
        assert refused.value.refused == {QID: code}
        assert QID not in str(refused.value) and KEY not in str(refused.value)
        assert rt._ws is None  # closed by ``connect``
        # ``listen`` gives up at once too (a retry would be refused the same way).
        client.state.queue_keys[QID] = KEY
        with pytest.raises(QueueRefused):
            await asyncio.wait_for(anext(listen(client, max_backoff=0.1)), 5)
        await client.aclose()
    assert fake.hellos[0]["queue_keys"] == {QID: KEY}
    assert len(fake.hellos) == 2


async def test_subscribe_adds_a_queue_made_after_connecting():
    """A queue made after connecting is served on the same socket once subscribed, and kept
    for the next ``hello``; one with a wrong key is refused."""
    hellos: list[dict] = []

    async def handler(ws) -> None:
        hellos.append(json.loads(await ws.recv()))
        await ws.send(json.dumps({"type": "ready", "queues": [], "refused": {}}))
        async for raw in ws:
            m = json.loads(raw)
            if m["type"] == "subscribe":
                ok = [q for q, k in m["queue_keys"].items() if k == KEY]
                bad = {q: "forbidden" for q in m["queue_keys"] if q not in ok}
                await ws.send(
                    json.dumps({"type": "subscribed", "queues": ok, "refused": bad, "id": m["id"]})
                )

    async with serve(handler, "127.0.0.1", 0) as server:
        client = _client(port=server.sockets[0].getsockname()[1])
        async with Realtime(client, queue_keys={}) as rt:
            await rt.subscribe({QID: KEY}, {QID: 4})
            assert rt.accepted == [QID] and rt.queue_keys == {QID: KEY}
            assert rt.positions == {QID: 4}
            with pytest.raises(QueueRefused) as refused:
                await rt.subscribe({OTHER: "wrong"})
            assert refused.value.refused == {OTHER: "forbidden"}
            assert rt.queue_keys == {QID: KEY}  # a refused queue is not asked for again
        await client.aclose()
    assert hellos[0]["queue_keys"] == {}


async def test_a_client_in_many_groups_presents_its_keys_in_frames_of_500():
    """One queue per group: a client in 1200 groups names 500 in ``hello`` (a client frame
    may be 64 KiB) and the rest in ``subscribe`` frames, each below that limit."""
    frames: list[dict] = []
    sizes: list[int] = []

    async def handler(ws) -> None:
        raw = await ws.recv()
        sizes.append(len(raw))
        hello = json.loads(raw)
        frames.append(hello)
        await ws.send(json.dumps({"type": "ready", "queues": list(hello["queue_keys"])}))
        async for raw in ws:
            m = json.loads(raw)
            if m["type"] == "subscribe":
                sizes.append(len(raw))
                frames.append(m)
                answer = {"type": "subscribed", "queues": list(m["queue_keys"]), "id": m["id"]}
                await ws.send(json.dumps(answer))

    keys = {f"{i:022d}": "k" * 43 for i in range(1200)}
    positions = {q: 10**9 + i for i, q in enumerate(keys)}
    async with serve(handler, "127.0.0.1", 0) as server:
        client = _client(port=server.sockets[0].getsockname()[1])
        async with Realtime(client, queue_keys=keys, positions=positions) as rt:
            assert sorted(rt.accepted) == sorted(keys)
        await client.aclose()
    assert [f["type"] for f in frames] == ["hello", "subscribe", "subscribe"]
    assert [len(f["queue_keys"]) for f in frames] == [500, 500, 200]
    assert {q for f in frames for q in f["queue_keys"]} == set(keys)
    assert all(f["queues"] == {q: positions[q] for q in f["queue_keys"]} for f in frames)
    assert max(sizes) < 64 * 1024
