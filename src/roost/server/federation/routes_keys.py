"""``GET /federation/v1/keys`` (this server's published keys, unsigned) and
``GET /federation/v1/whoami`` (a signed connectivity check between two servers)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ..auth.schemas import FederationOut
from ..deps import ServicesDep
from .identity import FEDERATION_API
from .inbound import SIGNED_REQUEST_ERRORS, FederationOrigin

API_PREFIX = FEDERATION_API

router = APIRouter(prefix=API_PREFIX, tags=["federation"])


class KeysOut(FederationOut):
    home_domain: str


async def federation_document(s: ServicesDep) -> FederationOut:
    """The keys document (also the ``federation`` member of ``/.well-known/roost``)."""
    return FederationOut.model_validate(await s.federation.identity.document())


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
