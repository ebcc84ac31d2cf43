"""Shared test fixtures: a throw-away PostgreSQL database per test session.

``ROOST_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``) names a server
and a database we may connect to; the session creates a uniquely named database next to it and
drops it at the end (``postgres_database()`` makes more). When PostgreSQL is unreachable, tests that need it are skipped with a message
saying so (``.ci/run`` starts PostgreSQL, so CI always runs them).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit, urlunsplit

import pytest

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_admin_url() -> str:
    return os.environ.get("ROOST_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def run_off_loop(coro_fn, *args):  # type: ignore[no-untyped-def]
    """Run a coroutine to completion on a private loop: safe inside a running test loop (an
    async fixture may be the first to ask for a session fixture)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(coro_fn(*args))).result()


async def _admin_async(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _admin(url: str, sql: str) -> None:
    run_off_loop(_admin_async, url, sql)


@pytest.fixture(scope="session")
def postgres_database():
    """Factory: ``postgres_database()`` creates a fresh, empty database and returns its URL.
    Every database made this session is dropped at the end."""
    admin = postgres_admin_url()
    made: list[str] = []

    def create() -> str:
        name = f"roost_test_{uuid.uuid4().hex[:12]}"
        try:
            _admin(admin, f'CREATE DATABASE "{name}"')
        except Exception as e:  # unreachable server, bad credentials, missing driver
            pytest.skip(
                f"PostgreSQL not reachable at {admin} ({type(e).__name__}: {e}); "
                "set ROOST_TEST_POSTGRES_URL or run .ci/run to include the PostgreSQL suite"
            )
        made.append(name)
        return _with_database(admin, name)

    yield create
    for name in made:
        _admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url(postgres_database) -> str:
    """URL of one fresh, empty PostgreSQL database for this session."""
    return postgres_database()
