"""Metrics: scikit-learn definitions and the batched torch macro-F1 used for curves."""

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from trainer.metrics import confusion, macro_f1_batched, scores


def test_scores_by_hand():
    y = np.array([0, 0, 0, 1, 1, 2])
    p = np.array([0, 0, 1, 1, 1, 0])
    s = scores(y, p)
    # F1: class0 p=2/3 r=2/3 -> 2/3 ; class1 p=2/3 r=1 -> 0.8 ; class2 -> 0
    assert s["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 0) / 3)
    assert s["ua"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert s["wa"] == pytest.approx(4 / 6)
    assert confusion(y, p, 4).tolist() == [[2, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]


def test_empty_test_set_is_an_error():
    with pytest.raises(ValueError, match="no test samples"):
        scores(np.array([]), np.array([]))


def test_batched_macro_f1_matches_sklearn_with_padding_and_absent_classes():
    rng = np.random.default_rng(0)
    m, t, c = 4, 50, 5
    y = torch.as_tensor(rng.integers(0, 3, (m, t)))  # classes 3, 4 never true
    pred = torch.as_tensor(rng.integers(0, 4, (m, t)))  # class 4 never predicted
    valid = torch.as_tensor(rng.random((m, t)) > 0.2)
    got = macro_f1_batched(y, pred, valid, c)
    for r in range(m):
        v = valid[r].numpy()
        want = f1_score(y[r].numpy()[v], pred[r].numpy()[v], average="macro", zero_division=0)
        assert got[r].item() == pytest.approx(want)


def test_wheel_metric_by_hand():
    S = np.array([[1.0, 0.8, 0.5], [0.8, 1.0, 0.0], [0.5, 0.0, 1.0]])
    y = np.array([0, 0, 1, 2])
    p = np.array([0, 1, 2, 0])  # right, near miss 0.8, opposite 0.0, 0.5
    assert scores(y, p, S)["wheel"] == pytest.approx((1 + 0.8 + 0 + 0.5) / 4)
    assert scores(y, y, S)["wheel"] == 1.0
    assert np.isnan(scores(y, p)["wheel"])
