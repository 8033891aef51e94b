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


ENCODER_SIDE = sorted(PACKAGE.glob("encoders/*.py")) + [PACKAGE / f for f in ("runner.py", "bench.py", "extract.py",
                                                                              "distributed.py")]
ADAPTERS = {"compat_torch.py", "compat_numpy.py"}
"""The one module per library allowed to read its private attributes (each with a test that fails when they move)."""


def test_encoder_side_imports_its_own_modules_at_the_top():
    """No import of an emocache module inside a function: none hides an import loop any more (heavy third-party
    libraries, transformers and funasr, stay lazy)."""
    lazy = []
    for p in ENCODER_SIDE:
        for fn in ast.walk(ast.parse(p.read_text())):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for n in ast.walk(fn):
                    mods = [n.module or ""] if isinstance(n, ast.ImportFrom) else \
                        [a.name for a in n.names] if isinstance(n, ast.Import) else []
                    lazy += [f"{p.name}:{n.lineno} {m}" for m in mods if m.split(".")[0] == "emocache"]
    assert lazy == []
    import emocache.encoders.loading as loading

    assert not hasattr(loading, "__getattr__")  # the shim that closed the loading <-> neural loop is gone


def test_encoder_side_reads_no_private_attribute_outside_the_adapters():
    """`x._name` only on our own objects (self / cls); private modules (`torch._dynamo`) only in the adapters."""
    found = []
    for p in ENCODER_SIDE:
        if p.name in ADAPTERS:
            continue
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.Attribute) and n.attr.startswith("_") and not n.attr.startswith("__") and not (
                    isinstance(n.value, ast.Name) and n.value.id in ("self", "cls")):
                found.append(f"{p.name}:{n.lineno} {ast.unparse(n)}")
            mods = [n.module or ""] if isinstance(n, ast.ImportFrom) else \
                [a.name for a in n.names] if isinstance(n, ast.Import) else []
            found += [f"{p.name}:{n.lineno} import {m}" for m in mods
                      if any(s.startswith("_") and not s.startswith("__") for s in m.split("."))]
    assert found == []


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
