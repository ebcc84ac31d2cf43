"""Delivery Service benchmark: 1 KiB application messages to groups of 3 and of 50, delivered
in realtime (WebSocket) to every other member, on SQLite and on PostgreSQL.

For each engine a real ``roost serve`` process is started (``roost.cli.demo.embedded_server``);
users, connections and groups are set up through the client library (not timed). Then the
load generator (this process) sends pre-encrypted PrivateMessages from one member of each group
with ``--concurrency`` requests in flight, while every other member holds a realtime socket,
reads each delivery frame, decodes the queue item and acks. Printed per engine and group size:

- sends/s: messages accepted by the DS per second of the timed run (until the last POST);
- send p50/p99: POST ``/v1/groups/{id}/messages`` round trip;
- send→recv p50/p99: from the start of the POST to the arrival of the item on each receiver's
  socket (every receiver of every message counts);
- server RSS after the run and server CPU (user+system) per message during it.

Receivers do not decrypt (that is the clients' CPU, not the server's); they would only add
load-generator work on the same 2 cores. PostgreSQL: ``--postgres-url`` (default
``$ROOST_BENCH_POSTGRES_URL`` or ``postgresql://postgres@127.0.0.1:5432/test``) names a server
where a throw-away database is created and dropped; it runs with its default durable commits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from roost.cli.demo import EmbeddedServer, embedded_server
from roost.client import RoostClient
from roost.client.groups import Groups, group_path

MESSAGE_BYTES = 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---- server process metrics ----------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# ---- set-up ----------------------------------------------------------------------------------
@dataclass
class BenchGroup:
    group_id: bytes
    sender: RoostClient
    ciphertexts: list[bytes]
    receivers: list[tuple[RoostClient, str]]  # client, its group-message queue id
    key_headers: dict[str, str]  # the group key, as every request on the group carries it


async def make_group(url: str, size: int, messages: int) -> BenchGroup:
    tag = uuid.uuid4().hex[:8]
    members = [await RoostClient.register(url, f"b{tag}{i}") for i in range(size)]
    for m in members[1:]:
        await m.publish_key_packages(1)
    owner = members[0]
    for m in members[1:]:
        conn = await owner.open_connection(m.user_id)
        await owner.send_connection_request(conn.connection_id, b"bench")
        await m.accept_connection(conn.connection_id)
    owner_groups = Groups(owner)
    group = await owner_groups.create()
    gid = group.group_id
    # Invite in chunks: one commit per up to 49 users keeps the requests small.
    others = [m.user_id for m in members[1:]]
    for i in range(0, len(others), 49):
        await owner_groups.invite(gid, others[i : i + 49])
    receivers = []
    for m in members[1:]:
        g = Groups(m)
        await g.sync()
        queue = g.queue_of(gid)  # the membership's own queue
        assert queue is not None, "a receiver did not join"
        receivers.append((m, queue.id))
    payload = os.urandom(MESSAGE_BYTES)
    ciphertexts = [group.encrypt(payload) for _ in range(messages)]
    return BenchGroup(gid, owner, ciphertexts, receivers, owner_groups.key_headers(gid))


# ---- the timed run ---------------------------------------------------------------------------
@dataclass
class Timings:
    send_ms: list[float] = field(default_factory=list)
    start: dict[tuple[bytes, int], float] = field(default_factory=dict)  # (group, seq) -> t0
    received: list[tuple[bytes, int, float]] = field(default_factory=list)


def _varint(frame: bytes, i: int) -> tuple[int, int]:
    """An MLS (RFC 9000) variable-length integer at ``i``: (value, next index)."""
    first = frame[i]
    size = 1 << (first >> 6)
    value = first & 0x3F
    for b in frame[i + 1 : i + size]:
        value = (value << 8) | b
    return value, i + size


def parse_items(frame: bytes) -> tuple[list[tuple[bytes, int]], int]:
    """(group id, group seq) of each item of a group-queue delivery frame, and its last queue
    seq — only what the benchmark needs, without the client library's objects."""
    items = []
    i = 17  # kind (1) + queue id (16)
    seq = 0
    while i < len(frame):
        seq = int.from_bytes(frame[i : i + 8], "big")
        length, i = _varint(frame, i + 8)
        end = i + length
        # RoostQueueItem: u8 type || opaque group_id<V> || u64 group_seq || ...
        gid_len, j = _varint(frame, i + 1)
        gid = frame[j : j + gid_len]
        items.append((gid, int.from_bytes(frame[j + gid_len : j + gid_len + 8], "big")))
        i = end
    return items, seq


@contextlib.asynccontextmanager
async def raw_realtime(
    client: RoostClient, queue_id: str, after: int
) -> AsyncIterator[ClientConnection]:
    """A raw realtime WebSocket for the load generator (no client-library work per frame),
    subscribed to ``queue_id`` (with its key, which the client holds) after ``after`` and past
    the server's ``ready``."""
    url = client.state.server.replace("http://", "ws://", 1) + "/v1/realtime"
    token = await client.bearer_token()
    key = client.queue(queue_id).key
    async with ws_connect(
        url,
        additional_headers={"Authorization": f"Bearer {token}"},
        compression=None,
        ping_interval=None,
        max_size=None,
    ) as ws:
        hello = {"type": "hello", "queue_keys": {queue_id: key}, "queues": {queue_id: after}}
        await ws.send(json.dumps(hello))
        while (ready := json.loads(await ws.recv())).get("type") != "ready":
            pass
        if queue_id not in ready.get("queues", []):
            raise RuntimeError(f"the realtime session refused the queue: {ready.get('refused')}")
        yield ws


async def receiver(
    client: RoostClient, queue_id: str, t: Timings, done: asyncio.Event, ready: asyncio.Event
) -> None:
    """A lean realtime reader (shares the cores with the server): raw WebSocket, minimal frame
    parsing, an ack (no id: not waited for) after every frame."""
    async with raw_realtime(client, queue_id, 0) as ws:
        ready.set()
        stopper = asyncio.create_task(done.wait())
        stopper.add_done_callback(lambda _f: asyncio.ensure_future(ws.close()))
        ack_head = '{"type":"ack","queues":{"' + queue_id + '":'
        received = t.received
        try:
            async for frame in ws:
                if isinstance(frame, str):
                    continue  # pong / acked / error: nothing to do
                now = time.perf_counter()
                items, last = parse_items(frame)
                for gid, seq in items:
                    received.append((gid, seq, now))
                await ws.send(f"{ack_head}{last}}}}}")
        except ConnectionClosed:
            pass
        finally:
            stopper.cancel()


class RawHttp:
    """A minimal keep-alive HTTP/1.1 client for the load generator: httpx costs ~1.5 ms of
    client CPU per request, which on 2 shared cores would measure the load generator, not the
    server. One request at a time per connection; responses carry Content-Length."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> RawHttp:
        return cls(*await asyncio.open_connection(host, port))

    async def send_message(
        self,
        netloc: str,
        token: str,
        group_id: bytes,
        body: bytes,
        headers: dict[str, str] | None = None,
    ) -> int:
        """``POST /v1/groups/{group}/messages`` with a fresh message id (and ``headers``: the
        group key); the ``group_seq`` the DS answered (anything but 201 raises)."""
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head = (
            f"POST /v1/groups/{group_path(group_id)}/messages HTTP/1.1\r\n"
            f"Host: {netloc}\r\nAuthorization: Bearer {token}\r\n{extra}"
            f"Content-Type: message/mls\r\nRoost-Message-Id: {uuid.uuid4().hex}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        status, answer = await self.request(head + body)
        if status != 201:
            raise RuntimeError(f"send failed: {status} {answer[:200]!r}")
        return int(json.loads(answer)["group_seq"])

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, await self.reader.readexactly(length) if length else b""

    def close(self) -> None:
        self.writer.close()


async def run(
    groups: list[BenchGroup], concurrency: int, pid: int, profile: str | None = None
) -> dict[str, float]:
    t = Timings()
    done = asyncio.Event()
    expected = sum(len(g.ciphertexts) * len(g.receivers) for g in groups)
    readies = [asyncio.Event() for g in groups for _ in g.receivers]
    pairs = [(c, q) for g in groups for c, q in g.receivers]
    tasks = [
        asyncio.create_task(receiver(c, q, t, done, r))
        for (c, q), r in zip(pairs, readies, strict=True)
    ]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 30)
    await asyncio.sleep(0.5)  # sockets connected and idle
    tokens = {id(g): await g.sender.bearer_token() for g in groups}
    longest = max(len(g.ciphertexts) for g in groups)
    work = iter(  # round robin over the groups
        [(g, g.ciphertexts[i]) for i in range(longest) for g in groups if i < len(g.ciphertexts)]
    )
    url = urlsplit(groups[0].sender.state.server)
    conns = [
        await RawHttp.open(url.hostname or "127.0.0.1", url.port or 80) for _ in range(concurrency)
    ]

    async def sender(http: RawHttp) -> None:
        for g, ct in work:
            t0 = time.perf_counter()
            seq = await http.send_message(url.netloc, tokens[id(g)], g.group_id, ct, g.key_headers)
            t.send_ms.append((time.perf_counter() - t0) * 1000)
            t.start[(g.group_id, seq)] = t0

    spy = None
    if profile:
        # Sampling profile of the server during the timed phase (py-spy must be installed).
        spy = subprocess.Popen(
            ["py-spy", "record", "-p", str(pid), "-o", profile, "-f", "speedscope", "-r", "200"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await asyncio.sleep(1.0)
    cpu0, w0 = cpu_seconds(pid), time.perf_counter()
    await asyncio.gather(*(sender(c) for c in conns))
    wall = time.perf_counter() - w0
    deadline = time.monotonic() + 60
    while len(t.received) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    cpu = cpu_seconds(pid) - cpu0
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)
    for c in conns:
        c.close()
    done.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    e2e = [
        (now - t.start[(gid, seq)]) * 1000 for gid, seq, now in t.received if (gid, seq) in t.start
    ]
    sent = len(t.send_ms)
    return {
        "messages": sent,
        "deliveries": len(t.received),
        "expected": expected,
        "sends_per_s": sent / wall,
        "send_p50": pct(t.send_ms, 50),
        "send_p99": pct(t.send_ms, 99),
        "e2e_p50": pct(e2e, 50),
        "e2e_p99": pct(e2e, 99),
        "rss_mib": rss_mib(pid),
        "cpu_ms_per_msg": cpu * 1000 / max(1, sent),
    }


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]


# ---- engines -------------------------------------------------------------------------------
async def _pg_admin(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


# Rate limits lifted: the set-up registers and connects many users at once.
BENCH_LIMITS = {
    "ROOST_LIMITS_REGISTRATIONS_PER_MINUTE": "100000",
    "ROOST_LIMITS_CLAIMS_PER_MINUTE": "100000",
    "ROOST_LIMITS_CLAIMS_PER_TARGET_PER_MINUTE": "100000",
    "ROOST_LIMITS_AUTH_PER_MINUTE": "100000",
}


@contextlib.asynccontextmanager
async def bench_server(
    engine: str, postgres_url: str, *, db_name: str = "", port: int | None = None
) -> AsyncIterator[EmbeddedServer]:
    """A real ``roost serve`` with the rate limits lifted: SQLite in a temporary directory, or
    PostgreSQL in a throw-away database on ``postgres_url`` (``db_name``, default a random one;
    dropped afterwards); on ``port`` (default: a free one)."""
    extra = dict(BENCH_LIMITS)
    if engine == "postgresql":
        db_name = db_name or f"roost_bench_{uuid.uuid4().hex[:10]}"
        await _pg_admin(postgres_url, f'CREATE DATABASE "{db_name}"')
        parts = urlsplit(postgres_url)
        extra["ROOST_DATABASE_URL"] = urlunsplit(parts._replace(path="/" + db_name))
    elif engine == "sqlite":
        db_name = ""  # nothing to create or drop
    else:
        raise ValueError(f"unknown engine {engine!r} (sqlite, postgresql)")
    try:
        with (
            tempfile.TemporaryDirectory(prefix="roost-bench-") as tmp,
            embedded_server(Path(tmp), extra_env=extra, port=port) as srv,
        ):
            yield srv
    finally:
        if db_name:
            await _pg_admin(postgres_url, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


async def bench_engine(engine: str, args: argparse.Namespace) -> list[tuple[str, int, dict]]:
    rows = []
    async with bench_server(engine, args.postgres_url) as srv:
        sizes = {int(x) for x in args.sizes.split(",")}
        for size, n_groups, messages in (
            (3, args.groups3, args.messages3),
            (50, 1, args.messages50),
        ):
            if size not in sizes:
                continue
            per_group = max(1, messages // n_groups)
            groups = [await make_group(srv.url, size, per_group) for _ in range(n_groups)]
            profile = f"{args.py_spy}-{engine}-{size}.json" if args.py_spy else None
            result = await run(groups, args.concurrency, srv.pid, profile)
            rows.append((engine, size, result))
            print_row(engine, size, result, file=sys.stderr)
            for g in groups:
                await g.sender.aclose()
                for c, _ in g.receivers:
                    await c.aclose()
    return rows


HEADER = (
    "engine      | group | msgs  | sends/s | send p50 | send p99 | send→recv p50 | "
    "send→recv p99 | server RSS | CPU/msg"
)


def print_row(engine: str, size: int, r: dict, file=sys.stdout) -> None:
    lost = (
        ""
        if r["deliveries"] >= r["expected"]
        else f"  (delivered {r['deliveries']}/{r['expected']})"
    )
    print(
        f"{engine:<11} | {size:>5} | {r['messages']:>5} | {r['sends_per_s']:>7.0f} | "
        f"{r['send_p50']:>6.1f}ms | {r['send_p99']:>6.1f}ms | {r['e2e_p50']:>11.1f}ms | "
        f"{r['e2e_p99']:>11.1f}ms | {r['rss_mib']:>6.0f} MiB | {r['cpu_ms_per_msg']:>5.2f}ms{lost}",
        file=file,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engines", default="sqlite,postgresql")
    p.add_argument("--messages3", type=int, default=3000, help="messages to groups of 3 (total)")
    p.add_argument("--groups3", type=int, default=8, help="how many groups of 3 share the load")
    p.add_argument("--messages50", type=int, default=300, help="messages to the group of 50")
    p.add_argument("--concurrency", type=int, default=32, help="sends in flight")
    p.add_argument("--sizes", default="3,50", help="group sizes to run (3, 50)")
    p.add_argument(
        "--py-spy", metavar="PREFIX", help="record a py-spy profile of the server (measurement)"
    )
    p.add_argument(
        "--postgres-url",
        default=os.environ.get("ROOST_BENCH_POSTGRES_URL")
        or "postgresql://postgres@127.0.0.1:5432/test",
    )
    args = p.parse_args()
    rows = []
    for engine in args.engines.split(","):
        rows += asyncio.run(bench_engine(engine.strip(), args))
    print(
        f"1 KiB application messages, realtime delivery to every other member "
        f"(concurrency {args.concurrency})"
    )
    print(HEADER)
    print("-" * len(HEADER))
    for engine, size, r in rows:
        print_row(engine, size, r)


if __name__ == "__main__":
    main()
