"""Directory search of another domain (docs/api.md "GET /v1/directory", docs/federation.md "AS
flows"): a client asks its home server with ``domain=``; the home server asks that domain's
server with a signed ``GET /federation/v1/directory`` and answers the same shape.

Two real homeservers (a.test, b.test; SQLite, and PostgreSQL when ROOST_TEST_POSTGRES_URL is set),
and, for a peer answering garbage, a lone a.test pointed at loopback servers that answer fixed
JSON (tests/federation/harness.py ``RecordingServer``).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

from roost.client import RoostClient
from tests.integration.conftest import PASSWORD, Users, unique_name
from tests.integration.test_cli import Cli

from .harness import Federation, RecordingServer
from .test_as_flows import expect_error, signed_request

A, B = "a.test", "b.test"


async def test_a_remote_users_opt_in_is_searched_on_its_own_server(fed: Federation) -> None:
    tag = unique_name("s", 6)  # every name below starts with it: no other test's users match
    alice = await fed.users(A).new("alice")
    carol = await fed.users(B).new(tag + "c", discoverable=True, display_name="Carol B")
    hidden = await fed.users(B).new(tag + "h")  # not in the directory
    local = await fed.users(A).new(tag + "l", discoverable=True)

    page = await alice.search_users(tag, domain=B)
    assert [(u.user_id, u.user_uuid, u.display_name) for u in page.users] == [
        (carol.user_id, carol.state.user_uuid, "Carol B")
    ]
    assert page.next_cursor is None
    # By display name too, case-insensitive, as locally; the hidden user is never listed.
    assert [u.user_id for u in (await alice.search_users("carol b", domain=B)).users] == [
        carol.user_id
    ]
    assert (await alice.search_users(hidden.user_id.split("@")[0], domain=B)).users == ()
    # Without a domain, or with the home domain: the local directory, as before.
    assert [u.user_id for u in (await alice.search_users(tag)).users] == [local.user_id]
    assert [u.user_id for u in (await alice.search_users(tag, domain="A.TEST")).users] == [
        local.user_id
    ]
    # b's users search a.test the same way.
    assert [u.user_id for u in (await hidden.search_users(tag, domain=A)).users] == [local.user_id]

    # Pages: the remote's limit and cursor, passed through.
    more = [await fed.users(B).new(tag + "m", discoverable=True) for _ in range(2)]
    first = await alice.search_users(tag, domain=B, limit=2)
    assert len(first.users) == 2 and first.next_cursor
    rest = await alice.search_users(tag, domain=B, limit=2, cursor=first.next_cursor)
    assert rest.next_cursor is None
    assert sorted(u.user_id for u in first.users + rest.users) == sorted(
        [carol.user_id] + [m.user_id for m in more]
    )

    # Neither server logs the query text or the user ids found.
    for d in (A, B):
        assert tag not in fed[d].log_path.read_text(errors="replace")


async def test_malformed_searches_are_4xx_and_change_nothing(fed: Federation) -> None:
    alice = await fed.users(A).new("alice")
    tag = unique_name("s", 6)
    carol = await fed.users(B).new(tag, discoverable=True)
    for kwargs in (
        {"domain": "b.test:22"},
        {"domain": "b.test/admin"},
        {"domain": "-b.test"},
        {"domain": "x" * 300},
        {"domain": B, "limit": 0},
        {"domain": B, "limit": 1001},
        {"domain": B, "cursor": "c" * 65},
    ):
        await expect_error(400, "invalid_request", alice.search_users(tag, **kwargs))
    await expect_error(400, "invalid_request", alice.search_users("q" * 65, domain=B))
    await expect_error(400, "invalid_request", alice.search_users("", domain=B))
    # A valid domain nobody serves: the home server cannot reach it.
    await expect_error(
        502, "federation_unavailable", alice.search_users(tag, domain="nowhere.test")
    )
    # Still fine afterwards.
    assert [u.user_id for u in (await alice.search_users(tag, domain=B)).users] == [carol.user_id]


async def test_the_inbound_route_is_for_signed_requests_only(fed: Federation) -> None:
    tag = unique_name("s", 6)
    carol = await fed.users(B).new(tag, discoverable=True, display_name="Carol")
    async with httpx.AsyncClient(timeout=10) as http:
        unsigned = await http.get(fed[B].url + "/federation/v1/directory", params={"q": tag})
    assert unsigned.status_code == 401
    signed = await signed_request(
        fed[A], fed[B], "GET", "/federation/v1/directory", params={"q": tag}
    )
    assert signed.status_code == 200
    assert signed.json() == {
        "users": [
            {"user_id": carol.user_id, "user_uuid": carol.state.user_uuid, "display_name": "Carol"}
        ],
        "next_cursor": None,
    }
    bad = await signed_request(
        fed[A], fed[B], "GET", "/federation/v1/directory", params={"q": tag, "limit": "0"}
    )
    assert bad.status_code == 400


async def test_blocked_domain_is_refused_and_a_stopped_one_unavailable(fed: Federation) -> None:
    alice = await fed.users(A).new("alice")
    tag = unique_name("s", 6)
    carol = await fed.users(B).new(tag, discoverable=True)
    fed.policy(A, "open", block=[B])
    fed.wait_policy()
    try:
        await expect_error(403, "federation_refused", alice.search_users(tag, domain=B))
    finally:
        fed.policy(A, "open")
    # b blocking a: b refuses, and the client hears it from its own server.
    fed.policy(B, "open", block=[A])
    fed.wait_policy()
    try:
        await expect_error(403, "federation_refused", alice.search_users(tag, domain=B))
    finally:
        fed.policy(B, "open")
        fed.wait_policy()
    fed.stop(B)
    try:
        await expect_error(502, "federation_unavailable", alice.search_users(tag, domain=B))
    finally:
        fed.start(B)
    assert [u.user_id for u in (await alice.search_users(tag, domain=B)).users] == [carol.user_id]


async def test_remote_searches_are_rate_limited_per_user(fed: Federation) -> None:
    alice = await fed.users(A).new("alice")
    bob = await fed.users(A).new("bob")
    # The default budget (limits.remote_searches_per_minute, 30), then 429.
    for _ in range(30):
        await alice.search_users("zz", domain=B)
    err = await expect_error(429, "rate_limited", alice.search_users("zz", domain=B))
    assert err.status == 429
    # Local searches and other users are not counted against it.
    await alice.search_users("zz")
    await bob.search_users("zz", domain=B)


def test_cli_search_of_another_domain(pair: Federation, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ROOST_PASSWORD", PASSWORD)
    tag = unique_name("s", 6)
    alice = Cli(pair[A].url, tmp_path / "alice")
    carol = Cli(pair[B].url, tmp_path / "carol")
    alice.run("register", unique_name("ca"))
    c = carol.run("register", tag, "--discoverable")
    page = alice.run("search", tag, "--domain", B)
    assert [u["user_id"] for u in page["users"]] == [c["user_id"]]
    assert alice.run("search", tag)["users"] == []


# ---- a peer answering garbage ---------------------------------------------------------------


def _user(user_id: str, display_name: str | None = "X") -> dict[str, object]:
    return {"user_id": user_id, "user_uuid": str(uuid.uuid4()), "display_name": display_name}


PEERS = {
    # well-formed: listed as the peer says
    "good.test": {"users": [_user("zed@good.test")], "next_cursor": "zed"},
    # a user of another domain
    "liar.test": {"users": [_user("zed@good.test")], "next_cursor": None},
    # more users than asked for (limit=2)
    "many.test": {"users": [_user(f"u{i}@many.test") for i in range(3)], "next_cursor": None},
    # an answer far larger than a page of two users can be
    "big.test": {"users": [], "next_cursor": None, "pad": "x" * 100_000},
    # not the shape at all
    "odd.test": {"users": "everyone"},
    # a display name longer than any server accepts
    "long.test": {"users": [_user("zed@long.test", "n" * 129)], "next_cursor": None},
    # a cursor longer than the client API takes back
    "cursor.test": {"users": [], "next_cursor": "c" * 65},
}


async def test_a_peers_answer_is_bounded_and_checked(make_federation, tmp_path: Path) -> None:
    peers = {d: RecordingServer(answer) for d, answer in PEERS.items()}
    for p in peers.values():
        p.__enter__()
    try:
        lone = make_federation(
            domains=(A,),
            extra_env={
                "ROOST_FEDERATION_RESOLVE": ",".join(
                    f"{d}=127.0.0.1:{p.port}" for d, p in peers.items()
                ),
                "ROOST_FEDERATION_INSECURE_DOMAINS": ",".join(peers),
            },
        )
        users = Users(lone[A].url)
        try:
            alice: RoostClient = await users.new("alice")
            page = await alice.search_users("z", domain="good.test", limit=2)
            assert [u.user_id for u in page.users] == ["zed@good.test"]
            assert page.next_cursor == "zed"
            [asked] = peers["good.test"].requests
            url = urlsplit(asked.path)
            assert url.path == "/federation/v1/directory"
            assert parse_qs(url.query) == {"q": ["z"], "limit": ["2"]}
            assert {"signature", "signature-input", "roost-origin"} <= {
                k.lower() for k in asked.headers
            }
            for d in ("liar.test", "many.test", "big.test", "odd.test", "long.test", "cursor.test"):
                await expect_error(
                    502, "federation_unavailable", alice.search_users("z", domain=d, limit=2)
                )
            # The server is fine afterwards.
            assert (await alice.search_users("z")).users == ()
            assert lone[A].running
        finally:
            await users.aclose()
    finally:
        for p in peers.values():
            p.__exit__(None, None, None)
