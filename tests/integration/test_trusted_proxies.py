"""``X-Forwarded-For`` is believed only from ``trusted_proxies`` (default: nobody), so a client
cannot reset the per-address registration limit by naming another address.
Rate limits live in memory, not storage: one engine suffices."""

from __future__ import annotations

from pathlib import Path

import httpx

from .harness import ServerProcess

LIMIT = 3
ASK = {"user_id": "nobody@localhost", "client": {"signature_key": "AA", "proof": "AA"}}


def _start(tmp_path: Path, extra: dict[str, str]) -> ServerProcess:
    env = {"ROOST_LIMITS_REGISTRATIONS_PER_MINUTE": str(LIMIT), **extra}
    return ServerProcess("sqlite", tmp_path / "data", extra_env=env).start()


def _limited(http: httpx.Client, forwarded_for: str | None = None) -> bool:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    resp = http.post("/v1/client-requests", json=ASK, headers=headers)
    assert resp.status_code < 500, resp.text
    return resp.status_code == 429


def test_forwarded_for_is_ignored_by_default(tmp_path: Path) -> None:
    server = _start(tmp_path, {})
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            assert [_limited(http) for _ in range(LIMIT)] == [False] * LIMIT
            assert _limited(http)
            spoofed = [_limited(http, f"198.51.100.{i}") for i in range(15)]
            assert spoofed == [True] * 15
    finally:
        server.stop()


def test_forwarded_for_is_believed_from_a_trusted_proxy(tmp_path: Path) -> None:
    server = _start(tmp_path, {"ROOST_TRUSTED_PROXIES": "127.0.0.1,::1"})
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            first = [_limited(http, "198.51.100.1") for _ in range(LIMIT + 1)]
            assert first == [False] * LIMIT + [True]
            # each client behind the proxy has its own budget
            assert not any(_limited(http, f"198.51.100.{i}") for i in range(2, 17))
    finally:
        server.stop()
