"""The served OpenAPI document, made to say what the server answers.

FastAPI documents request validation failures as ``422 HTTPValidationError``; Roost answers them
``400 invalid_request`` problem details (``errors.py``, docs/api.md "Errors"), so every operation
that takes input documents that 400 instead. Strings never accept NUL (``input_guard.py`` refuses
it at the door), which the string schemas say, and config-dependent bounds are filled in.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from roost.protocol.media_types import MLS_MEDIA_TYPE

from .config import Config
from .errors import PROBLEM_MEDIA_TYPE

PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details with a stable machine-readable code",
    "required": ["type", "title", "status", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "code": {"type": "string"},
        "detail": {"type": "string"},
    },
}
_PROBLEM_CONTENT = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")
_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
# input_guard.py refuses NUL anywhere in the query, path or a JSON body.
_NO_NUL = "^[^\\u0000]*$"


def build_openapi(app: FastAPI, config: Config) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in _FASTAPI_VALIDATION_SCHEMAS:
        schemas.pop(name, None)
    schemas["Problem"] = PROBLEM_SCHEMA
    for operations in schema.get("paths", {}).values():
        for method, operation in operations.items():
            if method in _HTTP_METHODS:
                _document_validation_as_400(operation)
                _document_mls_body_refusals(operation)
    _forbid_nul_in_strings(schema)
    _fill_config_bounds(schema, config)
    return schema


def _is_fastapi_validation(response: dict[str, Any]) -> bool:
    ref = response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
    return isinstance(ref, str) and ref.rsplit("/", 1)[-1] in _FASTAPI_VALIDATION_SCHEMAS


def _document_validation_as_400(operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    if _is_fastapi_validation(responses.get("422", {})):
        del responses["422"]
    if not (operation.get("parameters") or operation.get("requestBody")):
        return
    _add_problem(operation, "400", "invalid_request")


def _add_problem(operation: dict[str, Any], status: str, code: str) -> None:
    entry = operation.setdefault("responses", {}).setdefault(
        status, {"description": "", "content": dict(_PROBLEM_CONTENT)}
    )
    entry.setdefault("content", {}).update(_PROBLEM_CONTENT)
    described = entry.get("description", "")
    if code not in described.split(", "):
        entry["description"] = f"{described}, {code}" if described else code


def _document_mls_body_refusals(operation: dict[str, Any]) -> None:
    """A ``message/mls`` body (deps.mls_body) is refused 400 when it does not decode and 415
    under another media type."""
    if MLS_MEDIA_TYPE in operation.get("requestBody", {}).get("content", {}):
        _add_problem(operation, "400", "malformed_mls")
        _add_problem(operation, "415", "unsupported_media_type")


def _forbid_nul_in_strings(node: Any) -> None:
    """Free-text string schemas get a pattern excluding NUL (patterned ones already say more)."""
    if isinstance(node, dict):
        plain_string = node.get("type") == "string" and not (
            {"pattern", "format", "enum", "const", "contentMediaType"} & node.keys()
        )
        if plain_string:
            node["pattern"] = _NO_NUL
        for value in node.values():
            _forbid_nul_in_strings(value)
    elif isinstance(node, list):
        for value in node:
            _forbid_nul_in_strings(value)


def _fill_config_bounds(schema: dict[str, Any], config: Config) -> None:
    """Bounds that come from the configuration rather than the code."""
    upload = schema.get("paths", {}).get("/v1/assets", {}).get("post", {})
    for parameter in upload.get("parameters", []):
        if parameter.get("name") == "expires_in":
            for alternative in parameter.get("schema", {}).get("anyOf", [parameter["schema"]]):
                if alternative.get("type") == "integer":
                    alternative["minimum"] = 1
                    alternative["maximum"] = config.limits.asset_max_ttl_seconds
