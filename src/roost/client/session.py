"""The HTTP session of one client: requests to the homeserver, problem+json answers turned into
``RoostError``s (docs/api.md "Errors"), and the bearer token (docs/api.md "Authentication"),
fetched on demand by challenge-response with the client's MLS signature key and renewed before
it expires or when the server says it has.

Every job part of the client library (account, KeyPackages, connections...) builds on
``Session``; it knows nothing of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from roost.mls.credential import Credential
from roost.mls.crypto.ciphersuite import CipherSuite, get_cipher_suite
from roost.protocol.base64url import b64u, unb64u
from roost.protocol.opaque import opaque_concat

from .errors import RoostError, transport_error
from .http_channel import KEEPALIVE_EXPIRY, HttpChannel
from .state import ClientState, Home

# Refresh a token this long before the server would consider it expired (at most this
# fraction of its lifetime, so short-lived tokens are still used).
TOKEN_REFRESH_MARGIN = 15.0
TOKEN_REFRESH_FRACTION = 0.2
AUTH_LABEL = b"roost auth"


def problem_error(resp: httpx.Response) -> RoostError:
    """The ``RoostError`` for a refused request: its problem+json ``code`` and ``detail``."""
    problem: dict[str, Any] = {}
    if resp.headers.get("content-type", "").split(";")[0].strip().endswith("json"):
        try:
            body = resp.json()
            problem = body if isinstance(body, dict) else {}
        except ValueError:
            problem = {}
    code = str(problem.get("code") or f"http_{resp.status_code}")
    retry_after = None
    with contextlib.suppress(KeyError, ValueError):
        retry_after = float(resp.headers["Retry-After"])
    return RoostError(
        resp.status_code,
        code,
        str(problem.get("detail") or ""),
        title=str(problem.get("title") or resp.reason_phrase),
        problem=problem,
        retry_after=retry_after,
    )


def user_path(user_id: str) -> str:
    """A user id as a path segment (``/v1/users/{user_id}``)."""
    return quote(user_id, safe="@")


def segment(value: str) -> str:
    """Any other id as a path segment."""
    return quote(value, safe="")


def new_http(server: str, timeout: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.rstrip("/"),
        timeout=timeout,
        limits=httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY),
    )


async def call(http: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One unauthenticated request; transport failures become RoostError(status=0)."""
    try:
        resp = await http.request(method, path, **kwargs)
    except httpx.TransportError as e:
        raise transport_error(method, path, e) from e
    if resp.is_error:
        raise problem_error(resp)
    return resp


class Session:
    """One client's identity (state and home) and its authenticated HTTP channel."""

    def __init__(
        self,
        state: ClientState,
        *,
        home: Home | None = None,
        http: httpx.AsyncClient | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.state = state
        self.home = home
        self._timeout = timeout
        self._http = http  # made at first use when not given: API requests use the channel
        self._owns_http = http is None
        self._channel = HttpChannel(state.server, timeout)
        self._auth_lock = asyncio.Lock()
        self._refresh_margin = TOKEN_REFRESH_MARGIN
        self._signature_key: bytes | None = None

    # ---- life cycle ---------------------------------------------------------------------
    async def aclose(self) -> None:
        await self._channel.aclose()
        if self._owns_http and self._http is not None:
            await self._http.aclose()

    @property
    def http(self) -> httpx.AsyncClient:
        """An httpx client for raw requests and asset transfers (base URL = the homeserver)."""
        if self._http is None:
            self._http = new_http(self.state.server, self._timeout)
        return self._http

    def save(self) -> None:
        if self.home is not None:
            self.home.save(self.state)

    # ---- identity -----------------------------------------------------------------------
    @property
    def cs(self) -> CipherSuite:
        return get_cipher_suite(self.state.cipher_suite)

    @property
    def client_id(self) -> str:
        return self.state.client_id

    @property
    def user_id(self) -> str:
        return self.state.user_id

    @property
    def client_uuid(self) -> str:
        return self.state.client_id.rsplit("/", 1)[-1]

    @property
    def signature_key(self) -> bytes:
        if self._signature_key is None:  # derived once: used for every credential check
            self._signature_key = self.cs.signature_public_key(self.state.signature_private)
        return self._signature_key

    @property
    def credential(self) -> Credential:
        return Credential.x509(self.state.credential_chain)

    # ---- the bearer token ---------------------------------------------------------------
    @property
    def token_refresh_margin(self) -> float:
        """Seconds before expiry at which the token counts as stale."""
        return self._refresh_margin

    async def authenticate(self) -> str:
        """Prove possession of the signature key; store and return a fresh bearer token."""
        st = self.state
        ch = (
            await self.request(
                "POST", "/v1/auth/challenge", auth=False, json={"client_id": st.client_id}
            )
        ).json()
        nonce = unb64u(ch["nonce"])
        content = opaque_concat(st.home_domain.encode(), st.client_id.encode(), nonce)
        sig = self.cs.sign_with_label(st.signature_private, AUTH_LABEL, content)
        body = {"challenge_id": ch["challenge_id"], "signature": b64u(sig)}
        tok = (await self.request("POST", "/v1/auth/token", auth=False, json=body)).json()
        st.token = tok["token"]
        st.token_expires_at = float(tok["expires_at"])
        lifetime = max(0.0, st.token_expires_at - time.time())
        self._refresh_margin = min(TOKEN_REFRESH_MARGIN, lifetime * TOKEN_REFRESH_FRACTION)
        self.save()
        return st.token

    async def bearer_token(self) -> str:
        """A bearer token valid for a while yet (fetching a fresh one when needed)."""
        return await self._token()

    async def _token(self, stale: str | None = None) -> str:
        async with self._auth_lock:  # many concurrent requests share one refresh
            st = self.state
            fresh = st.token and st.token_expires_at - self._refresh_margin > time.time()
            if fresh and st.token != stale:
                return st.token
            return await self.authenticate()

    # ---- requests -----------------------------------------------------------------------
    async def request(
        self,
        method: str,
        path: str,
        *,
        auth: bool = True,
        json: Any = None,
        content: bytes | None = None,
        content_type: str | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request (refreshing the token once if the server says it expired)."""
        hdrs = dict(headers or {})
        if content_type:
            hdrs["Content-Type"] = content_type
        stale: str | None = None
        for attempt in range(2):
            if auth:
                hdrs["Authorization"] = f"Bearer {await self._token(stale)}"
            resp = await self._channel.request(
                method, path, json=json, content=content, params=params, headers=hdrs
            )
            if auth and attempt == 0 and resp.status_code == 401:
                # Expired or revoked token: get a new one and retry once. If the client was
                # removed, the token step itself fails with auth_failed.
                stale = hdrs["Authorization"][len("Bearer ") :]
                continue
            break
        if resp.is_error:
            raise problem_error(resp)
        return resp
