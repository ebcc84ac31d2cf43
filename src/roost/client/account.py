"""The account and its devices (docs/api.md, "Registration and clients"): profile, deletion,
removing clients, approving or rejecting new devices."""

from __future__ import annotations

from typing import Any

from .models import ClientInfo, ClientRequest, Me
from .session import Session, segment


class _Unset:
    """Marks an argument that was not given (``None`` has a meaning of its own)."""


_UNSET = _Unset()


class AccountApi(Session):
    async def me(self) -> Me:
        return Me.from_json((await self.request("GET", "/v1/me")).json())

    async def update_me(
        self, *, display_name: str | None | _Unset = _UNSET, discoverable: bool | None = None
    ) -> Me:
        """Change the display name (``None`` clears it) and/or directory visibility."""
        body: dict[str, Any] = {}
        if not isinstance(display_name, _Unset):
            body["display_name"] = display_name
        if discoverable is not None:
            body["discoverable"] = discoverable
        return Me.from_json((await self.request("PATCH", "/v1/me", json=body)).json())

    async def set_display_name(self, name: str | None) -> Me:
        return await self.update_me(display_name=name)

    async def delete_account(self) -> None:
        """Delete the user with all clients, KeyPackages and queues; forgets local state."""
        await self.request("DELETE", "/v1/me")
        self.state.token = ""
        if self.home is not None:
            self.home.delete()

    async def remove_client(self, client_uuid: str) -> None:
        await self.request("DELETE", f"/v1/clients/{segment(client_uuid)}")
        if client_uuid == self.client_uuid:
            self.state.token = ""
            if self.home is not None:
                self.home.delete()

    async def client_requests(self) -> list[ClientRequest]:
        d = (await self.request("GET", "/v1/client-requests")).json()
        return [ClientRequest.from_json(r) for r in d["requests"]]

    async def approve_client(self, request_id: str) -> ClientInfo:
        path = f"/v1/client-requests/{segment(request_id)}/approve"
        return ClientInfo.from_json((await self.request("POST", path)).json())

    async def reject_client(self, request_id: str) -> None:
        await self.request("POST", f"/v1/client-requests/{segment(request_id)}/reject")
