"""``GET /`` and the page's assets (script, service worker, stylesheet, icon). The files are
read once, at the first request, and kept in memory with their gzip form (together about 1.3
times the script). Every answer carries a Content-Security-Policy that admits only this
origin: the script and stylesheet files (no inline code), fetch and the same-origin
WebSocket, nothing from another host. Browsers that accept gzip get it (the script shrinks to
about a quarter), and an ETag lets a reload be answered ``304 Not Modified``."""

from __future__ import annotations

import functools
import gzip
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import Response

from roost.web import STATIC_DIR

# 'self' in connect-src also covers ws:/wss: to the same host (CSP Level 3).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)

# name -> media type of the files of the bundle
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "sw.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
# path -> file. index.html names the icon with <link rel="icon">, so browsers do not ask for
# /favicon.ico.
PAGE_PATHS = {
    "/": "index.html",
    "/app.js": "app.js",
    # The service worker (notifications): served from the root so that its scope is "/".
    "/sw.js": "sw.js",
    "/app.css": "app.css",
    "/favicon.svg": "favicon.svg",
}

router = APIRouter()


@dataclass(frozen=True, slots=True)
class _PageFile:
    body: bytes
    gzipped: bytes
    etag: str  # weak: one validator for both encodings of the same bytes


@functools.cache
def _file(name: str) -> _PageFile:
    body = (STATIC_DIR / name).read_bytes()
    digest = hashlib.sha256(body).hexdigest()[:32]
    return _PageFile(body, gzip.compress(body, 9, mtime=0), f'W/"{digest}"')


def _accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header admits gzip (RFC 9110 §12.5.3: ``q=0`` refuses)."""
    for item in accept_encoding.split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        if coding.lower() not in ("gzip", "*"):
            continue
        for param in params:
            if param.lower().startswith("q="):
                try:
                    return float(param[2:]) > 0
                except ValueError:
                    return False
        return True
    return False


def _answer(name: str, request: Request) -> Response:
    f = _file(name)
    headers = {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        # Revalidated on every load (a server upgrade brings its page with it); the ETag makes
        # that a 304 while the page is unchanged.
        "Cache-Control": "no-cache",
        "ETag": f.etag,
        "Vary": "Accept-Encoding",
    }
    if f.etag in (t.strip() for t in request.headers.get("if-none-match", "").split(",")):
        return Response(status_code=304, headers=headers)
    if _accepts_gzip(request.headers.get("accept-encoding", "")):
        headers["Content-Encoding"] = "gzip"
        return Response(f.gzipped, media_type=ASSETS[name], headers=headers)
    return Response(f.body, media_type=ASSETS[name], headers=headers)


def _route(name: str) -> Callable[[Request], Awaitable[Response]]:
    async def page_file(request: Request) -> Response:
        return _answer(name, request)

    return page_file


for _path, _name in PAGE_PATHS.items():
    router.add_api_route(_path, _route(_name), methods=["GET"], include_in_schema=False)
