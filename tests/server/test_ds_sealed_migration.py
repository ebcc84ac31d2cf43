"""Upgrading to sealed Delivery Service state keeps every group, member, role, held item and
MLS state, and afterwards no stored cell names a member's user, client or queue; processed
account events go."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from roost.server.auth.tables import account_events
from roost.server.delivery.at_rest import AtRest
from roost.server.delivery.group_store import GroupStore, Member
from roost.server.delivery.tables import ds_groups, ds_held, ds_members, ds_roles
from roost.server.seal_key import SealKeyFile
from roost.server.store import Database
from roost.server.store.migrate import upgrade

from .migration_helpers import upgrade_to

GID = b"AAAAAAAAAAAAAAAAAAAAAA@a.test"
ALICE, ALICE_CLIENT = "alice@a.test", "0b6f3c1e-0000-4000-8000-00000000000a"
BOB, BOB_CLIENT = "bob@b.test", "0b6f3c1e-0000-4000-8000-00000000000b"
QUEUE = b"Q" * 16
STATE, GROUP_INFO = b"observer state naming alice@a.test", b"group info naming bob@b.test"


async def _old_group(db: Database) -> None:
    await upgrade_to(db, "0014")
    async with db.transaction() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO ds_groups (id, cipher_suite, epoch, last_seq, rev, external_join,"
                " state, group_info, last_commit_seq, created_at)"
                " VALUES (:g, 1, 3, 7, 9, false, :s, :i, 5, 100)"
            ),
            {"g": GID, "s": STATE, "i": GROUP_INFO},
        )
        for leaf, client, user, queue, domain, policy, joined in (
            (0, ALICE_CLIENT, ALICE, QUEUE, None, "mentions", 0),
            (1, BOB_CLIENT, BOB, None, "b.test", None, 5),
        ):
            await conn.execute(
                sa.text(
                    "INSERT INTO ds_members (group_id, leaf_index, client_uuid, user_id,"
                    " queue_id, queue_domain, policy, gone, joined_seq)"
                    " VALUES (:g, :l, :c, :u, :q, :d, :p, false, :j)"
                ),
                {
                    "g": GID,
                    "l": leaf,
                    "c": client,
                    "u": user,
                    "q": queue,
                    "d": domain,
                    "p": policy,
                    "j": joined,
                },
            )
        await conn.execute(
            sa.text("INSERT INTO ds_roles (group_id, user_id, role) VALUES (:g, :u, 'admin')"),
            {"g": GID, "u": ALICE},
        )
        for event_id, processed in ((1, 50), (2, None)):
            await conn.execute(
                sa.text(
                    "INSERT INTO account_events (id, event_type, user_id, payload, created_at,"
                    " processed_at) VALUES (:i, 'user_deleted', :u, '{}', 40, :p)"
                ),
                {"i": event_id, "u": f"gone{event_id}@a.test", "p": processed},
            )
        await conn.execute(
            sa.text(
                "INSERT INTO ds_held (group_id, leaf_index, group_seq, item_type, body)"
                " VALUES (:g, 1, 6, 1, :b)"
            ),
            {"g": GID, "b": b"held item"},
        )


async def test_groups_survive_sealed_and_name_nobody(empty_db: Database, tmp_path: Path) -> None:
    await _old_group(empty_db)
    key = SealKeyFile(tmp_path / "seal.key")
    await upgrade(empty_db, key)

    store = GroupStore(empty_db, AtRest(key))
    async with empty_db.engine.connect() as conn:
        row = await store.group(conn, GID)
        assert (row.epoch, row.last_seq, row.rev) == (3, 7, 9)
        assert store.state_of(row) == STATE and store.group_info_of(row) == GROUP_INFO
        assert await store.members(conn, GID) == [
            Member(0, ALICE_CLIENT, ALICE, QUEUE, "mentions", False, None, 0),
            Member(1, BOB_CLIENT, BOB, None, None, False, "b.test", 5),
        ]
        assert await store.roles(conn, GID) == {ALICE: "admin"}
        assert await store.role_of(conn, GID, ALICE) == "admin"
        assert await store.role_of(conn, GID, BOB) is None
        held = (await conn.execute(sa.select(ds_held.c.body))).scalars().all()
        assert held == [b"held item"]
        # the processed account event is not kept; the one still to handle is
        events = (await conn.execute(sa.select(account_events.c.user_id))).scalars().all()
        assert events == ["gone2@a.test"]
        stored: list[bytes] = []
        for table in (ds_groups, ds_members, ds_roles):
            for r in (await conn.execute(sa.select(table))).all():
                stored += [c if isinstance(c, bytes) else str(c).encode() for c in r]
    cells = b" ".join(stored)
    for secret in (
        ALICE.encode(),
        BOB.encode(),
        ALICE_CLIENT.encode(),
        BOB_CLIENT.encode(),
        QUEUE,
        b"mentions",
        b"b.test",
        b"observer state",
        b"group info",
    ):
        assert secret not in cells, secret


async def test_a_database_with_groups_needs_the_seal_key(
    empty_db: Database, tmp_path: Path
) -> None:
    await _old_group(empty_db)
    with pytest.raises(RuntimeError, match="seal key"):
        await upgrade(empty_db)
    await upgrade(empty_db, SealKeyFile(tmp_path / "seal.key"))  # then it goes through
    async with empty_db.engine.connect() as conn:
        assert (
            len(
                await GroupStore(empty_db, AtRest(SealKeyFile(tmp_path / "seal.key"))).members(
                    conn, GID
                )
            )
            == 2
        )
