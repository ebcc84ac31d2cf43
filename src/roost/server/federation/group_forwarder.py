"""Forwarding a client's request on a group of another domain to that domain's DS
(docs/federation.md, "DS flows").

``GroupForwarder`` (raw ASGI, in front of the send fast path) answers a client's
``/v1/groups/{group_id}/...`` request for a group of another domain by forwarding it, signed, to
``/federation/v1/groups/{group_id}/...`` there, with the acting client (``Roost-Client``,
``Roost-User-Uuid``). A queue registration names a queue of this server: its ownership is
checked here first. The answer (also a problem such as ``409 epoch_conflict`` with its fields)
comes back unchanged.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from roost.protocol.base64url import b64u, unb64u

from ..errors import PROBLEM_MEDIA_TYPE, Problem, problem_response, unexpected_error_response
from ..queues.params import queue_key_param
from ..queues.service import QUEUE_ID_LEN
from .as_flows import CLIENT_HEADER, USER_UUID_HEADER
from .ds_flows import group_domain
from .transport import RemoteUnavailable

if TYPE_CHECKING:
    from ..deps import Services

FED_GROUPS = "/federation/v1/groups/"
_CLIENT_GROUPS = "/v1/groups/"
# The group routes a client may reach on another domain's DS (delivery/routes.py), as decoded
# paths after "/v1/groups/". Anything else (dot segments above all: the outbound URL is
# normalised, so "<gid>/../../inbox" would become a request to the peer's inbox signed by this
# server) is not forwarded.
_FORWARDABLE = re.compile(
    r"[A-Za-z0-9_-]+(?:/(?:commits|group-info|queue|messages|proposals|policy"
    r"|roles/[A-Za-z0-9][A-Za-z0-9._-]*@[A-Za-z0-9.-]+))?"
)
# Request headers that travel with a forwarded request (the rest are the client's business).
# The group key is for the group's DS, which checks it; the queue key stays here.
_FORWARDED_HEADERS = ("roost-message-id", "roost-group-key", "roost-group-key-wrap")


def _path_group_domain(segment: str) -> str | None:
    try:
        raw = unb64u(segment)
    except ValueError:
        return None
    return group_domain(raw)


class GroupForwarder:
    """Raw ASGI: requests on groups of other domains go to that domain's DS, signed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._home: tuple[str, str, int] | None = None  # (domain, b64u tail, segment length)

    def _home_shape(self, domain: str) -> tuple[str, str, int]:
        """How the path segment of a group id of ``domain`` ends. The 22-character random part
        and the "@" fill whole base64 groups up to the domain's first byte, so from character
        30 on the encoding depends only on "@" + domain: a local group is recognised by a
        string comparison, without decoding (this runs in front of every send)."""
        if self._home is None or self._home[0] != domain:
            sample = b64u(b"A" * 22 + b"@" + domain.encode())
            self._home = (domain, sample[30:], len(sample))
        return self._home

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        domain = self._remote_domain(scope)
        if domain is None:
            await self.app(scope, receive, send)
            return
        try:
            status, ctype, body = await self._forward(scope, receive, domain)
        except Problem as p:
            await problem_response(p.status, p.code, p.detail, p.headers, p.extra)(
                scope, receive, send
            )
            return
        except Exception as e:
            await unexpected_error_response(e)(scope, receive, send)
            return
        headers = [(b"content-length", str(len(body)).encode())]
        if ctype:
            headers.append((b"content-type", ctype.encode("latin-1")))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _remote_domain(self, scope: Scope) -> str | None:
        if scope["type"] != "http":
            return None
        path: str = scope["path"]
        if not path.startswith(_CLIENT_GROUPS):
            return None
        segment = path[len(_CLIENT_GROUPS) :].split("/", 1)[0]
        services = scope["app"].state.services
        home, tail, length = self._home_shape(services.config.home_domain)
        if len(segment) == length and segment.endswith(tail):
            return None  # a group of this domain (the common case: no decoding)
        domain = _path_group_domain(segment)
        if domain is None or domain == home or getattr(services, "federation", None) is None:
            return None
        return domain

    async def _forward(self, scope: Scope, receive: Receive, domain: str) -> tuple[int, str, bytes]:
        s: Services = scope["app"].state.services
        rest: str = scope["path"][len(_CLIENT_GROUPS) :]
        if not _FORWARDABLE.fullmatch(rest):
            raise Problem(404, "not_found", "no such group route")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Problem(
                401,
                "unauthenticated",
                "a bearer token is required",
                headers={"WWW-Authenticate": "Bearer"},
            )
        p = await s.auth.authenticate(token.strip())
        body = await _read_body(receive)
        method: str = scope["method"]
        params = parse_qsl(scope.get("query_string", b"").decode("latin-1"))
        queue_text = None
        if method == "PUT" and rest.endswith("/queue"):
            try:
                queue_text = json.loads(body).get("queue_id")
            except (ValueError, AttributeError):
                queue_text = None  # the group's DS answers the malformed request
        elif method == "POST" and rest.endswith("/commits"):
            queue_text = dict(params).get("queue_id")
        if queue_text is not None:
            await self._check_queue(s, queue_text, headers.get("roost-queue-key"))
        forwarded = {CLIENT_HEADER: p.client_id, USER_UUID_HEADER: p.user_uuid}
        for name in _FORWARDED_HEADERS:
            if name in headers:
                forwarded[name] = headers[name]
        # ``send``: answers below 500 come back as they are (a problem keeps all its fields,
        # e.g. the epoch of 409 epoch_conflict); 401/421 (our signature refused) become 502.
        response = await s.federation.client.send(
            domain,
            method,
            FED_GROUPS + rest,
            body=body,
            content_type=headers.get("content-type"),
            headers=forwarded,
            params=params,
        )
        ctype = response.headers.get("content-type", "")
        if response.status_code >= 400 and not ctype.startswith(PROBLEM_MEDIA_TYPE):
            raise RemoteUnavailable(domain, f"answered {response.status_code} without a problem")
        return response.status_code, ctype, response.content

    async def _check_queue(self, s: Services, queue_text: object, key_text: str | None) -> None:
        """The queue a remote DS will deliver to must be one here whose key the client holds
        (the key stays here: the group's DS gets the queue id only)."""
        try:
            qid = unb64u(queue_text) if isinstance(queue_text, str) else b""
        except ValueError:
            qid = b""
        if len(qid) != QUEUE_ID_LEN:
            raise Problem(404, "queue_not_found", "no such queue")
        async with s.queues.db.engine.connect() as conn:
            await s.queues.check_key(conn, qid, queue_key_param(key_text))


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Problem(400, "invalid_request", "the client went away")
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)
