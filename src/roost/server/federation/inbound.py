"""Verification of inbound server-to-server requests: the ``federation_origin`` dependency.

A route declares ``origin: FederationOrigin`` and receives the verified sending domain; every
refusal is a problem+json answer (docs/federation.md, "Signed requests"). The body is read
once here and cached by Starlette, so the route can still ``await request.body()``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated

import sqlalchemy as sa
from fastapi import Depends, Request
from sqlalchemy.exc import IntegrityError

from ..config import is_valid_domain
from ..errors import Problem, problem_responses
from ..store import Database
from . import signing
from .directory import RemoteDirectory
from .policy import FederationPolicyStore
from .tables import fed_nonces
from .transport import require_admitted

log = logging.getLogger("roost.federation")


def invalid_signature(detail: str) -> Problem:
    return Problem(401, "invalid_signature", detail)


class InboundVerifier:
    def __init__(
        self,
        db: Database,
        directory: RemoteDirectory,
        policy: FederationPolicyStore,
        home_domain: str,
        clock: Callable[[], float] = time.time,
        *,
        window_seconds: int = 300,
        on_contact: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.db = db
        self.on_contact = on_contact  # a peer proved it is up (the outbox retries it now)
        self.directory = directory
        self.policy = policy
        self.home_domain = home_domain
        self.clock = clock
        self.window_seconds = window_seconds

    async def verify(self, target: signing.Target, headers: Mapping[str, str], body: bytes) -> str:
        """The verified origin domain of a request, or a ``Problem`` (``headers`` lower-case)."""
        try:
            params, signature = signing.parse(headers)
        except signing.SignatureError as e:
            raise invalid_signature(str(e)) from None
        if not signing.covers_required(params):
            raise invalid_signature("the signature must cover exactly " + " ".join(signing.COVERED))
        origin = headers.get("roost-origin", "").strip().lower()
        destination = headers.get("roost-destination", "").strip().lower()
        if not is_valid_domain(origin):
            raise invalid_signature("Roost-Origin is not a valid domain")
        if destination != self.home_domain:
            raise Problem(
                421,
                "wrong_destination",
                f"this server is {self.home_domain}, the request is for {destination or '?'}",
            )
        require_admitted(
            await self.policy.load(), origin, f"this server does not federate with {origin}"
        )
        now = int(self.clock())
        if abs(now - params.created) > self.window_seconds or params.expires < now:
            raise invalid_signature("the signature is not fresh (check the server clocks)")
        if params.expires - params.created > 2 * self.window_seconds:
            raise invalid_signature("the signature lives too long")
        if not signing.digest_matches(headers.get("content-digest"), body):
            raise invalid_signature("Content-Digest does not match the body")
        try:
            base = signing.signature_base(target, headers, params)
        except signing.SignatureError as e:
            raise invalid_signature(str(e)) from None
        public_key = await self._public_key(origin, params.keyid)
        if public_key is None or not signing.verify(public_key, base, signature):
            raise invalid_signature(f"the signature does not verify with {origin}'s keys")
        await self._record_nonce(origin, params, now)
        if self.on_contact is not None:
            await self.on_contact(origin)
        return origin

    async def sweep(self) -> int:
        """Delete nonces whose signatures can no longer be fresh (server/maintenance.py)."""
        async with self.db.transaction() as conn:
            result = await conn.execute(
                sa.delete(fed_nonces).where(fed_nonces.c.expires_at < int(self.clock()))
            )
        return result.rowcount or 0

    async def _public_key(self, origin: str, key_id: str) -> bytes | None:
        # RemoteUnavailable (the origin's well-known cannot be read) propagates as a 502: the
        # sender sees a server error and retries later, instead of a final refusal.
        keys = await self.directory.server_keys(origin)
        if key_id not in keys:  # rotated since we cached its keys?
            keys = await self.directory.server_keys(origin, refresh=True)
        return keys.get(key_id)

    async def _record_nonce(self, origin: str, params: signing.SignatureParams, now: int) -> None:
        # Kept until no signature carrying it could still be fresh; swept by maintenance.
        keep_until = max(params.expires, params.created + self.window_seconds, now) + 1
        try:
            async with self.db.transaction() as conn:
                await conn.execute(
                    sa.insert(fed_nonces).values(
                        origin=origin, nonce=params.nonce, expires_at=keep_until
                    )
                )
        except IntegrityError:
            raise Problem(
                401, "replayed_request", "this signed request was already received"
            ) from None


async def federation_origin(request: Request) -> str:
    """FastAPI dependency: verify the inbound signed request and return its origin domain."""
    verifier: InboundVerifier = request.app.state.services.federation.verifier
    body = await request.body()  # cached on the request for the route
    raw_path = request.scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else request.url.path
    target = signing.Target(
        request.method,
        path.split("?", 1)[0],
        request.scope.get("query_string", b"").decode("latin-1"),
    )
    headers: dict[str, str] = {}
    for k, v in request.scope["headers"]:  # repeated fields combine as RFC 9110 says
        name, value = k.decode("latin-1").lower(), v.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return await verifier.verify(target, headers, body)


FederationOrigin = Annotated[str, Depends(federation_origin)]

# OpenAPI ``responses`` of every signed route: ``responses={**SIGNED_REQUEST_ERRORS, ...}``.
SIGNED_REQUEST_ERRORS = problem_responses(
    (401, "invalid_signature"),
    (401, "replayed_request"),
    (403, "federation_refused"),
    (421, "wrong_destination"),
)
