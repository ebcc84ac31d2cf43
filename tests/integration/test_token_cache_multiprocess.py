"""The token cache across ``roost serve`` processes on one PostgreSQL: a token that process A
has just accepted (and cached) stops working on A as soon as process B revokes it — on the
general routes and on the send fast path alike, without waiting for the cache to expire."""

from __future__ import annotations

import time

import httpx
import pytest

from roost.client.groups import group_path, new_group_id
from roost.protocol.media_types import MLS_MEDIA_TYPE

from .conftest import Users
from .test_multiprocess import two_servers  # noqa: F401 - the two-process fixture

pytestmark = pytest.mark.timeout(180)

# No group of that id exists and the body is no message: an authenticated send is refused for
# that (4xx), an unauthenticated one with 401 first.
MISSING_GROUP = group_path(new_group_id("localhost"))


async def _status_on(http: httpx.AsyncClient, token: str) -> tuple[int, int]:
    """(GET /v1/me, POST of a message) with ``token``."""
    auth = {"Authorization": f"Bearer {token}"}
    me = await http.get("/v1/me", headers=auth)
    send = await http.post(
        f"/v1/groups/{MISSING_GROUP}/messages",
        content=b"\x00\x01",
        headers={**auth, "Content-Type": MLS_MEDIA_TYPE, "Roost-Message-Id": "m1"},
    )
    return me.status_code, send.status_code


async def _refused_within(http: httpx.AsyncClient, token: str, seconds: float) -> float:
    t0 = time.monotonic()
    while True:
        if await _status_on(http, token) == (401, 401):
            return time.monotonic() - t0
        assert time.monotonic() - t0 < seconds, "the revoked token still works"


@pytest.fixture
async def users_on(two_servers):  # noqa: F811
    made: list[Users] = []

    def on(i: int) -> Users:
        made.append(Users(two_servers[i].url))
        return made[-1]

    yield on
    for u in made:
        await u.aclose()


async def test_a_client_removed_through_b_is_refused_by_a_at_once(two_servers, users_on):  # noqa: F811
    a, _b, _ = two_servers
    on_a, on_b = users_on(0), users_on(1)
    owner = await on_b.new("tc-owner", password="correct horse battery staple")
    second = await on_a.second_client(owner)
    token = await second.bearer_token()
    async with httpx.AsyncClient(base_url=a.url) as http:
        for _ in range(3):  # accepted, and now cached by A (the cache keeps it 5 s)
            me, send = await _status_on(http, token)
            assert me == 200 and send != 401
        await owner.remove_client(second.client_uuid)  # through B
        # At once: the NOTIFY reaches A within milliseconds, far below the cache's 5 s.
        assert await _refused_within(http, token, 2.0) < 2.0


async def test_an_account_deleted_through_b_is_refused_by_a_at_once(two_servers, users_on):  # noqa: F811
    a, b, _ = two_servers
    user = await users_on(0).new("tc-gone")
    token = await user.bearer_token()
    async with (
        httpx.AsyncClient(base_url=a.url) as on_a,
        httpx.AsyncClient(base_url=b.url) as on_b,
    ):
        me, send = await _status_on(on_a, token)
        assert me == 200 and send != 401
        r = await on_b.delete("/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code < 300, r.text
        assert await _refused_within(on_a, token, 2.0) < 2.0
