"""One compact markdown table per study folder of scripts/ssl_study.sh (docs/STUDY.md).

Usage: python scripts/ssl_study_summary.py STUDY_OUT
Per method: macro-F1 % mean over all (fold, seed) runs with a 95% t-interval over the seeds of the fold mean
(training-seed variation); the paired difference to same-epochs at the fold level (seeds averaged within a fold,
paired t-test over the folds, Holm-corrected over the table's comparisons; '*' = corrected p < 0.05; no test with
one fold) and at the seed level (every (fold, seed) run a pair: 95% bootstrap interval, Wilcoxon p; labelled, not
independent); the runs flagged collapsed in stage 2 (with their collapse epochs), under-predicted and
under-trained; the unlabelled term's reach (mask rate: mean [largest epoch]; kept: share of the pool whose
prediction stage 2 left as stage 1 had it); the mean selected epoch and, under --protocol converged, the mean
epochs trained (each run's own epochs; under-trained is not judged there: the stages stop on validation).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
from scipy import stats

from emocache.runtime import markdown_table
from trainer.significance import CORRECTION, corrected, fold_paired, paired
from trainer.tables import load_results

KEY = ["fold", "seed"]


def name(r) -> str:
    if r.method == "b-grpo":
        return "b-grpo (sup-weight 1.0, ours)" if float(r.sup_weight or 0) > 0 else "b-grpo (paper)"
    return r.method


def interval(g) -> str:
    """Mean over runs and a 95% t-interval over the seeds of the fold mean."""
    per_seed = g.groupby("seed").macro_f1.mean().to_numpy() * 100
    m = g.macro_f1.mean() * 100
    if len(per_seed) < 2:
        return f"{m:.1f}"
    half = stats.t.ppf(0.975, len(per_seed) - 1) * per_seed.std(ddof=1) / math.sqrt(len(per_seed))
    return f"{m:.1f} [{m - half:.1f}, {m + half:.1f}]"


def _p(p: float) -> str:
    return "-" if math.isnan(p) else f"{p:.2g}"


def summary(folder: Path) -> str:
    df = load_results([folder])
    df = df[df.stage == "final"].copy()
    df["name"] = [name(r) for r in df.itertuples()]
    same = df[df.name == "same-epochs"].set_index(KEY).macro_f1 * 100
    groups = sorted(df.groupby("name"), key=lambda kv: -kv[1].macro_f1.mean())
    tests = {}
    for n, g in groups:
        a = g.set_index(KEY).macro_f1 * 100
        common = a.index.intersection(same.index)
        if n != "same-epochs" and len(common):
            x, y = a[common].to_numpy(), same[common].to_numpy()
            tests[n] = (fold_paired(common.get_level_values("fold"), x, y), paired(x, y))
    folds = dict(zip(tests, corrected([f for f, _ in tests.values()])))
    converged = "protocol" in df and (df.protocol.astype(str) == "converged").any()
    rows = []
    for n, g in groups:
        if n in tests:
            f, s = folds[n], tests[n][1]
            fold = ("-" if f.n < 2 else f"{f.mean:+.1f} [{f.low:+.1f}, {f.high:+.1f}] p={_p(f.p)} "
                    f"p_{CORRECTION}={_p(f.p_adjusted)}{' *' if f.significant else ''}")
            seed = f"{s.mean:+.1f} [{s.low:+.1f}, {s.high:+.1f}] p={_p(s.p)}"
        else:
            fold = seed = "-"
        col = g[g.collapsed] if "collapsed" in g else g.iloc[:0]
        ep = ",".join(str(int(e)) for e in col.collapse_epoch) if len(col) else ""
        under = int(g.under_trained.sum()) if "under_trained" in g else 0
        low = int(g.under_predicted.sum()) if "under_predicted" in g else 0
        reach = "-"
        if "mask_rate" in g and g.mask_rate.notna().any():
            reach = f"mask {100 * g.mask_rate.mean():.2g}% [{100 * g.mask_rate_max.max():.2g}%]"
        if "pool_agreement_stage1" in g and g.pool_agreement_stage1.notna().any():
            reach = ("" if reach == "-" else reach + ", ") + f"kept {100 * g.pool_agreement_stage1.mean():.1f}%"
        sel = g.selected_epoch.astype(float).mean()
        epoch = f"{sel:.0f}" if (g["select"] == "val").all() else "last"
        stops = converged and (g.protocol.astype(str) == "converged").all()
        if stops:
            epoch += f" / {g.epochs.astype(float).mean():.0f}"
        rows.append([n, interval(g), fold, seed, f"{len(col)}/{len(g)}{f' ({ep})' if ep else ''}", f"{low}/{len(g)}",
                     "-" if stops else f"{under}/{len(g)}", reach, epoch])
    n_folds, n_seeds = df.fold.nunique(), df.seed.nunique()
    head = ["method", "macro-F1 % [95% CI]", f"Δ fold level ({n_folds} folds) [95% t] p p_{CORRECTION}",
            f"Δ seed level ({n_folds * n_seeds} runs) [95% boot] p", "collapsed (epochs)", "under-predicted",
            "under-trained", "reach", "selected" + (" / trained epochs" if converged else " epoch")]
    return markdown_table(head, rows)


if __name__ == "__main__":
    root = Path(sys.argv[1])
    for folder in sorted(p for p in root.glob("*/*") if p.is_dir()):
        print(f"### {folder.parent.name}, {folder.name}\n\n{summary(folder)}\n")
