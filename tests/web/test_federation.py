"""Browser users of two domains: a page on a.test and a page on b.test (two ``roost serve``
processes that federate over loopback) connect by exact user id, write to each other live, and
both see the group's notices, which a.test's homeserver signs (the group lives there): b.test's
page checks them against a.test's external sender, certified by a.test's AS."""

from __future__ import annotations

import pytest

from tests.federation.harness import make_federation

from .conftest import PASSWORD, unique


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    fed = make_federation(tmp_path_factory.mktemp("webfed"), ("a.test", "b.test"), policy="peers")
    yield fed
    fed.stop()


def test_users_of_two_domains_talk_and_see_each_others_notices(domains, browser):
    alice, bob = unique("alice"), unique("bob")
    alice_id, bob_id = f"{alice}@a.test", f"{bob}@b.test"
    browser.open("alice", domains["a.test"].url)
    browser.open("bob", domains["b.test"].url)
    assert browser.sign_in("alice", alice, PASSWORD, register=True)["me"] == alice_id
    assert browser.sign_in("bob", bob, PASSWORD, register=True)["me"] == bob_id
    browser.call("text", name="bob", selector="#status", wait_for="Online")

    assert browser.call("start", name="alice", peer=bob_id) == {"error": None}
    browser.call("invitations", name="bob", wait_for=alice_id)
    assert browser.call("accept", name="bob", **{"from": alice_id}) == {"error": None}

    browser.call("send", name="alice", text="hello from a.test")
    got = browser.call("messages", name="bob", wait_for="hello from a.test")
    assert got == [{"from": alice_id, "text": "hello from a.test", "mine": False}]
    browser.call("send", name="bob", text="hello from b.test")
    got = browser.call("messages", name="alice", wait_for="hello from b.test")
    assert got[-1] == {"from": bob_id, "text": "hello from b.test", "mine": False}

    # The group is a.test's: its homeserver signs the notice of bob's new name for both pages.
    assert browser.call("settings", name="bob", display_name="Bobby")["error"] is None
    browser.call("close_settings", name="bob")
    assert browser.call("notices", name="alice", wait_for="Bobby") == [
        f"{bob_id} changed their display name to “Bobby”."
    ]
    assert browser.call("notices", name="bob", wait_for="Bobby") == [
        "You changed your display name to “Bobby”."
    ]
