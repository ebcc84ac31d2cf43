"""The client's request channel (``HttpChannel``) against real sockets: a kept-alive connection
the server closed is retried once on a new one, failures to reach the server are
``transport_error``s, the server URL's path prefix and query values reach the server as httpx
sent them, and one channel serves a client that moves to another event loop."""

from __future__ import annotations

import asyncio
import socket

import pytest

from roost.client.errors import RoostError
from roost.client.http_channel import HttpChannel

OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"


class Server:
    """A loopback HTTP/1.1 server that answers ``{"n": k}`` (k: the request's number over all
    connections), and closes the connection without an answer on the requests listed in
    ``drop``."""

    def __init__(self, drop: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.drop = drop
        self.requests = 0
        self.connections = 0
        self.request_lines: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.request_lines.append(head.split(b"\r\n")[0])
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                self.requests += 1
                if self.requests in self.drop:
                    return  # closed with no answer: as a server whose keep-alive timed out
                body = b'{"n": %d}' % self.requests
                writer.write(OK % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()


async def test_a_reused_connection_the_server_closed_is_retried_once():
    srv = Server(drop={2})
    async with srv as url:
        channel = HttpChannel(url, timeout=5)
        try:
            first = await channel.request("POST", "/x", content=b"one")
            second = await channel.request("POST", "/x", content=b"two")
        finally:
            await channel.aclose()
    assert (first.status_code, first.json()) == (200, {"n": 1})
    # The second request reused the first one's connection; the server dropped it unanswered,
    # so it went again on a new connection.
    assert (second.status_code, second.json()) == (200, {"n": 3})
    assert srv.connections == 2


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_a_server_that_keeps_dropping_is_a_transport_error(method):
    srv = Server(drop={1, 2, 3})
    async with srv as url:
        channel = HttpChannel(url, timeout=5)
        try:
            with pytest.raises(RoostError) as e:
                await channel.request(method, "/x")
        finally:
            await channel.aclose()
    assert (e.value.status, e.value.code) == (0, "transport_error")
    assert srv.requests == 2  # sent once more, not for ever


async def test_the_servers_path_prefix_and_query_values_are_kept():
    srv = Server()
    async with srv as url:
        channel = HttpChannel(url + "/roost/", timeout=5)
        try:
            await channel.request("GET", "/v1/users/a%2Fb@x", params={"on": True, "n": 2})
        finally:
            await channel.aclose()
    assert srv.request_lines == [b"GET /roost/v1/users/a%2Fb@x?on=true&n=2 HTTP/1.1"]


async def test_the_answer_reads_as_the_httpx_response_it_stands_for():
    srv = Server()
    async with srv as url:
        channel = HttpChannel(url, timeout=5)
        try:
            resp = await channel.request("POST", "/v1/x", json={"a": 1}, params={"k": "v"})
        finally:
            await channel.aclose()
    assert (resp.status_code, resp.json()) == (200, {"n": 1})
    assert resp.headers["content-type"] == "application/json"
    assert (resp.request.method, str(resp.url)) == ("POST", url + "/v1/x?k=v")
    assert resp.raise_for_status() is resp


async def test_no_server_is_a_transport_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens on it
    channel = HttpChannel(f"http://127.0.0.1:{port}", timeout=5)
    with pytest.raises(RoostError) as e:
        await channel.request("GET", "/x")
    await channel.aclose()
    assert (e.value.status, e.value.code) == (0, "transport_error")


async def test_a_server_that_does_not_answer_times_out():
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        await asyncio.sleep(10)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    channel = HttpChannel(url, timeout=0.3)
    try:
        with pytest.raises(RoostError) as e:
            await channel.request("GET", "/x")
    finally:
        await channel.aclose()
        server.close()
    assert (e.value.status, e.value.code) == (0, "transport_error")


def test_one_channel_serves_a_client_in_two_event_loops():
    """As the CLI does: one ``asyncio.run`` per step, the same client object."""
    srv = Server()

    async def one(channel: HttpChannel) -> dict:
        async with srv as url:
            channel.server = url
            return (await channel.request("GET", "/x")).json()

    channel = HttpChannel("http://127.0.0.1:1", timeout=5)
    assert asyncio.run(one(channel)) == {"n": 1}
    assert asyncio.run(one(channel)) == {"n": 2}
    asyncio.run(channel.aclose())
