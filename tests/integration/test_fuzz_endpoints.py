"""Every route of the OpenAPI document, fed NUL, overlong and non-UTF-8 strings in its path,
query, headers and JSON body, answers without a 5xx on both engines."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx

from .harness import ServerProcess

# What a hostile client puts where a string belongs: as URL text (percent-encoded) and as the
# JSON value it stands for (bytes that are not UTF-8 go into a JSON body raw).
URL_VALUES = ("%00", "a%00b", "a" * 3000, "%FF%FE", "%ED%A0%80", "%C0%80")
JSON_VALUES: tuple[Any, ...] = ("\x00", "a\x00b", "a" * 70000, "\ud800", "\udfff x")
RAW_JSON_BODIES = (b'{"x":"\xff\xfe"}', b"\xff", b'"\x00"', b"[" * 2000)
HEADER_VALUES = (b"a" * 6000, b"\xff\xfe", b"caf\xe9")
JSON_HEADERS = {"Content-Type": "application/json"}
SKIP = {("DELETE", "/v1/me")}  # would end the fuzzing user's session half-way
BUDGET_SECONDS = 50


def _ref(schema: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = doc["components"]["schemas"][name]
    return schema


def _instance(schema: dict[str, Any], doc: dict[str, Any], bad: Any, depth: int = 0) -> Any:
    """A value of ``schema`` with ``bad`` wherever a string goes."""
    schema = _ref(schema, doc)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [s for s in schema[key] if _ref(s, doc).get("type") != "null"]
            return _instance(options[0] if options else {}, doc, bad, depth)
    kind = schema.get("type")
    if depth > 4:
        return None
    if kind == "object" or "properties" in schema:
        return {
            name: _instance(sub, doc, bad, depth + 1)
            for name, sub in schema.get("properties", {}).items()
        }
    if kind == "array":
        return [_instance(schema.get("items", {}), doc, bad, depth + 1)]
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return True
    return bad


def _requests(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for template, operations in doc["paths"].items():
        for method, op in operations.items():
            method = method.upper()
            if (method, template) in SKIP:
                continue
            params = op.get("parameters", [])
            content = op.get("requestBody", {}).get("content", {})
            json_schema = content.get("application/json", {}).get("schema")
            for i, value in enumerate(URL_VALUES):
                path = template
                query: list[str] = []
                headers: dict[str, Any] = {}
                for p in params:
                    if p["in"] == "path":
                        path = path.replace("{" + p["name"] + "}", value)
                    elif p["in"] == "query":
                        query.append(f"{p['name']}={value}")
                    elif p["in"] == "header":
                        headers[p["name"]] = HEADER_VALUES[i % len(HEADER_VALUES)]
                url = path + ("?" + "&".join(query) if query else "")
                yield method, url, {"headers": headers}
            if json_schema is not None:
                url = template
                for p in params:
                    if p["in"] == "path":
                        url = url.replace("{" + p["name"] + "}", "x")
                for bad in JSON_VALUES:
                    # ensure_ascii: lone surrogates travel as \u escapes, as a hostile client sends
                    body = json.dumps(_instance(json_schema, doc, bad)).encode()
                    yield method, url, {"content": body, "headers": JSON_HEADERS}
                for raw in RAW_JSON_BODIES:
                    yield method, url, {"content": raw, "headers": JSON_HEADERS}


async def test_fuzz_every_route_no_5xx(server: ServerProcess, users) -> None:
    alice = await users.new("fuzz")
    token = await alice.bearer_token()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        doc = (await http.get("/openapi.json")).json()
        requests = list(_requests(doc))
        assert len(requests) > 400  # every route, several values each
        failures: list[str] = []
        started = time.monotonic()
        semaphore = asyncio.Semaphore(8)

        async def one(method: str, url: str, kwargs: dict[str, Any]) -> None:
            headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
            async with semaphore:
                resp = await http.request(method, url, headers=headers, **kwargs)
            if resp.status_code >= 500:
                failures.append(f"{method} {url[:80]} -> {resp.status_code} {resp.text[:120]}")

        await asyncio.gather(*(one(m, u, k) for m, u, k in requests))
        assert time.monotonic() - started < BUDGET_SECONDS
    assert not failures, "\n".join(failures)
    assert "Traceback" not in server.log_tail(2000)
