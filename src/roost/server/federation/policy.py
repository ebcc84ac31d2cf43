"""The stored federation policy: mode plus explicit allow and block lists (owned by federation;
``roost admin federation`` changes it through ``FederationPolicyStore``).

Rules (docs/operations.md): in ``allowlist`` mode only listed domains are admitted, so an EMPTY
allowlist admits nobody; in ``open`` mode every domain is admitted except blocked ones. The
blocklist wins in both modes. A domain the operator *forgot* (``roost admin federation forget``)
is blocked and marked ``forget`` too: what is queued for it is discarded and the Delivery Service
removes its members from this server's groups (docs/federation.md, "Blocked, unreachable,
forgotten"); ``unblock`` lifts both. The policy lives in the database so ``roost admin
federation`` changes reach running servers (each re-reads it at most ``cache_seconds`` later).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from ..config import is_valid_domain
from ..store import Database
from ..store.async_engine import AsyncConnection
from .tables import federation_domains, federation_settings

MODES = ("allowlist", "open")
LIST_KINDS = ("allow", "block")
FORGET_KIND = "forget"  # stored beside "block" for a domain the operator removed for good
# Closed by default: a fresh server federates with nobody until the operator says otherwise.
DEFAULT_MODE = "allowlist"


class PolicyError(ValueError):
    """An invalid mode, list name or domain (operator input)."""


@dataclass(frozen=True, slots=True)
class FederationPolicy:
    mode: str
    allow: frozenset[str]
    block: frozenset[str]
    forgotten: frozenset[str] = frozenset()  # always blocked too

    def admits(self, domain: str) -> bool:
        """Whether traffic to or from ``domain`` is allowed (apply inbound and outbound)."""
        domain = domain.lower()
        if domain in self.block or not is_valid_domain(domain):
            return False
        if domain in self.allow:
            return True
        # Open mode admits names of the public DNS only: an IP address or a dotless name
        # (localhost, an intranet host) that a client or a signed request's Roost-Origin names
        # would otherwise make this server connect inside its own network (SSRF). The operator
        # can still allow such a domain explicitly.
        return self.mode == "open" and "." in domain and not _is_ip_address(domain)


def _is_ip_address(domain: str) -> bool:
    try:
        ipaddress.ip_address(domain)
    except ValueError:
        # An all-numeric last label is no DNS name either (e.g. "10.1", "0x7f.1").
        return domain.rsplit(".", 1)[-1].isdigit()
    return True


def normalize_domain(domain: str) -> str:
    d = domain.strip().lower()
    if not is_valid_domain(d):
        raise PolicyError(f"{domain!r} is not a valid domain name")
    return d


async def read_policy(conn: AsyncConnection) -> FederationPolicy:
    """The stored policy, read on ``conn`` (uncached: status readers that hold a connection)."""
    row = (
        await conn.execute(
            sa.select(federation_settings.c.mode).where(federation_settings.c.id == 1)
        )
    ).first()
    lists: dict[str, set[str]] = {k: set() for k in (*LIST_KINDS, FORGET_KIND)}
    for d in await conn.execute(sa.select(federation_domains)):
        lists.setdefault(d.list_kind, set()).add(d.domain)
    return FederationPolicy(
        row.mode if row is not None else DEFAULT_MODE,
        frozenset(lists["allow"]),
        frozenset(lists["block"] | lists[FORGET_KIND]),
        frozenset(lists[FORGET_KIND]),
    )


class FederationPolicyStore:
    """The policy as running servers read it (cached ``cache_seconds``) and ``roost admin
    federation`` changes it (``cache_seconds=0``)."""

    def __init__(
        self, db: Database, clock: Callable[[], float] = time.time, cache_seconds: float = 5.0
    ) -> None:
        self.db = db
        self.clock = clock
        self.cache_seconds = cache_seconds
        self._cached: FederationPolicy | None = None
        self._loaded_at = 0.0

    async def load(self, *, fresh: bool = False) -> FederationPolicy:
        now = time.monotonic()
        if not fresh and self._cached is not None and now - self._loaded_at < self.cache_seconds:
            return self._cached
        async with self.db.engine.connect() as conn:
            policy = await read_policy(conn)
        self._cached, self._loaded_at = policy, now
        return policy

    async def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise PolicyError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        now = int(self.clock())
        async with self.db.transaction() as conn:
            updated = await conn.execute(
                sa.update(federation_settings)
                .where(federation_settings.c.id == 1)
                .values(mode=mode, updated_at=now)
            )
            if not updated.rowcount:
                await conn.execute(
                    sa.insert(federation_settings).values(id=1, mode=mode, updated_at=now)
                )
        self._cached = None

    async def add(self, list_kind: str, domain: str) -> bool:
        """Add ``domain`` to a list; False if it was already there."""
        kind, d = _check_kind(list_kind), normalize_domain(domain)
        async with self.db.transaction() as conn:
            added = await self._add_in(conn, kind, d)
        self._cached = None
        return added

    async def forget_in(self, conn: AsyncConnection, domain: str) -> bool:
        """Block ``domain`` and mark it forgotten, in the caller's transaction (the caller
        discards what is queued for it in the same one); False if it was already forgotten."""
        d = normalize_domain(domain)
        await self._add_in(conn, "block", d)
        added = await self._add_in(conn, FORGET_KIND, d)
        self._cached = None
        return added

    async def _add_in(self, conn: AsyncConnection, kind: str, d: str) -> bool:
        exists = await conn.execute(
            sa.select(federation_domains.c.domain).where(
                federation_domains.c.domain == d, federation_domains.c.list_kind == kind
            )
        )
        if exists.first() is not None:
            return False
        await conn.execute(
            sa.insert(federation_domains).values(
                domain=d, list_kind=kind, added_at=int(self.clock())
            )
        )
        return True

    async def remove(self, list_kind: str, domain: str) -> bool:
        """Remove ``domain`` from a list; unblocking a forgotten domain un-forgets it too."""
        kind, d = _check_kind(list_kind), normalize_domain(domain)
        kinds = [kind, FORGET_KIND] if kind == "block" else [kind]
        async with self.db.transaction() as conn:
            result = await conn.execute(
                sa.delete(federation_domains).where(
                    federation_domains.c.domain == d, federation_domains.c.list_kind.in_(kinds)
                )
            )
        self._cached = None
        return bool(result.rowcount)


def _check_kind(list_kind: str) -> str:
    if list_kind not in LIST_KINDS:
        raise PolicyError(f"list must be 'allow' or 'block', got {list_kind!r}")
    return list_kind
