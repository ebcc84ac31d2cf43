"""``GET /`` and the page's assets (script, stylesheet, icon). The files are read once, at the first request, and
kept in memory (together about the size of the script). Every answer carries a
Content-Security-Policy that admits only this origin: the script and stylesheet files (no
inline code), fetch and the same-origin WebSocket, nothing from another host."""

from __future__ import annotations

import functools

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
    "app.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

router = APIRouter()


@functools.cache
def _read(name: str) -> bytes:
    return (STATIC_DIR / name).read_bytes()


def _asset(name: str) -> Response:
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


@router.get("/", include_in_schema=False)
async def index() -> Response:
    return _asset("index.html")


@router.get("/app.js", include_in_schema=False)
async def script() -> Response:
    return _asset("app.js")


@router.get("/app.css", include_in_schema=False)
async def stylesheet() -> Response:
    return _asset("app.css")


# index.html names it with <link rel="icon">, so browsers do not ask for /favicon.ico.
@router.get("/favicon.svg", include_in_schema=False)
async def icon() -> Response:
    return _asset("favicon.svg")
