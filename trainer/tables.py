"""Paper-style tables (the B-GRPO paper's Tables 1-5) from tidy result rows: macro-F1 %, mean +- std.

Each cell is the mean over folds per seed, then mean +- std over seeds; with a single seed the std is
over folds. The footer of every table says which, which epoch the numbers come from (last, best validation,
or the optimistic best test epoch of --oracle, which the title, the column names and every row also say), and
what the marks mean: collapsed, under-predicted and under-trained runs, the unlabelled term's reach, and with
--compare the paired difference to another method (fold level, Holm-corrected over the table; seed level
beside it, trainer.significance). The paper's layouts (Tables 1-5) show the paper's configurations in their
rows and any run with an option of ours in a row of its own marked "(ours: ...)".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from emocache.runtime import markdown_table
from trainer.algorithms.base import FLAT_FIELDS, LATER_SHARED
from trainer.significance import ALPHA, CORRECTION, FOLD_TEST, corrected, fold_paired, paired

TEXT = ["experiment", "method", "stage", "model", "dataset", "reward", "teacher", "advantage", "labels",
        "unlabeled_from", "missing_train_classes", "missing_test_classes", "views", "balance"]
METHOD_NAMES = {"baseline": "Baseline", "dino": "DINO", "same-epochs": "Same epochs",
                "full-labeled": "Full labeled", "b-grpo": "B-GRPO"}
REFERENCE_NAMES = {"reference": "Reference MLP (converged, early-stopped on validation; ours)",
                   "reference-logreg": "Reference logistic regression (standardised; ours)"}
STABILISERS = {"balance": "none", "sup_weight": 0.0, "penalty_value": 0.0}
"""B-GRPO options beyond the paper (ours) and their paper values (the generic layout names them when set)."""
OURS = {**STABILISERS, "action": "greedy", "regularize": "", "protocol": "paper"}
"""Settings of ours and their paper values: a paper layout's rows hold only runs at these values; a run with any
other value gets a row of its own marked '(ours: setting=value)' (Table 1 marks --select val the same way)."""
PAPER_DATASETS = ("iemocap", "casia", "cafe", "meld", "m3ed")
"""The paper's column order; other datasets follow by name."""
PAPER_TEACHERS = ("emotion2vec-plus-large", "emotion2vec-base", "whisper-large-v3")
"""Table 2's teacher order in the paper; other teachers follow by name."""
NUMERIC = ["macro_f1", "ua", "wa", "oracle_macro_f1", "val_macro_f1", "last_macro_f1", "train_loss",
           "train_macro_f1", "mask_rate", "mask_rate_max", "pool_agreement_stage1"]
PAIR_KEYS = ["dataset", "model", "labels", "fold", "seed"]
"""What makes runs of two methods a matched pair for --compare (plus the epoch selection, when the compared
method's results hold both: a val-selected row pairs with a val-selected one; the logistic regression, which
has no epochs, with the last-epoch one)."""


def _pair_keys(df: pd.DataFrame) -> pd.DataFrame:
    """Rows indexed by their pairing keys (``select`` '' counts as 'last')."""
    keys = PAIR_KEYS + (["select"] if "select" in df else [])
    out = df.copy()
    if "select" in out:
        out["select"] = out["select"].replace("", "last")
    return out.set_index(keys)


def paper_order(names, paper=PAPER_DATASETS) -> list[str]:
    """``names`` in the paper's order, then the others sorted by name."""
    names = list(dict.fromkeys(names))
    return [n for n in paper if n in names] + sorted(n for n in names if n not in paper)
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
        d = pd.read_csv(f, keep_default_na=False, na_values={c: [""] for c in NUMERIC})
        if not {"stage", "dataset", "seed", "macro_f1"} <= set(d.columns):
            raise ValueError(f"{f}: not a results.csv of `trainer run` (needs stage, dataset, seed, macro_f1 columns)")
        frames.append(d)
    df = pd.concat(frames, ignore_index=True)
    for c in TEXT:
        if c in df:
            df[c] = df[c].astype(str)
    for c in ("collapsed", "under_trained", "under_predicted"):
        if c in df:
            df[c] = df[c].astype(str) == "True"
    return df.drop_duplicates(subset=[c for c in df.columns if c != "seconds"])


METRIC_NAMES = {"macro_f1": "macro-F1", "ua": "UA", "wa": "WA"}
"""Display names of the metric columns. results.csv holds each metric as a fraction in [0, 1]; tables and the
console show it in %, and say so (titles '(macro-F1 %)', csv headers '<column>_macro_f1_pct')."""


def metric_columns(df: pd.DataFrame) -> list[str]:
    """The metric columns the rows carry: macro_f1, ua, wa, and any other score of trainer.metrics.scores (each is
    written twice, as NAME and last_NAME, so a metric added there is found here without a list to update)."""
    names = [c for c in ("macro_f1", "ua", "wa") if c in df]
    names += [c.removeprefix("last_") for c in df.columns if c.startswith("last_") and c != "last_"]
    return [c for c in dict.fromkeys(names) if c in df and pd.api.types.is_numeric_dtype(df[c])]


@dataclass
class Style:
    """How cells are rendered: the metric column and the method to compare with (paired)."""

    metric: str = "macro_f1"
    compare: str = ""
    base: pd.DataFrame | None = None
    """The --compare method's rows."""
    comparisons: list = None
    """The table's paired comparisons so far ((fold level, seed level) per cell), corrected together once the
    table is laid out (:func:`finish_comparisons`)."""

    def __post_init__(self):
        if self.comparisons is None:
            self.comparisons = []

    @property
    def name(self) -> str:
        """The metric's display name (the oracle column shows as its metric)."""
        m = self.metric.removeprefix("oracle_")
        return METRIC_NAMES.get(m, m)

    @property
    def unit(self) -> str:
        return f"{self.name} %"


ONE_CONFIG_FREE = ("fold", "seeds")
"""Settings in which the runs pooled into one cell may differ (a cell averages over folds and seeds); rows of
configurations differing in any other setting (config_hash) are never averaged together."""


SETTINGS = FLAT_FIELDS + LATER_SHARED
"""Every hashed setting a row can carry (those added later only when away from their defaults)."""


def check_one_configuration(g: pd.DataFrame):
    """Raise when the rows of a cell come from several configurations, naming the settings that differ."""
    cols = [k for k in SETTINGS if k in g and k not in ONE_CONFIG_FREE]
    if not cols or len(g) < 2:
        return
    keys = g[cols].astype(str).drop_duplicates()
    if len(keys) > 1:
        differ = [f"{c}: {', '.join(sorted(keys[c].unique()))}" for c in cols if keys[c].nunique() > 1]
        where = f"{', '.join(sorted(g.method.astype(str).unique()))} on {', '.join(sorted(g.dataset.unique()))}"
        raise ValueError(f"a table cell ({where}) would average {len(keys)} configurations differing in "
                         f"{'; '.join(differ)}; a paper table shows one configuration per cell: pass the results "
                         "of one of them, or use --layout generic (one row per configuration)")


def cell(g: pd.DataFrame, style: Style = Style()) -> str:
    """'mean ± std' in %: fold-mean per seed, then over seeds (over folds when there is one seed); then the
    marks: ' ⚠k/n' (k of n runs collapsed), ' †k/n' (under-trained), and with --compare the paired difference."""
    metric = style.metric
    if g.empty:
        return "-"
    check_one_configuration(g)
    per_seed = g.groupby("seed")[metric].mean() * 100
    vals = per_seed if len(per_seed) > 1 else g[metric] * 100
    std = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
    text = f"{vals.mean():.1f} ± {std:.1f}"
    n = len(g)
    if "collapsed" in g and g.collapsed.any():
        text += f" ⚠{int(g.collapsed.sum())}/{n}"
    if "under_predicted" in g and g.under_predicted.any():
        text += f" ↓{int(g.under_predicted.sum())}/{n}"
    if "under_trained" in g and g.under_trained.any():
        text += f" †{int(g.under_trained.sum())}/{n}"
    text += _reach_text(g)
    if style.compare and style.base is not None and not (g.method == style.compare).all():
        text += " " + _paired_text(g, style)
    return text


def _reach_text(g: pd.DataFrame) -> str:
    """' mask M% (max X%)' for a thresholded unlabelled term (mean mask rate over runs, largest epoch value), then
    ' kept K%': the share of the pool whose prediction stage 2 left as stage 1 had it; '' for other rows."""
    out = ""
    if "mask_rate" in g and g.mask_rate.notna().any():
        out += f" mask {g.mask_rate.mean() * 100:.2g}% (max {g.mask_rate_max.max() * 100:.2g}%)"
    if "pool_agreement_stage1" in g and g.pool_agreement_stage1.notna().any():
        out += f" kept {g.pool_agreement_stage1.mean() * 100:.1f}%"
    return out


PLACEHOLDER = "\x00Δ{}\x00"
"""Where a cell's comparison goes until the table's comparisons are corrected together."""


def _paired_text(g: pd.DataFrame, style: Style) -> str:
    """A placeholder for the cell's paired difference to ``style.base`` (registered in ``style.comparisons``)."""
    metric = style.metric
    a = _pair_keys(g).groupby(level=list(range(len(PAIR_KEYS) + ("select" in g)))).mean(numeric_only=True)[metric]
    b = _pair_keys(style.base)[metric]
    common = a.index.intersection(b.index)
    if len(common) == 0:
        return "(Δ: no matched runs)"
    x, y = a[common].to_numpy() * 100, b[common].to_numpy() * 100
    folds = common.get_level_values("fold").to_numpy()
    style.comparisons.append((fold_paired(folds, x, y), paired(x, y)))
    return PLACEHOLDER.format(len(style.comparisons) - 1)


def _p(p: float) -> str:
    return "-" if math.isnan(p) else f"{p:.2g}"


def comparison_text(fold, seed) -> str:
    """One cell's comparison: the fold-level difference, interval, p and corrected p (a '*' only when the corrected
    p is below ALPHA), then the seed-level numbers, labelled so."""
    if fold.n < 2:
        head = f"Δ {fold.mean:+.1f} ({fold.n} fold: no fold-level test)"
    elif math.isnan(fold.p):
        head = f"Δ {fold.mean:+.1f} ({fold.n} folds, all equal: no test)"
    else:
        head = (f"Δ {fold.mean:+.1f} [{fold.low:+.1f}, {fold.high:+.1f}] {fold.n} folds p={_p(fold.p)} "
                f"p_{CORRECTION}={_p(fold.p_adjusted)}{' *' if fold.significant else ''}")
    return (f"{head}; seed level {seed.mean:+.1f} [{seed.low:+.1f}, {seed.high:+.1f}] n={seed.n} runs "
            f"p={_p(seed.p)}")


def finish_comparisons(rows: list[list[str]], style: Style) -> list[list[str]]:
    """``rows`` with every comparison placeholder replaced, after correcting the table's fold-level p-values
    together (trainer.significance.corrected)."""
    if not style.comparisons:
        return rows
    folds = corrected([f for f, _ in style.comparisons])
    texts = [comparison_text(f, s) for f, (_, s) in zip(folds, style.comparisons)]
    out = []
    for row in rows:
        new = []
        for c in row:
            for k, t in enumerate(texts):
                c = c.replace(PLACEHOLDER.format(k), t)
            new.append(c)
        out.append(new)
    return out


def _grid(df: pd.DataFrame, row_specs: list[tuple[str, pd.Series]], datasets: list[str],
          style: Style) -> list[list[str]]:
    return [[name] + [cell(df[mask & (df.dataset == d)], style) for d in datasets] for name, mask in row_specs]


def _is(df: pd.DataFrame, col: str, value) -> pd.Series:
    """Rows whose ``col`` holds ``value`` (a missing column or value: the setting's default, ``value`` itself)."""
    if col not in df:
        return pd.Series(True, index=df.index)
    v = df[col]
    missing = v.isna() | (v.astype(str) == "")
    if isinstance(value, float):
        return missing | (pd.to_numeric(v, errors="coerce") == value)
    return missing | (v.astype(str) == str(value))


def paper_settings(df: pd.DataFrame) -> pd.Series:
    """Rows run with the paper's value of every setting of OURS."""
    mask = pd.Series(True, index=df.index)
    for col, paper in OURS.items():
        mask &= _is(df, col, paper)
    return mask


def with_ours(df: pd.DataFrame, specs: list[tuple[str, pd.Series]]) -> list[tuple[str, pd.Series]]:
    """Each paper row (name, mask) restricted to the paper's settings, followed by one row per configuration of
    ours among its runs, named '<name> (ours: setting=value, ...)'."""
    paper = paper_settings(df)
    out = []
    for name, mask in specs:
        out.append((name, mask & paper))
        rest = df[mask & ~paper]
        cols = [c for c in OURS if c in rest]
        for combo, g in rest.groupby(cols, sort=False, dropna=False) if len(rest) else ():
            combo = combo if isinstance(combo, tuple) else (combo,)
            changed = [f"{c}={v:g}" if isinstance(v, float) else f"{c}={v}" for c, v in zip(cols, combo)
                       if not bool(_is(g.head(1), c, OURS[c]).iloc[0])]
            out.append((f"{name} (ours: {', '.join(changed)})", df.index.isin(g.index)))
    return out


def _default_bgrpo(df: pd.DataFrame) -> pd.Series:
    """The paper's B-GRPO: r1, the positive advantage (eq. 6), the same corpus (any setting of OURS)."""
    return (df.method == "b-grpo") & (df.reward == "r1") & (df.advantage == "positive") & (df.unlabeled_from == "")


def table1(df, datasets, style):
    half = df.labeled_fraction.astype(float) < 1
    ours = df[~df.method.isin(list(REFERENCE_NAMES))]
    selects = sorted(set(ours["select"]) - {""}) if "select" in df else ["last"]
    specs = []
    for sel in selects:
        for m, name in METHOD_NAMES.items():
            mask = df.method == m
            if "select" in df:
                mask &= df["select"] == sel
            if m == "b-grpo":
                mask &= _default_bgrpo(df)
            if m in ("baseline", "same-epochs", "dino", "b-grpo"):
                mask &= half
            if m == "dino":
                mask &= df.unlabeled_from == ""
            if sel == "last" or mask.any():
                specs.append((name + (" (ours: best-validation epoch)" if sel == "val" else ""), mask))
    specs = with_ours(df, specs) + _reference_specs(df)
    return (f"Table 1. B-GRPO against the baselines ({style.unit})",
            (["method"] + datasets, _grid(df, specs, datasets, style)))


def _reference_specs(df) -> list:
    """The converged references, when the results hold them (every table shows them then)."""
    return [(name, df.method == m) for m, name in REFERENCE_NAMES.items() if (df.method == m).any()]


def table2(df, datasets, style):
    b = (df.method == "b-grpo") & (df.advantage == "positive") & (df.unlabeled_from == "")
    rows = []
    for model in sorted(df[b & (df.teacher == "")].model.unique()):
        rows.append([f"**self-reward {model}**"] + [""] * len(datasets))
        for r in ("r1", "r2"):
            mask = b & (df.teacher == "") & (df.model == model) & (df.reward == r)
            rows += _grid(df, with_ours(df, [(r, mask)]), datasets, style)
    for t in paper_order(df[b & (df.teacher != "")].teacher.unique(), PAPER_TEACHERS):
        rows.append([f"**teacher-reward {t}**"] + [""] * len(datasets))
        for r in ("r3", "r4", "r5"):
            m = b & (df.teacher == t) & (df.reward == r)
            if m.any():
                rows += _grid(df, with_ours(df, [(r, m)]), datasets, style)
    return f"Table 2. Reward functions ({style.unit})", (["reward"] + datasets, rows)


def table3(df, datasets, style):
    b = (df.method == "b-grpo") & (df.reward == "r1") & (df.teacher == "") & (df.unlabeled_from == "")
    specs = with_ours(df, [(name, b & (df.advantage == a)) for a, name in ADVANTAGE_NAMES.items()])
    return (f"Table 3. Advantage function ({style.unit})",
            (["advantage"] + datasets, _grid(df, specs, datasets, style)))


def table4(df, datasets, style):
    full = df.labeled_fraction.astype(float) >= 1
    specs = []
    for model in df[full].model.unique():
        specs.append((model, full & (df.model == model) & (df.method == "baseline")))
        specs.append(("w B-GRPO", full & (df.model == model) & _default_bgrpo(df)))
    return (f"Table 4. Policy models on different encoders, baseline on all labels ({style.unit})",
            (["policy features"] + datasets, _grid(df, with_ours(df, specs), datasets, style)))


def table5(df, datasets, style):
    b = (df.method == "b-grpo") & (df.reward == "r1") & (df.advantage == "positive") & (df.teacher == "")
    paper = paper_settings(df)
    rows = []
    for (ext, ds), _ in df[b & (df.unlabeled_from != "")].groupby(["unlabeled_from", "dataset"], sort=False):
        same_b = b & (df.dataset == ds) & (df.unlabeled_from == "")
        ext_b = b & (df.dataset == ds) & (df.unlabeled_from == ext)
        frac = df[ext_b].labeled_fraction.astype(float).iloc[0]
        base = (df.method == "baseline") & (df.dataset == ds) & (df.labeled_fraction.astype(float) == frac)
        rows.append([f"{ext} → {ds}", cell(df[base & paper], style), cell(df[same_b & paper], style),
                     cell(df[ext_b & paper], style)])
        for name, mask in with_ours(df, [("", ext_b | same_b)])[1:]:  # configurations of ours: rows of their own
            rows.append([f"{ext} → {ds} {name.strip()}", "", cell(df[mask & same_b], style),
                         cell(df[mask & ext_b], style)])
    return (f"Table 5. B-GRPO data: external corpus → evaluated corpus ({style.unit})",
            (["data", "Baseline", "Same corpus", "External corpus"], rows))


def generic(df, datasets, style):
    keys = ["method", "model", "reward", "teacher", "advantage", "unlabeled_from", "labeled_fraction", "labels"]
    keys += [k for k in ("select", *STABILISERS) if k in df]
    keys += [k for k in SETTINGS if k in df and k not in keys and k not in ("fold", "dataset")
             and df[k].astype(str).nunique() > 1]  # any other setting that differs between the runs shown
    specs = []
    for combo, g in df.groupby(keys, sort=False, dropna=False):
        d = dict(zip(keys, combo))
        name = " ".join([{**METHOD_NAMES, **REFERENCE_NAMES}.get(d["method"], d["method"]), d["model"]]
                        + [f"{k}={d[k]}" for k in keys[2:]
                           if str(d[k]) not in ("", "nan") and d[k] != STABILISERS.get(k)])
        specs.append((name, df.index.isin(g.index)))
    return f"Results ({style.unit})", (["run"] + datasets, _grid(df, specs, datasets, style))


PUBLISHED_FILE = "emobox_published.csv"
"""EmoBox's published numbers (manifests/): corpus, encoder, ua, wa, macro_f1 (percent), source, source_url."""
EMOBOX_METRICS = (("ua", "UA %"), ("wa", "WA %"), ("macro_f1", "macro-F1 %"))
EPOCH_NAMES = {"last": "last epoch", "val": "best-validation epoch"}
POOLED_PREFIX = "emobox_pooled_"
"""Columns of EmoBox's released scoring (every epoch's test predictions pooled; trainer.algorithms.emobox)."""


def published_file() -> Path:
    """manifests/emobox_published.csv of this source tree, else the installed package's copy."""
    src = Path(__file__).resolve().parents[1] / "manifests" / PUBLISHED_FILE
    if src.is_file():
        return src
    from importlib import resources

    return Path(str(resources.files("emocache.manifests").joinpath(PUBLISHED_FILE)))


def published_numbers(path: str | Path | None = None) -> pd.DataFrame:
    """EmoBox's published UA / WA / macro-F1 (percent) per corpus and encoder, each row with its source."""
    df = pd.read_csv(path or published_file(), comment="#", dtype={"corpus": str, "encoder": str})
    need = {"corpus", "encoder", "ua", "wa", "macro_f1", "source", "source_url"}
    if not need <= set(df.columns) or df.source.isna().any():
        raise ValueError(f"{path or published_file()}: needs the columns {', '.join(sorted(need))} and a source "
                         "on every row")
    return df


def _mean_pct(g: pd.DataFrame, metric: str) -> float:
    """The mean a cell shows: fold mean per seed, then over seeds, in %."""
    return float(g.groupby("seed")[metric].mean().mean() * 100)


def emobox(df, datasets, style):
    """Each (corpus, encoder, method) of the rows beside EmoBox's published numbers for that corpus and encoder:
    ours at the reported epoch, ours with EmoBox's released scoring (emobox rows), EmoBox's published row with its
    source and the difference in points, or a line saying EmoBox published none."""
    pub = published_numbers()
    rows = []
    for ds in datasets:
        for (model, method), g in df[df.dataset == ds].groupby(["model", "method"], sort=False):
            first = [ds, model]
            rows.append(first + [f"ours: {method}, {EPOCH_NAMES.get(style_select(g), 'mixed epochs')}"]
                        + [cell(g, Style(m)) for m, _ in EMOBOX_METRICS])
            if all(f"{POOLED_PREFIX}{m}" in g and g[f"{POOLED_PREFIX}{m}"].notna().all() for m, _ in EMOBOX_METRICS):
                rows.append(["", "", "ours: EmoBox's released scoring (test predictions of every epoch pooled)"]
                            + [cell(g, Style(f"{POOLED_PREFIX}{m}")) for m, _ in EMOBOX_METRICS])
            p = pub[(pub.corpus == ds) & (pub.encoder == model)]
            if p.empty:
                rows.append(["", "", f"EmoBox published: none for {model} on {ds}", "-", "-", "-"])
                continue
            p = p.iloc[0]
            rows.append(["", "", f"EmoBox published ({p.source.split(',')[0]}: {p.source_url})"]
                        + [f"{p[m]:.2f}" for m, _ in EMOBOX_METRICS])
            rows.append(["", "", "Δ ours − published (points)"]
                        + [f"{_mean_pct(g, m) - p[m]:+.1f}" for m, _ in EMOBOX_METRICS])
    title = ("EmoBox comparison: our runs beside EmoBox's published intra-corpus results (UA / WA / macro-F1 %; "
             f"published numbers and their sources: manifests/{PUBLISHED_FILE})")
    return title, (["corpus", "encoder", "result"] + [h for _, h in EMOBOX_METRICS], rows)


def style_select(g: pd.DataFrame) -> str:
    """The epoch selection of a cell's rows ('last' when the rows do not say)."""
    sel = set(g["select"].replace("", "last")) if "select" in g else {"last"}
    return sel.pop() if len(sel) == 1 else "mixed"


SELECTION = {"last": "last epoch (the paper's protocol)",
             "val": "best validation epoch per run (validation rows held out of the labelled rows)"}
ORACLE_NOTE = ("**optimistic (--oracle)**: best TEST epoch per run and stage, what a script that scores every "
               "checkpoint on test reports; for comparison with published numbers only, not an estimate")


RENDER = {"table1": table1, "table2": table2, "table3": table3, "table4": table4, "table5": table5,
          "generic": generic, "emobox": emobox}


def render(df: pd.DataFrame, layout: str = "auto", stage: str = "final", oracle: bool = False,
           compare: str = "", metric: str = "macro_f1", fmt: str = "md") -> str:
    """``layout`` as ``fmt`` (FORMATS: md, csv, latex); ``auto`` uses each experiment's own layout (table1..5)
    or generic.

    ``oracle``: cells show the best test epoch per run (optimistic, labelled so). ``compare``: each cell also
    gets the paired difference to that method's matching (fold, seed) runs (significance.paired). ``metric``:
    the metric column shown (metric_columns lists those the rows carry), in %.
    """
    if layout not in RENDER and layout != "auto":
        raise ValueError(f"unknown layout {layout!r}; known: auto, {', '.join(RENDER)}")
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    if metric not in metric_columns(df):
        raise ValueError(f"--metric {metric!r}: not a metric column of these results; available: "
                         f"{', '.join(metric_columns(df))}")
    df = df[df.stage == stage].reset_index(drop=True)
    if df.empty:
        raise ValueError(f"no rows of stage {stage!r}")
    if oracle and f"oracle_{metric}" not in df:
        raise ValueError(f"--oracle: these results have no oracle_{metric} column (the oracle is kept for macro-F1 "
                         "only; results written by an older trainer have none)")
    base = None
    if compare:
        base = df[df.method == compare]
        if base.empty:
            raise ValueError(f"--compare {compare}: no rows of that method; methods here: "
                             f"{', '.join(sorted(df.method.unique()))}")
        dup = base[base.duplicated(PAIR_KEYS + (["select"] if "select" in base else []), keep=False)]
        if not dup.empty:
            raise ValueError(f"--compare {compare}: {len(dup)} rows share a (dataset, model, labels, fold, seed, "
                             "select); pass the results of one configuration of it")
    parts = []
    groups = [(layout, df)] if layout != "auto" else [
        (e if e in RENDER else "generic", g.reset_index(drop=True)) for e, g in df.groupby("experiment", sort=False)]
    for lay, g in groups:
        style = Style(f"oracle_{metric}" if oracle else metric, compare, base)  # one table, one correction
        datasets = paper_order(g.dataset)
        title, (header, rows) = RENDER[lay](g, datasets, style)
        rows = finish_comparisons(rows, style)
        if oracle:
            title, header, rows = optimistic(title, header, rows)
        parts.append(FORMATS[fmt](title, header, rows, " ".join(n for n in notes(g, oracle, style) if n), style))
    return "\n\n".join(parts)


OPTIMISTIC = "OPTIMISTIC: best test epoch"
"""What --oracle tables say in their title, every value column's name and every row."""


def optimistic(title: str, header: list[str], rows: list[list[str]]) -> tuple[str, list[str], list[list[str]]]:
    """An --oracle table labelled optimistic in its title, its value columns and each row (section headers, rows
    without values, stay as they are)."""
    tag = f"[{OPTIMISTIC}]"
    return (f"{title} {tag}", [header[0]] + [f"{h} {tag}" for h in header[1:]],
            [[f"{r[0]} {tag}"] + r[1:] if any(c for c in r[1:]) else r for r in rows])


def notes(g: pd.DataFrame, oracle: bool, style: Style) -> list[str]:
    """The footnotes of one table of rows ``g``: spread, epoch, marks, reach and the comparisons' test."""
    n_seeds, n_folds = g.seed.nunique(), g.fold.nunique()
    spread = "std over seeds of the fold mean" if n_seeds > 1 else "std over folds"
    out = [f"{n_folds} fold(s) x {n_seeds} seed(s); mean ± {spread}."]
    if oracle:
        out.append(ORACLE_NOTE + ".")
    elif "select" in g:
        sel = sorted(set(g["select"]) - {""})
        out.append("Epoch: " + "; ".join(SELECTION.get(x, x) for x in sel) + "." if sel else "")
    if "protocol" in g and (g.protocol.astype(str) == "converged").any():
        out.append("--protocol converged (ours): every stage until its validation macro-F1 stopped improving, "
                   "best-validation weights restored.")
    if "collapsed" in g and g.collapsed.any():
        out.append("⚠k/n: k of n runs collapsed in stage 2 (a class the stage-1 model predicted for >= 2% of the "
                   "pool under 1% at the end, or the entropy halved; docs/TRAINER.md).")
    if "under_predicted" in g and g.under_predicted.any():
        out.append("↓k/n: k of n runs predict a labelled class (>= 2% of the labels) for under 1% of the pool.")
    if "under_trained" in g and g.under_trained.any():
        out.append("†k/n: k of n runs under-trained (training loss still falling; docs/TRAINER.md).")
    if "mask_rate" in g and g.mask_rate.notna().any():
        out.append("mask M% (max X%): mean share of the pool passing the confidence threshold per stage-2 epoch "
                   "(largest epoch value); under 1% the unlabelled term barely acted.")
    if "pool_agreement_stage1" in g and g.pool_agreement_stage1.notna().any():
        out.append("kept K%: share of the pool whose final prediction is the stage-1 model's.")
    if style.compare:
        m = len(style.comparisons)
        out.append(f"Δ: mean paired difference to {style.compare} in points. Fold level (independent: a fold's "
                   f"seeds share its test set): {FOLD_TEST}, p, and p_{CORRECTION} corrected ({CORRECTION}) over the "
                   f"{m} comparison(s) of this table; * = p_{CORRECTION} < {ALPHA:g}. Seed level (n = fold x seed "
                   "runs, not independent; training-seed variation on fixed test sets, uncorrected): 95% bootstrap "
                   "interval, Wilcoxon signed-rank p.")
    return out


def as_md(title: str, header: list[str], rows: list[list[str]], notes: str, style: Style) -> str:
    return f"**{title}**\n\n{markdown_table(header, rows)}\n\n_{notes}_"


def as_csv(title: str, header: list[str], rows: list[list[str]], notes: str, style: Style) -> str:
    """The table as CSV: '# title' line, the header (value columns named <column>_<metric>_pct: percent), the
    rows, a '# notes' line (pandas.read_csv(..., comment='#') reads it back)."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    oracle = style.metric.startswith("oracle_")
    unit = ("oracle_optimistic_" if oracle else "") + style.metric.removeprefix("oracle_") + "_pct"
    names = [h.replace(f" [{OPTIMISTIC}]", "") for h in header[1:]]
    w.writerow([header[0]] + [f"{h.replace(' ', '_')}_{unit}" for h in names])
    w.writerows([[c.strip("*") for c in r] for r in rows])
    return f"# {title}\n{buf.getvalue()}# {notes.replace('**', '')}"


TEX = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
       "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}", "±": r"$\pm$",
       "⚠": r"$\triangle$", "†": r"$\dagger$", "↓": r"$\downarrow$", "→": r"$\rightarrow$", "Δ": r"$\Delta$",
       "×": r"$\times$"}
"""LaTeX escapes of the characters the tables use."""


def _tex(text: str) -> str:
    """``text`` escaped for LaTeX; a markdown '**bold**' cell becomes \\textbf."""
    bold = len(text) > 4 and text.startswith("**") and text.endswith("**")
    out = "".join(TEX.get(ch, ch) for ch in (text[2:-2] if bold else text.replace("**", "")))
    return f"\\textbf{{{out}}}" if bold else out


def as_latex(title: str, header: list[str], rows: list[list[str]], notes: str, style: Style) -> str:
    """A booktabs ``table`` float: the title and the notes as its caption (needs \\usepackage{booktabs})."""
    lines = ["\\begin{table}[t]", "\\centering", f"\\caption{{{_tex(title)}. {_tex(notes)}}}",
             "\\begin{tabular}{l" + "r" * (len(header) - 1) + "}", "\\toprule",
             " & ".join(map(_tex, header)) + " \\\\", "\\midrule"]
    lines += [" & ".join(map(_tex, r)) + " \\\\" for r in rows]
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines)


FORMATS = {"md": as_md, "csv": as_csv, "latex": as_latex}
"""`trainer table --format`: markdown (the default, what the console shows), CSV, LaTeX (booktabs)."""


def summary(rows: list[dict]) -> str:
    """Macro-F1 / UA / WA % per stage and fold (mean over seeds) and the mean over folds (per method when the
    rows hold several, as the reference's MLP and logistic regression)."""
    df = pd.DataFrame(rows)
    several = df.method.nunique() > 1
    lines = []
    for (method, stage), g in df.groupby(["method", "stage"], sort=False):
        name = f"{method} {stage}" if several else stage
        per_fold = g.groupby("fold")[["macro_f1", "ua", "wa"]].mean() * 100
        for fold, r in per_fold.iterrows():
            lines.append(f"{name} fold {fold}: macro-F1 {r.macro_f1:.1f}%  UA {r.ua:.1f}%  WA {r.wa:.1f}%")
        m = per_fold.mean()
        flags = ""
        if "collapsed" in g and g.collapsed.any():
            flags += f"  collapsed {int(g.collapsed.sum())}/{len(g)}"
        if "under_trained" in g and g.under_trained.any():
            flags += f"  under-trained {int(g.under_trained.sum())}/{len(g)}"
        lines.append(f"{name} mean over {len(per_fold)} fold(s) x {g.seed.nunique()} seed(s): "
                     f"macro-F1 {m.macro_f1:.1f}%  UA {m.ua:.1f}%  WA {m.wa:.1f}%{flags}")
    return "\n".join(lines)
