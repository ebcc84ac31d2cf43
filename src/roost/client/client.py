"""``RoostClient``: one client of one user, talking to its homeserver over the v1 HTTP API.

The facade: building a client (register, add with the password, approval by another device,
open from a saved home) and the job parts it is composed of — the session and its bearer
token (``session``), account and devices (``account``), users (``directory``), AS certificates
and credential checks (``credential_policy``), KeyPackages (``keypackages``), connections
(``connections``), queues (``queues``), group states (``group_store``) and joining from a
Welcome (``connection_groups``); a connection's two-user group is built with ``Groups``
(``connection_requests``). Every refused request raises ``RoostError`` with the problem's
``status`` and ``code``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import httpx
from cryptography.hazmat.primitives.serialization import Encoding

from roost.mls.crypto.ciphersuite import get_cipher_suite
from roost.protocol.base64url import b64u
from roost.protocol.opaque import opaque_concat

from .account import AccountApi
from .connection_groups import ConnectionGroups
from .credentials import load_certificate, verify_client_credential
from .errors import RoostError, StateError
from .models import ClientInfo, Registration, ServerInfo
from .session import call, new_http, segment
from .state import ClientState, Home

PROOF_LABEL = b"roost client key"


def key_fingerprint(signature_key: bytes) -> str:
    """A short, human-comparable fingerprint of a signature key (for approving devices)."""
    digest = hashlib.sha256(signature_key).hexdigest()[:32]
    return " ".join(digest[i : i + 4] for i in range(0, 32, 4))


class RoostClient(ConnectionGroups, AccountApi):
    """An authenticated client. Build one with ``register``, ``add_with_password``,
    ``request_approval`` + ``PendingClient.wait``, or ``open`` (from a saved home directory)."""

    async def __aenter__(self) -> RoostClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @classmethod
    def open(cls, home: Home | str, **kwargs: Any) -> RoostClient:
        home = home if isinstance(home, Home) else Home(home)
        state = home.load()
        if not state.registered:
            raise StateError(f"the client in {home.path} is not registered yet")
        return cls(state, home=home, **kwargs)

    # ---- onboarding (no token) ----------------------------------------------------------
    @staticmethod
    async def server_info(server: str, *, http: httpx.AsyncClient | None = None) -> ServerInfo:
        own = http is None
        http = http or new_http(server, 30.0)
        try:
            return ServerInfo.from_json((await call(http, "GET", "/.well-known/roost")).json())
        finally:
            if own:
                await http.aclose()

    @classmethod
    async def _prepare(
        cls, server: str, cipher_suite: int, http: httpx.AsyncClient
    ) -> tuple[ServerInfo, ClientState]:
        info = ServerInfo.from_json((await call(http, "GET", "/.well-known/roost")).json())
        if cipher_suite not in info.cipher_suites:
            raise RoostError(0, "unsupported_cipher_suite", f"server offers {info.cipher_suites}")
        sig_priv, _ = get_cipher_suite(cipher_suite).generate_signature_key_pair()
        cert = load_certificate(info.as_certificate_pem) if info.as_certificate_pem else None
        as_der = cert.public_bytes(Encoding.DER) if cert is not None else b""
        state = ClientState(
            server=server.rstrip("/"),
            signature_private=sig_priv,
            home_domain=info.home_domain,
            cipher_suite=cipher_suite,
            as_certificate=as_der,
        )
        return info, state

    @staticmethod
    def _client_key(state: ClientState, user_id: str) -> dict[str, Any]:
        cs = get_cipher_suite(state.cipher_suite)
        pub = cs.signature_public_key(state.signature_private)
        content = opaque_concat(state.home_domain.encode(), user_id.encode(), pub)
        proof = cs.sign_with_label(state.signature_private, PROOF_LABEL, content)
        return {
            "cipher_suite": state.cipher_suite,
            "signature_key": b64u(pub),
            "proof": b64u(proof),
        }

    @classmethod
    async def _adopt(
        cls,
        state: ClientState,
        info: ClientInfo,
        http: httpx.AsyncClient,
        home: Home | None,
        user_uuid: str = "",
    ) -> RoostClient:
        """Check the issued credential against our key and the AS, then keep it."""
        if not state.as_certificate:
            state.as_certificate = (await call(http, "GET", "/v1/as/certificate")).content
        client = cls(state, home=home, http=http)
        client._owns_http = True
        state.client_id = info.client_id
        state.user_id = info.user_id
        state.user_uuid = user_uuid or state.user_uuid
        state.credential_chain = list(info.credential)
        verify_client_credential(
            info.credential,
            state.as_certificate,
            client_id=info.client_id,
            signature_key=client.signature_key,
        )
        client.save()
        return client

    @classmethod
    async def register(
        cls,
        server: str,
        name: str,
        *,
        password: str | None = None,
        display_name: str | None = None,
        registration_token: str | None = None,
        discoverable: bool = False,
        cipher_suite: int = 1,
        home: Home | None = None,
        timeout: float = 30.0,
    ) -> RoostClient:
        """Register a new user together with this device as its first client."""
        http = new_http(server, timeout)
        try:
            info, state = await cls._prepare(server, cipher_suite, http)
            user_id = f"{name.lower()}@{info.home_domain}"
            body: dict[str, Any] = {
                "name": name,
                "discoverable": discoverable,
                "client": cls._client_key(state, user_id),
            }
            for key, value in (
                ("display_name", display_name),
                ("password", password),
                ("registration_token", registration_token),
            ):
                if value is not None:
                    body[key] = value
            d = (await call(http, "POST", "/v1/register", json=body)).json()
            reg = Registration(d["user_id"], d["user_uuid"], ClientInfo.from_json(d["client"]))
            return await cls._adopt(state, reg.client, http, home, reg.user_uuid)
        except BaseException:
            await http.aclose()
            raise

    @classmethod
    async def add_with_password(
        cls,
        server: str,
        user_id: str,
        password: str,
        *,
        cipher_suite: int = 1,
        home: Home | None = None,
        timeout: float = 30.0,
    ) -> RoostClient:
        """Add this device as another client of an existing user, authorised by the password."""
        http = new_http(server, timeout)
        try:
            _, state = await cls._prepare(server, cipher_suite, http)
            body = {
                "user_id": user_id,
                "password": password,
                "client": cls._client_key(state, user_id),
            }
            d = (await call(http, "POST", "/v1/clients", json=body)).json()
            return await cls._adopt(state, ClientInfo.from_json(d), http, home)
        except BaseException:
            await http.aclose()
            raise

    @classmethod
    async def request_approval(
        cls,
        server: str,
        user_id: str,
        *,
        device_name: str | None = None,
        cipher_suite: int = 1,
        home: Home | None = None,
        timeout: float = 30.0,
    ) -> PendingClient:
        """Ask to become a client of ``user_id``; an existing client must approve."""
        http = new_http(server, timeout)
        try:
            _, state = await cls._prepare(server, cipher_suite, http)
            body: dict[str, Any] = {"user_id": user_id, "client": cls._client_key(state, user_id)}
            if device_name:
                body["device_name"] = device_name
            d = (await call(http, "POST", "/v1/client-requests", json=body)).json()
        except BaseException:
            await http.aclose()
            raise
        state.user_id = user_id
        state.pending_request = d["request_id"]
        if home is not None:
            home.save(state)
        return PendingClient(state, http, home)


class PendingClient:
    """A device waiting for an existing client of the user to approve it."""

    def __init__(self, state: ClientState, http: httpx.AsyncClient, home: Home | None) -> None:
        self.state = state
        self._http = http
        self.home = home

    @classmethod
    def resume(cls, home: Home, *, timeout: float = 30.0) -> PendingClient:
        state = home.load()
        if not state.pending_request:
            raise StateError(f"no pending client request in {home.path}")
        return cls(state, new_http(state.server, timeout), home)

    @property
    def request_id(self) -> str:
        return self.state.pending_request

    @property
    def signature_key(self) -> bytes:
        cs = get_cipher_suite(self.state.cipher_suite)
        return cs.signature_public_key(self.state.signature_private)

    @property
    def fingerprint(self) -> str:
        return key_fingerprint(self.signature_key)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def poll(self) -> RoostClient | None:
        """One check: the client once approved, ``None`` while pending; RoostError if rejected."""
        path = f"/v1/client-requests/{segment(self.request_id)}"
        d = (await call(self._http, "GET", path)).json()
        if d["state"] == "pending":
            return None
        if d["state"] != "approved":
            await self.aclose()
            raise RoostError(403, "client_request_rejected", "the request was rejected")
        self.state.pending_request = ""
        return await RoostClient._adopt(
            self.state, ClientInfo.from_json(d["client"]), self._http, self.home
        )

    async def wait(self, timeout: float = 600.0, interval: float = 1.0) -> RoostClient:
        deadline = time.monotonic() + timeout
        while True:
            client = await self.poll()
            if client is not None:
                return client
            if time.monotonic() > deadline:
                raise RoostError(0, "timeout", "the request was not approved in time")
            await asyncio.sleep(interval)
