"""Realtime delivery over one WebSocket per client (docs/api.md, "Realtime (WebSocket)").

``Realtime`` connects to ``/v1/realtime``, says ``hello`` with the keys of the group queues to
serve and the last processed seq of each, and yields ``Delivery`` batches as the server pushes them. It answers for the protocol's
chores: app-level pings, switching to a fresh token before the old one expires, and (with
``listen``) reconnecting with capped backoff and resuming from the kept positions, so nothing is
lost or repeated across drops. A group queue the server refuses (wrong key, no such queue) is
an error (``QueueRefused``), not a socket that silently never delivers it.

The upgrade is authenticated with the bearer token in an ``Authorization`` header, or (with
``use_ticket``) with a single-use ticket in the URL, the way a browser must connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from roost.mls.errors import DecodeError
from roost.protocol.base64url import b64u
from roost.protocol.delivery_frame import decode_delivery_frame

from .errors import RoostError
from .models import DirectEvent, QueueMessage

if TYPE_CHECKING:
    from .queues import QueuesApi
    from .session import Session

MAX_FRAME_BYTES = 8 * 1024 * 1024
# Queue keys per ``hello`` or ``subscribe`` frame: a client frame may be 64 KiB, and each key
# with its id and position takes about 100 bytes. A client in more groups (one queue each)
# subscribes the rest after ``ready``.
KEYS_PER_FRAME = 500

# Close codes (docs/api.md): which ones end listening for good.
CLOSE_NORMAL = 1000
CLOSE_TOKEN = 4001
CLOSE_PROTOCOL = 4400
CLOSE_REPLACED = 4409
DEAD_AFTER_PINGS = 3  # ping intervals without any frame (not even a pong): the link is dead
_FINAL_CLOSES = {CLOSE_NORMAL, CLOSE_PROTOCOL, CLOSE_REPLACED, 1009}


@dataclass(frozen=True, slots=True)
class Delivery:
    """Consecutive items of one queue: a group-message queue (``queue_id``) or the direct
    queue (``queue_id`` is None)."""

    queue_id: str | None
    messages: tuple[QueueMessage, ...]

    @property
    def last_seq(self) -> int:
        return self.messages[-1].seq

    def direct_events(self) -> tuple[DirectEvent, ...]:
        return tuple(DirectEvent.from_message(m) for m in self.messages)


def parse_delivery_frame(frame: bytes) -> Delivery:
    """``uint8 kind || [queue_id[16]] || (uint64 seq || opaque payload<V>)+``."""
    raw_queue_id, entries = decode_delivery_frame(frame)
    queue_id = None if raw_queue_id is None else b64u(raw_queue_id)
    return Delivery(queue_id, tuple(QueueMessage(seq, payload) for seq, payload in entries))


def _answer_queues(
    answer: dict[str, Any], asked: dict[str, str]
) -> tuple[list[str], dict[str, str]]:
    """The accepted queue ids of a ``ready`` or ``subscribed`` answer, and the refused ones
    among ``asked`` with their reasons (one neither accepted nor refused counts as refused)."""
    listed = answer.get("queues")
    accepted = [str(q) for q in listed] if isinstance(listed, list) else []
    given = answer.get("refused")
    refused = {str(q): str(c) for q, c in given.items()} if isinstance(given, dict) else {}
    for qid in asked:
        if qid not in accepted and qid not in refused:
            refused[qid] = "forbidden"  # not served, no reason given: the same to us
    return accepted, refused


class QueueRefused(RoostError):
    """The server refused to serve group queues named in ``hello``; ``refused`` maps their
    ids to the reason (``forbidden``: wrong key; ``queue_not_found``). The ids stay out of
    the message (it may be logged)."""

    def __init__(self, refused: dict[str, str]) -> None:
        codes = sorted(set(refused.values()))
        code = codes[0] if len(codes) == 1 else "queue_refused"
        status = 404 if code == "queue_not_found" else 403
        super().__init__(
            status, code, f"the server refused {len(refused)} group queue(s): {', '.join(codes)}"
        )
        self.refused = refused


class RealtimeClosed(RoostError):
    """The server closed the socket; ``close_code`` says why (docs/api.md close codes)."""

    def __init__(self, close_code: int | None, reason: str = "") -> None:
        super().__init__(0, "realtime_closed", f"closed {close_code}: {reason}")
        self.close_code = close_code


def _ws_url(server: str) -> str:
    if server.startswith("https://"):
        return "wss://" + server[len("https://") :] + "/v1/realtime"
    if server.startswith("http://"):
        return "ws://" + server[len("http://") :] + "/v1/realtime"
    raise ValueError(f"cannot derive a WebSocket URL from {server!r}")


async def realtime_ticket(client: Session) -> str:
    """A single-use ticket (``POST /v1/realtime/tickets``) that opens one realtime socket."""
    return str((await client.request("POST", "/v1/realtime/tickets")).json()["ticket"])


class Realtime:
    """One realtime connection of a client. ``queue_keys`` maps b64u ids of the group queues
    to serve to their keys (default: every queue key the client holds); ``positions`` maps
    b64u queue ids to the last seq processed; ``direct`` is the same for the direct queue
    (None: the server uses this client's direct ack cursor). Both advance as deliveries are
    handed out. ``use_ticket``: connect with a fresh ticket in the URL instead of the
    ``Authorization`` header (as a browser)."""

    def __init__(
        self,
        client: QueuesApi,
        *,
        positions: dict[str, int] | None = None,
        direct: int | None = None,
        queue_keys: dict[str, str] | None = None,
        use_ticket: bool = False,
    ) -> None:
        self.client = client
        self.positions: dict[str, int] = dict(positions or {})
        self.direct = direct
        self.queue_keys: dict[str, str] = dict(
            client.queue_keys() if queue_keys is None else queue_keys
        )
        self.use_ticket = use_ticket
        self.ready: dict[str, Any] = {}
        self.accepted: list[str] = []  # the group queues the server serves on this socket
        self._hello_keys: dict[str, str] = {}
        self._ws: ClientConnection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._ack_ids = 0
        # Requests awaiting their answer by id: acks (``acked``) and subscribes (``subscribed``).
        self._pending_acks: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._deliveries: asyncio.Queue[Delivery | BaseException] = asyncio.Queue()
        self._last_frame = time.monotonic()  # any frame from the server proves it is alive

    # ---- connection ---------------------------------------------------------------------
    async def connect(self) -> dict[str, Any]:
        """Open the socket, send ``hello`` and wait for ``ready`` (returned)."""
        url = _ws_url(self.client.state.server)
        headers: dict[str, str] = {}
        if self.use_ticket:
            url += "?ticket=" + quote(await realtime_ticket(self.client), safe="")
        else:
            headers["Authorization"] = f"Bearer {await self.client.bearer_token()}"
        try:
            ws = await connect(
                url,
                additional_headers=headers,
                compression=None,  # payloads are ciphertext: nothing to gain
                proxy=None,
                ping_interval=None,  # the protocol uses app-level pings
                max_size=MAX_FRAME_BYTES,
                open_timeout=15,
            )
        except InvalidStatus as e:
            resp = e.response
            code = f"http_{resp.status_code}"
            with contextlib.suppress(ValueError, AttributeError):
                code = json.loads(resp.body or b"{}").get("code", code)
            raise RoostError(resp.status_code, code, "realtime upgrade refused") from e
        except (OSError, TimeoutError) as e:
            raise RoostError(0, "transport_error", f"realtime: {e!r}") from e
        self._ws = ws
        ids = list(self.queue_keys)
        first, rest = ids[:KEYS_PER_FRAME], ids[KEYS_PER_FRAME:]
        self._hello_keys = {q: self.queue_keys[q] for q in first}
        hello: dict[str, Any] = {
            "type": "hello",
            "queues": {q: self.positions[q] for q in first if q in self.positions},
            "queue_keys": self._hello_keys,
        }
        if self.direct is not None:
            hello["direct"] = self.direct
        # A socket lost during the handshake is a closed connection like any later one (the
        # caller reconnects on RealtimeClosed), not a websockets exception escaping.
        try:
            await ws.send(json.dumps(hello))
            while True:
                frame = await asyncio.wait_for(ws.recv(), timeout=15)
                if isinstance(frame, str):
                    msg = json.loads(frame)
                    if msg.get("type") == "ready":
                        self.ready = msg
                        break
                    await self._control(msg)
                else:  # deliveries never precede ready; be lenient and keep them
                    self._deliveries.put_nowait(parse_delivery_frame(frame))
        except ConnectionClosed as e:
            raise RealtimeClosed(
                e.rcvd.code if e.rcvd else None, e.rcvd.reason if e.rcvd else ""
            ) from e
        except TimeoutError as e:
            raise RoostError(0, "transport_error", "realtime: no ready within 15 s") from e
        try:
            self._check_ready()
        except QueueRefused:
            await self.close()
            raise
        self._tasks = [
            asyncio.create_task(self._reader(ws)),
            asyncio.create_task(self._pinger(ws, float(self.ready.get("ping_interval", 20)))),
            asyncio.create_task(self._token_keeper(ws)),
        ]
        try:
            if rest:  # beyond the hello's share: ``subscribe`` splits them into frames
                await self.subscribe({q: self.queue_keys[q] for q in rest})
        except BaseException:
            await self.close()
            raise
        return self.ready

    def _check_ready(self) -> None:
        """Every queue we named must be served: a refused one raises ``QueueRefused`` (the
        caller closes; ``listen`` does not retry it)."""
        self.accepted, refused = _answer_queues(self.ready, self._hello_keys)
        if refused:
            raise QueueRefused(refused)

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []
        if self._ws is not None:
            await self._ws.close()
            self._ws = None

    async def __aenter__(self) -> Realtime:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- receiving ----------------------------------------------------------------------
    async def _reader(self, ws: ClientConnection) -> None:
        try:
            async for frame in ws:
                self._last_frame = time.monotonic()
                if isinstance(frame, bytes):
                    self._deliveries.put_nowait(parse_delivery_frame(frame))
                else:
                    await self._control(json.loads(frame))
            self._deliveries.put_nowait(RealtimeClosed(ws.close_code, ws.close_reason or ""))
        except ConnectionClosed as e:
            code = e.rcvd.code if e.rcvd else None
            self._deliveries.put_nowait(RealtimeClosed(code, e.rcvd.reason if e.rcvd else ""))
        except (DecodeError, ValueError) as e:  # a malformed frame: stop, the caller reconnects
            self._deliveries.put_nowait(RealtimeClosed(None, f"bad frame: {e}"))
            await ws.close()
        finally:
            for fut in self._pending_acks.values():
                if not fut.done():
                    fut.set_exception(RealtimeClosed(ws.close_code, "closed before the ack"))

    async def _control(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind in ("acked", "subscribed") or (kind == "error" and "id" in msg):
            ack_id = msg.get("id")
            fut = self._pending_acks.pop(ack_id, None) if isinstance(ack_id, int) else None
            if fut is not None and not fut.done():
                if kind == "error":
                    fut.set_exception(RoostError(0, str(msg.get("code")), "request refused"))
                else:
                    fut.set_result(msg)
        # pong / authed / other notices need no action

    async def receive(self, timeout: float | None = None) -> Delivery:
        """The next delivery; positions advance to it (the caller has now got it)."""
        try:  # what has arrived, without wait_for's task and timer (a listener's every call)
            item = self._deliveries.get_nowait()
        except asyncio.QueueEmpty:
            item = await asyncio.wait_for(self._deliveries.get(), timeout)
        if isinstance(item, BaseException):
            self._deliveries.put_nowait(item)  # stays closed for every later call
            raise item
        if item.queue_id is None:
            self.direct = max(self.direct or 0, item.last_seq)
        else:
            self.positions[item.queue_id] = max(self.positions.get(item.queue_id, 0), item.last_seq)
        return item

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Delivery]:
        while True:
            try:
                yield await self.receive()
            except RealtimeClosed as e:
                if e.close_code == CLOSE_NORMAL:
                    return
                raise

    # ---- sending ------------------------------------------------------------------------
    async def _send(self, msg: dict[str, Any]) -> None:
        if self._ws is None:
            raise RealtimeClosed(None, "not connected")
        # A socket the server closed (restart, crash) is a RealtimeClosed like one the reader
        # saw: ``listen`` reconnects on it; a websockets exception would end ``listen``.
        try:
            await self._ws.send(json.dumps(msg))
        except ConnectionClosed as e:
            raise RealtimeClosed(
                e.rcvd.code if e.rcvd else None, e.rcvd.reason if e.rcvd else ""
            ) from e

    async def ack(
        self,
        queues: dict[str, int] | None = None,
        *,
        direct: int | None = None,
        wait: bool = True,
        timeout: float = 15.0,
    ) -> None:
        """Delete up to the given seqs (group queues by b64u id, and/or the direct queue).
        With ``wait``, return once the server has committed the ack."""
        msg: dict[str, Any] = {"type": "ack", "queues": dict(queues or {})}
        if direct is not None:
            msg["direct"] = direct
        fut = self._expect_answer(msg) if wait else None
        await self._send(msg)
        if fut is not None:
            await asyncio.wait_for(fut, timeout)
        if direct is not None and direct > self.client.state.direct_acked:
            self.client.state.direct_acked = direct
            self.client.save()

    async def subscribe(
        self,
        queue_keys: dict[str, str],
        positions: dict[str, int] | None = None,
        *,
        timeout: float = 15.0,
    ) -> None:
        """Serve more group queues on this connection (e.g. one made after connecting), by
        b64u id with their keys and the last seq processed. A refused one raises
        ``QueueRefused``; the accepted ones are served from now on, and again after a
        reconnect by ``listen``. More than ``KEYS_PER_FRAME`` go in several frames."""
        if len(queue_keys) > KEYS_PER_FRAME:
            ids = list(queue_keys)
            for i in range(0, len(ids), KEYS_PER_FRAME):
                part = {q: queue_keys[q] for q in ids[i : i + KEYS_PER_FRAME]}
                await self.subscribe(part, positions, timeout=timeout)
            return
        after = {q: (positions or {}).get(q, self.positions.get(q, 0)) for q in queue_keys}
        msg: dict[str, Any] = {"type": "subscribe", "queue_keys": dict(queue_keys), "queues": after}
        fut = self._expect_answer(msg)
        await self._send(msg)
        accepted, refused = _answer_queues(await asyncio.wait_for(fut, timeout), queue_keys)
        for qid in accepted:
            if qid in queue_keys:
                self.queue_keys[qid] = queue_keys[qid]
                self.positions.setdefault(qid, after[qid])
                if qid not in self.accepted:
                    self.accepted.append(qid)
        if refused:
            raise QueueRefused(refused)

    def _expect_answer(self, msg: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        """Give ``msg`` an id and a future its answer will complete."""
        self._ack_ids += 1
        msg["id"] = self._ack_ids
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending_acks[self._ack_ids] = fut
        return fut

    async def _pinger(self, ws: ClientConnection, interval: float) -> None:
        n = 0
        interval = max(1.0, interval)
        self._last_frame = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            if time.monotonic() - self._last_frame > DEAD_AFTER_PINGS * interval:
                # No pong (nor anything else) for a while: the network is gone without a FIN.
                # Abort so the reader ends with RealtimeClosed and ``listen`` reconnects.
                ws.transport.abort()
                return
            n += 1
            with contextlib.suppress(ConnectionClosed):
                await ws.send(json.dumps({"type": "ping", "id": n}))

    async def _token_keeper(self, ws: ClientConnection) -> None:
        """Switch the socket to a fresh token shortly before the current one expires."""
        while True:
            st = self.client.state
            wait = max(
                1.0, st.token_expires_at - time.time() - max(5.0, self.client.token_refresh_margin)
            )
            await asyncio.sleep(wait)
            token = await self.client.authenticate()
            with contextlib.suppress(ConnectionClosed):
                await ws.send(json.dumps({"type": "auth", "token": token}))


async def listen(
    client: QueuesApi,
    *,
    positions: dict[str, int] | None = None,
    direct: int | None = None,
    queue_keys: dict[str, str] | None = None,
    max_backoff: float = 30.0,
    use_ticket: bool = False,
) -> AsyncIterator[Delivery]:
    """Deliveries for ever: reconnects with capped, jittered backoff and resumes from the
    positions reached. Stops on a normal close, a protocol error, when replaced (4409), or
    when a group queue is refused (``QueueRefused``). ``queue_keys`` and ``use_ticket``: see
    ``Realtime``."""
    rt = Realtime(
        client, positions=positions, direct=direct, queue_keys=queue_keys, use_ticket=use_ticket
    )
    backoff = 0.5
    while True:
        try:
            await rt.connect()
            backoff = 0.5
            async for delivery in rt:
                yield delivery
            return
        except RealtimeClosed as e:
            if e.close_code in _FINAL_CLOSES:
                raise
            if e.close_code == CLOSE_TOKEN:
                client.state.token = ""  # the next connect authenticates afresh
        except RoostError as e:
            if e.code in ("token_expired", "unauthenticated", "invalid_ticket"):
                client.state.token = ""  # stale or revoked token: get a new one and retry
            elif e.status not in (0, 429, 502, 503, 504):
                raise  # e.g. auth_failed: this client no longer exists
        finally:
            await rt.close()
            rt = Realtime(
                client,
                positions=rt.positions,
                direct=rt.direct,
                queue_keys=rt.queue_keys,
                use_ticket=use_ticket,
            )
        await asyncio.sleep(backoff * (0.5 + random.random() / 2))
        backoff = min(max_backoff, backoff * 2)
