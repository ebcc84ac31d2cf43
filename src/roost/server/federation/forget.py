"""The operator removes a domain from federation for good (``roost admin federation forget``):
blocked, marked forgotten, and what is queued for it discarded, in one transaction. The
Delivery Service then removes the domain's members from this server's groups (it learns the
forgotten domains through its ``DsFederation``; docs/federation.md, "Blocked, unreachable,
forgotten")."""

from __future__ import annotations

from dataclasses import dataclass

from ..store import Database
from .outbox import discard_destination_in
from .policy import FederationPolicyStore, normalize_domain


@dataclass(frozen=True, slots=True)
class Forgotten:
    domain: str
    newly: bool  # False: it was forgotten already
    discarded: int  # outbox items dropped for it


async def forget_domain(db: Database, policy: FederationPolicyStore, domain: str) -> Forgotten:
    d = normalize_domain(domain)
    async with db.transaction() as conn:
        newly = await policy.forget_in(conn, d)
        discarded = await discard_destination_in(conn, d)
    return Forgotten(d, newly, discarded)
