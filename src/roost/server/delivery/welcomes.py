"""Welcome delivery: a commit's Welcome goes, as a ``welcome`` event, to each added user's
direct queue — here, or on the user's own server through the federation outbox — in the
commit's transaction (docs/api.md "Commits")."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

from roost.protocol.base64url import b64u

from ..group_key_wrap import wrap_field
from ..queues.service import QueueService
from ..store.async_engine import AsyncConnection
from .fanout import Fanout
from .federation_port import domain_of


class Welcomes:
    def __init__(
        self, home_domain: str, queues: QueueService, fanout: Fanout, now: Callable[[], int]
    ) -> None:
        self.domain = home_domain
        self.queues = queues
        self.fanout = fanout
        self.now = now

    async def deliver_in(
        self,
        conn: AsyncConnection,
        group_id: bytes,
        seq: int,
        committer_user: str,
        added_users: dict[str, str],
        welcome: bytes,
        group_key_wrap: bytes | None = None,
    ) -> None:
        """``added_users``: user id -> user uuid (local users) of every added user.
        ``group_key_wrap``: the group key, wrapped by the committer for the joiners' first
        epoch (opaque here), given to every joiner with the Welcome."""
        encoded = base64.urlsafe_b64encode(welcome).rstrip(b"=").decode()
        fields: dict[str, object] = {
            "type": "welcome",
            "group_id": b64u(group_id),
            "from": committer_user,
            "group_seq": seq,
            "payload": encoded,
            "sent_at": self.now(),
        }
        event = json.dumps({**fields, **wrap_field(group_key_wrap)}).encode()
        local = {u for uid, u in added_users.items() if domain_of(uid) == self.domain}
        for user_uuid in sorted(local):
            await self.queues.enqueue_direct(conn, user_uuid, event)
        for uid in sorted(u for u in added_users if domain_of(u) != self.domain):
            await self.fanout.welcome_remote(conn, domain_of(uid), uid, event)
