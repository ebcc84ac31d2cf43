"""Browser tests: a real ``roost serve`` (SQLite) and headless Chromium driving the page."""

from __future__ import annotations

import uuid

import pytest

from roost.client import RoostClient
from tests.e2e.helpers import Member, member
from tests.integration.harness import ServerProcess

from .driver import REPO, Browser, require

PASSWORD = "correct horse battery"
# Screenshots of the main screens, for people to look at (ignored by git; docs/images holds two).
SCREENSHOTS = REPO / "screenshots" / "web"


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


def signed_up(browser, name: str, url: str, prefix: str) -> str:
    """Page ``name`` opened at ``url`` and signed up as a new user; the user's name."""
    user = unique(prefix)
    browser.open(name, url)
    assert browser.sign_in(name, user, PASSWORD, register=True)["error"] is None
    return user


def signed_in_pair(browser, url: str) -> tuple[str, str]:
    """Pages "alice" and "bob", each signed up as a new user; their user names."""
    alice = signed_up(browser, "alice", url, "alice")
    return alice, signed_up(browser, "bob", url, "bob")


async def python_user(url: str, prefix: str = "py", key_packages: int = 3) -> Member:
    """A new ``roost.client`` user with ``key_packages`` KeyPackages published."""
    client = await RoostClient.register(url, unique(prefix))
    await client.publish_key_packages(key_packages)
    return member(client)


def talking_pair(browser, url: str) -> tuple[str, str]:
    """Pages "alice" and "bob" with two new users in one accepted 1:1 conversation; their
    user names."""
    alice, bob = signed_in_pair(browser, url)
    assert browser.call("start", name="alice", peer=f"{bob}@localhost") == {"error": None}
    browser.call("invitations", name="bob", wait_for=alice)
    assert browser.call("accept", name="bob", **{"from": f"{alice}@localhost"}) == {"error": None}
    return alice, bob


def screenshot(browser, name: str, file: str) -> None:
    """What page ``name`` shows now, saved as ``SCREENSHOTS/file``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.call("screenshot", name=name, path=str(SCREENSHOTS / file))
