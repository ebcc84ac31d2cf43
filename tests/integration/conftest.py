"""Integration fixtures: real ``roost serve`` processes (SQLite and PostgreSQL) and clients.

One server process per engine for the whole session (``server``), plus one with a very short
token lifetime and a low claim rate limit (``strict_server``) for the expiry and limit tests. Every test makes its own users, so
tests never depend on each other's data.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from roost.client import RoostClient
from roost.server.store import Database

from .harness import ServerProcess

ENGINES = ["sqlite", "postgresql"]


def _short_token_ttl() -> int:
    """The shortest token lifetime the server's configuration accepts (3 s if allowed)."""
    from roost.server.config import ConfigError, build_config

    for ttl in (3, 5, 10, 30, 60):
        try:
            build_config({}, {"ROOST_TOKEN_TTL_SECONDS": str(ttl)})
        except ConfigError:
            continue
        return ttl
    raise RuntimeError("no short token lifetime is accepted by the server configuration")


SHORT_TOKEN_TTL = _short_token_ttl()
STRICT_CLAIMS_PER_MINUTE = 5
PASSWORD = "correct horse battery staple"


def _start(request, tmp_path_factory, label: str, extra_env: dict[str, str]) -> ServerProcess:
    engine = request.param
    database_url = ""
    if engine == "postgresql":
        database_url = request.getfixturevalue("postgres_database")()
    data_dir = tmp_path_factory.mktemp(f"{label}-{engine}")
    server = ServerProcess(engine, data_dir, database_url, extra_env)
    server.start()
    return server


@pytest.fixture(scope="session", params=ENGINES)
def server(request, tmp_path_factory):
    srv = _start(request, tmp_path_factory, "roost", {})
    yield srv
    srv.stop()


@pytest.fixture(scope="session", params=ENGINES)
def strict_server(request, tmp_path_factory):
    srv = _start(
        request,
        tmp_path_factory,
        "roost-strict",
        {
            "ROOST_TOKEN_TTL_SECONDS": str(SHORT_TOKEN_TTL),
            "ROOST_LIMITS_CLAIMS_PER_MINUTE": str(STRICT_CLAIMS_PER_MINUTE),
        },
    )
    yield srv
    srv.stop()


def unique_name(prefix: str = "u", n: int = 10) -> str:
    return f"{prefix}{uuid.uuid4().hex[:n]}"


class Users:
    """Registers users on one server and closes their clients at the end of the test."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._clients: list[RoostClient] = []

    def track(self, client: RoostClient) -> RoostClient:
        self._clients.append(client)
        return client

    async def new(
        self,
        prefix: str = "u",
        *,
        password: str | None = None,  # argon2 costs time: only where a test needs it
        keypackages: int = 0,
        **kwargs,
    ) -> RoostClient:
        client = await RoostClient.register(
            self.url, unique_name(prefix), password=password, **kwargs
        )
        self.track(client)
        if keypackages:
            await client.publish_key_packages(keypackages)
        return client

    async def second_client(self, first: RoostClient, password: str | None = None) -> RoostClient:
        """Another client of ``first``'s user: by password if given, else approved by ``first``."""
        if password is not None:
            return self.track(
                await RoostClient.add_with_password(self.url, first.user_id, password)
            )
        pending = await RoostClient.request_approval(self.url, first.user_id)
        [req] = [
            r for r in await first.client_requests() if r.signature_key == pending.signature_key
        ]
        await first.approve_client(req.request_id)
        client = await pending.poll()
        assert client is not None
        return self.track(client)

    async def connected_pair(self, **kwargs) -> tuple[RoostClient, RoostClient]:
        """Two users with an accepted connection."""
        a = await self.new("a", **kwargs)
        b = await self.new("b", **kwargs)
        conn = await a.open_connection(b.user_id)
        await a.send_connection_request(conn.connection_id, b"hello")
        await b.accept_connection(conn.connection_id)
        return a, b

    async def aclose(self) -> None:
        for c in self._clients:
            await c.aclose()


@pytest.fixture
async def users(server) -> AsyncIterator[Users]:
    u = Users(server.url)
    yield u
    await u.aclose()


@pytest.fixture
async def http(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    """Raw HTTP to the session's server (for tests of the API as any client speaks it)."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture
async def db(server: ServerProcess) -> AsyncIterator[Database]:
    """The server's own database, opened beside it (what a copy of it would show)."""
    if server.database_url:
        url = server.database_url.replace("postgresql://", "postgresql+asyncpg://", 1)
    else:
        url = f"sqlite+aiosqlite:///{server.data_dir / 'roost.db'}"
    database = Database(url)
    yield database
    await database.dispose()
