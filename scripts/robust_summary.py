"""One markdown table per folder of `scripts/teacher_studies.sh ... robust_teachers` (docs/STUDY.md): the RRPO
Table-2 ablation.

Usage: python scripts/robust_summary.py ROBUST_OUT
Per (policy method + reward, teacher regularisers): the teacher alone on test (macro-F1 %), the policy's final
macro-F1 % (mean ± std over the (fold, seed) runs), its paired difference to the same method with the plain
teacher (trainer.significance.paired: 95% bootstrap interval, Wilcoxon p), and the policy's agreement with the
teacher on test and on the unlabelled pool, stage1 (the baseline) -> final (agreement with the teacher, including
its errors; results written before the columns were renamed are read under their old names).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from emocache.runtime import markdown_table
from trainer.significance import paired
from trainer.tables import load_results

ORDER = ("", "ls", "ls,eam", "ls,adv", "ls,eam,adv")
RENAMED = {"policy_teacher_test_agreement": "teacher_agreement_test",
           "policy_teacher_pool_agreement": "teacher_agreement_pool"}
"""The agreement columns' names before they were renamed (older results)."""
KEY = ["fold", "seed"]


def pct(s) -> str:
    return f"{100 * s.mean():.1f} ± {100 * s.std(ddof=1):.1f}" if len(s) > 1 else f"{100 * s.mean():.1f}"


def summary(folder: Path) -> str:
    df = load_results([folder]).fillna({"regularize": ""})
    df = df.rename(columns={old: new for old, new in RENAMED.items() if new not in df})
    for c in ("macro_f1", "teacher_agreement_test", "teacher_agreement_pool"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    teachers = df[df.method == "teacher"]
    rows = []
    for (model, method, reward), g in df[df.method != "teacher"].groupby(["model", "method", "reward"]):
        final, stage1 = g[g.stage == "final"], g[g.stage == "stage1"]
        plain = final[final.regularize == ""].set_index(KEY).macro_f1
        for reg in [r for r in ORDER if r in set(g.regularize)]:
            f, s = final[final.regularize == reg], stage1[stage1.regularize == reg]
            t = teachers[(teachers.regularize == reg) & (teachers.teacher == g.teacher.iloc[0])].macro_f1
            a = f.set_index(KEY).macro_f1
            common = a.index.intersection(plain.index)
            if reg and len(common):
                d = paired(a[common] * 100, plain[common] * 100)
                delta = f"{d.mean:+.1f} [{d.low:+.1f}, {d.high:+.1f}] p={d.p:.2g}" if d.p == d.p else f"{d.mean:+.1f}"
            else:
                delta = ""
            agree = [f"{100 * s[c].mean():.1f} → {100 * f[c].mean():.1f}"
                     for c in ("teacher_agreement_test", "teacher_agreement_pool")]
            rows.append([f"{model} {method} {reward}", "+".join(reg.split(",")) if reg else "plain",
                         pct(t) if len(t) else "-", pct(f.macro_f1), delta, agree[0], agree[1]])
    n = df[df.stage == "final"].groupby(["method", "reward", "regularize"]).size().max()
    table = markdown_table(["policy", "teacher regularisers", "teacher alone", "policy final",
                            "Δ to plain teacher [95%] p", "test agreement", "pool agreement"], rows, "llrrrrr")
    return "\n".join([f"**{folder.name}** (teacher {', '.join(sorted(set(df.teacher) - {''}))})", "", table, "",
                      f"_{n} (fold, seed) runs per cell._", ""])


if __name__ == "__main__":
    root = Path(sys.argv[1])
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        print(summary(d))
