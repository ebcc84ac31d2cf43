"""Configuration validation, and the store: migrations, start-up check, schema == metadata."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from roost.server.commands import _check_or_auto_upgrade, db_upgrade
from roost.server.config import ConfigError, build_config, load_config
from roost.server.store.migrate import (
    MigrationError,
    check_schema,
    head_revision,
    schema_status,
    upgrade,
)
from roost.server.store.tables import metadata


def test_defaults():
    c = build_config({}, {})
    assert c.home_domain == "localhost" and c.listen == "127.0.0.1:8448"
    assert c.registration_policy == "open" and c.sqlalchemy_url.startswith("sqlite+aiosqlite:///")
    assert c.sqlalchemy_url.endswith("/data/roost.db")


def test_toml_and_env_overrides(tmp_path):
    path = tmp_path / "roost.toml"
    path.write_text(
        'home_domain = "Example.ORG"\nlisten = "0.0.0.0:9000"\n'
        'database_url = "postgresql://u@db/roost"\n[limits]\nmax_body_bytes = 2048\n'
        "max_message_bytes = 1024\n"
    )
    c = load_config(
        path, {"ROOST_REGISTRATION_POLICY": "token", "ROOST_LIMITS_MAX_BODY_BYTES": "4096"}
    )
    assert c.home_domain == "example.org" and c.listen_port == 9000
    assert c.registration_policy == "token" and c.limits.max_body_bytes == 4096
    assert c.sqlalchemy_url == "postgresql+asyncpg://u@db/roost"


def test_invalid_settings_are_all_reported():
    with pytest.raises(ConfigError) as e:
        build_config(
            {
                "home_domain": "not a domain",
                "listen": "nowhere",
                "registration_policy": "maybe",
                "database_url": "mysql://x:secret@h/db",
                "colour": "blue",
                "limits": {"max_body_bytes": 0, "claims": 3},
                "token_ttl_seconds": "soon",
            },
            {},
        )
    msg = str(e.value)
    for fragment in (
        "home_domain",
        "listen",
        "registration_policy",
        "database_url",
        "unknown setting colour",
        "limits.max_body_bytes",
        "unknown setting limits.claims",
        "token_ttl_seconds must be a int",
    ):
        assert fragment in msg, fragment
    assert "secret" not in msg  # database passwords are redacted


def test_missing_or_broken_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml", {})
    bad = tmp_path / "bad.toml"
    bad.write_text("home_domain = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, {})


async def test_migrations_from_empty_and_start_check(empty_db):
    with pytest.raises(MigrationError, match="roost db upgrade"):
        await check_schema(empty_db)
    status = await schema_status(empty_db)
    assert status.empty and not status.current
    before, head = await upgrade(empty_db)
    assert before == () and head == head_revision()
    await check_schema(empty_db)
    before, _ = await upgrade(empty_db)  # idempotent
    assert before == (head,)

    def diff(conn):  # type: ignore[no-untyped-def]
        changes = compare_metadata(MigrationContext.configure(conn), metadata)
        # the upgrade marker table lives outside the declared schema on purpose
        return [
            c
            for c in changes
            if not (c[0] == "remove_table" and c[1].name == "roost_migration_lock")
        ]

    async with empty_db.engine.connect() as conn:
        assert await conn.run_sync(diff) == []  # the migration builds exactly the declared schema


async def test_partial_and_unknown_revisions_refuse_to_start(empty_db):
    await upgrade(empty_db)
    async with empty_db.transaction() as conn:
        await conn.execute(sa.text("INSERT INTO roost_migration_lock (started_at) VALUES (1)"))
    with pytest.raises(MigrationError, match="did not finish"):
        await check_schema(empty_db)
    await upgrade(empty_db)  # re-running the upgrade clears the marker
    await check_schema(empty_db)
    async with empty_db.transaction() as conn:
        await conn.execute(sa.text("UPDATE alembic_version SET version_num = 'zz99'"))
    with pytest.raises(MigrationError, match="newer"):
        await check_schema(empty_db)
    async with empty_db.transaction() as conn:
        await conn.execute(sa.text(f"UPDATE alembic_version SET version_num = '{head_revision()}'"))


async def test_serve_auto_upgrades_only_a_fresh_default_sqlite(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = build_config({"data_dir": str(tmp_path / "data")}, {})
    (tmp_path / "data").mkdir()
    assert await _check_or_auto_upgrade(config) is None  # fresh: initialised
    assert await _check_or_auto_upgrade(config) is None
    # an explicitly configured database is never upgraded behind the operator's back
    explicit = build_config({"database_url": f"sqlite:///{tmp_path / 'other.db'}"}, {})
    problem = await _check_or_auto_upgrade(explicit)
    assert problem is not None and "roost db upgrade" in problem


def test_db_upgrade_command(tmp_path, capsys):
    config = build_config({"database_url": f"sqlite:///{tmp_path / 'cmd.db'}"}, {})
    assert db_upgrade(config) == 0
    assert "upgraded from empty" in capsys.readouterr().out
    assert db_upgrade(config) == 0
    assert "already at revision" in capsys.readouterr().out


def test_commands_report_bad_config(tmp_path, capsys):
    from roost.server.commands import serve

    assert serve(tmp_path / "missing.toml") == 2
    assert db_upgrade(tmp_path / "missing.toml") == 2
    assert "not found" in capsys.readouterr().err
