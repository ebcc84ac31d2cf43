"""Idle, slow-header (slowloris) and slow-body clients are cut off within the configured time,
connections beyond the cap are refused with a 503, and a normal client is served meanwhile.
Connection handling does not touch storage: one engine suffices."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .harness import ServerProcess

HEADER_TIMEOUT = 2
BODY_TIMEOUT = 3
MAX_CONNECTIONS = 40
SLACK = 2.5  # scheduling on a busy test machine


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {
        "ROOST_LIMITS_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "ROOST_LIMITS_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
        "ROOST_LIMITS_KEEPALIVE_TIMEOUT_SECONDS": "2",
        "ROOST_LIMITS_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    }
    data_dir: Path = tmp_path_factory.mktemp("limited")
    server = ServerProcess("sqlite", data_dir, extra_env=env).start()
    yield server
    server.stop()


def _connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.settimeout(0.05)
    return sock


def _closed(sock: socket.socket) -> bool:
    """True once the server has closed its side (EOF or reset); answers are read and skipped."""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except TimeoutError:
        return False
    except OSError:  # reset by the server
        return True


def _dribble(sock: socket.socket, data: bytes, limit: float) -> float:
    """Send ``data`` one byte every 0.5 s until the server closes; the seconds that took."""
    started = time.monotonic()
    for byte in data:
        if _closed(sock):
            return time.monotonic() - started
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return time.monotonic() - started
        time.sleep(0.5)
        assert time.monotonic() - started < limit, "the slow client was not cut off"
    pytest.fail("the server read the whole slow request")


def _healthy(server: ServerProcess) -> None:
    resp = httpx.get(server.url + "/health", timeout=5)
    assert resp.status_code == 200


def test_slow_headers_are_cut_off_and_others_served(limited_server: ServerProcess) -> None:
    sock = _connect(limited_server)
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200 + b"\r\n\r\n"
    _healthy(limited_server)  # served while the slow client holds its connection
    _dribble(sock, request, HEADER_TIMEOUT + SLACK)
    sock.close()
    _healthy(limited_server)


def test_idle_connection_is_closed(limited_server: ServerProcess) -> None:
    sock = _connect(limited_server)
    started = time.monotonic()
    while not _closed(sock):
        assert time.monotonic() - started < HEADER_TIMEOUT + SLACK, "idle connection kept"
        time.sleep(0.2)
    sock.close()


def test_slow_body_is_cut_off(limited_server: ServerProcess) -> None:
    sock = _connect(limited_server)
    body = b'{"user_id":"nobody@localhost","client":{"signature_key":"AA","proof":"AA"}}'
    head = (
        b"POST /v1/client-requests HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    sock.sendall(head)
    _dribble(sock, body, BODY_TIMEOUT + SLACK)
    sock.close()
    _healthy(limited_server)


def test_normal_clients_keep_working(limited_server: ServerProcess) -> None:
    with httpx.Client(base_url=limited_server.url, timeout=5) as http:
        for _ in range(3):  # one kept-alive connection, several requests
            assert http.get("/health").status_code == 200
        slow_but_fine = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        sock = _connect(limited_server)
        sock.settimeout(5)
        for i in range(0, len(slow_but_fine), 8):  # well within the header deadline
            sock.sendall(slow_but_fine[i : i + 8])
            time.sleep(0.1)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        sock.close()


def test_connections_beyond_the_cap_are_refused(limited_server: ServerProcess) -> None:
    idle = [_connect(limited_server) for _ in range(MAX_CONNECTIONS + 10)]
    try:
        time.sleep(0.3)
        refused = sum(_closed(s) for s in idle)
        assert refused >= 10, refused  # everything past the cap is closed at once
    finally:
        for s in idle:
            s.close()
    time.sleep(0.3)
    _healthy(limited_server)
