"""One realtime WebSocket connection: resume from the client's positions, deliver, take acks,
answer pings, and close on idleness, revoked tokens or a reader that stopped reading.

The connection serves the group queues whose keys the client presented (``hello`` and later
``subscribe`` frames; checked once by the QueueService) and the user's direct queue.

Memory per connection is bounded: wake-ups carry the committed item, which is kept only while
it fits in the unacked window (else dropped and re-read from the database later); at most
``window_messages`` / ``window_bytes`` are sent and not yet acked; a send waits for the socket
buffer to drain (uvicorn applies back-pressure), and one stalled for too long closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected

from roost.protocol.base64url import b64u

from ..auth.service import Principal
from ..config import Limits
from ..errors import Problem
from ..queues.service import FetchResult, WakeUp
from .protocol import (
    MAX_SEQ,
    CloseCode,
    Positions,
    ProtocolError,
    control,
    delivery_frame,
    parse_positions,
    parse_queue_keys,
    parse_text,
)

if TYPE_CHECKING:
    from ..deps import Services
    from .hub import Hub

log = logging.getLogger("roost.server.notify")

# Ack frames read but not yet written before the reader waits for the acker.
MAX_PENDING_ACK_FRAMES = 256
# On close, acks already read get this long to be written.
ACK_DRAIN_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Settings:
    ping_interval: float
    idle_timeout: float
    window_messages: int
    window_bytes: int
    max_frame_bytes: int = 1024 * 1024  # a frame holds at least one item, even a larger one
    hello_timeout: float = 10.0
    auth_recheck: float = 30.0
    send_stall: float = 30.0

    @classmethod
    def from_limits(cls, limits: Limits) -> Settings:
        return cls(
            ping_interval=limits.realtime_ping_interval_seconds,
            idle_timeout=limits.realtime_idle_timeout_seconds,
            window_messages=limits.realtime_window_messages,
            window_bytes=limits.realtime_window_bytes,
        )


class _Queue:
    """Delivery state of one queue on this connection (``queue_id`` None: the direct queue)."""

    __slots__ = ("queue_id", "sent", "pending", "pending_bytes", "stale", "inflight")

    def __init__(self, queue_id: bytes | None, sent: int) -> None:
        self.queue_id = queue_id
        self.sent = sent  # highest seq sent, or skipped by the client's position / ack
        self.pending: dict[int, bytes] = {}  # committed items from wake-ups, seq > sent
        self.pending_bytes = 0
        self.stale = True  # the database may hold items after `sent` that are not in `pending`
        self.inflight: deque[tuple[int, int]] = deque()  # (seq, size) sent, not yet acked

    def drop_pending_upto(self, seq: int) -> None:
        for s in [s for s in self.pending if s <= seq]:
            self.pending_bytes -= len(self.pending.pop(s))

    def forget_pending(self) -> None:
        self.pending.clear()
        self.pending_bytes = 0
        self.stale = True


class _Close(Exception):
    """End the connection with this close code (``None``: the peer is already gone)."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class RealtimeSession:
    def __init__(
        self,
        ws: WebSocket,
        principal: Principal,
        bound_token_hash: bytes,
        services: Services,
        hub: Hub,
        settings: Settings,
    ) -> None:
        self.client_uuid = principal.client_uuid
        self.user_uuid = principal.user_uuid
        self._principal = principal
        self._ws = ws
        # The bearer token the socket is bound to (by hash: a ticket never reveals the token).
        self._token_hash = bound_token_hash
        self._services = services
        self._hub = hub
        self._settings = settings
        self._queues: dict[bytes | None, _Queue] = {}
        # Group queues whose key this connection checked: only these may be acked here. Kept
        # when a queue is deleted (an ack racing the deletion is no protocol error).
        self._accepted: set[bytes] = set()
        self._ready: OrderedDict[bytes | None, None] = OrderedDict()  # queues with work, FIFO
        self._wake = asyncio.Event()
        self._done = asyncio.Event()
        self._close: tuple[int, str] | None = None
        self._inflight_msgs = 0
        self._inflight_bytes = 0
        self._last_recv = time.monotonic()
        self._send_since: float | None = None
        self._send_lock = asyncio.Lock()
        # Acks are coalesced: frames read while a write is in flight are merged (per queue the
        # highest up_to) and written together by the acker task, one transaction per burst.
        self._ack_queues: dict[bytes, int] = {}
        self._ack_direct: int | None = None
        self._ack_frames: list[Any] = []  # the frames' ids: answered once written
        self._ack_wake = asyncio.Event()
        self._ack_room = asyncio.Event()
        self._ack_room.set()
        self._closing = False

    # ---- hub interface (called synchronously, from committed transactions' callbacks) -----

    def on_item(self, wake: WakeUp) -> None:
        st = self._queues.get(wake.queue_id)
        if st is None:
            return  # not (or no longer) served here; the first read finds it anyway
        if wake.seq <= st.sent:
            return
        payload = wake.payload
        if payload is None or st.pending_bytes + len(payload) > self._settings.window_bytes:
            st.forget_pending()  # too much buffered: read it back from the database instead
        elif wake.seq not in st.pending:
            st.pending[wake.seq] = payload
            st.pending_bytes += len(payload)
        self._ready[wake.queue_id] = None
        self._wake.set()

    def on_acked(self, queue_id: bytes | None, up_to: int) -> None:
        st = self._queues.get(queue_id)
        if st is not None:
            self._acked(st, up_to)
            if queue_id is not None and up_to >= MAX_SEQ:  # the queue was deleted
                del self._queues[queue_id]
                self._ready.pop(queue_id, None)
            self._wake.set()

    def resync(self) -> None:
        """Re-read every queue from the database (wake-ups may have been missed)."""
        for key, st in self._queues.items():
            st.stale = True
            self._ready[key] = None
        self._wake.set()

    def terminate(self, code: int, reason: str) -> None:
        if self._close is None:
            self._close = (code, reason)
        self._done.set()

    # ---- life cycle ------------------------------------------------------------------------

    async def run(self) -> None:
        tasks: list[asyncio.Task[Any]] = []
        code: int | None = CloseCode.NORMAL
        reason = ""
        try:
            await self._start(await self._receive_hello())
            tasks = [
                asyncio.create_task(self._reader()),
                asyncio.create_task(self._writer()),
                asyncio.create_task(self._watchdog()),
                asyncio.create_task(self._done.wait()),
                asyncio.create_task(self._acker()),
            ]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if self._close is None:
                exc = next(iter(done)).exception()
                if exc is not None:
                    raise exc
        except BaseException as exc:  # noqa: BLE001 - mapped to a close code, or re-raised
            if isinstance(exc, asyncio.CancelledError):
                raise
            code, reason = _close_for(exc)
        finally:
            self._hub.detach(self)
            acker = tasks.pop() if tasks else None
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t
            if acker is not None:
                # Acks already read are still written (briefly): the client may not resend them.
                self._closing = True
                self._ack_wake.set()
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(acker, ACK_DRAIN_SECONDS)
        if self._close is not None:
            code, reason = self._close
        if code is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(code, reason[:120]), 2.0)

    async def _receive_hello(self) -> tuple[Positions, dict[bytes, bytes]]:
        try:
            message = await asyncio.wait_for(self._ws.receive(), self._settings.hello_timeout)
        except TimeoutError:
            raise _Close(CloseCode.PROTOCOL_ERROR, "no hello in time") from None
        frame = parse_text(self._text_of(message))
        if frame["type"] != "hello":
            raise ProtocolError("the first frame must be hello")
        return parse_positions(frame), parse_queue_keys(frame)

    async def _start(self, hello: tuple[Positions, dict[bytes, bytes]]) -> None:
        positions, keys = hello
        queues = self._services.queues
        direct_after = positions.direct
        if direct_after is None:
            direct_after = await queues.direct_cursor(self.user_uuid, self.client_uuid)
        accepted, refused = await queues.accept_keys(keys) if keys else ([], {})
        self._queues[None] = _Queue(None, direct_after)
        # Subscribe before the first reads: an item committed in between is then either read
        # or announced (or both; seq numbers drop the duplicate), never missed.
        self._add_queues(accepted, positions.queues)
        self._hub.attach(self)
        self._hub.subscribe(self, accepted)
        await self._hub.presence_settled()  # other processes now see this client as online
        for key in self._queues:
            self._ready[key] = None
        s = self._settings
        await self._send_text(
            control(
                "ready",
                client_id=self._principal.client_id,
                queues=[b64u(q) for q in accepted],
                refused={b64u(q): code for q, code in refused.items()},
                ping_interval=s.ping_interval,
                idle_timeout=s.idle_timeout,
                window_messages=s.window_messages,
                window_bytes=s.window_bytes,
                max_frame_bytes=s.max_frame_bytes,
            )
        )
        self._wake.set()

    def _add_queues(self, accepted: list[bytes], after: Mapping[bytes, int]) -> list[bytes]:
        """Start serving ``accepted`` (not yet served ones) from the client's positions; the
        caller routes them here in the hub before anything is read."""
        added = [q for q in accepted if q not in self._queues]
        for qid in added:
            self._accepted.add(qid)
            self._queues[qid] = _Queue(qid, after.get(qid, 0))
        return added

    async def _subscribe(self, frame: dict[str, Any]) -> None:
        """``subscribe``: serve more group queues on this connection (keys checked as in
        ``hello``), e.g. one created or joined after connecting."""
        positions = parse_positions(frame)
        keys = parse_queue_keys(frame)
        new = {q: k for q, k in keys.items() if q not in self._queues}
        accepted, refused = await self._services.queues.accept_keys(new) if new else ([], {})
        added = self._add_queues(accepted, positions.queues)
        self._hub.subscribe(self, added)
        listed = [q for q in keys if q not in refused]
        await self._send_text(
            control(
                "subscribed",
                queues=[b64u(q) for q in listed],
                refused={b64u(q): code for q, code in refused.items()},
                id=positions.id,
            )
        )
        for qid in added:
            self._ready[qid] = None
        self._wake.set()

    # ---- sending ---------------------------------------------------------------------------

    async def _send(self, message: dict[str, Any]) -> None:
        async with self._send_lock:
            self._send_since = time.monotonic()
            try:
                await self._ws.send(message)
            finally:
                self._send_since = None

    async def _send_text(self, text: str) -> None:
        await self._send({"type": "websocket.send", "text": text})

    def _has_credit(self) -> bool:
        s = self._settings
        return self._inflight_msgs < s.window_messages and self._inflight_bytes < s.window_bytes

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._ready and self._has_credit():
                key, _ = self._ready.popitem(last=False)
                st = self._queues.get(key)
                if st is not None and await self._serve(st):
                    self._ready[key] = None  # more waiting: after the other queues' turn

    async def _serve(self, st: _Queue) -> bool:
        """Send one frame of ``st`` if anything is waiting; True if more may be waiting."""
        s = self._settings
        max_items = s.window_messages - self._inflight_msgs
        max_bytes = min(s.max_frame_bytes, s.window_bytes - self._inflight_bytes)
        items = self._take_pending(st, max_items, max_bytes)
        if not items and (st.stale or st.pending):
            known = max(st.pending, default=0)
            st.stale = False  # a payload-less wake-up during the read sets it again (kept)
            result = await self._read(st, max_items, max_bytes)
            items = [(seq, p) for seq, p in result.messages if seq > st.sent]
            st.stale = st.stale or result.has_more
            if items:
                st.drop_pending_upto(items[-1][0])
            elif not result.has_more:
                # Announced before the read yet not in the database: acked (deleted) meanwhile.
                st.drop_pending_upto(known)
        if not items:
            return False
        size = sum(len(p) for _, p in items)
        # Account before the await: an ack racing with the send then finds them in flight.
        st.inflight.extend((seq, len(p)) for seq, p in items)
        st.sent = items[-1][0]
        self._inflight_msgs += len(items)
        self._inflight_bytes += size
        await self._send({"type": "websocket.send", "bytes": delivery_frame(st.queue_id, items)})
        return st.stale or bool(st.pending)

    @staticmethod
    def _take_pending(st: _Queue, max_items: int, max_bytes: int) -> list[tuple[int, bytes]]:
        """The contiguous run of announced items right after ``sent``, within the caps."""
        items: list[tuple[int, bytes]] = []
        size = 0
        seq = st.sent + 1
        while len(items) < max_items and seq in st.pending:
            payload = st.pending[seq]
            if items and size + len(payload) > max_bytes:
                break
            del st.pending[seq]
            st.pending_bytes -= len(payload)
            items.append((seq, payload))
            size += len(payload)
            seq += 1
        return items

    async def _read(self, st: _Queue, max_items: int, max_bytes: int) -> FetchResult:
        queues = self._services.queues
        if st.queue_id is None:
            return await queues.fetch_direct(self.user_uuid, st.sent, max_items, max_bytes)
        return await queues.read_after(st.queue_id, st.sent, max_items, max_bytes)

    # ---- receiving -------------------------------------------------------------------------

    @staticmethod
    def _text_of(message: Mapping[str, Any]) -> str:
        if message["type"] == "websocket.disconnect":
            raise _Close(None)
        text = message.get("text")
        if text is None:
            raise ProtocolError("clients send text frames only")
        return text

    async def _reader(self) -> None:
        while True:
            message = await self._ws.receive()
            self._last_recv = time.monotonic()
            frame = parse_text(self._text_of(message))
            kind = frame["type"]
            if kind == "ping":
                await self._send_text(control("pong", id=frame.get("id")))
            elif kind == "ack":
                await self._queue_ack(parse_positions(frame))
            elif kind == "subscribe":
                await self._subscribe(frame)
            elif kind == "auth":
                await self._on_auth(frame)
            elif kind == "hello":
                raise ProtocolError("hello was already received")
            else:
                raise ProtocolError(f"unknown frame type {kind[:32]!r}")

    async def _queue_ack(self, ack: Positions) -> None:
        """Merge ``ack`` into the pending acks; the acker writes them (reading goes on)."""
        await self._ack_room.wait()  # back-pressure: a flood of acks waits for the write
        if any(q not in self._accepted for q in ack.queues):
            # Only a key holder may ack (delete) a queue's items: the connection holds the keys.
            raise ProtocolError("an ack names a queue this connection did not subscribe")
        for qid, up_to in ack.queues.items():
            if up_to > self._ack_queues.get(qid, -1):
                self._ack_queues[qid] = up_to
        if ack.direct is not None and (self._ack_direct is None or ack.direct > self._ack_direct):
            self._ack_direct = ack.direct
        self._ack_frames.append(ack.id)
        if len(self._ack_frames) >= MAX_PENDING_ACK_FRAMES:
            self._ack_room.clear()
        self._ack_wake.set()

    async def _acker(self) -> None:
        while True:
            await self._ack_wake.wait()
            self._ack_wake.clear()
            if self._ack_frames:
                await self._write_acks()
            elif self._closing:
                return

    async def _write_acks(self) -> None:
        """Write every pending ack in one go; answer the frames once committed."""
        acks, self._ack_queues = self._ack_queues, {}
        direct, self._ack_direct = self._ack_direct, None
        frames, self._ack_frames = self._ack_frames, []
        self._ack_room.set()
        queues = self._services.queues
        if acks:
            # The window frees before the write: the client has these items (a write lost in a
            # crash only leaves them in the queue, and the client skips them by its positions).
            for qid, up_to in acks.items():
                st = self._queues.get(qid)
                if st is not None:
                    self._acked(st, up_to)
            self._wake.set()
            # Only accepted queues get here (``_queue_ack``): their keys were checked.
            await queues.ack_many(acks)
        if direct is not None:
            async with queues.db.engine.connect() as conn:
                clients = await self._services.auth.client_uuids_of(self.user_uuid, conn)
            await queues.ack_direct(self.user_uuid, self.client_uuid, direct, clients)
            self._acked(self._queues[None], direct)
        self._wake.set()  # the window may have room again
        if self._closing:
            return  # the socket is going: no answers
        for ack_id in frames:
            if ack_id is not None:
                await self._send_text(control("acked", id=ack_id))

    def _acked(self, st: _Queue, up_to: int) -> None:
        while st.inflight and st.inflight[0][0] <= up_to:
            _, size = st.inflight.popleft()
            self._inflight_msgs -= 1
            self._inflight_bytes -= size
        if up_to > st.sent:  # acked ahead of what this socket sent (e.g. fetched over HTTP)
            st.sent = up_to
            st.drop_pending_upto(up_to)
        if st.pending or st.stale:
            self._ready[st.queue_id] = None

    async def _on_auth(self, frame: dict[str, Any]) -> None:
        token = frame.get("token")
        if not isinstance(token, str):
            raise ProtocolError('"auth" needs a "token" string')
        try:
            principal, hashed = await self._services.auth.authenticate_bound(token)
        except Problem as p:
            raise _Close(CloseCode.UNAUTHENTICATED, p.code) from None
        if principal.client_uuid != self.client_uuid:
            raise _Close(CloseCode.UNAUTHENTICATED, "the token belongs to another client")
        self._token_hash = hashed
        await self._send_text(control("authed"))

    # ---- timers ----------------------------------------------------------------------------

    async def _watchdog(self) -> None:
        s = self._settings
        tick = min(1.0, s.idle_timeout / 4)
        next_auth = time.monotonic() + s.auth_recheck
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if now - self._last_recv > s.idle_timeout:
                raise _Close(CloseCode.IDLE_TIMEOUT, "idle timeout")
            since = self._send_since
            if since is not None and now - since > s.send_stall:
                raise _Close(CloseCode.TOO_SLOW, "the client stopped reading")
            if now >= next_auth:
                next_auth = now + s.auth_recheck
                try:
                    await self._services.auth.authenticate_token_hash(self._token_hash)
                except Problem as p:
                    raise _Close(CloseCode.UNAUTHENTICATED, p.code) from None


def _close_for(exc: BaseException) -> tuple[int | None, str]:
    if isinstance(exc, _Close):
        return exc.code, exc.reason
    if isinstance(exc, ProtocolError):
        return CloseCode.PROTOCOL_ERROR, str(exc)
    if isinstance(exc, (WebSocketDisconnect, WebSocketDisconnected, OSError)):
        return None, ""  # the peer is gone
    log.error("realtime connection failed", exc_info=exc)
    return CloseCode.INTERNAL_ERROR, "internal error"
