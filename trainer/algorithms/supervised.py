"""Supervised training (the baseline, same-epochs, full-labeled, and the teacher MLPs): cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainer.algorithms.common import confidence, masked_mean, update
from trainer.data import epoch_batches
from trainer.models import StackedAdam, StackedMLP


def ce_loss(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over each run's valid samples; logits (M, B, C), y/mask (M, B) -> (M,)."""
    return masked_mean(F.cross_entropy(logits.transpose(1, 2), y, reduction="none"), mask)


def train_supervised(model: StackedMLP, opt: StackedAdam, X: torch.Tensor, y: torch.Tensor,
                     pools: list[torch.Tensor], epochs: int, batch_size: int, gens: list[torch.Generator],
                     log=None, batch_loss=None):
    """``epochs`` passes over each run's labelled rows ``pools[r]`` in shuffled batches; ``batch_loss(idx, valid,
    active) -> (loss (M,), logits (M, B, C))`` replaces the cross-entropy (trainer.robust.train_robust)."""
    for _ in range(epochs):
        for idx, valid, active in epoch_batches(pools, batch_size, gens):
            if batch_loss is None:
                logits = model(X[idx])  # (M, B, C)
                loss = ce_loss(logits, y[idx], valid)  # (M,)
            else:
                loss, logits = batch_loss(idx, valid, active)
            update(opt, loss, active)
            if log is not None:
                log.step(active, loss, confidence(logits, valid))
        if log is not None:
            log.end_epoch()
