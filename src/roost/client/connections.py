"""Connections between users and direct messages (docs/api.md, "Connections"): the HTTP calls
only; a connection's two-user group is built by ``connection_requests``."""

from __future__ import annotations

from typing import Any

from roost.protocol.media_types import MLS_MEDIA_TYPE

from .group_key import GROUP_KEY_WRAP_HEADER
from .models import Connection
from .session import Session, segment, user_path


class ConnectionsApi(Session):
    async def open_connection(self, to: str) -> Connection:
        resp = await self.request("POST", "/v1/connections", json={"to": to})
        return Connection.from_json(resp.json())

    async def send_connection_request(
        self, connection_id: str, payload: bytes, *, group_key_wrap: str | None = None
    ) -> Connection:
        """``group_key_wrap``: the key of the group whose Welcome ``payload`` is, wrapped for
        its joiners (``group_key``), for the responder's ``connection_request`` event."""
        resp = await self.request(
            "POST",
            f"/v1/connections/{segment(connection_id)}/request",
            content=payload,
            content_type=MLS_MEDIA_TYPE,
            headers={GROUP_KEY_WRAP_HEADER: group_key_wrap} if group_key_wrap else None,
        )
        return Connection.from_json(resp.json())

    async def accept_connection(
        self, connection_id: str, payload: bytes | None = None
    ) -> Connection:
        return await self._answer_connection(connection_id, "accept", payload)

    async def reject_connection(
        self, connection_id: str, payload: bytes | None = None
    ) -> Connection:
        return await self._answer_connection(connection_id, "reject", payload)

    async def _answer_connection(
        self, connection_id: str, answer: str, payload: bytes | None
    ) -> Connection:
        path = f"/v1/connections/{segment(connection_id)}/{answer}"
        if payload is None:
            resp = await self.request("POST", path)
        else:
            resp = await self.request("POST", path, content=payload, content_type=MLS_MEDIA_TYPE)
        return Connection.from_json(resp.json())

    async def connections_page(
        self, *, limit: int | None = None, cursor: str | None = None
    ) -> tuple[list[Connection], str | None]:
        """One page of this user's connections (oldest first) and the next page's cursor."""
        params: dict[str, Any] = {}
        if limit is not None:
            params["limit"] = limit
        if cursor:
            params["cursor"] = cursor
        d = (await self.request("GET", "/v1/connections", params=params)).json()
        return [Connection.from_json(c) for c in d["connections"]], d.get("next_cursor")

    async def connections(self) -> list[Connection]:
        """All of this user's connections (every page)."""
        out: list[Connection] = []
        cursor: str | None = None
        while True:
            page, cursor = await self.connections_page(cursor=cursor)
            out += page
            if not cursor or not page:
                return out

    async def send_direct(self, user_id: str, payload: bytes) -> None:
        await self.request(
            "POST",
            f"/v1/users/{user_path(user_id)}/direct",
            content=payload,
            content_type=MLS_MEDIA_TYPE,
        )
