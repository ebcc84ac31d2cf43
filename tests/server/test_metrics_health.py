"""/health, /ready and /metrics on both engines (in-process app), and the JSON log format."""

from __future__ import annotations

import json
import logging

import sqlalchemy as sa

from roost.server.observability.logs import JsonFormatter
from roost.server.store import Database

from .conftest import make_config, running_server
from .helpers import MLS

METRICS_TOKEN = "m" * 24


def sample(text: str, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f"{name}{{{want}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return None


async def test_health_and_ready(server):
    r = await server.http.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = await server.http.get("/ready")
    assert r.status_code == 200 and r.json()["status"] == "ready"


async def test_ready_refuses_an_interrupted_migration(server, db_url):
    db = Database(make_config(db_url).sqlalchemy_url)
    try:
        async with db.transaction() as conn:
            await conn.execute(sa.text("INSERT INTO roost_migration_lock VALUES (1)"))
        r = await server.http.get("/ready")
        assert r.status_code == 503 and r.json()["code"] == "not_ready"
        assert r.headers["content-type"].startswith("application/problem+json")
        assert (await server.http.get("/health")).status_code == 200
    finally:
        async with db.transaction() as conn:
            await conn.execute(sa.text("DELETE FROM roost_migration_lock"))
        await db.dispose()
    assert (await server.http.get("/ready")).status_code == 200


async def test_metrics_count_route_templates_and_gauges(server):
    alice = await server.user("alice")
    r = await server.http.post("/v1/queues", headers=alice.headers)
    queue_id = r.json()["queue_id"]
    for i in range(2):
        r = await server.http.post(
            f"/v1/queues/{queue_id}/messages", content=b"x%d" % i, headers={**alice.headers, **MLS}
        )
        assert r.status_code < 300, r.text
    await server.http.get("/no/such/path")
    r = await server.http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert queue_id not in text  # only route templates become labels
    route = "/v1/queues/{queue_id}/messages"
    assert sample(text, "roost_http_requests_total", method="POST", route=route, status="201") == 2
    assert (
        sample(text, "roost_http_requests_total", method="GET", route="<unmatched>", status="404")
        == 1
    )
    assert (
        sample(text, "roost_http_request_duration_seconds_count", method="POST", route=route) == 2
    )
    assert sample(text, "roost_queue_depth", kind="group") == 2
    assert sample(text, "roost_queues", kind="group") == 1
    assert sample(text, "roost_queue_depth", kind="direct") == 0
    assert sample(text, "roost_outbox_depth", outbox="account_events") == 0
    assert sample(text, "roost_realtime_connections") == 0
    assert sample(text, "roost_db_pool_checked_out") is not None
    assert (sample(text, "process_resident_memory_bytes") or 0) > 1_000_000
    assert "# TYPE roost_federation_outbox_depth gauge" in text


async def test_metrics_token(db_url):
    async with running_server(make_config(db_url, metrics_token=METRICS_TOKEN)) as server:
        r = await server.http.get("/metrics")
        assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
        r = await server.http.get("/metrics", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        r = await server.http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert r.status_code == 200 and "roost_http_requests_total" in r.text


async def test_metrics_can_be_disabled(db_url):
    async with running_server(make_config(db_url, metrics_enabled=False)) as server:
        assert (await server.http.get("/metrics")).status_code == 404
        assert (await server.http.get("/health")).status_code == 200


async def test_openapi_describes_operations_routes(server):
    doc = (await server.http.get("/openapi.json")).json()
    for path in ("/health", "/ready", "/metrics"):
        op = doc["paths"][path]["get"]
        assert op["summary"] and op["description"]


def test_json_log_lines_carry_only_whitelisted_fields():
    record = logging.LogRecord("roost.access", logging.INFO, __file__, 1, "%s %s %d", (), None)
    record.args = ("GET", "/v1/queues/{queue_id}", 200)
    record.__dict__.update(
        {"route": "/v1/queues/{queue_id}", "status": 200, "token": "secret", "payload": b"x"}
    )
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "GET /v1/queues/{queue_id} 200"
    assert line["level"] == "info" and line["logger"] == "roost.access"
    assert line["route"] == "/v1/queues/{queue_id}" and line["status"] == 200
    assert "token" not in line and "payload" not in line and "secret" not in json.dumps(line)


def test_fast_path_sends_get_their_route_template():
    from roost.server.observability.metrics import UNMATCHED, route_template

    send = {"type": "http", "method": "POST", "path": "/v1/groups/AbC_-x/messages"}
    assert route_template(send) == "/v1/groups/{group_id}/messages"
    assert route_template({**send, "method": "GET"}) == UNMATCHED
    assert route_template({**send, "path": "/v1/groups/a/b/messages"}) == UNMATCHED


def test_observability_settings_are_validated():
    import pytest

    from roost.server.config import ConfigError, build_config

    with pytest.raises(ConfigError) as e:
        build_config({"log_format": "xml", "metrics_token": "short"}, {})
    assert "log_format" in str(e.value) and "metrics_token" in str(e.value)
    c = build_config(
        {}, {"ROOST_LOG_FORMAT": "json", "ROOST_METRICS_ENABLED": "no", "ROOST_METRICS_TOKEN": ""}
    )
    assert (c.log_format, c.metrics_enabled, c.metrics_token) == ("json", False, "")
