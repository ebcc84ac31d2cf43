"""KeyPackage publish and claim: replacement, deletion after claim, last resort, atomicity,
and validation of what is published (state unchanged on every refusal)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from roost.client import RoostClient, RoostError
from roost.mls.crypto.ciphersuite import get_cipher_suite
from roost.mls.framing import MLSMessage
from roost.mls.key_package import KeyPackage
from roost.mls.key_package_gen import generate_key_package
from roost.mls.leaf_node import Lifetime
from roost.mls.welcome import Welcome
from roost.protocol.key_package_batch import encode_key_package_batch


def _is_last_resort(kp: KeyPackage) -> bool:
    return any(e.extension_type == 0x000A for e in kp.extensions)


def _resign(client: RoostClient, kp: KeyPackage) -> KeyPackage:
    sig = client.cs.sign_with_label(client.state.signature_private, b"KeyPackageTBS", kp.tbs())
    return replace(kp, signature=sig)


def _kp(client: RoostClient, *, last_resort: bool = True, lifetime: Lifetime | None = None):
    return generate_key_package(
        client.state.cipher_suite,
        client.credential,
        client.state.signature_private,
        last_resort=last_resort,
        lifetime=lifetime,
    ).key_package


async def test_publish_and_count(users):
    alice = await users.new("alice")
    assert (await alice.key_package_count()).count == 0
    res = await alice.publish_key_packages(5, last_resort=1)
    assert (res.published, res.last_resort, len(res.refs)) == (5, 1, 5)
    n = await alice.key_package_count()
    assert (n.count, n.last_resort, n.by_cipher_suite) == (5, 1, {1: 5})
    # The private keys of what was published stay with the client.
    assert {r.hex() for r in res.refs} <= set(alice.state.keypackages)


async def test_new_batch_replaces_the_old(users):
    alice, bob = await users.connected_pair()
    first = await bob.publish_key_packages(3)
    second = await bob.publish_key_packages(3)
    assert (await bob.key_package_count()).count == 3
    cs = get_cipher_suite(1)
    claimed = set()
    for _ in range(4):
        [kp] = await alice.claim_key_packages(bob.user_id)
        claimed.add(cs.key_package_ref(kp.encode()))
    assert claimed <= set(second.refs)
    assert not claimed & set(first.refs)


async def test_claim_deletes_except_the_last_resort(users):
    alice, bob = await users.connected_pair()
    res = await bob.publish_key_packages(3, last_resort=1)
    cs = get_cipher_suite(1)
    seen = []
    for expected_left in (2, 1, 1, 1):
        [kp] = await alice.claim_key_packages(bob.user_id)
        seen.append((cs.key_package_ref(kp.encode()), _is_last_resort(kp)))
        assert (await bob.key_package_count()).count == expected_left
    normal = [ref for ref, lr in seen if not lr]
    last = [ref for ref, lr in seen if lr]
    assert len(normal) == 2 and len(set(normal)) == 2  # each normal one exactly once
    assert len(last) == 2 and len(set(last)) == 1  # then the last resort, again and again
    assert set(normal) | set(last) == set(res.refs)


async def test_one_package_per_client_of_the_user(users):
    alice, bob = await users.connected_pair()
    phone = await users.second_client(bob)
    empty = await users.second_client(bob)  # has published nothing: contributes nothing
    await bob.publish_key_packages(2)
    await phone.publish_key_packages(2)
    kps = await alice.claim_key_packages(bob.user_id)
    owners = [await alice.verify_key_package(kp, user_id=bob.user_id) for kp in kps]
    assert sorted(owners) == sorted([bob.client_id, phone.client_id])
    assert empty.client_id not in owners
    assert {kp.leaf_node.signature_key for kp in kps} == {bob.signature_key, phone.signature_key}


async def test_no_double_hand_out_under_concurrent_claims(users):
    alice, bob = await users.connected_pair()
    others = [await users.second_client(alice) for _ in range(4)]
    normal = 30
    res = await bob.publish_key_packages(normal + 1, last_resort=1)
    claimers = [alice, *others]
    results = await asyncio.gather(
        *(claimers[i % len(claimers)].claim_key_packages(bob.user_id) for i in range(50))
    )
    cs = get_cipher_suite(1)
    handed = [(cs.key_package_ref(kp.encode()), _is_last_resort(kp)) for [kp] in results]
    normal_refs = [ref for ref, lr in handed if not lr]
    assert len(normal_refs) == normal and len(set(normal_refs)) == normal
    assert len({ref for ref, lr in handed if lr}) == 1
    assert {ref for ref, _ in handed} == set(res.refs)
    assert (await bob.key_package_count()).count == 1


async def _refused(client: RoostClient, body: bytes, status: int, code: str) -> None:
    before = await client.key_package_count()
    with pytest.raises(RoostError) as e:
        await client.publish_raw_key_packages(body)
    assert (e.value.status, e.value.code) == (status, code), e.value
    assert e.value.problem.get("code") == code  # a problem+json body carried it
    assert await client.key_package_count() == before


async def test_publish_validation(users):
    alice = await users.new("alice", keypackages=2)
    bob = await users.new("bob")
    now = int(time.time())
    good = _kp(alice)

    await _refused(alice, b"\x05garbage", 400, "malformed_mls")
    await _refused(alice, encode_key_package_batch([good])[:-3], 400, "malformed_mls")
    wrong_suite = _resign(alice, replace(good, cipher_suite=0x7A7A))
    await _refused(alice, encode_key_package_batch([wrong_suite]), 422, "unsupported_cipher_suite")
    expired = _kp(alice, lifetime=Lifetime(now - 7200, now - 60))
    await _refused(alice, encode_key_package_batch([expired]), 422, "invalid_lifetime")
    too_long = _kp(alice, lifetime=Lifetime(now, now + 400 * 86400))
    await _refused(alice, encode_key_package_batch([too_long]), 422, "invalid_lifetime")
    future = _kp(alice, lifetime=Lifetime(now + 86400, now + 2 * 86400))
    await _refused(alice, encode_key_package_batch([future]), 422, "invalid_lifetime")
    bad_sig = replace(good, signature=bytes(64))
    await _refused(alice, encode_key_package_batch([bad_sig]), 422, "invalid_signature")
    await _refused(alice, encode_key_package_batch([_kp(bob)]), 422, "credential_mismatch")
    await _refused(
        alice, encode_key_package_batch([_kp(alice, last_resort=False)]), 422, "no_last_resort"
    )
    await _refused(alice, encode_key_package_batch([good, good]), 422, "duplicate_init_key")
    same_keys = _resign(alice, replace(good, init_key=good.leaf_node.encryption_key))
    await _refused(alice, encode_key_package_batch([same_keys]), 422, "duplicate_init_key")
    welcome = MLSMessage(Welcome(1, (), b"")).encode()
    await _refused(alice, encode_key_package_batch([welcome]), 422, "wrong_wire_format")


async def test_init_key_must_be_new_on_the_server(users):
    alice = await users.new("alice")
    bob = await users.new("bob", keypackages=1)
    kp = _kp(alice)
    await alice.publish_raw_key_packages(encode_key_package_batch([kp]))
    # Bob (or anyone) re-using an init key the server already holds is refused.
    copied = _resign(bob, replace(_kp(bob), init_key=kp.init_key))
    await _refused(bob, encode_key_package_batch([copied]), 422, "duplicate_init_key")


async def test_claim_unknown_user(users):
    alice = await users.new("alice")
    with pytest.raises(RoostError) as e:
        await alice.claim_key_packages("ghost-user-kp@localhost")
    assert (e.value.status, e.value.code) == (404, "user_not_found")


async def test_claim_for_one_client_through_the_library(users):
    alice, bob = await users.connected_pair()
    phone = await users.second_client(bob)
    await bob.publish_key_packages(2)
    await phone.publish_key_packages(2)
    carol = await users.new("carol")

    # bob's own other device, and a connected user: exactly that client's package, verified
    own = await bob.claim_client_key_package(bob.user_id, phone.client_uuid)
    assert own is not None and own.leaf_node.signature_key == phone.signature_key
    theirs = await alice.claim_client_key_package(bob.user_id, phone.client_uuid)
    assert theirs is not None and theirs.leaf_node.signature_key == phone.signature_key
    assert (await bob.key_package_count()).count == 2  # the other client kept its packages
    # a client with nothing published: None
    tablet = await users.second_client(bob)
    assert await alice.claim_client_key_package(bob.user_id, tablet.client_uuid) is None
    for claimer, client_uuid, expected in (
        (carol, phone.client_uuid, (403, "no_connection")),
        (alice, carol.client_uuid, (404, "client_not_found")),
        (alice, "00000000-0000-4000-8000-000000000000", (404, "client_not_found")),
    ):
        with pytest.raises(RoostError) as e:
            await claimer.claim_client_key_package(bob.user_id, client_uuid)
        assert (e.value.status, e.value.code) == expected
