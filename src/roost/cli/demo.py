"""``roost demo``: a homeserver on the embedded default and a scripted group conversation.

Starts ``roost serve`` (SQLite in a temporary directory, a free loopback port), registers
alice, bob (with a laptop and a phone) and carol, connects them, and runs one MLS group through
the Delivery Service: create, invite, messages in every direction, a self-update, a promotion,
a leave committed by an admin, and a last message. Every decrypted message is printed as each
client sees it. Nothing outside the temporary directory is touched.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from roost.client import Home, RoostClient
from roost.client.groups import GroupEvent, Groups

READY_TIMEOUT = 60.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True, slots=True)
class EmbeddedServer:
    url: str
    pid: int


@contextmanager
def embedded_server(
    data_dir: Path,
    *,
    quiet: bool = True,
    extra_env: dict[str, str] | None = None,
    port: int | None = None,
) -> Iterator[EmbeddedServer]:
    """Run ``roost db upgrade`` and ``roost serve`` in ``data_dir`` (SQLite there unless
    ``extra_env`` names a database) on ``port`` (default: a free loopback port); yield its URL
    and process id."""
    port = port or _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
    env.update(
        {
            "ROOST_HOME_DOMAIN": "localhost",
            "ROOST_LISTEN": f"127.0.0.1:{port}",
            "ROOST_DATA_DIR": str(data_dir),
            "ROOST_REGISTRATION_POLICY": "open",
            "ROOST_LOG_LEVEL": "warning",
        }
    )
    env.update(extra_env or {})
    roost = [sys.executable, "-m", "roost.cli.main"]
    subprocess.run(
        [*roost, "db", "upgrade"],
        env=env,
        cwd=data_dir,
        check=True,
        capture_output=quiet,
        timeout=120,
    )
    log = open(data_dir / "server.log", "ab")  # noqa: SIM115 - the child keeps it open
    proc = subprocess.Popen(
        [*roost, "serve"],
        env=env,
        cwd=data_dir,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the homeserver exited with {proc.returncode}; see {data_dir / 'server.log'}"
                )
            try:
                if httpx.get(url + "/.well-known/roost", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the homeserver did not start in time")
            time.sleep(0.1)
        yield EmbeddedServer(url, proc.pid)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


class Person:
    """One client in the demo, with a label for printing."""

    def __init__(self, label: str, client: RoostClient) -> None:
        self.label = label
        self.client = client
        self.groups = Groups(client)


async def run_script(
    url: str, homes: Path, out: Callable[[str], None] = print
) -> dict[str, list[str]]:
    """The scripted conversation; returns what each client saw (label → lines)."""
    seen: dict[str, list[str]] = {}

    async def register(label: str, name: str) -> Person:
        client = await RoostClient.register(
            url, name, display_name=name.title(), home=Home(homes / label)
        )
        return Person(label, client)

    alice = await register("alice", "alice")
    bob = await register("bob-laptop", "bob")
    carol = await register("carol", "carol")
    pending = await RoostClient.request_approval(
        url, bob.client.user_id, home=Home(homes / "bob-phone")
    )
    [req] = [
        r for r in await bob.client.client_requests() if r.signature_key == pending.signature_key
    ]
    await bob.client.approve_client(req.request_id)
    phone_client = await pending.poll()
    assert phone_client is not None
    bob_phone = Person("bob-phone", phone_client)
    people = [alice, bob, bob_phone, carol]
    out(
        f"registered {alice.client.user_id}, {bob.client.user_id} (laptop and phone), "
        f"{carol.client.user_id}"
    )
    for p in people:
        await p.client.publish_key_packages(5)
    for other in (bob, carol):  # alice connects to bob and carol
        conn = await alice.client.open_connection(other.client.user_id)
        await alice.client.send_connection_request(conn.connection_id, b"hi, let's talk")
        await other.client.accept_connection(conn.connection_id)
    out("alice is connected to bob and carol")

    async def catch_up() -> None:
        for p in people:
            for ev in await p.groups.sync():
                show(p, ev)

    def name(text: str) -> str:  # client ids are long: print the demo's labels instead
        for q in people:
            text = text.replace(q.client.client_id, q.label)
        return text

    def show(p: Person, ev: GroupEvent) -> None:
        if ev.kind == "message":
            line = f"{p.label:>10} sees  {name(ev.sender)}: {ev.message}"
        elif ev.kind in ("commit", "joined", "removed", "notice"):
            line = f"{p.label:>10} sees  [{ev.kind}] {name(ev.text)}"
        else:
            return
        seen.setdefault(p.label, []).append(line)
        out(line)

    async def say(p: Person, text: str) -> None:
        out(f"{p.label:>10} says  {text!r}")
        await p.groups.send(gid, text)
        await catch_up()

    group = await alice.groups.create()
    gid = group.group_id
    out("alice created a group with the homeserver as external sender (admin: alice)")
    await alice.groups.invite(gid, [bob.client.user_id, carol.client.user_id])
    out("alice invited bob (both clients) and carol")
    await catch_up()
    await say(alice, "Hi all, welcome to the roost!")
    await say(bob, "Hello from my laptop")
    await say(bob_phone, "...and from my phone")
    await say(carol, "Hey everyone")
    out("bob's phone updates its keys (a commit from a non-admin member)")
    await bob_phone.groups.update(gid)
    await catch_up()
    await say(carol, "Still reading you after the new epoch")
    await alice.groups.promote(gid, bob.client.user_id)
    out("alice promotes bob to admin; carol leaves; bob commits her leave")
    await carol.groups.leave(gid)
    await catch_up()
    await bob.groups.commit(gid)
    await catch_up()
    await say(alice, "Bye carol! Just the three of us now")
    epochs = {p.label: p.groups.group(gid).epoch for p in people if p is not carol}
    auths = {p.groups.group(gid).epoch_authenticator for p in people if p is not carol}
    out(f"final epochs {epochs}; all members agree on the epoch authenticator: {len(auths) == 1}")
    for p in people:
        await p.client.aclose()
    return seen


def main(args: object = None) -> int:
    with tempfile.TemporaryDirectory(prefix="roost-demo-") as tmp:
        data = Path(tmp) / "server"
        data.mkdir()
        print(f"starting a homeserver (SQLite in {data})")
        with embedded_server(data) as srv:
            print(f"homeserver at {srv.url}")
            asyncio.run(run_script(srv.url, Path(tmp) / "clients"))
    print("demo finished")
    return 0
