"""``GET /federation/v1/assets/{asset_id}``: the ciphertext of an asset of this domain, for
another homeserver relaying it to its user (docs/federation.md, "Assets").

Signed by a peer the federation policy admits, and the asset's capability presented as for a
local download: the signature says which server asks, the capability that it may have it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response

from ..assets.routes import ASSET_MEDIA_TYPE, CAPABILITY_HEADER, blob_response
from ..deps import ServicesDep, binary_response
from ..errors import problem_responses
from .asset_flows import ASSET_PATH
from .inbound import SIGNED_REQUEST_ERRORS, FederationOrigin

router = APIRouter(tags=["federation"])


@router.get(
    ASSET_PATH,
    response_class=Response,
    responses={
        200: binary_response(ASSET_MEDIA_TYPE, "The encrypted blob"),
        **SIGNED_REQUEST_ERRORS,
        **problem_responses((404, "asset_not_found")),
    },
)
async def get_asset(
    asset_id: str,
    _origin: FederationOrigin,
    s: ServicesDep,
    capability: Annotated[str, Header(alias=CAPABILITY_HEADER)] = "",
) -> Response:
    """An asset's ciphertext by capability, for a peer server (signed request)."""
    return blob_response(await s.assets.open(asset_id, capability))
