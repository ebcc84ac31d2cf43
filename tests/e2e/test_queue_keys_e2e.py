"""Group-queue keys against a real homeserver process (SQLite and PostgreSQL): a home written
before queue keys (a queue id, no key) claims its key once at start and then receives, over
HTTP and the realtime socket; a wrong key is an error the caller sees."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import pytest

from roost.client import Home, RoostClient, RoostError
from roost.client.groups import GroupEvent, Groups
from roost.protocol.base64url import b64u, unb64u

from .helpers import Member, as_an_old_home, connect, member, new_member


async def _until(pred: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def _as_before_queue_keys(server, queue_id: str, client_uuid: str) -> None:
    """The server's row of the queue as the upgrade leaves a queue made before keys: no key,
    the creating client kept as its legacy owner until it claims one."""
    from roost.server.config import build_config
    from roost.server.queues.tables import queues
    from roost.server.store.engine import make_engine

    engine = make_engine(build_config({}, server.env).sqlalchemy_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                queues.update()
                .where(queues.c.id == unb64u(queue_id))
                .values(key_hash=None, legacy_owner=client_uuid, push_seal=None)
            )
    finally:
        await engine.dispose()


async def _bob_in_a_group(users, home: Home) -> tuple[Member, Member, bytes]:
    alice = await new_member(users, "alice")
    bob = member(await users.new("bob", keypackages=2, home=home))
    await connect(alice, bob)
    gid = (await alice.groups.create()).group_id
    await alice.groups.invite(gid, [bob.user_id])
    await bob.sync()
    return alice, bob, gid


async def test_a_home_from_before_queue_keys_claims_its_key_and_receives(users, server, tmp_path):
    home = Home(tmp_path / "bob")
    alice, bob, gid = await _bob_in_a_group(users, home)
    queue_id = await as_an_old_home(bob)  # one queue for all groups, as before

    # The upgrade: the server's queue loses its key, bob's home is as an older version wrote it.
    await _as_before_queue_keys(server, queue_id, bob.client.client_uuid)
    cursors_file = home.path / "group_client.json"
    saved = json.loads(cursors_file.read_text())
    del saved["queue_key"]
    cursors_file.write_text(json.dumps(saved))
    await alice.groups.send(gid, "while you upgraded")

    # bob starts again from his home: the key is claimed once, saved, and used.
    again = users.track(RoostClient.open(home.path))
    groups = Groups(again)
    assert groups.queue_id == queue_id
    with pytest.raises(RoostError) as unclaimed:  # no key yet: the server wants one
        await again.fetch_queue(queue_id)
    assert (unclaimed.value.status, unclaimed.value.code) == (403, "queue_key_required")

    seen: list[GroupEvent] = []
    stop = asyncio.Event()
    task = asyncio.create_task(groups.listen(seen.append, stop=stop))
    try:
        await _until(lambda: groups.realtime is not None and bool(groups.realtime.ready))
        assert groups.realtime is not None and groups.realtime.accepted == [queue_id]
        await alice.groups.send(gid, "pushed after the claim")
        await _until(lambda: len([e for e in seen if e.kind == "message"]) == 2)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
    assert [(e.sender, e.message) for e in seen if e.kind == "message"] == [
        (alice.client_id, "while you upgraded"),
        (alice.client_id, "pushed after the claim"),
    ]

    queue = await groups.own_queue()
    assert queue is not None and queue.id == queue_id and queue.claimed
    assert json.loads(cursors_file.read_text())["queue_key"] == queue.key  # saved
    with pytest.raises(RoostError) as twice:  # handed out once
        await again.claim_queue_key(queue_id)
    assert twice.value.status in (403, 409)

    # The next start uses the saved key: nothing to claim, messages arrive.
    await alice.groups.send(gid, "after a restart")
    third = users.track(RoostClient.open(home.path))
    events = await Groups(third).sync()
    assert [e.message for e in events if e.kind == "message"] == ["after a restart"]


async def test_a_wrong_queue_key_is_an_error_not_silence(users, tmp_path):
    home = Home(tmp_path / "bob")
    _alice, bob, gid = await _bob_in_a_group(users, home)
    await bob.client.aclose()
    cursors_file = home.path / "group_client.json"
    saved = json.loads(cursors_file.read_text())
    saved["group_queues"][b64u(gid)]["key"] = "A" * 43  # 32 zero bytes: not this queue's key
    cursors_file.write_text(json.dumps(saved))

    groups = Groups(users.track(RoostClient.open(home.path)))
    with pytest.raises(RoostError) as refused:
        await asyncio.wait_for(groups.listen(stop=asyncio.Event()), 15)
    assert (refused.value.status, refused.value.code) == (403, "forbidden")
    assert "A" * 43 not in str(refused.value)


async def test_two_processes_on_an_old_home_both_end_with_the_key(users, server, tmp_path):
    """Two programs started on the same old home both claim: the server hands the key out once,
    and the one refused finds it in the home, saved there by the other."""
    home = Home(tmp_path / "bob")
    alice, bob, gid = await _bob_in_a_group(users, home)
    queue_id = await as_an_old_home(bob)  # one queue for all groups, as before
    await _as_before_queue_keys(server, queue_id, bob.client.client_uuid)
    cursors_file = home.path / "group_client.json"
    saved = json.loads(cursors_file.read_text())
    del saved["queue_key"]
    cursors_file.write_text(json.dumps(saved))

    first = Groups(users.track(RoostClient.open(home.path)))
    second = Groups(users.track(RoostClient.open(home.path)))
    one, two = await asyncio.gather(first.own_queue(), second.own_queue())
    assert one is not None and one.claimed and one == two

    await alice.groups.send(gid, "to both")
    events = await second.sync()
    assert [e.message for e in events if e.kind == "message"] == ["to both"]
