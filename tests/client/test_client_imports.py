"""The client library's modules import one another without a cycle, and ``roost.protocol``
depends on nothing but ``roost.mls`` (the wire contract both sides share)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import roost

SRC = Path(roost.__file__).parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, including under ``if TYPE_CHECKING`` and inside
    functions (a cycle there is still a cycle of the design)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
            # ``from . import x`` / ``from .pkg import mod`` may name submodules.
            out.update(f"{target}.{alias.name}" for alias in node.names)
    return out


def _graph(package: str) -> dict[str, set[str]]:
    folder = SRC.joinpath(*package.split(".")[1:])
    files = {_module_name(p): p for p in folder.rglob("*.py")}
    # Package __init__ files only re-export; the edges that matter are between modules.
    modules = {m for m in files if files[m].name != "__init__.py"}
    return {m: {i for i in _imports(files[m]) if i in modules and i != m} for m in modules}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return path[path.index(n) :] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_no_import_cycle_among_client_modules():
    graph = _graph("roost.client")
    assert "roost.client.groups" in graph and "roost.client.realtime" in graph
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])
    # The circle this replaced: client -> groups -> realtime -> client.
    assert "roost.client.groups" not in graph["roost.client.client"]
    assert "roost.client.client" not in graph["roost.client.realtime"]


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_protocol_imports_only_mls():
    for path in SRC.joinpath("protocol").rglob("*.py"):
        for name in _imports(path):
            if name.startswith("roost."):
                assert name.startswith(("roost.mls", "roost.protocol")), (path.name, name)


@pytest.mark.parametrize(
    "module",
    sorted(_module_name(p) for p in SRC.joinpath("client").rglob("*.py"))
    + ["roost.protocol.queue_item", "roost.server.push.service"],
)
def test_each_module_imports_first_in_a_fresh_interpreter(module: str):
    """Imported first, each module loads (a runtime import cycle would fail here)."""
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
