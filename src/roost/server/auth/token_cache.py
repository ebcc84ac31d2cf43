"""A bounded, revocation-aware bearer token -> Principal cache (one per ``AuthService``).

Resolving a token costs a database round trip (plus a pooled connection's checkout), which on
the hot routes cost as much as the work itself. A resolved token is reused for at most
``TTL_SECONDS`` of the app clock, so an expiring token or a suspension made by another program
(``roost admin``) is honoured here at most that long late. Revocations this server learns of
end a cached token at once:

- removing a client or deleting an account in this process (the AS's deletion hooks: evicted
  inside the deleting transaction and again after it commits);
- the same in another process on the same PostgreSQL (``notify/pg_bridge.py`` relays its
  ``client_gone`` / ``user_gone`` events here).

A lookup that raced with a revocation is not cached (a generation counter), so a token read
just before its deletion committed cannot linger.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from weakref import WeakKeyDictionary

from ..store.async_engine import AsyncConnection
from ..store.engine import after_commit
from .service import AuthService, Principal

CACHE_SIZE = 10_000
TTL_SECONDS = 5.0


class TokenCache:
    def __init__(
        self,
        auth: AuthService,
        clock: Callable[[], float],
        size: int = CACHE_SIZE,
        ttl: float = TTL_SECONDS,
    ) -> None:
        self.auth = auth
        self.clock = clock
        self.size = size
        self.ttl = ttl
        self._map: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._generation = 0  # bumped by every eviction
        self._lookups: dict[str, asyncio.Future[Principal]] = {}
        auth.on_client_removed.append(self._client_removed)
        auth.on_user_deleted.append(self._user_deleted)

    def __len__(self) -> int:
        return len(self._map)

    async def authenticate(self, token: str) -> Principal:
        """The token's principal (cached), or the AS's 401/403 problem."""
        now = self.clock()
        hit = self._map.get(token)
        if hit is not None and now - hit[1] < self.ttl:
            return hit[0]
        # One lookup per token at a time: requests arriving meanwhile share its answer.
        pending = self._lookups.get(token)
        if pending is None:
            pending = asyncio.ensure_future(self._lookup(token, now))
            self._lookups[token] = pending
            pending.add_done_callback(lambda f: self._forget_lookup(token, f))
        return await asyncio.shield(pending)

    def _forget_lookup(self, token: str, lookup: asyncio.Future[Principal]) -> None:
        if self._lookups.get(token) is lookup:
            del self._lookups[token]

    async def _lookup(self, token: str, now: float) -> Principal:
        generation = self._generation
        principal = await self.auth.authenticate(token)  # raises the 401/403 problems
        if generation == self._generation:  # no revocation while we looked: safe to keep
            self._map[token] = (principal, now)
            self._map.move_to_end(token)
            if len(self._map) > self.size:
                self._map.popitem(last=False)
        return principal

    # ---- revocation ------------------------------------------------------------------------

    def evict_clients(self, client_uuids: set[str]) -> None:
        self._evict(lambda p: p.client_uuid in client_uuids)

    def evict_user(self, user_uuid: str) -> None:
        self._evict(lambda p: p.user_uuid == user_uuid)

    def _evict(self, doomed: Callable[[Principal], bool]) -> None:
        self._generation += 1
        self._lookups.clear()  # requests from now on look up afresh
        for token in [t for t, (p, _) in self._map.items() if doomed(p)]:
            del self._map[token]

    async def _client_removed(self, conn: AsyncConnection, client_uuid: str) -> None:
        self._evict_now_and_after_commit(conn, {client_uuid})

    async def _user_deleted(
        self, conn: AsyncConnection, _user_uuid: str, client_uuids: list[str]
    ) -> None:
        self._evict_now_and_after_commit(conn, set(client_uuids))

    def _evict_now_and_after_commit(self, conn: AsyncConnection, client_uuids: set[str]) -> None:
        self.evict_clients(client_uuids)
        # A request that authenticated before the deletion committed may have re-cached it.
        after_commit(conn, lambda: self.evict_clients(client_uuids))


_caches: WeakKeyDictionary[AuthService, TokenCache] = WeakKeyDictionary()


def token_cache(auth: AuthService, clock: Callable[[], float] | None = None) -> TokenCache:
    """The process's one cache for ``auth`` (created on first use, on the AS's clock)."""
    cache = _caches.get(auth)
    if cache is None:
        cache = _caches[auth] = TokenCache(auth, clock or auth.clock)
    return cache
