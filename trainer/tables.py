"""Paper-style tables (the B-GRPO paper's Tables 1-5) from tidy result rows: macro-F1 %, mean +- std.

Each cell is the mean over folds per seed, then mean +- std over seeds; with a single seed the std is
over folds. The footer of every table says which.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

TEXT = ["experiment", "method", "stage", "model", "dataset", "reward", "teacher", "advantage", "labels",
        "unlabeled_from", "missing_train_classes", "missing_test_classes", "views"]
METHOD_NAMES = {"baseline": "Baseline", "dino": "DINO", "same-epochs": "Same epochs",
                "full-labeled": "Full labeled", "b-grpo": "B-GRPO"}
ADVANTAGE_NAMES = {"positive": "A_i > 0 (eq. 6)", "signed": "w/o A_i > 0", "none": "w/o A_i"}


def load_results(paths) -> pd.DataFrame:
    """Concatenate results.csv files (folders are searched recursively)."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(p.rglob("results.csv"))
        elif p.exists():
            files.append(p)
        else:
            raise ValueError(f"{p}: no such file or folder")
    if not files:
        raise ValueError(f"no results.csv under {', '.join(map(str, paths))}")
    frames = []
    for f in files:
        d = pd.read_csv(f, keep_default_na=False, na_values={"macro_f1": [""]})
        if not {"stage", "dataset", "seed", "macro_f1"} <= set(d.columns):
            raise ValueError(f"{f}: not a results.csv of `trainer run` (needs stage, dataset, seed, macro_f1 columns)")
        frames.append(d)
    df = pd.concat(frames, ignore_index=True)
    for c in TEXT:
        if c in df:
            df[c] = df[c].astype(str)
    return df.drop_duplicates(subset=[c for c in df.columns if c != "seconds"])


def cell(g: pd.DataFrame, metric: str = "macro_f1") -> str:
    """'mean ± std' in %: fold-mean per seed, then over seeds (over folds when there is one seed)."""
    if g.empty:
        return "-"
    per_seed = g.groupby("seed")[metric].mean() * 100
    vals = per_seed if len(per_seed) > 1 else g[metric] * 100
    std = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
    return f"{vals.mean():.1f} ± {std:.1f}"


def _md(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _grid(df: pd.DataFrame, row_specs: list[tuple[str, pd.Series]], datasets: list[str]) -> list[list[str]]:
    return [[name] + [cell(df[mask & (df.dataset == d)]) for d in datasets] for name, mask in row_specs]


def _default_bgrpo(df: pd.DataFrame) -> pd.Series:
    return (df.method == "b-grpo") & (df.reward == "r1") & (df.advantage == "positive") & (df.unlabeled_from == "")


def table1(df, datasets):
    half = df.labeled_fraction.astype(float) < 1
    specs = []
    for m, name in METHOD_NAMES.items():
        mask = df.method == m
        if m == "b-grpo":
            mask = _default_bgrpo(df)
        if m in ("baseline", "same-epochs", "dino", "b-grpo"):
            mask &= half
        if m == "dino":
            mask &= df.unlabeled_from == ""
        specs.append((name, mask))
    return "Table 1. B-GRPO against the baselines (macro-F1 %)", _md(["method"] + datasets, _grid(df, specs, datasets))


def table2(df, datasets):
    b = (df.method == "b-grpo") & (df.advantage == "positive") & (df.unlabeled_from == "")
    rows = []
    for model in sorted(df[b & (df.teacher == "")].model.unique()):
        rows.append([f"**self-reward {model}**"] + [""] * len(datasets))
        for r in ("r1", "r2"):
            rows += _grid(df, [(r, b & (df.teacher == "") & (df.model == model) & (df.reward == r))], datasets)
    for t in sorted(df[b & (df.teacher != "")].teacher.unique()):
        rows.append([f"**teacher-reward {t}**"] + [""] * len(datasets))
        for r in ("r3", "r4", "r5"):
            m = b & (df.teacher == t) & (df.reward == r)
            if m.any():
                rows += _grid(df, [(r, m)], datasets)
    return "Table 2. Reward functions (macro-F1 %)", _md(["reward"] + datasets, rows)


def table3(df, datasets):
    b = (df.method == "b-grpo") & (df.reward == "r1") & (df.teacher == "") & (df.unlabeled_from == "")
    specs = [(name, b & (df.advantage == a)) for a, name in ADVANTAGE_NAMES.items()]
    return "Table 3. Advantage function (macro-F1 %)", _md(["advantage"] + datasets, _grid(df, specs, datasets))


def table4(df, datasets):
    full = df.labeled_fraction.astype(float) >= 1
    specs = []
    for model in df[full].model.unique():
        specs.append((model, full & (df.model == model) & (df.method == "baseline")))
        specs.append(("w B-GRPO", full & (df.model == model) & _default_bgrpo(df)))
    return ("Table 4. Policy models on different encoders, baseline on all labels (macro-F1 %)",
            _md(["policy features"] + datasets, _grid(df, specs, datasets)))


def table5(df, datasets):
    b = (df.method == "b-grpo") & (df.reward == "r1") & (df.advantage == "positive") & (df.teacher == "")
    rows = []
    for (ext, ds), _ in df[b & (df.unlabeled_from != "")].groupby(["unlabeled_from", "dataset"], sort=False):
        same_b = b & (df.dataset == ds) & (df.unlabeled_from == "")
        frac = df[b & (df.dataset == ds) & (df.unlabeled_from == ext)].labeled_fraction.astype(float).iloc[0]
        base = (df.method == "baseline") & (df.dataset == ds) & (df.labeled_fraction.astype(float) == frac)
        rows.append([f"{ext} → {ds}", cell(df[base]), cell(df[same_b]),
                     cell(df[b & (df.dataset == ds) & (df.unlabeled_from == ext)])])
    return ("Table 5. B-GRPO data: external corpus → evaluated corpus (macro-F1 %)",
            _md(["data", "Baseline", "Same corpus", "External corpus"], rows))


def generic(df, datasets):
    keys = ["method", "model", "reward", "teacher", "advantage", "unlabeled_from", "labeled_fraction", "labels"]
    specs = []
    for combo, g in df.groupby(keys, sort=False):
        d = dict(zip(keys, combo))
        name = " ".join([METHOD_NAMES.get(d["method"], d["method"]), d["model"]]
                        + [f"{k}={d[k]}" for k in keys[2:] if str(d[k]) not in ("", "nan")])
        specs.append((name, df.index.isin(g.index)))
    return "Results (macro-F1 %)", _md(["run"] + datasets, _grid(df, specs, datasets))


RENDER = {"table1": table1, "table2": table2, "table3": table3, "table4": table4, "table5": table5,
          "generic": generic}


def render(df: pd.DataFrame, layout: str = "auto", stage: str = "final") -> str:
    """Markdown for ``layout``; ``auto`` uses each experiment's own layout (table1..5) or generic."""
    if layout not in RENDER and layout != "auto":
        raise ValueError(f"unknown layout {layout!r}; known: auto, {', '.join(RENDER)}")
    df = df[df.stage == stage].reset_index(drop=True)
    if df.empty:
        raise ValueError(f"no rows of stage {stage!r}")
    parts = []
    groups = [(layout, df)] if layout != "auto" else [
        (e if e in RENDER else "generic", g.reset_index(drop=True)) for e, g in df.groupby("experiment", sort=False)]
    for lay, g in groups:
        datasets = list(dict.fromkeys(g.dataset))
        title, body = RENDER[lay](g, datasets)
        n_seeds, n_folds = g.seed.nunique(), g.fold.nunique()
        spread = "std over seeds of the fold mean" if n_seeds > 1 else "std over folds"
        parts.append(f"**{title}**\n\n{body}\n\n_{n_folds} fold(s) x {n_seeds} seed(s); mean ± {spread}._")
    return "\n\n".join(parts)


def summary(rows: list[dict]) -> str:
    """Macro-F1 / UA / WA % per stage and fold (mean over seeds) and the mean over folds."""
    df = pd.DataFrame(rows)
    lines = []
    for stage, g in df.groupby("stage", sort=False):
        per_fold = g.groupby("fold")[["macro_f1", "ua", "wa"]].mean() * 100
        for fold, r in per_fold.iterrows():
            lines.append(f"{stage} fold {fold}: macro-F1 {r.macro_f1:.1f}  UA {r.ua:.1f}  WA {r.wa:.1f}")
        m = per_fold.mean()
        lines.append(f"{stage} mean over {len(per_fold)} fold(s) x {g.seed.nunique()} seed(s): "
                     f"macro-F1 {m.macro_f1:.1f}  UA {m.ua:.1f}  WA {m.wa:.1f}")
    return "\n".join(lines)
