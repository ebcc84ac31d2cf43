"""Where a client's request can make its home server send a request to another server.

A client's ``/v1/groups/{remote group}/...`` request is sent, signed by its home server, to the
group's DS. A path with dot segments (``%2e%2e`` is decoded to ``..`` by the server, and the
outbound URL is normalised) must not turn that into a signed request to another federation
route of the peer (the inbox, connections, claims): the home server would be speaking for all
its users with a body the client chose. In open mode, a user id or domain a client types must
not make the server connect to an IP address, a port of its choice or an internal name."""

from __future__ import annotations

import httpx
import pytest

from roost.protocol.base64url import b64u

from .harness import Federation

A, B = "a.test", "b.test"


@pytest.fixture(scope="module")
def pair(make_federation) -> Federation:
    """SQLite only (overrides the conftest's engine-parametrised pair)."""
    return make_federation(domains=(A, B))


async def test_dot_segments_do_not_escape_the_group_routes(fed: Federation) -> None:
    alice = await fed.users(A).new("alice")
    token = await alice._token(None)
    segment = b64u(b"G" * 22 + b"@" + B.encode())
    async with httpx.AsyncClient(base_url=fed[A].url, timeout=10) as http:
        for path in (
            f"/v1/groups/{segment}/%2e%2e/%2e%2e/whoami",
            f"/v1/groups/{segment}/%2E%2E/%2e%2e/whoami",
            f"/v1/groups/{segment}/messages/%2e%2e/%2e%2e/%2e%2e/whoami",
        ):
            r = await http.get(path, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 404, (path, r.status_code, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.json()["code"] == "not_found"
        # a real group route of the remote DS is still forwarded (its own 404 comes back)
        r = await http.get(f"/v1/groups/{segment}", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 404 and r.json()["code"] == "group_not_found", r.text


async def test_open_mode_does_not_reach_addresses_that_are_not_domain_names(
    fed: Federation,
) -> None:
    """Open mode admits every domain, but a user id or domain a client types must not make the
    server connect to an IP address, a port of its choice or a dotless (internal) name."""
    alice = await fed.users(A).new("carol")
    token = await alice._token(None)
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=fed[A].url, timeout=30) as http:
        for path in (
            "/v1/users/x@127.0.0.1:1",
            "/v1/users/x@127.0.0.1",
            "/v1/users/x@localhost/clients",
            "/v1/domains/127.0.0.1/as-certificate",
            "/v1/domains/localhost/as-certificate",
        ):
            r = await http.get(path, headers=auth)
            assert r.status_code in (400, 403, 404), (path, r.status_code, r.text)
            assert r.json()["code"] in ("invalid_request", "federation_refused", "user_not_found")
