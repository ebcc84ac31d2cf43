"""A realtime listener whose socket drops after it processed a pushed message but before its ack
went out still hands that message to the app: the processed cursor has already moved past it,
so the resumed connection (and the HTTP catch-up) will never bring it again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable

import pytest
from websockets.protocol import State

from roost.client.groups import GroupEvent
from tests.e2e.helpers import connect, new_member

from .conftest import ENGINES, Users
from .harness import ServerProcess

pytestmark = pytest.mark.timeout(180)


async def wait_until(cond: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@pytest.fixture(params=ENGINES)
def own_server(request, tmp_path):
    """A server of this test alone: it is killed and restarted."""
    database_url = ""
    if request.param == "postgresql":
        database_url = request.getfixturevalue("postgres_database")()
    srv = ServerProcess(request.param, tmp_path / "roost", database_url).start()
    yield srv
    srv.stop()


async def test_message_processed_when_the_socket_drops_before_its_ack_is_still_reported(
    own_server: ServerProcess,
) -> None:
    users = Users(own_server.url)
    events: list[GroupEvent] = []
    stop = asyncio.Event()
    listener: asyncio.Task[None] | None = None
    try:
        alice = await new_member(users, "a")
        bob = await new_member(users, "b")
        await connect(alice, bob)
        gid = (await alice.groups.create()).group_id
        await alice.groups.invite(gid, [bob.user_id])
        await bob.groups.sync()
        assert gid in bob.groups.local_group_ids()

        listener = asyncio.create_task(bob.groups.listen(events.append, stop=stop, max_backoff=1))
        await wait_until(lambda: bob.groups.realtime is not None)
        rt = bob.groups.realtime
        queue = bob.groups.queue_of(gid)  # the membership's own queue
        assert rt is not None and queue is not None

        def texts() -> list[str]:
            return [e.message for e in events if e.kind == "message" and e.group_id == gid]

        # Bob's listener takes the pushed message off the socket, then waits for the group
        # store (held here) before processing it.
        async with bob.groups.store.lock:
            await alice.groups.send(gid, "first", message_id="m1")
            await wait_until(lambda: rt.positions.get(queue.id, 0) > 0)
            # The homeserver dies meanwhile: the socket is closed when Bob acks.
            assert own_server.proc is not None
            os.kill(own_server.proc.pid, signal.SIGKILL)
            own_server.proc.wait(timeout=30)
            assert rt._ws is not None
            ws = rt._ws
            await wait_until(lambda: ws.state is State.CLOSED)
        own_server.spawn()  # same port, same data

        await wait_until(lambda: "first" in texts())
        await alice.groups.send(gid, "second", message_id="m2")
        await wait_until(lambda: "second" in texts())
        assert texts() == ["first", "second"]
        assert not listener.done()
    finally:
        stop.set()
        if listener is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(listener, 15)
        await users.aclose()
