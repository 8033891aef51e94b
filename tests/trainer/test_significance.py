"""Paired comparison against scipy on fixed numbers, and the exact Wilcoxon p by hand."""

import math

import numpy as np
import pytest
from scipy import stats

from trainer.significance import BOOTSTRAP_SEED, N_RESAMPLES, paired

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
