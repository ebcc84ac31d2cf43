"""The homeserver's signed notices as lines in a conversation: a member's display-name change
and an account deletion. A notice whose signature does not verify is not shown."""

from __future__ import annotations

from .conftest import PASSWORD, unique


def _converse(browser, alice: str, bob: str) -> None:
    """alice and bob register, alice starts a conversation of two, bob accepts, and bob reads
    alice's first message."""
    assert browser.sign_in("alice", alice, PASSWORD, register=True)["error"] is None
    assert browser.sign_in("bob", bob, PASSWORD, register=True)["error"] is None
    assert browser.call("start", name="alice", peer=f"{bob}@localhost") == {"error": None}
    browser.call("invitations", name="bob", wait_for=alice)
    assert browser.call("accept", name="bob", **{"from": f"{alice}@localhost"}) == {"error": None}
    browser.call("send", name="alice", text="hello")
    browser.call("messages", name="bob", wait_for="hello")


def test_renames_and_deletions_show_only_when_the_signature_verifies(web_server, browser):
    url = web_server.url
    alice, bob = unique("alice"), unique("bob")
    bob_id = f"{bob}@localhost"
    browser.open("alice", url)
    browser.open("bob", url)
    # alice's socket delivers notices that mention "Mallory" with a damaged signature.
    browser.call("tamper_notices", name="alice", containing="Mallory")
    _converse(browser, alice, bob)

    assert browser.call("settings", name="bob", display_name="Mallory")["error"] is None
    # bob's own page gets the (untouched) notice too.
    browser.call("notices", name="bob", wait_for="Mallory")
    assert browser.call("settings", name="bob", display_name="Bobby")["error"] is None
    # alice's page got both, in order; only the one whose signature verifies is shown.
    browser.call("notices", name="alice", wait_for="Bobby")
    assert browser.call("notices", name="alice") == [
        f"{bob_id} changed their display name to “Bobby”."
    ]
    assert browser.call("notices", name="bob") == [
        "You changed your display name to “Mallory”.",
        "You changed your display name to “Bobby”.",
    ]

    assert browser.call("delete_account", name="bob")["error"] is None
    browser.call("notices", name="alice", wait_for="deleted")
    assert browser.call("notices", name="alice") == [
        f"{bob_id} changed their display name to “Bobby”.",
        f"{bob_id} deleted their account.",
    ]
    # The lines are part of the stored history: a reload shows them again.
    assert browser.call("reload", name="alice")["error"] is None
    browser.call("open_conversation", name="alice", peer=bob_id)
    assert browser.call("notices", name="alice") == [
        f"{bob_id} changed their display name to “Bobby”.",
        f"{bob_id} deleted their account.",
    ]
    assert [m["text"] for m in browser.call("messages", name="alice")] == ["hello"]


def test_notices_sealed_under_the_group_key_show_one_under_another_key_does_not(
    web_server, browser
):
    """Queue item type 3: the page opens a notice sealed under the conversation's group key and
    shows it as one in the clear; one sealed under another key is dropped, with the reason in
    the console."""
    url = web_server.url
    alice, bob = unique("alice"), unique("bob")
    bob_id = f"{bob}@localhost"
    browser.open("alice", url)
    browser.open("bob", url)
    # alice's socket delivers every notice sealed, those that mention "Mallory" under a key
    # that is not the group's.
    browser.call("seal_notices", name="alice", wrong_key_containing="Mallory")
    _converse(browser, alice, bob)

    assert browser.call("settings", name="bob", display_name="Mallory")["error"] is None
    assert browser.call("settings", name="bob", display_name="Bobby")["error"] is None
    browser.call("notices", name="alice", wait_for="Bobby")
    assert browser.call("notices", name="alice") == [
        f"{bob_id} changed their display name to “Bobby”."
    ]
    sealed = browser.call("sealed_notices", name="alice")
    assert sealed["right"] >= 1 and sealed["wrong"] >= 1
    console = browser.call("requests", name="alice")["console"]
    assert any(
        "a server notice was dropped: it is sealed under another key than the group's" in line
        for line in console
    ), console
