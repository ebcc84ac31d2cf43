"""What the Delivery Service needs from federation, as a narrow interface given to it at
construction (``federation/ds_flows.py`` implements it), and the principal of a client of
another domain acting through its home server (docs/federation.md, "DS flows")."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol

from ..auth.service import Principal
from ..store.async_engine import AsyncConnection


@dataclass(frozen=True, slots=True)
class RemotePrincipal(Principal):
    """A client of another domain acting through its home server (federation/routes_ds.py):
    its queues live on ``domain``'s QS, which checked their ownership."""

    domain: str


class DsFederation(Protocol):
    """Remote AS certificates and the federation outbox, for remote members; the domains the
    operator removed for good (their members leave this server's groups)."""

    async def as_certificate(self, domain: str) -> bytes: ...

    async def forgotten_domains(self) -> frozenset[str]: ...

    # Inside the caller's transaction: a group's items for remote queues, in order, per
    # destination.
    def items_in(
        self, conn: AsyncConnection, domain: str, group_id: bytes, items: list[tuple[bytes, bytes]]
    ) -> Awaitable[None]: ...

    # Whether items of the group wait to be applied by ``domain`` (queued or being sent).
    def items_in_transit(
        self, conn: AsyncConnection, domain: str, group_id: bytes
    ) -> Awaitable[bool]: ...

    def welcome_in(
        self, conn: AsyncConnection, domain: str, user_id: str, event: bytes
    ) -> Awaitable[None]: ...

    # Before a transaction's first item: lock its destinations in one order (no deadlock).
    def lock_destinations_in(self, conn: AsyncConnection, domains: set[str]) -> Awaitable[None]: ...


def domain_of(user_id: str) -> str:
    """The domain of a user id ``name@domain``."""
    return user_id.rpartition("@")[2]
