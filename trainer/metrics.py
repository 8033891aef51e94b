"""EmoBox metrics: macro-F1, UA (balanced accuracy), WA (accuracy); scikit-learn for the reported numbers."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score


def scores(y_true: np.ndarray, y_pred: np.ndarray, S: np.ndarray | None = None) -> dict[str, float]:
    """macro_f1 (over the classes present in y_true or y_pred, as EmoBox), ua, wa, and wheel (ours: the mean
    emotion similarity S[true, pred] of ``trainer.emotion_space``, 1 = all right, near misses in between; NaN
    without S); all in [0, 1]."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.size == 0:
        raise ValueError("no test samples to score")
    return {
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "ua": float(balanced_accuracy_score(y_true, y_pred)),
        "wa": float(accuracy_score(y_true, y_pred)),
        "wheel": wheel_score(y_true, y_pred, S),
    }


def wheel_score(y_true: np.ndarray, y_pred: np.ndarray, S: np.ndarray | None) -> float:
    """Mean S[y_true, y_pred] over the samples (ours); NaN when S is None (classes not placed on the wheel)."""
    if S is None:
        return float("nan")
    return float(np.asarray(S)[np.asarray(y_true), np.asarray(y_pred)].mean())


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) counts, rows = true class, columns = predicted class."""
    return confusion_matrix(y_true, y_pred, labels=list(range(n_classes)))


def macro_f1_batched(y: torch.Tensor, pred: torch.Tensor, valid: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Macro-F1 of M runs at once, same definition as :func:`scores`; y, pred, valid (M, T) -> (M,).

    Used for the per-epoch curves, where calling scikit-learn M times per epoch would dominate the run.
    """
    m = y.shape[0]
    run = torch.arange(m, device=y.device).unsqueeze(1).expand_as(y)  # (M, T)
    flat = (run * n_classes + y) * n_classes + pred
    cm = torch.bincount(flat[valid], minlength=m * n_classes * n_classes)
    cm = cm.view(m, n_classes, n_classes).to(torch.float64)  # (M, C, C) true x pred
    tp = cm.diagonal(dim1=1, dim2=2)  # (M, C)
    support, predicted = cm.sum(2), cm.sum(1)  # (M, C)
    denom = support + predicted
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp_min(1), torch.zeros_like(tp))
    present = (denom > 0).to(torch.float64)
    return (f1 * present).sum(1) / present.sum(1).clamp_min(1)
