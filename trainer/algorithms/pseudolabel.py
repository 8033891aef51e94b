"""Pseudo-labelling (Lee 2013, "Pseudo-Label: The Simple and Efficient Semi-Supervised Learning Method for Deep
Neural Networks") as stage 2 after the supervised baseline, with a confidence threshold.

Eq. 1: the pseudo-label of an unlabelled sample is the class of maximum predicted probability, recomputed at
every weight update. Eq. 15: L = 1/n sum_labelled CE(y, f) + alpha(t) 1/n' sum_unlabelled CE(y', f').
Eq. 16: alpha(t) = 0 before T1, alpha_f (t - T1) / (T2 - T1) up to T2, alpha_f after.
Ours (docs/TRAINER.md): T1 is the start of stage 2 (the baseline is the warm-up), T2 - T1 = ``rampup`` x the
stage-2 epochs; only unlabelled samples whose max probability is at least ``tau`` contribute (Lee uses all),
and n' counts every unlabelled sample of the batch (FixMatch's normalisation), so few confident samples give a
small term. Each unlabelled batch of a run is paired with one labelled batch of the same size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainer.algorithms.base import PoolOptions, TwoStage, option, register
from trainer.algorithms.common import confidence, masked_mean, update
from trainer.algorithms.supervised import ce_loss
from trainer.data import epoch_batches


def pseudo_labels(logits: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1 with a threshold: (argmax class (..., B), whether its probability is >= tau (..., B)), no gradient."""
    p = logits.detach().softmax(-1)  # (..., B, C)
    conf, y_hat = p.max(-1)
    return y_hat, conf >= tau


def alpha_schedule(epoch: int, epochs: int, alpha_f: float, rampup: float) -> float:
    """Eq. 16 over stage 2: alpha_f * min(1, (epoch + 1) / (rampup * epochs)) for stage-2 epoch ``epoch`` (from 0).

    T1 = the start of stage 2; a ``rampup`` of 0 gives alpha_f from the first epoch.
    """
    t2 = rampup * epochs
    return alpha_f if t2 <= 0 else alpha_f * min(1.0, (epoch + 1) / t2)


def pseudo_label_loss(logits_l: torch.Tensor, y_l: torch.Tensor, valid_l: torch.Tensor, logits_u: torch.Tensor,
                      valid_u: torch.Tensor, alpha: float, tau: float) -> torch.Tensor:
    """Eq. 15 with a confidence threshold, per run; logits (M, B, C), y/valid (M, B) -> (M,).

        L = 1/n sum_i CE(y_i, f(x_i)) + alpha * 1/n' sum_j 1[max p(x_j) >= tau] CE(argmax p(x_j), f(x_j)),

    n (n') the valid labelled (unlabelled) samples of the batch; the pseudo-label is a constant (no gradient).
    """
    y_hat, keep = pseudo_labels(logits_u, tau)
    unsup = masked_mean(F.cross_entropy(logits_u.transpose(1, 2), y_hat, reduction="none") * keep, valid_u)
    return ce_loss(logits_l, y_l, valid_l) + alpha * unsup


def train_pseudo_label(ctx, opts: PseudoLabelOptions):
    """Stage 2: each unlabelled batch of each run (rows ``ctx.data.unlabeled[r]`` of ``Xu``) with a labelled batch
    beside it (``ctx.labelled_stream()``).

    Curves get ``mask_rate`` (share of unlabelled samples above tau) and ``alpha`` (eq. 16's weight).
    """
    policy, Xu, epochs, tau = ctx.policy, ctx.data.Xu, ctx.cfg.epochs_stage2, opts.pseudo_threshold
    opt, labelled = ctx.new_opt(policy), ctx.labelled_stream()
    for epoch in ctx.log.epochs(epochs):
        alpha = alpha_schedule(epoch, epochs, opts.pseudo_weight, opts.pseudo_rampup)
        for idx, valid, active in epoch_batches(ctx.data.unlabeled, ctx.cfg.batch_size, ctx.gens, ctx.log.live,
                                                Xu.device):
            x_l, y_l, valid_l = labelled.batch(active)  # (M, B, D), (M, B), (M, B)
            logits_l, logits_u = policy(x_l), policy(Xu[idx])  # (M, B, C)
            loss = pseudo_label_loss(logits_l, y_l, valid_l, logits_u, valid, alpha, tau)  # (M,)
            update(opt, loss, active)
            keep = pseudo_labels(logits_u, tau)[1]
            ctx.log.step(active, loss, confidence(logits_u, valid), mask_rate=masked_mean(keep.float(), valid),
                         alpha=torch.full(active.shape, alpha))
        ctx.log.end_epoch()


@dataclass(frozen=True)
class PseudoLabelOptions(PoolOptions):
    """Pseudo-labelling's threshold and eq. 16's weight schedule."""

    pseudo_threshold: float = option(0.95, ge=0, le=1)
    """Confidence a pool sample needs. Its max class probability (ours: Lee 2013 uses every sample;
    the threshold is FixMatch's value)."""
    pseudo_weight: float = option(3.0, ge=0)
    """Final weight alpha_f of the pseudo-label term. Lee 2013, eq. 16: 3."""
    pseudo_rampup: float = option(0.5, ge=0, le=1)
    """Share of stage 2 ramping alpha up. alpha(t) rises linearly from 0 to alpha_f (eq. 16's T1..T2;
    ours: T1 is the start of stage 2, the baseline being the warm-up)."""


@register
class PseudoLabel(TwoStage):
    """Pseudo-labelling (Lee 2013) with a threshold, after the baseline.

    Confident pool samples are trained on their predicted class beside the supervised term on the labelled rows."""

    name = "pseudo-label"
    Options = PseudoLabelOptions

    def tags(self, cfg) -> list[str]:
        o = cfg.options
        changed = o.changed((("pseudo_threshold", "tau"), ("pseudo_weight", "alpha"), ("pseudo_rampup", "ramp")))
        return changed + o.pool_tags()

    def stage2(self, ctx):
        ctx.log.begin("pseudo-label", ctx.policy, ctx.cfg.epochs_stage2)
        train_pseudo_label(ctx, ctx.cfg.options)
        return ctx.policy
