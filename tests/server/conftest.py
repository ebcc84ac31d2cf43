"""Server unit-test fixtures: the app on SQLite and on PostgreSQL, driven through ASGI.

PostgreSQL: ``$ROOST_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``).
A uniquely named database is created for the session and dropped at the end; tests truncate all
tables before they run. If the server is unreachable the PostgreSQL cases skip with the reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from roost.server.app import create_app
from roost.server.config import build_config
from roost.server.store import Database
from roost.server.store.migrate import upgrade
from roost.server.store.tables import metadata

from ..conftest import postgres_admin_url, run_off_loop
from .helpers import FakeClock, TestUser, register_user


def _pg_admin_url() -> str:
    return postgres_admin_url()


@pytest.fixture(scope="session")
def migrated_postgres_url(postgres_database) -> str:  # type: ignore[no-untyped-def]
    """A fresh, migrated PostgreSQL database for this test session (asyncpg URL)."""
    url = postgres_database().replace("postgresql://", "postgresql+asyncpg://", 1)

    async def migrate() -> None:
        db = Database(url)
        try:
            await upgrade(db)
        finally:
            await db.dispose()

    run_off_loop(migrate)
    return url


async def _truncate(url: str) -> None:
    db = Database(url)
    try:
        async with db.transaction() as conn:
            names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
            await conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    finally:
        await db.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database on each engine."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'roost.db'}"
        db = Database(url)
        try:
            await upgrade(db)
        finally:
            await db.dispose()
        return url
    url = request.getfixturevalue("migrated_postgres_url")
    await _truncate(url)
    return url


@dataclass
class Server:
    """An app instance plus an HTTP client talking to it in-process."""

    http: httpx.AsyncClient
    clock: FakeClock
    app: object
    users: dict[str, TestUser] = field(default_factory=dict)

    async def user(self, name: str, **kwargs: object) -> TestUser:
        u = await register_user(self.http, name, **kwargs)
        self.users[name] = u
        return u


def make_config(db_url: str, **overrides: object):  # type: ignore[no-untyped-def]
    raw: dict[str, object] = {
        "database_url": db_url,
        "limits": {
            "registrations_per_minute": 1000,
            "claims_per_minute": 1000,
            "claims_per_target_per_minute": 1000,
        },
    }
    raw.update(overrides)
    return build_config(raw, {})


@pytest.fixture
async def server(db_url: str) -> AsyncIterator[Server]:
    async with running_server(make_config(db_url)) as s:
        yield s


class running_server:  # noqa: N801 - used like a function
    def __init__(self, config) -> None:  # type: ignore[no-untyped-def]
        self.config = config
        self.clock = FakeClock()

    async def __aenter__(self) -> Server:
        self.app = create_app(self.config, clock=self.clock)
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()
        transport = httpx.ASGITransport(app=self.app)
        self.http = httpx.AsyncClient(transport=transport, base_url="http://roost.test")
        return Server(self.http, self.clock, self.app)

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()
        await self._lifespan.__aexit__(None, None, None)


@pytest.fixture(params=["sqlite", "postgresql"])
async def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A database with no schema at all (migration tests), on each engine."""
    if request.param == "sqlite":
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}")
    else:
        db = Database(request.getfixturevalue("migrated_postgres_url"))
        async with db.transaction() as conn:
            await conn.execute(sa.text("DROP SCHEMA public CASCADE"))
            await conn.execute(sa.text("CREATE SCHEMA public"))
    try:
        yield db
    finally:
        if not db.is_sqlite:
            await upgrade(db)  # leave the shared session database migrated for the other tests
        await db.dispose()
