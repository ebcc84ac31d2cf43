"""Finding users (docs/api.md, "Registration and clients"): exact lookup, a user's published
clients, and the opt-in directory search."""

from __future__ import annotations

from typing import Any

from .models import ClientInfo, DirectoryPage, UserInfo
from .session import Session, user_path


class DirectoryApi(Session):
    async def lookup_user(self, user_id: str) -> UserInfo:
        resp = await self.request("GET", f"/v1/users/{user_path(user_id)}")
        return UserInfo.from_json(resp.json())

    async def user_clients(self, user_id: str) -> list[ClientInfo]:
        resp = await self.request("GET", f"/v1/users/{user_path(user_id)}/clients")
        return [ClientInfo.from_json(c) for c in resp.json()["clients"]]

    async def search_users(
        self,
        q: str,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        domain: str | None = None,
    ) -> DirectoryPage:
        """One page of the opt-in directory search: of this user's home server, or with
        ``domain`` of that domain's (the home server asks it; user ids are of that domain)."""
        params: dict[str, Any] = {"q": q}
        if limit is not None:
            params["limit"] = limit
        if cursor:
            params["cursor"] = cursor
        if domain:
            params["domain"] = domain
        d = (await self.request("GET", "/v1/directory", params=params)).json()
        users = tuple(UserInfo.from_json(u) for u in d["users"])
        return DirectoryPage(users, d.get("next_cursor"))
