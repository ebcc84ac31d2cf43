"""The world of a convergence run: three federated homeservers, their users and clients, and
what the run has observed so far (group states per epoch, messages sent, faults injected).

- a.test on SQLite, b.test on PostgreSQL (SQLite too when no PostgreSQL is configured), c.test
  on SQLite: real ``roost serve`` processes over loopback (tests/federation/harness.py), policy
  through the real ``roost admin federation`` CLI, restarts on the same port and data;
- users on every server, some with two clients (a second device approved by the first), all
  connected to each other (the DS adds only connected users), each client a ``Device``: a real
  ``RoostClient`` with its ``Groups``, plus every ``GroupEvent`` it has seen.

The world only holds and observes; the operations (operations.py) change it and the checks
(checks.py) judge it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from roost.client import RoostClient, RoostError
from roost.client.group_events import GroupEvent, roster_clients
from roost.client.groups import Groups

from ..federation.harness import Federation, make_federation
from ..integration.conftest import Users

A, B, C = "a.test", "b.test", "c.test"
DOMAINS = (A, B, C)
# Users per domain; the first of each domain starts with two clients.
USERS_PER_DOMAIN = 2
SECOND_DEVICE_USERS = 1
KEY_PACKAGES = 12  # published per client at the start; topped up after claims
KEY_PACKAGE_LOW = 4
TIMEOUT = 90.0  # cross-domain work goes through outboxes; the machine may be loaded
# Answers a real app retries (bounded) or gives up on for now: unreachable, overloaded.
TRANSIENT = {0, 429, 502, 503, 504}


class RecordingGroups(Groups):
    """``Groups`` that keeps every event its syncs return, also those of the catch-up sync
    inside a commit that lost an epoch race (``Groups._commit`` does not hand those back)."""

    def __init__(self, client: RoostClient, sink: list[GroupEvent]) -> None:
        super().__init__(client)
        self.sink = sink

    async def sync(
        self, *, limit: int | None = None, auto_commit: bool = False
    ) -> list[GroupEvent]:
        events = await super().sync(limit=limit, auto_commit=auto_commit)
        self.sink.extend(events)
        return events


@dataclass(eq=False)
class User:
    user_id: str
    domain: str
    devices: list[Device] = field(default_factory=list)
    deleted: bool = False


@dataclass(eq=False)
class Device:
    """One client of a user: its ``Groups`` and every event it has seen, in order."""

    user: User
    client: RoostClient
    groups: Groups
    events: list[GroupEvent] = field(default_factory=list)
    listener: asyncio.Task[None] | None = None
    stop_listening: asyncio.Event = field(default_factory=asyncio.Event)
    listened: bool = False

    @property
    def client_id(self) -> str:
        return self.client.client_id

    @property
    def domain(self) -> str:
        return self.user.domain

    @property
    def live(self) -> bool:
        return not self.user.deleted

    def local_groups(self) -> list[bytes]:
        return sorted(self.groups.local_group_ids())

    def holds(self, gid: bytes) -> bool:
        return gid in self.groups.local_group_ids()


@dataclass
class Sent:
    """An application message the run sent. ``acked``: the DS answered it (with
    ``group_seq``); ``ds_epoch``: the group's epoch at the DS right after (the message reaches
    the members of both its own epoch and that one)."""

    group_id: bytes
    text: str
    sender: str  # client id
    epoch: int
    acked: bool = False
    group_seq: int = 0
    ds_epoch: int = 0
    retried: bool = False


@dataclass
class Observed:
    """A group state some client held: its roster (client ids) and epoch authenticator."""

    roster: frozenset[str]
    authenticator: bytes
    seen_by: str


@dataclass
class World:
    fed: Federation
    rng: random.Random
    users: list[User] = field(default_factory=list)
    groups: list[bytes] = field(default_factory=list)  # every group made, in order
    sent: list[Sent] = field(default_factory=list)
    # (group, epoch) -> the state first observed; forks: later observations that disagree.
    states: dict[tuple[bytes, int], Observed] = field(default_factory=dict)
    forks: list[str] = field(default_factory=list)
    down: set[str] = field(default_factory=set)
    # (group, client, group_seq of its leave proposal, its epoch then)
    leaves: list[tuple[bytes, str, int, int]] = field(default_factory=list)
    # (group, client) that forgot the group after a not_member answer
    forgotten: set[tuple[bytes, str]] = field(default_factory=set)
    # (client, group, epoch joined at) -> the newest epoch of the group known when the join
    # was seen (a Welcome used only after its leaf was removed again joins nothing real)
    joins_seen: dict[tuple[str, bytes, int], int] = field(default_factory=dict)
    faults: Counter[str] = field(default_factory=Counter)
    # What the faults must lead to, judged at the end (checks.py): (group, epoch of a commit
    # whose membership_tag was corrupted, its committer); (group, epoch, clients added) by a
    # Welcome without the tree and by a member adding its own clients; groups whose last
    # admin went (an ``admin_promoted`` notice must reach them).
    corrupted: list[tuple[bytes, int, str]] = field(default_factory=list)
    treeless_adds: list[tuple[bytes, int, tuple[str, ...]]] = field(default_factory=list)
    own_adds: list[tuple[bytes, int, tuple[str, ...]]] = field(default_factory=list)
    admin_gone: list[bytes] = field(default_factory=list)
    ops: Counter[str] = field(default_factory=Counter)
    seconds: Counter[str] = field(default_factory=Counter)  # wall time per operation kind
    outcomes: Counter[str] = field(default_factory=Counter)
    # Failures a user would report: server errors (5xx other than unreachable), client-side
    # crashes, listeners that died. The checks assert this stays empty.
    problems: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    _factories: dict[str, Users] = field(default_factory=dict)

    # ---- who is there ------------------------------------------------------------------------
    @property
    def devices(self) -> list[Device]:
        return [d for u in self.users for d in u.devices if d.live]

    def online(self, d: Device) -> bool:
        return d.live and d.domain not in self.down

    def acts(self, d: Device) -> bool:
        """``d`` can act now: online, and not a listener (those only receive, over realtime,
        so that no sync or commit of the run races their realtime processing)."""
        return self.online(d) and d.listener is None

    def device(self, client_id: str) -> Device | None:
        return next((d for u in self.users for d in u.devices if d.client_id == client_id), None)

    def user(self, user_id: str) -> User:
        return next(u for u in self.users if u.user_id == user_id)

    def note(self, text: str) -> None:
        self.log.append(text)

    # ---- setting up ----------------------------------------------------------------------------
    async def add_user(self, domain: str, prefix: str) -> User:
        client = await self._factories[domain].new(prefix, keypackages=KEY_PACKAGES)
        user = User(client.user_id, domain)
        user.devices.append(device(user, client))
        self.users.append(user)
        return user

    async def add_device(self, user: User) -> Device:
        """Another client of ``user``, approved by its first client."""
        users = self._factories[user.domain]
        client = await users.second_client(user.devices[0].client)
        await client.publish_key_packages(KEY_PACKAGES)
        dev = device(user, client)
        user.devices.append(dev)
        return dev

    async def connect_all(self) -> None:
        """Every pair of users connected (requests accepted through the outboxes)."""
        pairs = [(a, b) for i, a in enumerate(self.users) for b in self.users[i + 1 :] if a != b]
        await asyncio.gather(*(connect(a.devices[0].client, b.devices[0].client) for a, b in pairs))

    # ---- observing -----------------------------------------------------------------------------
    def observe(self) -> None:
        """Record every client's current group states; two states of one epoch that differ
        (roster or authenticator) are a fork."""
        for d in self.devices:
            for gid in d.local_groups():
                g = d.groups.group(gid)
                seen = Observed(
                    frozenset(roster_clients(g).values()), g.epoch_authenticator, d.client_id
                )
                key = (gid, g.epoch)
                first = self.states.setdefault(key, seen)
                if (first.roster, first.authenticator) != (seen.roster, seen.authenticator):
                    self.forks.append(
                        f"group {gid!r} epoch {g.epoch}: {first.seen_by} and {d.client_id} "
                        "hold different states"
                    )

        for d in self.devices:
            for e in d.events:
                if e.kind == "joined":
                    key = (d.client_id, e.group_id, e.epoch)
                    if key not in self.joins_seen:
                        self.joins_seen[key] = self.newest_epoch(e.group_id)

    def newest_epoch(self, gid: bytes) -> int:
        return max((e for g, e in self.states if g == gid), default=0)

    def roster_at(self, gid: bytes, epoch: int) -> frozenset[str] | None:
        st = self.states.get((gid, epoch))
        return st.roster if st else None

    @staticmethod
    def roster_now(d: Device, gid: bytes) -> list[str]:
        return sorted(roster_clients(d.groups.group(gid)).values())

    def members(self, gid: bytes) -> list[Device]:
        """The devices in the group at the newest epoch any online client holds (the run's
        best knowledge of the roster)."""
        best: tuple[int, frozenset[str]] | None = None
        for d in self.devices:
            if d.holds(gid):
                g = d.groups.group(gid)
                if best is None or g.epoch > best[0]:
                    best = (g.epoch, frozenset(roster_clients(g).values()))
        if best is None:
            return []
        return [d for d in self.devices if d.client_id in best[1]]

    def member_users(self, gid: bytes) -> list[User]:
        seen: list[User] = []
        for d in self.members(gid):
            if d.user not in seen:
                seen.append(d.user)
        return seen

    # ---- syncing -------------------------------------------------------------------------------
    async def sync(self, d: Device) -> list[GroupEvent]:
        """One ``Groups.sync`` (committing what others proposed, as an app would); its events
        land in ``d.events``."""
        return await d.groups.sync(auto_commit=True)

    def start_listening(self, d: Device) -> None:
        """``d`` processes its traffic over the realtime socket from now on (besides any
        ``sync`` the run makes it do)."""

        async def run() -> None:
            await d.groups.listen(d.events.append, stop=d.stop_listening, max_backoff=2.0)

        d.stop_listening = asyncio.Event()
        d.listened = True
        d.listener = asyncio.create_task(run())

    async def stop_listeners(self) -> None:
        for u in self.users:
            await self.stop_listener(u)

    async def stop_listener(self, u: User) -> None:
        for d in u.devices:
            if d.listener is None:
                continue
            d.stop_listening.set()
            try:
                await asyncio.wait_for(d.listener, TIMEOUT)
            except Exception as e:  # noqa: BLE001 - a dead listener is a finding
                self.problems.append(f"listener of {d.client_id} ended with {e!r}")
            d.listener = None

    def listener_failures(self) -> list[str]:
        out = []
        for d in self.devices:
            t = d.listener
            if t is not None and t.done() and not t.cancelled() and t.exception() is not None:
                out.append(f"listener of {d.client_id} died: {t.exception()!r}")
        return out

    # ---- servers -------------------------------------------------------------------------------
    def stop_server(self, domain: str) -> None:
        self.fed.stop(domain)
        self.down.add(domain)

    def kill_server(self, domain: str) -> None:
        """SIGKILL: no shutdown, whatever was in flight is cut."""
        server = self.fed[domain]
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=30)
        self.down.add(domain)

    def start_server(self, domain: str, *, retry: bool = True) -> None:
        self.fed.start(domain)
        self.down.discard(domain)
        if retry:
            self.retry_all()

    def retry_all(self) -> None:
        """Every running server's operator says "retry now" to its outboxes (they back off
        while a peer is unreachable)."""
        for d in self.fed.domains:
            if d not in self.down:
                self.fed[d].admin("federation", "retry")

    async def aclose(self) -> None:
        await self.stop_listeners()
        for users in self._factories.values():
            with contextlib.suppress(Exception):
                await users.aclose()


def device(user: User, client: RoostClient) -> Device:
    events: list[GroupEvent] = []
    return Device(user, client, RecordingGroups(client, events), events)


def engines(postgres: bool) -> dict[str, str]:
    """b.test on PostgreSQL when configured, every other server on SQLite."""
    return {A: "sqlite", B: "postgresql" if postgres else "sqlite", C: "sqlite"}


def start_federation(base_dir: Path, database_url: Callable[[], str] | None) -> Federation:
    """a.test, b.test, c.test, open to each other; b.test on PostgreSQL when ``database_url``
    (a factory of fresh databases) is given."""
    return make_federation(
        base_dir,
        DOMAINS,
        database_url=database_url,
        engine_per_domain=engines(database_url is not None),
    )


async def populate(fed: Federation, seed: int) -> World:
    """Users on every domain (the first of each with a second client), all connected, a few
    clients listening over realtime."""
    world = World(fed, random.Random(seed))
    for domain in DOMAINS:
        world._factories[domain] = Users(fed[domain].url)
    names = ["alice", "bob", "carol", "dave", "erin", "frank", "gina", "hugo", "iris"]
    made = [
        world.add_user(domain, f"{names[i * len(DOMAINS) + j]}{seed}x")
        for i in range(USERS_PER_DOMAIN)
        for j, domain in enumerate(DOMAINS)
    ]
    await asyncio.gather(*made)
    world.users.sort(key=lambda u: u.user_id)
    for domain in DOMAINS:
        firsts = [u for u in world.users if u.domain == domain][:SECOND_DEVICE_USERS]
        for u in firsts:
            await world.add_device(u)
    await world.connect_all()
    return world


def listening_devices(world: World) -> list[Device]:
    """Two clients (on different servers) that listen over realtime."""
    return [u.devices[-1] for u in world.users if len(u.devices) > 1][:2]


async def eventually(
    probe: Callable[[], Awaitable[bool]], timeout: float, what: str, interval: float = 0.2
) -> float:
    start = time.monotonic()
    while not await probe():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(interval)
    return time.monotonic() - start


async def connect(a: RoostClient, b: RoostClient) -> None:
    """An accepted connection from ``a`` to ``b`` (across domains: through the outboxes)."""
    conn = await a.open_connection(b.user_id)
    await a.send_connection_request(conn.connection_id, b"hello")

    async def accepted_by_b() -> bool:
        try:
            await b.accept_connection(conn.connection_id)
            return True
        except RoostError as e:
            if e.status in (404, 409):  # still on its way to b's server
                return False
            raise

    async def accepted_for_a() -> bool:
        conns = await a.connections()
        return any(c.connection_id == conn.connection_id and c.state == "accepted" for c in conns)

    await eventually(accepted_by_b, TIMEOUT, f"{b.user_id} sees {a.user_id}'s request")
    await eventually(accepted_for_a, TIMEOUT, f"{a.user_id} sees the accept")
