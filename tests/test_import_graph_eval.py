"""No import circles in eval/ and tools/, and eval.minihear never imports
eval.corpus. A static scan of every import statement (those inside functions
too: a lazy import that closes a circle only hides it), resolved to the
project's module files."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("eval", "tools")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement may load (before resolution)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:  # relative: from the module's package
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    return [base, *(f"{base}.{a.name}" for a in node.names)]


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """module -> the project modules its import statements load."""
    files = {module_name(p, root): p for pkg in packages for p in (root / pkg).rglob("*.py")
             if "results" not in p.relative_to(root).parts}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            for target in _imported(node, name, path.name == "__init__.py"):
                if target in files and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle (a -> ... -> a) per strongly connected group of modules (Tarjan)."""
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
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(_circle(graph, min(group), group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _circle(graph: dict[str, set[str]], start: str, group: set[str]) -> list[str]:
    """A shortest path start -> ... -> start inside the group."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & group):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError("not a cycle")


def test_the_scan_finds_a_circle_through_a_lazy_relative_import(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import X\n")
    (pkg / "b.py").write_text("X = 1\ndef f():\n    from . import c\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    (pkg / "d.py").write_text("from pkg import a, b\n")
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.d"] == {"pkg", "pkg.a", "pkg.b"}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]


def test_no_module_in_eval_or_tools_imports_one_that_imports_it_back():
    graph = import_graph(ROOT, PACKAGES)
    assert {"eval.driver.run", "eval.corpus.synthetic", "tools.gpu_check"} <= set(graph)
    found = cycles(graph)
    assert not found, "import circles:\n  " + "\n  ".join(" -> ".join(c) for c in found)


def test_minihear_never_imports_the_corpus_builders():
    graph = import_graph(ROOT, PACKAGES)
    assert "eval.minihear" in graph["eval.corpus.synthetic"] or any(
        m.startswith("eval.minihear.") for m in graph["eval.corpus.synthetic"])
    wrong = {m: sorted(t for t in targets if t.startswith("eval.corpus"))
             for m, targets in graph.items() if m.startswith("eval.minihear")}
    assert not any(wrong.values()), {m: t for m, t in wrong.items() if t}


def test_eval_and_tools_modules_are_imported_by_their_full_names_only():
    """`import run` beside `from eval.driver import run` would load one file as
    two modules (two copies of its globals); only dotted names from the root."""
    inner = {module_name(p, ROOT).rsplit(".", 1)[-1] for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
             if p.name != "__init__.py" and "results" not in p.parts}
    assert {"run", "scores", "leaderboard", "gpu_check"} <= inner
    bare = []
    for path in sorted([*(ROOT / "tests").glob("*.py"), *(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and not node.level else []
            bare += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names if n.split(".")[0] in inner]
    assert not bare, "imported by a bare name:\n  " + "\n  ".join(bare)
