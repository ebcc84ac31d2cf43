"""Files in the page: encrypted in the page, uploaded through the assets API, sent as a
``roost.asset.v2`` reference, downloaded through the recipient's own homeserver and decrypted;
byte-exact between two pages and in both directions with a ``roost.client`` user."""

from __future__ import annotations

import os
from dataclasses import replace
from urllib.parse import urlsplit

from roost.client.assets import AssetReference, delete_asset, download_asset, upload_asset
from tests.e2e.helpers import sync_until
from tests.integration.harness import ServerProcess

from .conftest import python_user, signed_up, talking_pair

SEGMENT = 64 * 1024


def _file(tmp_path, name: str, size: int) -> tuple[str, bytes]:
    data = os.urandom(size)
    path = tmp_path / name
    path.write_bytes(data)
    return str(path), data


def test_a_file_round_trips_between_two_pages(web_server, browser, tmp_path):
    alice, _ = talking_pair(browser, web_server.url)
    # Three full segments and a partial last one.
    path, data = _file(tmp_path, "photo.bin", 3 * SEGMENT + 1234)
    sent = browser.call("send_file", name="alice", path=path)
    assert sent == {"error": None, "status": "Sent photo.bin.", "progress": 1}

    got = browser.call("messages", name="bob", wait_for="photo.bin")
    assert got[-1] == {
        "from": f"{alice}@localhost",
        "text": "File: photo.bin (193 KB)",
        "mine": False,
    }
    saved = tmp_path / "saved.bin"
    r = browser.call("download", name="bob", file="photo.bin", into=str(saved))
    assert r == {"error": None, "status": "Downloaded and decrypted.", "suggested": "photo.bin"}
    assert saved.read_bytes() == data
    # The sender can fetch its own file again too.
    again = tmp_path / "again.bin"
    assert (
        browser.call("download", name="alice", file="photo.bin", into=str(again))["error"] is None
    )
    assert again.read_bytes() == data
    # Nothing left the page's origin (the saved copy is a blob: URL of the page), and no CSP
    # violation, script error or failed request showed in the console.
    for name in ("alice", "bob"):
        seen = browser.call("requests", name=name)
        origin = urlsplit(web_server.url).netloc
        assert [
            u
            for u in seen["requests"]
            if urlsplit(u).scheme != "blob" and urlsplit(u).netloc != origin
        ] == []
        assert [
            c
            for c in seen["console"]
            if "Content Security Policy" in c or c.startswith(("error:", "pageerror"))
        ] == []


async def test_files_between_a_page_and_a_python_client(web_server, browser, tmp_path):
    url = web_server.url
    bob = await python_user(url, "py")
    try:
        signed_up(browser, "alice", url, "web")
        assert browser.call("start", name="alice", peer=bob.user_id) == {"error": None}
        [conn] = [c for c in await bob.client.connections() if c.state == "pending"]
        _, joined = await bob.groups.accept_connection(conn.connection_id)
        assert joined is not None
        gid = joined.group_id
        browser.call("text", name="alice", selector="#conversation-status", wait_for="End-to-end")

        # Page to roost.client: exactly two segments, so the last one is empty.
        path, data = _file(tmp_path, "report.pdf", 2 * SEGMENT)
        assert browser.call("send_file", name="alice", path=path)["error"] is None
        event = await sync_until(bob, lambda e: e.kind == "message")
        ref = AssetReference.from_bytes(event.data)
        assert (ref.name, ref.size, ref.domain) == ("report.pdf", len(data), "localhost")
        assert await download_asset(bob.client, ref) == data

        # roost.client to the page.
        back = os.urandom(SEGMENT + 7)
        ref = await upload_asset(bob.client, back, name="reply.bin")
        await bob.groups.send(gid, ref.to_bytes())
        browser.call("messages", name="alice", wait_for="reply.bin")
        saved = tmp_path / "reply.bin"
        r = browser.call("download", name="alice", file="reply.bin", into=str(saved))
        assert r["error"] is None
        assert saved.read_bytes() == back

        # A reference whose key does not fit, and a file its sender withdrew: said in words.
        bad = replace(await upload_asset(bob.client, b"x" * 100, name="bad.bin"), key=bytes(32))
        await bob.groups.send(gid, bad.to_bytes())
        browser.call("messages", name="alice", wait_for="bad.bin")
        r = browser.call("download", name="alice", file="bad.bin", into=str(tmp_path / "bad"))
        assert r == {"error": "The file does not decrypt: it was damaged or tampered with."}
        gone = await upload_asset(bob.client, b"y" * 100, name="gone.bin")
        await delete_asset(bob.client, gone)
        await bob.groups.send(gid, gone.to_bytes())
        browser.call("messages", name="alice", wait_for="gone.bin")
        r = browser.call("download", name="alice", file="gone.bin", into=str(tmp_path / "gone"))
        assert r == {"error": "The file is no longer available: it expired or was withdrawn."}
    finally:
        await bob.client.aclose()


def test_a_file_over_the_limit_is_refused_in_words(browser, tmp_path):
    srv = ServerProcess(
        "sqlite", tmp_path / "srv", extra_env={"ROOST_LIMITS_MAX_ASSET_BYTES": "100000"}
    )
    srv.start()
    try:
        talking_pair(browser, srv.url)
        path, _ = _file(tmp_path, "big.iso", 150_000)
        r = browser.call("send_file", name="alice", path=path)
        assert r["error"] == ("big.iso is too big: 146 KB. This server takes files up to 98 KB.")
        path, data = _file(tmp_path, "small.txt", 1000)
        assert browser.call("send_file", name="alice", path=path)["error"] is None
        saved = tmp_path / "small-saved.txt"
        assert (
            browser.call("download", name="bob", file="small.txt", into=str(saved))["error"] is None
        )
        assert saved.read_bytes() == data
    finally:
        srv.stop()
