"""Prometheus metrics: HTTP requests by route template, latency, and gauges read at scrape time.

Each app has its own ``CollectorRegistry`` (several apps may live in one test process). Labels
are route *templates* (``/v1/queues/{queue_id}``), never concrete paths, so no queue id or user
id reaches a metric and label cardinality stays bounded.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..operator.status import outbox_status, queue_status
from ..push.stats import EVENTS as PUSH_EVENTS
from ..push.stats import PROVIDERS as PUSH_PROVIDERS

if TYPE_CHECKING:
    from ..deps import Services
    from ..notify.hub import Hub
    from ..push.service import PushService

UNMATCHED = "<unmatched>"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Database gauges are refreshed at most this often, however many scrapers ask.
REFRESH_SECONDS = 5.0

access_log = logging.getLogger("roost.access")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "roost_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "roost_http_request_duration_seconds",
            "HTTP request latency by method and route template",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "roost_queue_depth", "Stored, unacknowledged queue items", ["kind"], registry=r
        )
        self.queue_oldest = Gauge(
            "roost_queue_oldest_age_seconds",
            "Age of the oldest unacknowledged queue item (0 when empty)",
            ["kind"],
            registry=r,
        )
        self.queues = Gauge("roost_queues", "Number of queues", ["kind"], registry=r)
        self.outbox_depth = Gauge(
            "roost_outbox_depth", "Unprocessed outbox entries", ["outbox"], registry=r
        )
        self.outbox_oldest = Gauge(
            "roost_outbox_oldest_age_seconds",
            "Age of the oldest unprocessed outbox entry (0 when empty)",
            ["outbox"],
            registry=r,
        )
        # Per destination domain, from the federation source in operator.status.OUTBOX_SOURCES.
        self.federation_outbox = Gauge(
            "roost_federation_outbox_depth",
            "Outbound federation items waiting per destination domain",
            ["destination"],
            registry=r,
        )
        self.federation_oldest = Gauge(
            "roost_federation_outbox_oldest_age_seconds",
            "Age of the oldest outbound federation item per destination (0 when empty)",
            ["destination"],
            registry=r,
        )
        self.federation_attempts = Gauge(
            "roost_federation_outbox_attempts",
            "Consecutive failed delivery attempts per destination (0 after a success)",
            ["destination"],
            registry=r,
        )
        self.federation_blocked = Gauge(
            "roost_federation_outbox_blocked",
            "1 when the policy no longer admits the destination (items held, not sent)",
            ["destination"],
            registry=r,
        )
        self.realtime = Gauge(
            "roost_realtime_connections", "Connected realtime WebSocket clients", registry=r
        )
        self.pool_size = Gauge("roost_db_pool_size", "Database pool size", registry=r)
        self.pool_checked_out = Gauge(
            "roost_db_pool_checked_out", "Database connections in use", registry=r
        )
        self.pool_overflow = Gauge(
            "roost_db_pool_overflow", "Database connections beyond the pool size", registry=r
        )
        # process_resident_memory_bytes, CPU seconds, open fds (Linux /proc).
        ProcessCollector(registry=r)
        self.push = _PushCollector()
        r.register(self.push)
        self._refreshed_at = 0.0

    async def refresh(
        self, services: Services, hub: Hub | None, push: PushService | None = None
    ) -> None:
        """Update the gauges that reflect database and process state (cached briefly)."""
        self.realtime.set(len(hub) if hub is not None else 0)
        self.push.service = push
        db = services.auth.db
        pool = db.engine.pool
        for gauge, attr in (
            (self.pool_size, "size"),
            (self.pool_checked_out, "checkedout"),
            (self.pool_overflow, "overflow"),
        ):
            fn = getattr(pool, attr, None)
            if fn is not None:
                gauge.set(max(0, fn()))
        now = time.monotonic()
        if now - self._refreshed_at < REFRESH_SECONDS:
            return
        self._refreshed_at = now
        wall = services.auth.clock()
        async with db.engine.connect() as conn:
            queues = await queue_status(conn, wall)
            outboxes = await outbox_status(conn, wall)
        for q in queues:
            self.queue_depth.labels(q.kind).set(q.depth)
            self.queue_oldest.labels(q.kind).set(q.oldest_age_seconds or 0)
            self.queues.labels(q.kind).set(q.queues)
        federation = (
            self.federation_outbox,
            self.federation_oldest,
            self.federation_attempts,
            self.federation_blocked,
        )
        for gauge in federation:
            gauge.clear()
        for o in outboxes:
            if o.destination is not None:
                values = (o.depth, o.oldest_age_seconds or 0, o.attempts, int(o.blocked))
                for gauge, value in zip(federation, values, strict=True):
                    gauge.labels(o.destination).set(value)
                continue
            self.outbox_depth.labels(o.outbox).set(o.depth)
            self.outbox_oldest.labels(o.outbox).set(o.oldest_age_seconds or 0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _PushCollector(Collector):
    """The push sender's own counts (push/stats.py), read at scrape time: every provider is
    listed, at 0 until it pushes, so rates work from the first scrape."""

    def __init__(self) -> None:
        self.service: PushService | None = None

    def collect(self) -> Iterator[Metric]:
        push = self.service
        for event, help_text in PUSH_EVENTS.items():
            family = CounterMetricFamily(f"roost_push_{event}", help_text, labels=["provider"])
            for provider in PUSH_PROVIDERS:
                family.add_metric([provider], push.stats.get(event, provider) if push else 0)
            yield family
        yield CounterMetricFamily(
            "roost_push_dropped",
            "Wake-ups dropped because the push queue was full",
            value=push.stats.dropped if push else 0,
        )
        yield GaugeMetricFamily(
            "roost_push_queue_depth",
            "Wake-ups waiting for the push sender",
            value=push.queue_depth() if push else 0,
        )


# Routes answered by raw-ASGI fast paths (delivery/fastpath.py) never reach FastAPI's router,
# so no route lands in the scope: name their templates here.
_RAW_ROUTES = (
    (re.compile(r"^/v1/groups/[^/]+/messages$"), "POST", "/v1/groups/{group_id}/messages"),
)


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    for pattern, method, template in _RAW_ROUTES:
        if scope.get("method") == method and pattern.match(scope.get("path", "")):
            return template
    return UNMATCHED


class MetricsMiddleware:
    """Counts and times every HTTP request; with ``access_log`` also logs it (route template,
    status, duration — no path parameters, query strings, headers or bodies)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, access_log: bool = False) -> None:
        self.app = app
        self.metrics = metrics
        self.log_access = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed = time.perf_counter() - start
            route = route_template(scope)
            method = scope.get("method", "GET")
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(elapsed)
            if self.log_access:
                access_log.info(
                    "%s %s %d",
                    method,
                    route,
                    status,
                    extra={
                        "method": method,
                        "route": route,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                    },
                )
