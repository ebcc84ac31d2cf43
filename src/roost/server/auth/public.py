"""What the AS publishes about a user and its clients, whatever the user's domain, and the
narrow interface through which it asks other domains (implemented by federation/as_flows.py,
passed to ``AuthService`` at construction)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class PublicUser:
    user_id: str
    user_uuid: str
    display_name: str | None


@dataclass(frozen=True, slots=True)
class PublicClient:
    client_id: str
    client_uuid: str
    cipher_suite: int
    signature_key: bytes
    credential: tuple[bytes, ...]  # (leaf certificate DER, AS certificate DER)
    created_at: int


class RemoteUsers(Protocol):
    """Lookups of users of other domains, answered by their servers."""

    async def user(self, user_id: str) -> PublicUser:
        """The user ``user_id`` of another domain (404 user_not_found if it has none)."""
        ...

    async def clients(self, user_id: str) -> list[PublicClient]:
        """The clients of ``user_id`` of another domain and their credentials."""
        ...

    async def as_certificate(self, domain: str) -> bytes:
        """The AS certificate (DER) of another domain."""
        ...

    async def search(
        self, domain: str, q: str, limit: int, cursor: str | None
    ) -> tuple[list[PublicUser], str | None]:
        """One page of another domain's opt-in directory search: its users and the cursor of
        the next page (None: the last one)."""
        ...
