"""``GET /`` and the page's assets (script, service worker, stylesheet, icon). The files are read once, at the first request, and
kept in memory (together about the size of the script). Every answer carries a
Content-Security-Policy that admits only this origin: the script and stylesheet files (no
inline code), fetch and the same-origin WebSocket, nothing from another host."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from fastapi import APIRouter
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


@functools.cache
def _read(name: str) -> bytes:
    return (STATIC_DIR / name).read_bytes()


def _answer(name: str) -> Response:
    return Response(
        _read(name),
        media_type=ASSETS[name],
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            # Revalidated on every load: a server upgrade brings its page with it.
            "Cache-Control": "no-cache",
        },
    )


def _route(name: str) -> Callable[[], Awaitable[Response]]:
    async def page_file() -> Response:
        return _answer(name)

    return page_file


for _path, _name in PAGE_PATHS.items():
    router.add_api_route(_path, _route(_name), methods=["GET"], include_in_schema=False)
