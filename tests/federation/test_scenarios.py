"""Federation scenarios across three real homeserver processes (a.test,
b.test, c.test; separate databases; loopback ports), driven only through the client API
(``RoostClient`` + ``Groups``) and the operator CLI, the way users and operators would.

- a group spanning three domains: everyone sends, everyone decrypts everything in order, a
  remote member commits;
- a homeserver down for a while, then back: nothing lost, nothing duplicated, in order; the
  outbox showed the backlog; ``roost admin federation retry`` delivers at once;
- operator policy in both directions (blocklist, allowlist, the empty allowlist), changed on
  running servers;
- a replayed or forged server signature sent to a real server is refused.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from roost.client import RoostError
from roost.client.groups import GroupEvent
from roost.server.federation import signing
from roost.server.federation.identity import SigningKey

from ..e2e.helpers import Member, member
from .conftest import FEDERATION_ENGINES
from .harness import POLICY_CACHE_SECONDS, Captured, Federation, RecordingServer

A, B, C = "a.test", "b.test", "c.test"
TIMEOUT = 60.0  # cross-domain work goes through outboxes; the machine may be loaded


# ---- helpers ----------------------------------------------------------------------------------
async def new(fed: Federation, domain: str, prefix: str) -> Member:
    return member(await fed.users(domain).new(prefix, keypackages=3))


async def eventually(
    probe: Callable[[], Awaitable[bool]], timeout: float, what: str, interval: float = 0.2
) -> float:
    """Await ``probe()`` until it is true; return the seconds it took."""
    start = time.monotonic()
    while not await probe():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(interval)
    return time.monotonic() - start


async def connect(a: Member, b: Member) -> None:
    """An accepted connection from ``a`` to ``b`` (across domains: through the outboxes)."""
    conn = await a.client.open_connection(b.user_id)
    await a.client.send_connection_request(conn.connection_id, b"hello")

    async def accepted_by_b() -> bool:
        try:
            await b.client.accept_connection(conn.connection_id)
            return True
        except RoostError as e:
            if e.status in (404, 409):  # the request is still on its way to b's server
                return False
            raise

    async def accepted_for_a() -> bool:
        conns = await a.client.connections()
        return any(c.connection_id == conn.connection_id and c.state == "accepted" for c in conns)

    await eventually(accepted_by_b, TIMEOUT, f"{b.user_id} sees {a.user_id}'s request")
    await eventually(accepted_for_a, TIMEOUT, f"{a.user_id} sees the accept")


def received(m: Member, gid: bytes) -> list[GroupEvent]:
    return [e for e in m.seen if e.kind == "message" and e.group_id == gid]


async def sync_until_count(m: Member, gid: bytes, n: int, timeout: float = TIMEOUT) -> None:
    async def enough() -> bool:
        await m.sync()
        return len(received(m, gid)) >= n

    await eventually(enough, timeout, f"{m.user_id} receives {n} messages")


async def sync_until_epoch(m: Member, gid: bytes, epoch: int) -> None:
    async def there() -> bool:
        await m.sync()
        return m.groups.group(gid).epoch >= epoch

    await eventually(there, TIMEOUT, f"{m.user_id} reaches epoch {epoch}")


async def group_of(creator: Member, *others: Member, one_commit: bool = False) -> bytes:
    """``creator`` makes a group (on its own DS) and invites the others (one by one, or all in
    one commit), who join."""
    for o in others:
        await connect(creator, o)
    group = await creator.groups.create()
    gid = group.group_id
    for batch in [others] if one_commit else [[o] for o in others]:
        await creator.groups.invite(gid, [o.user_id for o in batch])
    for o in others:

        async def joined(o: Member = o) -> bool:
            await o.sync()
            return any(e.kind == "joined" and e.group_id == gid for e in o.seen)

        await eventually(joined, TIMEOUT, f"{o.user_id} joins")
    for o in others:
        await sync_until_epoch(o, gid, creator.groups.group(gid).epoch)
    return gid


def agreed_epoch(gid: bytes, *members: Member) -> int:
    states = {(m.groups.group(gid).epoch, m.groups.group(gid).epoch_authenticator) for m in members}
    assert len(states) == 1, states
    return next(iter(states))[0]


def expected_for(m: Member, sent: list[tuple[int, str, str]]) -> list[tuple[int, str, str]]:
    """What ``m`` must receive: every message of the others, in the DS's order."""
    return sorted(s for s in sent if s[1] != m.client_id)


def as_received(m: Member, gid: bytes) -> list[tuple[int, str, str]]:
    return [(e.group_seq, e.sender, e.message) for e in received(m, gid)]


async def send_all(gid: bytes, rounds: int, *members: Member) -> list[tuple[int, str, str]]:
    """Every member sends ``rounds`` messages, all members at once; returns (group_seq,
    sender, text) as the DS ordered them."""

    async def talk(m: Member) -> list[tuple[int, str, str]]:
        out = []
        for i in range(rounds):
            text = f"{m.user_id} #{i}"
            sent = await m.groups.send(gid, text)
            out.append((sent.group_seq, m.client_id, text))
        return out

    per_member = await asyncio.gather(*(talk(m) for m in members))
    sent = sorted(s for batch in per_member for s in batch)
    assert len({s[0] for s in sent}) == len(sent), "the DS gave two messages one group_seq"
    return sent


# ---- a group spanning three domains -----------------------------------------------------------
@pytest.fixture(scope="module", params=FEDERATION_ENGINES)
def any_engine(request, make_federation) -> Federation:
    """The module's SQLite federation, or (CI) a PostgreSQL one (a database per server)."""
    if request.param == "sqlite":
        return request.getfixturevalue("federation")
    return make_federation(engine="postgresql")


async def test_group_spanning_three_domains(any_engine: Federation) -> None:
    fed = any_engine
    try:
        alice, bob, carol = (
            await new(fed, A, "alice"),
            await new(fed, B, "bob"),
            await new(fed, C, "carol"),
        )
        gid = await group_of(alice, bob, carol)
        assert gid.endswith(b"@a.test")  # the group lives on its creator's DS
        members = (alice, bob, carol)
        epoch = agreed_epoch(gid, *members)

        # Everyone sends at once; everyone decrypts every other message once, in DS order.
        sent = await send_all(gid, 3, *members)
        for m in members:
            await sync_until_count(m, gid, 6)
            assert as_received(m, gid) == expected_for(m, sent)

        # A commit (self-update) from the member on b.test, then one from c.test.
        bob_commit = await bob.groups.update(gid)
        assert bob_commit.epoch == epoch + 1
        for m in (alice, carol):
            await sync_until_epoch(m, gid, epoch + 1)
        assert agreed_epoch(gid, *members) == epoch + 1
        await carol.groups.update(gid)
        for m in (alice, bob):
            await sync_until_epoch(m, gid, epoch + 2)
        assert agreed_epoch(gid, *members) == epoch + 2

        # The new epoch's keys work for everyone, in every direction.
        sent += await send_all(gid, 2, *members)
        for m in members:
            await sync_until_count(m, gid, 10)
            assert as_received(m, gid) == expected_for(m, sent)
        for m in members:  # nothing more arrives later (no duplicates)
            await m.sync()
            assert len(received(m, gid)) == 10
    finally:
        await fed.aclose_users()


# ---- a homeserver down for a while, then back -------------------------------------------------
async def test_users_of_two_other_domains_invited_in_one_commit(fed_users: Federation) -> None:
    fed = fed_users
    fed.restart(A)  # a DS that has not met b.test's and c.test's AS certificates yet
    alice, bob, carol = (
        await new(fed, A, "alice"),
        await new(fed, B, "bob"),
        await new(fed, C, "carol"),
    )
    gid = await group_of(alice, bob, carol, one_commit=True)
    assert agreed_epoch(gid, alice, bob, carol) == 1
    sent = await send_all(gid, 1, alice, bob, carol)
    for m in (alice, bob, carol):
        await sync_until_count(m, gid, 2)
        assert as_received(m, gid) == expected_for(m, sent)


def outbox_metric(fed: Federation, domain: str, name: str, destination: str) -> int:
    """``roost_federation_outbox_<name>{destination=...}`` on ``domain``'s /metrics (0 when
    absent)."""
    text = fed[domain].metrics()
    dest = re.escape(destination)
    pattern = rf'^roost_federation_outbox_{name}\{{[^}}]*"{dest}"[^}}]*\}} (\S+)$'
    m = re.search(pattern, text, re.M)
    return int(float(m.group(1))) if m else 0


# Failed attempts to wait for while b.test is down: the next one then waits 2^6 s (+-20 %),
# longer than restarting b.test and asking for a retry take on a loaded machine.
DOWN_ATTEMPTS = 6


async def test_homeserver_down_then_back_nothing_lost_in_order(fed_users: Federation) -> None:
    fed = fed_users
    alice, bob, carol = (
        await new(fed, A, "alice"),
        await new(fed, B, "bob"),
        await new(fed, C, "carol"),
    )
    gid = await group_of(alice, bob, carol)
    sent = await send_all(gid, 1, alice, bob, carol)
    for m in (alice, bob, carol):
        await sync_until_count(m, gid, 2)

    fed.stop(B)
    try:
        # While b.test is down, a.test and c.test keep talking in the group on a.test, and
        # alice writes to bob directly (the AS's items share the outbox towards b.test).
        for i in range(4):
            for m in (alice, carol):
                s = await m.groups.send(gid, f"while b is down: {m.user_id} {i}")
                sent.append((s.group_seq, m.client_id, f"while b is down: {m.user_id} {i}"))
            if i % 2:
                await alice.client.send_direct(bob.user_id, f"direct {i}".encode())
        await sync_until_count(carol, gid, len(expected_for(carol, sent)))

        # a.test keeps them for b.test and retries on its own timer (attempts grow).
        async def retried() -> bool:
            return outbox_metric(fed, A, "attempts", B) >= DOWN_ATTEMPTS

        await eventually(retried, 180, "a.test retries b.test", interval=0.5)
        # The operator sees the backlog: `roost admin outbox` and /metrics.
        row = fed[A].outbox_to(B)
        assert row is not None and row["depth"] >= 1 and not row["blocked"], row
        assert row["attempts"] >= DOWN_ATTEMPTS and row["last_error"], row
        assert outbox_metric(fed, A, "depth", B) == row["depth"]
    finally:
        fed.start(B)

    # b.test is back; a.test waits for its backoff unless the operator says "retry now".
    row = fed[A].outbox_to(B)
    assert row is not None and row["depth"] >= 1, "delivered before the retry-now was asked"
    waiting = row["next_attempt_in_seconds"]
    asked = time.monotonic()
    done = fed[A].admin("federation", "retry", B)
    assert B in done.stdout

    async def drained() -> bool:
        return outbox_metric(fed, A, "depth", B) == 0

    await eventually(drained, TIMEOUT, "a.test's backlog for b.test drains", 0.5)
    took = time.monotonic() - asked
    assert took < waiting, (took, waiting)  # sooner than the backoff would have retried
    assert fed[A].outbox_to(B) is None  # nothing queued, no failure pending

    # bob's direct messages arrived once each, in order (read before his group sync acks them).
    direct = await bob.client.fetch_direct(0)
    assert [(e.sender, e.payload) for e in direct.events if e.type == "message"] == [
        (alice.user_id, b"direct 1"),
        (alice.user_id, b"direct 3"),
    ]

    # bob gets every message once, in the group's order (group_seq ascending), none lost.
    await sync_until_count(bob, gid, len(expected_for(bob, sent)))
    await asyncio.sleep(1.0)
    await bob.sync()
    assert as_received(bob, gid) == expected_for(bob, sent)
    seqs = [s for s, _, _ in as_received(bob, gid)]
    assert seqs == sorted(set(seqs))

    # And b.test takes part again in both directions.
    sent += await send_all(gid, 1, alice, bob, carol)
    for m in (alice, bob, carol):
        await sync_until_count(m, gid, len(expected_for(m, sent)))
        assert as_received(m, gid) == expected_for(m, sent)


# ---- operator policy in both directions -------------------------------------------------------
async def reach(who: Member, target: Member) -> RoostError | None:
    """Look ``target`` up from ``who``'s client (through its home server): None if it works,
    else the error the client sees."""
    try:
        info = await who.client.lookup_user(target.user_id)
    except RoostError as e:
        return e
    assert info.user_id == target.user_id
    return None


async def settles(
    probes: list[tuple[Member, Member, bool]], what: str
) -> dict[tuple[str, str], RoostError | None]:
    """Wait (at most the policy cache time plus slack) until every ``(who, target, works)``
    holds on the running servers; return what each client saw."""
    seen: dict[tuple[str, str], RoostError | None] = {}

    async def all_hold() -> bool:
        ok = True
        for who, target, works in probes:
            err = await reach(who, target)
            seen[(who.user_id, target.user_id)] = err
            ok = ok and ((err is None) == works)
        return ok

    await eventually(all_hold, POLICY_CACHE_SECONDS + 5, what, interval=0.5)
    return seen


def refused(err: RoostError | None) -> None:
    assert err is not None, "reached a domain the policy refuses"
    assert (err.status, err.code) == (403, "federation_refused"), (err.status, err.code)


async def test_policy_refuses_in_both_directions_and_changes_apply_live(
    fed_users: Federation,
) -> None:
    fed = fed_users
    alice, bob, carol = (
        await new(fed, A, "alice"),
        await new(fed, B, "bob"),
        await new(fed, C, "carol"),
    )
    await settles(
        [(alice, bob, True), (bob, alice, True), (alice, carol, True), (carol, alice, True)],
        "everyone federates (open mode)",
    )
    try:
        # a.test blocks b.test: a's clients cannot reach b, b's requests are refused by a.
        fed.policy(A, "open", block=[B])
        seen = await settles(
            [(alice, bob, False), (bob, alice, False), (alice, carol, True), (carol, alice, True)],
            "a.test blocks b.test",
        )
        refused(seen[(alice.user_id, bob.user_id)])
        refused(seen[(bob.user_id, alice.user_id)])

        # a.test allowlists c.test only: b.test is refused both ways, c.test still works.
        fed.policy(A, "allowlist", allow=[C])
        seen = await settles(
            [(alice, bob, False), (bob, alice, False), (alice, carol, True), (carol, alice, True)],
            "a.test allowlists only c.test",
        )
        refused(seen[(alice.user_id, bob.user_id)])
        refused(seen[(bob.user_id, alice.user_id)])

        # An EMPTY allowlist admits nobody.
        fed.policy(A, "allowlist")
        seen = await settles(
            [
                (alice, bob, False),
                (bob, alice, False),
                (alice, carol, False),
                (carol, alice, False),
            ],
            "a.test's allowlist is empty",
        )
        for err in seen.values():
            refused(err)

        # The other side: a.test is open again, but b.test's allowlist names only c.test.
        fed.policy(A, "open")
        fed.policy(B, "allowlist", allow=[C])
        seen = await settles(
            [(alice, bob, False), (bob, alice, False), (bob, carol, True), (alice, carol, True)],
            "b.test's allowlist lacks a.test",
        )
        refused(seen[(alice.user_id, bob.user_id)])  # refused by b.test, reported by a.test
        refused(seen[(bob.user_id, alice.user_id)])  # refused by b.test before leaving it
    finally:
        fed.policy(A, "open")
        fed.policy(B, "open")
    # Back to open, on the running servers, within the policy cache time.
    await settles(
        [(alice, bob, True), (bob, alice, True), (alice, carol, True), (carol, alice, True)],
        "open again",
    )


# ---- replayed and forged server signatures ----------------------------------------------------
def capture_ping(fed: Federation, origin: str, destination: str) -> Captured:
    """A real signed request: ``roost admin federation ping`` run on ``origin``'s host, with
    ``destination`` pointed at a recording server for this one run."""
    with RecordingServer({"origin": origin, "destination": destination}) as rec:
        override = f"{destination}=127.0.0.1:{rec.port}"
        fed[origin].admin(
            "federation",
            "ping",
            destination,
            env={"ROOST_FEDERATION_RESOLVE": override},
        )
    [captured] = [r for r in rec.requests if r.path.startswith("/federation/v1/whoami")]
    return captured


def send_to(fed: Federation, domain: str, req: Captured, **headers: str) -> httpx.Response:
    """Send a captured request to ``domain``'s real server, headers replaced as given."""
    hop = {"host", "content-length", "connection", "accept-encoding", "user-agent"}
    sent = {k: v for k, v in req.headers.items() if k.lower() not in hop}
    for name, value in headers.items():
        for k in [k for k in sent if k.lower() == name.replace("_", "-").lower()]:
            del sent[k]
        sent[name.replace("_", "-")] = value
    return httpx.request(
        req.method, fed[domain].url + req.path, headers=sent, content=req.body, timeout=30
    )


def header(req: Captured, name: str) -> str:
    return next(v for k, v in req.headers.items() if k.lower() == name)


def resign(req: Captured, key: SigningKey, *, origin: str | None = None) -> dict[str, str]:
    """New Signature-Input/Signature (fresh nonce) over the captured request, by ``key``."""
    path, _, query = req.path.partition("?")
    headers = {
        "content-digest": header(req, "content-digest"),
        "roost-origin": origin or header(req, "roost-origin"),
        "roost-destination": header(req, "roost-destination"),
    }
    signed = signing.sign(
        key, signing.Target(req.method, path, query), headers, created=int(time.time())
    )
    return {
        "Signature-Input": signed["signature-input"],
        "Signature": signed["signature"],
        "Roost-Origin": headers["roost-origin"],
    }


def stranger_key(key_id: str) -> SigningKey:
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return SigningKey(key_id, private, public)


def problem(resp: httpx.Response) -> tuple[int, str]:
    assert resp.headers.get("content-type", "").startswith("application/problem+json"), resp
    return resp.status_code, resp.json().get("code")


def test_replayed_and_forged_server_signatures_are_refused(federation: Federation) -> None:
    req = capture_ping(federation, A, B)
    assert header(req, "roost-origin") == A and header(req, "roost-destination") == B

    # The genuine request is accepted once ...
    first = send_to(federation, B, req)
    assert first.status_code == 200, first.text
    assert first.json()["origin"] == A
    # ... and refused when replayed.
    assert problem(send_to(federation, B, req)) == (401, "replayed_request")

    # Signed by a key a.test does not publish: under a made-up key id, or under a.test's real
    # key id (the signature does not verify with the published key).
    params, _ = signing.parse({k.lower(): v for k, v in req.headers.items()})
    for key_id in ("not-a-key-of-a", params.keyid):
        forged = send_to(federation, B, req, **resign(req, stranger_key(key_id)))
        assert problem(forged) == (401, "invalid_signature"), key_id

    # A real signature with a changed body or claimed origin does not verify either.
    tampered = Captured(req.method, req.path, req.headers, b"extra")
    assert problem(send_to(federation, B, tampered))[0] == 401
    other_origin = send_to(federation, B, req, Roost_Origin=C)
    assert problem(other_origin) == (401, "invalid_signature")

    # A request for another destination is refused by the wrong server.
    assert problem(send_to(federation, C, req))[0] == 421
