"""Assets across domains: a recipient downloads every asset through its own
homeserver, which fetches one held by another domain over the signed federation route
``GET /federation/v1/assets/{asset_id}``. Two real ``roost serve`` processes (a.test, b.test)
on loopback, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import secrets

import httpx
import pytest

from roost.client import RoostError
from roost.client.assets import (
    AssetReference,
    ciphertext_size,
    delete_asset,
    download_asset,
    download_asset_to,
    upload_asset,
)

from .conftest import FEDERATION_ENGINES
from .harness import Federation

A, B = "a.test", "b.test"
KIB = 1024
B_MAX_ASSET = 300 * KIB  # b.test relays (and stores) at most this much; a.test allows more


@pytest.fixture(scope="module", params=FEDERATION_ENGINES)
def assets_pair(request, make_federation) -> Federation:
    return make_federation(
        domains=(A, B),
        engine=request.param,
        env_per_domain={B: {"ROOST_LIMITS_MAX_ASSET_BYTES": str(B_MAX_ASSET)}},
    )


@pytest.fixture
async def fed(assets_pair: Federation):
    yield assets_pair
    await assets_pair.aclose_users()


def _record_hosts(client) -> list[str]:
    """The base URLs of every request ``client``'s HTTP session sends from now on."""
    seen: list[str] = []

    async def hook(request: httpx.Request) -> None:
        seen.append(f"{request.url.scheme}://{request.url.netloc.decode()}")

    client.http.event_hooks["request"].append(hook)
    return seen


async def test_recipient_downloads_a_foreign_asset_through_its_own_homeserver(fed: Federation):
    alice = await fed.users(A).new("alice")
    bob = await fed.users(B).new("bob")
    plaintext = secrets.token_bytes(100_000)
    ref = await upload_asset(alice, plaintext, name="plans.pdf")

    # The reference names the asset and its domain, never a server URL (a URL leaks
    # the recipient's address to the uploader's server, and an internal URL is unreachable).
    wire = AssetReference.from_bytes(ref.to_bytes()).to_json()
    assert wire["domain"] == A and wire["asset_id"] == ref.asset_id
    assert "server" not in wire and fed[A].url not in ref.to_bytes().decode()

    # Bob's client talks to b.test only; b.test fetches the ciphertext from a.test.
    bob_hosts = _record_hosts(bob)
    received = AssetReference.from_bytes(ref.to_bytes())
    assert await download_asset(bob, received) == plaintext
    await download_asset_to(bob, received, fed[B].data_dir / "plans.pdf")
    assert (fed[B].data_dir / "plans.pdf").read_bytes() == plaintext
    assert bob_hosts and set(bob_hosts) == {fed[B].url}

    # a.test still holds only ciphertext (b.test relayed it without a key to decrypt it)
    blob = (fed[A].data_dir / "assets" / ref.asset_id[:2] / ref.asset_id).read_bytes()
    assert len(blob) == ciphertext_size(len(plaintext)) and plaintext[:64] not in blob

    # the uploader withdraws it: the relayed download answers a.test's 404
    await delete_asset(alice, ref)
    with pytest.raises(RoostError) as e:
        await download_asset(bob, received)
    assert (e.value.status, e.value.code) == (404, "asset_not_found")


async def test_relay_is_for_own_users_and_needs_the_capability(fed: Federation):
    alice = await fed.users(A).new("alice")
    bob = await fed.users(B).new("bob")
    ref = await upload_asset(alice, b"the plans")
    path = f"/v1/assets/{A}/{ref.asset_id}"
    async with httpx.AsyncClient(base_url=fed[B].url, timeout=30) as http:
        # b.test relays for its own users only: not an open proxy towards other domains
        r = await http.get(path, headers={"Roost-Capability": ref.capability})
        assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
        token = {"Authorization": f"Bearer {await bob.bearer_token()}"}
        # one character of the real capability changed: the first, since the last carries
        # only four bits and a fixed replacement there can equal the original
        tampered = ("B" if ref.capability[0] != "B" else "C") + ref.capability[1:]
        for capability in (secrets.token_urlsafe(32), "", tampered):
            r = await http.get(path, headers={**token, "Roost-Capability": capability})
            assert r.status_code == 404 and r.json()["code"] == "asset_not_found"
        r = await http.get(
            f"/v1/assets/not_a_domain!/{ref.asset_id}",
            headers={**token, "Roost-Capability": ref.capability},
        )
        assert r.status_code == 400
        r = await http.get(path, headers={**token, "Roost-Capability": ref.capability})
        assert r.status_code == 200 and len(r.content) == ciphertext_size(len(b"the plans"))
    # the federation route answers signed requests of peer servers only
    async with httpx.AsyncClient(base_url=fed[A].url, timeout=30) as http:
        r = await http.get(
            f"/federation/v1/assets/{ref.asset_id}", headers={"Roost-Capability": ref.capability}
        )
        assert r.status_code == 401 and r.json()["code"] == "invalid_signature"


async def test_relay_is_bounded_by_the_own_size_cap(fed: Federation):
    alice = await fed.users(A).new("alice")
    bob = await fed.users(B).new("bob")
    big = await upload_asset(alice, secrets.token_bytes(B_MAX_ASSET))  # a.test stores it
    with pytest.raises(RoostError) as e:
        await download_asset(bob, big)
    assert (e.value.status, e.value.code) == (502, "federation_unavailable")
    # the uploader's own users still download it from a.test
    assert len(await download_asset(alice, big)) == B_MAX_ASSET


async def test_first_format_reference_is_fetched_through_the_own_homeserver(fed: Federation):
    """A ``roost.asset.v1`` reference names a server URL: its host is taken as the domain and
    the download still goes through the own homeserver."""
    alice = await fed.users(A).new("alice")
    bob = await fed.users(B).new("bob")
    ref = await upload_asset(alice, b"from before the upgrade")
    legacy = {k: v for k, v in ref.to_json().items() if k != "domain"}
    legacy.update(type="roost.asset.v1", server=f"https://{A}:8448")
    old = AssetReference.from_bytes(json.dumps(legacy).encode())
    bob_hosts = _record_hosts(bob)
    assert await download_asset(bob, old) == b"from before the upgrade"
    assert set(bob_hosts) == {fed[B].url}


async def test_federation_policy_applies_both_ways(fed: Federation):
    alice = await fed.users(A).new("alice")
    bob = await fed.users(B).new("bob")
    ref = await upload_asset(alice, b"policy")
    try:
        fed.policy(B, "open", block=[A])  # b.test does not fetch from a.test
        fed.wait_policy()
        with pytest.raises(RoostError) as e:
            await download_asset(bob, ref)
        assert (e.value.status, e.value.code) == (403, "federation_refused")
    finally:
        fed.policy(B, "open")
    try:
        fed.policy(A, "open", block=[B])  # a.test does not answer b.test
        fed.wait_policy()
        with pytest.raises(RoostError) as e:
            await download_asset(bob, ref)
        assert (e.value.status, e.value.code) == (403, "federation_refused")
    finally:
        fed.policy(A, "open")
    fed.wait_policy()
    assert await download_asset(bob, ref) == b"policy"
