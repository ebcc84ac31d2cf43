"""The durable outbound federation queue and the idempotent inbox (federation/outbox.py).

Two real homeserver apps (``a.test`` sends, ``b.test`` receives), each with its own database,
served by uvicorn on loopback ports in this process, talk over real sockets with real signed
requests. The receiver registers a ``test.note`` item kind whose handler records what it
applied, so order, loss and duplicates are visible; the sender queues notes through the real
``Outbox.enqueue_in``. Downtime is a real stop of the receiver's server (its port refuses).
``roost admin`` runs as a separate process against the sender's database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn

from roost.server.app import create_app
from roost.server.config import Config, build_config
from roost.server.errors import Problem
from roost.server.federation.outbox import (
    BACKOFF_CAP_SECONDS,
    BATCH_MEDIA_TYPE,
    INBOX_PATH,
    BatchError,
    BatchItem,
    backoff_seconds,
    decode_batch,
    encode_batch,
)
from roost.server.federation.tables import fed_destinations, fed_outbox
from roost.server.federation.transport import FederationRefused
from roost.server.store import Database
from roost.server.store.migrate import upgrade
from tests.integration.harness import free_port

from .conftest import FEDERATION_ENGINES

KIND = "test.note"
DELIVERY_TIMEOUT = 20.0


# ---- unit: schedule and wire format ------------------------------------------------------------


def test_backoff_doubles_and_is_capped_at_one_hour() -> None:
    no_jitter, full_jitter = (lambda: 0.0), (lambda: 1.0)
    assert [backoff_seconds(n, no_jitter) for n in range(1, 6)] == [2, 4, 8, 16, 32]
    assert backoff_seconds(11, no_jitter) == 2048
    for attempts in (12, 13, 40, 10_000):
        assert backoff_seconds(attempts, no_jitter) == BACKOFF_CAP_SECONDS == 3600
        assert 0.8 * 3600 <= backoff_seconds(attempts, full_jitter) <= 3600
    # Jitter only ever shortens the wait (at most 20 %), never beyond the cap.
    for attempts in range(1, 20):
        for _ in range(50):
            base = min(2**attempts, 3600)
            assert 0.8 * base <= backoff_seconds(attempts) <= base


def test_batch_round_trip_and_malformed_batches() -> None:
    items = [BatchItem(1, "ds.items", b""), BatchItem(7, KIND, b"x" * 70_000)]
    assert decode_batch(encode_batch(items)) == items
    good = encode_batch(items)
    bad = {
        "empty": b"",
        "truncated": good[:-1],
        "trailing byte": good + b"\x00",
        "ids not ascending": encode_batch([BatchItem(5, KIND, b""), BatchItem(5, KIND, b"")]),
        "bad kind": encode_batch([BatchItem(1, "Bad Kind!", b"")]),
        "non-ascii kind": b"\x00" * 7 + b"\x01" + b"\x02\xff\xfe" + b"\x00",
    }
    for name, data in bad.items():
        with pytest.raises(BatchError):
            decode_batch(data)
            pytest.fail(name)


# ---- two homeservers in this process, on real sockets ------------------------------------------


@dataclass
class Peer:
    """One homeserver: its config, app, uvicorn server; ``received`` survives restarts."""

    domain: str
    port: int
    db_url: str  # the URL as an operator writes it (roost admin uses it too)
    config: Config
    data_dir: Path
    received: list[tuple[str, bytes]] = field(default_factory=list)
    fail_next: int = 0  # the handler raises (not a Problem) this many more times
    app: Any = None
    _lifespan: Any = None
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def fed(self) -> Any:
        return self.app.state.services.federation

    @property
    def db(self) -> Database:
        return self.app.state.services.auth.db

    async def start(self) -> None:
        self.app = create_app(self.config)
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()
        # Registered before the socket opens: no batch can arrive before the kind is known.
        self.fed.inbox.register(KIND, self._handle)
        await self.fed.policy.set_mode("open")
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, lifespan="off", log_level="warning"
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.should_exit = True
        assert self._task is not None
        await self._task
        await self._lifespan.__aexit__(None, None, None)
        self._server = self._task = None

    async def _handle(self, conn: Any, origin: str, body: bytes) -> None:
        if body.startswith(b"reject"):
            raise Problem(422, "invalid_note", "this note is refused")
        if self.fail_next > 0:
            self.fail_next -= 1
            raise RuntimeError("the handler is having a bad moment")
        self.received.append((origin, body))

    def bodies(self) -> list[bytes]:
        return [b for _, b in self.received]

    def admin(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``roost admin <args>`` as a separate process on this server's database."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
        env.update(
            {
                "ROOST_HOME_DOMAIN": self.domain,
                "ROOST_DATABASE_URL": self.db_url,
                "ROOST_DATA_DIR": str(self.data_dir),
            }
        )
        return subprocess.run(
            [sys.executable, "-m", "roost.cli.main", "admin", *args],
            env=env,
            cwd=self.data_dir,
            capture_output=True,
            text=True,
            timeout=120,
        )


@dataclass
class Pair:
    a: Peer  # sends
    b: Peer  # receives

    async def enqueue(self, *bodies: bytes, kind: str = KIND) -> None:
        """Each body in its own committed transaction, in order."""
        for body in bodies:
            async with self.a.db.transaction() as conn:
                await self.a.fed.outbox.enqueue_in(conn, "b.test", kind, body)

    async def wait_received(self, n: int, timeout: float = DELIVERY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while len(self.b.received) < n:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(self.b.received)} of {n} items arrived in {timeout} s"
                    f" (sender: {await self.destination()}, {len(await self.queued())} queued)"
                )
            await asyncio.sleep(0.01)

    async def destination(self) -> Any:
        async with self.a.db.engine.connect() as conn:
            return (
                await conn.execute(
                    sa.select(fed_destinations).where(fed_destinations.c.destination == "b.test")
                )
            ).first()

    async def queued(self) -> list[Any]:
        async with self.a.db.engine.connect() as conn:
            return list(
                await conn.execute(
                    sa.select(fed_outbox.c.id, fed_outbox.c.kind, fed_outbox.c.body).order_by(
                        fed_outbox.c.id
                    )
                )
            )

    async def wait_attempts(self, n: int, timeout: float = DELIVERY_TIMEOUT) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            row = await self.destination()
            if row is not None and row.attempts >= n and row.lease_owner is None:
                return row
            if time.monotonic() > deadline:
                raise AssertionError(f"no {n} failed attempts in {timeout} s: {row}")
            await asyncio.sleep(0.02)

    async def status(self) -> Any:
        rows = [r for r in await self.a.fed.outbox.status() if r.destination == "b.test"]
        return rows[0] if rows else None


async def _migrated(url: str) -> None:
    db = Database(build_config({"database_url": url}, {}).sqlalchemy_url)
    try:
        await upgrade(db)
    finally:
        await db.dispose()


@pytest.fixture(params=FEDERATION_ENGINES)
async def pair(request, tmp_path: Path) -> AsyncIterator[Pair]:
    ports = {"a.test": free_port(), "b.test": free_port()}
    while ports["a.test"] == ports["b.test"]:
        ports["b.test"] = free_port()
    peers = {}
    for domain, port in ports.items():
        other = "b.test" if domain == "a.test" else "a.test"
        data_dir = tmp_path / domain
        data_dir.mkdir()
        if request.param == "postgresql":
            url = request.getfixturevalue("postgres_database")()
        else:
            url = f"sqlite:///{data_dir / 'roost.db'}"
        await _migrated(url)
        config = build_config(
            {
                "home_domain": domain,
                "database_url": url,
                "data_dir": str(data_dir),
                "listen": f"127.0.0.1:{port}",
                "log_level": "warning",
                "federation_resolve": {other: f"127.0.0.1:{ports[other]}"},
                "federation_insecure_domains": [other],
            },
            {},
        )
        peers[domain] = Peer(domain, port, url, config, data_dir)
    p = Pair(peers["a.test"], peers["b.test"])
    await p.a.start()
    await p.b.start()
    try:
        yield p
    finally:
        for peer in (p.a, p.b):
            with contextlib.suppress(Exception):
                await peer.stop()


# ---- behaviour ---------------------------------------------------------------------------------


async def test_items_arrive_once_in_order_and_fast(pair: Pair) -> None:
    await pair.enqueue(b"first")  # (the receiver fetches the sender's keys once)
    await pair.wait_received(1)
    # The worker is woken by the commit: with its poll made a minute long, items still move.
    pair.a.fed.outbox.poll_seconds = 60.0
    await asyncio.sleep(1.2)  # the poll already under way ends
    latencies = []
    for i in range(5):
        start = time.perf_counter()
        await pair.enqueue(b"timed %d" % i)
        await pair.wait_received(2 + i, timeout=10)
        latencies.append(time.perf_counter() - start)
    latency = sorted(latencies)[len(latencies) // 2]
    # Many items, several transactions and several in one transaction: all, once, in order.
    bodies = [f"note {i}".encode() for i in range(60)]
    await pair.enqueue(*bodies[:30])
    async with pair.a.db.transaction() as conn:
        for body in bodies[30:]:
            await pair.a.fed.outbox.enqueue_in(conn, "b.test", KIND, body)
    await pair.wait_received(66)
    await asyncio.sleep(0.3)  # nothing more (no duplicate) arrives
    assert pair.b.bodies() == [b"first", *(b"timed %d" % i for i in range(5)), *bodies]
    assert {origin for origin, _ in pair.b.received} == {"a.test"}
    assert await pair.queued() == []
    row = await pair.destination()
    assert row.attempts == 0 and row.last_error is None and row.last_success_at is not None
    # Concurrent enqueuers: every item arrives exactly once.
    more = [f"concurrent {i}".encode() for i in range(20)]
    await asyncio.gather(*(pair.enqueue(b) for b in more))
    await pair.wait_received(86)
    await asyncio.sleep(0.3)
    assert sorted(pair.b.bodies()[66:]) == sorted(more)
    print(f"\ncross-domain outbox latency (commit -> handler), median: {latency * 1000:.1f} ms")


async def test_rolled_back_enqueue_sends_nothing(pair: Pair) -> None:
    with pytest.raises(RuntimeError):
        async with pair.a.db.transaction() as conn:
            await pair.a.fed.outbox.enqueue_in(conn, "b.test", KIND, b"never")
            raise RuntimeError("the caller's transaction fails")
    await pair.enqueue(b"after")
    await pair.wait_received(1)
    await asyncio.sleep(0.3)
    assert pair.b.bodies() == [b"after"]


async def test_enqueue_refuses_bad_input(pair: Pair) -> None:
    outbox = pair.a.fed.outbox
    async with pair.a.db.transaction() as conn:
        for dest, kind, body in (
            ("not a domain", KIND, b""),
            ("a.test", KIND, b""),  # ourselves
            ("b.test", "Bad Kind", b""),
        ):
            with pytest.raises(ValueError):
                await outbox.enqueue_in(conn, dest, kind, body)
        with pytest.raises(Problem) as too_big:
            await outbox.enqueue_in(conn, "b.test", KIND, b"x" * (outbox.max_item_bytes + 1))
        assert too_big.value.status == 413
    assert await pair.queued() == []


async def test_destination_down_retried_with_backoff_then_delivered_in_order(pair: Pair) -> None:
    await pair.enqueue(b"before")
    await pair.wait_received(1)
    await pair.b.stop()
    down = [f"while down {i}".encode() for i in range(5)]
    await pair.enqueue(*down)
    first = await pair.wait_attempts(1)
    second = await pair.wait_attempts(2)
    # Each failure pushes the next attempt out: about 2 s, then about 4 s (minus jitter).
    assert "federation_unavailable" in first.last_error
    assert all(b"while down" not in (r.last_error or "").encode() for r in (first, second))
    status = await pair.status()
    assert status.depth == 5 and status.attempts >= 2 and not status.blocked
    assert status.oldest_age_seconds is not None and status.next_attempt_in_seconds is not None
    waited = second.next_attempt_ms - int(time.time() * 1000)
    assert 0 < waited <= 1000 * 2**second.attempts, (waited, second.attempts)
    assert len(await pair.queued()) == 5  # nothing lost while down
    more = [b"queued later 1", b"queued later 2"]
    await pair.enqueue(*more)
    await pair.b.start()
    # No retry-now: the timer alone brings them, in order, each once.
    await pair.wait_received(8, timeout=15)
    await asyncio.sleep(0.5)
    assert pair.b.bodies() == [b"before", *down, *more]
    row = await pair.destination()
    assert row.attempts == 0 and row.last_error is None
    assert await pair.queued() == []


async def test_retry_now_sends_a_waiting_item_at_once(pair: Pair) -> None:
    await pair.b.stop()
    await pair.enqueue(b"waiting 1")
    await pair.wait_attempts(1)
    # As after many failures: the next attempt is an hour away.
    async with pair.a.db.transaction() as conn:
        await conn.execute(
            sa.update(fed_destinations).values(
                attempts=12, next_attempt_ms=int(time.time() * 1000) + 3_600_000
            )
        )
    await pair.b.start()
    await asyncio.sleep(2.0)
    assert pair.b.received == []  # still waiting for its hour
    status = await pair.status()
    assert status.next_attempt_in_seconds > 3500
    # The operator, in another process: `roost admin federation retry b.test`.
    done = await asyncio.to_thread(pair.a.admin, "federation", "retry", "b.test")
    assert done.returncode == 0, done.stderr
    asked = time.monotonic()
    await pair.wait_received(1, timeout=8)
    assert time.monotonic() - asked < 5  # seen by the worker's 1 s poll, not an hour later
    # In-process (the same call without a domain retries every destination).
    await pair.b.stop()
    await pair.enqueue(b"waiting 2")
    await pair.wait_attempts(1)
    await pair.b.start()
    assert await pair.a.fed.outbox.retry_now() == 1
    await pair.wait_received(2, timeout=5)
    assert pair.b.bodies() == [b"waiting 1", b"waiting 2"]
    nothing = await asyncio.to_thread(pair.a.admin, "federation", "retry", "c.test")
    assert nothing.returncode == 0 and "nothing queued" in nothing.stdout


async def test_a_peer_that_contacts_us_gets_what_waits_for_it_at_once(pair: Pair) -> None:
    """b.test was down and a.test's next attempt is an hour away; b.test, back, sends a.test
    a signed request (its own outbox's batch): that proves it is up, so a.test delivers what
    waits for b.test at once instead of after the backoff."""
    a_outbox = pair.a.fed.outbox
    await pair.b.stop()
    async with pair.a.db.transaction() as conn:
        await a_outbox.enqueue_in(conn, "b.test", KIND, b"for g1", ref=b"g1")
    await pair.wait_attempts(1)
    async with pair.a.db.transaction() as conn:
        await conn.execute(
            sa.update(fed_destinations).values(
                attempts=12, next_attempt_ms=int(time.time() * 1000) + 3_600_000
            )
        )
        # The DS asks whether a group's items still wait for a domain (its commit check).
        assert await a_outbox.in_transit_in(conn, "b.test", b"g1")
        assert not await a_outbox.in_transit_in(conn, "b.test", b"g2")
        assert not await a_outbox.in_transit_in(conn, "c.test", b"g1")
    await pair.b.start()
    await asyncio.sleep(2.0)
    assert pair.b.received == []  # still waiting for its hour
    pair.a.fed.inbox.register("test.ping", lambda conn, origin, body: asyncio.sleep(0))
    async with pair.b.db.transaction() as conn:
        await pair.b.fed.outbox.enqueue_in(conn, "a.test", "test.ping", b"hello")
    contacted = time.monotonic()
    await pair.wait_received(1, timeout=8)
    assert time.monotonic() - contacted < 5
    assert pair.b.bodies() == [b"for g1"]
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while True:  # gone from the outbox once b.test's answer is in
        async with pair.a.db.engine.connect() as conn:
            if not await a_outbox.in_transit_in(conn, "b.test", b"g1"):
                break
        assert time.monotonic() < deadline, "the delivered item stays in the outbox"
        await asyncio.sleep(0.05)


async def _metrics(peer: Peer) -> str:
    async with httpx.AsyncClient() as http:
        r = await http.get(peer.url + "/metrics")
    r.raise_for_status()
    return r.text


async def _post_batch(pair: Pair, body: bytes, content_type: str = BATCH_MEDIA_TYPE) -> Any:
    """A signed POST from a.test to b.test's inbox, as the worker sends it."""
    return await pair.a.fed.client.request(
        "b.test", "POST", INBOX_PATH, body=body, content_type=content_type
    )


async def test_resent_batch_is_applied_once(pair: Pair) -> None:
    await pair.b.stop()
    await pair.enqueue(b"one", b"two", b"three")
    await pair.wait_attempts(1)
    await pair.b.start()
    rows = await pair.queued()
    batch = encode_batch([BatchItem(r.id, r.kind, r.body) for r in rows])
    ids = [r.id for r in rows]
    # A delivery whose answer never reached the sender...
    first = await _post_batch(pair, batch)
    assert first.json() == {"applied": ids, "duplicate": [], "rejected": []}
    # ...is sent again: nothing is applied twice.
    again = await _post_batch(pair, batch)
    assert again.json() == {"applied": [], "duplicate": ids, "rejected": []}
    # The worker itself re-sends the same items (they are still queued on a.test).
    assert len(await pair.queued()) == 3
    await pair.a.fed.outbox.retry_now("b.test")
    deadline = time.monotonic() + 5
    while await pair.queued():
        assert time.monotonic() < deadline, "the re-sent batch was not acknowledged"
        await asyncio.sleep(0.05)
    await pair.enqueue(b"four")
    await pair.wait_received(4)
    await asyncio.sleep(0.3)
    assert pair.b.bodies() == [b"one", b"two", b"three", b"four"]


async def test_inbox_refuses_malformed_and_unsigned_batches(pair: Pair) -> None:
    for body, ctype, status, code in (
        (b"\x00\x01", BATCH_MEDIA_TYPE, 400, "invalid_batch"),
        (b"", BATCH_MEDIA_TYPE, 400, "invalid_batch"),
        (encode_batch([BatchItem(1, KIND, b"x")]), "application/json", 415, None),
    ):
        with pytest.raises(Problem) as refused:
            await _post_batch(pair, body, ctype)
        assert refused.value.status == status
        if code:
            assert refused.value.code == code
    async with httpx.AsyncClient() as http:
        unsigned = await http.post(
            pair.b.url + INBOX_PATH,
            content=encode_batch([BatchItem(1, KIND, b"x")]),
            headers={"content-type": BATCH_MEDIA_TYPE},
        )
    assert unsigned.status_code == 401
    assert unsigned.headers["content-type"].startswith("application/problem+json")
    assert pair.b.received == []


async def test_bad_items_are_skipped_and_failures_retried(pair: Pair) -> None:
    await pair.enqueue(b"ok 1", b"reject me", b"ok 2")
    await pair.enqueue(b"unknown kind", kind="test.unknown")
    await pair.enqueue(b"ok 3")
    await pair.wait_received(3)
    await asyncio.sleep(0.3)
    assert pair.b.bodies() == [b"ok 1", b"ok 2", b"ok 3"]
    assert await pair.queued() == []
    # A handler failing with anything but a 4xx: 503, the whole batch comes again later.
    pair.b.fail_next = 1
    await pair.enqueue(b"ok 4", b"ok 5")
    row = await pair.wait_attempts(1)
    assert "federation_unavailable" in row.last_error
    await pair.wait_received(5, timeout=10)  # the timer (about 2 s), no retry-now
    await asyncio.sleep(0.3)
    assert pair.b.bodies() == [b"ok 1", b"ok 2", b"ok 3", b"ok 4", b"ok 5"]


async def test_blocked_destination_is_held_then_delivered_in_order(pair: Pair) -> None:
    await pair.b.stop()
    await pair.enqueue(b"held 1", b"held 2")
    await pair.wait_attempts(1)
    await pair.a.fed.policy.add("block", "b.test")
    await pair.enqueue(b"held 3")  # queued while blocked: held too, not refused
    await pair.b.start()
    await pair.a.fed.outbox.retry_now("b.test")
    await asyncio.sleep(2.5)
    assert pair.b.received == []  # held, not sent
    assert len(await pair.queued()) == 3  # and not dropped
    status = await pair.status()
    assert status.blocked and status.depth == 3 and status.state == "blocked"
    # The operator sees it, in another process and in /metrics.
    listing = await asyncio.to_thread(pair.a.admin, "outbox")
    assert listing.returncode == 0, listing.stderr
    line = next(x for x in listing.stdout.splitlines() if "b.test" in x)
    assert "depth=3" in line and "BLOCKED" in line
    metrics = await _metrics(pair.a)
    assert 'roost_federation_outbox_depth{destination="b.test"} 3.0' in metrics
    assert 'roost_federation_outbox_blocked{destination="b.test"} 1.0' in metrics
    assert 'roost_federation_outbox_oldest_age_seconds{destination="b.test"}' in metrics
    await pair.a.fed.policy.remove("block", "b.test")
    await pair.a.fed.outbox.retry_now("b.test")
    await pair.wait_received(3, timeout=10)
    assert pair.b.bodies() == [b"held 1", b"held 2", b"held 3"]


async def test_forgotten_destination_is_discarded_and_refused(pair: Pair) -> None:
    await pair.a.fed.policy.add("block", "b.test")
    pair.a.fed.policy.cache_seconds = 3600.0  # the running server reads the policy once
    await pair.enqueue(b"held 1", b"held 2")
    forgotten = await asyncio.to_thread(pair.a.admin, "federation", "forget", "b.test")
    assert forgotten.returncode == 0, forgotten.stderr
    assert "2 queued item(s) for it discarded" in forgotten.stdout
    assert await pair.queued() == [] and await pair.status() is None
    # A server that has not seen the forget yet still queues; its worker discards them.
    await pair.enqueue(b"late")
    await pair.a.fed.policy.load(fresh=True)  # its policy cache, renewed
    with pytest.raises(FederationRefused) as refused:
        await pair.enqueue(b"refused")
    assert (refused.value.status, refused.value.code) == (403, "federation_refused")
    await pair.a.fed.outbox.retry_now("b.test")
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while await pair.queued():
        assert time.monotonic() < deadline, await pair.queued()
        await asyncio.sleep(0.1)
    assert await pair.status() is None
    listing = await asyncio.to_thread(pair.a.admin, "outbox")
    assert "b.test" not in listing.stdout
    # Unblocking lifts the forget: items go again.
    await pair.a.fed.policy.remove("block", "b.test")
    assert (await pair.a.fed.policy.load(fresh=True)).forgotten == frozenset()
    await pair.enqueue(b"again")
    await pair.wait_received(1)
    assert pair.b.bodies() == [b"again"]


async def test_receiver_refusing_the_origin_keeps_items_queued(pair: Pair) -> None:
    await pair.b.fed.policy.add("block", "a.test")
    await pair.enqueue(b"not yet")
    row = await pair.wait_attempts(1)
    assert "403 federation_refused" in row.last_error
    assert len(await pair.queued()) == 1
    await pair.b.fed.policy.remove("block", "a.test")
    await pair.a.fed.outbox.retry_now()
    await pair.wait_received(1, timeout=5)
    assert pair.b.bodies() == [b"not yet"]


async def test_status_shows_depth_and_age_per_destination(pair: Pair) -> None:
    await pair.b.stop()
    await pair.enqueue(b"aging 1", b"aging 2", b"aging 3")
    await pair.wait_attempts(1)
    await asyncio.sleep(1.1)
    listing = await asyncio.to_thread(pair.a.admin, "--json", "outbox")
    assert listing.returncode == 0, listing.stderr
    import json

    rows = [r for r in json.loads(listing.stdout) if r["destination"] == "b.test"]
    assert len(rows) == 1
    row = rows[0]
    assert row["outbox"] == "federation" and row["depth"] == 3
    assert row["oldest_age_seconds"] >= 1 and row["attempts"] >= 1
    assert row["last_error"] and not row["blocked"]
    assert b"aging" not in listing.stdout.encode()  # no payloads
    metrics = await _metrics(pair.a)
    assert 'roost_federation_outbox_depth{destination="b.test"} 3.0' in metrics
    assert 'roost_federation_outbox_attempts{destination="b.test"}' in metrics


async def test_two_sending_processes_on_one_database_keep_order(pair: Pair) -> None:
    """Two server instances of a.test on one PostgreSQL database (as two processes would be):
    each has a worker; the per-destination lease keeps one deliverer at a time."""
    if pair.a.config.sqlalchemy_url.startswith("sqlite"):
        pytest.skip("SQLite serves from one process (docs/operations.md)")
    from dataclasses import replace

    port = free_port()
    twin = Peer(
        "a.test",
        port,
        pair.a.db_url,
        replace(pair.a.config, listen=f"127.0.0.1:{port}"),
        pair.a.data_dir,
    )
    await twin.start()
    try:

        async def send_from(peer: Peer, name: str) -> None:
            for i in range(40):
                async with peer.db.transaction() as conn:
                    await peer.fed.outbox.enqueue_in(conn, "b.test", KIND, f"{name} {i}".encode())

        await asyncio.gather(send_from(pair.a, "one"), send_from(twin, "two"))
        await pair.wait_received(80)
        await asyncio.sleep(0.5)
        got = pair.b.bodies()
        assert len(got) == 80
        for name in ("one", "two"):
            mine = [b for b in got if b.startswith(name.encode())]
            assert mine == [f"{name} {i}".encode() for i in range(40)]
        assert await pair.queued() == []
    finally:
        await twin.stop()


async def test_batches_too_large_for_the_receiver_go_one_by_one(pair: Pair) -> None:
    """A receiver with a smaller body cap (413): the batch goes again item by item; an item
    that alone exceeds the cap is dropped (and said so) instead of blocking the queue."""
    from dataclasses import replace

    await pair.b.stop()
    small = replace(pair.b.config.limits, max_body_bytes=65536, max_message_bytes=65536)
    pair.b.config = replace(pair.b.config, limits=small)
    await pair.b.start()
    bodies = [bytes([65 + i]) * 40_000 for i in range(3)]  # 120 kB together: one batch
    await pair.enqueue(bodies[0], bodies[1], b"x" * 100_000, bodies[2])
    await pair.wait_received(3)
    await asyncio.sleep(0.3)
    assert pair.b.bodies() == bodies
    assert await pair.queued() == []  # the oversized item was dropped, not stuck
    row = await pair.destination()
    assert row.attempts == 0  # 413s are not failures to back off from
