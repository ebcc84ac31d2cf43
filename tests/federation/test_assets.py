"""Assets across domains (issue 12, item 8): a recipient downloads every asset through its own
homeserver, which fetches one held by another domain over the signed federation route
``GET /federation/v1/assets/{asset_id}``. Two real ``roost serve`` processes (a.test, b.test)
on loopback, SQLite and PostgreSQL."""

from __future__ import annotations

import secrets

import httpx
import pytest

from roost.client.assets import AssetReference, upload_asset

from .conftest import FEDERATION_ENGINES
from .harness import Federation

A, B = "a.test", "b.test"


@pytest.fixture(scope="module", params=FEDERATION_ENGINES)
def assets_pair(request, make_federation) -> Federation:
    return make_federation(domains=(A, B), engine=request.param)


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

    # The reference names the asset and its domain, never a server URL (issue 12: a URL leaks
    # the recipient's address to the uploader's server, and an internal URL is unreachable).
    wire = AssetReference.from_bytes(ref.to_bytes()).to_json()
    assert wire["domain"] == A and wire["asset_id"] == ref.asset_id
    assert "server" not in wire and fed[A].url not in ref.to_bytes().decode()
