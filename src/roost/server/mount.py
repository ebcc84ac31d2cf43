"""Adding a module's routes to the app."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI


def mount_routes(app: FastAPI, router: APIRouter) -> None:
    """Add ``router``'s routes to ``app`` as they are.

    ``app.include_router`` makes FastAPI build every route of the router a second time, at the
    first request (an effective copy: its dependencies, parameter and response models), to
    apply an inclusion prefix, tags or dependencies. Roost never gives any (each router
    carries its own prefix and tags, already in its routes), and the copies cost ~0.1 s of the
    first request and memory for as long as the server runs.
    """
    app.router.routes.extend(router.routes)
