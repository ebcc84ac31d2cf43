"""Push service: registrations, the decision to push, coalescing and the background sender.

Flow: the QueueService tells ``on_wake`` about every committed enqueue (synchronously, after
commit, on the request path), which ignores a group-queue item whose queue a connection to this
process serves (the hub) and drops the rest into a bounded queue. A single background task
resolves the target clients (a group queue's client from its sealed push reference: no stored
row names a queue's owner), applies the policy, coalesces per client, skips clients connected over
realtime (to this process: the hub again, as the client may have connected since; to another
process on the same PostgreSQL: notify/presence.py, one indexed read just before a push would
go out) and sends.
Where to push (endpoint and keys, or device token) is stored sealed (``target_seal.py``) and
opened only to answer its own client and to send.
Nothing here ever blocks or fails a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from roost.protocol.queue_item import QueueItem

from ..config import Config
from ..errors import Problem
from ..outbound import OutboundPolicy, OutboundRefused, OutboundUnresolved
from ..outbound_client import OutboundClient
from ..queues.service import WakeUp
from ..seal_key import SealKeyFile
from ..store import Database
from ..store.async_engine import AsyncConnection
from ..store.dialect_insert import dialect_insert
from . import policy
from .senders import ApnsSender, FcmSender, Outcome, Registration, Sender, WebPushSender
from .stats import PROVIDERS, PushStats
from .tables import push_registrations, push_vapid_key
from .target_seal import Target, TargetSeal
from .webpush import Vapid, generate_vapid_private_bytes

if TYPE_CHECKING:
    from ..notify.presence import Presence

log = logging.getLogger("roost.server.push")
KINDS = PROVIDERS
FLUSH_INTERVAL_SECONDS = 1.0  # how often deferred (coalesced) pushes are looked at


class PushService:
    def __init__(
        self,
        db: Database,
        config: Config,
        clock: Callable[[], float] = time.time,
        is_connected: Callable[[str], bool] = lambda _client: False,
        presence: Presence | None = None,
        is_served: Callable[[bytes], bool] = lambda _queue: False,
        client_of: Callable[[bytes], Awaitable[str | None]] | None = None,
    ) -> None:
        self.db = db
        self.config = config
        self.clock = clock
        self.is_connected = is_connected  # a live socket to this process (the hub)
        self.is_served = is_served  # a group queue a socket to this process delivers (the hub)
        # The client whose registration a group queue's wake-up uses (QueueService.push_client_of)
        self.client_of = client_of
        self.presence = presence  # sockets to the other processes (PostgreSQL only)
        self.vapid: Vapid | None = None
        self.targets = TargetSeal(SealKeyFile(config.queue_seal_key_path))
        self.senders: dict[str, Sender] = {}
        self._queue: asyncio.Queue[WakeUp] = asyncio.Queue(config.push_queue_size)
        self._last_push: dict[str, float] = {}  # client uuid -> app-clock time of its last push
        self._deferred: set[str] = set()  # clients with a wake-up swallowed by coalescing
        self._http: OutboundClient | None = None
        self._apns_http: OutboundClient | None = None
        # Endpoints come from clients: checked at registration and again at every send (the
        # transport connects only to the address it checked). APNs/FCM hosts are the
        # operator's choice and trusted as configured.
        self.outbound = OutboundPolicy(
            allow_private=config.outbound_allow_private or config.push_allow_insecure_endpoints,
            trusted_hosts=[_host(config.push_apns_base_url), _host(config.push_fcm_base_url)],
        )
        self._task: asyncio.Task[None] | None = None
        self.stats = PushStats()  # exposed on /metrics

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.vapid = Vapid.from_private_bytes(await self._vapid_private_bytes(), self._subject())
        # httpx and its connection pool load with the first push (outbound_client.py).
        self._http = OutboundClient(
            self.outbound,
            timeout=self.config.push_timeout_seconds,
            follow_redirects=False,
        )
        self.senders = {"webpush": WebPushSender(self._http, self.vapid)}
        c = self.config
        if c.push_apns_key_file:
            # Apple's provider API speaks HTTP/2 only (h2 installed through httpx[http2]).
            self._apns_http = OutboundClient(
                self.outbound,
                http2=True,
                timeout=c.push_timeout_seconds,
                follow_redirects=False,
            )
            self.senders["apns"] = ApnsSender(
                self._apns_http,
                c.push_apns_base_url,
                c.push_apns_team_id,
                c.push_apns_key_id,
                Path(c.push_apns_key_file),
                c.push_apns_topic,
            )
        if c.push_fcm_service_account_file:
            fcm = FcmSender(
                self._http,
                c.push_fcm_base_url,
                c.push_fcm_project_id,
                Path(c.push_fcm_service_account_file),
            )
            self.outbound.trust(_host(fcm.token_uri))  # from the operator's account file
            self.senders["fcm"] = fcm
        if self.presence is not None:
            await self.presence.start()
        self._task = asyncio.create_task(self._run(), name="push-sender")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.presence is not None:
            await self.presence.stop()
        for client in (self._http, self._apns_http):
            if client is not None:
                await client.aclose()

    def _subject(self) -> str:
        return self.config.push_vapid_subject or f"mailto:postmaster@{self.config.home_domain}"

    async def _vapid_private_bytes(self) -> bytes:
        if self.config.push_vapid_private_key_file:
            pem = Path(self.config.push_vapid_private_key_file).read_bytes()
            key = serialization.load_pem_private_key(pem, password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError("push_vapid_private_key_file must hold a P-256 private key")
            return key.private_numbers().private_value.to_bytes(32, "big")
        # Generated once and shared by every process through the database.
        async with self.db.transaction() as conn:
            await conn.execute(
                dialect_insert(conn, push_vapid_key)
                .values(id=1, private_key=generate_vapid_private_bytes())
                .on_conflict_do_nothing(index_elements=["id"])
            )
            row = await conn.execute(sa.select(push_vapid_key.c.private_key))
            return bytes(row.scalar_one())

    # ---- registrations -----------------------------------------------------------------------

    async def register(
        self,
        user_uuid: str,
        client_uuid: str,
        kind: str,
        target: str,
        p256dh: bytes | None,
        auth: bytes | None,
        default_policy: str,
    ) -> None:
        if kind not in self.senders:
            raise Problem(
                422, "push_kind_unavailable", f"this server does not send {kind} notifications"
            )
        if kind == "webpush":
            await self._check_endpoint(target)
            if p256dh is None or auth is None or len(auth) != 16:
                raise Problem(400, "invalid_subscription", "keys.p256dh and keys.auth are required")
            try:
                ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), p256dh)
            except ValueError:
                raise Problem(
                    400, "invalid_subscription", "keys.p256dh is not a P-256 point"
                ) from None
        else:
            p256dh = auth = None
        values = {
            "user_uuid": user_uuid,
            "kind": kind,
            "sealed_target": self.targets.seal(client_uuid, Target(target, p256dh, auth)),
            "default_policy": default_policy,
            "created_at": int(self.clock()),
        }
        async with self.db.transaction() as conn:
            await conn.execute(
                dialect_insert(conn, push_registrations)
                .values(client_uuid=client_uuid, **values)
                .on_conflict_do_update(index_elements=["client_uuid"], set_=values)
            )

    def _registration(self, row: sa.Row[Any]) -> Registration | None:
        """The stored registration with its target opened; None (as if there were none) when
        the seal does not open: made under another seal key, the client registers again."""
        target = self.targets.open(row.client_uuid, row.sealed_target)
        if target is None:
            log.warning("a push registration's target seal does not open (another seal key?)")
            return None
        return Registration(
            client_uuid=row.client_uuid,
            kind=row.kind,
            target=target.target,
            p256dh=target.p256dh,
            auth=target.auth,
            default_policy=row.default_policy,
        )

    async def _check_endpoint(self, endpoint: str) -> None:
        """https only, to a public address (outbound.py); http:// and internal hosts only
        when the operator allows them (tests)."""
        try:
            parts = urlsplit(endpoint)
            host = parts.hostname or ""
        except ValueError:
            raise Problem(400, "invalid_subscription", "the endpoint is not a URL") from None
        insecure_ok = self.config.push_allow_insecure_endpoints
        if parts.scheme != "https" and not (insecure_ok and parts.scheme == "http"):
            raise Problem(400, "invalid_subscription", "the endpoint must be an https:// URL")
        if not host or len(endpoint) > 2048:
            raise Problem(400, "invalid_subscription", "the endpoint has no host or is too long")
        try:
            await self.outbound.check_url(endpoint)
        except OutboundUnresolved:
            pass  # no address to judge now; the transport checks again at every send
        except OutboundRefused:
            raise Problem(
                400, "invalid_subscription", "the endpoint must be a public host"
            ) from None

    async def get(self, client_uuid: str) -> Registration | None:
        async with self.db.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(push_registrations).where(
                        push_registrations.c.client_uuid == client_uuid
                    )
                )
            ).first()
        return None if row is None else self._registration(row)

    async def unregister(self, client_uuid: str) -> bool:
        async with self.db.transaction() as conn:
            r = await conn.execute(
                sa.delete(push_registrations).where(push_registrations.c.client_uuid == client_uuid)
            )
        self._forget(client_uuid)
        return r.rowcount > 0

    def _forget(self, client_uuid: str) -> None:
        self._last_push.pop(client_uuid, None)
        self._deferred.discard(client_uuid)

    # deletion hooks: inside the AS's transaction, so a removed client's registration goes with it
    async def on_client_removed(self, conn: AsyncConnection, client_uuid: str) -> None:
        await conn.execute(
            sa.delete(push_registrations).where(push_registrations.c.client_uuid == client_uuid)
        )

    async def on_user_deleted(
        self, conn: AsyncConnection, user_uuid: str, _client_uuids: list[str]
    ) -> None:
        await conn.execute(
            sa.delete(push_registrations).where(push_registrations.c.user_uuid == user_uuid)
        )

    # ---- wake-ups ----------------------------------------------------------------------------

    def on_wake(self, wake: WakeUp) -> None:
        """QueueService listener (after commit, request path): hand over, never block.

        A group-queue item of a queue a socket to this process serves is dropped at once: that
        socket delivers it. That is most wake-ups under load (one per member per message), and
        each one queued cost the background task a wake-up, a lookup and an item decode for
        nothing."""
        if wake.queue_id is not None and self.is_served(wake.queue_id):
            return
        try:
            self._queue.put_nowait(wake)
        except asyncio.QueueFull:
            # The client still gets its messages on its next fetch; only the nudge is lost.
            self.stats.dropped += 1
            if self.stats.dropped % 1000 == 1:
                log.warning("push queue full: wake-ups dropped (%d so far)", self.stats.dropped)

    def queue_depth(self) -> int:
        """Wake-ups waiting for the sender (metrics)."""
        return self._queue.qsize()

    async def idle(self) -> None:
        """Wait until every queued wake-up was handled (tests)."""
        await self._queue.join()

    async def _run(self) -> None:
        me = asyncio.current_task()
        while True:
            if me is not None and me.cancelling():
                # Python 3.11's wait_for can swallow a cancel that races a completed get():
                # stop anyway, or shutdown waits for ever.
                raise asyncio.CancelledError
            try:
                wake = await asyncio.wait_for(self._queue.get(), FLUSH_INTERVAL_SECONDS)
            except TimeoutError:
                await self._guarded(self._flush_deferred())
                continue
            try:
                await self._guarded(self._handle(wake))
                await self._guarded(self._flush_deferred())
            finally:
                self._queue.task_done()

    @staticmethod
    async def _guarded(coro: object) -> None:
        try:
            await coro  # type: ignore[misc]
        except asyncio.CancelledError:
            raise
        except Exception as e:  # one bad wake-up or database hiccup must not stop the sender
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # A cancel landing inside a database call can surface as another error
                # (e.g. SQLAlchemy's PendingRollbackError): still stop, or shutdown hangs.
                raise asyncio.CancelledError from e
            log.warning("push handling failed: %s", type(e).__name__)

    async def _handle(self, wake: WakeUp) -> None:
        attached: str | None = None
        column = push_registrations.c.user_uuid  # direct queue: every client of the user
        target = wake.user_uuid
        if wake.queue_id is not None:
            # Cheap check first: a queue served by a socket to this process (since ``on_wake``)
            # needs no unsealing, no item decode and no database read.
            if self.is_served(wake.queue_id) or self.client_of is None:
                return
            target = await self.client_of(wake.queue_id)
            if target is None or self.is_connected(target):
                return  # a deleted queue, or a client online here
            column = push_registrations.c.client_uuid
            attached = _attached_policy(wake.payload)
        if target is None:
            return
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(sa.select(push_registrations).where(column == target))).all()
        for row in rows:
            reg = self._registration(row)
            if reg is None:
                continue
            # Direct-queue items (Welcomes, connection events) follow the default policy.
            if not policy.should_push(attached, reg.default_policy):
                continue
            await self._push_coalesced(reg)

    async def _push_coalesced(self, reg: Registration) -> None:
        now = self.clock()
        last = self._last_push.get(reg.client_uuid)
        if last is not None and now - last < self.config.push_coalesce_seconds:
            self._deferred.add(reg.client_uuid)  # one trailing push when the window ends
            self.stats.count("coalesced", reg.kind)
            return
        if await self._online(reg):
            return
        self._last_push[reg.client_uuid] = now
        await self._send(reg)

    async def _online(self, reg: Registration) -> bool:
        """Connected over realtime, to this process or (PostgreSQL) to another one."""
        online = self.is_connected(reg.client_uuid)
        if not online and self.presence is not None:
            try:
                online = await self.presence.online_elsewhere(reg.client_uuid)
            except Exception as e:  # noqa: BLE001 - unknown: a spare wake-up beats a lost one
                log.warning("presence lookup failed: %s", type(e).__name__)
        if online:
            self.stats.count("suppressed_online", reg.kind)
        return online

    async def _flush_deferred(self) -> None:
        now = self.clock()
        window = self.config.push_coalesce_seconds
        due = [c for c in self._deferred if now - self._last_push.get(c, 0) >= window]
        for client_uuid in due:
            self._deferred.discard(client_uuid)
            reg = await self.get(client_uuid)
            if reg is not None and not await self._online(reg):
                self._last_push[client_uuid] = now
                await self._send(reg)
        # Bounded memory: forget windows that ended and have nothing deferred.
        if len(self._last_push) > 10_000:
            for c, t in list(self._last_push.items()):
                if now - t >= window and c not in self._deferred:
                    del self._last_push[c]

    async def _send(self, reg: Registration) -> None:
        self.stats.count("attempts", reg.kind)
        sender = self.senders.get(reg.kind)
        if sender is None:
            self.stats.count("failed", reg.kind)
            log.warning("push kind %s is no longer configured; skipped", reg.kind)
            return
        import httpx  # for its errors; the request loads it anyway (outbound_client.py)

        try:
            outcome = await sender.send(reg)
        except (httpx.HTTPError, OSError, ValueError, KeyError) as e:
            self.stats.count("failed", reg.kind)
            log.warning("push via %s failed: %s", reg.kind, type(e).__name__)
            return
        if outcome is Outcome.SENT:
            self.stats.count("sent", reg.kind)
        elif outcome is Outcome.GONE:
            self.stats.count("unregistered", reg.kind)
            log.info("push registration gone at the %s service; unregistered", reg.kind)
            await self.unregister(reg.client_uuid)
        else:
            self.stats.count("failed", reg.kind)
            log.warning("push via %s refused by the service", reg.kind)


def _host(url: str) -> str:
    return urlsplit(url).hostname or ""


def _attached_policy(payload: bytes | None) -> str | None:
    """The member's per-group policy carried in a RoostQueueItem, if readable."""
    if payload is None:
        return None  # woken from another process without the payload: the default decides
    try:
        return QueueItem.decode(payload).policy or None
    except Exception:  # not a DS item (or damaged): the default policy decides
        return None
