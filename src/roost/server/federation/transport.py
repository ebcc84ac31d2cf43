"""``FederationClient``: signed outbound requests to other homeservers (docs/federation.md).

The policy is applied before anything is sent; a domain it does not admit gets
``FederationRefused`` and no connection is opened.
"""

from __future__ import annotations

import json as jsonlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from ..errors import PROBLEM_MEDIA_TYPE, Problem
from ..outbound import OutboundRefused
from ..outbound_client import OutboundClient
from . import signing
from .identity import ServerIdentity
from .policy import FederationPolicy, FederationPolicyStore
from .resolver import Resolver

if TYPE_CHECKING:  # at run time httpx loads with the first request (outbound_client.py)
    import httpx

log = logging.getLogger("roost.federation")

# The most of a remote answer that is read (a claim of many KeyPackages or a large group's
# state fits; anything larger is a broken or hostile peer).
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
# Query parameters: a mapping, or pairs when a name repeats.
Params = Mapping[str, str] | Sequence[tuple[str, str]] | None


class FederationRefused(Problem):
    """This server's federation policy does not admit the domain (403 ``federation_refused``).
    ``forgotten``: the operator removed the domain for good (``"forgotten": true`` in the
    answer), so a client stops waiting for the refusal to be lifted."""

    def __init__(self, domain: str, detail: str | None = None, *, forgotten: bool = False) -> None:
        super().__init__(
            403,
            "federation_refused",
            detail or f"federation with {domain} is not allowed by this server's policy",
            extra={"forgotten": True} if forgotten else None,
        )
        self.domain = domain


def require_admitted(policy: FederationPolicy, domain: str, detail: str | None = None) -> None:
    """``FederationRefused`` unless ``policy`` admits ``domain`` (marked ``forgotten`` when the
    operator removed the domain for good)."""
    if not policy.admits(domain):
        raise FederationRefused(domain, detail, forgotten=domain.lower() in policy.forgotten)


class RemoteUnavailable(Problem):
    """The remote homeserver could not be reached or failed (502 ``federation_unavailable``)."""

    def __init__(self, domain: str, reason: str) -> None:
        super().__init__(502, "federation_unavailable", f"{domain}: {reason}")
        self.domain = domain
        self.reason = reason


class FederationClient:
    """Signs and sends requests to other domains' ``/federation/v1/`` endpoints."""

    def __init__(
        self,
        http: OutboundClient,
        identity: ServerIdentity,
        policy: FederationPolicyStore,
        resolver: Resolver,
        home_domain: str,
        clock: Callable[[], float] = time.time,
        window_seconds: int = 300,
    ) -> None:
        self.http = http
        self.identity = identity
        self.policy = policy
        self.resolver = resolver
        self.home_domain = home_domain
        self.clock = clock
        self.window_seconds = window_seconds

    async def request(
        self,
        domain: str,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
        params: Params = None,
        max_bytes: int = MAX_RESPONSE_BYTES,
    ) -> httpx.Response:
        """Send one signed request; ``path`` is the full path ("/federation/v1/..."); the
        answer is read up to ``max_bytes``.

        Raises ``FederationRefused`` if the policy does not admit ``domain`` (nothing sent),
        ``RemoteUnavailable`` on connect errors, timeouts, 5xx and refusals of our signature
        (401, 421: this server's problem, never the client's), and ``Problem`` with the remote
        status and code for another problem+json 4xx answer. Other answers are returned.
        """
        response = await self.send(
            domain,
            method,
            path,
            body=body,
            content_type=content_type,
            headers=headers,
            params=params,
            max_bytes=max_bytes,
        )
        if response.status_code >= 400:
            raise _remote_problem(domain.lower(), response)
        return response

    async def send(
        self,
        domain: str,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
        params: Params = None,
        max_bytes: int = MAX_RESPONSE_BYTES,
    ) -> httpx.Response:
        """As ``request``, but every 4xx other than 401/421 is returned as it is (for callers
        that forward a remote answer with all its fields)."""
        domain = domain.lower()
        request = await self._signed(domain, method, path, body, content_type, headers, params)
        response = await _bounded(domain, await self._open(domain, request), max_bytes)
        _check_status(domain, response)
        return response

    @asynccontextmanager
    async def stream(
        self, domain: str, method: str, path: str, *, headers: dict[str, str] | None = None
    ) -> AsyncIterator[httpx.Response]:
        """Send one signed request without a body and yield its 2xx answer unread, for a
        body too large to hold (an asset); the caller bounds what it reads. Raises as
        ``request`` (a 4xx problem is read, at most ``MAX_RESPONSE_BYTES`` of it)."""
        domain = domain.lower()
        request = await self._signed(domain, method, path, b"", None, headers, None)
        response = await self._open(domain, request)
        try:
            if response.status_code >= 400:
                answer = await _bounded(domain, response)
                _check_status(domain, answer)
                raise _remote_problem(domain, answer)
            yield response
        finally:
            await response.aclose()

    async def _signed(
        self,
        domain: str,
        method: str,
        path: str,
        body: bytes,
        content_type: str | None,
        headers: dict[str, str] | None,
        params: Params,
    ) -> httpx.Request:
        """The request, signed, if the policy admits ``domain`` (else ``FederationRefused``)."""
        import httpx

        require_admitted(await self.policy.load(), domain)
        url = httpx.URL(self.resolver.base_url(domain) + path, params=params)
        wire_headers = {k.lower(): v for k, v in (headers or {}).items()}
        wire_headers.update(
            {
                "content-digest": signing.content_digest(body),
                "roost-origin": self.home_domain,
                "roost-destination": domain,
            }
        )
        if content_type is not None:
            wire_headers["content-type"] = content_type
        target = signing.Target(
            method.upper(), url.raw_path.split(b"?", 1)[0].decode(), url.query.decode()
        )
        key = await self.identity.signing_key()
        wire_headers.update(
            signing.sign(
                key,
                target,
                wire_headers,
                created=int(self.clock()),
                window_seconds=self.window_seconds,
            )
        )
        return self.http.build_request(method.upper(), url, content=body, headers=wire_headers)

    async def _open(self, domain: str, request: httpx.Request) -> httpx.Response:
        """Send and return the answer with its body still unread."""
        import httpx

        try:
            return await self.http.send(request, stream=True)
        except OutboundRefused:
            raise FederationRefused(domain, f"{domain} is not at a public address") from None
        except httpx.TimeoutException:
            raise RemoteUnavailable(domain, "timed out") from None
        except httpx.HTTPError as e:
            raise RemoteUnavailable(domain, f"could not connect ({type(e).__name__})") from None

    async def json(
        self,
        domain: str,
        method: str,
        path: str,
        payload: dict[str, Any] | None = None,
        **kw: Any,
    ) -> Any:
        """``request`` with a JSON body (if ``payload``) and a decoded JSON answer (or None)."""
        if payload is not None:
            kw["body"] = jsonlib.dumps(payload, separators=(",", ":")).encode()
            kw.setdefault("content_type", "application/json")
        response = await self.request(domain, method, path, **kw)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise RemoteUnavailable(domain, "answered with invalid JSON") from None

    async def aclose(self) -> None:
        await self.http.aclose()


async def _bounded(
    domain: str, streamed: httpx.Response, max_bytes: int = MAX_RESPONSE_BYTES
) -> httpx.Response:
    """The streamed answer read into memory, at most ``max_bytes`` of it: a peer answering a
    huge body must not make this server buffer it all."""
    import httpx

    try:
        content = bytearray()
        async for chunk in streamed.aiter_bytes():
            content += chunk
            if len(content) > max_bytes:
                raise RemoteUnavailable(domain, "answered too large a body")
    except httpx.TimeoutException:
        raise RemoteUnavailable(domain, "timed out") from None
    except httpx.HTTPError as e:
        raise RemoteUnavailable(domain, f"could not connect ({type(e).__name__})") from None
    finally:
        await streamed.aclose()
    # A new response with the decoded bytes (so without the transfer's content headers).
    headers = [
        (k, v)
        for k, v in streamed.headers.multi_items()
        if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
    ]
    return httpx.Response(
        streamed.status_code, headers=headers, content=bytes(content), request=streamed.request
    )


def _check_status(domain: str, response: httpx.Response) -> None:
    """5xx and refusals of our signature (401, 421) are this server's problem, never the
    client's: ``RemoteUnavailable``."""
    if response.status_code >= 500:
        raise RemoteUnavailable(domain, f"answered {response.status_code}")
    if response.status_code in (401, 421):
        raise RemoteUnavailable(domain, f"refused this server's signature ({_code_of(response)})")


def _problem_document(response: httpx.Response) -> dict[str, Any] | None:
    ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in (PROBLEM_MEDIA_TYPE, "application/json"):
        return None
    try:
        doc = response.json()
    except ValueError:
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("code"), str) else None


def _code_of(response: httpx.Response) -> str:
    doc = _problem_document(response)
    return doc["code"][:64] if doc else str(response.status_code)


def _remote_problem(domain: str, response: httpx.Response) -> Problem:
    """A remote 4xx: its problem+json passes through; anything else is a broken remote."""
    doc = _problem_document(response)
    if doc is None:
        return RemoteUnavailable(domain, f"answered {response.status_code} without a problem")
    detail = doc.get("detail")
    return Problem(
        response.status_code,
        doc["code"][:64],
        f"{domain}: {detail}"[:500] if isinstance(detail, str) else f"{domain} refused",
    )
