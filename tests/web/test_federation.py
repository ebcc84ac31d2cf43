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


def test_a_page_finds_a_user_of_another_domain_in_its_directory(domains, browser):
    """ "name@domain" in the search box searches that domain's directory (through the page's
    own homeserver); a result's Start button starts the conversation across domains."""
    tag = unique("t")  # in the display names below, so the search finds only these users
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    alice_id, bob_id = f"{alice}@a.test", f"{bob}@b.test"
    browser.open("alice", domains["a.test"].url)
    browser.open("bob", domains["b.test"].url)
    browser.open("carol", domains["b.test"].url)
    assert browser.sign_in("alice", alice, PASSWORD, register=True)["me"] == alice_id
    assert browser.sign_in("bob", bob, PASSWORD, register=True)["me"] == bob_id
    assert browser.sign_in("carol", carol, PASSWORD, register=True)["error"] is None
    # bob is listed on b.test; carol has a matching name but is not listed.
    r = browser.call("settings", name="bob", display_name=f"Bob {tag}", discoverable=True)
    assert r["error"] is None
    r = browser.call("settings", name="carol", display_name=f"Carol {tag}", discoverable=False)
    assert r["error"] is None
    browser.call("close_settings", name="bob")

    got = browser.call("find", name="alice", query=f"{tag}@b.test")
    assert got == {
        "error": None,
        "status": "1 found on b.test.",
        "found": [f"Bob {tag} ({bob_id})"],
    }
    # Without the domain: a.test's own directory, which does not list bob.
    assert browser.call("find", name="alice", query=tag)["found"] == []
    nobody = browser.call("find", name="alice", query=f"{carol}@B.TEST")
    assert nobody == {
        "error": None,
        "status": "Nobody listed in the directory on b.test matches.",
        "found": [],
    }
    # A domain the server cannot reach: said in words, the page goes on.
    err = browser.call("find", name="alice", query=f"{tag}@nowhere.test")
    assert err["error"] and "nowhere.test" in err["error"]

    browser.call("find", name="alice", query=f"{bob}@b.test")
    assert browser.call("start_found", name="alice", user=bob_id) == {"error": None}
    browser.call("invitations", name="bob", wait_for=alice_id)
    assert browser.call("accept", name="bob", **{"from": alice_id}) == {"error": None}
    browser.call("send", name="alice", text="found you on b.test")
    got = browser.call("messages", name="bob", wait_for="found you on b.test")
    assert got[-1] == {"from": alice_id, "text": "found you on b.test", "mine": False}
