"""Push against a real ``roost serve`` process (SQLite and PostgreSQL) and the Web Push
stand-in process: an offline client is woken with an encrypted, content-free push; while its
realtime socket is open it gets none; a muted group stays silent; a burst is coalesced."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from roost.client.push import push_registration, push_server_info, register_web_push
from tests.e2e.helpers import Member, connect, new_member
from tests.push_services.process import StandIn

from .conftest import ENGINES, Users, _start
from .test_realtime_groups import Listening

pytestmark = pytest.mark.timeout(180)
WINDOW = 2  # push_coalesce_seconds of the server under test


@pytest.fixture(scope="module")
def webpush() -> Iterator[StandIn]:
    s = StandIn("webpush")
    yield s
    s.close()


@pytest.fixture(scope="module", params=ENGINES)
def push_server(request, tmp_path_factory):
    env = {
        "ROOST_PUSH_ALLOW_INSECURE_ENDPOINTS": "true",
        "ROOST_PUSH_COALESCE_SECONDS": str(WINDOW),
    }
    srv = _start(request, tmp_path_factory, "roost-push", env)
    yield srv
    srv.stop()


@pytest.fixture
async def users(push_server):
    u = Users(push_server.url)
    yield u
    await u.aclose()


async def pushes_to(webpush: StandIn, sub_id: str) -> list[dict]:
    got = await asyncio.to_thread(webpush.received)
    return [g for g in got if g.get("subscription") == sub_id]


async def eventually(cond: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():  # type: ignore[misc]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def subscribed(users: Users, webpush: StandIn, prefix: str, sub_id: str) -> Member:
    m = await new_member(users, prefix)
    sub = await asyncio.to_thread(webpush.subscribe, sub_id)
    await register_web_push(m.client, sub["endpoint"], sub["keys"])
    assert (await push_registration(m.client))["endpoint"] == sub["endpoint"]
    return m


async def test_offline_client_is_woken_online_client_is_not(users, webpush):
    info = await push_server_info(await users.new("probe"))
    assert "webpush" in info["kinds"]
    alice = await new_member(users, "a")
    sub_id = f"it-bob-{uuid.uuid4().hex[:8]}"  # the stand-in outlives one engine's run
    bob = await subscribed(users, webpush, "b", sub_id)
    await connect(alice, bob)
    group = await alice.groups.create()
    gid = group.group_id
    await alice.groups.invite(gid, [bob.user_id])
    # The connection request and the Welcome (direct queue, default policy "all") wake Bob.
    await eventually(lambda: _count(webpush, sub_id, 1))
    for push in await pushes_to(webpush, sub_id):
        assert json.loads(push["plaintext"]) == {"type": "wake"}
        assert push["vapid_key"] == info["public_key"]
    await bob.sync()

    # Online: messages come over the socket and no push is sent.
    await asyncio.sleep(WINDOW + 0.5)  # let any trailing push of the join go out first
    before = len(await pushes_to(webpush, sub_id))
    bob_rt = Listening(bob)
    try:
        deadline = time.monotonic() + 10
        while bob.groups.realtime is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await alice.groups.send(gid, "secret while online", message_id="m1")
        await eventually(lambda: _has_message(bob_rt, gid))
        await asyncio.sleep(WINDOW + 1.5)
        assert len(await pushes_to(webpush, sub_id)) == before
    finally:
        await bob_rt.aclose()

    # Offline again, and muted: still nothing; unmuted: a burst gives one push now.
    await bob.groups.set_policy(gid, "mute")
    await alice.groups.send(gid, "muted", message_id="m2")
    await asyncio.sleep(1.0)
    assert len(await pushes_to(webpush, sub_id)) == before
    await bob.groups.set_policy(gid, None)
    for i in range(5):
        await alice.groups.send(gid, f"burst {i}", message_id=f"b{i}")
    await eventually(lambda: _count(webpush, sub_id, before + 1))
    await asyncio.sleep(WINDOW + 1.5)
    got = await pushes_to(webpush, sub_id)
    assert before + 1 <= len(got) <= before + 2  # one now, at most one trailing
    assert all("secret" not in g["plaintext"] for g in got)


async def _count(webpush: StandIn, sub_id: str, n: int) -> bool:
    return len(await pushes_to(webpush, sub_id)) >= n


async def _has_message(listening: Listening, gid: bytes) -> bool:
    return bool(listening.of(gid, "message"))
