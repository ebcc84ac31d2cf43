"""A keyed group's stored state opens only with its group key: the seal key file alone (what
the operator holds) opens nothing of it. A keyed group stored before the DS sealed under group
keys is resealed on the first request that presents its key, and keeps every member, role and
MLS state."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
import sqlalchemy as sa

from roost.server.delivery.at_rest import AtRest, SealBroken
from roost.server.delivery.group_key import key_check
from roost.server.delivery.group_keyring import GroupKeyring
from roost.server.delivery.group_store import GroupStore, Member
from roost.server.delivery.tables import ds_groups
from roost.server.errors import Problem
from roost.server.seal_key import SealKeyFile
from roost.server.store import Database
from roost.server.store.migrate import upgrade

from .test_ds_sealed_migration import ALICE, ALICE_CLIENT, BOB, GID, GROUP_INFO, STATE, _old_group

MEMBERS = [
    Member(0, ALICE_CLIENT, ALICE, b"Q" * 16, "mentions", False, None, 0),
    Member(1, "0b6f3c1e-0000-4000-8000-00000000000b", BOB, None, None, False, "b.test", 5),
]


async def _keyed_old_group(db: Database, key_file: SealKeyFile) -> bytes:
    """The group of the 0015 migration test, upgraded, with a group key's check value (as a
    group made with a key before the DS sealed under group keys)."""
    await _old_group(db)
    await upgrade(db, key_file)
    group_key = secrets.token_bytes(32)
    async with db.transaction() as conn:
        await conn.execute(
            sa.update(ds_groups).where(ds_groups.c.id == GID).values(key_check=key_check(group_key))
        )
    return group_key


async def _everything(store: GroupStore, db: Database) -> tuple[object, ...]:
    async with db.engine.connect() as conn:
        row = await store.group(conn, GID)
        return (
            await store.members(conn, GID),
            await store.roles(conn, GID),
            await store.role_of(conn, GID, ALICE),
            store.state_of(row),
            store.group_info_of(row),
        )


async def test_the_first_keyed_request_reseals_and_the_file_alone_opens_nothing(
    empty_db: Database, tmp_path: Path
) -> None:
    key_file = SealKeyFile(tmp_path / "seal.key")
    group_key = await _keyed_old_group(empty_db, key_file)
    server = GroupStore(empty_db, AtRest(key_file, GroupKeyring(key_file)))
    expected = (MEMBERS, {ALICE: "admin"}, "admin", STATE, GROUP_INFO)
    # before: the file opens it (what the upgrade could do without the key)
    assert await _everything(GroupStore(empty_db, AtRest(key_file)), empty_db) == expected

    for wrong in (None, secrets.token_bytes(32)):
        with pytest.raises(Problem) as refused:
            await server.require_key(GID, wrong)
        assert refused.value.status == 403
    assert await _everything(GroupStore(empty_db, AtRest(key_file)), empty_db) == expected

    await server.require_key(GID, group_key)
    assert await _everything(server, empty_db) == expected  # nothing lost
    async with empty_db.engine.connect() as conn:
        assert (await server.group(conn, GID)).key_sealed

    # The operator's view: the same file, no group key.
    operator = GroupStore(empty_db, AtRest(key_file))
    async with empty_db.engine.connect() as conn:
        row = await operator.group(conn, GID)
        for opening in (
            operator.members(conn, GID),
            operator.roles(conn, GID),
        ):
            with pytest.raises(SealBroken):
                await opening
        assert await operator.role_of(conn, GID, ALICE) is None  # no reference to test users by
        with pytest.raises(SealBroken):
            operator.state_of(row)
        with pytest.raises(SealBroken):
            operator.group_info_of(row)

    # A restarted server (an empty keyring) opens it again with the key, and reseals nothing.
    restarted = GroupStore(empty_db, AtRest(key_file, GroupKeyring(key_file)))
    await restarted.require_key(GID, group_key)
    assert await _everything(restarted, empty_db) == expected

    # The key without the file opens nothing either (a member with a copy of the database).
    other_file = SealKeyFile(tmp_path / "other.key")
    thief = GroupStore(empty_db, AtRest(other_file, GroupKeyring(other_file)))
    thief.at_rest.keyring.remember(GID, thief.at_rest.keyring.derive(GID, group_key))
    async with empty_db.engine.connect() as conn:
        with pytest.raises(SealBroken):
            await thief.members(conn, GID)


async def test_the_group_event_log_never_reuses_a_seq_after_it_was_pruned_empty(
    empty_db: Database, tmp_path: Path
) -> None:
    # Groups compare their ``events_seen`` with the log's seqs: a reused seq would be skipped.
    from roost.server.delivery.tables import ds_group_events

    await upgrade(empty_db, SealKeyFile(tmp_path / "seal.key"))

    async def log_one() -> int:
        async with empty_db.transaction() as conn:
            await conn.execute(sa.insert(ds_group_events).values(sealed=b"x", created_at=1))
            return int(await conn.scalar(sa.select(sa.func.max(ds_group_events.c.seq))))

    first, second = await log_one(), await log_one()
    async with empty_db.transaction() as conn:
        await conn.execute(sa.delete(ds_group_events))
    assert await log_one() > second > first
