"""Cross-domain benchmark: send→receive latency of 1 KiB application messages across two
federated homeservers, beside the same-domain latency measured in the same run.

Two real ``roost serve`` processes, a.test and b.test (separate databases, loopback ports,
federation admitted both ways), started with the federation test harness
(tests/federation/harness.py). One group lives on a.test's DS with four members: alice and dave
on a.test, bob and carol on b.test. alice and bob take turns sending 1 KiB messages with
``roost.client`` (MLS-encrypted ``Groups.send``), one at a time; dave (a.test) and carol
(b.test) receive with ``Groups.listen`` over their realtime WebSocket and decrypt. Each send
waits until both receivers have it, so this is latency without queueing, not throughput.

Rows (send→recv is from the start of ``send`` to the decrypted message in the receiver's
callback; send is the sender's HTTP round trip):

- same domain       alice@a.test → group@a.test → dave@a.test
- a → b             alice@a.test → group@a.test → carol@b.test (DS fan-out through a.test's
                    outbox to b.test's queue)
- b → a             bob@b.test → (forwarded, signed) group@a.test → dave@a.test
- b → b via a       bob@b.test → group@a.test → carol@b.test (forwarded, then the outbox back)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the federation test harness lives under tests/

from tests.federation.harness import Federation, make_federation  # noqa: E402

from roost.client import RoostClient  # noqa: E402
from roost.client.groups import GroupEvent, Groups  # noqa: E402

A, B = "a.test", "b.test"
MESSAGE_BYTES = 1024
RECEIVE_TIMEOUT = 60.0
SETUP_TIMEOUT = 120.0


@dataclass
class Receiver:
    """A member listening over realtime; records when each numbered message arrived."""

    client: RoostClient
    groups: Groups
    arrived: dict[int, float] = field(default_factory=dict)
    new: asyncio.Event = field(default_factory=asyncio.Event)

    def on_event(self, e: GroupEvent) -> None:
        if e.kind == "message" and e.data[:4] == b"msg ":
            n = int(e.data[4:16])
            self.arrived.setdefault(n, time.perf_counter())
            self.new.set()

    async def wait_for(self, n: int) -> float:
        deadline = time.monotonic() + RECEIVE_TIMEOUT
        while n not in self.arrived:
            self.new.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.client.user_id} did not receive message {n}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.new.wait(), left)
        return self.arrived[n]


def payload(n: int) -> bytes:
    head = f"msg {n:012d} ".encode()
    return head + b"x" * (MESSAGE_BYTES - len(head))


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


async def until(probe: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + SETUP_TIMEOUT
    while not await probe():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.2)


async def register(fed: Federation, domain: str, prefix: str) -> tuple[RoostClient, Groups]:
    client = await RoostClient.register(fed[domain].url, f"{prefix}{uuid.uuid4().hex[:8]}")
    await client.publish_key_packages(3)
    return client, Groups(client)


async def connect(a: RoostClient, b: RoostClient) -> None:
    from roost.client import RoostError

    conn = await a.open_connection(b.user_id)
    await a.send_connection_request(conn.connection_id, b"hello")

    async def accepted() -> bool:
        try:
            await b.accept_connection(conn.connection_id)
            return True
        except RoostError as e:
            if e.status in (404, 409):  # still travelling through the outbox
                return False
            raise

    await until(accepted, f"{b.user_id} sees the connection request")

    async def seen_by_a() -> bool:
        return any(
            c.connection_id == conn.connection_id and c.state == "accepted"
            for c in await a.connections()
        )

    await until(seen_by_a, f"{a.user_id} sees the accept")


async def measure(fed: Federation, messages: int, warmup: int) -> dict[str, dict[str, list]]:
    alice, alice_g = await register(fed, A, "alice")
    dave, dave_g = await register(fed, A, "dave")
    bob, bob_g = await register(fed, B, "bob")
    carol, carol_g = await register(fed, B, "carol")
    for other in (dave, bob, carol):
        await connect(alice, other)
    group = await alice_g.create()
    gid = group.group_id
    for other in (dave, bob, carol):  # one Add per commit (one remote domain at a time)
        await alice_g.invite(gid, [other.user_id])
    for g in (dave_g, bob_g, carol_g):

        async def joined(g: Groups = g) -> bool:
            await g.sync()
            if gid not in g.local_group_ids():
                return False
            return g.group(gid).epoch == alice_g.group(gid).epoch

        await until(joined, f"{g.client.user_id} joins")

    receivers = {"dave": Receiver(dave, dave_g), "carol": Receiver(carol, carol_g)}
    stop = asyncio.Event()
    listeners = [
        asyncio.create_task(r.groups.listen(r.on_event, stop=stop)) for r in receivers.values()
    ]
    rows: dict[str, dict[str, list]] = {
        name: {"send": [], "recv": []} for name in ("same domain", "a → b", "b → a", "b → b via a")
    }
    route = {
        ("alice", "dave"): "same domain",
        ("alice", "carol"): "a → b",
        ("bob", "dave"): "b → a",
        ("bob", "carol"): "b → b via a",
    }
    senders = {"alice": alice_g, "bob": bob_g}
    try:
        await asyncio.sleep(1.0)  # sockets up
        n = 0
        for i in range(warmup + messages):
            for name, g in senders.items():
                n += 1
                start = time.perf_counter()
                await g.send(gid, payload(n))
                sent = time.perf_counter()
                arrivals = {r: await rec.wait_for(n) for r, rec in receivers.items()}
                if i < warmup:
                    continue
                for r, at in arrivals.items():
                    row = rows[route[(name, r)]]
                    row["recv"].append((at - start) * 1000)
                    row["send"].append((sent - start) * 1000)
            # the senders' own queues fill with the other's messages: drain them now and then
            if i % 20 == 19:
                await alice_g.sync()
                await bob_g.sync()
    finally:
        stop.set()
        await asyncio.gather(*listeners, return_exceptions=True)
        for c in (alice, dave, bob, carol):
            await c.aclose()
    return rows


async def _pg_admin(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def print_table(engine: str, rows: dict[str, dict[str, list]]) -> None:
    header = (
        f"{'path (' + engine + ')':28} | msgs | send p50 | send p99 | send→recv p50 | send→recv p99"
    )
    print(header)
    print("-" * len(header))
    for name, r in rows.items():
        recv, send = r["recv"], r["send"]
        print(
            f"{name:28} | {len(recv):4} | {pct(send, 50):6.1f}ms | {pct(send, 99):6.1f}ms | "
            f"{pct(recv, 50):11.1f}ms | {pct(recv, 99):11.1f}ms"
        )
    same = statistics.median(rows["same domain"]["recv"])
    for name in ("a → b", "b → a", "b → b via a"):
        extra = statistics.median(rows[name]["recv"]) - same
        print(f"  {name}: +{extra:.1f} ms over same-domain (median)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--messages", type=int, default=100, help="timed messages per sender")
    ap.add_argument("--warmup", type=int, default=5, help="untimed messages per sender first")
    ap.add_argument("--engine", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument(
        "--postgres-url",
        default=os.environ.get("ROOST_BENCH_POSTGRES_URL")
        or "postgresql://postgres@127.0.0.1:5432/test",
        help="PostgreSQL server where one throw-away database per homeserver is made",
    )
    args = ap.parse_args()

    made: list[str] = []

    def database() -> str:
        name = f"roost_fedbench_{uuid.uuid4().hex[:10]}"
        asyncio.run(_pg_admin(args.postgres_url, f'CREATE DATABASE "{name}"'))
        made.append(name)
        return urlunsplit(urlsplit(args.postgres_url)._replace(path="/" + name))

    with tempfile.TemporaryDirectory(prefix="roost-fedbench-") as tmp:
        fed = make_federation(
            Path(tmp),
            (A, B),
            engine=args.engine,
            database_url=database if args.engine == "postgresql" else None,
            policy="peers",
        )
        try:
            rows = asyncio.run(measure(fed, args.messages, args.warmup))
        finally:
            fed.stop()
            for name in made:
                asyncio.run(_pg_admin(args.postgres_url, f'DROP DATABASE IF EXISTS "{name}"'))
    print(
        f"1 KiB application messages, one at a time, realtime delivery (roost.client), "
        f"{args.messages} per sender, {os.cpu_count()} CPUs, load generator on the same machine"
    )
    print_table(args.engine, rows)


if __name__ == "__main__":
    main()
