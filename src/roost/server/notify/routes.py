"""The realtime endpoint: ``GET /v1/realtime`` upgraded to a WebSocket (docs/api.md)."""

from __future__ import annotations

from fastapi import APIRouter, Response, WebSocket

from ..auth.service import token_hash
from ..errors import Problem, problem_response, problem_responses
from .protocol import CloseCode
from .session import RealtimeSession, Settings

router = APIRouter(tags=["realtime"])
PATH = "/v1/realtime"


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


@router.websocket(PATH)
async def realtime(websocket: WebSocket) -> None:
    services = websocket.app.state.services
    hub = websocket.app.state.notify
    token = _bearer(websocket.headers.get("authorization"))
    hashed = None if token is None else token_hash(token)
    try:
        if token is None:
            raise Problem(401, "unauthenticated", "a bearer token is required")
        if hashed is None:
            raise Problem(401, "unauthenticated", "invalid bearer token")
        principal = await services.auth.authenticate_token_hash(hashed)
    except Problem as p:
        # Refused before the upgrade with the usual problem+json when the server can say so.
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            headers = {"WWW-Authenticate": "Bearer"}
            await websocket.send_denial_response(
                problem_response(p.status, p.code, p.detail, headers)
            )
        else:
            await websocket.close(CloseCode.UNAUTHENTICATED, p.code)
        return
    await websocket.accept()
    settings = Settings.from_limits(services.config.limits)
    await RealtimeSession(websocket, principal, hashed, services, hub, settings).run()


@router.get(
    PATH,
    status_code=426,
    # The answer is problem+json (documented below), not the JSON a JSONResponse would imply.
    response_class=Response,
    responses={
        **problem_responses(
            (426, "upgrade_required"), (401, "unauthenticated"), (401, "token_expired")
        ),
    },
)
async def realtime_http() -> Response:
    """Realtime delivery of the caller's queues over a **WebSocket** (upgrade this GET with
    `Authorization: Bearer`). Frames, acks, pings and close codes: docs/api.md, "Realtime"."""
    return problem_response(
        426,
        "upgrade_required",
        "connect with a WebSocket upgrade",
        headers={"Upgrade": "websocket", "Connection": "Upgrade"},
    )
