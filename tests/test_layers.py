"""The import graph of changeling has no cycles, and its layers point one way.

Every import counts, at module level or inside a function (a lazy import is still a dependency), including
those under ``TYPE_CHECKING``. ``from package import name`` depends on the module ``package.name`` when there is
one, else on the package.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import changeling

ROOT = Path(changeling.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            subs = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES]
            yield from subs
            if len(subs) < len(node.names):
                yield base


def _graph() -> dict[str, set[str]]:
    return {name: {t for t in _imports(name, path) if t in MODULES and t != name} for name, path in MODULES.items()}


GRAPH = _graph()


def _unit(module: str) -> str:
    """``changeling.x`` for any module of subpackage (or top-level module) ``x``."""
    return ".".join(module.split(".")[:2])


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

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
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _explain(graph: dict[str, set[str]], members: list[str], edges: dict[tuple[str, str], list[str]]) -> str:
    inside = set(members)
    lines = [f"{a} -> {b}" + (f" ({', '.join(edges[(a, b)][:3])})" if edges else "")
             for a in members for b in sorted(graph[a] & inside)]
    return "; ".join(lines)


def test_no_module_imports_form_a_cycle() -> None:
    cycles = _cycles(GRAPH)
    assert not cycles, "import cycles between modules: " + " | ".join(_explain(GRAPH, c, {}) for c in cycles)


def test_no_subpackages_import_each_other() -> None:
    units: dict[str, set[str]] = {}
    edges: dict[tuple[str, str], list[str]] = {}
    for a, targets in GRAPH.items():
        for b in targets:
            ua, ub = _unit(a), _unit(b)
            if ua != ub and ua != "changeling" and ub != "changeling":
                units.setdefault(ua, set()).add(ub)
                edges.setdefault((ua, ub), []).append(f"{a} imports {b}")
    cycles = _cycles(units)
    assert not cycles, "subpackages that import each other: " + " | ".join(
        _explain(units, c, edges) for c in cycles)


def test_the_library_never_imports_the_command_line() -> None:
    offenders = sorted(f"{a} imports {b}" for a, targets in GRAPH.items() for b in targets
                       if _unit(b) == "changeling.cli" and _unit(a) != "changeling.cli" and a != "changeling.__main__")
    assert not offenders


def test_inference_does_not_reach_into_training() -> None:
    """Convert, the models and the web UI read trained models through :mod:`changeling.models` (``load``,
    ``checkpoint``); the trainer's own modules (its checkpoint writer, its loop) are not theirs to import. (The
    UI starts training as a job, a separate process.)"""
    offenders = sorted(f"{a} imports {b}" for a, targets in GRAPH.items() for b in targets
                       if _unit(a) in ("changeling.convert", "changeling.models", "changeling.detect", "changeling.ui")
                       and _unit(b) == "changeling.train")
    assert not offenders


def test_the_graph_sees_lazy_and_relative_imports() -> None:
    """The checks above would pass on an empty graph: make sure a function-level import and a package-level
    re-export are edges."""
    assert "changeling.models.load" in GRAPH["changeling.convert.sources"]  # imported inside load_model
    assert "changeling.detect.registry" in GRAPH["changeling.detect"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
