"""`trainer pipeline`: one TOML spec per paper table; every grid cell is one `trainer run`.

Spec::

    name = "table1"                    # tag of every row, and the table layout
    out = "results/table1"             # store / manifests / out may also come from the command line
    [defaults]                         # any setting of the cells' methods (flat names)
    model = "sensevoice-small"
    seeds = [0, 1, 2]
    [[grid]]                           # a cartesian product; several [[grid]] blocks are united
    method = ["baseline", "b-grpo"]
    dataset = ["iemocap", "casia"]

String values may name environment variables (``$VAR`` or ``${VAR}``), so one spec can point at several
stores a script builds (pipelines/ssl_study.toml); an unset variable is an error naming it.

A spec is input from someone else (docs/STORE.md, threat model): it is read as a regular file of at most
``InputLimits.spec_bytes``; every value is type-checked against its TrainConfig field (an error names the key, its
table and line); the grid's size is counted before any cell is built and refused above
``InputLimits.grid_cells``; ``name`` becomes a folder name only through :func:`emocache.paths.safe_name`; and the
folders a spec writes to (``out``, ``save_teacher``) are relative paths without ``..`` or start with an
environment variable (command-line ``--out`` / ``--set`` values are the user's own and taken as given).

Cells run in order, or as dask tasks (``--scheduler local:N`` starts a LocalCluster with N one-thread
worker processes; any other value is a scheduler address). Each task returns its result rows.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import tomllib
from pathlib import Path, PurePosixPath

import pandas as pd

from emocache.inputs import LIMITS, InputError, json_depth, read_bounded
from emocache.paths import UnsafeNameError, check_name, safe_name
from trainer.config import TrainConfig, flat_fields
from trainer.devices import resolve

FIELDS = flat_fields()
"""Every setting a cell can name by its flat name: the shared ones and every method's options; a cell whose
method lacks a setting it is given is an error naming both (TrainConfig)."""
TOP_KEYS = ("name", "out", "store", "manifests", "defaults", "grid")
"""Keys a spec may have at its top level."""
WRITTEN = ("out", "save_teacher")
"""TrainConfig fields naming folders a run writes into: confined when a spec file gives them."""
ENTRY_NAMES = ("model", "dataset", "teacher", "unlabeled_from")
"""Fields naming store entries (and parts of run folder names): the store's name rule."""
SCALARS = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}


class SpecError(ValueError):
    """A pipeline spec that cannot be run; the one-line message names the file, the key and the fix."""


def _line(text: str, table: str, key: str, index: int = 0) -> int | None:
    """1-based line of ``key = ...`` inside the ``index``-th ``[table]`` / ``[[table]]`` (top level: table ''),
    None if not found."""
    current, seen = "", {"": 0}
    for i, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        head = re.fullmatch(r"\[\[?\s*([\w.-]+)\s*\]\]?", line)
        if head:
            current = head.group(1)
            seen[current] = seen.get(current, -1) + 1
        elif current == table and seen[current] == index and re.match(rf"{re.escape(key)}\s*=", line):
            return i
    return None


def _where(spec: dict, table: str, key: str, index: int = 0) -> str:
    """'FILE:LINE [table] key' for error messages."""
    path, text = spec.get("_path", "spec"), spec.get("_text", "")
    n = _line(text, table, key, index) if text else None
    return f"{path}{f':{n}' if n else ''}: {f'[{table}] ' if table else ''}{key}"


def _expand(name: str, value):
    """``$VAR`` / ``${VAR}`` in a string value from the environment; an unset one is an error."""
    if not isinstance(value, str) or "$" not in value:
        return value
    done = os.path.expandvars(value)
    left = re.search(r"\$\{?(\w+)", done)
    if left:
        raise ValueError(f"{name}={value!r}: environment variable {left.group(1)} is not set; export it or use --set")
    return done


def _coerce(name: str, value, where: str = ""):
    """``value`` as TrainConfig field ``name``'s type: TOML values must have it already (an int for a float is
    fine), strings (``--set``, environment variables) are converted; else SpecError naming ``where``."""
    at = where or name
    if name not in FIELDS:
        raise SpecError(f"{at}: unknown config field {name!r}; known: {', '.join(FIELDS)}")
    value = _expand(name, value)
    if name == "seeds":
        items = value if isinstance(value, (list, tuple)) else [value] if isinstance(value, int) else \
            str(value).split(",")
        try:
            seeds = tuple(int(s) if isinstance(s, str) else s for s in items)
        except ValueError:
            seeds = None
        if seeds is None or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise SpecError(f"{at} = {str(value)[:80]}: expected a list of integer seeds, e.g. [0, 1, 2]")
        return seeds
    kind = FIELDS[name].type
    if isinstance(value, str) and kind in ("int", "float", "bool"):
        try:
            return {"int": int, "float": float, "bool": lambda v: v.lower() in ("1", "true", "yes")}[kind](value)
        except ValueError:
            raise SpecError(f"{at} = {value!r}: expected {kind}") from None
    if not isinstance(value, SCALARS[kind]) or (kind != "bool" and isinstance(value, bool)):
        raise SpecError(f"{at} = {str(value)[:80]}: expected {kind}, got {type(value).__name__}")
    if kind == "float":
        if not (math.isfinite(value) if isinstance(value, float) else abs(value) < 1e308):
            raise SpecError(f"{at} = {value}: expected a finite number")
        return float(value)
    return value


def _confined_path(value, where: str) -> None:
    """A folder a spec file writes into: relative without ``..``, or starting with an environment variable."""
    if not isinstance(value, str) or value.startswith("$"):
        return
    p = PurePosixPath(value)
    if p.is_absolute() or ".." in p.parts:
        raise SpecError(f"{where} = {value!r}: a spec writes only below the working folder (a relative path "
                        "without '..', or one starting with an environment variable); pass --out for another place")


def _check_table(spec: dict, table: str, values: dict, index: int = 0) -> None:
    """Every value of a [defaults] / [[grid]] table: a known field of its type (lists in a grid: of that type)."""
    for key, value in values.items():
        where = _where(spec, table, key, index)
        options = value if table == "grid" and isinstance(value, list) else [value]
        if not options:
            raise SpecError(f"{where} = []: an empty list makes no cell; give at least one value")
        for raw in options:
            if key in WRITTEN:
                _confined_path(raw, where)
            v = _coerce(key, raw, where)
            if key in ENTRY_NAMES and v and not v.startswith("$"):
                try:
                    check_name(v, key)
                except UnsafeNameError as e:
                    raise SpecError(f"{where}: {e}") from None


def grid_size(spec: dict) -> int:
    """Number of cells the spec's grids make before duplicates are merged (computed, nothing enumerated)."""
    return sum(math.prod(len(v) if isinstance(v, list) else 1 for v in grid.values()) for grid in spec["grid"])


def load_spec(path: str | Path, store: str = "", manifests: str = "", out: str = "",
              overrides: list[str] | None = None) -> dict:
    """Read and check a spec (see the module docstring); command-line store/manifests/out and ``field=value``
    overrides win over the file. A SpecError names the file, the key (with its table and line) and the fix."""
    path = Path(path)
    try:
        text = read_bounded(path, LIMITS.spec_bytes, "spec").decode("utf-8")
        spec = tomllib.loads(text)
    except InputError as e:
        raise SpecError(str(e)) from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not UTF-8 text; a spec is a TOML file") from None
    except RecursionError:
        raise SpecError(f"{path}: nested too deeply to parse; a damaged or hostile spec") from None
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path}: not valid TOML ({e})") from None
    depth = json_depth(spec)
    if depth > LIMITS.json_depth:
        raise SpecError(f"{path}: nested {depth} levels deep, over the limit of {LIMITS.json_depth}")
    spec["_path"], spec["_text"] = str(path), text
    unknown = [k for k in spec if k not in TOP_KEYS and not k.startswith("_")]
    if unknown:
        raise SpecError(f"{_where(spec, '', unknown[0])}: unknown key; a spec has {', '.join(TOP_KEYS)}")
    for key in ("name", "out", "store", "manifests"):
        if key in spec and not isinstance(spec[key], str):
            raise SpecError(f"{_where(spec, '', key)} = {str(spec[key])[:80]}: expected a string")
    if "out" in spec:
        _confined_path(spec["out"], _where(spec, "", "out"))
    if not isinstance(spec.get("defaults", {}), dict):
        raise SpecError(f"{_where(spec, '', 'defaults')}: expected a [defaults] table of config fields")
    grids = spec.get("grid", [])
    if isinstance(grids, dict):
        grids = [grids]
    if not isinstance(grids, list) or not all(isinstance(g, dict) for g in grids):
        raise SpecError(f"{_where(spec, '', 'grid')} = {str(spec.get('grid'))[:60]}: expected [[grid]] tables "
                        "(field = value or field = [values, ...])")
    if not grids:
        raise SpecError(f"{path}: no [[grid]] block")
    spec.setdefault("name", path.stem)
    spec["store"] = store or spec.get("store", "")
    spec["manifests"] = manifests or spec.get("manifests", "")
    spec["out"] = out or spec.get("out", f"results/{safe_name(spec['name'], 'spec')}")
    bad = [o for o in overrides or [] if "=" not in o]
    if bad:
        raise SpecError(f"--set {bad[0]!r}: use field=value, e.g. --set epochs_baseline=5")
    spec["overrides"] = dict(o.split("=", 1) for o in overrides or [])
    spec["grid"] = grids
    _check_table(spec, "defaults", spec.get("defaults", {}))
    for i, g in enumerate(grids):
        _check_table(spec, "grid", g, i)
    n = grid_size(spec)
    if n > LIMITS.grid_cells:
        raise SpecError(f"{path}: its grid makes {n} cells, over the limit of {LIMITS.grid_cells}; split the spec "
                        "or shrink the grid")
    return spec


def cells(spec: dict) -> list[TrainConfig]:
    """Every distinct configuration of the spec's grids (their number is checked by :func:`load_spec`)."""
    n = grid_size(spec)
    if n > LIMITS.grid_cells:
        raise SpecError(f"{spec.get('_path', 'spec')}: its grid makes {n} cells, over the limit of {LIMITS.grid_cells}")
    base = {k: _coerce(k, v) for k, v in spec.get("defaults", {}).items()}
    base.update(store=_expand("store", spec["store"]), manifests=_expand("manifests", spec["manifests"]),
                out=_expand("out", spec["out"]), experiment=spec["name"], progress=False)
    over = {k: _coerce(k, v, f"--set {k}") for k, v in spec["overrides"].items()}
    out, seen = [], set()
    for grid in spec["grid"]:
        names = list(grid)
        for combo in itertools.product(*(grid[n] if isinstance(grid[n], list) else [grid[n]] for n in names)):
            kw = {**base, **{n: _coerce(n, v) for n, v in zip(names, combo)}, **over}
            cfg = TrainConfig(**kw)
            if cfg not in seen:
                seen.add(cfg)
                out.append(cfg)
    return out


def run_cell(cfg: TrainConfig) -> list[dict]:
    """One grid cell: train, write its folder, return its rows."""
    from trainer import experiment

    res = experiment.run(cfg)
    experiment.write(res)
    return res.rows


def run_pipeline(spec: dict, scheduler: str = "", echo=print) -> tuple[str, Path]:
    """Run all cells (sequentially or on dask), write <out>/results.csv and table.md; return the table."""
    from trainer.tables import RENDER, load_results, render

    n = grid_size(spec)
    echo(f"{spec['name']}: {n} cells")
    todo = cells(spec)
    if len(todo) < n:
        echo(f"  ({len(todo)} distinct)")
    if not scheduler or scheduler.startswith("local"):  # a device torch does not see here stops the grid at once
        for device in sorted({c.device for c in todo}):
            resolve(device, "device")
    rows: list[dict] = []
    if scheduler:
        from dask.distributed import as_completed

        from emocache.runtime import client_for

        with client_for(scheduler, gpus=False) as client:
            one = {"threads": 1} if "threads" not in spec["overrides"] else {}
            futures = [client.submit(run_cell, c.replace(**one), pure=False) for c in todo]
            for i, f in enumerate(as_completed(futures), 1):
                rows += f.result()
                echo(f"  {i}/{len(todo)} cells done")
    else:
        for i, c in enumerate(todo, 1):
            rows += run_cell(c)
            echo(f"  {i}/{len(todo)} {c.run_name}")
    out = Path(_expand("out", spec["out"]))
    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "results.csv", index=False)
    layout = spec["name"] if spec["name"] in RENDER else "generic"
    text = render(load_results([out / "results.csv"]), layout)
    (out / "table.md").write_text(text + "\n")
    return text, out
