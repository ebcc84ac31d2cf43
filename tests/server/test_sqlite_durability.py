"""A write the server answered is on disk on SQLite too: the served database syncs its WAL at
every commit (``synchronous=FULL``) unless the operator trades that away (``sqlite_synchronous
= "normal"``, documented in docs/operations.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from roost.server.config import ConfigError, build_config
from roost.server.store import Database
from roost.server.store.migrate import upgrade

from .conftest import running_server

FULL, NORMAL = 2, 1  # PRAGMA synchronous answers


async def served_synchronous(tmp_path: Path, **overrides: object) -> int:
    raw: dict[str, object] = {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'roost.db'}"}
    raw.update(overrides)
    db = Database(str(raw["database_url"]))
    try:
        await upgrade(db)
    finally:
        await db.dispose()
    async with running_server(build_config(raw, {})) as server:
        # The served app's own engine: every module shares the one Database.
        db = server.app.state.services.auth.db  # type: ignore[attr-defined]
        async with db.engine.connect() as conn:
            return int((await conn.execute(text("PRAGMA synchronous"))).scalar_one())


async def test_a_served_sqlite_database_syncs_every_commit_by_default(tmp_path: Path) -> None:
    assert await served_synchronous(tmp_path) == FULL


async def test_the_operator_may_trade_durability_for_speed(tmp_path: Path) -> None:
    assert await served_synchronous(tmp_path, sqlite_synchronous="normal") == NORMAL


def test_an_unknown_mode_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match="sqlite_synchronous"):
        build_config({"sqlite_synchronous": "off"}, {})
