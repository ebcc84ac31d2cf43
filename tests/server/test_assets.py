"""Asset service through the HTTP API (in-process app), on SQLite and PostgreSQL metadata and on
both storage backends: the filesystem and an S3-compatible server (moto, a real process)."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from roost.server.assets.routes import CAPABILITY_HEADER
from roost.server.assets.service import AssetService
from roost.server.assets.storage import FilesystemStore
from roost.server.assets.tables import asset_usage, assets
from roost.server.config import build_config
from tests.moto_s3 import MotoS3, moto_s3  # noqa: F401 - session fixture

from .conftest import Server, running_server

KIB = 1024
MAX_ASSET = 10 * 1024 * KIB  # above one S3 part (8 MiB), so big uploads go multipart
QUOTA = 12 * 1024 * KIB
MAX_BODY = 64 * KIB  # the global body cap: uploads must not be bound by it
OCTET = {"Content-Type": "application/octet-stream"}


@pytest.fixture(params=["filesystem", "s3"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def srv(db_url: str, backend: str, tmp_path: Path, request) -> AsyncIterator[Server]:
    env: dict[str, str] = {}
    if backend == "s3":
        moto: MotoS3 = request.getfixturevalue("moto_s3")
        env = moto.env(moto.new_bucket())
    raw = {
        "database_url": db_url,
        "data_dir": str(tmp_path),
        "limits": {
            "registrations_per_minute": 1000,
            "max_body_bytes": MAX_BODY,
            "max_message_bytes": MAX_BODY,
            "max_asset_bytes": MAX_ASSET,
            "asset_quota_bytes": QUOTA,
            "asset_default_ttl_seconds": 3600,
            "asset_max_ttl_seconds": 86400,
        },
    }
    async with running_server(build_config(raw, env)) as s:
        yield s


def service(srv: Server) -> AssetService:
    return srv.app.state.services.assets  # type: ignore[attr-defined]


async def blob_exists(srv: Server, asset_id: str) -> bool:
    blob = await service(srv).store.get(asset_id)
    if blob is None:
        return False
    async for _ in blob.chunks:  # drain so the backend closes the stream
        pass
    return True


async def stored_blobs(srv: Server) -> int:
    store = service(srv).store
    if isinstance(store, FilesystemStore):
        return sum(
            len(files) for root, _, files in os.walk(store.root) if not root.endswith(".tmp")
        )
    s3 = store.client
    answer = await asyncio.to_thread(s3.list_objects_v2, Bucket=store.settings.bucket)
    return len(answer.get("Contents", []))


async def upload(srv: Server, headers: dict[str, str], data: bytes, **params: object):
    return await srv.http.post(
        "/v1/assets", content=data, headers={**headers, **OCTET}, params=params
    )


async def download(srv: Server, asset_id: str, capability: str):
    return await srv.http.get(f"/v1/assets/{asset_id}", headers={CAPABILITY_HEADER: capability})


async def usage(srv: Server, headers: dict[str, str]) -> int:
    r = await srv.http.get("/v1/assets/usage", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["used_bytes"]


def assert_problem(r, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == code


async def chunked(data: bytes, size: int = 16 * KIB) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def test_upload_and_download_round_trip(srv: Server) -> None:
    alice = await srv.user("alice")
    bob = await srv.user("bob")
    for data in (b"\x00", secrets.token_bytes(300 * KIB), secrets.token_bytes(9 * 1024 * KIB)):
        r = await upload(srv, alice.headers, data)
        assert r.status_code == 201, r.text
        out = r.json()
        assert out["size"] == len(data)
        assert r.headers["location"] == f"/v1/assets/{out['asset_id']}"
        assert len(bytes.fromhex(out["asset_id"])) == 16  # 128-bit id
        assert abs(out["expires_at"] - (srv.clock.now + 3600)) <= 1  # the default lifetime
        # anyone holding the capability fetches it, with or without an account
        for headers in ({}, bob.headers):
            got = await srv.http.get(
                f"/v1/assets/{out['asset_id']}",
                headers={**headers, CAPABILITY_HEADER: out["capability"]},
            )
            assert got.status_code == 200
            assert got.content == data
            assert got.headers["content-type"] == "application/octet-stream"
            assert got.headers["cache-control"] == "private, no-store"
    assert await usage(srv, alice.headers) == 1 + 300 * KIB + 9 * 1024 * KIB
    assert await usage(srv, bob.headers) == 0
    r = await srv.http.get("/v1/assets/usage", headers=alice.headers)
    assert r.json()["quota_bytes"] == QUOTA and r.json()["max_asset_bytes"] == MAX_ASSET


async def test_streamed_upload_without_content_length(srv: Server) -> None:
    alice = await srv.user("alice")
    data = secrets.token_bytes(200 * KIB)
    r = await srv.http.post("/v1/assets", content=chunked(data), headers={**alice.headers, **OCTET})
    assert r.status_code == 201, r.text
    got = await download(srv, r.json()["asset_id"], r.json()["capability"])
    assert got.content == data


async def test_capability_is_stored_hashed(srv: Server) -> None:
    alice = await srv.user("alice")
    out = (await upload(srv, alice.headers, b"ciphertext")).json()
    async with service(srv).db.engine.connect() as conn:
        row = (await conn.execute(sa.select(assets).where(assets.c.id == out["asset_id"]))).one()
    assert out["capability"].encode() not in repr(tuple(row)).encode()
    assert len(row.capability_hash) == 32


async def test_no_stored_row_names_the_uploader(srv: Server) -> None:
    """The asset row keeps the uploader only sealed (bound to the asset id); the quota row
    names the user but no asset. The uploader still deletes it, and gets the room back."""
    alice = await srv.user("alice")
    out = (await upload(srv, alice.headers, b"whose is this?")).json()
    async with service(srv).db.engine.connect() as conn:
        row = (await conn.execute(sa.select(assets))).one()
        quota = (await conn.execute(sa.select(asset_usage))).all()
    stored = repr(tuple(row)).encode() + bytes(row.owner_seal)
    for who in (alice.user_uuid, alice.client.client_uuid):
        assert who.encode() not in stored
        assert who.replace("-", "").encode() not in stored
    assert out["asset_id"] not in repr(quota)
    assert await usage(srv, alice.headers) == len(b"whose is this?")
    r = await srv.http.delete(f"/v1/assets/{out['asset_id']}", headers=alice.headers)
    assert r.status_code == 204
    assert await usage(srv, alice.headers) == 0


async def test_size_cap(srv: Server) -> None:
    alice = await srv.user("alice")
    too_big = secrets.token_bytes(MAX_ASSET + 1)
    # declared length: refused before the body is read
    assert_problem(await upload(srv, alice.headers, too_big), 413, "asset_too_large")
    # streamed without a length: cut off while streaming, nothing left behind
    r = await srv.http.post(
        "/v1/assets", content=chunked(too_big, 256 * KIB), headers={**alice.headers, **OCTET}
    )
    assert_problem(r, 413, "asset_too_large")
    assert await stored_blobs(srv) == 0
    assert await usage(srv, alice.headers) == 0
    async with service(srv).db.engine.connect() as conn:
        assert (await conn.scalar(sa.select(sa.func.count()).select_from(assets))) == 0
    exact = secrets.token_bytes(MAX_ASSET)
    assert (await upload(srv, alice.headers, exact)).status_code == 201


async def test_quota(srv: Server) -> None:
    alice = await srv.user("alice")
    bob = await srv.user("bob")
    first = (await upload(srv, alice.headers, secrets.token_bytes(8 * 1024 * KIB))).json()
    rest = QUOTA - 8 * 1024 * KIB
    # declared, and streamed without a length: both refused, nothing stored
    assert_problem(
        await upload(srv, alice.headers, secrets.token_bytes(rest + 1)), 413, "quota_exceeded"
    )
    r = await srv.http.post(
        "/v1/assets",
        content=chunked(secrets.token_bytes(rest + 1), 256 * KIB),
        headers={**alice.headers, **OCTET},
    )
    assert_problem(r, 413, "quota_exceeded")
    assert r.json()["quota_bytes"] == QUOTA
    assert await stored_blobs(srv) == 1
    # the quota is per user: bob still has all of his
    assert (await upload(srv, bob.headers, secrets.token_bytes(rest + 1))).status_code == 201
    # exactly the rest fits; then nothing more does
    assert (await upload(srv, alice.headers, secrets.token_bytes(rest))).status_code == 201
    assert_problem(await upload(srv, alice.headers, b"x"), 413, "quota_exceeded")
    # deleting gives the room back
    r = await srv.http.delete(f"/v1/assets/{first['asset_id']}", headers=alice.headers)
    assert r.status_code == 204
    assert await usage(srv, alice.headers) == rest
    assert (await upload(srv, alice.headers, b"x")).status_code == 201


async def test_concurrent_uploads_never_exceed_the_quota(srv: Server) -> None:
    alice = await srv.user("alice")
    size = QUOTA * 2 // 5  # two fit, a third does not
    answers = await asyncio.gather(
        *(upload(srv, alice.headers, secrets.token_bytes(size)) for _ in range(4))
    )
    codes = sorted(r.status_code for r in answers)
    assert codes == [201, 201, 413, 413], [r.text for r in answers]
    assert await usage(srv, alice.headers) == 2 * size
    assert await stored_blobs(srv) == 2


async def test_guessed_and_wrong_capabilities_are_refused(srv: Server) -> None:
    alice = await srv.user("alice")
    one = (await upload(srv, alice.headers, b"one")).json()
    two = (await upload(srv, alice.headers, b"two")).json()
    guessed = secrets.token_urlsafe(32)
    for asset_id, capability in (
        (one["asset_id"], guessed),  # a guessed secret for a real asset
        (one["asset_id"], two["capability"]),  # another asset's capability
        (one["asset_id"], one["capability"][:-1]),  # truncated
        (one["asset_id"], "!!not base64!!"),
        (one["asset_id"], ""),  # none
        (secrets.token_hex(16), one["capability"]),  # a guessed id
        ("not-an-id", one["capability"]),
    ):
        assert_problem(await download(srv, asset_id, capability), 404, "asset_not_found")
    r = await srv.http.get(f"/v1/assets/{one['asset_id']}")  # no header at all
    assert_problem(r, 404, "asset_not_found")
    assert (await download(srv, one["asset_id"], one["capability"])).content == b"one"


async def test_download_through_the_domain_route(srv: Server) -> None:
    """``GET /v1/assets/{domain}/{asset_id}``: this domain's assets as by the first route (no
    account needed); another domain's only for this server's users, under its policy."""
    alice = await srv.user("alice")
    out = (await upload(srv, alice.headers, b"plans")).json()
    home = service(srv).home_domain
    cap = {CAPABILITY_HEADER: out["capability"]}
    for domain in (home, home.upper()):
        got = await srv.http.get(f"/v1/assets/{domain}/{out['asset_id']}", headers=cap)
        assert got.status_code == 200 and got.content == b"plans"
        assert got.headers["cache-control"] == "private, no-store"
    r = await srv.http.get(f"/v1/assets/{home}/{out['asset_id']}", headers={CAPABILITY_HEADER: ""})
    assert_problem(r, 404, "asset_not_found")

    remote = f"/v1/assets/other.example/{out['asset_id']}"
    # relaying is for this server's own users: no open proxy towards other domains
    assert_problem(await srv.http.get(remote, headers=cap), 401, "unauthenticated")
    # the default policy (an empty allowlist) refuses the domain: nothing is sent
    r = await srv.http.get(remote, headers={**alice.headers, **cap})
    assert_problem(r, 403, "federation_refused")
    # what could never be a valid id or capability is answered here, without federation
    for path, capability in (
        ("/v1/assets/other.example/not-an-id", out["capability"]),
        (remote, "!!not base64!!"),
        (remote, ""),
    ):
        r = await srv.http.get(path, headers={**alice.headers, CAPABILITY_HEADER: capability})
        assert_problem(r, 404, "asset_not_found")
    r = await srv.http.get(
        f"/v1/assets/not_a_domain!/{out['asset_id']}", headers={**alice.headers, **cap}
    )
    assert_problem(r, 400, "invalid_request")


async def test_expiry_and_collection(srv: Server) -> None:
    alice = await srv.user("alice")
    short = (await upload(srv, alice.headers, b"short-lived", expires_in=60)).json()
    long = (await upload(srv, alice.headers, b"long-lived", expires_in=7200)).json()
    assert abs(short["expires_at"] - (srv.clock.now + 60)) <= 1
    srv.clock.advance(61)
    # expired: refused at once, before any sweep
    assert_problem(
        await download(srv, short["asset_id"], short["capability"]), 404, "asset_not_found"
    )
    assert await blob_exists(srv, short["asset_id"])
    assert await service(srv).sweep() == 1
    assert not await blob_exists(srv, short["asset_id"])
    assert await blob_exists(srv, long["asset_id"])
    assert await usage(srv, alice.headers) == len(b"long-lived")
    assert await service(srv).sweep() == 0  # idempotent
    assert (await download(srv, long["asset_id"], long["capability"])).content == b"long-lived"
    srv.clock.advance(7200)
    assert await service(srv).sweep() == 1
    assert await stored_blobs(srv) == 0
    assert (await service(srv).usage(alice.user_uuid)).used_bytes == 0  # the token expired


async def test_collection_through_the_periodic_sweep(srv: Server) -> None:
    from roost.server.maintenance import sweep

    alice = await srv.user("alice")
    out = (await upload(srv, alice.headers, b"bye", expires_in=1)).json()
    srv.clock.advance(2)
    removed = await sweep(srv.app.state.services)  # type: ignore[attr-defined]
    assert removed["assets"] == 1
    assert not await blob_exists(srv, out["asset_id"])


async def test_expiry_bounds(srv: Server) -> None:
    alice = await srv.user("alice")
    for bad in (0, -5, 86401):
        assert_problem(
            await upload(srv, alice.headers, b"x", expires_in=bad), 400, "invalid_expiry"
        )
    assert (await upload(srv, alice.headers, b"x", expires_in=86400)).status_code == 201
    assert await stored_blobs(srv) == 1


async def test_deletion_by_the_uploader_only(srv: Server) -> None:
    alice = await srv.user("alice")
    mallory = await srv.user("mallory")
    out = (await upload(srv, alice.headers, b"secret ciphertext")).json()
    path = f"/v1/assets/{out['asset_id']}"
    assert_problem(await srv.http.delete(path, headers=mallory.headers), 404, "asset_not_found")
    assert (await srv.http.delete(path)).status_code == 401
    assert (await download(srv, out["asset_id"], out["capability"])).status_code == 200
    assert (await srv.http.delete(path, headers=alice.headers)).status_code == 204
    assert_problem(await download(srv, out["asset_id"], out["capability"]), 404, "asset_not_found")
    assert not await blob_exists(srv, out["asset_id"])
    assert_problem(await srv.http.delete(path, headers=alice.headers), 404, "asset_not_found")


async def test_upload_needs_auth_and_octet_stream(srv: Server) -> None:
    alice = await srv.user("alice")
    r = await srv.http.post("/v1/assets", content=b"x", headers=OCTET)
    assert_problem(r, 401, "unauthenticated")
    r = await srv.http.post(
        "/v1/assets", content=b"x", headers={**alice.headers, "Content-Type": "text/plain"}
    )
    assert_problem(r, 415, "unsupported_media_type")
    assert await stored_blobs(srv) == 0


async def test_interrupted_upload_leaves_nothing(srv: Server) -> None:
    alice = await srv.user("alice")

    async def broken() -> AsyncIterator[bytes]:
        yield secrets.token_bytes(9 * 1024 * KIB)  # past one S3 part: a multipart upload began
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await service(srv).upload(alice.user_uuid, broken())
    assert await stored_blobs(srv) == 0
    store = service(srv).store
    if not isinstance(store, FilesystemStore):  # the multipart upload was aborted
        answer = await asyncio.to_thread(
            store.client.list_multipart_uploads, Bucket=store.settings.bucket
        )
        assert not answer.get("Uploads")
    else:
        assert not list(store.tmp.iterdir())  # no temporary file left
    async with service(srv).db.engine.connect() as conn:
        assert (await conn.scalar(sa.select(sa.func.count()).select_from(assets))) == 0


async def test_abandoned_upload_is_collected(srv: Server) -> None:
    """A process that died mid-upload leaves a pending row; the sweep collects it (and any
    blob) after the upload timeout."""
    alice = await srv.user("alice")
    svc = service(srv)
    started = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield b"partial"
        started.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(svc.upload(alice.user_uuid, stalls()))
    await started.wait()
    async with svc.db.engine.connect() as conn:
        row = (await conn.execute(sa.select(assets))).one()
    assert not row.ready
    assert_problem(await download(srv, row.id, "A" * 43), 404, "asset_not_found")
    assert await svc.sweep() == 0  # not yet timed out
    srv.clock.advance(svc.settings.upload_timeout_seconds + 1)
    assert await svc.sweep() == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await stored_blobs(srv) == 0


async def test_deleted_account_assets_are_collected(srv: Server) -> None:
    alice = await srv.user("alice")
    bob = await srv.user("bob")
    out = (await upload(srv, alice.headers, b"gone with the account")).json()
    kept = (await upload(srv, bob.headers, b"bob's own")).json()
    assert (await srv.http.delete("/v1/me", headers=alice.headers)).status_code == 204
    assert_problem(await download(srv, out["asset_id"], out["capability"]), 404, "asset_not_found")
    assert await service(srv).sweep() == 1
    assert await stored_blobs(srv) == 1  # only the deleted account's asset went
    assert (await download(srv, kept["asset_id"], kept["capability"])).content == b"bob's own"
    async with service(srv).db.engine.connect() as conn:
        left = dict((await conn.execute(sa.select(asset_usage))).all())
    assert left == {bob.user_uuid: len(b"bob's own")}
    # Let the DS finish the account event now, so shutdown does not cancel it mid-transaction.
    delivery = srv.app.state.services.delivery  # type: ignore[attr-defined]
    while await delivery.process_account_events():
        pass


async def test_store_failures_keep_the_asset_id_out_of_the_log(
    srv: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """An asset id is a capability's half: a lost blob or a failed deletion is logged without
    it (not even inside the store's error text, which names the blob's path)."""
    alice = await srv.user("alice")
    lost = (await upload(srv, alice.headers, b"lost ciphertext")).json()
    stuck = (await upload(srv, alice.headers, b"stuck ciphertext")).json()
    await service(srv).store.delete(lost["asset_id"])
    store = service(srv).store
    if isinstance(store, FilesystemStore):  # a blob that cannot be unlinked: a directory
        path = store.path_of(stuck["asset_id"])
        path.unlink()
        (path / "keep").mkdir(parents=True)
    with caplog.at_level(logging.INFO, logger="roost.server.assets"):
        assert_problem(
            await download(srv, lost["asset_id"], lost["capability"]), 404, "asset_not_found"
        )
        r = await srv.http.delete(f"/v1/assets/{stuck['asset_id']}", headers=alice.headers)
        assert r.status_code == 204
    logged = caplog.text
    assert "no blob" in logged
    if isinstance(store, FilesystemStore):
        assert "collecting a deleted asset failed" in logged
    for asset in (lost, stuck):
        assert asset["asset_id"] not in logged
