"""The served OpenAPI document describes every route the app serves (and docs/api.md names)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from roost.server.app import create_app
from roost.server.config import Config

DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"
# Framework routes that serve the documentation itself rather than the API.
DOC_ROUTES = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
WEBSOCKET_ROUTES = {"/v1/realtime"}
OTHER_MODULES = ("/v1/groups", "/v1/ds/", "/v1/realtime", "/v1/ws")


def _flatten(routes, prefix: str = ""):
    """(METHOD, path) of every route, looking inside included routers."""
    for r in routes:
        inner = getattr(r, "original_router", None)
        if inner is not None:  # FastAPI >= 0.160 keeps included routers as a node
            yield from _flatten(inner.routes, prefix + r.include_context.prefix)
            continue
        path = prefix + getattr(r, "path", "")
        if path in DOC_ROUTES or not getattr(r, "include_in_schema", True):
            continue
        for method in getattr(r, "methods", None) or ():
            if method not in ("HEAD", "OPTIONS"):
                yield method, path


def _documented(openapi: dict) -> set[tuple[str, str]]:
    return {(m.upper(), p) for p, ops in openapi["paths"].items() for m in ops}


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


@pytest.fixture(scope="module")
def served(server) -> dict:
    resp = httpx.get(server.url + "/openapi.json", timeout=10)
    assert resp.status_code == 200
    return resp.json()


def test_every_app_route_is_in_the_served_document(served):
    app_routes = set(_flatten(create_app(Config()).routes))
    assert app_routes, "no routes found in the app"
    assert app_routes == _documented(served)


def test_every_route_in_docs_api_md_is_served(served):
    text = DOCS.read_text()
    named = {
        (m, _shape(re.split(r"[?\[]", p)[0]))
        for m, p in re.findall(r"`(GET|POST|PATCH|PUT|DELETE) (/[^`\s]*)", text)
        # The Delivery Service's routes are checked by its own suite as they land.
        if not p.startswith(OTHER_MODULES)
    }
    served_shapes = {(m, _shape(p)) for m, p in _documented(served)}
    assert named, "docs/api.md lists no routes"
    assert named <= served_shapes, sorted(named - served_shapes)


def test_operations_are_described_with_their_errors(served):
    for path, ops in served["paths"].items():
        for method, op in ops.items():
            where = f"{method.upper()} {path}"
            assert op.get("summary") or op.get("description"), where
            responses = op.get("responses", {})
            if path in WEBSOCKET_ROUTES:
                # An upgrade, not a REST operation: only its refusal is an HTTP answer.
                assert "401" in responses, where
                continue
            assert any(code.startswith("2") for code in responses), where
            for code, resp in responses.items():
                if code.startswith("4") and code != "422":
                    # Every documented refusal is a problem+json answer.
                    assert "application/problem+json" in resp.get("content", {}), (where, code)
            if op.get("security"):
                assert "401" in responses, where


def test_validation_errors_are_documented_as_the_400_the_server_answers(served):
    assert "HTTPValidationError" not in served["components"]["schemas"]
    for path, ops in served["paths"].items():
        for method, op in ops.items():
            where = f"{method.upper()} {path}"
            responses = op.get("responses", {})
            problem_422 = responses.get("422", {}).get("content", {})
            assert "application/json" not in problem_422, where  # FastAPI's validation error
            if op.get("parameters") or op.get("requestBody"):
                assert "invalid_request" in responses.get("400", {}).get("description", ""), where


def test_message_mls_bodies_are_described_as_binary(served):
    described = 0
    for path, ops in served["paths"].items():
        for method, op in ops.items():
            content = op.get("requestBody", {}).get("content", {})
            if "message/mls" not in content:
                continue
            where = f"{method.upper()} {path}"
            described += 1
            assert content["message/mls"]["schema"] == {"type": "string", "format": "binary"}
            assert "malformed_mls" in op["responses"]["400"]["description"], where
            assert "415" in op["responses"], where
    assert described >= 13


def test_a_wrong_method_names_every_method_of_the_path_in_allow(server, served):
    for path in ("/v1/me", "/v1/groups", "/v1/push", "/v1/assets/usage"):
        resp = httpx.request("OPTIONS", server.url + path, timeout=10)
        assert resp.status_code == 405, (path, resp.text)
        assert resp.headers["content-type"].startswith("application/problem+json")
        allowed = {m.strip() for m in resp.headers["allow"].split(",")}
        assert allowed == {m.upper() for m in served["paths"][path]}, path
