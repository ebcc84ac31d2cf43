"""Several real ``roost serve`` processes of different domains that federate over loopback.

Every homeserver gets its own data directory and database (SQLite by default, or a fresh
PostgreSQL database each), a loopback port chosen before any of them starts (so each one's
resolver can map the others), plain HTTP towards the others (they are listed as insecure
domains) and a federation policy set through the real ``roost admin federation`` CLI.

A homeserver can be stopped and started again on the same port and data (downtime tests).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from tests.integration.conftest import Users
from tests.integration.harness import ServerProcess, free_port

DOMAINS = ("a.test", "b.test", "c.test")
CLI_TIMEOUT = 120
# The policy store re-reads the database at most this often (FederationPolicyStore).
POLICY_CACHE_SECONDS = 5.0


@dataclass
class Homeserver(ServerProcess):
    """One homeserver of a federation: a ``ServerProcess`` with a domain and a fixed port.

    ``start`` keeps the port given at construction (and across restarts), unlike the base
    class, so the other servers' resolvers keep pointing at it."""

    domain: str = ""

    def start(self, *, upgrade: bool = True) -> Homeserver:
        if not self.port:
            self.port = free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if upgrade:
            self.upgrade()
        self.spawn()
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def upgrade(self) -> None:
        self.roost("db", "upgrade")

    def roost(
        self, *args: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``roost <args>`` with this server's configuration (as its operator would);
        ``env`` overrides settings for this run only."""
        done = subprocess.run(
            self._roost(*args),
            env={**self.env, **(env or {})},
            cwd=self.data_dir,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"roost {' '.join(args)} on {self.domain} exited with {done.returncode}:\n"
                f"{done.stdout}{done.stderr}"
            )
        return done

    def admin(
        self, *args: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``roost admin <args>``, e.g. ``admin("federation", "block", "b.test")``."""
        return self.roost("admin", *args, check=check, env=env)

    def admin_json(self, *args: str) -> Any:
        """``roost admin --json <args>``, parsed."""
        return json.loads(self.roost("admin", "--json", *args).stdout)

    def outbox(self) -> list[dict[str, Any]]:
        """Rows of ``roost admin outbox`` (outbox, destination, depth, oldest age, attempts,
        next attempt, last error, blocked)."""
        return self.admin_json("outbox")

    def outbox_to(self, destination: str) -> dict[str, Any] | None:
        """The federation outbox row for ``destination`` (None: nothing queued or failed)."""
        for row in self.outbox():
            if row.get("outbox") == "federation" and row.get("destination") == destination:
                return row
        return None

    def metrics(self) -> str:
        token = self.extra_env.get("ROOST_METRICS_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = httpx.get(self.url + "/metrics", headers=headers, timeout=10)
        r.raise_for_status()
        return r.text


@dataclass
class Federation:
    """Homeservers by domain; ``fed["b.test"]`` is one ``Homeserver``."""

    servers: dict[str, Homeserver]
    _users: list[Users] = field(default_factory=list)
    # The stored policy per domain as last set through ``policy`` (saves a CLI run per change;
    # each one costs seconds). Unknown domains are read with ``federation show``.
    _policies: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __getitem__(self, domain: str) -> Homeserver:
        return self.servers[domain]

    @property
    def domains(self) -> list[str]:
        return list(self.servers)

    # ---- lifecycle --------------------------------------------------------------------------
    def start(self, *domains: str) -> None:
        """Start stopped servers again (same port, same data; already migrated)."""
        for d in domains or self.domains:
            if not self.servers[d].running:
                self.servers[d].start(upgrade=False)

    def stop(self, *domains: str) -> None:
        for d in domains or self.domains:
            self.servers[d].stop()

    def restart(self, domain: str) -> None:
        self.servers[domain].stop()
        self.servers[domain].start(upgrade=False)

    # ---- policy (through the real CLI) ------------------------------------------------------
    def policy(
        self,
        domain: str,
        mode: str,
        *,
        allow: Iterable[str] = (),
        block: Iterable[str] = (),
    ) -> None:
        """Make ``domain``'s stored policy exactly ``mode`` + ``allow`` + ``block`` (via the
        CLI: entries not wanted are removed). Running servers see it within the policy cache
        time; ``wait_policy`` waits that long."""
        server = self.servers[domain]
        current = self._policies.pop(domain, None) or server.admin_json("federation", "show")
        if current.get("mode") != mode:
            server.admin("federation", "mode", mode)
        for kind, wanted in (("allow", set(allow)), ("block", set(block))):
            have = set(current.get(kind) or ())
            for d in sorted(wanted - have):
                server.admin("federation", kind, d)
            for d in sorted(have - wanted):
                server.admin("federation", "un" + kind, d)
        self._policies[domain] = {"mode": mode, "allow": sorted(allow), "block": sorted(block)}

    def open_all(self) -> None:
        """Every server federates with everyone (open mode, nothing blocked)."""
        for d in self.domains:
            self.policy(d, "open")

    @staticmethod
    def wait_policy() -> None:
        """Let running servers pick up a policy change (their cache lives this long)."""
        time.sleep(POLICY_CACHE_SECONDS + 0.5)

    # ---- users ------------------------------------------------------------------------------
    def users(self, domain: str) -> Users:
        """A ``Users`` factory registering on ``domain``'s server (clients closed by
        ``aclose_users``; the ``fed_users`` fixture does that after each test)."""
        u = Users(self.servers[domain].url)
        self._users.append(u)
        return u

    async def aclose_users(self) -> None:
        users, self._users = self._users, []
        for u in users:
            await u.aclose()


def make_federation(
    base_dir: Path,
    domains: Iterable[str] = DOMAINS,
    *,
    engine: str = "sqlite",
    database_url: Callable[[], str] | None = None,
    policy: str = "open",
    extra_env: dict[str, str] | None = None,
    env_per_domain: dict[str, dict[str, str]] | None = None,
    engine_per_domain: dict[str, str] | None = None,
) -> Federation:
    """Start homeservers for ``domains`` and return them as a ``Federation``.

    ``engine="postgresql"`` needs ``database_url``: a factory making a fresh database per
    server; ``engine_per_domain`` overrides ``engine`` for the domains it names (a mixed
    federation). ``policy``: ``"open"`` (everyone federates), ``"peers"`` (allowlist of the other
    domains) or ``"closed"`` (the default: allowlist mode, empty)."""
    domains = list(domains)
    ports = _distinct_free_ports(len(domains))
    port_of = dict(zip(domains, ports, strict=True))
    servers: dict[str, Homeserver] = {}
    for d in domains:
        others = [o for o in domains if o != d]
        env = {
            "ROOST_HOME_DOMAIN": d,
            "ROOST_FEDERATION_RESOLVE": ",".join(f"{o}=127.0.0.1:{port_of[o]}" for o in others),
            "ROOST_FEDERATION_INSECURE_DOMAINS": ",".join(others),
            **(extra_env or {}),
            **((env_per_domain or {}).get(d, {})),
        }
        url = ""
        server_engine = (engine_per_domain or {}).get(d, engine)
        if server_engine == "postgresql":
            assert database_url is not None, "postgresql needs a database factory"
            url = database_url()
        servers[d] = Homeserver(server_engine, base_dir / d, url, env, port=port_of[d], domain=d)
    fed = Federation(servers)

    def bring_up(d: str) -> None:
        # A fresh database: allowlist mode, both lists empty (DEFAULT_MODE), so only the
        # changes are needed. Each CLI call costs seconds; servers come up side by side.
        server = servers[d]
        server.data_dir.mkdir(parents=True, exist_ok=True)
        server.upgrade()
        if policy == "open":
            server.admin("federation", "mode", "open")
        elif policy == "peers":
            for o in domains:
                if o != d:
                    server.admin("federation", "allow", o)
        server.start(upgrade=False)

    if policy not in ("open", "peers", "closed"):
        raise ValueError(f"unknown policy {policy!r}")
    for d in domains:
        fed._policies[d] = {
            "mode": "open" if policy == "open" else "allowlist",
            "allow": sorted(o for o in domains if o != d) if policy == "peers" else [],
            "block": [],
        }
    try:
        with ThreadPoolExecutor(len(domains)) as pool:
            for f in [pool.submit(bring_up, d) for d in domains]:
                f.result()
    except BaseException:
        fed.stop()
        raise
    return fed


def _distinct_free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        p = free_port()
        if p not in ports:
            ports.append(p)
    return ports


@dataclass
class Captured:
    method: str
    path: str  # with the query, as sent
    headers: dict[str, str]
    body: bytes


class RecordingServer:
    """A loopback HTTP server that records every request and answers ``answer`` (JSON).

    Point a domain at it (``ROOST_FEDERATION_RESOLVE``) to capture a real signed request."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.requests: list[Captured] = []
        recorded, body = self.requests, json.dumps(answer).encode()

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else b""
                recorded.append(Captured(self.command, self.path, dict(self.headers), data))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _record

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> RecordingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
