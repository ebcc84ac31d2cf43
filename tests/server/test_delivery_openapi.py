"""The Groups routes of docs/api.md are served and described in the OpenAPI document."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


async def test_groups_section_routes_are_served_and_described(server) -> None:  # type: ignore[no-untyped-def]
    text = DOCS.read_text()
    section = text[text.index("## Groups (Delivery Service)") :]
    section = section[: section.find("\n## ", 5)] if "\n## " in section[5:] else section
    named = {
        (m, _shape(re.split(r"[?\[]", p)[0]))
        for m, p in re.findall(r"`(GET|POST|PATCH|PUT|DELETE) (/[^`\s]*)", section)
    }
    assert len(named) >= 12
    doc = (await server.http.get("/openapi.json")).json()
    served = {(m.upper(), _shape(p)) for p, ops in doc["paths"].items() for m in ops}
    assert named <= served, sorted(named - served)
    for path, ops in doc["paths"].items():
        if not path.startswith(("/v1/groups", "/v1/ds/")):
            continue
        for method, op in ops.items():
            where = f"{method.upper()} {path}"
            assert op.get("summary") or op.get("description"), where
            responses = op.get("responses", {})
            assert any(code.startswith("2") for code in responses), where
            for code, resp in responses.items():
                if code.startswith("4") and code != "422":
                    assert "application/problem+json" in resp.get("content", {}), (where, code)
            if op.get("security"):
                assert "401" in responses, where
