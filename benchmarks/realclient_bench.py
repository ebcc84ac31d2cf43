"""Benchmark with real MLS clients: senders encrypt, receivers decrypt what the realtime
WebSocket pushes, at several group sizes, on SQLite and on PostgreSQL.

For each engine a real ``roost serve`` is started (``ds_bench.bench_server``: SQLite, and
PostgreSQL when ``--postgres URL`` or ``$ROOST_TEST_POSTGRES_URL`` names a server). For each group
size G, ``ceil(K / G)`` groups of G users are built with ``roost.client`` (not timed); K of
their members send (``--senders K``) and every member listens. All clients live in this one
process (the load generator), each with its own ``RoostClient``, ``Groups`` and WebSocket.
For ``--seconds`` each sender sends ``--payload``-byte application messages one after the
other, with at most ``--window`` of its own messages not yet decrypted by every receiver (so
that a saturated load generator shows as fewer sends, not as an ever-growing backlog). Two
client paths (``--api``; several alternate within one server and population):

- ``groups``: ``Groups.send`` (encrypt under the store lock, httpx POST, history) and
  ``Groups.listen`` (realtime socket, queue-item decode, decrypt, cursors, ack): the library
  as an application uses it;
- ``raw``: ``Group.encrypt`` and a minimal keep-alive HTTP/1.1 POST (ds_bench's ``RawHttp``);
  receivers read ``Realtime`` deliveries, decode each queue item, ``Group.process`` it and ack
  each frame without waiting: the least client work for the same protocol;
- ``opaque``: ds_bench's load: one PrivateMessage encrypted before the phase and sent again and
  again (the DS never opens it), receivers parse only (group, seq) from each frame and ack it,
  nothing decrypted: the server's cost without any client-side MLS.

Printed per (engine, G, api): sends/s (accepted during the sending phase), deliveries/s (every
(message, receiver) pair decrypted, until the last arrived), send p50/p99 (encrypt + POST),
end-to-end p50/p99 (send start → decrypted at the receiver), server CPU per send and per
delivery (user+system of the ``roost serve`` process tree, from /proc), PostgreSQL CPU per send
(the backends serving the benchmark's database, from ``pg_stat_activity`` and /proc), and the
load generator's CPU as % of one core (this process is one event loop: near 100 % it is the
limit).

``--one-sender``: K = 1, G = 3, window 1: each message is decrypted by both receivers before the
next is sent, i.e. latency without queueing. ``--py-spy PREFIX`` samples the server during each
timed phase (py-spy in the venv; ``PREFIX-<engine>-<G>-<api>.txt``, collapsed stacks) and
prints a breakdown by component.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
from websockets.exceptions import ConnectionClosed

from ds_bench import RawHttp, bench_server, cpu_seconds, parse_items, pct, raw_realtime
from roost.client import RoostClient
from roost.client.groups import Groups
from roost.client.realtime import Realtime
from roost.mls.group.member import Group
from roost.protocol.delivery_frame import KIND_GROUP_QUEUE
from roost.protocol.queue_item import ITEM_MLS_MESSAGE, QueueItem

SETUP_CONCURRENCY = 8
DRAIN_SECONDS = 60.0
NUMBER_BYTES = 8  # each payload starts with its message number
_NUMBERS = itertools.count(1)


# ---- set-up ----------------------------------------------------------------------------------
@dataclass
class Member:
    client: RoostClient
    groups: Groups
    group_id: bytes
    group_size: int

    @property
    def group(self) -> Group:
        return self.groups.group(self.group_id)


async def _bounded(coros: list, limit: int = SETUP_CONCURRENCY) -> list:
    sem = asyncio.Semaphore(limit)

    async def one(c):  # type: ignore[no-untyped-def]
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


async def make_group(url: str, size: int) -> list[Member]:
    """G users, the first creates the group and invites the others (connections first); every
    member then joins from its Welcome. Member 0 is the owner."""
    tag = uuid.uuid4().hex[:8]
    clients = await _bounded([RoostClient.register(url, f"r{tag}{i}") for i in range(size)])
    await _bounded([c.publish_key_packages(1) for c in clients[1:]])
    owner = clients[0]

    async def connect(other: RoostClient) -> None:
        conn = await owner.open_connection(other.user_id)
        await owner.send_connection_request(conn.connection_id, b"bench")
        await other.accept_connection(conn.connection_id)

    await _bounded([connect(c) for c in clients[1:]])
    groups = [Groups(c) for c in clients]
    group = await groups[0].create()
    others = [c.user_id for c in clients[1:]]
    for i in range(0, len(others), 49):  # one commit per up to 49 users: small requests
        await groups[0].invite(group.group_id, others[i : i + 49])
    await _bounded([g.sync() for g in groups[1:]])
    # Once more for everyone: the later invites' commits and the DS's notices, so that the
    # timed phases start on empty queues.
    await _bounded([g.sync() for g in groups])
    for g in groups:
        g.group(group.group_id)  # raises if the join failed
    return [Member(c, g, group.group_id, size) for c, g in zip(clients, groups, strict=True)]


# ---- bookkeeping of the timed phase -------------------------------------------------------------
@dataclass
class Tracker:
    """Message numbers → send start, and what has been decrypted where."""

    start: dict[int, float] = field(default_factory=dict)
    left: dict[int, int] = field(default_factory=dict)  # receivers still to decrypt it
    owner: dict[int, int] = field(default_factory=dict)  # message -> sender index
    in_flight: Counter[int] = field(default_factory=Counter)  # per sender
    send_ms: list[float] = field(default_factory=list)
    e2e_ms: list[float] = field(default_factory=list)
    expected: int = 0
    delivered: int = 0
    last_delivery: float = 0.0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    connected: set[int] = field(default_factory=set)  # raw listeners past connect()
    # opaque api: receivers see only (group, seq); the sender learns the seq from the answer
    by_seq: dict[tuple[bytes, int], int] = field(default_factory=dict)
    early: dict[tuple[bytes, int], list[float]] = field(default_factory=dict)

    def new_message(self, sender: int, receivers: int) -> int:
        n = next(_NUMBERS)  # unique across phases: a late straggler is never miscounted
        self.left[n] = receivers
        self.owner[n] = sender
        self.in_flight[sender] += 1
        self.expected += receivers
        return n

    def decrypted(self, data: bytes) -> None:
        self.arrived(int.from_bytes(data[:NUMBER_BYTES], "big"), time.perf_counter())

    def seq_arrived(self, key: tuple[bytes, int], now: float) -> None:
        n = self.by_seq.get(key)
        if n is None:  # the frame beat the POST's answer to the sender
            self.early.setdefault(key, []).append(now)
        else:
            self.arrived(n, now)

    def accepted_as(self, n: int, key: tuple[bytes, int]) -> None:
        self.by_seq[key] = n
        for now in self.early.pop(key, ()):
            self.arrived(n, now)

    def arrived(self, n: int, now: float) -> None:
        if n not in self.left:
            return  # not from this phase
        self.e2e_ms.append((now - self.start[n]) * 1000)
        self.delivered += 1
        self.last_delivery = now
        self.left[n] -= 1
        if self.left[n] == 0:
            del self.left[n]
            self.in_flight[self.owner[n]] -= 1
            self.changed.set()

    async def wait_window(self, sender: int, window: int, deadline: float) -> None:
        while self.in_flight[sender] >= window and time.perf_counter() < deadline:
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 0.05)

    async def drain(self) -> None:
        deadline = time.perf_counter() + DRAIN_SECONDS
        while self.delivered < self.expected and time.perf_counter() < deadline:
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 0.05)


def payload_of(n: int, size: int) -> bytes:
    return n.to_bytes(NUMBER_BYTES, "big") + b"x" * max(0, size - NUMBER_BYTES)


# ---- receivers -------------------------------------------------------------------------------
async def listen_groups(m: Member, t: Tracker, stop: asyncio.Event) -> None:
    def on_event(e) -> None:  # type: ignore[no-untyped-def]
        if e.kind == "message" and len(e.data) >= NUMBER_BYTES:
            t.decrypted(e.data)

    await m.groups.listen(on_event, stop=stop)


async def listen_raw(m: Member, t: Tracker, stop: asyncio.Event) -> None:
    group = m.group
    gid = group.group_id
    queue = m.groups.queue_of(gid)  # the membership's own queue
    assert queue is not None
    queue_id = queue.id
    cursors = m.groups.store.cursors
    rt = Realtime(m.client, positions={queue_id: cursors.after(gid)})
    await rt.connect()
    t.connected.add(id(m))
    try:
        while not stop.is_set():
            try:
                delivery = await rt.receive(timeout=0.25)
            except TimeoutError:
                continue
            if delivery.queue_id != queue_id:
                continue  # the direct queue (connection events, Welcomes): not measured
            for msg in delivery.messages:
                item = QueueItem.decode(msg.payload)
                if item.item_type != ITEM_MLS_MESSAGE:
                    continue  # a DS notice
                received = group.process(item.body)
                if received.kind == "application":
                    t.decrypted(received.data)
            await rt.ack({queue_id: delivery.last_seq}, wait=False)
            cursors.advance(gid, delivery.last_seq)  # so a later ``groups`` phase resumes here
        await rt.ack({queue_id: cursors.after(gid)})  # committed before the socket closes
    finally:
        await rt.close()


async def listen_opaque(m: Member, t: Tracker, stop: asyncio.Event) -> None:
    """ds_bench's lean receiver: a raw WebSocket, only (group, seq) parsed from each frame,
    one ack per frame not waited for; nothing decrypted."""
    gid = m.group.group_id
    queue = m.groups.queue_of(gid)  # the membership's own queue
    assert queue is not None
    queue_id = queue.id
    cursors = m.groups.store.cursors
    async with raw_realtime(m.client, queue_id, cursors.after(gid)) as ws:
        t.connected.add(id(m))
        ack_head = '{"type":"ack","queues":{"' + queue_id + '":'
        while not stop.is_set():
            try:
                frame = await asyncio.wait_for(ws.recv(), 0.25)
            except TimeoutError:
                continue
            except ConnectionClosed:
                return
            if isinstance(frame, str) or frame[0] != KIND_GROUP_QUEUE:
                continue  # pong, acked, or the direct queue (the hello names one group queue)
            now = time.perf_counter()
            items, last = parse_items(frame)
            for key in items:
                t.seq_arrived(key, now)
            await ws.send(f"{ack_head}{last}}}}}")
            cursors.advance(gid, last)  # so a later phase resumes here
        await ws.send(f"{ack_head}{cursors.after(gid)}}}}}")


def listening(m: Member, api: str, t: Tracker) -> bool:
    if api == "groups":
        rt = m.groups.realtime
        return rt is not None and bool(rt.ready)
    return id(m) in t.connected


# ---- senders ---------------------------------------------------------------------------------
async def paced(i: int, m: Member, t: Tracker, deadline: float, window: int) -> AsyncIterator[int]:
    """Sender ``i``'s message numbers until ``deadline``, each once its window allows (its
    send start recorded)."""
    while time.perf_counter() < deadline:
        await t.wait_window(i, window, deadline)
        if time.perf_counter() >= deadline:
            return
        n = t.new_message(i, m.group_size - 1)
        t.start[n] = time.perf_counter()
        yield n


async def send_groups(
    i: int, m: Member, t: Tracker, a: argparse.Namespace, deadline: float, window: int
) -> None:
    async for n in paced(i, m, t, deadline, window):
        await m.groups.send(m.group_id, payload_of(n, a.payload))
        t.send_ms.append((time.perf_counter() - t.start[n]) * 1000)


async def send_raw(
    i: int, m: Member, t: Tracker, a: argparse.Namespace, deadline: float, window: int
) -> None:
    url = urlsplit(m.client.state.server)
    http = await RawHttp.open(url.hostname or "127.0.0.1", url.port or 80)
    token = await m.client.bearer_token()
    group = m.group
    try:
        async for n in paced(i, m, t, deadline, window):
            ct = group.encrypt(payload_of(n, a.payload))
            await http.send_message(
                url.netloc, token, m.group_id, ct, m.groups.key_headers(m.group_id)
            )
            t.send_ms.append((time.perf_counter() - t.start[n]) * 1000)
    finally:
        http.close()


async def send_opaque(
    i: int, m: Member, t: Tracker, a: argparse.Namespace, deadline: float, window: int
) -> None:
    """ds_bench's sends: the same bytes every time (one PrivateMessage encrypted before the
    timed phase; the DS never opens it and the receivers do not decrypt), over RawHttp; the
    message is tracked by the group seq in the answer."""
    url = urlsplit(m.client.state.server)
    http = await RawHttp.open(url.hostname or "127.0.0.1", url.port or 80)
    token = await m.client.bearer_token()
    ct = m.group.encrypt(payload_of(0, a.payload))
    try:
        async for n in paced(i, m, t, deadline, window):
            seq = await http.send_message(
                url.netloc, token, m.group_id, ct, m.groups.key_headers(m.group_id)
            )
            t.send_ms.append((time.perf_counter() - t.start[n]) * 1000)
            t.accepted_as(n, (m.group_id, seq))
    finally:
        http.close()


LISTEN = {"groups": listen_groups, "raw": listen_raw, "opaque": listen_opaque}
SEND = {"groups": send_groups, "raw": send_raw, "opaque": send_opaque}


# ---- CPU accounting (from /proc) ---------------------------------------------------------------
def _ppid(pid: str) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def tree_cpu(pid: int) -> float:
    """User+system seconds of ``pid`` and its live descendants (``roost serve`` is one process
    unless it migrates a fresh data directory in a child at start-up)."""
    parents = {int(p): _ppid(p) for p in os.listdir("/proc") if p.isdigit()}
    total = 0.0
    for p in parents:
        q = p
        while q > 1 and q != pid:
            q = parents.get(q, 0)
        if q == pid:
            with contextlib.suppress(OSError):
                total += cpu_seconds(p)
    return total


@dataclass
class PgBackends:
    """The PostgreSQL backend processes serving one database (the server's pool and its
    LISTEN connection), found in ``pg_stat_activity``; their CPU read from /proc (the database
    runs on this machine). WAL writer, checkpointer and other shared processes are left out."""

    admin_url: str
    database: str

    async def cpu(self) -> dict[int, float]:
        conn = await asyncpg.connect(self.admin_url, timeout=5)
        try:
            rows = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1", self.database
            )
        finally:
            await conn.close()
        out = {}
        for r in rows:
            with contextlib.suppress(OSError):
                out[r["pid"]] = cpu_seconds(r["pid"])
        return out

    async def cpu_since(self, before: dict[int, float]) -> float:
        # Backends that started meanwhile count whole; those that ended meanwhile are lost.
        return sum(cpu - before.get(pid, 0.0) for pid, cpu in (await self.cpu()).items())


@contextlib.contextmanager
def py_spy(pid: int, path: str | None) -> Iterator[None]:
    """Sample the server with py-spy while the block runs: collapsed stacks with thread names
    and native frames (the only way to tell the event loop waiting from working here; native
    sampling pauses the process for each sample, hence the modest rate)."""
    if not path:
        yield
        return
    exe = Path(sys.executable).with_name("py-spy")
    log = open(path + ".log", "wb")  # noqa: SIM115 - the child keeps it
    spy = subprocess.Popen(
        [str(exe), "record", "-p", str(pid), "-o", path, "-f", "raw", "-r", "100"]
        + ["--native", "--threads"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    time.sleep(1.0)  # attached before the load starts
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes the file and exits
        spy.wait(timeout=60)
        if not Path(path).exists():
            raise RuntimeError(f"py-spy wrote no profile; see {path}.log")


# ---- one timed phase ---------------------------------------------------------------------------
async def phase(
    members: list[Member],
    senders: list[Member],
    api: str,
    a: argparse.Namespace,
    pid: int,
    pg: PgBackends | None,
    profile: str | None,
) -> dict[str, float]:
    t = Tracker()
    stop = asyncio.Event()
    window = 1 if a.one_sender else a.window
    listen = LISTEN[api]
    listeners = [asyncio.create_task(listen(m, t, stop)) for m in members]
    deadline = time.perf_counter() + 30
    while not all(listening(m, api, t) for m in members) and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # sockets connected (raw: connect() done) and idle
    for task in listeners:
        if task.done():
            task.result()  # a listener that failed: raise its error
    send = SEND[api]
    with py_spy(pid, profile):
        srv0, gen0 = tree_cpu(pid), time.process_time()
        pg0 = await pg.cpu() if pg else {}
        w0 = time.perf_counter()
        end = w0 + a.seconds
        await asyncio.gather(*(send(i, m, t, a, end, window) for i, m in enumerate(senders)))
        send_wall = time.perf_counter() - w0
        await t.drain()
        wall = max(t.last_delivery, w0 + send_wall) - w0
        srv, gen = tree_cpu(pid) - srv0, time.process_time() - gen0
        pg_cpu = await pg.cpu_since(pg0) if pg else float("nan")
    stop.set()
    await asyncio.gather(*listeners)
    sent = len(t.send_ms)
    return {
        "sent": sent,
        "delivered": t.delivered,
        "expected": t.expected,
        "sends_per_s": sent / send_wall,
        "deliveries_per_s": t.delivered / wall,
        "send_p50": pct(t.send_ms, 50),
        "send_p99": pct(t.send_ms, 99),
        "e2e_p50": pct(t.e2e_ms, 50),
        "e2e_p99": pct(t.e2e_ms, 99),
        "srv_ms_per_send": srv * 1000 / max(1, sent),
        "srv_ms_per_delivery": srv * 1000 / max(1, t.delivered),
        "pg_ms_per_send": pg_cpu * 1000 / max(1, sent),
        "gen_cpu_pct": gen * 100 / wall,
    }


async def bench_engine(engine: str, a: argparse.Namespace) -> list[tuple[str, int, str, dict]]:
    rows = []
    db_name = f"roost_bench_{uuid.uuid4().hex[:10]}"
    pg = PgBackends(a.postgres, db_name) if engine == "postgresql" else None
    async with bench_server(engine, a.postgres, db_name=db_name, port=a.port) as srv:
        print(f"{engine}: roost serve pid {srv.pid} at {srv.url}", file=sys.stderr)
        for size in [int(x) for x in a.groups.split(",")]:
            k = 1 if a.one_sender else a.senders
            members = []
            for _ in range(math.ceil(k / size)):
                members += await make_group(srv.url, size)
            senders = members[:k]
            for _ in range(a.rounds):
                for api in a.api.split(","):
                    profile = f"{a.py_spy}-{engine}-{size}-{api}.txt" if a.py_spy else None
                    r = await phase(members, senders, api, a, srv.pid, pg, profile)
                    r["senders"] = k
                    rows.append((engine, size, api, r))
                    print_row(engine, size, api, r, file=sys.stderr)
                    if profile:
                        print(profile_breakdown(profile), file=sys.stderr)
            for m in members:
                await m.client.aclose()
    return rows


# ---- output ----------------------------------------------------------------------------------
HEADER = (
    "engine     |   G | api    |  K | sends | sends/s | deliv/s | send p50 | send p99 | "
    "e2e p50  | e2e p99  | srv CPU/send | srv CPU/deliv | pg CPU/send | gen CPU"
)


def _ms(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.2f}ms"


def print_row(engine: str, size: int, api: str, r: dict, file=sys.stdout) -> None:  # type: ignore[no-untyped-def]
    lost = (
        "" if r["delivered"] >= r["expected"] else f"  (decrypted {r['delivered']}/{r['expected']})"
    )
    print(
        f"{engine:<10} | {size:>3} | {api:<6} | {r['senders']:>2.0f} | {r['sent']:>5.0f} | "
        f"{r['sends_per_s']:>7.1f} | {r['deliveries_per_s']:>7.0f} | {r['send_p50']:>6.1f}ms | "
        f"{r['send_p99']:>6.1f}ms | {r['e2e_p50']:>6.1f}ms | {r['e2e_p99']:>6.1f}ms | "
        f"{r['srv_ms_per_send']:>10.2f}ms | {r['srv_ms_per_delivery']:>11.3f}ms | "
        f"{_ms(r['pg_ms_per_send']):>11} | {r['gen_cpu_pct']:>5.0f} %{lost}",
        file=file,
    )


# py-spy cannot tell a waiting thread from a running one here (all threads show up in every
# sample), so the profile is taken with native frames and thread names: only the event loop's
# thread (MainThread) is counted, and its samples inside epoll_pwait are the loop waiting.
IDLE_LEAVES = ("epoll_pwait", "epoll_wait")
# Where in the server a busy sample is: the first rule with a roost frame on the stack wins
# (specific before general: a NOTIFY runs inside the send writer's transaction).
STAGES = (
    ("NOTIFY (notify/pg_bridge.py)", ("notify/pg_bridge.py",)),
    ("acks (coalesced ack writes)", ("_write_acks", "ack_many", "_acker")),
    (
        "fan-out: queue counters and rows",
        ("queues/service.py", "store/counters.py", "delivery/fanout.py"),
    ),
    ("send writer: group seqs, idempotency, transaction", ("delivery/send_writer.py",)),
    # uvicorn's request parsing runs under the deadline subclass (connection_limits.py)
    ("uvicorn / websockets protocol", ("connection_limits.py",)),
    (
        "send request: fast path, auth, middleware",
        ("delivery/", "auth/", "input_guard.py", "server/limits.py", "observability/"),
    ),
    ("realtime sessions: reading frames, writing deliveries", ("notify/",)),
    ("push wake-ups", ("push/",)),
    ("other roost (background loops)", ("roost/",)),
)
# Samples without a roost frame: SQLAlchemy runs statements in a greenlet whose stack py-spy
# shows without its caller; the rest is the protocols and the loop itself.
UNATTRIBUTED = (
    ("SQLAlchemy in a greenlet (caller not on the stack)", ("sqlalchemy/", "greenlet")),
    ("uvicorn / websockets protocol", ("uvicorn/protocols/", "websockets/", "httptools")),
)


# What library the busy sample's innermost Python frame belongs to.
LIBRARIES = (
    ("SQLAlchemy", ("sqlalchemy/",)),
    ("asyncpg", ("asyncpg/",)),
    ("aiosqlite", ("aiosqlite/",)),
    ("websockets", ("websockets/",)),
    ("uvicorn / httptools", ("uvicorn/", "httptools")),
    ("Starlette / FastAPI", ("starlette/", "fastapi/")),
    ("pydantic", ("pydantic",)),
    ("asyncio / uvloop", ("asyncio/", "uvloop", "loop.c", "_asynciomodule")),
    ("roost", ("roost/",)),
)


def _match(frame: str, keys: tuple[str, ...]) -> bool:
    return any(k in frame for k in keys)


def profile_breakdown(path: str) -> str:
    """Shares of the event loop thread's busy samples: by server stage and by library."""
    stages: Counter[str] = Counter()
    libraries: Counter[str] = Counter()
    busy = idle = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        frames = stack.split(";")
        if not frames or "MainThread" not in frames[0]:
            continue
        n = int(count)
        if _match(frames[-1], IDLE_LEAVES):
            idle += n
            continue
        busy += n
        python = [f for f in frames[1:] if ".py:" in f]
        roost = [
            f for f in python if "roost/" in f and not _match(f, ("roost/cli/", "commands.py"))
        ]
        stage = next(
            (name for name, keys in STAGES if any(_match(f, keys) for f in roost)),
            next(
                (name for name, keys in UNATTRIBUTED if any(_match(f, keys) for f in frames)),
                "event loop / C (uvloop callbacks, sockets, thread hand-offs)",
            ),
        )
        stages[stage] += n
        inner = python[-1] if python else frames[-1]
        lib = next((name for name, keys in LIBRARIES if _match(inner, keys)), "other")
        libraries[lib] += n
    total = busy + idle
    if not total:
        return f"profile {path}: no samples of the event loop thread"
    lines = [
        f"profile {path}: event loop thread busy in {busy / total:.0%} of {total} samples;"
        " shares of the busy samples"
    ]
    lines += ["  by stage (roost frames on the stack):"]
    lines += [f"    {n / busy:6.1%}  {c}" for c, n in stages.most_common()]
    lines += ["  by library (innermost Python frame):"]
    lines += [f"    {n / busy:6.1%}  {c}" for c, n in libraries.most_common()]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--engine",
        help="sqlite, postgresql or both (default: sqlite, and postgresql when --postgres or "
        "$ROOST_TEST_POSTGRES_URL names a server)",
    )
    p.add_argument("--groups", default="3,20,100", help="group sizes G")
    p.add_argument("--senders", type=int, default=16, help="K: members that send")
    p.add_argument("--seconds", type=float, default=10.0, help="sending phase per row")
    p.add_argument("--payload", type=int, default=1024, help="application message bytes")
    p.add_argument("--window", type=int, default=8, help="per sender: not yet decrypted by all")
    p.add_argument(
        "--api",
        default="groups",
        help="groups, raw, opaque, or a list of them (alternating within one run)",
    )
    p.add_argument("--rounds", type=int, default=1, help="repeat the --api list this often")
    p.add_argument("--one-sender", action="store_true", help="K=1, G=3, one message at a time")
    p.add_argument("--py-spy", metavar="PREFIX", help="profile the server (py-spy in the venv)")
    p.add_argument(
        "--postgres",
        metavar="URL",
        default=os.environ.get("ROOST_TEST_POSTGRES_URL"),
        help="a PostgreSQL server where a throw-away database is made (and dropped)",
    )
    p.add_argument("--port", type=int, help="the server's loopback port (default: a free one)")
    a = p.parse_args()
    if a.engine is None:
        a.engine = "sqlite,postgresql" if a.postgres else "sqlite"
    if "postgresql" in a.engine and not a.postgres:
        p.error("postgresql needs --postgres URL or $ROOST_TEST_POSTGRES_URL")
    if unknown := set(a.api.split(",")) - set(SEND):
        p.error(f"unknown --api {', '.join(sorted(unknown))} (groups, raw, opaque)")
    if a.one_sender:
        a.groups = "3"
    rows = []
    load0 = os.getloadavg()[0]
    for engine in a.engine.split(","):
        rows += asyncio.run(bench_engine(engine.strip(), a))
    k = 1 if a.one_sender else a.senders
    print(
        f"{a.payload}-byte MLS application messages, K={k} senders, window "
        f"{1 if a.one_sender else a.window}, {a.seconds:g} s per row; received by every "
        f"other member over the realtime WebSocket (decrypted, except on the opaque rows)"
    )
    print(HEADER)
    print("-" * len(HEADER))
    for engine, size, api, r in rows:
        print_row(engine, size, api, r)
    if a.rounds > 1:
        print(f"\nmedians of {a.rounds} rounds")
        print(HEADER)
        print("-" * len(HEADER))
        for key, med in medians(rows).items():
            print_row(*key, med)
    meds = medians(rows)
    for (engine, size, api), med in meds.items():
        for other in ("raw", "opaque"):
            base = meds.get((engine, size, other))
            if api == "groups" and base:
                print(
                    f"{engine} G={size}: Groups.send/listen at "
                    f"{med['sends_per_s'] / base['sends_per_s']:.0%} of the {other} path's "
                    f"sends/s; server CPU per send {med['srv_ms_per_send']:.2f} vs "
                    f"{base['srv_ms_per_send']:.2f} ms (medians)"
                )
    print(f"load average (1 min) before / after: {load0:.2f} / {os.getloadavg()[0]:.2f}")


def medians(rows: list[tuple[str, int, str, dict]]) -> dict[tuple[str, int, str], dict]:
    """Per (engine, G, api), the median of every column over the rounds."""
    grouped: dict[tuple[str, int, str], list[dict]] = {}
    for engine, size, api, r in rows:
        grouped.setdefault((engine, size, api), []).append(r)
    return {
        key: {col: statistics.median(r[col] for r in rs) for col in rs[0]}
        for key, rs in grouped.items()
    }


if __name__ == "__main__":
    main()
