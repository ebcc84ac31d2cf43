"""``RoostClient``: one client of one user, talking to its homeserver over the v1 HTTP API.

Requests that need a bearer token get one on demand (challenge-response with the client's MLS
signature key) and a fresh one when the old is about to expire or the server says it has.
Every refused request raises ``RoostError`` with the problem's ``status`` and ``code``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
from cryptography.hazmat.primitives.serialization import Encoding

from roost.mls.credential import Credential
from roost.mls.crypto.ciphersuite import CipherSuite, get_cipher_suite
from roost.mls.errors import MLSError, ValidationError
from roost.mls.key_package import KeyPackage
from roost.mls.leaf_node import Lifetime

from . import groups
from .credentials import VerifiedClient, certificate_client_ids, load_certificate, verify_chain
from .credentials import verify_client_credential as _verify_chain_for
from .errors import CredentialError, RoostError, StateError
from .models import (
    ClientInfo,
    ClientRequest,
    Connection,
    DirectEvent,
    DirectFetch,
    DirectoryPage,
    FetchResult,
    KeyPackageCount,
    Me,
    PublishResult,
    QueueMessage,
    Registration,
    ServerInfo,
    UserInfo,
)
from .state import ClientState, Home, KeyPackageSecrets
from .wire import (
    MLS_MEDIA_TYPE,
    b64u,
    decode_key_package_batch,
    decode_message_batch,
    encode_key_package_batch,
    opaque_concat,
    unb64u,
)

if TYPE_CHECKING:
    from roost.mls.group import Group
    from roost.mls.group.validation import CredentialPolicy

# Refresh a token this long before the server would consider it expired (at most this
# fraction of its lifetime, so short-lived tokens are still used).
TOKEN_REFRESH_MARGIN = 15.0
TOKEN_REFRESH_FRACTION = 0.2
AUTH_LABEL = b"roost auth"
PROOF_LABEL = b"roost client key"


class _Unset:
    """Marks an argument that was not given (``None`` has a meaning of its own)."""


_UNSET = _Unset()


def key_fingerprint(signature_key: bytes) -> str:
    """A short, human-comparable fingerprint of a signature key (for approving devices)."""
    digest = hashlib.sha256(signature_key).hexdigest()[:32]
    return " ".join(digest[i : i + 4] for i in range(0, 32, 4))


def _problem(resp: httpx.Response) -> RoostError:
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


def _credential_domain(credential: Credential) -> str | None:
    """The domain of the client id an x509 credential's leaf names (which AS must have
    issued it), or None when there is none to read (the home policy then refuses it)."""
    if credential.credential_type != 2 or not credential.certificates:
        return None
    try:
        client_ids = certificate_client_ids(load_certificate(credential.certificates[0]))
    except CredentialError:
        return None
    if len(client_ids) != 1:
        return None
    return client_ids[0].split("/", 1)[0].rpartition("@")[2] or None


def _user_path(user_id: str) -> str:
    return quote(user_id, safe="@")


# Drop idle connections well before the server does (uvicorn closes them after 5 s): reusing
# one the server is closing at that moment fails with "Server disconnected".
KEEPALIVE_EXPIRY = 2.0


def _new_http(server: str, timeout: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.rstrip("/"),
        timeout=timeout,
        limits=httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY),
    )


async def _call(http: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One unauthenticated request; transport failures become RoostError(status=0)."""
    try:
        resp = await http.request(method, path, **kwargs)
    except httpx.TransportError as e:
        raise RoostError(0, "transport_error", f"{method} {path}: {e!r}") from e
    if resp.is_error:
        raise _problem(resp)
    return resp


class RoostClient:
    """An authenticated client. Build one with ``register``, ``add_with_password``,
    ``request_approval`` + ``PendingClient.wait``, or ``open`` (from a saved home directory)."""

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
        self._http = http or _new_http(state.server, timeout)
        self._owns_http = http is None
        self._auth_lock = asyncio.Lock()
        self._refresh_margin = TOKEN_REFRESH_MARGIN
        self._signature_key: bytes | None = None

    # ---- life cycle ---------------------------------------------------------------------
    async def __aenter__(self) -> RoostClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    @property
    def http(self) -> httpx.AsyncClient:
        """The underlying HTTP client (base URL = the homeserver), for raw requests."""
        return self._http

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

    def save(self) -> None:
        if self.home is not None:
            self.home.save(self.state)

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
        http = http or _new_http(server, 30.0)
        try:
            return ServerInfo.from_json((await _call(http, "GET", "/.well-known/roost")).json())
        finally:
            if own:
                await http.aclose()

    @classmethod
    async def _prepare(
        cls, server: str, cipher_suite: int, http: httpx.AsyncClient
    ) -> tuple[ServerInfo, ClientState]:
        info = ServerInfo.from_json((await _call(http, "GET", "/.well-known/roost")).json())
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
            state.as_certificate = (await _call(http, "GET", "/v1/as/certificate")).content
        client = cls(state, home=home, http=http)
        client._owns_http = True
        state.client_id = info.client_id
        state.user_id = info.user_id
        state.user_uuid = user_uuid or state.user_uuid
        state.credential_chain = list(info.credential)
        _verify_chain_for(
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
        http = _new_http(server, timeout)
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
            d = (await _call(http, "POST", "/v1/register", json=body)).json()
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
        http = _new_http(server, timeout)
        try:
            _, state = await cls._prepare(server, cipher_suite, http)
            body = {
                "user_id": user_id,
                "password": password,
                "client": cls._client_key(state, user_id),
            }
            d = (await _call(http, "POST", "/v1/clients", json=body)).json()
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
        http = _new_http(server, timeout)
        try:
            _, state = await cls._prepare(server, cipher_suite, http)
            body: dict[str, Any] = {"user_id": user_id, "client": cls._client_key(state, user_id)}
            if device_name:
                body["device_name"] = device_name
            d = (await _call(http, "POST", "/v1/client-requests", json=body)).json()
        except BaseException:
            await http.aclose()
            raise
        state.user_id = user_id
        state.pending_request = d["request_id"]
        if home is not None:
            home.save(state)
        return PendingClient(state, http, home)

    # ---- requests with a token ----------------------------------------------------------
    async def authenticate(self) -> str:
        """Prove possession of the signature key; store and return a fresh bearer token."""
        st = self.state
        ch = (
            await _call(self._http, "POST", "/v1/auth/challenge", json={"client_id": st.client_id})
        ).json()
        nonce = unb64u(ch["nonce"])
        content = opaque_concat(st.home_domain.encode(), st.client_id.encode(), nonce)
        sig = self.cs.sign_with_label(st.signature_private, AUTH_LABEL, content)
        body = {"challenge_id": ch["challenge_id"], "signature": b64u(sig)}
        tok = (await _call(self._http, "POST", "/v1/auth/token", json=body)).json()
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
            try:
                resp = await self._send_once(method, path, json, content, params, hdrs)
            except httpx.TransportError as e:
                raise RoostError(0, "transport_error", f"{method} {path}: {e!r}") from e
            if auth and attempt == 0 and resp.status_code == 401:
                # Expired or revoked token: get a new one and retry once. If the client was
                # removed, the token step itself fails with auth_failed.
                stale = hdrs["Authorization"][len("Bearer ") :]
                continue
            break
        if resp.is_error:
            raise _problem(resp)
        return resp

    async def _send_once(
        self,
        method: str,
        path: str,
        json: Any,
        content: bytes | None,
        params: Mapping[str, Any] | None,
        headers: dict[str, str],
    ) -> httpx.Response:
        """One request; resent once if the server closed a kept-alive connection just as we
        reused it (it then saw no request: "Server disconnected without sending a response").
        A busy client loop can notice a response late and reuse a connection the server has
        already timed out."""
        try:
            return await self._http.request(
                method, path, json=json, content=content, params=params, headers=headers
            )
        except httpx.RemoteProtocolError as e:
            if "without sending a response" not in str(e):
                raise
            return await self._http.request(
                method, path, json=json, content=content, params=params, headers=headers
            )

    # ---- account and clients ------------------------------------------------------------
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
        await self.request("DELETE", f"/v1/clients/{quote(client_uuid, safe='')}")
        if client_uuid == self.client_uuid:
            self.state.token = ""
            if self.home is not None:
                self.home.delete()

    async def client_requests(self) -> list[ClientRequest]:
        d = (await self.request("GET", "/v1/client-requests")).json()
        return [ClientRequest.from_json(r) for r in d["requests"]]

    async def approve_client(self, request_id: str) -> ClientInfo:
        path = f"/v1/client-requests/{quote(request_id, safe='')}/approve"
        return ClientInfo.from_json((await self.request("POST", path)).json())

    async def reject_client(self, request_id: str) -> None:
        await self.request("POST", f"/v1/client-requests/{quote(request_id, safe='')}/reject")

    # ---- discovery ----------------------------------------------------------------------
    async def lookup_user(self, user_id: str) -> UserInfo:
        resp = await self.request("GET", f"/v1/users/{_user_path(user_id)}")
        return UserInfo.from_json(resp.json())

    async def user_clients(self, user_id: str) -> list[ClientInfo]:
        resp = await self.request("GET", f"/v1/users/{_user_path(user_id)}/clients")
        return [ClientInfo.from_json(c) for c in resp.json()["clients"]]

    async def search_users(
        self, q: str, *, limit: int | None = None, cursor: str | None = None
    ) -> DirectoryPage:
        params: dict[str, Any] = {"q": q}
        if limit is not None:
            params["limit"] = limit
        if cursor:
            params["cursor"] = cursor
        d = (await self.request("GET", "/v1/directory", params=params)).json()
        users = tuple(UserInfo.from_json(u) for u in d["users"])
        return DirectoryPage(users, d.get("next_cursor"))

    # ---- credential verification --------------------------------------------------------
    async def as_certificate(self, domain: str | None = None) -> bytes:
        """The AS certificate (DER) of ``domain``: the one pinned at registration for ours;
        another domain's is fetched through our home server once and kept in the state."""
        domain = (domain or self.state.home_domain).strip().lower()
        if domain != self.state.home_domain:
            cached = self.state.remote_as_certificates.get(domain)
            if cached is None:
                path = f"/v1/domains/{quote(domain, safe='')}/as-certificate"
                cached = (await self.request("GET", path)).content
                load_certificate(cached)  # refuse to keep something that is not a certificate
                self.state.remote_as_certificates[domain] = cached
                self.save()
            return cached
        if not self.state.as_certificate:
            resp = await self.request("GET", "/v1/as/certificate", auth=False)
            self.state.as_certificate = resp.content
            self.save()
        return self.state.as_certificate

    async def verify_credential(
        self,
        credential: Credential | Iterable[bytes],
        *,
        client_id: str,
        signature_key: bytes | None = None,
    ) -> VerifiedClient:
        """Verify an x509 credential (e.g. from a LeafNode) for ``client_id``."""
        if isinstance(credential, Credential):
            if credential.credential_type != 2:
                raise CredentialError("not an x509 credential")
            chain = list(credential.certificates)
        else:
            chain = list(credential)
        domain = client_id.split("/", 1)[0].rpartition("@")[2]
        as_cert = await self.as_certificate(domain)
        return _verify_chain_for(chain, as_cert, client_id=client_id, signature_key=signature_key)

    async def verify_client(
        self, client_id: str, signature_key: bytes | None = None
    ) -> VerifiedClient:
        """Fetch ``client_id``'s published credential and verify it against its domain's AS."""
        user_id = client_id.rsplit("/", 1)[0]
        for info in await self.user_clients(user_id):
            if info.client_id == client_id:
                verified = await self.verify_credential(
                    info.credential, client_id=client_id, signature_key=signature_key
                )
                if verified.signature_key != info.signature_key:
                    raise CredentialError("published signature key differs from the credential")
                return verified
        raise RoostError(404, "client_not_found", f"no client {client_id}")

    # ---- KeyPackages --------------------------------------------------------------------
    def generate_key_packages(
        self,
        count: int,
        *,
        last_resort: int = 1,
        lifetime_seconds: int | None = None,
    ) -> tuple[list[KeyPackage], dict[str, KeyPackageSecrets]]:
        """Fresh KeyPackages (the last ``last_resort`` of them marked last-resort) and secrets."""
        from roost.mls.key_package_gen import generate_key_package  # heavy: import on use

        cs = self.cs
        credential = self.credential
        lifetime = None
        if lifetime_seconds is not None:
            now = int(time.time())
            lifetime = Lifetime(now - 60, now + lifetime_seconds)
        kps: list[KeyPackage] = []
        secrets: dict[str, KeyPackageSecrets] = {}
        for i in range(count):
            bundle = generate_key_package(
                self.state.cipher_suite,
                credential,
                self.state.signature_private,
                lifetime=lifetime,
                last_resort=i >= count - last_resort,
            )
            kp = bundle.key_package
            ref = cs.key_package_ref(kp.encode()).hex()
            lt = kp.leaf_node.lifetime
            secrets[ref] = KeyPackageSecrets(
                bundle.init_private_key,
                bundle.encryption_private_key,
                i >= count - last_resort,
                lt.not_after if lt is not None else 0,
                kp.encode(),
            )
            kps.append(kp)
        return kps, secrets

    async def publish_key_packages(
        self, count: int = 10, *, last_resort: int = 1, lifetime_seconds: int | None = None
    ) -> PublishResult:
        """Generate and publish a batch (it replaces the earlier batch on the server)."""
        kps, secrets = self.generate_key_packages(
            count, last_resort=last_resort, lifetime_seconds=lifetime_seconds
        )
        result = await self.publish_raw_key_packages(encode_key_package_batch(kps))
        # Keep older secrets until they expire: a package claimed earlier may still
        # arrive in a Welcome.
        now = time.time()
        kept = {r: s for r, s in self.state.keypackages.items() if s.not_after > now}
        kept.update(secrets)
        self.state.keypackages = kept
        self.save()
        return replace(result, refs=tuple(bytes.fromhex(r) for r in secrets))

    async def publish_raw_key_packages(self, body: bytes) -> PublishResult:
        """Publish an already-encoded ``MLSMessage key_packages<V>`` body as is."""
        d = (
            await self.request("POST", "/v1/keypackages", content=body, content_type=MLS_MEDIA_TYPE)
        ).json()
        return PublishResult(int(d["published"]), int(d.get("last_resort", 0)))

    async def key_package_count(self) -> KeyPackageCount:
        return KeyPackageCount.from_json(
            (await self.request("GET", "/v1/keypackages/count")).json()
        )

    async def claim_key_packages(
        self, user_id: str, *, cipher_suite: int | None = None, verify: bool = True
    ) -> list[KeyPackage]:
        """One KeyPackage per client of ``user_id``. With ``verify`` each one is checked:
        MLS validity (signatures, lifetime, suite) and an x509 credential issued by the
        user's AS for a client of that user."""
        suite = cipher_suite or self.state.cipher_suite
        resp = await self.request(
            "POST",
            f"/v1/users/{_user_path(user_id)}/keypackages/claim",
            params={"cipher_suite": suite},
        )
        try:
            kps = decode_key_package_batch(resp.content)
        except MLSError as e:
            raise RoostError(0, "malformed_server_answer", f"claim answer: {e}") from e
        if verify:
            for kp in kps:
                await self.verify_key_package(kp, user_id=user_id, cipher_suite=suite)
        return kps

    async def verify_key_package(
        self, kp: KeyPackage, *, user_id: str, cipher_suite: int | None = None
    ) -> str:
        """Validate a KeyPackage of one of ``user_id``'s clients; return that client id."""
        from roost.mls.group.validation import validate_key_package  # heavy: import on use

        suite = cipher_suite or kp.cipher_suite
        cred = kp.leaf_node.credential
        if cred.credential_type != 2 or not cred.certificates:
            raise CredentialError("KeyPackage credential is not x509")
        domain = user_id.rpartition("@")[2]
        as_cert = await self.as_certificate(domain)
        leaf = verify_chain(list(cred.certificates), as_cert)
        client_ids = [c for c in certificate_client_ids(leaf) if c.startswith(user_id + "/")]
        if not client_ids:
            raise CredentialError(f"KeyPackage credential names no client of {user_id}")
        client_id = client_ids[0]

        def policy(credential: Credential, signature_key: bytes) -> bool:
            _verify_chain_for(
                list(credential.certificates),
                as_cert,
                client_id=client_id,
                signature_key=signature_key,
            )
            return True

        try:
            validate_key_package(
                get_cipher_suite(suite),
                kp,
                cipher_suite=suite,
                group_id=b"",
                group_extensions=(),
                members=(),
                credential_policy=policy,
            )
        except MLSError as e:
            raise CredentialError(f"invalid KeyPackage from {client_id}: {e}") from e
        return client_id

    # ---- connections --------------------------------------------------------------------
    async def open_connection(self, to: str) -> Connection:
        resp = await self.request("POST", "/v1/connections", json={"to": to})
        return Connection.from_json(resp.json())

    async def send_connection_request(self, connection_id: str, payload: bytes) -> Connection:
        resp = await self.request(
            "POST",
            f"/v1/connections/{quote(connection_id, safe='')}/request",
            content=payload,
            content_type=MLS_MEDIA_TYPE,
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
        path = f"/v1/connections/{quote(connection_id, safe='')}/{answer}"
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
            f"/v1/users/{_user_path(user_id)}/direct",
            content=payload,
            content_type=MLS_MEDIA_TYPE,
        )

    # ---- MLS groups (connection groups) ------------------------------------------------
    def credential_policy(self) -> CredentialPolicy:
        """Accept group members only with credentials issued by the AS of the domain in their
        client id: ours (pinned), or another's already fetched (``ensure_as_certificates``)."""
        if not self.state.as_certificate:
            raise StateError("no AS certificate pinned; register or log in first")
        home = groups.credential_policy(self.state.as_certificate)
        remote = self.state.remote_as_certificates

        def check(credential: Credential, signature_key: bytes) -> bool:
            domain = _credential_domain(credential)
            if domain is None or domain == self.state.home_domain:
                return home(credential, signature_key)
            if domain not in remote:
                raise ValidationError(f"the AS certificate of {domain} has not been fetched")
            return groups.credential_policy(remote[domain])(credential, signature_key)

        return check

    async def ensure_as_certificates(self, domains: Iterable[str]) -> None:
        """Fetch (through the home server) the AS certificates of these domains that the state
        does not hold yet, so the synchronous group credential policy can check their members."""
        for domain in sorted({d.strip().lower() for d in domains}):
            await self.as_certificate(domain)

    def save_group(self, group: Group) -> None:
        if self.home is not None:
            self.home.save_group(group.group_id, group.to_bytes())

    def load_group(self, group_id: bytes) -> Group:
        from roost.mls.group import Group

        if self.home is None:
            raise StateError("no home directory: groups are not persisted")
        return Group.from_bytes(
            self.home.load_group(group_id), credential_policy=self.credential_policy()
        )

    async def request_connection(self, user_id: str) -> tuple[Connection, Group]:
        """Open a connection to ``user_id`` and send the Welcome to a new two-user group
        holding this client and one KeyPackage of each of the responder's clients."""
        from roost.mls.group import Group

        conn = await self.open_connection(user_id)
        kps = await self.claim_key_packages(user_id)  # the request's single claim, verified
        if not kps:
            raise RoostError(0, "no_key_packages", f"{user_id} has no KeyPackages to claim")
        group = Group.create(
            self.state.cipher_suite,
            self.credential,
            self.state.signature_private,
            credential_policy=self.credential_policy(),
        )
        out = group.commit(add=kps)
        group.merge_pending_commit()  # no Delivery Service yet: the group starts here
        assert out.welcome is not None
        conn = await self.send_connection_request(conn.connection_id, out.welcome)
        self.save_group(group)
        return conn, group

    def join_from_welcome(self, welcome: bytes) -> Group:
        """Join a group from a Welcome addressed to one of our published KeyPackages."""
        from roost.mls.group import Group

        try:
            w, ref, secrets = groups.welcome_target(welcome, self.state.keypackages)
            group = Group.join_from_welcome(
                w,
                (
                    groups.decode_key_package(secrets),
                    secrets.init_private,
                    secrets.encryption_private,
                    self.state.signature_private,
                ),
                credential_policy=self.credential_policy(),
            )
        except MLSError as e:
            raise RoostError(0, "invalid_welcome", str(e)) from e
        if not secrets.last_resort:  # a normal KeyPackage is single-use: drop its keys
            del self.state.keypackages[ref]
        self.save()
        self.save_group(group)
        return group

    async def accept_connection_request(
        self, connection_id: str, *, welcome: bytes | None = None, reply: bytes | None = None
    ) -> tuple[Connection, Group | None]:
        """Join the connection's group from its Welcome (looked up in the direct queue when
        not given), then accept. A request that carries no Welcome for us is accepted without
        a group."""
        requester: str | None = None
        if welcome is None:
            welcome, requester = await self._connection_request(connection_id)
        else:
            requester = next(
                (c.requester for c in await self.connections() if c.connection_id == connection_id),
                None,
            )
        if welcome and requester and "@" in requester:
            # The group's members include the requester: its domain's AS must be at hand.
            await self.ensure_as_certificates([requester.rpartition("@")[2]])
        group = None
        if welcome:
            try:
                group = self.join_from_welcome(welcome)
            except RoostError as e:
                if e.code != "invalid_welcome":
                    raise
                # Not a Welcome for this client (or not a Welcome at all): accept anyway,
                # another of the user's clients may hold the KeyPackage it names.
                group = None
        conn = await self.accept_connection(connection_id, reply)
        return conn, group

    async def _connection_request(self, connection_id: str) -> tuple[bytes | None, str | None]:
        """The payload and sender of the connection's request event in the direct queue."""
        after = 0
        while True:
            page = await self.fetch_direct(after)  # from 0: the request may be acked already
            for e in page.events:
                if e.type == "connection_request" and e.connection_id == connection_id:
                    return e.payload, e.sender
            if not page.has_more or not page.events:
                return None, None
            after = page.last_seq

    # ---- queues -------------------------------------------------------------------------
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
        return (await self.request("POST", "/v1/queues")).json()["queue_id"]

    async def delete_queue(self, queue_id: str) -> None:
        await self.request("DELETE", f"/v1/queues/{quote(queue_id, safe='')}")

    async def enqueue(self, queue_id: str, payload: bytes, *, message_id: str | None = None) -> int:
        headers = {"Roost-Message-Id": message_id} if message_id else None
        resp = await self.request(
            "POST",
            f"/v1/queues/{quote(queue_id, safe='')}/messages",
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
            f"/v1/queues/{quote(queue_id, safe='')}/messages", after, limit, max_bytes
        )

    async def ack_queue(self, queue_id: str, up_to: int) -> None:
        await self.request(
            "POST", f"/v1/queues/{quote(queue_id, safe='')}/ack", json={"up_to": up_to}
        )


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
        return cls(state, _new_http(state.server, timeout), home)

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
        path = f"/v1/client-requests/{quote(self.request_id, safe='')}"
        d = (await _call(self._http, "GET", path)).json()
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
