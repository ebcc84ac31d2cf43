"""``RemoteDirectory``: other domains' published server keys and AS certificate.

Read from ``<base>/.well-known/roost`` of the domain (resolved by ``Resolver``; the policy
applies as for any outbound traffic), cached for ``ttl_seconds``. A forced refresh (an unknown
key id after a rotation) happens at most once per ``refresh_interval_seconds`` per domain, so a
peer sending garbage key ids cannot make us hammer the origin. A domain that could not be read
is not asked again for ``failure_ttl_seconds``: requests naming it meanwhile fail at once
instead of each waiting for a connection or timeout (and each making an outbound request).
Both caches are bounded (LRU).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from roost.protocol.base64url import unb64u

from ..outbound import OutboundRefused
from ..outbound_client import OutboundClient
from .identity import KEY_ALGORITHM
from .policy import FederationPolicyStore
from .resolver import Resolver
from .transport import FederationRefused, RemoteUnavailable, require_admitted

WELL_KNOWN_PATH = "/.well-known/roost"
MAX_DOCUMENT_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class RemoteServer:
    domain: str
    keys: dict[str, bytes]  # key id -> raw Ed25519 public key
    as_certificate: bytes  # DER
    api: str
    fetched_at: float  # time.monotonic()


class RemoteDirectory:
    def __init__(
        self,
        http: OutboundClient,
        resolver: Resolver,
        policy: FederationPolicyStore,
        clock: Callable[[], float] = time.time,
        *,
        ttl_seconds: float = 3600.0,
        refresh_interval_seconds: float = 10.0,
        failure_ttl_seconds: float = 10.0,
        max_domains: int = 1000,
    ) -> None:
        self.http = http
        self.resolver = resolver
        self.policy = policy
        self.clock = clock
        self.ttl_seconds = ttl_seconds
        self.refresh_interval_seconds = refresh_interval_seconds
        self.failure_ttl_seconds = failure_ttl_seconds
        self.max_domains = max_domains
        self._cache: OrderedDict[str, RemoteServer] = OrderedDict()
        self._failed: OrderedDict[str, tuple[float, str]] = OrderedDict()  # when, why
        self._forced_at: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def as_certificate(self, domain: str) -> bytes:
        """The domain's AS certificate (DER), for verifying its clients' credentials."""
        return (await self.server(domain)).as_certificate

    async def server_keys(self, domain: str, *, refresh: bool = False) -> dict[str, bytes]:
        """Key id -> raw Ed25519 public key of the domain's published server keys.

        ``refresh=True`` asks for a fresh copy (unknown key id); it is honoured at most once per
        ``refresh_interval_seconds`` per domain, otherwise the cached copy is returned.
        """
        return (await self.server(domain, refresh=refresh)).keys

    async def server(self, domain: str, *, refresh: bool = False) -> RemoteServer:
        domain = domain.lower()
        require_admitted(await self.policy.load(), domain)
        lock = self._locks.setdefault(domain, asyncio.Lock())
        try:
            return await self._server_locked(domain, lock, refresh)
        finally:
            # Only cached domains keep their lock: any valid Roost-Origin makes us look a
            # domain up, so a lock per unreadable domain would grow without bound.
            if domain not in self._cache and self._locks.get(domain) is lock and not lock.locked():
                del self._locks[domain]

    async def _server_locked(self, domain: str, lock: asyncio.Lock, refresh: bool) -> RemoteServer:
        async with lock:
            now = time.monotonic()
            cached = self._cache.get(domain)
            if cached is not None:
                fresh = now - cached.fetched_at < self.ttl_seconds
                may_force = now - self._forced_at.get(domain, -1e9) >= self.refresh_interval_seconds
                if fresh and not (refresh and may_force):
                    self._cache.move_to_end(domain)
                    return cached
                if refresh and fresh:
                    self._forced_at[domain] = now
            failed = self._failed.get(domain)
            if failed is not None and now - failed[0] < self.failure_ttl_seconds:
                raise RemoteUnavailable(domain, f"{failed[1]} (not asked again yet)")
            try:
                server = await self._fetch(domain)
            except RemoteUnavailable as e:
                self._failed[domain] = (now, e.reason)
                self._failed.move_to_end(domain)
                while len(self._failed) > self.max_domains:
                    self._failed.popitem(last=False)
                raise
            self._failed.pop(domain, None)
            self._cache[domain] = server
            self._cache.move_to_end(domain)
            while len(self._cache) > self.max_domains:
                evicted, _ = self._cache.popitem(last=False)
                self._forced_at.pop(evicted, None)
                self._locks.pop(evicted, None)
            return server

    def forget(self, domain: str) -> None:
        self._cache.pop(domain.lower(), None)
        self._failed.pop(domain.lower(), None)

    async def _fetch(self, domain: str) -> RemoteServer:
        import httpx  # loaded already: the request below is made through it (outbound_client.py)

        url = self.resolver.base_url(domain) + WELL_KNOWN_PATH
        try:
            async with self.http.stream("GET", url) as response:
                if response.status_code != 200:
                    raise RemoteUnavailable(
                        domain, f"{WELL_KNOWN_PATH} answered {response.status_code}"
                    )
                content = bytearray()
                async for chunk in response.aiter_bytes():
                    content += chunk
                    if len(content) > MAX_DOCUMENT_BYTES:  # a peer cannot make us buffer more
                        raise RemoteUnavailable(domain, f"{WELL_KNOWN_PATH} is too large")
        except OutboundRefused:
            raise FederationRefused(domain, f"{domain} is not at a public address") from None
        except httpx.TimeoutException:
            raise RemoteUnavailable(domain, "timed out") from None
        except httpx.HTTPError as e:
            raise RemoteUnavailable(domain, f"could not connect ({type(e).__name__})") from None
        try:
            return _parse_document(domain, json.loads(content), time.monotonic())
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise RemoteUnavailable(domain, f"{WELL_KNOWN_PATH} is invalid: {e}") from None


def _parse_document(domain: str, doc: object, now: float) -> RemoteServer:
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    # The answer must be about the domain we asked for (a resolver mistake must not let one
    # server's keys stand for another domain).
    if str(doc.get("home_domain", "")).lower() != domain:
        raise ValueError(f"home_domain is {doc.get('home_domain')!r}")
    fed = doc["federation"]
    keys: dict[str, bytes] = {}
    for entry in fed["keys"]:
        if entry.get("algorithm") != KEY_ALGORITHM:
            continue
        raw = unb64u(entry["public_key"])
        if len(raw) != 32:
            raise ValueError("an ed25519 public key must be 32 bytes")
        keys[str(entry["key_id"])] = raw
    cert = x509.load_pem_x509_certificate(str(doc["as_certificate"]).encode())
    return RemoteServer(domain, keys, cert.public_bytes(Encoding.DER), str(fed["api"]), now)
