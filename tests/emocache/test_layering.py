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


def test_settings_are_the_lowest_layer():
    """config.py imports no emocache module, so encoders (which import it) never reach the store."""
    assert not {m for m in imports(PACKAGE / "config.py") if m.startswith("emocache")}


def function_imports(path: Path) -> set[str]:
    """emocache modules a file imports inside a function."""
    out = set()
    for fn in ast.walk(ast.parse(path.read_text())):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("emocache"):
                    out.add(node.module)
                elif isinstance(node, ast.Import):
                    out |= {a.name for a in node.names if a.name.startswith("emocache")}
    return out


def test_store_layer_imports_its_own_modules_at_the_top():
    """No import inside a function hides a loop in the store and the modules around it (lazy imports are kept for
    heavy third-party libraries only)."""
    files = [*sorted((PACKAGE / "store").glob("*.py")), *(PACKAGE / f for f in ("config.py", "verify.py", "share.py"))]
    assert {str(p.relative_to(PACKAGE)): function_imports(p) for p in files if function_imports(p)} == {}
