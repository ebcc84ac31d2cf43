"""Architecture rules of ``src/roost``, checked on the source (AST only: nothing is imported).

1. No import cycle among the Python modules of ``src/roost``. Imports under
   ``if TYPE_CHECKING:`` do not run and are left out; imports inside functions run late but
   still tie the modules together, so they count.
2. No module of the server imports another module's tables: each ``server/<module>/`` owns its
   ``<module>/tables.py`` and the others go through its service's interface. ``server/store/``
   assembles the metadata of every module and is the one exception.
3. Some server modules depend on others one way only (``ONE_WAY``): federation implements the
   narrow interfaces the AS, connection and KeyPackage services define, so those never import
   it; the operator changes the federation policy through federation's interface.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
ROOT_PACKAGE = "roost"
SERVER = f"{ROOT_PACKAGE}.server"

# Known violations in files owned by other branches (server/delivery/**, federation/ds_flows.py,
# federation/routes_ds.py, client/**), to be emptied by the lead once those branches are merged.
# Each entry is an import (importer, imported module); the cycle check leaves these edges out.
ALLOWED_TABLE_IMPORTS: frozenset[tuple[str, str]] = frozenset()
ALLOWED_CYCLE_EDGES: frozenset[tuple[str, str]] = frozenset()

# (server module, server module it must not import).
ONE_WAY: tuple[tuple[str, str], ...] = (
    ("auth", "federation"),
    ("connections", "federation"),
    ("keypackages", "federation"),
    ("queues", "federation"),
    ("auth", "operator"),
    ("queues", "operator"),
    ("federation", "operator"),
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / ROOT_PACKAGE).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement below ``node`` except those of ``if TYPE_CHECKING:`` bodies."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.orelse:
                yield from _runtime_imports(ast.Module(body=[stmt], type_ignores=[]))
        else:
            yield from _runtime_imports(child)


def _imported(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ``src/roost`` that ``module`` imports (relative imports resolved; for
    ``from package import name`` the submodule when ``name`` is one, else the package)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            # "from package import name": the submodule if name is one, else the package.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        for target in targets:
            # The longest prefix that is a module of ours ("a.b.name" -> "a.b" for a class).
            while target and target not in known:
                target = target.rpartition(".")[0]
            # A module's own packages are initialised before it runs: no edge to them.
            if target and not (module == target or module.startswith(target + ".")):
                out.add(target)
    return out


def import_graph() -> dict[str, set[str]]:
    known = _modules()
    return {m: _imported(m, p, known) for m, p in known.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """One cycle per strongly connected component with more than one module (Tarjan), each
    rotated to start at its smallest module so the report is stable."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_one_cycle(graph, c) for c in components]


def _one_cycle(graph: dict[str, set[str]], component: set[str]) -> tuple[str, ...]:
    """A shortest cycle through the smallest module of a strongly connected component."""
    start = min(component)
    paths: dict[str, tuple[str, ...]] = {start: (start,)}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    return paths[v]
                if w not in paths:
                    paths[w] = paths[v] + (w,)
                    following.append(w)
        frontier = following
    raise AssertionError(f"no cycle through {start}")


def _server_module(module: str) -> str | None:
    """``roost.server.auth.routes`` -> ``auth``; None outside a server module's package."""
    parts = module.split(".")
    if module.startswith(SERVER + ".") and len(parts) >= 4:
        return parts[2]
    # A module's package itself (``roost.server.auth``) belongs to that module too.
    if (
        module.startswith(SERVER + ".")
        and len(parts) == 3
        and _modules()[module].name == ("__init__.py")
    ):
        return parts[2]
    return None


def foreign_table_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    out = []
    for importer, imported in sorted((m, t) for m, targets in graph.items() for t in targets):
        owner = _server_module(imported)
        if owner is None or not imported.endswith(".tables") or owner == "store":
            continue
        if _server_module(importer) not in (owner, "store"):
            out.append((importer, imported))
    return out


def test_the_graph_sees_the_modules_and_their_imports() -> None:
    # Guards the test itself: a resolver bug would otherwise make both checks pass vacuously.
    graph = import_graph()
    assert f"{SERVER}.app" in graph
    assert f"{SERVER}.auth.service" in graph[f"{SERVER}.app"]  # relative, two names
    assert f"{SERVER}.store.metadata" in graph[f"{SERVER}.auth.tables"]  # "..store.metadata"
    assert f"{SERVER}.auth.ids" in graph[f"{SERVER}.auth.service"]  # "from . import ids"
    assert f"{SERVER}.auth.tables" in graph[f"{SERVER}.store.tables"]


def _without_allowed_edges(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    return {m: {t for t in ts if (m, t) not in ALLOWED_CYCLE_EDGES} for m, ts in graph.items()}


def test_no_import_cycle_in_src() -> None:
    cycles = find_cycles(_without_allowed_edges(import_graph()))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c + (c[0],)) for c in cycles)


def test_no_module_imports_another_modules_tables() -> None:
    edges = [e for e in foreign_table_imports(import_graph()) if e not in ALLOWED_TABLE_IMPORTS]
    assert not edges, "imports of another module's tables:\n" + "\n".join(
        f"{a} imports {b}" for a, b in edges
    )


def test_one_way_dependencies_between_server_modules() -> None:
    wrong = [
        f"{importer} imports {imported}"
        for importer, targets in sorted(import_graph().items())
        for imported in sorted(targets)
        if (_server_module(importer), _server_module(imported)) in ONE_WAY
    ]
    assert not wrong, "dependencies against the one-way rules:\n" + "\n".join(wrong)


def test_the_allow_lists_hold_only_current_violations() -> None:
    # An entry that no longer happens must go, so the lists only ever shrink.
    graph = import_graph()
    assert set(foreign_table_imports(graph)) >= ALLOWED_TABLE_IMPORTS
    assert all(t in graph.get(m, set()) for m, t in ALLOWED_CYCLE_EDGES)
