"""Group members for end-to-end tests: a client plus its ``Groups``, and small waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from roost.client import RoostClient
from roost.client.groups import GroupEvent, Groups


@dataclass
class Member:
    client: RoostClient
    groups: Groups
    seen: list[GroupEvent] = field(default_factory=list)

    @property
    def user_id(self) -> str:
        return self.client.user_id

    @property
    def client_id(self) -> str:
        return self.client.client_id

    async def sync(self) -> list[GroupEvent]:
        events = await self.groups.sync()
        self.seen.extend(events)
        return events

    def messages(self, group_id: bytes) -> list[tuple[str, str]]:
        return [
            (e.sender, e.message)
            for e in self.seen
            if e.kind == "message" and e.group_id == group_id
        ]


def member(client: RoostClient) -> Member:
    return Member(client, Groups(client))


async def new_member(users, prefix: str, keypackages: int = 3) -> Member:
    return member(await users.new(prefix, keypackages=keypackages))


async def second_member(users, first: Member, keypackages: int = 3) -> Member:
    client = await users.second_client(first.client)
    await client.publish_key_packages(keypackages)
    return member(client)


async def connect(a: Member, b: Member) -> None:
    conn = await a.client.open_connection(b.user_id)
    await a.client.send_connection_request(conn.connection_id, b"hello")
    await b.client.accept_connection(conn.connection_id)


async def alice_and_bob_in_a_group(users) -> tuple[Member, Member, bytes]:
    """alice (admin) and bob (a plain member, one client) in a group alice created."""
    alice = await new_member(users, "alice")
    bob = await new_member(users, "bob")
    await connect(alice, bob)
    gid = (await alice.groups.create()).group_id
    await alice.groups.invite(gid, [bob.user_id])
    await bob.sync()
    return alice, bob, gid


async def sync_all(*members: Member) -> None:
    for m in members:
        await m.sync()


async def sync_until(
    m: Member, pred: Callable[[GroupEvent], bool], timeout: float = 10.0
) -> GroupEvent:
    """Sync ``m`` until an event matching ``pred`` shows up (server work in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        for e in await m.sync():
            if pred(e):
                return e
        if time.monotonic() > deadline:
            raise AssertionError(f"no matching event within {timeout}s; saw {m.seen[-5:]}")
        await asyncio.sleep(0.1)


async def as_an_old_home(m: Member) -> str:
    """Turn ``m``'s home into one an older version wrote: one queue shared by all the groups it
    holds (each group's leaf registered on it, their own queues gone). Returns its id; the
    caller opens the home again (``m`` is closed)."""
    import json

    from roost.client.groups import group_path

    store = m.groups.store
    shared = await m.client.new_queue()
    for gid, own in sorted(store.cursors.group_queues.items()):
        await m.client.request(
            "PUT",
            f"/v1/groups/{group_path(gid)}/queue",
            json={"queue_id": shared.id},
            headers={**shared.headers, **m.groups.key_headers(gid)},
        )
        await m.client.delete_queue(own)
    assert m.client.home is not None
    path = m.client.home.path / "group_client.json"
    saved = json.loads(path.read_text())
    for key in ("group_queues", "retired"):
        saved.pop(key, None)
    saved.update(queue_id=shared.id, queue_key=shared.key, queue_after=0)
    path.write_text(json.dumps(saved))
    await m.client.aclose()
    return shared.id
