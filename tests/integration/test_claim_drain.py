"""A user's KeyPackages cannot be drained.

Claims are limited per target user over all requesters (as well as per requester), a pair whose
connection was only ever opened gets one claim in total, and requesters the target has not
accepted never take the target's ordinary KeyPackages below a reserve: they get the
last-resort package instead. Real ``roost serve`` processes on SQLite and PostgreSQL.
"""

from __future__ import annotations

import pytest

from roost.client import RoostClient, RoostError
from roost.mls.key_package import KeyPackage

from .conftest import ENGINES, Users, _start

PER_TARGET_PER_MINUTE = 8
RESERVE = 3
LAST_RESORT_EXTENSION = 0x000A


@pytest.fixture(scope="module", params=ENGINES)
def guarded_server(request, tmp_path_factory):
    # The per-requester limit stays the suite's generous one: only the new limits are in play.
    srv = _start(
        request,
        tmp_path_factory,
        "roost-guarded",
        {
            "ROOST_LIMITS_CLAIMS_PER_TARGET_PER_MINUTE": str(PER_TARGET_PER_MINUTE),
            "ROOST_LIMITS_KEYPACKAGE_RESERVE": str(RESERVE),
        },
    )
    yield srv
    srv.stop()


@pytest.fixture
async def guarded_users(guarded_server):
    u = Users(guarded_server.url)
    yield u
    await u.aclose()


def _is_last_resort(kp: KeyPackage) -> bool:
    return any(e.extension_type == LAST_RESORT_EXTENSION for e in kp.extensions)


async def _ordinary_left(victim: RoostClient) -> int:
    n = await victim.key_package_count()
    return n.count - n.last_resort


async def test_a_connected_requester_cannot_empty_a_victim_quickly(guarded_users):
    drainer, victim = await guarded_users.connected_pair()
    friend = await guarded_users.new("friend")
    conn = await friend.open_connection(victim.user_id)
    await friend.send_connection_request(conn.connection_id, b"hi")
    await victim.accept_connection(conn.connection_id)
    await victim.publish_key_packages(10, last_resort=1)

    for _ in range(PER_TARGET_PER_MINUTE):
        await drainer.claim_key_packages(victim.user_id, verify=False)
    with pytest.raises(RoostError) as e:
        await drainer.claim_key_packages(victim.user_id, verify=False)
    assert (e.value.status, e.value.code) == (429, "rate_limited")
    assert e.value.retry_after is not None and e.value.retry_after >= 1
    # The limit is the victim's, over all requesters: another contact is refused as well, and
    # nothing more is handed out.
    left = await _ordinary_left(victim)
    assert left == 9 - PER_TARGET_PER_MINUTE
    with pytest.raises(RoostError) as e:
        await friend.claim_key_packages(victim.user_id, verify=False)
    assert (e.value.status, e.value.code) == (429, "rate_limited")
    assert await _ordinary_left(victim) == left
    # Other targets are not affected, and a user still reaches its own other clients.
    await drainer.publish_key_packages(2)
    assert len(await victim.claim_key_packages(drainer.user_id, verify=False)) == 1
    phone = await guarded_users.second_client(victim)
    await phone.publish_key_packages(2)
    assert len(await victim.claim_key_packages(victim.user_id, verify=False)) == 1


async def test_strangers_with_unanswered_requests_leave_the_reserve(guarded_users):
    victim = await guarded_users.new("victim")
    await victim.publish_key_packages(10, last_resort=1)  # 9 ordinary + 1 last resort
    got: list[KeyPackage] = []
    for _ in range(PER_TARGET_PER_MINUTE):
        stranger = await guarded_users.new("stranger")
        await stranger.open_connection(victim.user_id)  # `opening`: never answered
        [kp] = await stranger.claim_key_packages(victim.user_id, verify=False)
        got.append(kp)
        # One claim per pair, however often it is tried.
        with pytest.raises(RoostError) as e:
            await stranger.claim_key_packages(victim.user_id, verify=False)
        assert (e.value.status, e.value.code) == (403, "no_connection")
    ordinary = [kp for kp in got if not _is_last_resort(kp)]
    assert len(ordinary) == 9 - RESERVE
    assert len({kp.encode() for kp in ordinary}) == len(ordinary)
    # Past the reserve strangers get the (reusable) last-resort package.
    assert all(_is_last_resort(kp) for kp in got[len(ordinary) :])
    assert await _ordinary_left(victim) == RESERVE


async def test_an_accepted_contact_takes_from_the_reserve(guarded_users):
    victim = await guarded_users.new("victim")
    await victim.publish_key_packages(RESERVE + 1, last_resort=1)  # RESERVE ordinary + 1
    friend = await guarded_users.new("friend")
    conn = await friend.open_connection(victim.user_id)
    await friend.send_connection_request(conn.connection_id, b"hi")
    await victim.accept_connection(conn.connection_id)
    [kp] = await friend.claim_key_packages(victim.user_id, verify=False)
    assert not _is_last_resort(kp)
    assert await _ordinary_left(victim) == RESERVE - 1


async def test_a_rejected_requester_does_not_get_a_second_claim(guarded_users):
    victim = await guarded_users.new("victim")
    await victim.publish_key_packages(10, last_resort=1)
    stranger = await guarded_users.new("stranger")
    conn = await stranger.open_connection(victim.user_id)
    await stranger.claim_key_packages(victim.user_id, verify=False)
    await stranger.send_connection_request(conn.connection_id, b"hi")
    await victim.reject_connection(conn.connection_id)
    await stranger.open_connection(victim.user_id)  # a new `opening` connection, same pair
    with pytest.raises(RoostError) as e:
        await stranger.claim_key_packages(victim.user_id, verify=False)
    assert (e.value.status, e.value.code) == (403, "no_connection")
    assert await _ordinary_left(victim) == 8
