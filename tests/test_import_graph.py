"""The shape of the code, checked statically: no import circles inside a
package, and no function too long to read in one screen or two.

An import circle (a imports b, b imports a, maybe through others) makes the
import order matter and hides which module is the foundation. Every import
counts, also one inside a function or under TYPE_CHECKING: each says that
one module needs the other.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MAX_FUNCTION_LINES = 100


def _modules(package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under the package folder."""
    root = REPO / package
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(module: str, path: Path, level: int, target: str | None) -> str:
    """The absolute name of a (possibly relative) import in module."""
    if level == 0:
        return target or ""
    base = module.split(".")
    if path.name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def import_graph(package: str) -> dict[str, set[str]]:
    """module -> the modules of the same package it imports. `from P import x`
    is an import of P.x when that is a module, else of P."""
    mods = _modules(package)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, path, node.level, node.module)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            graph[mod].update(t for t in targets if t in mods and t != mod)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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


def test_the_scan_finds_a_circle_and_a_relative_import():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []
    graph = import_graph("hear_abt")
    assert "hear_abt.pooling" in graph["hear_abt.model"]  # from .pooling import window_bounds
    assert "hear_abt.train.state" in graph["hear_abt.train.loop"]


@pytest.mark.parametrize("package", ["hear_abt", "eval", "tools"])
def test_no_import_circles(package):
    found = circles(import_graph(package))
    assert not found, "modules that import each other (directly or through others): " + "; ".join(
        " <-> ".join(c) for c in found)


def _long_functions(package: str, limit: int) -> list[str]:
    out = []
    for path in _modules(package).values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    out.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {n} lines")
    return out


@pytest.mark.parametrize("package", ["hear_abt"])
def test_no_function_is_longer_than_100_lines(package):
    assert _long_functions(package, MAX_FUNCTION_LINES) == []
    assert _long_functions(package, 20), "the scan found no function at all"


def test_minihear_never_imports_the_corpus_builders():
    """eval/corpus builds on eval/minihear's sources, never the reverse."""
    graph = import_graph("eval")
    assert any(m.startswith("eval.minihear") for m in graph["eval.corpus.synthetic"])
    wrong = {m: sorted(t for t in targets if t.startswith("eval.corpus"))
             for m, targets in graph.items() if m.startswith("eval.minihear")}
    assert not any(wrong.values()), {m: t for m, t in wrong.items() if t}


def test_eval_and_tools_modules_are_imported_by_their_full_names_only():
    """`import run` beside `from eval.driver import run` would load one file as
    two modules (two copies of its globals); only dotted names from the root."""
    inner = {name.rsplit(".", 1)[-1] for pkg in ("eval", "tools") for name, path in _modules(pkg).items()
             if path.name != "__init__.py" and "results" not in path.parts}
    assert {"run", "scores", "leaderboard", "gpu_check"} <= inner
    files = [*(REPO / "tests").glob("*.py"), *(p for pkg in ("eval", "tools") for p in _modules(pkg).values())]
    bare = []
    for path in sorted(files):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and not node.level else []
            bare += [f"{path.relative_to(REPO)}:{node.lineno}: {n}" for n in names if n.split(".")[0] in inner]
    assert not bare, "modules imported by a bare name:\n  " + "\n  ".join(bare)
