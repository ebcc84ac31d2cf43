"""Encrypted assets end to end: real ``roost serve`` processes (SQLite and PostgreSQL metadata;
filesystem and S3-compatible blob storage, the latter a moto server process) and the client
library's encrypt-upload-share-download-decrypt path."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import replace

import httpx
import pytest

from roost.client import RoostClient, RoostError
from roost.client.assets import (
    SEGMENT,
    AssetError,
    AssetReference,
    asset_usage,
    ciphertext_size,
    decrypt,
    delete_asset,
    download_asset,
    download_asset_to,
    encrypt,
    upload_asset,
)
from tests.moto_s3 import MotoS3, moto_s3  # noqa: F401 - session fixture

from .conftest import Users
from .harness import TEST_ENV, ServerProcess

KIB = 1024
MAX_ASSET = 600 * KIB
QUOTA = 1000 * KIB
PLAIN_MAX = MAX_ASSET - 16 * (MAX_ASSET // SEGMENT + 1)  # largest plaintext under the cap


class AssetServer:
    def __init__(self, server: ServerProcess, backend: str, moto: MotoS3 | None, bucket: str):
        self.server = server
        self.backend = backend
        self.moto = moto
        self.bucket = bucket

    @property
    def url(self) -> str:
        return self.server.url

    def blob_exists(self, asset_id: str) -> bool:
        if self.moto is not None:
            return f"assets/{asset_id}" in self.moto.keys(self.bucket)
        return (self.server.data_dir / "assets" / asset_id[:2] / asset_id).exists()


@pytest.fixture(
    scope="module",
    params=[
        ("sqlite", "filesystem"),
        ("postgresql", "filesystem"),
        ("sqlite", "s3"),
        ("postgresql", "s3"),
    ],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def asset_server(request, tmp_path_factory):
    engine, backend = request.param
    env = {
        "ROOST_LIMITS_MAX_ASSET_BYTES": str(MAX_ASSET),
        "ROOST_LIMITS_ASSET_QUOTA_BYTES": str(QUOTA),
        "ROOST_MAINTENANCE_INTERVAL_SECONDS": "1",
    }
    moto, bucket = None, ""
    if backend == "s3":
        moto = request.getfixturevalue("moto_s3")
        bucket = moto.new_bucket()
        env.update(moto.env(bucket))
    database_url = request.getfixturevalue("postgres_database")() if engine == "postgresql" else ""
    data_dir = tmp_path_factory.mktemp(f"assets-{engine}-{backend}")
    server = ServerProcess(engine, data_dir, database_url, env).start()
    yield AssetServer(server, backend, moto, bucket)
    server.stop()


@pytest.fixture
async def users(asset_server: AssetServer):
    u = Users(asset_server.url)
    yield u
    await u.aclose()


async def test_share_an_encrypted_file(asset_server: AssetServer, users: Users, tmp_path):
    alice = await users.new("alice")
    bob = await users.new("bob")
    # bigger than the server's global body cap: uploads stream past it
    assert int(TEST_ENV["ROOST_LIMITS_MAX_BODY_BYTES"]) < MAX_ASSET
    plaintext = secrets.token_bytes(PLAIN_MAX)
    src = tmp_path / "photo.jpg"
    src.write_bytes(plaintext)
    ref = await upload_asset(alice, src, media_type="image/jpeg", expires_in=600)
    assert ref.name == "photo.jpg" and ref.size == len(plaintext)
    assert asset_server.blob_exists(ref.asset_id)

    # the reference travels inside an MLS message as bytes; anyone holding it can fetch
    received = AssetReference.from_bytes(ref.to_bytes())
    assert received == ref and received.domain == bob.state.home_domain
    assert await download_asset(bob, received) == plaintext
    out = tmp_path / "copy.jpg"
    await download_asset_to(bob, received, out)
    assert out.read_bytes() == plaintext

    # the server holds only ciphertext: exactly the encrypted size, no plaintext in it; a local
    # asset needs no account, by the domain route or the first format's route alike
    async with httpx.AsyncClient(base_url=asset_server.url) as http:
        for path in (
            f"/v1/assets/{ref.domain}/{ref.asset_id}",
            f"/v1/assets/{ref.asset_id}",
        ):
            r = await http.get(path, headers={"Roost-Capability": ref.capability})
            assert r.status_code == 200
            assert len(r.content) == ciphertext_size(len(plaintext))
            assert plaintext[:64] not in r.content
            assert decrypt(ref.key, r.content) == plaintext

    usage = await asset_usage(alice)
    assert usage["used_bytes"] == ciphertext_size(len(plaintext))
    await delete_asset(alice, ref)
    with pytest.raises(RoostError) as e:
        await download_asset(bob, received)
    assert (e.value.status, e.value.code) == (404, "asset_not_found")
    assert not asset_server.blob_exists(ref.asset_id)


async def test_size_cap_and_quota(asset_server: AssetServer, users: Users):
    alice = await users.new("alice")
    with pytest.raises(RoostError) as e:
        await upload_asset(alice, secrets.token_bytes(PLAIN_MAX + 1))
    assert (e.value.status, e.value.code) == (413, "asset_too_large")
    first = await upload_asset(alice, secrets.token_bytes(PLAIN_MAX))
    left = QUOTA - ciphertext_size(PLAIN_MAX)
    with pytest.raises(RoostError) as e:
        await upload_asset(alice, secrets.token_bytes(left))  # ciphertext adds tags: too big
    assert (e.value.status, e.value.code) == (413, "quota_exceeded")
    # a raw streamed upload without a declared length is cut off as well
    token = await alice.bearer_token()

    async def stream():
        for _ in range(20):
            yield b"\0" * (64 * KIB)

    async with httpx.AsyncClient(base_url=asset_server.url, timeout=30) as http:
        r = await http.post(
            "/v1/assets",
            content=stream(),
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/octet-stream",
            },
        )
    assert r.status_code == 413 and r.json()["code"] in ("quota_exceeded", "asset_too_large")
    assert (await asset_usage(alice))["used_bytes"] == ciphertext_size(PLAIN_MAX)
    await delete_asset(alice, first)
    assert (await asset_usage(alice))["used_bytes"] == 0
    await upload_asset(alice, secrets.token_bytes(left - 1000))


async def test_guessed_capabilities_are_refused(asset_server: AssetServer, users: Users):
    alice = await users.new("alice")
    ref = await upload_asset(alice, b"the plans")
    async with httpx.AsyncClient(base_url=asset_server.url) as http:
        for asset_id, capability in (
            (ref.asset_id, secrets.token_urlsafe(32)),
            (secrets.token_hex(16), ref.capability),
            (ref.asset_id, ""),
        ):
            for path in (f"/v1/assets/{asset_id}", f"/v1/assets/{ref.domain}/{asset_id}"):
                r = await http.get(path, headers={"Roost-Capability": capability})
                assert r.status_code == 404
                assert r.headers["content-type"].startswith("application/problem+json")
                assert r.json()["code"] == "asset_not_found"
    # a reference with a wrong key (or tampered ciphertext) never yields plaintext
    with pytest.raises(AssetError):
        await download_asset(alice, replace(ref, key=secrets.token_bytes(32)))
    assert await download_asset(alice, ref) == b"the plans"


async def test_expiry_and_collection(asset_server: AssetServer, users: Users):
    alice = await users.new("alice")
    ref = await upload_asset(alice, b"self-destructing", expires_in=1)
    keep = await upload_asset(alice, b"kept", expires_in=600)
    await asyncio.sleep(1.2)
    with pytest.raises(RoostError) as e:
        await download_asset(alice, ref)
    assert (e.value.status, e.value.code) == (404, "asset_not_found")
    # the periodic sweep (every second here) removes the blob and frees the quota
    deadline = time.monotonic() + 20
    while asset_server.blob_exists(ref.asset_id):
        assert time.monotonic() < deadline, "the expired blob was not collected"
        await asyncio.sleep(0.3)
    while (await asset_usage(alice))["used_bytes"] != ciphertext_size(len(b"kept")):
        assert time.monotonic() < deadline, "the quota was not given back"
        await asyncio.sleep(0.3)
    assert asset_server.blob_exists(keep.asset_id)
    assert await download_asset(alice, keep) == b"kept"


async def test_deleting_the_account_collects_its_assets(asset_server: AssetServer, users: Users):
    alice = await users.new("alice")
    bob = await users.new("bob")
    ref = await upload_asset(alice, b"bye")
    await alice.delete_account()
    with pytest.raises(RoostError):
        await download_asset(bob, ref)
    deadline = time.monotonic() + 20
    while asset_server.blob_exists(ref.asset_id):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.3)


# ---- the client's segmented encryption (no server) -------------------------------------------
@pytest.mark.parametrize(
    "size", [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT, 3 * SEGMENT + 7]
)
def test_segmented_encryption_round_trips(size: int) -> None:
    key = secrets.token_bytes(32)
    plaintext = secrets.token_bytes(size)
    ciphertext = encrypt(key, plaintext)
    assert len(ciphertext) == ciphertext_size(size)
    assert decrypt(key, ciphertext) == plaintext


def test_segmented_encryption_detects_tampering() -> None:
    key = secrets.token_bytes(32)
    ciphertext = encrypt(key, secrets.token_bytes(2 * SEGMENT + 100))
    piece = SEGMENT + 16
    for bad in (
        ciphertext[:-1],  # truncated final segment
        ciphertext[: 2 * piece],  # final segment dropped: a full piece is never final
        ciphertext[:piece] + ciphertext[:piece] + ciphertext[2 * piece :],  # duplicated
        ciphertext[piece : 2 * piece] + ciphertext[:piece] + ciphertext[2 * piece :],  # swapped
        ciphertext + b"\0" * 16,  # extended
        bytes([ciphertext[0] ^ 1]) + ciphertext[1:],  # flipped bit
        b"",
    ):
        with pytest.raises(AssetError):
            decrypt(key, bad)
    with pytest.raises(AssetError):
        decrypt(secrets.token_bytes(32), ciphertext)


def test_reference_rejects_malformed_input() -> None:
    good = AssetReference("h.test", "ab" * 16, "c", b"k" * 32, 3, 0).to_json()
    assert good["type"] == "roost.asset.v2" and good["domain"] == "h.test"
    assert "server" not in good
    for broken in (
        {**good, "type": "other"},
        {**good, "key": "AAAA"},
        {**good, "size": -1},
        {**good, "domain": ""},
        {k: v for k, v in good.items() if k != "capability"},
        {k: v for k, v in good.items() if k != "domain"},
        # the first format names a server URL: one without a host names no domain
        {**{k: v for k, v in good.items() if k != "domain"}, "type": "roost.asset.v1"},
        {**good, "type": "roost.asset.v1", "server": "not a url"},
    ):
        with pytest.raises(ValueError):
            AssetReference.from_json(broken)
    with pytest.raises(ValueError):
        AssetReference.from_bytes(b"not json")
    assert RoostClient  # the reference needs no client to be parsed


def test_first_format_references_are_still_read() -> None:
    """``roost.asset.v1`` named the uploader's server URL: its host is taken as the domain (the
    own server's URL is recognised by the client, see test_legacy_reference_to_own_server)."""
    good = AssetReference("h.test", "ab" * 16, "c", b"k" * 32, 3, 0).to_json()
    legacy = {k: v for k, v in good.items() if k != "domain"}
    legacy.update(type="roost.asset.v1", server="https://Roost.H.test:8443/")
    ref = AssetReference.from_json(legacy)
    assert ref.domain == "roost.h.test" and ref.legacy_server == "https://Roost.H.test:8443/"
    # written out again, it is a reference of the current format
    assert "server" not in ref.to_json() and ref.to_json()["domain"] == "roost.h.test"


async def test_legacy_reference_to_own_server(asset_server: AssetServer, users: Users):
    """A first-format reference a client still holds, naming its own server's URL (whose host
    is no domain here: 127.0.0.1), is downloaded from its own server."""
    alice = await users.new("alice")
    bob = await users.new("bob")
    ref = await upload_asset(alice, b"an old photo")
    legacy = {k: v for k, v in ref.to_json().items() if k != "domain"}
    legacy.update(type="roost.asset.v1", server=asset_server.url)
    old = AssetReference.from_bytes(json.dumps(legacy).encode())
    assert await download_asset(bob, old) == b"an old photo"
