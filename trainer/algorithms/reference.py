"""`trainer run reference` (ours): converged supervised references on each run's labelled rows, the policy MLP
trained until its validation macro-F1 stops improving and a standardised logistic regression (scikit-learn)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from trainer.algorithms.base import Method, Options, option, register
from trainer.algorithms.supervised import train_supervised
from trainer.frames import pooled_mean
from trainer.models import StackedAdam

LOGREG_MAX_ITER = 5000
"""lbfgs iterations allowed; enough for convergence on standardised features of a few thousand rows."""


def logistic_regression(X: torch.Tensor, y: torch.Tensor, train: np.ndarray, test: np.ndarray):
    """Fit StandardScaler + LogisticRegression (scikit-learn defaults, C = 1) on ``train`` rows of X (on the host,
    whatever the run's device).

    Returns the test predictions and {'train_loss': log-loss, 'train_macro_f1'} on the training rows.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score, log_loss
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    Xn, yn = X.cpu().numpy(), y.cpu().numpy()
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=LOGREG_MAX_ITER))
    clf.fit(Xn[train], yn[train])
    fit = {"train_loss": float(log_loss(yn[train], clf.predict_proba(Xn[train]), labels=clf.classes_)),
           "train_macro_f1": float(f1_score(yn[train], clf.predict(Xn[train]), average="macro", zero_division=0))}
    return clf.predict(Xn[test]), fit


@dataclass(frozen=True)
class ReferenceOptions(Options):
    """The converged MLP's learning rate, epoch limit, patience and validation share."""

    reference_lr: float = option(1e-3, gt=0)
    """Learning rate of the converged MLP (ours). Adam."""
    reference_max_epochs: int = option(2000, ge=1)
    """Most epochs of the MLP. It stops earlier on the validation rows."""
    reference_patience: int = option(50, ge=1)
    """Epochs without a better validation macro-F1. Then the MLP stops."""
    reference_val_fraction: float = option(0.2, gt=0, lt=1)
    """Validation share when --val-fraction is 0. Carved from the labelled rows."""


@register
class Reference(Method):
    """Converged supervised references on the labelled rows (ours).

    The policy MLP trained until its validation macro-F1 stops improving (its best validation epoch reported)
    and a standardised logistic regression (rows of method reference-logreg)."""

    name = "reference"
    Options = ReferenceOptions
    own_validation = True

    def validate(self, cfg) -> None:
        if cfg.layer == "weighted":
            raise ValueError("--layer weighted: the reference's logistic regression reads (N, D) features; use "
                             "--layer last or K with `trainer run reference`")

    def own_val_fraction(self, cfg) -> float:
        return cfg.reference_val_fraction

    def supports_protocol(self, name: str) -> bool:
        return name == "paper"  # converged by construction (--reference-patience, --reference-max-epochs)

    def run(self, ctx):
        cfg, data, log, o = ctx.cfg, ctx.data, ctx.log, ctx.cfg.options
        opt = StackedAdam(ctx.policy.parameters(), lr=o.reference_lr, weight_decay=cfg.weight_decay)
        log.begin("supervised", ctx.policy, o.reference_max_epochs)
        for _ in range(o.reference_max_epochs):
            train_supervised(ctx.policy, opt, data.X, data.y, data.labeled, 1, cfg.batch_size, ctx.gens, log)
            best = log.selected.get("supervised")
            if best is not None and bool((log.epoch - best.improved >= o.reference_patience).all()):
                break
        X_lr = pooled_mean(data.X) if cfg.head != "pooled" else data.X  # (N, D): frame means for a frame head
        ctx.companions["reference-logreg"] = [logistic_regression(X_lr, data.y, data.labeled[r].numpy(), data.test[r])
                                              for r in range(len(data.runs))]
        return ctx.policy
