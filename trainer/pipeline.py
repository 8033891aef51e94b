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

Cells run in order, or as dask tasks (``--scheduler local:N`` starts a LocalCluster with N one-thread
worker processes; any other value is a scheduler address). Each task returns its result rows.
"""

from __future__ import annotations

import itertools
import os
import re
import tomllib
from pathlib import Path

import pandas as pd

from trainer.config import TrainConfig, flat_fields

FIELDS = flat_fields()
"""Every setting a cell can name by its flat name: the shared ones and every method's options; a cell whose
method lacks a setting it is given is an error naming both (TrainConfig)."""


def _expand(name: str, value):
    """``$VAR`` / ``${VAR}`` in a string value from the environment; an unset one is an error."""
    if not isinstance(value, str) or "$" not in value:
        return value
    done = os.path.expandvars(value)
    left = re.search(r"\$\{?(\w+)", done)
    if left:
        raise ValueError(f"{name}={value!r}: environment variable {left.group(1)} is not set; export it or use --set")
    return done


def _coerce(name: str, value):
    if name not in FIELDS:
        raise ValueError(f"unknown config field {name!r}; known: {', '.join(FIELDS)}")
    value = _expand(name, value)
    if name == "seeds":
        return tuple(int(s) for s in (value if isinstance(value, (list, tuple)) else str(value).split(",")))
    kind = FIELDS[name].type
    if isinstance(value, str) and kind in ("int", "float", "bool"):
        try:
            return {"int": int, "float": float, "bool": lambda v: v.lower() in ("1", "true", "yes")}[kind](value)
        except ValueError:
            raise ValueError(f"{name}={value!r}: expected {kind}") from None
    return value


def load_spec(path: str | Path, store: str = "", manifests: str = "", out: str = "",
              overrides: list[str] | None = None) -> dict:
    """Read a spec; command-line store/manifests/out and ``field=value`` overrides win over the file."""
    path = Path(path)
    spec = tomllib.loads(path.read_text())
    spec.setdefault("name", path.stem)
    spec["store"] = store or spec.get("store", "")
    spec["manifests"] = manifests or spec.get("manifests", "")
    spec["out"] = out or spec.get("out", f"results/{spec['name']}")
    bad = [o for o in overrides or [] if "=" not in o]
    if bad:
        raise ValueError(f"--set {bad[0]!r}: use field=value, e.g. --set epochs_baseline=5")
    spec["overrides"] = dict(o.split("=", 1) for o in overrides or [])
    grids = spec.get("grid", [])
    if isinstance(grids, dict):
        grids = [grids]
    if not grids:
        raise ValueError(f"{path}: no [[grid]] block")
    spec["grid"] = grids
    return spec


def cells(spec: dict) -> list[TrainConfig]:
    """Every distinct configuration of the spec's grids."""
    base = {k: _coerce(k, v) for k, v in spec.get("defaults", {}).items()}
    base.update(store=_expand("store", spec["store"]), manifests=_expand("manifests", spec["manifests"]),
                out=_expand("out", spec["out"]), experiment=spec["name"], progress=False)
    over = {k: _coerce(k, v) for k, v in spec["overrides"].items()}
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

    todo = cells(spec)
    echo(f"{spec['name']}: {len(todo)} cells")
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
