"""Request dependencies shared by the route modules: services, the caller, raw bodies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from roost.protocol.media_types import MLS_MEDIA_TYPE

from .assets.service import AssetService
from .auth.service import AuthService, Principal
from .auth.tickets import RealtimeTickets
from .auth.token_cache import token_cache
from .config import Config
from .connections.service import ConnectionService
from .delivery.service import DeliveryService
from .errors import Problem
from .federation import FederationServices
from .keypackages.service import KeyPackageService
from .queues.service import QueueService
from .ratelimit import RateLimiter


@dataclass(slots=True)
class Services:
    config: Config
    auth: AuthService
    queues: QueueService
    keypackages: KeyPackageService
    connections: ConnectionService
    registration_limiter: RateLimiter
    claim_limiter: RateLimiter
    auth_limiter: RateLimiter
    # directory searches of another domain, per requesting user
    search_limiter: RateLimiter
    # GET /v1/groups per client (each one a scan of the sealed member rows)
    group_list_limiter: RateLimiter
    delivery: DeliveryService
    assets: AssetService
    federation: FederationServices
    tickets: RealtimeTickets


def services(request: Request) -> Services:
    return request.app.state.services


_bearer = HTTPBearer(auto_error=False, description="Bearer token from POST /v1/auth/token")


async def principal(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if creds is None or creds.scheme.lower() != "bearer":
        raise Problem(
            401,
            "unauthenticated",
            "a bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    svc = services(request)
    if svc.auth.db.is_sqlite:
        # No channel tells this process of a revocation made by `roost admin` (another
        # process) on SQLite: ask the database each time there.
        return await svc.auth.authenticate(creds.credentials)
    # PostgreSQL: every process and `roost admin` publish revocations (notify/pg_bridge.py).
    return await token_cache(svc.auth).authenticate(creds.credentials)


async def bearer_token(
    _caller: Annotated[Principal, Depends(principal)],
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The bearer token the request was authenticated with (after ``principal`` accepted it)."""
    assert creds is not None, "principal() refuses requests without a bearer token"
    return creds.credentials


ServicesDep = Annotated[Services, Depends(services)]
PrincipalDep = Annotated[Principal, Depends(principal)]
BearerTokenDep = Annotated[str, Depends(bearer_token)]


def remote_key(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def mls_body(
    request: Request, *, required: bool = True, max_bytes: int | None = None
) -> bytes:
    """Read a ``message/mls`` body (size already capped by the body-limit middleware)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if not body and not required:
        return b""
    if ctype != MLS_MEDIA_TYPE:
        raise Problem(415, "unsupported_media_type", f"the body must be {MLS_MEDIA_TYPE}")
    if not body:
        raise Problem(400, "malformed_mls", "the body is empty")
    if max_bytes is not None and len(body) > max_bytes:
        raise Problem(413, "body_too_large", f"the message exceeds {max_bytes} bytes")
    return body


# base64url (roost.protocol.base64url: unpadded, padded input accepted) as a JSON Schema pattern.
B64U_PATTERN = r"^[A-Za-z0-9_-]*={0,2}$"
# A DNS name as config.is_valid_domain accepts it (labels of letters, digits and inner
# hyphens; case-insensitive: the server lowers it). At most DOMAIN_MAX_LENGTH characters.
DOMAIN_MAX_LENGTH = 253
DOMAIN_PATTERN = (
    r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def mls_request_body(description: str, required: bool = True) -> dict[str, Any]:
    """OpenAPI ``requestBody`` for a raw ``message/mls`` body."""
    return {
        "requestBody": {
            "required": required,
            "description": description,
            "content": {MLS_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        }
    }


def binary_response(media_type: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {media_type: {"schema": {"type": "string", "format": "binary"}}},
    }
