"""``roost admin`` against real server processes and their databases (SQLite and PostgreSQL):
what the operator changes is what the running server does; plus /metrics, /health, /ready
and JSON logs of a real ``roost serve``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import httpx
import pytest

from roost.client import RoostClient, RoostError
from roost.client.realtime import Realtime
from tests.e2e.helpers import connect, new_member, sync_until
from tests.federation.harness import POLICY_CACHE_SECONDS

from .conftest import PASSWORD, _start, unique_name

METRICS_TOKEN = "metrics-" + "t" * 24


def admin(server, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
    return subprocess.run(
        [sys.executable, "-m", "roost.cli.main", "admin", *args],
        env={**base, **server.env},
        cwd=server.data_dir,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def admin_json(server, *args: str, stdin: str | None = None):  # type: ignore[no-untyped-def]
    proc = admin(server, *args, "--json", stdin=stdin)
    assert proc.returncode == 0, proc
    return json.loads(proc.stdout)


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def ops_server(request, tmp_path_factory):
    """Token registration, JSON logs and a protected /metrics."""
    srv = _start(
        request,
        tmp_path_factory,
        "roost-ops",
        {
            "ROOST_REGISTRATION_POLICY": "token",
            "ROOST_LOG_FORMAT": "json",
            "ROOST_LOG_LEVEL": "info",  # access lines are info
            "ROOST_METRICS_TOKEN": METRICS_TOKEN,
        },
    )
    yield srv
    srv.stop()


async def test_suspension_is_enforced_by_the_running_server(server, users):
    alice = await users.new("sus")
    bob = await users.new("sus")
    await alice.me()
    proc = admin(server, "users", "suspend", alice.user_id)
    assert proc.returncode == 0 and "suspended" in proc.stdout, proc
    with pytest.raises(RoostError) as e:
        await alice.me()  # the live token was revoked, and signing in again is refused
    assert e.value.code == "account_suspended"
    with pytest.raises(RoostError) as e:
        await alice.send_direct(bob.user_id, b"hi")
    assert e.value.code == "account_suspended"
    with pytest.raises(RoostError):
        await Realtime(alice).connect()
    listed = {u["user_id"]: u for u in admin_json(server, "users", "list", "--limit", "10000")}
    assert listed[alice.user_id]["suspended_at"] is not None
    assert listed[bob.user_id]["suspended_at"] is None
    assert admin(server, "users", "unsuspend", alice.user_id).returncode == 0
    assert (await alice.me()).user_id == alice.user_id
    assert admin(server, "users", "suspend", "nobody-" + unique_name()).returncode == 1


async def test_admin_created_user_adds_a_client_with_the_password(server, users):
    name = unique_name("op")
    made = admin_json(server, "users", "create", name, "--password-stdin", stdin=PASSWORD + "\n")
    assert made["clients"] == 0 and made["user_id"].startswith(name + "@")
    client = users.track(await RoostClient.add_with_password(server.url, made["user_id"], PASSWORD))
    assert (await client.me()).user_id == made["user_id"]
    again = admin(server, "users", "create", name, "--no-password")
    assert again.returncode == 1 and "taken" in again.stderr


async def test_operator_deletion_goes_through_account_deletion(server, users):
    """The DS gets the account event: members see user_deleted and the server's Remove."""
    alice = await new_member(users, "own")
    carol = await new_member(users, "del")
    await connect(alice, carol)
    gid = (await alice.groups.create()).group_id
    await alice.groups.invite(gid, [carol.user_id])
    await carol.sync()
    assert admin(server, "users", "delete", carol.user_id).returncode == 1  # needs --yes
    proc = admin(server, "users", "delete", carol.user_id, "--yes")
    assert proc.returncode == 0, proc
    gone = await sync_until(
        alice, lambda e: e.kind == "notice" and e.notice["type"] == "user_deleted"
    )
    assert gone.notice["user_id"] == carol.user_id
    if not alice.groups.group(gid).pending_proposal_refs():
        await sync_until(alice, lambda e: e.kind == "proposal")
    event = await alice.groups.commit(gid)
    assert event.removed == (carol.client_id,)
    with pytest.raises(RoostError):
        await carol.client.me()
    for _ in range(100):  # the server's DS drains the account-events outbox
        [row] = [o for o in admin_json(server, "outbox") if o["outbox"] == "account_events"]
        if row["depth"] == 0:
            break
        await asyncio.sleep(0.1)
    assert row["depth"] == 0 and row["oldest_age_seconds"] is None


async def test_queue_outbox_and_storage_status(server, users):
    a = await users.new("q")
    before = {q["kind"]: q for q in admin_json(server, "queues")}
    qid = await a.create_queue()
    for i in range(3):
        await a.enqueue(qid, b"item %d" % i)
    queues = {q["kind"]: q for q in admin_json(server, "queues")}
    assert set(queues) == {"group", "direct"}
    # other tests share this server: compare with the numbers just before
    assert queues["group"]["depth"] >= before["group"]["depth"] + 3
    assert queues["group"]["queues"] >= before["group"]["queues"] + 1
    assert queues["group"]["oldest_age_seconds"] is not None
    text = admin(server, "queues").stdout
    assert "group" in text and "direct" in text and qid not in text  # no queue ids shown
    outbox = admin(server, "outbox")
    assert "account_events" in outbox.stdout and "federation" in outbox.stdout
    stats = admin_json(server, "storage")
    assert stats["engine"] == server.engine and stats["database_bytes"] > 0
    assert stats["rows"]["users"] >= 1 and stats["rows"]["queue_messages"] >= 3


async def test_federation_policy_stored_in_the_database(server):
    try:
        shown = admin_json(server, "federation", "show")
        assert shown == {"mode": "allowlist", "allow": [], "block": [], "forgotten": []}
        text = admin(server, "federation", "show").stdout
        assert "EMPTY" in text and "no domain is admitted" in text
        admin_json(server, "federation", "allow", "B.Example")
        admin_json(server, "federation", "mode", "open")
        shown = admin_json(server, "federation", "block", "evil.example")
        assert shown == {
            "mode": "open",
            "allow": ["b.example"],
            "block": ["evil.example"],
            "forgotten": [],
        }
        assert admin(server, "federation", "mode", "everyone").returncode != 0
        assert admin(server, "federation", "allow", "not a domain").returncode == 1
        # Forgetting blocks for good (until unblocked); a server never forgets itself.
        gone = admin_json(server, "federation", "forget", "gone.example")
        assert gone == {"domain": "gone.example", "newly": True, "discarded": 0}
        shown = admin_json(server, "federation", "show")
        assert shown["block"] == ["evil.example", "gone.example"]
        assert shown["forgotten"] == ["gone.example"]
        assert admin(server, "federation", "forget", "not a domain").returncode == 1
        own = admin(server, "federation", "forget", "localhost")  # ROOST_HOME_DOMAIN
        assert own.returncode == 1 and "own domain" in own.stderr
        admin_json(server, "federation", "unblock", "gone.example")
        assert admin_json(server, "federation", "show")["forgotten"] == []
    finally:
        admin(server, "federation", "unallow", "b.example")
        admin(server, "federation", "unblock", "evil.example")
        admin(server, "federation", "unblock", "gone.example")
        admin(server, "federation", "mode", "allowlist")
        # The server is shared: later tests expect a fresh server's policy (nobody admitted),
        # which it reads again once its policy cache has expired.
        await asyncio.sleep(POLICY_CACHE_SECONDS + 0.5)


async def test_health_ready_metrics_of_a_real_process(server, users):
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/health")).json() == {"status": "ok"}
        assert (await http.get("/ready")).status_code == 200
        c = await users.new("m")
        rt = Realtime(c)
        await rt.connect()
        try:
            text = (await http.get("/metrics")).text
        finally:
            await rt.close()
    assert 'route="/v1/me"' in text or 'route="/v1/auth/token"' in text
    lines = {
        ln.split(" ")[0]: float(ln.split(" ")[1])
        for ln in text.splitlines()
        if " " in ln and not ln.startswith("#")
    }
    assert lines["roost_realtime_connections"] >= 1
    assert lines["process_resident_memory_bytes"] > 10_000_000
    assert 'roost_queue_depth{kind="group"}' in lines
    assert 'roost_outbox_depth{outbox="account_events"}' in lines
    assert "roost_db_pool_checked_out" in lines


async def test_tokens_json_logs_and_protected_metrics(ops_server):
    token = admin(ops_server, "tokens", "create", "--uses", "1").stdout.strip()
    unlimited = admin_json(ops_server, "tokens", "create", "--unlimited")
    listed = {t["id"]: t for t in admin_json(ops_server, "tokens", "list")}
    assert unlimited["id"] in listed and listed[unlimited["id"]]["uses_left"] is None
    assert token not in json.dumps(listed)
    client = await RoostClient.register(
        ops_server.url, unique_name("tok"), registration_token=token
    )
    try:
        rt = Realtime(client)
        await rt.connect()
        await rt.close()
        with pytest.raises(RoostError) as e:  # single use
            await RoostClient.register(ops_server.url, unique_name("tok"), registration_token=token)
        assert e.value.code == "registration_token_invalid"
        assert admin(ops_server, "tokens", "revoke", unlimited["id"]).returncode == 0
        with pytest.raises(RoostError):
            await RoostClient.register(
                ops_server.url, unique_name("tok"), registration_token=unlimited["token"]
            )
    finally:
        await client.aclose()
    async with httpx.AsyncClient(base_url=ops_server.url) as http:
        assert (await http.get("/metrics")).status_code == 401
        r = await http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert r.status_code == 200 and "roost_http_requests_total" in r.text
    log = ops_server.log_path.read_text()
    records = []
    for line in log.splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    access = [r for r in records if r["logger"] == "roost.access"]
    assert access and all(set(r) >= {"route", "status", "method", "duration_ms"} for r in access)
    assert any(r["route"] == "/v1/register" and r["status"] == 403 for r in access)
    for secret in (token, unlimited["token"], METRICS_TOKEN, client.state.token or "-" * 40):
        assert secret not in log
