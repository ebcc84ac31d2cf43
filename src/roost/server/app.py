"""Assembly: build the services, wire the modules' deletion hooks, mount the routes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from .assets.factory import make_asset_service
from .assets.routes import UPLOAD_PATH as ASSET_UPLOAD_PATH
from .assets.routes import router as assets_router
from .auth.routes import router as auth_router
from .auth.service import AuthService
from .auth.tickets import RealtimeTickets
from .config import Config
from .connections.routes import router as connections_router
from .connections.service import ConnectionService
from .delivery.fastpath import SendFastPath
from .delivery.routes import router as delivery_router
from .delivery.service import DeliveryService
from .deps import Services
from .errors import install_error_handlers
from .federation.account_events import install_account_events
from .federation.as_flows import (
    RemoteAccounts,
    RemoteClaims,
    RemoteConnectionsBridge,
    install_as_flows,
)
from .federation.asset_flows import RemoteAssets
from .federation.ds_flows import DsBridge, install_ds_flows
from .federation.group_forwarder import GroupForwarder
from .federation.routes_as import router as federation_as_router
from .federation.routes_assets import router as federation_assets_router
from .federation.routes_ds import router as federation_ds_router
from .federation.routes_inbox import router as federation_inbox_router
from .federation.routes_keys import router as federation_keys_router
from .federation.wiring import build_federation
from .input_guard import InputGuardMiddleware
from .keypackages.routes import router as keypackages_router
from .keypackages.service import KeyPackageService
from .limits import BodyLimitMiddleware
from .maintenance import run_periodically
from .mount import mount_routes
from .notify import install_notify
from .notify.pg_bridge import install_pg_bridge
from .notify.routes import router as notify_router
from .notify.sqlite_guard import SqliteServeLock, sqlite_path
from .observability import configure_logging, install_observability
from .openapi import build_openapi
from .push.routes import router as push_router
from .push.wiring import install_push
from .queues.routes import router as queues_router
from .queues.seal import QueueSeal
from .queues.service import QueueService
from .ratelimit import RateLimiter
from .seal_key import SealKeyFile
from .store import Database
from .store.migrate import check_schema
from .web_page.routes import router as web_page_router


def build_services(
    db: Database, config: Config, clock: Callable[[], float] = time.time
) -> Services:
    # Built first: each service is handed, at construction, its narrow interface for users of
    # other domains (federation/as_flows.py), so routes call one method whatever the domain.
    federation = build_federation(db, config, clock)
    auth = AuthService(
        db, config, clock, remote=RemoteAccounts(federation.client, federation.directory)
    )
    seal_key = SealKeyFile(config.queue_seal_key_path)
    queues = QueueService(db, config.limits, QueueSeal(seal_key), clock)
    connections = ConnectionService(
        db,
        auth,
        queues,
        clock,
        remote=RemoteConnectionsBridge(federation.client, federation.outbox),
    )
    keypackages = KeyPackageService(
        db,
        config.limits,
        connections.authorize_claim,
        auth.client_uuids_of,
        clock,
        targets=auth,
        remote=RemoteClaims(federation.client, connections),
    )
    # Modules never touch each other's tables; deletions fan out through these hooks, all
    # inside the AS's transaction so an account is removed entirely or not at all.
    auth.on_client_removed += [keypackages.delete_client_packages, queues.delete_client_queues]
    auth.on_user_deleted += [
        keypackages.delete_user_packages,
        queues.delete_user_queues,
        connections.delete_user_connections,
    ]
    # The DS reaches federation only through this narrow bridge (remote AS certificates,
    # outbox, forgotten domains).
    ds_federation = DsBridge(federation.directory, federation.outbox, federation.policy)
    delivery = DeliveryService(
        db, config, auth, queues, connections, seal_key, clock, federation=ds_federation
    )
    delivery.install_hooks()
    assets = make_asset_service(db, config, seal_key, clock, remote=RemoteAssets(federation.client))
    auth.on_user_deleted.append(assets.delete_user_assets)
    limits = config.limits
    return Services(
        config=config,
        auth=auth,
        queues=queues,
        keypackages=keypackages,
        connections=connections,
        registration_limiter=RateLimiter(limits.registrations_per_minute),
        claim_limiter=RateLimiter(limits.claims_per_minute),
        auth_limiter=RateLimiter(limits.auth_per_minute),
        search_limiter=RateLimiter(limits.remote_searches_per_minute),
        group_list_limiter=RateLimiter(limits.group_lists_per_minute),
        delivery=delivery,
        assets=assets,
        federation=federation,
        tickets=RealtimeTickets(auth, limits.realtime_ticket_ttl_seconds),
    )


def create_app(
    config: Config, clock: Callable[[], float] = time.time, *, freeze_gc: bool = False
) -> FastAPI:
    """The ASGI app. The schema must be current (``roost db upgrade``) or start-up fails.
    ``freeze_gc``: for a process serving this one app (``roost serve``), see below."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(config)  # after uvicorn set up its handlers
        db = Database(config.sqlalchemy_url, sqlite_synchronous=config.sqlite_synchronous)
        try:
            await check_schema(db)
            services = build_services(db, config, clock)
            install_as_flows(services)
            install_ds_flows(services)
            install_account_events(services)
            await services.auth.ensure_ca()
            app.state.services = services
            app.state.notify = install_notify(services)
            app.state.push = install_push(services, app.state.notify, clock)
            await app.state.push.start()
            # Several processes on one PostgreSQL: wake-ups cross them via LISTEN/NOTIFY.
            bridge = None if db.is_sqlite else install_pg_bridge(app.state.notify, services, db.url)
            app.state.pg_bridge = bridge
            sqlite_file = sqlite_path(db.url) if db.is_sqlite else None
            serve_lock = SqliteServeLock(sqlite_file).acquire() if sqlite_file else None
            if bridge is not None:
                await bridge.start()
            await services.delivery.start()
            await services.federation.start()
            sweeper = asyncio.create_task(
                run_periodically(services, config.maintenance_interval_seconds)
            )
            if freeze_gc:
                # What start-up built (modules, tables, app) lives as long as the process: keep
                # it out of the cyclic collector, so full collections walk only request-time
                # objects (a full walk of the ~140k start-up objects takes ~90 ms here).
                gc.collect()
                gc.freeze()
                gc.enable()  # serve() held it off during start-up
            try:
                yield
            finally:
                await app.state.push.stop()
                await services.federation.stop()
                await services.delivery.stop()
                if bridge is not None:
                    await bridge.stop()
                if serve_lock is not None:
                    serve_lock.release()
                sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeper
                await services.assets.close()
        finally:
            await db.dispose()

    app = FastAPI(
        title="Roost homeserver",
        version="1",
        description="Homeserver for end-to-end encrypted messaging over MLS (RFC 9420). "
        "See docs/api.md.",
        lifespan=lifespan,
        # Roost exports Prometheus metrics (observability/); FastAPI's OpenTelemetry hooks
        # would only look up providers and environment variables on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    for router in (
        auth_router,
        connections_router,
        keypackages_router,
        queues_router,
        delivery_router,
        notify_router,
        push_router,
        assets_router,
        federation_keys_router,
        federation_inbox_router,
        federation_as_router,
        federation_ds_router,
        federation_assets_router,
        web_page_router,
    ):
        mount_routes(app, router)
    # The send route answered without FastAPI's routing (hot path; same contract).
    app.add_middleware(SendFastPath)
    # In front of it: requests on groups of other domains are forwarded to their DS.
    app.add_middleware(GroupForwarder)
    # Inside the body cap: refuses NUL / non-UTF-8 text before any route or fast path sees it.
    app.add_middleware(InputGuardMiddleware, max_bytes=config.limits.max_body_bytes)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=config.limits.max_body_bytes,
        exempt_paths=frozenset({ASSET_UPLOAD_PATH}),
    )
    install_observability(app, config)  # outermost middleware: counts every answer

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app, config)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
