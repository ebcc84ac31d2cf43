"""At every level and in both formats the log holds no bearer token, queue id, password or
password hash: not in access lines and their query strings, not in the realtime upgrade's
headers, ticket or frames, not in SQL statements and their parameters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from roost.client import Realtime, RoostClient
from roost.client.groups import Groups

from .conftest import PASSWORD, unique_name
from .harness import ServerProcess


@pytest.fixture(params=["text", "json"])
def debug_server(request, tmp_path: Path, engine: str):
    database_url = ""
    if engine == "postgresql":
        database_url = request.getfixturevalue("postgres_database")()
    env = {"ROOST_LOG_LEVEL": "debug", "ROOST_LOG_FORMAT": request.param}
    server = ServerProcess(engine, tmp_path / "data", database_url, env).start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request) -> str:
    return request.param


async def test_debug_logs_hold_no_secrets(debug_server: ServerProcess) -> None:
    url = debug_server.url
    alice = await RoostClient.register(url, unique_name("alice"), password=PASSWORD)
    second = await RoostClient.add_with_password(url, alice.user_id, PASSWORD)  # a login
    try:
        token = await alice.bearer_token()
        second_token = await second.bearer_token()
        queue_id = await alice.create_queue()
        await alice.enqueue(queue_id, b"hello")
        groups = Groups(alice)
        group = await groups.create()  # POST /v1/groups?queue_id=<its queue id>
        group_queue = groups.queue_id
        async with Realtime(alice, positions={queue_id: 0}) as rt:  # upgrade + hello frame
            await rt.receive(timeout=10)
        # A browser's upgrade: the ticket travels in the query string (used, then refused).
        ticket = (await second.request("POST", "/v1/realtime/tickets")).json()["ticket"]
        ticket_url = url.replace("http://", "ws://") + "/v1/realtime?ticket=" + ticket
        async with connect(ticket_url, proxy=None) as ws:
            await ws.send(json.dumps({"type": "hello"}))
            assert json.loads(await ws.recv())["type"] == "ready"
        with pytest.raises(InvalidStatus):
            await connect(ticket_url, proxy=None)
        assert group is not None
    finally:
        await second.aclose()
        await alice.aclose()
    debug_server.stop()  # flush everything
    log = debug_server.log_path.read_text(errors="replace")
    assert "GET /health" in log or '"route"' in log or "/v1/" in log  # it did log requests
    for name, secret in (
        ("bearer token", token),
        ("second bearer token", second_token),
        ("realtime ticket", ticket),
        ("queue id", queue_id),
        ("group queue id", group_queue),
        ("password", PASSWORD),
        ("argon2 hash", "$argon2"),
    ):
        assert secret not in log, f"the {name} is in the log"
