"""Realtime hub and session logic in isolation (fake socket, in-memory queues): routing of
wake-ups, replacement, out-of-order and lost wake-ups, bounded buffering, the unacked window,
acks from either path, and the frame formats."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from roost.client.realtime import parse_delivery_frame
from roost.protocol.base64url import b64u
from roost.server.auth.service import Principal, token_hash
from roost.server.errors import Problem
from roost.server.notify.hub import Hub
from roost.server.notify.protocol import (
    MAX_SEQ,
    CloseCode,
    ProtocolError,
    delivery_frame,
    parse_positions,
    parse_text,
)
from roost.server.notify.session import RealtimeSession, Settings
from roost.server.queues.service import FetchResult, WakeUp, _cap

Q1, Q2 = b"\x01" * 16, b"\x02" * 16


# ---- fakes --------------------------------------------------------------------------------


class FakeSocket:
    def __init__(self) -> None:
        self.incoming: asyncio.Queue[dict] = asyncio.Queue()
        self.sent: asyncio.Queue[dict] = asyncio.Queue()
        self.closed: tuple[int, str] | None = None
        self.block_sends = asyncio.Event()
        self.block_sends.set()

    async def receive(self) -> dict:
        return await self.incoming.get()

    async def send(self, message: dict) -> None:
        await self.block_sends.wait()
        await self.sent.put(message)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)

    def client_says(self, **frame: object) -> None:
        self.incoming.put_nowait({"type": "websocket.receive", "text": json.dumps(frame)})


@dataclass
class FakeQueues:
    """Just the QueueService calls a session makes, over dicts."""

    stored: dict[bytes | None, dict[int, bytes]] = field(default_factory=dict)
    reads: int = 0
    acks: list[tuple] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.db = self  # session reads ``queues.db.engine.connect()`` for direct acks
        self.engine = self

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[None]:
        yield None

    def put(self, queue: bytes | None, seq: int, payload: bytes) -> WakeUp:
        self.stored.setdefault(queue, {})[seq] = payload
        return WakeUp("c1" if queue else "u1", queue, seq, payload)

    async def owned_queue_ids(self, client_uuid: str) -> list[bytes]:
        return [q for q in self.stored if q is not None]

    async def direct_cursor(self, user_uuid: str, client_uuid: str) -> int:
        return 0

    def _read(self, queue: bytes | None, after: int, limit: int, max_bytes: int) -> FetchResult:
        self.reads += 1
        rows = sorted((s, p) for s, p in self.stored.get(queue, {}).items() if s > after)
        return _cap(rows[: limit + 1], after, limit, max_bytes)

    async def read_after(self, queue: bytes, after: int, limit: int, max_bytes: int):
        return self._read(queue, after, limit, max_bytes)

    async def fetch_direct(self, user: str, after: int, limit: int, max_bytes: int):
        return self._read(None, after, limit, max_bytes)

    async def ack(self, queue: bytes, client_uuid: str, up_to: int) -> None:
        if queue not in self.stored:
            raise Problem(404, "queue_not_found", "")
        self.acks.append((queue, up_to))
        for s in [s for s in self.stored[queue] if s <= up_to]:
            del self.stored[queue][s]

    async def ack_many(
        self, client_uuid: str, acks: dict[bytes, int], owned: set[bytes]
    ) -> dict[bytes, str]:
        failed: dict[bytes, str] = {}
        for queue, up_to in acks.items():
            try:
                await self.ack(queue, client_uuid, up_to)
            except Problem as p:
                failed[queue] = p.code
        return failed

    async def ack_direct(self, user: str, client: str, up_to: int, clients: list[str]) -> None:
        self.acks.append((None, up_to))


class FakeAuth:
    def __init__(self) -> None:
        self.valid = True

    async def authenticate_token_hash(self, hashed: bytes) -> Principal:
        if not self.valid or hashed == token_hash(EXPIRED_TOKEN):
            raise Problem(401, "token_expired", "")
        return PRINCIPAL

    async def authenticate_bound(self, token: str) -> tuple[Principal, bytes]:
        hashed = token_hash(token)
        if hashed is None:
            raise Problem(401, "unauthenticated", "")
        return await self.authenticate_token_hash(hashed), hashed

    async def client_uuids_of(self, user_uuid: str, conn: object) -> list[str]:
        return ["c1"]


@dataclass
class FakeServices:
    queues: FakeQueues
    auth: FakeAuth


PRINCIPAL = Principal("u1", "alice", "alice@localhost", "c1", "alice@localhost/c1")
TOKEN_HASH = b"\x07" * 32  # the session's bearer token, by hash
EXPIRED_TOKEN = b64u(b"\x08" * 32)


class Harness:
    def __init__(self, settings: Settings | None = None) -> None:
        self.ws = FakeSocket()
        self.queues = FakeQueues()
        self.auth = FakeAuth()
        self.hub = Hub()
        self.settings = settings or Settings(
            ping_interval=20, idle_timeout=60, window_messages=100, window_bytes=10_000
        )
        self.session: RealtimeSession | None = None
        self.task: asyncio.Task | None = None

    async def start(self, **hello: object) -> dict:
        services = FakeServices(self.queues, self.auth)
        self.session = RealtimeSession(
            self.ws,
            PRINCIPAL,
            TOKEN_HASH,
            services,
            self.hub,
            self.settings,  # type: ignore[arg-type]
        )
        self.ws.client_says(type="hello", **hello)
        self.task = asyncio.create_task(self.session.run())
        return json.loads((await self.next_sent())["text"])

    async def next_sent(self, timeout: float = 2.0) -> dict:
        return await asyncio.wait_for(self.ws.sent.get(), timeout)

    async def items(self, n: int) -> list[tuple]:
        out: list[tuple] = []
        while len(out) < n:
            msg = await self.next_sent()
            if "bytes" in msg:
                d = parse_delivery_frame(msg["bytes"])
                out += [(d.queue_id, m.seq, m.payload) for m in d.messages]
        return out

    async def quiet(self) -> bool:
        await asyncio.sleep(0.05)
        return self.ws.sent.empty()

    def publish(self, queue: bytes | None, seq: int, payload: bytes) -> None:
        self.hub.queue_item(self.queues.put(queue, seq, payload))

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    yield harness
    await harness.stop()


# ---- hub ----------------------------------------------------------------------------------


@dataclass(eq=False)
class Sub:
    client_uuid: str
    user_uuid: str
    items: list = field(default_factory=list)
    acks: list = field(default_factory=list)
    closed: tuple | None = None

    def on_item(self, wake: WakeUp) -> None:
        if wake.payload == b"boom":
            raise RuntimeError("broken subscriber")
        self.items.append(wake.seq)

    def on_acked(self, queue_id: bytes | None, up_to: int) -> None:
        self.acks.append((queue_id, up_to))

    def terminate(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def test_hub_routes_by_owner_and_replaces_older_connections():
    hub = Hub()
    phone, laptop, other = Sub("c1", "u1"), Sub("c2", "u1"), Sub("c3", "u2")
    for s in (phone, laptop, other):
        hub.attach(s)
    hub.queue_item(WakeUp("c1", Q1, 1, b"x"))  # a group queue: its owner client only
    hub.queue_item(WakeUp("u1", None, 7, b"x"))  # the direct queue: every client of the user
    assert (phone.items, laptop.items, other.items) == ([1, 7], [7], [])
    hub.acked("c2", None, 7)
    assert laptop.acks == [(None, 7)] and phone.acks == []

    newer = Sub("c1", "u1")
    hub.attach(newer)
    assert phone.closed is not None and phone.closed[0] == CloseCode.REPLACED
    hub.queue_item(WakeUp("c1", Q1, 2, b"x"))
    assert newer.items == [2] and phone.items == [1, 7]
    hub.detach(phone)  # the replaced one leaving does not unregister the newer one
    hub.queue_item(WakeUp("u1", None, 8, b"x"))
    assert newer.items == [2, 8] and laptop.items == [7, 8]

    hub.client_gone("c2")
    assert laptop.closed == (CloseCode.UNAUTHENTICATED, "the client was removed")
    hub.user_gone("u1")
    assert newer.closed is not None and newer.closed[0] == CloseCode.UNAUTHENTICATED
    assert len(hub) == 1 and other.closed is None


def test_hub_isolates_a_failing_subscriber():
    hub = Hub()
    a, b = Sub("c1", "u1"), Sub("c2", "u1")
    hub.attach(a)
    hub.attach(b)
    hub.queue_item(WakeUp("u1", None, 1, b"boom"))  # a raises; b still gets later items
    hub.queue_item(WakeUp("u1", None, 2, b"ok"))
    assert a.items == [2] and b.items == [2]


# ---- frames -------------------------------------------------------------------------------


def test_frames_round_trip_and_bad_control_frames_are_protocol_errors():
    big = b"\xff" * 70_000
    d = parse_delivery_frame(delivery_frame(Q1, [(1, b""), (2, big)]))
    assert d.queue_id == b64u(Q1) and [(m.seq, m.payload) for m in d.messages] == [
        (1, b""),
        (2, big),
    ]
    d = parse_delivery_frame(delivery_frame(None, [(9, b"e")]))
    assert d.queue_id is None and d.last_seq == 9
    pos = parse_positions({"type": "ack", "queues": {b64u(Q1): 3}, "direct": 0, "id": "a"})
    assert (pos.queues, pos.direct, pos.id) == ({Q1: 3}, 0, "a")
    for bad in (
        "[]",
        "{}",
        '{"type": 1}',
        "x" * 70_000,
    ):
        with pytest.raises(ProtocolError):
            parse_text(bad)
    for bad_frame in (
        {"queues": []},
        {"queues": {"short": 1}},
        {"queues": {b64u(Q1): -1}},
        {"queues": {b64u(Q1): True}},
        {"queues": {b64u(Q1): 2**63}},
        {"direct": "1"},
        {"id": [1]},
    ):
        with pytest.raises(ProtocolError):
            parse_positions(bad_frame)


# ---- session ------------------------------------------------------------------------------


async def test_start_reads_stored_items_then_follows_wake_ups_without_reading(h: Harness):
    h.queues.put(Q1, 1, b"a")
    h.queues.put(Q1, 2, b"b")
    h.queues.put(None, 4, b"d")
    ready = await h.start(queues={b64u(Q1): 1})
    assert ready["type"] == "ready" and ready["queues"] == [b64u(Q1)]
    assert sorted(await h.items(2), key=str) == sorted(
        [(b64u(Q1), 2, b"b"), (None, 4, b"d")], key=str
    )
    reads = h.queues.reads
    for seq in range(3, 8):
        h.publish(Q1, seq, b"%d" % seq)
    assert [s for _, s, _ in await h.items(5)] == [3, 4, 5, 6, 7]
    assert h.queues.reads == reads  # the hot path: items came with their wake-ups


async def test_out_of_order_and_missed_wake_ups_still_deliver_in_order(h: Harness):
    h.queues.put(Q1, 1, b"x")
    await h.start()
    assert await h.items(1) == [(b64u(Q1), 1, b"x")]
    # Two committed transactions whose callbacks ran in the opposite order.
    h.queues.put(Q1, 2, b"two")
    h.publish(Q1, 3, b"three")
    h.hub.queue_item(WakeUp("c1", Q1, 2, b"two"))
    assert [s for _, s, _ in await h.items(2)] == [2, 3]
    # A wake-up that never came (another process): the gap is read from the database.
    h.queues.put(Q1, 4, b"four")
    h.publish(Q1, 5, b"five")
    assert [(s, p) for _, s, p in await h.items(2)] == [(4, b"four"), (5, b"five")]
    # A wake-up without a payload (a LISTEN/NOTIFY bridge) reads it back too.
    h.queues.put(Q1, 6, b"six")
    h.hub.queue_item(WakeUp("c1", Q1, 6, None))
    assert await h.items(1) == [(b64u(Q1), 6, b"six")]
    # A repeated wake-up is not delivered twice.
    h.hub.queue_item(WakeUp("c1", Q1, 6, b"six"))
    assert await h.quiet()


async def test_window_bounds_unacked_items_and_buffering(h: Harness):
    h.settings = Settings(ping_interval=20, idle_timeout=60, window_messages=3, window_bytes=250)
    await h.start()
    for seq in range(1, 11):
        h.publish(Q1, seq, bytes(100))
    first = await h.items(3)  # 3 items or 250 bytes (at least one): here the byte cap
    assert [s for _, s, _ in first] == [1, 2, 3][: len(first)]
    assert await h.quiet()
    session = h.session
    assert session is not None
    st = session._queues[Q1]
    assert st.pending_bytes <= h.settings.window_bytes  # overflow dropped, left in the database
    h.ws.client_says(type="ack", queues={b64u(Q1): first[-1][1]}, id=1)
    got = first
    while len(got) < 10:
        batch = await h.items(1)
        got += batch
        h.ws.client_says(type="ack", queues={b64u(Q1): batch[-1][1]})
    assert [s for _, s, _ in got] == list(range(1, 11))


async def test_acks_over_http_free_the_window_and_skip_acked_items(h: Harness):
    h.settings = Settings(ping_interval=20, idle_timeout=60, window_messages=2, window_bytes=10**6)
    for seq in range(1, 7):
        h.queues.put(Q1, seq, b"%d" % seq)
    await h.start()
    assert [s for _, s, _ in await h.items(2)] == [1, 2]
    assert await h.quiet()
    await h.queues.ack(Q1, "c1", 4)  # e.g. POST /v1/queues/{id}/ack, acking ahead
    h.hub.acked("c1", Q1, 4)
    assert [s for _, s, _ in await h.items(2)] == [5, 6]
    # Deleting the queue acks all of it: nothing stays in flight and its state goes.
    session = h.session
    assert session is not None and session._inflight_msgs == 2
    h.hub.acked("c1", Q1, MAX_SEQ)
    assert session._inflight_msgs == 0 and Q1 not in session._queues


async def test_acks_are_confirmed_or_refused_per_frame(h: Harness):
    h.queues.put(Q1, 1, b"a")
    await h.start()
    await h.items(1)
    h.ws.client_says(type="ack", queues={b64u(Q1): 1}, direct=3, id=9)
    assert json.loads((await h.next_sent())["text"]) == {"type": "acked", "id": 9}
    assert h.queues.acks == [(Q1, 1), (None, 3)]
    h.ws.client_says(type="ack", queues={b64u(Q2): 1}, id=10)
    assert json.loads((await h.next_sent())["text"]) == {
        "type": "error",
        "code": "queue_not_found",
        "id": 10,
    }
    h.ws.client_says(type="ping", id="p")
    assert json.loads((await h.next_sent())["text"]) == {"type": "pong", "id": "p"}


async def test_close_codes(h: Harness):
    await h.start()
    h.ws.client_says(type="auth", token=EXPIRED_TOKEN)
    await asyncio.wait_for(h.task, 2)
    assert h.ws.closed == (CloseCode.UNAUTHENTICATED, "token_expired")
    malformed = Harness()
    await malformed.start()
    malformed.ws.client_says(type="auth", token="bad")
    await asyncio.wait_for(malformed.task, 2)
    assert malformed.ws.closed == (CloseCode.UNAUTHENTICATED, "unauthenticated")

    fast = Harness(Settings(ping_interval=1, idle_timeout=0.3, window_messages=5, window_bytes=100))
    await fast.start()
    await asyncio.wait_for(fast.task, 3)
    assert fast.ws.closed == (CloseCode.IDLE_TIMEOUT, "idle timeout")

    stalled = Harness(
        Settings(
            ping_interval=1,
            idle_timeout=60,
            window_messages=5,
            window_bytes=100,
            send_stall=0.3,
        )
    )
    await stalled.start()
    stalled.ws.block_sends.clear()  # the client stopped reading; the socket buffer is full
    stalled.publish(Q1, 1, b"x")
    await asyncio.wait_for(stalled.task, 3)
    assert stalled.ws.closed is not None and stalled.ws.closed[0] == CloseCode.TOO_SLOW

    revoked = Harness(
        Settings(
            ping_interval=1, idle_timeout=60, window_messages=5, window_bytes=100, auth_recheck=0.2
        )
    )
    await revoked.start()
    revoked.auth.valid = False
    await asyncio.wait_for(revoked.task, 3)
    assert revoked.ws.closed == (CloseCode.UNAUTHENTICATED, "token_expired")

    late = Harness(
        Settings(
            ping_interval=1, idle_timeout=60, window_messages=5, window_bytes=100, hello_timeout=0.2
        )
    )
    late.session = RealtimeSession(
        late.ws,
        PRINCIPAL,
        TOKEN_HASH,
        FakeServices(late.queues, late.auth),  # type: ignore[arg-type]
        late.hub,
        late.settings,
    )
    await asyncio.wait_for(late.session.run(), 3)
    assert late.ws.closed == (CloseCode.PROTOCOL_ERROR, "no hello in time")
    assert len(late.hub) == 0
