"""Operator commands of the ``roost`` CLI: configuration errors, migrations, schema checks."""

from __future__ import annotations

import os
import subprocess
import sys


def _roost(*args: str, env: dict[str, str], cwd) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
    return subprocess.run(
        [sys.executable, "-m", "roost.cli.main", *args],
        env={**base, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_bad_configuration_is_reported_all_at_once(tmp_path):
    env = {
        "ROOST_DATA_DIR": str(tmp_path),
        "ROOST_LISTEN": "nowhere",
        "ROOST_HOME_DOMAIN": "not a domain!",
        "ROOST_REGISTRATION_POLICY": "sometimes",
    }
    proc = _roost("serve", env=env, cwd=tmp_path)
    assert proc.returncode == 2, proc
    for needle in ("listen", "home_domain", "registration_policy"):
        assert needle in proc.stderr, (needle, proc.stderr)
    assert not (tmp_path / "roost.db").exists()


def test_config_file_and_unknown_settings(tmp_path):
    (tmp_path / "roost.toml").write_text('home_domain = "example.org"\ncolour = "blue"\n')
    proc = _roost("serve", "--config", str(tmp_path / "roost.toml"), env={}, cwd=tmp_path)
    assert proc.returncode == 2 and "colour" in proc.stderr, proc


def test_db_upgrade_is_idempotent(tmp_path):
    env = {"ROOST_DATA_DIR": str(tmp_path)}
    first = _roost("db", "upgrade", env=env, cwd=tmp_path)
    assert first.returncode == 0, first
    again = _roost("db", "upgrade", env=env, cwd=tmp_path)
    assert again.returncode == 0 and "already" in again.stdout, again


def test_serve_refuses_a_database_that_needs_upgrading(postgres_database, tmp_path):
    # An empty PostgreSQL database is not initialised implicitly: `roost db upgrade` first.
    env = {
        "ROOST_DATA_DIR": str(tmp_path),
        "ROOST_DATABASE_URL": postgres_database(),
        "ROOST_LISTEN": "127.0.0.1:1",
    }
    proc = _roost("serve", env=env, cwd=tmp_path)
    assert proc.returncode == 3, proc
    assert "upgrade" in proc.stderr, proc.stderr


def test_registration_token_command(tmp_path):
    env = {"ROOST_DATA_DIR": str(tmp_path)}
    assert _roost("db", "upgrade", env=env, cwd=tmp_path).returncode == 0
    proc = _roost("registration-token", "create", "--uses", "2", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc
    assert len(proc.stdout.strip()) >= 16
