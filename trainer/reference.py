"""The converged linear reference of `trainer run reference` (ours): a standardised logistic regression."""

from __future__ import annotations

import numpy as np
import torch

LOGREG_MAX_ITER = 5000
"""lbfgs iterations allowed; enough for convergence on standardised features of a few thousand rows."""


def logistic_regression(X: torch.Tensor, y: torch.Tensor, train: np.ndarray, test: np.ndarray):
    """Fit StandardScaler + LogisticRegression (scikit-learn defaults, C = 1) on ``train`` rows of X.

    Returns the test predictions and {'train_loss': log-loss, 'train_macro_f1'} on the training rows.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score, log_loss
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    Xn, yn = X.numpy(), y.numpy()
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=LOGREG_MAX_ITER))
    clf.fit(Xn[train], yn[train])
    fit = {"train_loss": float(log_loss(yn[train], clf.predict_proba(Xn[train]), labels=clf.classes_)),
           "train_macro_f1": float(f1_score(yn[train], clf.predict(Xn[train]), average="macro", zero_division=0))}
    return clf.predict(Xn[test]), fit
