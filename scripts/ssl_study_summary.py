"""One compact markdown table per study folder of scripts/ssl_study.sh (docs/STUDY.md).

Usage: python scripts/ssl_study_summary.py STUDY_OUT
Per method: macro-F1 % mean with a 95% t-interval over all (fold, seed) runs, the paired difference to
same-epochs (trainer.significance.paired: 95% bootstrap interval, Wilcoxon p), the runs flagged collapsed (with
their collapse epochs) and under-trained, and for `val` folders the mean selected epoch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy import stats

from emocache.runtime import markdown_table
from trainer.significance import paired
from trainer.tables import load_results


def name(r) -> str:
    if r.method == "b-grpo":
        return "b-grpo (sup-weight 1.0, ours)" if float(r.sup_weight or 0) > 0 else "b-grpo (paper)"
    return r.method


def summary(folder: Path) -> str:
    df = load_results([folder])
    df = df[df.stage == "final"].copy()
    df["name"] = [name(r) for r in df.itertuples()]
    key = ["fold", "seed"]
    same = df[df.name == "same-epochs"].set_index(key).macro_f1 * 100
    rows = []
    for n, g in sorted(df.groupby("name"), key=lambda kv: -kv[1].macro_f1.mean()):
        x = g.macro_f1.to_numpy() * 100
        half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else float("nan")
        a = g.set_index(key).macro_f1 * 100
        common = a.index.intersection(same.index)
        if n == "same-epochs" or len(common) == 0:
            d = "-"
        else:
            r = paired(a[common].to_numpy(), same[common].to_numpy())
            p = "-" if np.isnan(r.p) else f"{r.p:.2g}"
            d = f"{r.mean:+.1f} [{r.low:+.1f}, {r.high:+.1f}] p={p}{' *' if r.excludes_zero else ''}"
        col = g[g.collapsed] if "collapsed" in g else g.iloc[:0]
        ep = ",".join(str(int(e)) for e in col.collapse_epoch) if len(col) else ""
        under = int(g.under_trained.sum()) if "under_trained" in g else 0
        sel = f"{g.selected_epoch.astype(float).mean():.0f}" if (g["select"] == "val").all() else "last"
        rows.append([n, f"{x.mean():.1f} [{x.mean() - half:.1f}, {x.mean() + half:.1f}]", d,
                     f"{len(col)}/{len(g)}{f' ({ep})' if ep else ''}", f"{under}/{len(g)}", sel])
    return markdown_table(["method", "macro-F1 % [95% CI]", "Δ to same-epochs [95% bootstrap] p", "collapsed (epochs)",
                           "under-trained", "selected epoch"], rows)


if __name__ == "__main__":
    root = Path(sys.argv[1])
    for folder in sorted(p for p in root.glob("*/*") if p.is_dir()):
        print(f"### {folder.parent.name}, select {folder.name}\n\n{summary(folder)}\n")
