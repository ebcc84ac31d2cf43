"""Browser notifications: the page subscribes through its service worker and registers the
subscription for its device; with no page of the origin open, the homeserver's Web Push
reaches the service worker, which shows a notification; a muted conversation sends none.

Headless Chromium has no push service, so the subscription is one of a stand-in push service
(tests/push_services/standin.py, a real HTTP server): the page's ``PushManager`` hands out its
endpoint and keys (the driver's ``stand_in_push_service``). The stand-in receives the
homeserver's push, verifies its VAPID JWT (signature, aud, exp) and decrypts the aes128gcm
payload with the subscription's private key; the test hands that payload to the service worker
with the DevTools protocol (``ServiceWorker.deliverPushMessage``), as the browser would."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.harness import ServerProcess
from tests.push_services.process import StandIn

from .conftest import screenshot, signed_up, talking_pair, unique

WINDOW = 1  # push_coalesce_seconds of the server under test
QUIET_WAIT = 4.0  # how long a muted conversation must stay silent (several windows)


@pytest.fixture(scope="module")
def push_server(tmp_path_factory) -> Iterator[ServerProcess]:
    env = {
        "ROOST_PUSH_ALLOW_INSECURE_ENDPOINTS": "true",  # the stand-in is http:// on loopback
        "ROOST_PUSH_COALESCE_SECONDS": str(WINDOW),
    }
    srv = ServerProcess("sqlite", tmp_path_factory.mktemp("web-push"), extra_env=env)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def stand_in() -> Iterator[StandIn]:
    s = StandIn("webpush")
    yield s
    s.close()


def pushes(stand_in: StandIn, sub_id: str) -> list[dict]:
    return [
        p
        for p in stand_in.received()
        if p.get("subscription") == sub_id or sub_id in p.get("path", "")
    ]


def wait_for_push(stand_in: StandIn, sub_id: str, timeout: float = 30.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while not (got := pushes(stand_in, sub_id)):
        assert time.monotonic() < deadline, "no push reached the stand-in push service"
        time.sleep(0.1)
    return got


def test_a_push_shows_a_notification_and_a_muted_conversation_sends_none(
    push_server, stand_in, browser
):
    url = push_server.url
    alice, bob = talking_pair(browser, url)
    group = unique("Quiet ")
    assert browser.call("create_group", name="alice", group=group, members=f"{bob}@localhost") == {
        "error": None
    }

    # Bob mutes the group; the conversation with Alice keeps the default.
    browser.call("open_conversation", name="bob", peer=group)
    muted = browser.call("conversation_notify", name="bob", policy="Muted")
    assert muted == {
        "error": None,
        "policy": "Muted",
        "choices": ["Default", "All messages", "Muted"],
    }
    browser.call("open_conversation", name="bob", peer=alice)
    assert browser.call("conversation_notify", name="bob")["policy"] == "Default"
    # The choice is kept with the conversation: a reloaded page shows it again.
    assert browser.call("reload", name="bob")["error"] is None
    browser.call("open_conversation", name="bob", peer=group)
    assert browser.call("conversation_notify", name="bob")["policy"] == "Muted"

    # Bob turns notifications on: permission, service worker, subscription, PUT /v1/push.
    sub_id = f"web-{uuid.uuid4().hex[:8]}"
    sub = stand_in.subscribe(sub_id)
    browser.call("allow_notifications", name="bob", origin=url)
    browser.call("stand_in_push_service", name="bob", endpoint=sub["endpoint"], keys=sub["keys"])
    before = browser.call("notification_settings", name="bob")
    assert before["on"] is False
    assert before["policies"] == ["All messages", "Muted"]  # the server's list
    on = browser.call("notification_settings", name="bob", on=True, policy="All messages")
    vapid_key = httpx.get(f"{url}/v1/push/server").json()["public_key"]
    assert on["error"] is None
    assert on["status"] == "Notifications are on."
    assert on["subscribed_with"] == vapid_key  # the page subscribed with the server's key
    screenshot(browser, "bob", "notifications.png")
    browser.call("close_settings", name="bob")
    assert browser.call("notification_settings", name="bob")["on"] is True  # read back

    # No page of the origin is open any more: Bob's device has no socket, so it gets pushes.
    browser.call("leave_origin", name="bob")
    time.sleep(1.0)

    # A message in the muted group: nothing reaches the push service.
    browser.call("open_conversation", name="alice", peer=group)
    browser.call("send", name="alice", text="muted news")
    time.sleep(QUIET_WAIT)
    assert pushes(stand_in, sub_id) == []

    # A message in the conversation with the default policy: one push, content-free.
    browser.call("open_conversation", name="alice", peer=bob)
    browser.call("send", name="alice", text="secret plans")
    got = wait_for_push(stand_in, sub_id)
    assert [p.get("refused") for p in got] == [None]  # VAPID and encryption passed its checks
    assert got[0]["vapid_key"] == vapid_key
    assert json.loads(got[0]["plaintext"]) == {"type": "wake"}

    # The browser delivers it to the service worker, which shows a notification.
    assert browser.call("notifications_shown", name="bob", origin=url, wait=False) == []
    browser.call("deliver_push", name="bob", origin=url, data=got[0]["plaintext"])
    shown = browser.call("notifications_shown", name="bob", origin=url)
    assert shown == [
        {
            "title": "Roost",
            "body": "New messages or invitations. Open Roost to read them.",
            "tag": "roost-wake",
        }
    ]

    # The page reported no CSP violation (registering /sw.js is allowed by script-src 'self').
    console = browser.call("requests", name="bob")["console"]
    assert not [line for line in console if "Content Security Policy" in line]


def test_turning_notifications_off_removes_the_registration(push_server, stand_in, browser):
    url = push_server.url
    signed_up(browser, "dana", url, "dana")
    sub = stand_in.subscribe(f"web-{uuid.uuid4().hex[:8]}")
    browser.call("allow_notifications", name="dana", origin=url)
    browser.call("stand_in_push_service", name="dana", endpoint=sub["endpoint"], keys=sub["keys"])
    on = browser.call("notification_settings", name="dana", on=True, policy="Muted")
    assert (on["error"], on["on"], on["policy"]) == (None, True, "Muted")
    browser.call("close_settings", name="dana")
    assert browser.call("notification_settings", name="dana")["policy"] == "Muted"

    off = browser.call("notification_settings", name="dana", on=False)
    assert (off["error"], off["status"], off["on"]) == (None, "Notifications are off.", False)
    browser.call("close_settings", name="dana")
    assert browser.call("notification_settings", name="dana")["on"] is False
