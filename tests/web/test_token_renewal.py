"""Bearer tokens are short-lived: the page renews its token before it expires, for its HTTP
calls and on its open socket (the `auth` frame), so a user stays signed in and connected."""

from __future__ import annotations

import time

import pytest

from tests.integration.conftest import SHORT_TOKEN_TTL
from tests.integration.harness import ServerProcess

from .conftest import talking_pair

# The server re-checks an open socket's token at least every 30 s (docs/api.md, "Realtime").
SOCKET_RECHECK_S = 30


@pytest.fixture(scope="module")
def short_token_server(tmp_path_factory):
    srv = ServerProcess(
        "sqlite",
        tmp_path_factory.mktemp("web-tokens"),
        extra_env={"ROOST_TOKEN_TTL_SECONDS": str(SHORT_TOKEN_TTL)},
    )
    srv.start()
    yield srv
    srv.stop()


def test_tokens_are_renewed_for_requests_and_the_socket(short_token_server, browser):
    srv = short_token_server
    talking_pair(browser, srv.url)

    # The first tokens have expired and the server has re-checked the sockets since (at the
    # latest two re-checks after connecting); the same sockets still deliver.
    time.sleep(max(2 * SOCKET_RECHECK_S, SHORT_TOKEN_TTL + SOCKET_RECHECK_S) + 2)
    for name in ("alice", "bob"):
        assert browser.call("text", name=name, selector="#status") == "Online"
    browser.call("send", name="alice", text="still signed in")
    browser.call("messages", name="bob", wait_for="still signed in")
    browser.call("send", name="bob", text="and still connected")
    browser.call("messages", name="alice", wait_for="and still connected")
    for name in ("alice", "bob"):
        urls = browser.call("requests", name=name)["requests"]
        assert len([u for u in urls if "/v1/realtime?ticket=" in u]) == 1  # never reconnected
        assert urls.count(srv.url + "/v1/auth/token") >= 3  # renewed, more than once
