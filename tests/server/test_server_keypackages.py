"""KeyPackage service: publish validation, replacement, claims, last resort, concurrency."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from roost.mls.leaf_node import Lifetime

from .helpers import MLS, batch, kp_message, make_kp, publish, split_claim


async def connect(server, a, b) -> None:
    """Establish an accepted connection a -> b (without a claim)."""
    r = await server.http.post("/v1/connections", json={"to": b.user_id}, headers=a.headers)
    cid = r.json()["connection_id"]
    r = await server.http.post(
        f"/v1/connections/{cid}/request", content=b"hello", headers={**a.headers, **MLS}
    )
    assert r.status_code == 200, r.text
    r = await server.http.post(f"/v1/connections/{cid}/accept", headers=b.headers)
    assert r.status_code == 200, r.text


async def count(server, user) -> dict:
    r = await server.http.get("/v1/keypackages/count", headers=user.headers)
    assert r.status_code == 200
    return r.json()


async def claim(server, claimer, target, suite: int = 1):
    return await server.http.post(
        f"/v1/users/{target.user_id}/keypackages/claim?cipher_suite={suite}",
        headers=claimer.headers,
    )


async def test_publish_count_replace_claim_and_last_resort(server):
    alice = await server.user("alice")
    bob = await server.user("bob")
    await connect(server, alice, bob)
    now = server.clock.now
    first = [make_kp(bob.client, now=now) for _ in range(2)] + [
        make_kp(bob.client, last_resort=True, now=now)
    ]
    r = await publish(server.http, bob.client, batch(*first))
    assert r.status_code == 201 and r.json() == {"published": 3, "last_resort": 1}
    second = [make_kp(bob.client, now=now), make_kp(bob.client, last_resort=True, now=now)]
    assert (await publish(server.http, bob.client, batch(*second))).status_code == 201
    assert await count(server, bob) == {"count": 2, "last_resort": 1, "by_cipher_suite": {"1": 2}}
    got = []
    for _ in range(4):
        r = await claim(server, alice, bob)
        assert r.status_code == 200 and r.headers["content-type"] == "message/mls"
        (kp,) = split_claim(r.content)
        got.append(kp)
    # the earlier batch is gone; the normal package goes first and is deleted; the last-resort
    # package is then served again and again
    assert got[0] == second[0]
    assert got[1] == got[2] == got[3] == second[1]
    assert not any(g in first for g in got)
    assert await count(server, bob) == {"count": 1, "last_resort": 1, "by_cipher_suite": {"1": 1}}


async def test_claim_returns_one_package_per_client(server):
    alice = await server.user("alice")
    bob = await server.user("bob")
    await connect(server, alice, bob)
    from .helpers import client_from, login, new_key

    priv, pub, key = new_key(bob.user_id)
    r = await server.http.post(
        "/v1/clients", json={"user_id": bob.user_id, "password": bob.password, "client": key}
    )
    second = client_from(r.json(), priv, pub)
    await login(server.http, second)
    now = server.clock.now
    for c in (bob.client, second):
        body = batch(make_kp(c, now=now), make_kp(c, last_resort=True, now=now))
        assert (await publish(server.http, c, body)).status_code == 201
    kps = split_claim((await claim(server, alice, bob)).content)
    assert {kp.leaf_node.signature_key for kp in kps} == {bob.client.sig_pub, second.sig_pub}


async def test_claims_need_a_connection_or_an_opening_request(server):
    alice = await server.user("alice")
    bob = await server.user("bob")
    now = server.clock.now
    body = batch(make_kp(bob.client, now=now), make_kp(bob.client, last_resort=True, now=now))
    await publish(server.http, bob.client, body)
    r = await claim(server, alice, bob)
    assert r.status_code == 403 and r.json()["code"] == "no_connection"
    r = await claim(server, alice, type("U", (), {"user_id": "ghost@localhost"})())
    assert r.status_code == 404 and r.json()["code"] == "user_not_found"
    r = await server.http.post("/v1/connections", json={"to": bob.user_id}, headers=alice.headers)
    assert r.status_code == 201
    assert (await claim(server, alice, bob)).status_code == 200  # the opening request's one claim
    r = await claim(server, alice, bob)
    assert r.status_code == 403
    # bob has fewer ordinary packages than the reserve: the requester he has not accepted got
    # his last-resort package, which is kept (docs/api.md, "KeyPackages")
    assert (await count(server, bob))["count"] == 2
    # bob cannot claim alice's packages: only the requester got an allowance
    assert (await claim(server, bob, alice)).status_code == 403


async def test_a_claim_that_finds_nothing_keeps_the_requests_one_claim(server):
    """bob has published nothing: alice's claim under her opening request hands out nothing,
    so it spends nothing, and her claim after bob publishes gets his packages."""
    alice = await server.user("alice")
    bob = await server.user("bob")
    r = await server.http.post("/v1/connections", json={"to": bob.user_id}, headers=alice.headers)
    assert r.status_code == 201
    r = await claim(server, alice, bob)
    assert r.status_code == 200 and split_claim(r.content) == []
    now = server.clock.now
    body = batch(make_kp(bob.client, now=now), make_kp(bob.client, last_resort=True, now=now))
    await publish(server.http, bob.client, body)
    r = await claim(server, alice, bob)
    assert r.status_code == 200 and len(split_claim(r.content)) == 1
    assert (await claim(server, alice, bob)).status_code == 403  # that one was spent


def _resign(client, kp, **changes):
    """Rebuild a package with changed fields, correctly signed (to test semantic checks)."""
    from roost.mls.crypto.ciphersuite import get_cipher_suite
    from roost.mls.key_package_gen import sign_leaf_node

    cs = get_cipher_suite(1)
    leaf_changes = {k: changes.pop(k) for k in list(changes) if k in ("lifetime",)}
    leaf = kp.leaf_node
    if leaf_changes:
        leaf = sign_leaf_node(cs, dataclasses.replace(leaf, **leaf_changes), client.sig_priv)
    kp = dataclasses.replace(kp, leaf_node=leaf, **changes)
    sig = cs.sign_with_label(client.sig_priv, b"KeyPackageTBS", kp.tbs())
    return dataclasses.replace(kp, signature=sig)


@pytest.mark.parametrize(
    "case,code,status",
    [
        ("garbage", "malformed_mls", 400),
        ("truncated", "malformed_mls", 400),
        ("wrong_suite", "unsupported_cipher_suite", 422),
        ("expired", "invalid_lifetime", 422),
        ("too_long", "invalid_lifetime", 422),
        ("bad_signature", "invalid_signature", 422),
        ("other_client", "credential_mismatch", 422),
        ("no_last_resort", "no_last_resort", 422),
        ("duplicate_init_key", "duplicate_init_key", 422),
        ("wrong_media_type", "unsupported_media_type", 415),
        ("wrong_wire_format", "wrong_wire_format", 422),
    ],
)
async def test_publish_rejects_bad_batches_and_keeps_state(server, case, code, status):
    bob = await server.user("bob")
    carol = await server.user("carol")
    now = server.clock.now
    good = [make_kp(bob.client, now=now), make_kp(bob.client, last_resort=True, now=now)]
    assert (await publish(server.http, bob.client, batch(*good))).status_code == 201
    lr = make_kp(bob.client, last_resort=True, now=now)
    headers = {**bob.headers, **MLS}
    if case == "garbage":
        body = b"\x06\x00\x01\x00\x05\xff\xff"  # a KeyPackage cut short
    elif case == "truncated":
        body = batch(lr)[:-3]
    elif case == "wrong_suite":
        body = batch(_resign(bob.client, lr, cipher_suite=0xF0F0))
    elif case == "expired":
        body = batch(_resign(bob.client, lr, lifetime=Lifetime(int(now) - 100, int(now) - 10)))
    elif case == "too_long":
        body = batch(_resign(bob.client, lr, lifetime=Lifetime(int(now), int(now) + 400 * 86400)))
    elif case == "bad_signature":
        body = batch(dataclasses.replace(lr, signature=bytes(64)))
    elif case == "other_client":
        body = batch(make_kp(carol.client, last_resort=True, now=now))
    elif case == "no_last_resort":
        body = batch(make_kp(bob.client, now=now))
    elif case == "duplicate_init_key":
        body = batch(lr, lr)
    elif case == "wrong_media_type":
        body = batch(lr)
        headers["Content-Type"] = "application/octet-stream"
    else:  # a KeyPackage framed with the welcome wire format
        msg = kp_message(lr)
        body = batch(msg[:2] + (3).to_bytes(2, "big") + msg[4:])
    r = await server.http.post("/v1/keypackages", content=body, headers=headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == code
    # nothing changed: the earlier batch is intact
    assert (await count(server, bob))["count"] == 2


async def test_init_key_unique_across_clients(server):
    bob = await server.user("bob")
    now = server.clock.now
    kp = make_kp(bob.client, last_resort=True, now=now)
    assert (await publish(server.http, bob.client, batch(kp))).status_code == 201
    # republishing the same package replaces the old one (same client): fine
    assert (await publish(server.http, bob.client, batch(kp))).status_code == 201


async def test_no_double_hand_out_under_50_concurrent_claims(server):
    bob = await server.user("bob")
    claimers = [await server.user(f"c{i}") for i in range(5)]
    for c in claimers:
        await connect(server, c, bob)
    now = server.clock.now
    kps = [make_kp(bob.client, now=now) for _ in range(30)] + [
        make_kp(bob.client, last_resort=True, now=now)
    ]
    assert (await publish(server.http, bob.client, batch(*kps))).status_code == 201
    results = await asyncio.gather(*(claim(server, claimers[i % 5], bob) for i in range(50)))
    assert all(r.status_code == 200 for r in results)
    handed = [kp_message(split_claim(r.content)[0]) for r in results]
    normal = [h for h in handed if h != kp_message(kps[-1])]
    assert len(normal) == 30 and len(set(normal)) == 30  # each normal package exactly once
    assert handed.count(kp_message(kps[-1])) == 20  # then only the last-resort one
    assert (await count(server, bob))["count"] == 1


async def test_sweep_and_self_claims(server):
    from roost.server.maintenance import sweep

    bob = await server.user("bob")
    from .helpers import client_from, login, new_key

    priv, pub, key = new_key(bob.user_id)
    r = await server.http.post(
        "/v1/clients", json={"user_id": bob.user_id, "password": bob.password, "client": key}
    )
    bob2 = client_from(r.json(), priv, pub)
    await login(server.http, bob2)
    now = server.clock.now
    for c in (bob.client, bob2):
        await publish(
            server.http, c, batch(make_kp(c, now=now), make_kp(c, last_resort=True, now=now))
        )
    # a user claiming its own packages gets its other clients' ones, never the caller's own
    kps = split_claim((await claim(server, bob, bob)).content)
    assert [kp.leaf_node.signature_key for kp in kps] == [bob2.sig_pub]
    server.clock.advance(91 * 86400)  # every package and token has expired
    removed = await sweep(server.app.state.services)
    assert removed["keypackages"] == 3 and removed["auth"] >= 2
    await login(server.http, bob.client)
    assert (await count(server, bob))["count"] == 0


def _fuzz_target():
    """A valid one-package batch and its publisher, built once for the fuzz tests."""
    import functools

    @functools.cache
    def build():
        from roost.mls.credential import Credential
        from roost.mls.crypto.ciphersuite import get_cipher_suite
        from roost.server.auth.ca import CertificateAuthority
        from roost.server.keypackages.validation import Publisher

        from .helpers import TestClient

        cs = get_cipher_suite(1)
        priv, pub = cs.generate_signature_key_pair()
        ca = CertificateAuthority.generate("localhost")
        leaf = ca.issue_client_certificate("f@localhost/" + "0" * 36, 1, pub, 30)
        client = TestClient("f", "0", 1, priv, pub, [leaf, ca.certificate_der])
        assert Credential.x509(client.credential)
        body = batch(make_kp(client, last_resort=True))
        return body, Publisher(pub, leaf)

    return build()


def _check_only_client_errors(body: bytes) -> None:
    import time

    from roost.mls.errors import DecodeError
    from roost.server.errors import Problem
    from roost.server.keypackages.validation import validate_batch

    _, publisher = _fuzz_target()
    try:
        validate_batch(body, publisher, int(time.time()), 100, 90 * 86400)
    except DecodeError:
        pass
    except Problem as e:
        assert 400 <= e.status < 500


def test_fuzz_batches_only_ever_fail_as_client_errors():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    valid, _ = _fuzz_target()

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=600))
    def random_bytes(data: bytes) -> None:
        _check_only_client_errors(data)

    @settings(max_examples=300, deadline=None)
    @given(st.integers(0, len(valid) - 1), st.integers(1, 255), st.integers(0, 8))
    def mutated(pos: int, xor: int, cut: int) -> None:
        body = bytearray(valid)
        body[pos] ^= xor
        _check_only_client_errors(bytes(body[: len(body) - cut]))

    random_bytes()
    mutated()


def test_only_validation_makes_a_verified_key_package():
    import hashlib
    import time

    from roost.server.errors import Problem
    from roost.server.keypackages.validation import (
        KeyPackageIn,
        VerifiedKeyPackage,
        split_batch,
    )

    body, publisher = _fuzz_target()
    now = int(time.time())
    [package] = split_batch(body, 10)
    assert isinstance(package, KeyPackageIn)  # decoded, not yet trusted
    kp = package.key_package

    verified = package.validate(publisher, now, 90 * 86400)
    assert isinstance(verified, VerifiedKeyPackage)
    assert verified.data == package.data and body.endswith(verified.data)
    assert verified.cipher_suite == 1 and verified.last_resort
    assert verified.init_key_hash == hashlib.sha256(kp.init_key).digest()
    assert verified.not_after == kp.leaf_node.lifetime.not_after

    # Decoding accepts a package whose signature is wrong; only validate refuses it.
    forged = KeyPackageIn(package.data, dataclasses.replace(kp, signature=bytes(64)))
    with pytest.raises(Problem) as refused:
        forged.validate(publisher, now, 90 * 86400)
    assert refused.value.code == "invalid_signature"

    with pytest.raises(TypeError, match="only by KeyPackageIn.validate"):
        VerifiedKeyPackage(package.data, 1, True, b"\0" * 32, now + 60)
