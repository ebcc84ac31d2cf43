"""observability: Prometheus metrics, structured logs, health and readiness endpoints."""

from __future__ import annotations

from fastapi import FastAPI

from ..config import Config
from ..mount import mount_routes
from .logs import configure_logging
from .metrics import Metrics, MetricsMiddleware
from .redaction import RedactionFilter, install_redaction, redact
from .routes import router


def install_observability(app: FastAPI, config: Config) -> None:
    """Mount /health, /ready (always) and /metrics (unless disabled); count every request."""
    app.state.metrics = metrics = Metrics()
    if config.metrics_enabled:
        mount_routes(app, router)
    else:
        mount_routes(app, _without_metrics())
    app.add_middleware(MetricsMiddleware, metrics=metrics, access_log=config.log_format == "json")


def _without_metrics():  # type: ignore[no-untyped-def]
    from fastapi import APIRouter

    r = APIRouter(tags=["operations"])
    for route in router.routes:
        if getattr(route, "path", None) != "/metrics":
            r.routes.append(route)
    return r


__all__ = [
    "configure_logging",
    "install_observability",
    "install_redaction",
    "Metrics",
    "RedactionFilter",
    "redact",
]
