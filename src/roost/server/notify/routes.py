"""The realtime endpoint: ``GET /v1/realtime`` upgraded to a WebSocket, and the tickets that
let a browser open it (docs/api.md, "Realtime")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Query, Response, WebSocket
from pydantic import BaseModel

from ..auth.service import Principal
from ..deps import BearerTokenDep, PrincipalDep, ServicesDep
from ..errors import Problem, problem_response, problem_responses
from .protocol import CloseCode
from .session import RealtimeSession, Settings

if TYPE_CHECKING:
    from ..deps import Services

router = APIRouter(tags=["realtime"])
PATH = "/v1/realtime"
TICKETS_PATH = "/v1/realtime/tickets"
# b64u of a 32-byte ticket is 43 characters; a little slack for padding.
TICKET_MAX_LENGTH = 64


class TicketOut(BaseModel):
    ticket: str
    expires_at: int


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def _authenticate(ws: WebSocket, services: Services) -> tuple[Principal, bytes]:
    """The caller and the hash of the bearer token the socket stays bound to: from the
    ``Authorization`` header, or from a ticket in the query (browsers cannot send headers)."""
    header = ws.headers.get("authorization")
    tickets = ws.query_params.getlist("ticket")
    if tickets:
        if header is not None or len(tickets) > 1:
            raise Problem(400, "invalid_request", "give one ticket or a bearer token, not several")
        return await services.tickets.redeem(tickets[0])
    token = _bearer(header)
    if token is None:
        raise Problem(401, "unauthenticated", "a bearer token or a ticket is required")
    return await services.auth.authenticate_bound(token)


@router.websocket(PATH)
async def realtime(websocket: WebSocket) -> None:
    services = websocket.app.state.services
    hub = websocket.app.state.notify
    try:
        principal, hashed = await _authenticate(websocket, services)
    except Problem as p:
        # Refused before the upgrade with the usual problem+json when the server can say so.
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            headers = {"WWW-Authenticate": "Bearer"} if p.status == 401 else p.headers
            await websocket.send_denial_response(
                problem_response(p.status, p.code, p.detail, headers)
            )
        else:
            code = CloseCode.PROTOCOL_ERROR if p.status == 400 else CloseCode.UNAUTHENTICATED
            await websocket.close(code, p.code)
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
            (426, "upgrade_required"),
            (401, "unauthenticated"),
            (401, "token_expired"),
            (401, "invalid_ticket"),
        ),
    },
)
async def realtime_http(
    ticket: Annotated[
        str | None,
        Query(
            max_length=TICKET_MAX_LENGTH,
            description="A ticket from `POST /v1/realtime/tickets`, in place of the "
            "`Authorization` header (browsers). Single use.",
        ),
    ] = None,
) -> Response:
    """Realtime delivery of the caller's queues over a **WebSocket** (upgrade this GET with
    `Authorization: Bearer`, or with `?ticket=` from `POST /v1/realtime/tickets`). Frames,
    acks, pings and close codes: docs/api.md, "Realtime"."""
    del ticket  # documented here; the WebSocket route above redeems it
    return problem_response(
        426,
        "upgrade_required",
        "connect with a WebSocket upgrade",
        headers={"Upgrade": "websocket", "Connection": "Upgrade"},
    )


@router.post(
    TICKETS_PATH,
    response_model=TicketOut,
    responses=problem_responses(
        (401, "unauthenticated"),
        (401, "token_expired"),
        (429, "too_many_tickets"),
        (429, "rate_limited"),
    ),
)
async def create_ticket(p: PrincipalDep, token: BearerTokenDep, s: ServicesDep) -> TicketOut:
    """A single-use ticket that opens **one** realtime WebSocket as this client with
    `GET /v1/realtime?ticket=…` within `realtime_ticket_ttl_seconds` (default 30 s), for
    browsers, whose `WebSocket` cannot send an `Authorization` header. The socket stays bound
    to the bearer token of this request (re-checked, revoked with it)."""
    s.auth_limiter.hit(f"ticket:{p.client_uuid}")
    ticket, expires = await s.tickets.issue(p, token)
    return TicketOut(ticket=ticket, expires_at=expires)
