"""Supervised training with cross-entropy: the paper's baseline, "same epochs" and "full labelled" methods, and
the loop the teacher MLPs and every stage 1 use."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from trainer.algorithms.base import Method, register
from trainer.algorithms.common import confidence, masked_mean, update
from trainer.data import epoch_batches
from trainer.models import StackedAdam, StackedMLP


def ce_loss(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over each run's valid samples; logits (M, B, C), y/mask (M, B) -> (M,)."""
    return masked_mean(F.cross_entropy(logits.transpose(1, 2), y, reduction="none"), mask)


def train_supervised(model: StackedMLP, opt: StackedAdam, X: torch.Tensor, y: torch.Tensor,
                     pools: list[torch.Tensor], epochs: int, batch_size: int, gens: list[torch.Generator],
                     log=None, batch_loss=None):
    """``epochs`` passes over each run's labelled rows ``pools[r]`` in shuffled batches, on X's device (with ``log``,
    as many as its protocol gives the stage: ``log.epochs``); ``batch_loss(idx, valid, active) -> (loss (M,),
    logits (M, B, C))`` replaces the cross-entropy (trainer.robust.train_robust)."""
    for _ in (range(epochs) if log is None else log.epochs(epochs)):
        for idx, valid, active in epoch_batches(pools, batch_size, gens, None if log is None else log.live, X.device):
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


@register
class Baseline(Method):
    """Supervised on the labelled share (the paper's baseline).

    Cross-entropy on each run's labelled rows for --epochs-baseline epochs."""

    name = "baseline"

    def epochs(self, cfg) -> int:
        return cfg.epochs_baseline

    def run(self, ctx):
        ctx.supervised(ctx.data.labeled, ctx.cfg.epochs_baseline, "supervised")
        return ctx.policy


def two_stages(ctx, rows) -> None:
    """Supervised training on ``rows`` for both stages' epochs: one stage of --epochs-baseline + --epochs-stage2
    epochs (the paper), or under a protocol that stops on validation (ours) a stage 1 and, with a fresh Adam like
    every stage 2, a 'continued' stage, each until its validation macro-F1 stops improving."""
    if ctx.cfg.stop_rule is None:
        ctx.supervised(rows, ctx.cfg.epochs_total, "supervised")
        return
    ctx.supervised(rows, ctx.cfg.epochs_baseline, "supervised")
    ctx.opt = ctx.new_opt(ctx.policy)
    ctx.supervised(rows, ctx.cfg.epochs_stage2, "continued")


@register
class SameEpochs(Method):
    """The baseline trained for both stages' epochs (the paper's "same epochs").

    Cross-entropy on each run's labelled rows for --epochs-baseline + --epochs-stage2 epochs (--protocol
    converged: two supervised stages, each until validation stops improving)."""

    name = "same-epochs"

    def run(self, ctx):
        two_stages(ctx, ctx.data.labeled)
        return ctx.policy


@register
class FullLabeled(Method):
    """Supervised on every training label (the paper's "full labelled").

    Cross-entropy on each run's whole training split but its validation rows for --epochs-baseline +
    --epochs-stage2 epochs (--protocol converged: two supervised stages, as same-epochs)."""

    name = "full-labeled"
    all_labels = True

    def columns(self, cfg) -> dict:
        return {**super().columns(cfg), "labeled_fraction": 1.0}

    def train_rows(self, data) -> list:
        """Each run's training split without its validation rows (those only choose)."""
        if not data.val or not any(len(v) for v in data.val):
            return data.train_all
        return [torch.as_tensor(np.setdiff1d(t.numpy(), v)) for t, v in zip(data.train_all, data.val)]

    def run(self, ctx):
        two_stages(ctx, self.train_rows(ctx.data))
        return ctx.policy
