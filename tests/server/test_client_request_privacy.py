"""Another user's device request is not found, not forbidden.

A request id names a pending request of one user; to anyone else it answers exactly as an
unknown id does (``404 request_not_found``), so a request's existence is not disclosed.
"""

from __future__ import annotations

from .helpers import new_key


async def test_another_users_device_request_is_not_found(server):
    alice = await server.user("alice")
    mallory = await server.user("mallory")
    _, _, key = new_key(alice.user_id)
    asked = await server.http.post(
        "/v1/client-requests", json={"user_id": alice.user_id, "client": key}
    )
    assert asked.status_code == 201
    [req] = (await server.http.get("/v1/client-requests", headers=alice.headers)).json()["requests"]
    for action in ("approve", "reject"):
        theirs = await server.http.post(
            f"/v1/client-requests/{req['request_id']}/{action}", headers=mallory.headers
        )
        unknown = await server.http.post(
            f"/v1/client-requests/00000000-0000-4000-8000-000000000000/{action}",
            headers=mallory.headers,
        )
        assert theirs.status_code == unknown.status_code == 404, theirs.text
        assert theirs.json()["code"] == unknown.json()["code"] == "request_not_found"
    # Alice's request is untouched and she can still approve it.
    r = await server.http.post(
        f"/v1/client-requests/{req['request_id']}/approve", headers=alice.headers
    )
    assert r.status_code == 201
