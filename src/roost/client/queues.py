"""The client's queues (docs/api.md, "Queues"): fetching and acking the user's direct queue
and this client's group-message queues, creating and deleting queues, enqueueing."""

from __future__ import annotations

from typing import Any

from roost.mls.errors import MLSError
from roost.protocol.media_types import MLS_MEDIA_TYPE
from roost.protocol.message_batch import decode_message_batch

from .errors import RoostError
from .models import DirectEvent, DirectFetch, FetchResult, QueueMessage
from .session import Session, segment


class QueuesApi(Session):
    async def _fetch(
        self, path: str, after: int, limit: int | None, max_bytes: int | None
    ) -> FetchResult:
        params: dict[str, Any] = {"after": after}
        if limit is not None:
            params["limit"] = limit
        if max_bytes is not None:
            params["max_bytes"] = max_bytes
        resp = await self.request("GET", path, params=params)
        try:
            entries = decode_message_batch(resp.content)
        except MLSError as e:
            raise RoostError(0, "malformed_server_answer", f"fetch answer: {e}") from e
        messages = tuple(QueueMessage(seq, payload) for seq, payload in entries)
        last = int(resp.headers.get("Roost-Last-Seq", messages[-1].seq if messages else after))
        has_more = resp.headers.get("Roost-Has-More", "false").lower() == "true"
        return FetchResult(messages, last, has_more)

    async def fetch_direct(
        self, after: int | None = None, *, limit: int | None = None, max_bytes: int | None = None
    ) -> DirectFetch:
        """Events of the user's direct queue after ``after`` (default: this client's last
        ack; the server keeps messages until every client of the user has acked them)."""
        if after is None:
            after = self.state.direct_acked
        r = await self._fetch("/v1/direct/messages", after, limit, max_bytes)
        events = tuple(DirectEvent.from_message(m) for m in r.messages)
        return DirectFetch(events, r.last_seq, r.has_more)

    async def ack_direct(self, up_to: int) -> None:
        await self.request("POST", "/v1/direct/ack", json={"up_to": up_to})
        if up_to > self.state.direct_acked:
            self.state.direct_acked = up_to
            self.save()

    async def create_queue(self) -> str:
        return str((await self.request("POST", "/v1/queues")).json()["queue_id"])

    async def delete_queue(self, queue_id: str) -> None:
        await self.request("DELETE", f"/v1/queues/{segment(queue_id)}")

    async def enqueue(self, queue_id: str, payload: bytes, *, message_id: str | None = None) -> int:
        headers = {"Roost-Message-Id": message_id} if message_id else None
        resp = await self.request(
            "POST",
            f"/v1/queues/{segment(queue_id)}/messages",
            content=payload,
            content_type=MLS_MEDIA_TYPE,
            headers=headers,
        )
        return int(resp.json()["seq"])

    async def fetch_queue(
        self,
        queue_id: str,
        after: int = 0,
        *,
        limit: int | None = None,
        max_bytes: int | None = None,
    ) -> FetchResult:
        return await self._fetch(
            f"/v1/queues/{segment(queue_id)}/messages", after, limit, max_bytes
        )

    async def ack_queue(self, queue_id: str, up_to: int) -> None:
        await self.request("POST", f"/v1/queues/{segment(queue_id)}/ack", json={"up_to": up_to})
