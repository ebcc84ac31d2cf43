"""``POST /federation/v1/inbox``: a batch of outbox items from another homeserver, applied in
order and exactly once (federation/outbox.py, docs/federation.md "Outbound queue")."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from ..deps import ServicesDep
from ..errors import Problem, problem_responses
from .inbound import FederationOrigin
from .outbox import BATCH_MEDIA_TYPE, INBOX_PATH, BatchError, decode_batch

router = APIRouter(tags=["federation"])


class RejectedItem(BaseModel):
    id: int
    code: str


class InboxOut(BaseModel):
    applied: list[int]  # outbox ids applied now
    duplicate: list[int]  # applied before (a re-sent batch): nothing done again
    rejected: list[RejectedItem]  # refused for good (unknown kind, invalid item): skipped


@router.post(
    INBOX_PATH,
    summary="Deliver a batch of federated items (server to server, signed)",
    description=(
        f"Body `{BATCH_MEDIA_TYPE}`: repeated `uint64 outbox_id || opaque kind<V> || "
        "opaque body<V>` (RFC 9420 encoding), ids ascending. Each item is applied in order in "
        "its own transaction, at most once per origin (a per-origin high-water mark); a "
        "re-sent item is reported as duplicate. 503: an item could not be applied now, send "
        "the batch again later."
    ),
    response_model=InboxOut,
    responses=problem_responses(
        (400, "invalid_batch"),
        (401, "invalid_signature"),
        (401, "replayed_request"),
        (403, "federation_refused"),
        (413, "body_too_large"),
        (415, "unsupported_media_type"),
        (421, "wrong_destination"),
        (502, "federation_unavailable"),
        (503, "service_unavailable"),
    ),
)
async def post_inbox(request: Request, origin: FederationOrigin, s: ServicesDep) -> InboxOut:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != BATCH_MEDIA_TYPE:
        raise Problem(415, "unsupported_media_type", f"the body must be {BATCH_MEDIA_TYPE}")
    body = await request.body()  # read (and size-capped) once by the signature check
    try:
        items = decode_batch(body)
    except BatchError as e:
        raise Problem(400, "invalid_batch", str(e)) from None
    result = await s.federation.inbox.apply(origin, items)
    return InboxOut.model_validate(result.as_json())
