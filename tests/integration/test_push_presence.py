"""Push decisions across ``roost serve`` processes on one PostgreSQL.

A client whose realtime WebSocket is open to process 2 gets no push for a message sent through
process 1; once it disconnects, the next message brings exactly one push (checked by the local
Web Push service, which decrypts it). A process that dies without saying goodbye (SIGKILL)
leaves presence rows behind: they lapse after the presence TTL and are swept, and the client is
pushed again. Process 1's /metrics shows the decisions.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator

import asyncpg
import httpx
import pytest

from roost.client import RoostClient
from roost.client.push import register_web_push
from tests.push_services.process import StandIn

from .conftest import Users
from .harness import ServerProcess
from .test_realtime_delivery import new_queue, open_raw, recv_items

pytestmark = pytest.mark.timeout(240)

WINDOW = 2  # push_coalesce_seconds
TTL = 6  # push_presence_ttl_seconds (heartbeat every 2 s)
ENV = {
    "ROOST_PUSH_ALLOW_INSECURE_ENDPOINTS": "true",
    "ROOST_PUSH_COALESCE_SECONDS": str(WINDOW),
    "ROOST_PUSH_PRESENCE_TTL_SECONDS": str(TTL),
}


@pytest.fixture(scope="module")
def webpush() -> Iterator[StandIn]:
    s = StandIn("webpush")
    yield s
    s.close()


@pytest.fixture(scope="module")
def cluster(postgres_database, tmp_path_factory):
    """Processes 1 and 2 on one fresh PostgreSQL database (and its URL and environment, for a
    third). They share the queue seal key, as the processes of one server must: a process
    finds the client to push for a queue another process created."""
    url = postgres_database()
    seal = tmp_path_factory.mktemp("pp-seal") / "queue-seal.key"
    env = {**ENV, "ROOST_QUEUE_SEAL_KEY_FILE": str(seal)}
    p1 = ServerProcess("postgresql", tmp_path_factory.mktemp("pp-1"), url, env).start()
    try:
        p2 = ServerProcess("postgresql", tmp_path_factory.mktemp("pp-2"), url, env).start()
    except BaseException:
        p1.stop()
        raise
    yield p1, p2, url, env
    p2.stop()
    p1.stop()


async def eventually(cond: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def pushes_to(webpush: StandIn, sub_id: str) -> list[dict]:
    got = await asyncio.to_thread(webpush.received)
    return [g for g in got if g.get("subscription") == sub_id]


async def metric(server: ServerProcess, name: str, provider: str = "webpush") -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(server.url + "/metrics")).text
    m = re.search(rf'^{name}{{provider="{provider}"}} (\S+)$', text, re.MULTILINE)
    assert m is not None, f"{name} missing from /metrics"
    return float(m.group(1))


async def presence_rows(url: str, server: ServerProcess) -> int:
    """Rows published by ``server``'s process (its id is ``host:pid:random``)."""
    assert server.proc is not None
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM notify_presence WHERE process_id LIKE $1",
            f"%:{server.proc.pid}:%",
        )
    finally:
        await conn.close()


async def subscribed_recipient(
    sender_side: Users, recipient_side: Users, webpush: StandIn
) -> tuple[RoostClient, RoostClient, str, dict[str, str], str]:
    """Alice (on the sender's process) may enqueue to Bob's queue; Bob has a Web Push
    subscription, registered after the connection handshake (so nothing is pending). Returns
    the queue, the ``queue_keys`` that serve it over a socket, and the subscription id."""
    alice = await sender_side.new("a")
    bob = await recipient_side.new("b")
    conn = await alice.open_connection(bob.user_id)
    await alice.send_connection_request(conn.connection_id, b"hello")
    await bob.accept_connection(conn.connection_id)
    queue, key = await new_queue(bob)
    sub_id = f"pp-{uuid.uuid4().hex[:10]}"
    sub = await asyncio.to_thread(webpush.subscribe, sub_id)
    await register_web_push(bob, sub["endpoint"], sub["keys"])
    return alice, bob, queue, {queue: key}, sub_id


async def receive_queue_item(ws, queue: str, payload: bytes) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for where, _seq, data in await recv_items(ws, 1, deadline - time.monotonic()):
            if where == queue and data == payload:
                return
    raise AssertionError("the queue item did not arrive over the socket")


async def test_connected_to_another_process_no_push_until_it_disconnects(cluster, webpush):
    p1, p2, url, _env = cluster
    on1, on2 = Users(p1.url), Users(p2.url)
    try:
        alice, bob, queue, keys, sub_id = await subscribed_recipient(on1, on2, webpush)
        suppressed = await metric(p1, "roost_push_suppressed_online_total")
        sent = await metric(p1, "roost_push_sent_total")

        ws, _ready = await open_raw(p2.url, await bob.bearer_token(), {"queue_keys": keys})
        try:
            assert await presence_rows(url, p2) == 1  # published before "ready"
            await alice.enqueue(queue, b"while online")  # through process 1
            await receive_queue_item(ws, queue, b"while online")  # over process 2's socket

            async def decided() -> bool:
                return await metric(p1, "roost_push_suppressed_online_total") == suppressed + 1

            await eventually(decided)  # process 1 looked, saw the socket on process 2
            assert await pushes_to(webpush, sub_id) == []
        finally:
            await ws.close()

        async def row_gone() -> bool:
            return await presence_rows(url, p2) == 0

        await eventually(row_gone)
        await alice.enqueue(queue, b"while offline")

        async def one_push() -> bool:
            return len(await pushes_to(webpush, sub_id)) >= 1

        await eventually(one_push)
        await asyncio.sleep(WINDOW + 1.5)  # nothing trailing: only one wake-up was due
        [push] = await pushes_to(webpush, sub_id)
        assert json.loads(push["plaintext"]) == {"type": "wake"}
        assert await metric(p1, "roost_push_sent_total") == sent + 1
        assert await metric(p1, "roost_push_suppressed_online_total") == suppressed + 1
    finally:
        await on1.aclose()
        await on2.aclose()


async def test_a_killed_process_presence_lapses_and_pushes_resume(
    cluster, webpush, tmp_path_factory
):
    p1, _p2, url, env = cluster
    p3 = ServerProcess("postgresql", tmp_path_factory.mktemp("pp-3"), url, env).start()
    on1, on3 = Users(p1.url), Users(p3.url)
    try:
        alice, bob, queue, keys, sub_id = await subscribed_recipient(on1, on3, webpush)
        ws, _ready = await open_raw(p3.url, await bob.bearer_token(), {"queue_keys": keys})
        assert await presence_rows(url, p3) == 1
        suppressed = await metric(p1, "roost_push_suppressed_online_total")

        assert p3.proc is not None
        p3.proc.kill()  # SIGKILL: no shutdown, no goodbye, the row stays
        p3.proc.wait(timeout=10)
        killed_at = time.monotonic()
        await ws.close()
        assert await presence_rows(url, p3) == 1

        # Still within the TTL: the dead process's row counts (the client may only be
        # reconnecting); the decision is "online", no push.
        await alice.enqueue(queue, b"just after the crash")

        async def decided() -> bool:
            return await metric(p1, "roost_push_suppressed_online_total") == suppressed + 1

        await eventually(decided, timeout=TTL - 2)
        assert await pushes_to(webpush, sub_id) == []

        # The row lapses after the TTL and a live process's heartbeat sweeps it.
        async def swept() -> bool:
            return await presence_rows(url, p3) == 0

        await eventually(swept, timeout=TTL + TTL / 3 + 5)
        assert time.monotonic() - killed_at >= TTL - TTL / 3 - 0.5  # not before it lapsed
        await alice.enqueue(queue, b"after the lapse")

        async def one_push() -> bool:
            return len(await pushes_to(webpush, sub_id)) == 1

        await eventually(one_push)
        assert json.loads((await pushes_to(webpush, sub_id))[0]["plaintext"]) == {"type": "wake"}
    finally:
        await on1.aclose()
        await on3.aclose()
        p3.stop()
