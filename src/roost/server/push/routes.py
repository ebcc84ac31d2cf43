"""Push routes: register the calling client's means of notification and its default policy."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from roost.protocol.base64url import b64u, unb64u

from ..deps import PrincipalDep
from ..errors import Problem, problem_responses
from .policy import DEFAULT_POLICIES
from .service import PushService

router = APIRouter(tags=["push"])
_AUTH = problem_responses((401, "unauthenticated"), (401, "token_expired"))
_REGISTER = {
    **_AUTH,
    **problem_responses((400, "invalid_subscription"), (422, "push_kind_unavailable")),
}


class WebPushKeys(BaseModel):
    p256dh: str = Field(..., max_length=128, description="base64url P-256 point (65 bytes)")
    auth: str = Field(..., max_length=64, description="base64url 16-byte auth secret")


class PushRegistrationIn(BaseModel):
    model_config = ConfigDict(strict=True)
    kind: Literal["webpush", "apns", "fcm"]
    endpoint: str | None = Field(None, max_length=2048, description="Web Push: subscription URL")
    keys: WebPushKeys | None = Field(None, description="Web Push: the subscription's keys")
    token: str | None = Field(None, min_length=1, max_length=4096, description="APNs/FCM token")
    default_policy: Literal["all", "mute"] = "all"


class PushRegistrationOut(BaseModel):
    kind: str
    endpoint: str | None = None
    token: str | None = None
    default_policy: str


class VapidOut(BaseModel):
    public_key: str = Field(..., description="base64url applicationServerKey (uncompressed P-256)")
    kinds: list[str] = Field(..., description="the means of notification this server sends")
    policies: list[str] = Field(default=list(DEFAULT_POLICIES))


def _push(request: Request) -> PushService:
    return request.app.state.push


@router.get("/v1/push/server", response_model=VapidOut)
async def push_server(request: Request) -> VapidOut:
    """The VAPID public key to subscribe with, and which kinds this server can send."""
    push = _push(request)
    assert push.vapid is not None
    return VapidOut(public_key=b64u(push.vapid.public_key), kinds=sorted(push.senders))


@router.put("/v1/push", status_code=204, response_class=Response, responses=_REGISTER)
async def register(request: Request, body: PushRegistrationIn, p: PrincipalDep) -> Response:
    """Register (or replace) the calling client's means of notification and default policy."""
    p256dh = auth = None
    if body.kind == "webpush":
        if body.endpoint is None or body.keys is None:
            raise Problem(400, "invalid_subscription", "Web Push needs endpoint and keys")
        try:
            p256dh, auth = unb64u(body.keys.p256dh), unb64u(body.keys.auth)
        except ValueError:
            raise Problem(400, "invalid_subscription", "keys must be base64url") from None
        target = body.endpoint
    else:
        if body.token is None:
            raise Problem(400, "invalid_subscription", f"{body.kind} needs a token")
        target = body.token
    await _push(request).register(
        p.user_uuid, p.client_uuid, body.kind, target, p256dh, auth, body.default_policy
    )
    return Response(status_code=204)


@router.get(
    "/v1/push",
    response_model=PushRegistrationOut,
    responses={**_AUTH, **problem_responses((404, "push_not_registered"))},
)
async def get_registration(request: Request, p: PrincipalDep) -> PushRegistrationOut:
    reg = await _push(request).get(p.client_uuid)
    if reg is None:
        raise Problem(404, "push_not_registered", "this client has no push registration")
    web = reg.kind == "webpush"
    return PushRegistrationOut(
        kind=reg.kind,
        endpoint=reg.target if web else None,
        token=None if web else reg.target,
        default_policy=reg.default_policy,
    )


@router.delete(
    "/v1/push",
    status_code=204,
    response_class=Response,
    responses={**_AUTH, **problem_responses((404, "push_not_registered"))},
)
async def unregister(request: Request, p: PrincipalDep) -> Response:
    if not await _push(request).unregister(p.client_uuid):
        raise Problem(404, "push_not_registered", "this client has no push registration")
    return Response(status_code=204)
