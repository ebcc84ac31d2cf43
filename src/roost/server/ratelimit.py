"""In-process token-bucket rate limits keyed by requester, or by target user for KeyPackage
claims (bounded memory).

Limits are per server process; with several processes behind one database each enforces its own
share (documented in docs/operations.md).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from .errors import Problem

_MAX_KEYS = 100_000


class RateLimiter:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def hit(self, key: str) -> None:
        """Take one token for ``key`` or raise a 429 problem with Retry-After."""
        now = self.clock()
        tokens, last = self._buckets.pop(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            retry = max(1, int((1.0 - tokens) / self.rate) + 1)
            raise Problem(
                429, "rate_limited", "too many requests", headers={"Retry-After": str(retry)}
            )
        self._buckets[key] = (tokens - 1.0, now)
        while len(self._buckets) > _MAX_KEYS:
            self._buckets.popitem(last=False)  # evict the least recently used key
