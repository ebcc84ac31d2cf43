"""Strings no database column can hold (NUL, lone surrogates, bytes that are not UTF-8) get a
400 problem+json answer on both engines, never a 500, and leave stored data intact."""

from __future__ import annotations

import httpx

from .harness import ServerProcess

PROBLEM = "application/problem+json"
NUL_JSON = '"a\\u0000b"'  # the JSON text of a string holding a NUL
SURROGATE_JSON = '"a\\ud800b"'  # a lone surrogate: no UTF-8 encoding exists


def _rejected(resp: httpx.Response) -> None:
    assert resp.status_code == 400, (resp.request.method, resp.request.url, resp.text)
    assert resp.headers["content-type"].startswith(PROBLEM)
    assert resp.json()["code"] == "invalid_request", resp.json()


async def test_nul_bytes_from_issue_12_are_refused_alike(server: ServerProcess, users) -> None:
    alice = await users.new("alice")
    await alice.set_display_name("Alice")
    token = await alice.bearer_token()
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        # without a login
        _rejected(
            await http.post(
                "/v1/auth/token",
                content='{"challenge_id":' + NUL_JSON + ',"signature":"AAAA"}',
                headers={"Content-Type": "application/json"},
            )
        )
        # with one
        for method, path in (
            ("GET", "/v1/assets/%00"),
            ("DELETE", "/v1/assets/%00"),
            ("GET", "/v1/directory?q=%00"),
            ("GET", "/v1/directory?q=a&cursor=%00"),
            ("DELETE", "/v1/clients/%00"),
            ("POST", "/v1/client-requests/%00/approve"),
            ("GET", "/v1/directory?q=%FF"),  # not UTF-8
            ("GET", "/v1/assets/%ED%A0%80"),  # an encoded surrogate: not UTF-8 either
        ):
            _rejected(await http.request(method, path, headers=auth))
        for name in (NUL_JSON, SURROGATE_JSON):
            _rejected(
                await http.patch(
                    "/v1/me",
                    content='{"display_name":' + name + "}",
                    headers={**auth, "Content-Type": "application/json"},
                )
            )
        _rejected(
            await http.patch(
                "/v1/me",
                content=b'{"display_name":"a\xffb"}',
                headers={**auth, "Content-Type": "application/json"},
            )
        )
        # an escaped backslash before "u0000" is an ordinary string, not a NUL
        ok = await http.patch(
            "/v1/me",
            content='{"display_name":"a\\\\u0000b"}',
            headers={**auth, "Content-Type": "application/json"},
        )
        assert ok.status_code == 200, ok.text
        assert ok.json()["display_name"] == "a\\u0000b"
        await alice.set_display_name("Alice")
    assert (await alice.me()).display_name == "Alice"  # stored data intact
    assert "Traceback" not in server.log_tail(400)
