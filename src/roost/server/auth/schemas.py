"""Response models of the AS's public documents, shared by its client API (auth/routes.py) and
the federation API that serves the same shapes to other servers (federation/routes_as.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query
from pydantic import BaseModel, Field

from roost.protocol.base64url import b64u

from .public import PublicClient, PublicUser


class UserOut(BaseModel):
    user_id: str
    user_uuid: str
    display_name: str | None


# The directory search's parameters: the same for this server's users and another server's.
DirectoryQuery = Annotated[str, Query(min_length=1, max_length=64)]
DirectoryLimit = Annotated[int, Query(ge=1, le=1000)]
DirectoryCursor = Annotated[str | None, Query(max_length=64)]


class DirectoryOut(BaseModel):
    users: list[UserOut]
    next_cursor: str | None


class ClientOut(BaseModel):
    client_id: str
    client_uuid: str
    cipher_suite: int
    signature_key: str
    credential: list[str] = Field(
        description="[b64u leaf certificate DER, b64u AS certificate DER]"
    )
    created_at: int


class ClientsOut(BaseModel):
    clients: list[ClientOut]


# The ``federation`` member of ``/.well-known/roost``: this server's federation signing keys
# (federation/identity.py), also served by ``GET /federation/v1/keys``.
class FederationKeyOut(BaseModel):
    key_id: str
    public_key: str  # base64url, raw 32 bytes
    algorithm: str
    retired_at: int | None


class FederationOut(BaseModel):
    api: str
    keys: list[FederationKeyOut]


def user_out(u: PublicUser) -> UserOut:
    return UserOut(user_id=u.user_id, user_uuid=u.user_uuid, display_name=u.display_name)


def client_out(c: PublicClient) -> ClientOut:
    return ClientOut(
        client_id=c.client_id,
        client_uuid=c.client_uuid,
        cipher_suite=c.cipher_suite,
        signature_key=b64u(c.signature_key),
        credential=[b64u(x) for x in c.credential],
        created_at=c.created_at,
    )
