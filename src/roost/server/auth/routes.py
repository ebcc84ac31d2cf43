"""HTTP routes of the Authentication Service (docs/api.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from roost.mls.crypto.ciphersuite import SUPPORTED_SUITES
from roost.protocol.base64url import b64u, unb64u
from roost.protocol.user_id import canonical_user_id

from ..deps import (
    B64U_PATTERN,
    DOMAIN_MAX_LENGTH,
    DOMAIN_PATTERN,
    PrincipalDep,
    ServicesDep,
    binary_response,
    remote_key,
)
from ..errors import Problem, problem_responses
from .schemas import (
    ClientOut,
    ClientsOut,
    DirectoryCursor,
    DirectoryLimit,
    DirectoryOut,
    DirectoryQuery,
    FederationOut,
    UserOut,
    client_out,
    user_out,
)
from .service import ClientInfo, ClientKey

router = APIRouter()

_AUTH = problem_responses((401, "unauthenticated"), (401, "token_expired"))


class Strict(BaseModel):
    # strict: a JSON string is not taken for a number or a boolean, as the schema says.
    model_config = ConfigDict(extra="forbid", strict=True)


class ClientKeyIn(Strict):
    cipher_suite: int = Field(1, ge=0, le=65535)
    signature_key: str = Field(
        ..., max_length=512, pattern=B64U_PATTERN, description="b64u MLS signature public key"
    )
    proof: str = Field(
        ..., max_length=512, pattern=B64U_PATTERN, description="b64u proof of possession"
    )

    def to_key(self) -> ClientKey:
        try:
            return ClientKey(self.cipher_suite, unb64u(self.signature_key), unb64u(self.proof))
        except ValueError as e:
            raise Problem(400, "invalid_request", str(e)) from None


class RegisterIn(Strict):
    name: str = Field(..., min_length=1, max_length=63)
    display_name: str | None = Field(None, min_length=1, max_length=128)
    password: str | None = Field(None, min_length=8, max_length=1024)
    registration_token: str | None = Field(None, max_length=256)
    discoverable: bool = False
    client: ClientKeyIn


class RegisterOut(BaseModel):
    user_id: str
    user_uuid: str
    client: ClientOut


class AddClientIn(Strict):
    user_id: str = Field(..., max_length=320)
    password: str = Field(..., min_length=1, max_length=1024)
    client: ClientKeyIn


class ClientRequestIn(Strict):
    user_id: str = Field(..., max_length=320)
    device_name: str | None = Field(None, max_length=128)
    client: ClientKeyIn


class ClientRequestCreated(BaseModel):
    request_id: str
    expires_at: int


class PendingClientRequest(BaseModel):
    request_id: str
    device_name: str | None
    cipher_suite: int
    signature_key: str
    created_at: int
    expires_at: int


class PendingClientRequests(BaseModel):
    requests: list[PendingClientRequest]


class ClientRequestState(BaseModel):
    state: str
    client: ClientOut | None = None


class ChallengeIn(Strict):
    client_id: str = Field(..., max_length=400)


class ChallengeOut(BaseModel):
    challenge_id: str
    nonce: str
    expires_at: int


class TokenIn(Strict):
    challenge_id: str = Field(..., max_length=64)
    signature: str = Field(..., max_length=1024)


class TokenOut(BaseModel):
    token: str
    expires_at: int
    client_id: str
    user_id: str


class MeOut(BaseModel):
    user_id: str
    user_uuid: str
    display_name: str | None
    discoverable: bool
    client_id: str
    clients: list[ClientOut]


class ProfileIn(Strict):
    display_name: str | None = Field(None, min_length=1, max_length=128)
    # Absent: unchanged; null is refused (a user is discoverable or not).
    discoverable: bool = Field(None)  # type: ignore[assignment]  # None only as "absent"


class WellKnownOut(BaseModel):
    home_domain: str
    api: str
    cipher_suites: list[int]
    registration: str
    as_certificate: str
    federation: FederationOut


def _client_out(s: ServicesDep, c: ClientInfo) -> ClientOut:
    return client_out(s.auth.public_client(c))


# A user of another domain is asked of its server (docs/federation.md).
_FEDERATED = ((403, "federation_refused"), (502, "federation_unavailable"))

_KEY_ERRORS = (
    (422, "unsupported_cipher_suite"),
    (422, "invalid_signature_key"),
    (422, "invalid_proof"),
)


@router.get("/.well-known/roost", response_model=WellKnownOut, tags=["discovery"])
async def well_known(s: ServicesDep) -> WellKnownOut:
    """Server facts and the AS certificate (PEM) for verifying client credentials."""
    assert s.auth.ca is not None
    return WellKnownOut(
        home_domain=s.config.home_domain,
        api="/v1",
        cipher_suites=list(SUPPORTED_SUITES),
        registration=s.config.registration_policy,
        as_certificate=s.auth.ca.certificate_pem,
        federation=FederationOut.model_validate(await s.federation.identity.document()),
    )


@router.get(
    "/v1/as/certificate",
    response_class=Response,
    responses={200: binary_response("application/pkix-cert", "DER of the AS certificate")},
    tags=["discovery"],
)
async def as_certificate(s: ServicesDep) -> Response:
    """The domain's AS (CA) certificate, DER encoded."""
    assert s.auth.ca is not None
    return Response(s.auth.ca.certificate_der, media_type="application/pkix-cert")


@router.get(
    "/v1/domains/{domain}/as-certificate",
    response_class=Response,
    responses={
        200: binary_response("application/pkix-cert", "DER of the domain's AS certificate"),
        **_AUTH,
        **problem_responses((403, "federation_refused"), (502, "federation_unavailable")),
    },
    tags=["discovery"],
)
async def domain_as_certificate(
    domain: Annotated[str, Path(max_length=DOMAIN_MAX_LENGTH, pattern=DOMAIN_PATTERN)],
    _p: PrincipalDep,
    s: ServicesDep,
) -> Response:
    """The AS certificate (DER) of any domain: ours, or another's fetched by this server from
    that domain's well-known document (cached), to verify its clients' credentials."""
    der = await s.auth.domain_as_certificate(domain)
    return Response(der, media_type="application/pkix-cert")


@router.post(
    "/v1/register",
    status_code=201,
    response_model=RegisterOut,
    responses=problem_responses(
        (409, "user_exists"),
        (403, "registration_token_invalid"),
        (422, "invalid_name"),
        *_KEY_ERRORS,
        (429, "rate_limited"),
    ),
    tags=["auth"],
)
async def register(body: RegisterIn, request: Request, s: ServicesDep) -> RegisterOut:
    """Register a user together with its first client; returns the client's credential."""
    s.registration_limiter.hit(remote_key(request))
    user, client = await s.auth.register(
        body.name,
        body.client.to_key(),
        display_name=body.display_name,
        password=body.password,
        registration_token=body.registration_token,
        discoverable=body.discoverable,
    )
    return RegisterOut(user_id=user.user_id, user_uuid=user.uuid, client=_client_out(s, client))


@router.post(
    "/v1/clients",
    status_code=201,
    response_model=ClientOut,
    responses=problem_responses(
        (403, "invalid_password"), (409, "too_many_clients"), *_KEY_ERRORS, (429, "rate_limited")
    ),
    tags=["auth"],
)
async def add_client_with_password(
    body: AddClientIn, request: Request, s: ServicesDep
) -> ClientOut:
    """Add a client to an existing user with the user's password."""
    s.registration_limiter.hit(remote_key(request))
    # Also per target user, so password guessing from many addresses is throttled too.
    s.registration_limiter.hit("password:" + canonical_user_id(body.user_id))
    info = await s.auth.add_client_with_password(body.user_id, body.password, body.client.to_key())
    return _client_out(s, info)


@router.delete(
    "/v1/clients/{client_uuid}",
    status_code=204,
    response_class=Response,
    responses={**_AUTH, **problem_responses((404, "client_not_found"), (409, "last_client"))},
    tags=["auth"],
)
async def remove_client(client_uuid: str, p: PrincipalDep, s: ServicesDep) -> Response:
    """Remove a client of the caller's user (its tokens, KeyPackages and queues go too)."""
    await s.auth.remove_client(p, client_uuid.lower())
    return Response(status_code=204)


@router.post(
    "/v1/client-requests",
    status_code=201,
    response_model=ClientRequestCreated,
    responses=problem_responses((404, "user_not_found"), *_KEY_ERRORS, (429, "rate_limited")),
    tags=["auth"],
)
async def create_client_request(
    body: ClientRequestIn, request: Request, s: ServicesDep
) -> ClientRequestCreated:
    """A new device asks to be added; an existing client of the user approves it."""
    s.registration_limiter.hit(remote_key(request))
    request_id, expires = await s.auth.create_client_request(
        body.user_id, body.client.to_key(), body.device_name
    )
    return ClientRequestCreated(request_id=request_id, expires_at=expires)


@router.get(
    "/v1/client-requests",
    response_model=PendingClientRequests,
    responses=_AUTH,
    tags=["auth"],
)
async def list_client_requests(p: PrincipalDep, s: ServicesDep) -> PendingClientRequests:
    """Pending device requests of the caller's user."""
    rows = await s.auth.list_client_requests(p)
    return PendingClientRequests(
        requests=[
            PendingClientRequest(
                request_id=r.public_id,
                device_name=r.device_name,
                cipher_suite=r.cipher_suite,
                signature_key=b64u(r.signature_key),
                created_at=r.created_at,
                expires_at=r.expires_at,
            )
            for r in rows
        ]
    )


@router.post(
    "/v1/client-requests/{request_id}/approve",
    status_code=201,
    response_model=ClientOut,
    responses={**_AUTH, **problem_responses((404, "request_not_found"), (409, "too_many_clients"))},
    tags=["auth"],
)
async def approve_client_request(request_id: str, p: PrincipalDep, s: ServicesDep) -> ClientOut:
    """Approve a pending device request: the new client is created and its credential issued."""
    info = await s.auth.decide_client_request(p, request_id, approve=True)
    assert info is not None
    return _client_out(s, info)


@router.post(
    "/v1/client-requests/{request_id}/reject",
    status_code=204,
    response_class=Response,
    responses={**_AUTH, **problem_responses((404, "request_not_found"))},
    tags=["auth"],
)
async def reject_client_request(request_id: str, p: PrincipalDep, s: ServicesDep) -> Response:
    """Reject a pending device request."""
    await s.auth.decide_client_request(p, request_id, approve=False)
    return Response(status_code=204)


@router.get(
    "/v1/client-requests/{request_id}",
    response_model=ClientRequestState,
    responses=problem_responses((404, "request_not_found")),
    tags=["auth"],
)
async def poll_client_request(request_id: str, s: ServicesDep) -> ClientRequestState:
    """The new device polls its request (the unguessable request id is the capability)."""
    try:
        raw = unb64u(request_id)
    except ValueError:
        raise Problem(404, "request_not_found", "no client request with this id") from None
    state, client = await s.auth.poll_client_request(raw)
    return ClientRequestState(state=state, client=_client_out(s, client) if client else None)


@router.post(
    "/v1/auth/challenge",
    response_model=ChallengeOut,
    responses=problem_responses((429, "rate_limited")),
    tags=["auth"],
)
async def challenge(body: ChallengeIn, request: Request, s: ServicesDep) -> ChallengeOut:
    """Step 1 of token auth: a single-use nonce to sign with the client's signature key."""
    s.auth_limiter.hit(remote_key(request))
    cid, nonce, expires = await s.auth.create_challenge(body.client_id)
    return ChallengeOut(challenge_id=cid, nonce=b64u(nonce), expires_at=expires)


@router.post(
    "/v1/auth/token",
    response_model=TokenOut,
    responses=problem_responses((401, "auth_failed"), (429, "rate_limited")),
    tags=["auth"],
)
async def token(body: TokenIn, request: Request, s: ServicesDep) -> TokenOut:
    """Step 2: exchange the signed challenge for a short-lived bearer token."""
    s.auth_limiter.hit(remote_key(request))
    try:
        signature = unb64u(body.signature)
    except ValueError:
        raise Problem(401, "auth_failed", "signature is not base64url") from None
    tok, expires, client, user_id = await s.auth.issue_token(body.challenge_id, signature)
    return TokenOut(token=tok, expires_at=expires, client_id=client.client_id, user_id=user_id)


async def _me(p, s: ServicesDep) -> MeOut:  # type: ignore[no-untyped-def]
    user = await s.auth.find_user(p.user_id)
    if user is None:
        raise Problem(401, "unauthenticated", "the account no longer exists")
    clients = await s.auth.list_clients(user.uuid)
    return MeOut(
        user_id=user.user_id,
        user_uuid=user.uuid,
        display_name=user.display_name,
        discoverable=user.discoverable,
        client_id=p.client_id,
        clients=[_client_out(s, c) for c in clients],
    )


@router.get("/v1/me", response_model=MeOut, responses=_AUTH, tags=["users"])
async def get_me(p: PrincipalDep, s: ServicesDep) -> MeOut:
    """The caller's account and clients."""
    return await _me(p, s)


@router.patch("/v1/me", response_model=MeOut, responses=_AUTH, tags=["users"])
async def patch_me(body: ProfileIn, p: PrincipalDep, s: ServicesDep) -> MeOut:
    """Change the display name and/or directory opt-in."""
    changes = body.model_dump(exclude_unset=True)
    if changes.get("discoverable", False) is None:
        raise Problem(400, "invalid_request", "discoverable must be true or false")
    await s.auth.update_profile(p, changes)
    return await _me(p, s)


@router.delete("/v1/me", status_code=204, response_class=Response, responses=_AUTH, tags=["users"])
async def delete_me(p: PrincipalDep, s: ServicesDep) -> Response:
    """Delete the account: clients, KeyPackages, queues and connections; records an event."""
    await s.auth.delete_account(p)
    return Response(status_code=204)


@router.get(
    "/v1/users/{user_id}",
    response_model=UserOut,
    responses={**_AUTH, **problem_responses((404, "user_not_found"), *_FEDERATED)},
    tags=["users"],
)
async def lookup_user(user_id: str, _p: PrincipalDep, s: ServicesDep) -> UserOut:
    """Exact lookup by user id (a user of another domain: asked of its server)."""
    return user_out(await s.auth.lookup_user(user_id))


@router.get(
    "/v1/users/{user_id}/clients",
    response_model=ClientsOut,
    responses={**_AUTH, **problem_responses((404, "user_not_found"), *_FEDERATED)},
    tags=["users"],
)
async def user_clients(user_id: str, _p: PrincipalDep, s: ServicesDep) -> ClientsOut:
    """A user's clients and their public credentials (of another domain: from its server)."""
    return ClientsOut(clients=[client_out(c) for c in await s.auth.lookup_clients(user_id)])


@router.get(
    "/v1/directory",
    response_model=DirectoryOut,
    responses={**_AUTH, **problem_responses((429, "rate_limited"), *_FEDERATED)},
    tags=["users"],
)
async def directory(
    p: PrincipalDep,
    s: ServicesDep,
    q: DirectoryQuery,
    limit: DirectoryLimit = 20,
    cursor: DirectoryCursor = None,
    domain: Annotated[
        str | None, Query(max_length=DOMAIN_MAX_LENGTH, pattern=DOMAIN_PATTERN)
    ] = None,
) -> DirectoryOut:
    """Search users who opted in to the directory (name prefix or display-name substring), of
    this server or, with ``domain``, of another one (asked of its server, signed)."""
    if domain is not None and s.auth.is_remote_domain(domain):
        # Each remote search is an outbound signed request: bounded per requesting user.
        s.search_limiter.hit(p.user_uuid)
    found, next_cursor = await s.auth.search_directory_page(q, limit, cursor, domain)
    return DirectoryOut(users=[user_out(u) for u in found], next_cursor=next_cursor)
