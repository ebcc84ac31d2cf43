"""``GET /federation/v1/keys`` (this server's published keys, unsigned) and
``GET /federation/v1/whoami`` (a signed connectivity check between two servers)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from ..deps import ServicesDep
from .inbound import SIGNED_REQUEST_ERRORS, FederationOrigin

API_PREFIX = "/federation/v1"

router = APIRouter(prefix=API_PREFIX, tags=["federation"])


class FederationKeyOut(BaseModel):
    key_id: str
    public_key: str  # base64url, raw 32 bytes
    algorithm: str
    retired_at: int | None


class FederationOut(BaseModel):
    api: str
    keys: list[FederationKeyOut]


class KeysOut(FederationOut):
    home_domain: str


async def federation_document(s: ServicesDep) -> FederationOut:
    """The ``federation`` member of ``/.well-known/roost``."""
    keys = await s.federation.identity.published()
    return FederationOut(
        api=API_PREFIX, keys=[FederationKeyOut.model_validate(k.as_json()) for k in keys]
    )


@router.get("/keys", response_model=KeysOut)
async def keys(s: ServicesDep) -> KeysOut:
    """This server's federation signing keys (current first, then retired within the grace)."""
    doc = await federation_document(s)
    return KeysOut(home_domain=s.config.home_domain, api=doc.api, keys=doc.keys)


@router.get("/whoami", responses=SIGNED_REQUEST_ERRORS)
async def whoami(origin: FederationOrigin, s: ServicesDep) -> dict[str, Any]:
    """Answer a signed request with the verified origin (operators' connectivity check)."""
    return {"origin": origin, "destination": s.config.home_domain}


@router.post("/whoami", responses=SIGNED_REQUEST_ERRORS)
async def whoami_with_body(
    origin: FederationOrigin, s: ServicesDep, request: Request
) -> dict[str, Any]:
    """As ``GET``, and the size of the verified body (checks body signing end to end)."""
    body = await request.body()
    return {"origin": origin, "destination": s.config.home_domain, "body_bytes": len(body)}
