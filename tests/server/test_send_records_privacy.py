"""The idempotency records of application sends (``ds_sends``) do not name the sender: a copy
of the database does not say who sent which message. Retries are still recognised, per
sending client; records written before the change are converted by the migration."""

from __future__ import annotations

import asyncio
from pathlib import Path

import sqlalchemy as sa

from roost.server.delivery.send_key import send_key
from roost.server.delivery.tables import ds_sends
from roost.server.seal_key import SealKeyFile
from roost.server.store import Database
from roost.server.store.migrate import upgrade

from .delivery_helpers import process_all, send, send_raw
from .migration_helpers import upgrade_to
from .test_delivery_rules import trio


def _holds(value: object, needle: str) -> bool:
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        return needle.encode() in raw or needle in raw.hex()
    return needle in str(value)


async def test_send_records_name_no_sender_and_still_catch_retries(server) -> None:  # type: ignore[no-untyped-def]
    http, gid, alice, bob, carol = await trio(server)
    for m in (bob, carol):
        await process_all(http, m)
    first = await send(http, bob, gid, b"once", message_id="shared-id")
    retry = await send_raw(http, bob, gid, bob.group.encrypt(b"again?"), message_id="shared-id")
    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()  # a retry: the first copy's position
    # the same message id from another client is another send
    other = await send(http, alice, gid, b"alice's", message_id="shared-id")
    assert other.status_code == 201
    assert other.json()["group_seq"] == first.json()["group_seq"] + 1
    # a burst (written as batches) with a retry of each of carol's sends
    burst = [(carol, f"carol-{i}", carol.group.encrypt(b"%d" % i)) for i in range(6)]
    answers = await asyncio.gather(
        *(send_raw(http, m, gid, msg, message_id=mid) for m, mid, msg in burst * 2)
    )
    assert all(r.status_code == 201 for r in answers), [r.text for r in answers]
    assert [r.json() for r in answers[:6]] == [r.json() for r in answers[6:]]
    got = await process_all(http, bob)
    assert [g.data for g in got] == [b"alice's", *(b"%d" % i for i in range(6))]

    db = server.app.state.services.delivery.db
    async with db.engine.connect() as conn:
        rows = (await conn.execute(sa.select(ds_sends))).mappings().all()
    assert set(ds_sends.c.keys()) == {"group_id", "send_key", "group_seq", "created_at"}
    assert len(rows) == 2 + len(burst)  # one record per send, none per retry
    identities = [
        v
        for m in (alice, bob, carol)
        for v in (m.client.client_uuid, m.user.user_id, m.user.user_uuid)
    ]
    message_ids = ["shared-id", *(mid for _, mid, _ in burst)]
    for row in rows:
        for column, value in row.items():
            for needle in identities + message_ids:
                assert not _holds(value, needle), f"ds_sends.{column} holds {needle}"
    assert {r["send_key"] for r in rows} == {
        send_key(gid, m.client.client_uuid, mid)
        for m, mid in [(bob, "shared-id"), (alice, "shared-id"), *((carol, b[1]) for b in burst)]
    }


async def test_migration_converts_the_records_of_recent_sends(
    empty_db: Database, tmp_path: Path
) -> None:
    """Records written before the upgrade still answer retries after it: converted, not
    dropped (a send accepted just before the upgrade may be retried just after it)."""
    await upgrade_to(empty_db, "0011")
    gid = b"g" * 22 + b"@localhost"
    sends = [(f"c6f1c3a4-0000-4000-8000-{i:012d}", f"m-{i // 2}", i + 1) for i in range(7001)]
    async with empty_db.transaction() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO ds_groups (id, cipher_suite, epoch, last_seq, rev, external_join,"
                " state, group_info, last_commit_seq, created_at)"
                " VALUES (:id, 1, 1, 7001, 1, false, :b, :b, 0, 100)"
            ),
            {"id": gid, "b": b"x"},
        )
        await conn.execute(
            sa.text(
                "INSERT INTO ds_sends (group_id, client_uuid, message_id, group_seq, created_at)"
                " VALUES (:g, :c, :m, :s, 100)"
            ),
            [{"g": gid, "c": c, "m": m, "s": s} for c, m, s in sends],
        )
    # more rows than one conversion page; the later migrations seal the group with the key file
    await upgrade(empty_db, SealKeyFile(tmp_path / "seal.key"))
    async with empty_db.engine.connect() as conn:
        rows = (await conn.execute(sa.select(ds_sends))).all()
    assert {(r.group_id, r.send_key, r.group_seq, r.created_at) for r in rows} == {
        (gid, send_key(gid, c, m), s, 100) for c, m, s in sends
    }
