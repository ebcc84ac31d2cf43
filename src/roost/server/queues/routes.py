"""HTTP routes of the queues: group-message queues and the caller's direct queue."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from roost.protocol.base64url import b64u
from roost.protocol.media_types import MESSAGES_MEDIA_TYPE
from roost.protocol.message_batch import encode_message_batch

from ..deps import PrincipalDep, ServicesDep, binary_response, mls_body, mls_request_body
from ..errors import problem_responses
from .params import QueueKey, queue_id_param
from .service import FetchResult

router = APIRouter(tags=["queues"])

_AUTH = problem_responses((401, "unauthenticated"), (401, "token_expired"))
_OWNER = {
    **_AUTH,
    **problem_responses((404, "queue_not_found"), (403, "forbidden"), (403, "queue_key_required")),
}
_FETCH_DOC = binary_response(
    MESSAGES_MEDIA_TYPE,
    "entries `uint64 seq || opaque payload<V>`; headers Roost-Last-Seq, Roost-Has-More",
)
# The largest integer every JSON implementation reads exactly (IEEE double): the document's
# bound then means the same to every client and generator. Sequence numbers never come near.
_MAX_SEQ = (1 << 53) - 1


class QueueOut(BaseModel):
    queue_id: str
    queue_key: str = Field(
        description="the queue's key: shown once, sent as Roost-Queue-Key to read it"
    )


class EnqueuedOut(BaseModel):
    seq: int


class AckIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    up_to: int = Field(..., ge=0, le=_MAX_SEQ)


def _fetch_response(result: FetchResult) -> Response:
    return Response(
        encode_message_batch(result.messages),
        media_type=MESSAGES_MEDIA_TYPE,
        headers={
            "Roost-Last-Seq": str(result.last_seq),
            "Roost-Has-More": "true" if result.has_more else "false",
        },
    )


def _caps(s: ServicesDep, limit: int | None, max_bytes: int | None) -> tuple[int, int]:
    lim = s.config.limits
    return (
        min(limit or lim.max_fetch_messages, lim.max_fetch_messages),
        min(max_bytes or lim.max_fetch_bytes, lim.max_fetch_bytes),
    )


After = Annotated[int, Query(ge=0, le=_MAX_SEQ)]
Limit = Annotated[int | None, Query(ge=1)]
MaxBytes = Annotated[int | None, Query(ge=1)]


@router.post(
    "/v1/queues",
    status_code=201,
    response_model=QueueOut,
    responses={**_AUTH, **problem_responses((409, "too_many_queues"))},
)
async def create_queue(p: PrincipalDep, s: ServicesDep) -> QueueOut:
    """Create a pseudonymous group-message queue. Its key, returned this once, authorises
    reading, acking and deleting it; the server stores no link to the calling client."""
    queue_id, key = await s.queues.create_queue(p.client_uuid)
    return QueueOut(queue_id=b64u(queue_id), queue_key=b64u(key))


@router.post(
    "/v1/queues/{queue_id}/key",
    response_model=QueueOut,
    responses={**_AUTH, **problem_responses((404, "queue_not_found"), (403, "forbidden"))},
)
async def claim_key(queue_id: str, p: PrincipalDep, s: ServicesDep) -> QueueOut:
    """A key for a queue created before queues had keys, once, for the client that created
    it; the server then forgets which client that was."""
    qid = queue_id_param(queue_id)
    return QueueOut(queue_id=queue_id, queue_key=b64u(await s.queues.claim_key(qid, p.client_uuid)))


@router.delete("/v1/queues/{queue_id}", status_code=204, response_class=Response, responses=_OWNER)
async def delete_queue(queue_id: str, key: QueueKey, p: PrincipalDep, s: ServicesDep) -> Response:
    """Delete a queue and its messages (with its key)."""
    await s.queues.delete_queue(queue_id_param(queue_id), key, p.client_uuid)
    return Response(status_code=204)


@router.post(
    "/v1/queues/{queue_id}/messages",
    status_code=201,
    response_model=EnqueuedOut,
    openapi_extra=mls_request_body("the MLS message to queue (opaque to the QS)"),
    responses={
        **_AUTH,
        **problem_responses((404, "queue_not_found"), (413, "body_too_large")),
    },
)
async def enqueue(
    queue_id: str,
    request: Request,
    _p: PrincipalDep,
    s: ServicesDep,
    roost_message_id: Annotated[str | None, Header(min_length=1, max_length=128)] = None,
) -> EnqueuedOut:
    """Enqueue a message; the queue id is the capability. Idempotent per Roost-Message-Id."""
    qid = queue_id_param(queue_id)
    payload = await mls_body(request, max_bytes=s.config.limits.max_message_bytes)
    return EnqueuedOut(seq=await s.queues.enqueue(qid, payload, roost_message_id))


@router.get(
    "/v1/queues/{queue_id}/messages",
    response_class=Response,
    responses={200: _FETCH_DOC, **_OWNER},
)
async def fetch(
    queue_id: str,
    key: QueueKey,
    _p: PrincipalDep,
    s: ServicesDep,
    after: After = 0,
    limit: Limit = None,
    max_bytes: MaxBytes = None,
) -> Response:
    """Messages after a sequence number, under count and byte caps (with the queue's key)."""
    n, b = _caps(s, limit, max_bytes)
    return _fetch_response(await s.queues.fetch(queue_id_param(queue_id), key, after, n, b))


@router.post(
    "/v1/queues/{queue_id}/ack", status_code=204, response_class=Response, responses=_OWNER
)
async def ack(
    queue_id: str, body: AckIn, key: QueueKey, _p: PrincipalDep, s: ServicesDep
) -> Response:
    """Delete messages up to and including a sequence number (with the queue's key)."""
    await s.queues.ack(queue_id_param(queue_id), key, body.up_to)
    return Response(status_code=204)


@router.get("/v1/direct/messages", response_class=Response, responses={200: _FETCH_DOC, **_AUTH})
async def fetch_direct(
    p: PrincipalDep,
    s: ServicesDep,
    after: After = 0,
    limit: Limit = None,
    max_bytes: MaxBytes = None,
) -> Response:
    """The caller's user's direct queue (connection events, direct messages)."""
    n, b = _caps(s, limit, max_bytes)
    return _fetch_response(await s.queues.fetch_direct(p.user_uuid, after, n, b))


@router.post("/v1/direct/ack", status_code=204, response_class=Response, responses=_AUTH)
async def ack_direct(body: AckIn, p: PrincipalDep, s: ServicesDep) -> Response:
    """Ack for the calling client; a message is deleted once every client acked it."""
    async with s.auth.db.engine.connect() as conn:
        clients = await s.auth.client_uuids_of(p.user_uuid, conn)
    await s.queues.ack_direct(p.user_uuid, p.client_uuid, body.up_to, clients)
    return Response(status_code=204)
