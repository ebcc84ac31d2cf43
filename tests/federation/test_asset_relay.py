"""What another domain can make this server do when it relays an asset (federation/
asset_flows.py): the ciphertext streams through as it arrives (never held whole), a declared
length above this server's cap is refused before anything is relayed, a short, long, lengthless
or stalled answer breaks the download off instead of yielding a wrong or endless one.

b.test is a real ``roost serve`` process; ``x.test`` is a scripted loopback HTTP server standing
in for a misbehaving peer (it does not check b.test's signature, which the other federation
tests do)."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from roost.client import RoostError
from roost.client.assets import SEGMENT, AssetReference, download_asset, encrypt
from roost.protocol.base64url import b64u

from .harness import Federation

B, X = "b.test", "x.test"
KIB = 1024
B_MAX_ASSET = 300 * KIB
FEDERATION_TIMEOUT = 2  # seconds without a byte before b.test gives up on x.test

KEY = secrets.token_bytes(32)
PLAINTEXT = secrets.token_bytes(3 * SEGMENT + 5)
CIPHERTEXT = encrypt(KEY, PLAINTEXT)
# One asset id per behaviour of the scripted peer.
GOOD, SLOW, SHORT, LONG, TOO_BIG, NO_LENGTH, STALLS = (f"{i:x}" * 32 for i in range(1, 8))


class ScriptedPeer:
    """x.test: answers ``GET /federation/v1/assets/{id}`` as the id's script says."""

    def __init__(self) -> None:
        self.release = threading.Event()  # SLOW sends its second half once this is set
        self.second_half_sent = threading.Event()
        self.paths: list[str] = []
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                peer.paths.append(self.path)
                asset_id = self.path.rsplit("/", 1)[-1]
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if asset_id == NO_LENGTH:
                    self.end_headers()
                    self.wfile.write(CIPHERTEXT)
                    return
                declared = {
                    SHORT: len(CIPHERTEXT) + 100,
                    LONG: len(CIPHERTEXT) - 100,
                    TOO_BIG: B_MAX_ASSET + 1,
                }.get(asset_id, len(CIPHERTEXT))
                self.send_header("Content-Length", str(declared))
                self.end_headers()
                if asset_id == TOO_BIG:
                    self.wfile.write(b"\0" * (B_MAX_ASSET + 1))
                elif asset_id == SLOW:
                    half = len(CIPHERTEXT) // 2
                    self.wfile.write(CIPHERTEXT[:half])
                    self.wfile.flush()
                    peer.release.wait(20)
                    peer.second_half_sent.set()
                    self.wfile.write(CIPHERTEXT[half:])
                elif asset_id == STALLS:
                    self.wfile.write(CIPHERTEXT[:100])
                    self.wfile.flush()
                    time.sleep(4 * FEDERATION_TIMEOUT)
                else:
                    self.wfile.write(CIPHERTEXT)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def peer() -> Iterator[ScriptedPeer]:
    p = ScriptedPeer()
    yield p
    p.close()


@pytest.fixture(scope="module")
def home(make_federation, peer: ScriptedPeer) -> Federation:
    return make_federation(
        domains=(B,),
        extra_env={
            "ROOST_FEDERATION_RESOLVE": f"{X}=127.0.0.1:{peer.port}",
            "ROOST_FEDERATION_INSECURE_DOMAINS": X,
            "ROOST_FEDERATION_TIMEOUT_SECONDS": str(FEDERATION_TIMEOUT),
            "ROOST_LIMITS_MAX_ASSET_BYTES": str(B_MAX_ASSET),
        },
    )


@pytest.fixture
async def bob(home: Federation):
    yield await home.users(B).new("bob")
    await home.aclose_users()


def ref(asset_id: str) -> AssetReference:
    return AssetReference(X, asset_id, b64u(secrets.token_bytes(32)), KEY, len(PLAINTEXT), 0)


async def test_a_well_behaved_peer_is_relayed(bob, peer: ScriptedPeer):
    assert await download_asset(bob, ref(GOOD)) == PLAINTEXT
    assert peer.paths[-1] == f"/federation/v1/assets/{GOOD}"


async def test_the_ciphertext_streams_through_as_it_arrives(home: Federation, bob, peer):
    """The first half reaches the client while x.test still holds back the second."""
    headers = {
        "Authorization": f"Bearer {await bob.bearer_token()}",
        "Roost-Capability": ref(SLOW).capability,
    }
    async with (
        httpx.AsyncClient(base_url=home[B].url, timeout=30) as http,
        http.stream("GET", f"/v1/assets/{X}/{SLOW}", headers=headers) as r,
    ):
        assert r.status_code == 200
        assert int(r.headers["content-length"]) == len(CIPHERTEXT)
        received = bytearray()
        chunks = r.aiter_raw()
        while len(received) < len(CIPHERTEXT) // 2:
            received += await anext(chunks)
        # a relay holding the whole answer would have let nothing through before x.test gave
        # up waiting (20 s) and sent the rest
        assert not peer.second_half_sent.is_set()
        peer.release.set()
        async for chunk in chunks:
            received += chunk
    assert bytes(received) == CIPHERTEXT


async def test_too_large_a_declared_length_is_refused_before_relaying(bob):
    with pytest.raises(RoostError) as e:
        await download_asset(bob, ref(TOO_BIG))
    assert (e.value.status, e.value.code) == (502, "federation_unavailable")


async def test_an_answer_without_its_length_is_refused(bob):
    with pytest.raises(RoostError) as e:
        await download_asset(bob, ref(NO_LENGTH))
    assert (e.value.status, e.value.code) == (502, "federation_unavailable")


@pytest.mark.parametrize("asset_id", [SHORT, LONG, STALLS], ids=["short", "long", "stalls"])
async def test_a_misbehaving_answer_breaks_the_download_off(bob, asset_id: str):
    started = time.monotonic()
    with pytest.raises(RoostError):  # a broken transfer, never a wrong plaintext
        await download_asset(bob, ref(asset_id))
    assert time.monotonic() - started < 3 * FEDERATION_TIMEOUT
