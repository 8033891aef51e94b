"""Paired comparison of two methods over matching (fold, seed) runs: mean difference, 95% bootstrap interval
(percentile, scipy.stats.bootstrap) and the Wilcoxon signed-rank p (scipy.stats.wilcoxon, two-sided)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

N_RESAMPLES = 10_000
"""Bootstrap resamples of the mean paired difference."""
BOOTSTRAP_SEED = 0
"""Seed of the bootstrap resampling, so a table renders the same interval every time."""


@dataclass(frozen=True)
class Paired:
    """A - B over n matched runs."""

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
    """Mean of a - b with a percentile bootstrap interval and the Wilcoxon signed-rank p."""
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
