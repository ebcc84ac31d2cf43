"""The client's queues (docs/api.md, "Queues"): fetching and acking the user's direct queue
and this client's group-message queues, creating and deleting queues, enqueueing.

A group-message queue is authorised by its own key (``Roost-Queue-Key``), which only this
client holds: the keys of queues made with ``create_queue`` are kept in ``client.json``; the
group queue's key is kept by ``Groups`` (``group_client.json``) and lent here with
``hold_queue``, so ``fetch_queue``/``ack_queue``/``delete_queue`` find the key by queue id."""

from __future__ import annotations

from typing import Any

from roost.mls.errors import MLSError
from roost.protocol.media_types import MLS_MEDIA_TYPE
from roost.protocol.message_batch import decode_message_batch

from .errors import RoostError
from .models import DirectEvent, DirectFetch, FetchResult, GroupQueue, QueueMessage
from .session import Session, segment

QueueRef = str | GroupQueue


class QueuesApi(Session):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Queues whose keys are kept elsewhere (the group queue), by id: in memory only.
        self._held_queues: dict[str, GroupQueue] = {}

    # ---- queue keys ----------------------------------------------------------------------
    def hold_queue(self, queue: GroupQueue) -> None:
        """Know a queue's key for this session (kept and saved by the caller)."""
        if queue.claimed:
            self._held_queues[queue.id] = queue

    def queue(self, ref: QueueRef) -> GroupQueue:
        """The queue with the key this client holds for it (an empty key if none)."""
        if isinstance(ref, GroupQueue):
            return ref
        held = self._held_queues.get(ref)
        if held is not None:
            return held
        return GroupQueue(ref, self.state.queue_keys.get(ref, ""))

    def queue_keys(self) -> dict[str, str]:
        """Every queue key this client holds, by queue id (for the realtime ``hello``)."""
        keys = dict(self.state.queue_keys)
        keys.update((q.id, q.key) for q in self._held_queues.values())
        return keys

    async def new_queue(self) -> GroupQueue:
        """A new group-message queue and its key (returned once: the caller keeps it)."""
        d = (await self.request("POST", "/v1/queues")).json()
        queue = GroupQueue(str(d["queue_id"]), str(d["queue_key"]))
        self.hold_queue(queue)
        return queue

    async def claim_queue_key(self, queue_id: str) -> GroupQueue:
        """The key of a queue this client made before queues had keys (once; the caller
        keeps it at once: the server will not hand it out again)."""
        d = (await self.request("POST", f"/v1/queues/{segment(queue_id)}/key")).json()
        queue = GroupQueue(str(d.get("queue_id", queue_id)), str(d["queue_key"]))
        self.hold_queue(queue)
        return queue

    # ---- direct and group queues ---------------------------------------------------------
    async def _fetch(
        self,
        path: str,
        after: int,
        limit: int | None,
        max_bytes: int | None,
        headers: dict[str, str] | None = None,
    ) -> FetchResult:
        params: dict[str, Any] = {"after": after}
        if limit is not None:
            params["limit"] = limit
        if max_bytes is not None:
            params["max_bytes"] = max_bytes
        resp = await self.request("GET", path, params=params, headers=headers)
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
        """A new queue; its key is saved in ``client.json`` (see ``queue``)."""
        queue = await self.new_queue()
        self.state.queue_keys[queue.id] = queue.key
        self.save()
        return queue.id

    async def delete_queue(self, queue: QueueRef) -> None:
        q = self.queue(queue)
        await self.request("DELETE", f"/v1/queues/{segment(q.id)}", headers=q.headers)
        self._held_queues.pop(q.id, None)
        if self.state.queue_keys.pop(q.id, None) is not None:
            self.save()

    async def enqueue(
        self, queue_id: QueueRef, payload: bytes, *, message_id: str | None = None
    ) -> int:
        # The queue id is the write capability: no key.
        headers = {"Roost-Message-Id": message_id} if message_id else None
        qid = queue_id.id if isinstance(queue_id, GroupQueue) else queue_id
        resp = await self.request(
            "POST",
            f"/v1/queues/{segment(qid)}/messages",
            content=payload,
            content_type=MLS_MEDIA_TYPE,
            headers=headers,
        )
        return int(resp.json()["seq"])

    async def fetch_queue(
        self,
        queue: QueueRef,
        after: int = 0,
        *,
        limit: int | None = None,
        max_bytes: int | None = None,
    ) -> FetchResult:
        q = self.queue(queue)
        return await self._fetch(
            f"/v1/queues/{segment(q.id)}/messages", after, limit, max_bytes, q.headers
        )

    async def ack_queue(self, queue: QueueRef, up_to: int) -> None:
        q = self.queue(queue)
        await self.request(
            "POST", f"/v1/queues/{segment(q.id)}/ack", json={"up_to": up_to}, headers=q.headers
        )
