"""End-to-end fixtures: the integration suite's real server processes (SQLite and PostgreSQL)
and user factory, reused as is, plus helpers for group members."""

from __future__ import annotations

from tests.integration.conftest import Users, server, users  # noqa: F401 - fixtures

__all__ = ["Users", "server", "users"]
