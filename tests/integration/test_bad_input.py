"""Bad input gets a 4xx application/problem+json answer with a stable code, never a 500,
and leaves stored state unchanged."""

from __future__ import annotations

import httpx
import pytest

from roost.client import RoostClient, RoostError
from roost.protocol.key_package_batch import encode_key_package_batch

from .harness import TEST_ENV

MAX_BODY = int(TEST_ENV["ROOST_LIMITS_MAX_BODY_BYTES"])
MAX_MESSAGE = int(TEST_ENV["ROOST_LIMITS_MAX_MESSAGE_BYTES"])
PROBLEM = "application/problem+json"


async def _raw(client: RoostClient, method: str, path: str, **kwargs) -> httpx.Response:
    """Send with the client's token but without the library's own checks."""
    headers = kwargs.pop("headers", {})
    headers["Authorization"] = f"Bearer {await client.bearer_token()}"
    return await client.http.request(method, path, headers=headers, **kwargs)


def _problem(resp: httpx.Response, status: int | set[int], code: str) -> None:
    statuses = {status} if isinstance(status, int) else status
    assert resp.status_code in statuses, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith(PROBLEM), resp.headers
    body = resp.json()
    assert body["code"] == code and body["status"] == resp.status_code, body


async def test_malformed_mls_and_wrong_media_type(users):
    alice = await users.new("alice", keypackages=2)
    before = await alice.key_package_count()
    good = encode_key_package_batch(alice.generate_key_packages(1)[0])
    for body in (b"", b"\xff", b"\x40", b"\x03\x00\x01\x00", good + b"\x00", good[:-1]):
        resp = await _raw(
            alice, "POST", "/v1/keypackages", content=body, headers={"Content-Type": "message/mls"}
        )
        _problem(resp, 400, "malformed_mls")
    resp = await _raw(
        alice, "POST", "/v1/keypackages", content=good, headers={"Content-Type": "application/json"}
    )
    _problem(resp, 415, "unsupported_media_type")
    assert await alice.key_package_count() == before


async def test_oversized_bodies(users):
    alice = await users.new("alice", keypackages=2)
    bob = await users.new("bob")
    before = await alice.key_package_count()
    huge = b"\x00" * (MAX_BODY + 1)
    resp = await _raw(
        alice, "POST", "/v1/keypackages", content=huge, headers={"Content-Type": "message/mls"}
    )
    _problem(resp, 413, "body_too_large")

    async def chunks():  # no Content-Length: the cap is enforced while streaming
        for _ in range(MAX_BODY // 65536 + 2):
            yield b"\x00" * 65536

    resp = await _raw(
        alice, "POST", "/v1/keypackages", content=chunks(), headers={"Content-Type": "message/mls"}
    )
    _problem(resp, 413, "body_too_large")
    assert await alice.key_package_count() == before

    q = await alice.create_queue()
    with pytest.raises(RoostError) as e:
        await alice.enqueue(q, b"m" * (MAX_MESSAGE + 1))
    assert (e.value.status, e.value.code) == (413, "body_too_large")
    assert await alice.enqueue(q, b"m" * MAX_MESSAGE) == 1  # exactly the cap is fine
    assert [m.seq for m in (await alice.fetch_queue(q)).messages] == [1]

    conn = await alice.open_connection(bob.user_id)
    with pytest.raises(RoostError) as e:
        await alice.send_connection_request(conn.connection_id, b"w" * (MAX_MESSAGE + 1))
    assert (e.value.status, e.value.code) == (413, "body_too_large")
    assert [c.state for c in await alice.connections()] == ["opening"]
    assert (await bob.fetch_direct()).events == ()

    name = "big" + alice.user_id[:6]
    resp = await alice.http.post(
        "/v1/register",
        json={"name": name, "display_name": "x" * MAX_BODY, "client": {}},
    )
    _problem(resp, 413, "body_too_large")
    with pytest.raises(RoostError) as e:
        await alice.lookup_user(f"{name}@localhost")
    assert e.value.code == "user_not_found"


async def test_an_over_limit_body_is_413_whether_chunked_or_with_content_length(users):
    """The cap answers alike however the length is told, also for JSON routes (whose body the
    framework parses: a cut-off stream used to surface there as a 400 parse error)."""
    alice = await users.new("alice")
    body = b'{"display_name": "' + b"x" * MAX_BODY + b'"}'

    async def chunks():  # no Content-Length: the cap is enforced while streaming
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    headers = {"Content-Type": "application/json"}
    sized = await _raw(alice, "PATCH", "/v1/me", content=body, headers=dict(headers))
    _problem(sized, 413, "body_too_large")
    chunked = await _raw(alice, "PATCH", "/v1/me", content=chunks(), headers=dict(headers))
    _problem(chunked, 413, "body_too_large")
    assert (await alice.me()).display_name != "x" * MAX_BODY


async def test_unknown_users(users):
    alice = await users.new("alice")
    for target in ("nobody-known@localhost", "alice@elsewhere.example", "not-a-user-id"):
        for call in (
            alice.lookup_user(target),
            alice.user_clients(target),
            alice.claim_key_packages(target),
            alice.send_direct(target, b"x"),
            alice.open_connection(target),
        ):
            with pytest.raises(RoostError) as e:
                await call
            assert 400 <= e.value.status < 500 and e.value.problem.get("code"), e.value
            if target.endswith("@localhost"):
                assert (e.value.status, e.value.code) == (404, "user_not_found")
            elif "@" in target:
                # A fresh server federates with nobody (empty allowlist); claims and direct
                # messages stop earlier, at the local connection rule.
                assert e.value.status == 403
                assert e.value.code in ("federation_refused", "no_connection")
    assert await alice.connections() == []


async def test_a_connection_cursor_beyond_the_database_integer_range_is_400(users):
    """Found by schemathesis: a cursor whose time part is too big for a 64-bit column reached
    the database (500 on SQLite)."""
    alice = await users.new("alice")
    for cursor in ("9" * 19 + ":x", "99999999999999999999999999:x"):
        resp = await _raw(alice, "GET", "/v1/connections", params={"cursor": cursor})
        _problem(resp, 400, "invalid_request")


async def test_invalid_json_and_parameters(users):
    alice = await users.new("alice", display_name="Alice")
    q = await alice.create_queue()
    await alice.enqueue(q, b"keep me")
    bad = [
        (
            "PATCH",
            "/v1/me",
            {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
        ),
        ("PATCH", "/v1/me", {"json": {"display_name": 42}}),
        ("PATCH", "/v1/me", {"json": {"display_name": ""}}),
        ("POST", f"/v1/queues/{q}/ack", {"json": {"up_to": "all"}}),
        ("POST", f"/v1/queues/{q}/ack", {"json": {"up_to": -1}}),
        ("POST", f"/v1/queues/{q}/ack", {"json": []}),
        ("GET", f"/v1/queues/{q}/messages", {"params": {"limit": 0}}),
        ("GET", f"/v1/queues/{q}/messages", {"params": {"after": "x"}}),
        ("GET", "/v1/directory", {"params": {"q": ""}}),
        ("GET", "/v1/directory", {"params": {"q": "a", "limit": 0}}),
        ("POST", "/v1/connections", {"json": {"too": "bob@localhost"}}),
        ("POST", "/v1/users/alice@localhost/keypackages/claim", {"params": {"cipher_suite": "x"}}),
    ]
    for method, path, kwargs in bad:
        resp = await _raw(alice, method, path, **kwargs)
        _problem(resp, {400, 422}, "invalid_request")
    me = await alice.me()
    assert me.display_name == "Alice"
    assert [m.payload for m in (await alice.fetch_queue(q)).messages] == [b"keep me"]


async def test_unauthenticated_bad_input(server):
    async with httpx.AsyncClient(base_url=server.url) as http:
        for body in ({}, {"name": "ok-name"}, {"name": "ok", "client": {"cipher_suite": 1}}):
            _problem(await http.post("/v1/register", json=body), {400, 422}, "invalid_request")
        resp = await http.post(
            "/v1/register", content=b"\x00\x01", headers={"Content-Type": "application/json"}
        )
        _problem(resp, {400, 422}, "invalid_request")
        resp = await http.post("/v1/auth/token", json={"challenge_id": "nope", "signature": "AA"})
        _problem(resp, 401, "auth_failed")
        _problem(await http.get("/v1/no-such-route"), 404, "not_found")
        # NUL and bytes that are not UTF-8 are refused before any lookup (input_guard.py)
        _problem(await http.get("/v1/client-requests/%00%ff"), 400, "invalid_request")
