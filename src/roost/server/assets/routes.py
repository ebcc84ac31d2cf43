"""HTTP routes of the asset service (see docs/api.md, Assets)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from ..deps import (
    DOMAIN_MAX_LENGTH,
    DOMAIN_PATTERN,
    PrincipalDep,
    ServicesDep,
    binary_response,
    principal,
)
from ..errors import Problem, problem_responses
from .storage import Blob

router = APIRouter(tags=["assets"])

UPLOAD_PATH = "/v1/assets"  # exempt from the global body limit: the service caps it itself
ASSET_MEDIA_TYPE = "application/octet-stream"
CAPABILITY_HEADER = "Roost-Capability"

_AUTH = problem_responses((401, "unauthenticated"), (401, "token_expired"))
_NOT_FOUND = problem_responses((404, "asset_not_found"))
# Read by hand, not declared: a bearer token is needed only when the asset is another domain's.
_optional_bearer = HTTPBearer(auto_error=False)


class UploadOut(BaseModel):
    asset_id: str
    capability: str
    size: int
    expires_at: int


class UsageOut(BaseModel):
    used_bytes: int
    quota_bytes: int
    max_asset_bytes: int
    default_ttl_seconds: int
    max_ttl_seconds: int


@router.post(
    UPLOAD_PATH,
    status_code=201,
    response_model=UploadOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "The encrypted blob (the server never sees a key or plaintext)",
            "content": {ASSET_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        }
    },
    responses={
        **_AUTH,
        **problem_responses(
            (400, "invalid_expiry"),
            (400, "invalid_request"),
            (413, "asset_too_large"),
            (413, "quota_exceeded"),
            (415, "unsupported_media_type"),
        ),
    },
)
async def upload(
    request: Request,
    response: Response,
    p: PrincipalDep,
    s: ServicesDep,
    expires_in: Annotated[int | None, Query(description="lifetime in seconds")] = None,
) -> UploadOut:
    """Upload an encrypted blob (streamed; cut off as soon as it passes the size cap or the
    caller's free quota). The answer's capability is shown once: only its hash is stored."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != ASSET_MEDIA_TYPE:
        raise Problem(415, "unsupported_media_type", f"the body must be {ASSET_MEDIA_TYPE}")
    declared: int | None = None
    if "content-length" in request.headers:
        try:
            declared = int(request.headers["content-length"])
        except ValueError:
            raise Problem(400, "invalid_request", "bad Content-Length") from None
    try:
        done = await s.assets.upload(
            p.user_uuid,
            request.stream(),
            declared_length=declared,
            ttl_seconds=expires_in,
        )
    except ClientDisconnect:
        raise Problem(400, "invalid_request", "the upload was interrupted") from None
    response.headers["Location"] = f"{UPLOAD_PATH}/{done.asset_id}"
    return UploadOut(
        asset_id=done.asset_id,
        capability=done.capability,
        size=done.size,
        expires_at=done.expires_at,
    )


@router.get(f"{UPLOAD_PATH}/usage", response_model=UsageOut, responses=_AUTH)
async def usage(p: PrincipalDep, s: ServicesDep) -> UsageOut:
    """The caller's asset quota and the limits that apply to uploads."""
    u = await s.assets.usage(p.user_uuid)
    st = s.assets.settings
    return UsageOut(
        used_bytes=u.used_bytes,
        quota_bytes=u.quota_bytes,
        max_asset_bytes=st.max_asset_bytes,
        default_ttl_seconds=st.default_ttl_seconds,
        max_ttl_seconds=st.max_ttl_seconds,
    )


def blob_response(blob: Blob) -> Response:
    """The ciphertext, streamed, never cached by intermediaries or sniffed by browsers."""
    return StreamingResponse(
        blob.chunks,
        media_type=ASSET_MEDIA_TYPE,
        headers={
            "Content-Length": str(blob.size),
            "Cache-Control": "private, no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.get(
    UPLOAD_PATH + "/{asset_id}",
    response_class=Response,
    responses={200: binary_response(ASSET_MEDIA_TYPE, "The encrypted blob"), **_NOT_FOUND},
)
async def download(
    asset_id: str,
    s: ServicesDep,
    capability: Annotated[str, Header(alias=CAPABILITY_HEADER)] = "",
) -> Response:
    """Download an asset of this server by capability (no account needed: whoever was given
    the reference may fetch it). The capability travels in a header, never in the URL, so it
    stays out of access logs. Kept for references of the first format; clients use
    ``GET /v1/assets/{domain}/{asset_id}``."""
    return blob_response(await s.assets.open(asset_id, capability))


@router.get(
    UPLOAD_PATH + "/{domain}/{asset_id}",
    response_class=Response,
    responses={
        200: binary_response(ASSET_MEDIA_TYPE, "The encrypted blob"),
        **_AUTH,
        **_NOT_FOUND,
        **problem_responses(
            (400, "invalid_request"), (403, "federation_refused"), (502, "federation_unavailable")
        ),
    },
)
async def download_from_domain(
    domain: Annotated[str, Path(max_length=DOMAIN_MAX_LENGTH, pattern=DOMAIN_PATTERN)],
    asset_id: str,
    request: Request,
    s: ServicesDep,
    capability: Annotated[str, Header(alias=CAPABILITY_HEADER)] = "",
) -> Response:
    """Download an asset of any domain through this, the caller's own, homeserver: one of this
    domain as ``GET /v1/assets/{asset_id}`` (capability only), another domain's fetched by
    this server over federation and relayed as it arrives (a bearer token of this server is
    then required: it relays for its own users only)."""
    if not s.assets.is_local(domain):
        await principal(request, await _optional_bearer(request))
    return blob_response(await s.assets.open_anywhere(domain, asset_id, capability))


@router.delete(UPLOAD_PATH + "/{asset_id}", status_code=204, responses={**_AUTH, **_NOT_FOUND})
async def delete(asset_id: str, p: PrincipalDep, s: ServicesDep) -> Response:
    """The uploader withdraws an asset before it expires."""
    await s.assets.delete(p.user_uuid, asset_id)
    return Response(status_code=204)
