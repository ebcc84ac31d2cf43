"""Settings in the page: a user changes their display name and directory listing (kept by the
server, so a reloaded page shows them again), and deletes their account after a confirmation
step; the page then forgets the device and the user name is gone for good."""

from __future__ import annotations

from .conftest import PASSWORD, signed_up


def test_display_name_and_directory_listing_are_saved_on_the_server(web_server, browser):
    signed_up(browser, "alice", web_server.url, "alice")

    assert browser.call("settings", name="alice") == {
        "error": None,
        "display_name": "",
        "discoverable": False,
    }
    saved = browser.call(
        "settings", name="alice", display_name="  Alice Example ", discoverable=True
    )
    assert saved == {"error": None, "display_name": "Alice Example", "discoverable": True}

    # A reloaded page reads them from the server again.
    assert browser.call("reload", name="alice")["error"] is None
    assert browser.call("settings", name="alice") == {
        "error": None,
        "display_name": "Alice Example",
        "discoverable": True,
    }
    # An empty name clears it; the listing can be switched off again.
    cleared = browser.call("settings", name="alice", display_name="", discoverable=False)
    assert cleared == {"error": None, "display_name": "", "discoverable": False}
    browser.call("close_settings", name="alice")
    assert browser.call("reload", name="alice")["error"] is None
    assert browser.call("settings", name="alice") == {
        "error": None,
        "display_name": "",
        "discoverable": False,
    }


def test_deleting_the_account_asks_first_then_forgets_everything(web_server, browser):
    alice = signed_up(browser, "alice", web_server.url, "alice")

    # Cancel at the confirmation step: nothing happens.
    r = browser.call("delete_account", name="alice", confirm=False)
    assert "for good" in r["warning"]
    assert browser.call("reload", name="alice") == {"error": None, "me": f"{alice}@localhost"}

    r = browser.call("delete_account", name="alice")
    assert r["error"] is None
    assert r["status"] == "Your account was deleted."
    # The page forgot the device: a reload shows the log-in form, with nothing to resume.
    assert browser.call("reload", name="alice", signed_out=True) == {"chat": False, "error": None}
    stored = browser.call("stored", name="alice")["roost/device"]
    assert [k for k, _ in stored] == ["key"]
    # The account is gone on the server, and its name cannot be taken again.
    assert browser.sign_in("alice", alice, PASSWORD)["error"] is not None
    assert browser.sign_in("alice", alice, PASSWORD, register=True) == {
        "error": "That user name is already taken. Pick another one, or log in.",
    }
