"""Paired comparison against scipy on fixed numbers, and the exact Wilcoxon p by hand."""

import math

import numpy as np
import pytest
from scipy import stats

from trainer.significance import BOOTSTRAP_SEED, N_RESAMPLES, FoldPaired, corrected, fold_paired, holm, paired

A = [72.1, 70.4, 75.3, 69.9, 73.8, 71.2]
B = [70.0, 70.9, 72.1, 69.0, 71.5, 70.6]


def test_mean_interval_and_p_match_scipy():
    d = np.subtract(A, B)
    r = paired(A, B)
    ci = stats.bootstrap((d,), np.mean, n_resamples=N_RESAMPLES, method="percentile",
                         random_state=np.random.default_rng(BOOTSTRAP_SEED)).confidence_interval
    assert r.n == 6 and r.mean == pytest.approx(d.mean())
    assert (r.low, r.high) == pytest.approx((ci.low, ci.high))
    assert r.p == pytest.approx(stats.wilcoxon(d).pvalue)
    assert r.low <= r.mean <= r.high and d.min() <= r.low and r.high <= d.max()


def test_exact_wilcoxon_by_hand_and_interval_excluding_zero():
    r = paired([3, 4, 5, 6, 7], [1, 1, 1, 1, 1])  # all 5 differences positive: p = 2 / 2^5
    assert r.p == pytest.approx(2 / 32) and r.excludes_zero
    mixed = paired([1, -2, 3, -4, 5, -6], [0] * 6)  # signs alternate: the interval straddles 0
    assert mixed.low < 0 < mixed.high and not mixed.excludes_zero


def test_degenerate_inputs():
    r = paired([1.0, 2.0], [1.0, 2.0])
    assert r.mean == 0 and math.isnan(r.p) and not r.excludes_zero
    with pytest.raises(ValueError, match="no matched pairs"):
        paired([], [])


# -- fold level and the correction ------------------------------------------------------------------------------
def _t2_p(t: float) -> float:
    """Two-sided p of Student's t with 2 degrees of freedom, in closed form: P(|T| > t) = 1 - t / sqrt(t^2 + 2)."""
    return 1 - abs(t) / math.sqrt(t * t + 2)


def test_fold_level_difference_by_hand():
    # 3 folds x 2 seeds; run differences (2, 3), (-1, 4), (5, 4): fold means 2.5, 1.5, 4.5
    folds = [1, 1, 2, 2, 3, 3]
    a = [70, 72, 60, 64, 80, 81]
    b = [68, 69, 61, 60, 75, 77]
    r = fold_paired(folds, a, b)
    mean = (2.5 + 1.5 + 4.5) / 3
    sd = math.sqrt(((2.5 - mean) ** 2 + (1.5 - mean) ** 2 + (4.5 - mean) ** 2) / 2)
    se = sd / math.sqrt(3)
    t_crit = math.sqrt(2 * 0.95 ** 2 / (1 - 0.95 ** 2))  # solves 1 - t / sqrt(t^2 + 2) = 0.05: 4.303
    assert (r.n, r.n_runs) == (3, 6) and r.mean == pytest.approx(mean)
    assert r.p == pytest.approx(_t2_p(mean / se), rel=1e-9)  # 0.085
    assert (r.low, r.high) == pytest.approx((mean - t_crit * se, mean + t_crit * se), rel=1e-9)
    assert math.isnan(r.p_adjusted) and not r.significant  # not corrected yet


def test_fold_level_needs_two_folds_and_some_spread():
    assert math.isnan(fold_paired([1, 1, 1], [3, 4, 5], [1, 1, 1]).p)  # one fold: the seeds are no replication
    assert math.isnan(fold_paired([1, 2], [3, 4], [1, 2]).p)  # every fold +2: a t-test has no variance


def test_holm_by_hand():
    adj = holm([0.01, 0.04, 0.03, float("nan")])
    # m = 3: sorted 0.01 -> 3 x 0.01 = 0.03; 0.03 -> 2 x 0.03 = 0.06; 0.04 -> max(0.06, 1 x 0.04) = 0.06
    assert adj[:3] == pytest.approx([0.03, 0.06, 0.06]) and math.isnan(adj[3])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    got = corrected([FoldPaired(3, 6, 1.0, 0, 2, 0.02), FoldPaired(3, 6, 1.0, 0, 2, 0.02)])
    assert [g.p_adjusted for g in got] == pytest.approx([0.04, 0.04]) and all(g.significant for g in got)
