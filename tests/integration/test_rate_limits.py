"""Per-user claim rate limit: 429 rate_limited with Retry-After, nothing handed out."""

from __future__ import annotations

import pytest

from roost.client import RoostError

from .conftest import STRICT_CLAIMS_PER_MINUTE, Users


async def test_claims_are_rate_limited_per_user(strict_server):
    users = Users(strict_server.url)
    try:
        alice, bob = await users.connected_pair()
        await bob.publish_key_packages(20)
        await alice.publish_key_packages(2)
        phone = await users.second_client(alice)
        for _ in range(STRICT_CLAIMS_PER_MINUTE):
            await alice.claim_key_packages(bob.user_id)
        left = (await bob.key_package_count()).count
        with pytest.raises(RoostError) as e:
            await alice.claim_key_packages(bob.user_id)
        assert (e.value.status, e.value.code) == (429, "rate_limited")
        assert e.value.retry_after is not None and e.value.retry_after >= 1
        resp = await alice.http.post(
            f"/v1/users/{bob.user_id}/keypackages/claim",
            headers={"Authorization": f"Bearer {await alice.bearer_token()}"},
        )
        assert resp.status_code == 429 and int(resp.headers["Retry-After"]) >= 1
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert (await bob.key_package_count()).count == left  # nothing handed out
        # The budget is the requesting user's: more clients add none, other users keep theirs.
        with pytest.raises(RoostError) as e:
            await phone.claim_key_packages(bob.user_id)
        assert e.value.code == "rate_limited"
        assert len(await bob.claim_key_packages(alice.user_id)) == 1
    finally:
        await users.aclose()
