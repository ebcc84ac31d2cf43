"""Browser tests: a real ``roost serve`` (SQLite) and headless Chromium driving the page."""

from __future__ import annotations

import uuid

import pytest

from tests.integration.harness import ServerProcess

from .driver import Browser, require

PASSWORD = "correct horse battery"


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def web_server(tmp_path_factory):
    srv = ServerProcess("sqlite", tmp_path_factory.mktemp("web"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def browser():
    require(browser=True)
    b = Browser()
    yield b
    b.close()
