"""Dependencies point one way: emocache never imports the trainer; the dask engine never imports the serial one."""

from __future__ import annotations

import ast
from pathlib import Path

import emocache
import trainer

PACKAGE = Path(emocache.__file__).resolve().parent


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_tests_import_this_checkout():
    """Test folders are packages, so `emocache`/`trainer` are the checkout's packages, never the test folders."""
    root = Path(__file__).resolve().parents[2]
    assert PACKAGE == root / "emocache" and Path(trainer.__file__).resolve().parent == root / "trainer"


def test_emocache_never_imports_trainer():
    offenders = {str(p.relative_to(PACKAGE)): sorted(m for m in imports(p) if m.split(".")[0] == "trainer")
                 for p in PACKAGE.rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_engines_depend_one_way():
    assert "emocache.extract" not in imports(PACKAGE / "distributed.py")
    assert not {"emocache.extract", "emocache.distributed"} & imports(PACKAGE / "runner.py")
    for low in ("config.py", "runtime.py", "signals.py"):
        assert not {m for m in imports(PACKAGE / low) if m.startswith("emocache.") and m != "emocache.store"}, low
