"""A database outage answers 503 problem+json (retry later), never a 500, and the server
recovers by itself once the database is back."""

from __future__ import annotations

import asyncpg
import pytest

from .conftest import _pg_admin_url, make_config, running_server


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(_pg_admin_url(), timeout=3)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def test_postgres_outage_is_503_then_recovers(migrated_postgres_url: str) -> None:
    name = migrated_postgres_url.rsplit("/", 1)[1]
    async with running_server(make_config(migrated_postgres_url)) as s:
        alice = await s.user("outage-alice")
        assert (await s.http.get("/v1/me", headers=alice.client.headers)).status_code == 200
        try:
            # Refuse new connections and cut the live ones: the pool has nothing to use.
            await _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            await _admin(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            )
            r = await s.http.get("/v1/users/outage-alice@localhost", headers=alice.client.headers)
            assert r.status_code == 503, r.text
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.json()["code"] == "service_unavailable"
            assert r.headers["retry-after"] == "1"
        finally:
            await _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        r = await s.http.get("/v1/me", headers=alice.client.headers)
        assert r.status_code == 200, r.text


pytestmark = pytest.mark.timeout(120)
