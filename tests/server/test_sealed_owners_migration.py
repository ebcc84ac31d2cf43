"""Upgrading to sealed owners keeps every asset and push registration: the uploader of an asset
and the target of a registration are sealed in place, and every behaviour that needs them
(quota, deletion by the uploader, account deletion, pushing) still works on the old rows."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from roost.server.assets.service import AssetService, AssetSettings
from roost.server.assets.storage import FilesystemStore
from roost.server.assets.tables import asset_usage, assets
from roost.server.config import build_config
from roost.server.errors import Problem
from roost.server.push.service import PushService
from roost.server.push.tables import push_registrations
from roost.server.seal import Seal
from roost.server.seal_key import SealKeyFile
from roost.server.store import Database
from roost.server.store.migrate import upgrade

from .helpers import FakeClock
from .migration_helpers import upgrade_to

ALICE = "0b6f3c1e-0000-4000-8000-00000000000a"
ALICE_CLIENT = "0b6f3c1e-0000-4000-8000-0000000000ac"
BOB = "0b6f3c1e-0000-4000-8000-00000000000b"
BOB_CLIENT = "0b6f3c1e-0000-4000-8000-0000000000bc"
ENDPOINT = "https://push.example/subscription/alice-endpoint"
P256DH = b"\x04" + b"\x01" * 64
AUTH = b"a" * 16
TOKEN = "bob-device-token"
OLD = {"a" * 32: (ALICE, 10), "b" * 32: (ALICE, 20), "c" * 32: (BOB, 5)}


async def _fill_0015(db: Database) -> None:
    async with db.transaction() as conn:
        for asset_id, (user, size) in OLD.items():
            client = ALICE_CLIENT if user == ALICE else BOB_CLIENT
            await conn.execute(
                sa.text(
                    "INSERT INTO assets (id, user_uuid, client_uuid, capability_hash, size,"
                    " ready, created_at, expires_at)"
                    " VALUES (:id, :u, :c, :h, :n, :r, 100, 10000)"
                ),
                {"id": asset_id, "u": user, "c": client, "h": b"h" * 32, "n": size, "r": True},
            )
        await conn.execute(
            sa.text("INSERT INTO asset_usage (user_uuid, used_bytes) VALUES (:u, :n)"),
            [{"u": ALICE, "n": 30}, {"u": BOB, "n": 5}],
        )
        await conn.execute(
            sa.text(
                "INSERT INTO push_registrations (client_uuid, user_uuid, kind, target, p256dh,"
                " auth, default_policy, created_at)"
                " VALUES (:c, :u, :k, :t, :p, :a, 'all', 100)"
            ),
            [
                {
                    "c": ALICE_CLIENT,
                    "u": ALICE,
                    "k": "webpush",
                    "t": ENDPOINT,
                    "p": P256DH,
                    "a": AUTH,
                },
                {"c": BOB_CLIENT, "u": BOB, "k": "fcm", "t": TOKEN, "p": None, "a": None},
            ],
        )


async def _cells(db: Database, table: sa.Table) -> bytes:
    async with db.engine.connect() as conn:
        rows = (await conn.execute(sa.select(table))).all()
    return b" ".join(c if isinstance(c, bytes) else str(c).encode() for row in rows for c in row)


async def test_old_assets_and_registrations_are_sealed_in_place(
    empty_db: Database, tmp_path: Path
) -> None:
    key = tmp_path / "seal.key"
    await upgrade_to(empty_db, "0015")
    await _fill_0015(empty_db)
    await upgrade(empty_db, SealKeyFile(key))

    # Nothing in clear: no uploader next to an asset, no endpoint, key or token.
    stored_assets = await _cells(empty_db, assets)
    for who in (ALICE, ALICE_CLIENT, BOB, BOB_CLIENT):
        assert who.encode() not in stored_assets
    stored_regs = await _cells(empty_db, push_registrations)
    for secret in (ENDPOINT.encode(), P256DH, AUTH, TOKEN.encode()):
        assert secret not in stored_regs

    # Every asset is still there, and its owner's: the uploader deletes it, nobody else can,
    # and the quota is credited to the right user when an asset goes.
    clock = FakeClock()
    clock.now = 1000
    settings = AssetSettings(100, 100, 60, 3600)
    service = AssetService(
        empty_db, FilesystemStore(tmp_path / "assets"), settings, SealKeyFile(key), clock
    )
    async with empty_db.engine.connect() as conn:
        assert set((await conn.scalars(sa.select(assets.c.id))).all()) == set(OLD)
    with pytest.raises(Problem) as not_hers:
        await service.delete(BOB, "a" * 32)
    assert not_hers.value.status == 404
    await service.delete(ALICE, "a" * 32)
    assert (await service.usage(ALICE)).used_bytes == 20
    assert (await service.usage(BOB)).used_bytes == 5
    # Account deletion finds the deleted user's old assets by their seals.
    async with empty_db.transaction() as conn:
        await service.delete_user_assets(conn, ALICE, [ALICE_CLIENT])
    assert await service.sweep() == 1
    async with empty_db.engine.connect() as conn:
        assert (await conn.scalars(sa.select(assets.c.id))).all() == ["c" * 32]
        assert dict((await conn.execute(sa.select(asset_usage))).all()) == {BOB: 5}
    clock.now = 20000  # bob's asset expires: his quota is credited back
    assert await service.sweep() == 1
    assert (await service.usage(BOB)).used_bytes == 0

    # The registrations open to what was stored, under the same key file.
    config = build_config({"queue_seal_key_file": str(key)}, {})
    push = PushService(empty_db, config)
    alice_reg = await push.get(ALICE_CLIENT)
    bob_reg = await push.get(BOB_CLIENT)
    assert alice_reg is not None and bob_reg is not None
    assert (alice_reg.kind, alice_reg.target, alice_reg.p256dh, alice_reg.auth) == (
        "webpush",
        ENDPOINT,
        P256DH,
        AUTH,
    )
    assert (bob_reg.kind, bob_reg.target, bob_reg.p256dh, bob_reg.auth) == (
        "fcm",
        TOKEN,
        None,
        None,
    )
    # Under another key they do not open: as if unregistered (the client registers again).
    other = PushService(empty_db, build_config({"queue_seal_key_file": str(tmp_path / "x")}, {}))
    assert await other.get(ALICE_CLIENT) is None


async def test_the_upgrade_refuses_to_seal_without_the_key(empty_db: Database) -> None:
    await upgrade_to(empty_db, "0015")
    await _fill_0015(empty_db)
    with pytest.raises(RuntimeError, match="seal key"):
        await upgrade(empty_db)
    # Nothing was changed: the rows are as they were, and the upgrade goes through once
    # there is nothing left to seal.
    async with empty_db.transaction() as conn:
        names = (await conn.execute(sa.text("SELECT user_uuid FROM assets"))).scalars().all()
        assert sorted(names) == [ALICE, ALICE, BOB]
        await conn.execute(sa.text("DELETE FROM assets"))
        await conn.execute(sa.text("DELETE FROM push_registrations"))
    await upgrade(empty_db)


def test_a_seal_opens_only_for_its_label_row_and_key(tmp_path: Path) -> None:
    key = SealKeyFile(tmp_path / "one")
    sealed = Seal(key, b"label one:").seal(ALICE, b"row 1")
    assert Seal(SealKeyFile(tmp_path / "one"), b"label one:").open(sealed, b"row 1") == ALICE
    assert Seal(key, b"label one:").open(sealed, b"row 2") is None  # another row
    assert Seal(key, b"label two:").open(sealed, b"row 1") is None  # another use
    assert Seal(SealKeyFile(tmp_path / "two"), b"label one:").open(sealed, b"row 1") is None
    assert Seal(key, b"label one:").seal(ALICE, b"row 1") != sealed  # no two seals alike
