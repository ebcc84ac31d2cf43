"""Realtime hub and session logic in isolation (fake socket, in-memory queues): routing of
wake-ups (group queues by accepted key, the direct queue by user), replacement, queue keys in
hello and subscribe, out-of-order and lost wake-ups, bounded buffering, the unacked window,
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
    parse_queue_keys,
    parse_text,
)
from roost.server.notify.session import RealtimeSession, Settings
from roost.server.queues.service import FetchResult, WakeUp, _cap

Q1, Q2, Q3 = b"\x01" * 16, b"\x02" * 16, b"\x03" * 16
K1, K2, K3 = b"\x11" * 32, b"\x12" * 32, b"\x13" * 32


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
    keys: dict[bytes, bytes] = field(default_factory=lambda: {Q1: K1, Q2: K2, Q3: K3})
    reads: int = 0
    acks: list[tuple] = field(default_factory=list)
    checked: list[bytes] = field(default_factory=list)  # queue ids whose keys were checked

    def __post_init__(self) -> None:
        self.db = self  # session reads ``queues.db.engine.connect()`` for direct acks
        self.engine = self

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[None]:
        yield None

    def put(self, queue: bytes | None, seq: int, payload: bytes) -> WakeUp:
        self.stored.setdefault(queue, {})[seq] = payload
        return WakeUp(queue, seq, payload, user_uuid=None if queue else "u1")

    async def accept_keys(self, keys: dict[bytes, bytes]) -> tuple[list[bytes], dict[bytes, str]]:
        self.checked += list(keys)
        accepted = [q for q, k in keys.items() if self.keys.get(q) == k]
        refused = {
            q: "queue_not_found" if q not in self.keys else "forbidden"
            for q in keys
            if q not in accepted
        }
        return accepted, refused

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

    async def ack(self, queue: bytes, up_to: int) -> None:
        self.acks.append((queue, up_to))
        stored = self.stored.get(queue, {})
        for s in [s for s in stored if s <= up_to]:
            del stored[s]

    async def ack_many(self, acks: dict[bytes, int]) -> None:
        for queue, up_to in acks.items():
            await self.ack(queue, up_to)

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
        """Connect with ``hello`` (by default presenting Q1's key)."""
        hello.setdefault("queue_keys", {b64u(Q1): b64u(K1)})
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

    async def control(self) -> dict:
        """The next text frame (delivery frames before it are skipped)."""
        while True:
            msg = await self.next_sent()
            if "text" in msg:
                return json.loads(msg["text"])

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


def test_hub_routes_by_accepted_queue_and_user_and_replaces_older_connections():
    hub = Hub()
    phone, laptop, other = Sub("c1", "u1"), Sub("c2", "u1"), Sub("c3", "u2")
    for s in (phone, laptop, other):
        hub.attach(s)
    hub.subscribe(phone, [Q1])
    hub.queue_item(WakeUp(Q1, 1, b"x"))  # a group queue: the connection that accepted it
    hub.queue_item(WakeUp(Q2, 1, b"x"))  # accepted by nobody: nowhere
    hub.queue_item(WakeUp(None, 7, b"x", user_uuid="u1"))  # direct: every client of the user
    assert (phone.items, laptop.items, other.items) == ([1, 7], [7], [])
    assert hub.is_served(Q1) and not hub.is_served(Q2)
    hub.acked("c2", None, 7)  # a direct ack: the acking client
    hub.acked(None, Q1, 1)  # a group ack names no client: by queue
    assert laptop.acks == [(None, 7)] and phone.acks == [(Q1, 1)]

    newer = Sub("c1", "u1")
    hub.attach(newer)
    assert phone.closed is not None and phone.closed[0] == CloseCode.REPLACED
    assert not hub.is_served(Q1)  # the replaced connection's queues went with it
    hub.subscribe(newer, [Q1])
    hub.queue_item(WakeUp(Q1, 2, b"x"))
    assert newer.items == [2] and phone.items == [1, 7]
    hub.detach(phone)  # the replaced one leaving does not unregister the newer one
    hub.queue_item(WakeUp(None, 8, b"x", user_uuid="u1"))
    assert newer.items == [2, 8] and laptop.items == [7, 8]
    hub.acked(None, Q1, MAX_SEQ)  # deleted: no longer routed anywhere
    assert newer.acks == [(Q1, MAX_SEQ)] and not hub.is_served(Q1)

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
    hub.queue_item(WakeUp(None, 1, b"boom", user_uuid="u1"))  # a raises; b gets later items
    hub.queue_item(WakeUp(None, 2, b"ok", user_uuid="u1"))
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
    h.hub.queue_item(WakeUp(Q1, 2, b"two"))
    assert [s for _, s, _ in await h.items(2)] == [2, 3]
    # A wake-up that never came (another process): the gap is read from the database.
    h.queues.put(Q1, 4, b"four")
    h.publish(Q1, 5, b"five")
    assert [(s, p) for _, s, p in await h.items(2)] == [(4, b"four"), (5, b"five")]
    # A wake-up without a payload (a LISTEN/NOTIFY bridge) reads it back too.
    h.queues.put(Q1, 6, b"six")
    h.hub.queue_item(WakeUp(Q1, 6, None))
    assert await h.items(1) == [(b64u(Q1), 6, b"six")]
    # A repeated wake-up is not delivered twice.
    h.hub.queue_item(WakeUp(Q1, 6, b"six"))
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
    await h.queues.ack(Q1, 4)  # e.g. POST /v1/queues/{id}/ack, acking ahead
    h.hub.acked(None, Q1, 4)
    assert [s for _, s, _ in await h.items(2)] == [5, 6]
    # Deleting the queue acks all of it: nothing stays in flight and its state goes.
    session = h.session
    assert session is not None and session._inflight_msgs == 2
    h.hub.acked(None, Q1, MAX_SEQ)
    assert session._inflight_msgs == 0 and Q1 not in session._queues


async def test_acks_are_confirmed_and_only_accepted_queues_may_be_acked(h: Harness):
    h.queues.put(Q1, 1, b"a")
    h.queues.put(Q2, 1, b"b")
    await h.start()
    await h.items(1)
    h.ws.client_says(type="ack", queues={b64u(Q1): 1}, direct=3, id=9)
    assert json.loads((await h.next_sent())["text"]) == {"type": "acked", "id": 9}
    assert h.queues.acks == [(Q1, 1), (None, 3)]
    h.ws.client_says(type="ping", id="p")
    assert json.loads((await h.next_sent())["text"]) == {"type": "pong", "id": "p"}
    # Q2 exists, but this connection never presented its key: acking it breaks the protocol.
    h.ws.client_says(type="ack", queues={b64u(Q2): 1}, id=10)
    assert h.task is not None
    await asyncio.wait_for(h.task, 2)
    assert h.ws.closed is not None and h.ws.closed[0] == CloseCode.PROTOCOL_ERROR
    assert h.queues.acks == [(Q1, 1), (None, 3)] and h.queues.stored[Q2] == {1: b"b"}


async def test_hello_serves_exactly_the_queues_whose_keys_are_right(h: Harness):
    unknown = b"\x09" * 16
    for q in (Q1, Q2, Q3):
        h.queues.put(q, 1, b"stored " + q[:1])
    ready = await h.start(
        queue_keys={b64u(Q1): b64u(K1), b64u(Q2): b64u(K3), b64u(unknown): b64u(K1)},
        queues={b64u(Q3): 0},  # a position without a key is ignored
    )
    assert ready["queues"] == [b64u(Q1)]
    assert ready["refused"] == {b64u(Q2): "forbidden", b64u(unknown): "queue_not_found"}
    assert await h.items(1) == [(b64u(Q1), 1, b"stored \x01")]
    h.publish(Q2, 2, b"not yours")
    h.publish(Q3, 2, b"not asked for")
    h.publish(Q1, 2, b"yours")
    assert await h.items(1) == [(b64u(Q1), 2, b"yours")]
    assert await h.quiet()  # nothing of Q2 or Q3, stored or new


async def test_subscribe_adds_queues_to_a_live_connection(h: Harness):
    ready = await h.start(queue_keys={})
    assert ready["queues"] == [] and ready["refused"] == {}
    h.queues.put(Q2, 1, b"one")
    h.queues.put(Q2, 2, b"two")
    h.ws.client_says(
        type="subscribe",
        queue_keys={b64u(Q2): b64u(K2), b64u(Q3): b64u(K1)},
        queues={b64u(Q2): 1},
        id=4,
    )
    assert await h.control() == {
        "type": "subscribed",
        "queues": [b64u(Q2)],
        "refused": {b64u(Q3): "forbidden"},
        "id": 4,
    }
    assert await h.items(1) == [(b64u(Q2), 2, b"two")]  # after the given position
    h.publish(Q2, 3, b"three")
    h.publish(Q3, 1, b"refused")
    assert await h.items(1) == [(b64u(Q2), 3, b"three")]
    assert await h.quiet()
    # Subscribing again to a served queue changes nothing and checks no key again.
    checked = len(h.queues.checked)
    h.ws.client_says(type="subscribe", queue_keys={b64u(Q2): b64u(K2)})
    assert await h.control() == {
        "type": "subscribed",
        "queues": [b64u(Q2)],
        "refused": {},
        "id": None,
    }
    assert len(h.queues.checked) == checked
    h.ws.client_says(type="ack", queues={b64u(Q2): 3}, id=5)
    assert await h.control() == {"type": "acked", "id": 5}


async def test_malformed_queue_keys_are_protocol_errors():
    for bad in ([], {"short": "AAAA"}, {b64u(Q1): 5}, {b64u(Q1): ""}, {b64u(Q1): "!!"}):
        with pytest.raises(ProtocolError):
            parse_queue_keys({"queue_keys": bad})
    assert parse_queue_keys({}) == {} and parse_queue_keys({"queue_keys": None}) == {}
    assert parse_queue_keys({"queue_keys": {b64u(Q1): b64u(K1)}}) == {Q1: K1}


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
