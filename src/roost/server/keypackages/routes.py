"""HTTP routes of the KeyPackage service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel

from roost.protocol.media_types import MLS_MEDIA_TYPE

from ..deps import PrincipalDep, ServicesDep, binary_response, mls_body, mls_request_body
from ..errors import Problem, problem_responses
from .validation import Publisher

router = APIRouter(tags=["keypackages"])

_AUTH = problem_responses((401, "unauthenticated"), (401, "token_expired"))


class PublishOut(BaseModel):
    published: int
    last_resort: int


class CountOut(BaseModel):
    count: int
    last_resort: int
    by_cipher_suite: dict[str, int]


@router.post(
    "/v1/keypackages",
    status_code=201,
    response_model=PublishOut,
    openapi_extra=mls_request_body(
        "MLSMessage key_packages<V> (MLS vector of KeyPackage messages)"
    ),
    responses={
        **_AUTH,
        **problem_responses(
            (400, "malformed_mls"),
            (413, "body_too_large"),
            (415, "unsupported_media_type"),
            (422, "unsupported_cipher_suite"),
            (422, "invalid_signature"),
            (422, "invalid_lifetime"),
            (422, "credential_mismatch"),
            (422, "duplicate_init_key"),
            (422, "no_last_resort"),
            (422, "too_many_keypackages"),
            (422, "wrong_wire_format"),
        ),
    },
)
async def publish(request: Request, p: PrincipalDep, s: ServicesDep) -> PublishOut:
    """Publish a batch; it replaces all earlier KeyPackages of the calling client."""
    body = await mls_body(request)
    client = await s.auth.get_client(p.client_uuid)
    if client is None:
        raise Problem(401, "unauthenticated", "the client no longer exists")
    packages = await s.keypackages.publish(
        p.client_uuid, p.user_uuid, Publisher(client.signature_key, client.certificate), body
    )
    return PublishOut(published=len(packages), last_resort=sum(x.last_resort for x in packages))


@router.get("/v1/keypackages/count", response_model=CountOut, responses=_AUTH)
async def count(p: PrincipalDep, s: ServicesDep) -> CountOut:
    """How many unexpired KeyPackages the calling client has left."""
    c = await s.keypackages.counts(p.client_uuid)
    return CountOut(
        count=c.count,
        last_resort=c.last_resort,
        by_cipher_suite={str(k): v for k, v in sorted(c.by_cipher_suite.items())},
    )


@router.post(
    "/v1/users/{user_id}/keypackages/claim",
    response_class=Response,
    responses={
        200: binary_response(MLS_MEDIA_TYPE, "MLSMessage key_packages<V>: one per client"),
        **_AUTH,
        **problem_responses(
            (404, "user_not_found"),
            (403, "no_connection"),
            (429, "rate_limited"),
            (403, "federation_refused"),
            (502, "federation_unavailable"),
        ),
    },
)
async def claim(
    user_id: str,
    p: PrincipalDep,
    s: ServicesDep,
    cipher_suite: Annotated[int, Query(ge=0, le=65535)] = 1,
) -> Response:
    """Claim one KeyPackage for every client of the user (atomic, never handed out twice)."""
    s.claim_limiter.hit(p.user_uuid)  # per requesting user: extra clients add no budget
    body = await s.keypackages.claim_for_user(p, user_id, cipher_suite)
    return Response(body, media_type=MLS_MEDIA_TYPE)


@router.post(
    "/v1/users/{user_id}/clients/{client_uuid}/keypackages/claim",
    response_class=Response,
    responses={
        200: binary_response(
            MLS_MEDIA_TYPE, "MLSMessage key_packages<V>: the client's one package (or none)"
        ),
        **_AUTH,
        **problem_responses(
            (404, "user_not_found"),
            (404, "client_not_found"),
            (403, "no_connection"),
            (429, "rate_limited"),
            (403, "federation_refused"),
            (502, "federation_unavailable"),
        ),
    },
)
async def claim_client(
    user_id: str,
    client_uuid: str,
    p: PrincipalDep,
    s: ServicesDep,
    cipher_suite: Annotated[int, Query(ge=0, le=65535)] = 1,
) -> Response:
    """Claim one KeyPackage of one client of the user (same rule and limits as the user claim;
    e.g. to add a user's new device to the groups its other devices are in)."""
    s.claim_limiter.hit(p.user_uuid)
    body = await s.keypackages.claim_for_client(p, user_id, client_uuid, cipher_suite)
    return Response(body, media_type=MLS_MEDIA_TYPE)
