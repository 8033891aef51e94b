"""The import graph of emocache and trainer, read with the standard ``ast`` module (imports at module level and
inside functions alike): no loops, and every import follows the layers documented in docs/ARCHITECTURE.md."""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("emocache", "trainer")
DOC = ROOT / "docs" / "ARCHITECTURE.md"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _resolve(name: str) -> str | None:
    """The project module ``name`` names (or the nearest package holding it); None outside the project."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> set[str]:
    """Project modules ``module`` imports anywhere in its source (``from X import Y`` counts X.Y when Y is a
    module, else X)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(_resolve(a.name) for a in node.names if a.name.split(".")[0] in PACKAGES)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            if base.split(".")[0] in PACKAGES:
                out.update(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else _resolve(base)
                           for a in node.names)
    return out - {None, module}


GRAPH = {m: imports(m) for m in MODULES}


def layers() -> tuple[list[list[str]], list[tuple[str, str]]]:
    """The ```layers block of docs/ARCHITECTURE.md: the layers, lowest first, as module patterns ('X.*' is X and
    every module under it; an indented line continues the layer above), and the 'never: A -> B' rules."""
    block = re.search(r"```layers\n(.*?)```", DOC.read_text(), re.S)
    assert block, f"{DOC} has no ```layers block"
    rows, never = [], []
    for raw in block.group(1).splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("never:"):
            a, b = line.removeprefix("never:").split("->")
            never.append((a.strip(), b.strip()))
        elif line and raw[0].isspace() and rows:  # an indented line continues the layer above
            rows[-1] += line.split()
        elif line:
            rows.append(line.split())
    return rows, never


def matches(module: str, pattern: str) -> bool:
    return module == pattern.removesuffix(".*") or (pattern.endswith(".*") and
                                                    fnmatch.fnmatchcase(module, pattern))


def layer_of(module: str, rows: list[list[str]]) -> int | None:
    """The layer naming ``module`` exactly, else the one whose pattern covers it."""
    exact = [i for i, row in enumerate(rows) if module in row]
    if exact:
        return exact[0]
    covered = [i for i, row in enumerate(rows) for p in row if p.endswith(".*") and matches(module, p)]
    return covered[0] if covered else None


def cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read():
    assert GRAPH["trainer.experiment"] >= {"trainer.config", "trainer.prepare", "trainer.results"}
    assert "trainer.frames" in GRAPH["trainer.algorithms.common"]  # once a function-level import, counted either way
    assert "emocache.store" in GRAPH["trainer.frames"]


def test_no_import_loops():
    found = cycles()
    assert not found, "import loops: " + "; ".join(" <-> ".join(c) for c in found)


def test_every_module_has_a_documented_layer():
    rows, _ = layers()
    missing = sorted(m for m in MODULES if layer_of(m, rows) is None)
    assert not missing, f"modules without a layer in {DOC.name}'s layers block: {missing}"


def test_imports_follow_the_layers():
    rows, _ = layers()
    bad = [f"{a} -> {b}" for a in sorted(GRAPH) for b in sorted(GRAPH[a])
           if None not in (layer_of(a, rows), layer_of(b, rows)) and layer_of(b, rows) > layer_of(a, rows)]
    assert not bad, "imports of a higher layer: " + ", ".join(bad)


def test_never_rules_hold_transitively():
    _, never = layers()
    assert never, "the layers block states its never rules"
    bad = []
    for src, dst in never:
        reached, todo = set(), [m for m in GRAPH if matches(m, src)]
        while todo:
            for b in GRAPH[todo.pop()] - reached:
                reached.add(b)
                todo.append(b)
        sources = {m for m in GRAPH if matches(m, src)} | reached
        bad += [f"{src} reaches {dst} through {a} -> {b}" for a in sorted(sources) for b in sorted(GRAPH[a])
                if matches(b, dst) and not matches(a, dst)]
    assert not bad, "never rules broken: " + ", ".join(bad)


def test_architecture_lists_every_module():
    text = DOC.read_text()
    missing = []
    for m in MODULES:
        leaf = m.rpartition(".")[2] if m not in PACKAGES else m
        if MODULES[m].name != "__init__.py" and not re.search(rf"\b{re.escape(leaf)}\.py\b", text):
            missing.append(m)
    assert not missing, f"{DOC.name} does not list {missing}"
