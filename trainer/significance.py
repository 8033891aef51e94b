"""Paired comparison of two methods over matching (fold, seed) runs, at two levels.

**Fold level** (the independent one; ``fold_paired``): a fold's seeds share its test set, so they are not
independent samples of the method's performance. Each fold's difference is the mean over its matched seeds of
A - B (seeds averaged within the fold); the test is the two-sided paired t-test over the n folds
(``scipy.stats.ttest_1samp`` of the fold differences against 0) with its 95 % t-interval. With one fold there is
no fold-level test. ``holm`` corrects the p-values of the comparisons of one table (Holm 1979, step-down); a
difference is significant only when its corrected p is below ``ALPHA``.

**Seed level** (``paired``, reported beside it and labelled so): every (fold, seed) run as one pair, the mean
difference with a 95 % percentile bootstrap interval (scipy.stats.bootstrap) and the Wilcoxon signed-rank p
(scipy.stats.wilcoxon, two-sided). It measures training-seed variation on fixed test sets; it is never corrected
and never gives a table's '*'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

N_RESAMPLES = 10_000
"""Bootstrap resamples of the mean paired difference."""
BOOTSTRAP_SEED = 0
"""Seed of the bootstrap resampling, so a table renders the same interval every time."""
ALPHA = 0.05
"""Significance level of the corrected fold-level test (a table's '*')."""
FOLD_TEST = "paired t-test over folds (seeds averaged within each fold), 95% t-interval"
"""The fold-level test, as table footnotes name it."""
CORRECTION = "Holm"
"""The multiple-comparison correction across one table's comparisons, as table footnotes name it."""


@dataclass(frozen=True)
class Paired:
    """Seed level: A - B over n matched runs."""

    n: int
    mean: float
    low: float
    high: float
    p: float
    """Wilcoxon signed-rank two-sided p; NaN when every difference is 0."""

    @property
    def excludes_zero(self) -> bool:
        """Whether the 95% interval lies on one side of 0."""
        return self.low > 0 or self.high < 0


def paired(a, b, confidence: float = 0.95) -> Paired:
    """Mean of a - b with a percentile bootstrap interval and the Wilcoxon signed-rank p (seed level)."""
    from scipy import stats

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.size == 0:
        raise ValueError("no matched pairs to compare")
    if d.size == 1 or np.all(d == d[0]):
        low = high = float(d.mean())
    else:
        ci = stats.bootstrap((d,), np.mean, confidence_level=confidence, n_resamples=N_RESAMPLES,
                             method="percentile", random_state=np.random.default_rng(BOOTSTRAP_SEED)).confidence_interval
        low, high = float(ci.low), float(ci.high)
    p = float(stats.wilcoxon(d).pvalue) if np.any(d != 0) else math.nan
    return Paired(int(d.size), float(d.mean()), low, high, p)


@dataclass(frozen=True)
class FoldPaired:
    """Fold level: A - B over n folds, each the mean over its matched seeds."""

    n: int
    """Folds (the independent units)."""
    n_runs: int
    """Matched (fold, seed) runs behind them."""
    mean: float
    low: float
    high: float
    p: float
    """Two-sided paired t-test p over the folds; NaN with one fold or when every fold difference is equal."""
    p_adjusted: float = math.nan
    """``p`` after the table's correction (``holm``); NaN until corrected, and where ``p`` is NaN."""

    @property
    def significant(self) -> bool:
        """Whether the corrected fold-level test rejects A = B at ALPHA."""
        return self.p_adjusted < ALPHA


def fold_paired(folds, a, b, confidence: float = 0.95) -> FoldPaired:
    """Fold-level comparison of matched runs: ``folds`` (n_runs,) the fold of each pair, ``a``/``b`` (n_runs,)
    their scores. Per fold the mean of a - b; over the folds their mean, the t-interval and the paired t-test p."""
    from scipy import stats

    folds = np.asarray(folds)
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.size == 0:
        raise ValueError("no matched pairs to compare")
    per_fold = np.array([d[folds == f].mean() for f in np.unique(folds)])  # (n,)
    n, mean = len(per_fold), float(per_fold.mean())
    if n < 2 or np.all(per_fold == per_fold[0]):
        return FoldPaired(n, int(d.size), mean, math.nan, math.nan, math.nan)
    res = stats.ttest_1samp(per_fold, 0.0)
    ci = res.confidence_interval(confidence)
    return FoldPaired(n, int(d.size), mean, float(ci.low), float(ci.high), float(res.pvalue))


def holm(p) -> np.ndarray:
    """Holm's step-down adjusted p-values of m comparisons (NaN entries are no comparison and stay NaN):
    sort the m p-values, p'_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)), back in the given order."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, math.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    running = 0.0
    for rank, i in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def corrected(results: list[FoldPaired]) -> list[FoldPaired]:
    """``results`` with ``p_adjusted`` from :func:`holm` over all of them (one table's comparisons)."""
    from dataclasses import replace

    adjusted = holm([r.p for r in results])
    return [replace(r, p_adjusted=float(q)) for r, q in zip(results, adjusted)]


__all__ = ["Paired", "paired", "FoldPaired", "fold_paired", "holm", "corrected", "ALPHA", "FOLD_TEST", "CORRECTION",
           "N_RESAMPLES", "BOOTSTRAP_SEED"]
