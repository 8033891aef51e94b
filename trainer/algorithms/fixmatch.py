"""FixMatch (Sohn et al. 2020, "FixMatch: Simplifying Semi-Supervised Learning with Consistency and Confidence")
on cached features, as stage 2 after the supervised baseline.

Eq. 3: l_s = 1/B sum_b H(p_b, p_m(y | alpha(x_b))), cross-entropy on weakly augmented labelled samples.
Eq. 4: l_u = 1/(mu B) sum_b 1(max(q_b) >= tau) H(q^_b, p_m(y | A(u_b))), q_b = p_m(y | alpha(u_b)) on the weak
view, q^_b = argmax q_b (a constant), A the strong augmentation. Loss: l_s + lambda_u l_u (tau 0.95, lambda_u 1).
Ours (docs/TRAINER.md): images' flip-and-shift / RandAugment become feature-space views. Weak alpha: Gaussian
noise of ``weak_noise`` x each feature's pool std on the pooled vector. Strong A: a random frame-crop mean (where
frames and pooled features share a space) or the pooled vector, then ``strong_noise`` noise and feature dropout.
mu = 1 (one labelled batch per unlabelled batch, the pool being about as large as the labelled half), Adam at the
run's lr, and the trained model itself is reported (no EMA).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainer.algorithms.base import CropOptions, PoolOptions, TwoStage, option, register
from trainer.algorithms.common import active_rand, confidence, masked_mean, perturb, pool_std, update
from trainer.algorithms.pseudolabel import pseudo_labels
from trainer.algorithms.supervised import ce_loss
from trainer.data import epoch_batches


def fixmatch_loss(logits_l: torch.Tensor, y_l: torch.Tensor, valid_l: torch.Tensor, logits_weak: torch.Tensor,
                  logits_strong: torch.Tensor, valid_u: torch.Tensor, tau: float = 0.95,
                  lambda_u: float = 1.0) -> torch.Tensor:
    """l_s (eq. 3) + lambda_u * l_u (eq. 4) per run; logits (M, B, C), y/valid (M, B) -> (M,).

    ``logits_l`` on the weak view of labelled samples; ``logits_weak`` / ``logits_strong`` on the two views of
    the same unlabelled samples. 1/(mu B) counts every valid unlabelled sample, kept or not.
    """
    q_hat, keep = pseudo_labels(logits_weak, tau)  # (M, B)
    l_u = masked_mean(F.cross_entropy(logits_strong.transpose(1, 2), q_hat, reduction="none") * keep, valid_u)
    return ce_loss(logits_l, y_l, valid_l) + lambda_u * l_u


def train_fixmatch(ctx, opts: FixMatchOptions):
    """Stage 2 on each run's unlabelled rows ``ctx.data.unlabeled[r]`` of ``Xu``, a labelled batch beside each
    unlabelled batch (``ctx.labelled_stream()``).

    Frame crops ``ctx.data.crops`` (S, N_u, V, D), run r using set ``crop_sets[r]``, give the strong views; without
    them the strong view perturbs the pooled vector. Run r draws its views from its own ``ctx.view_gens[r]``.
    Curves get ``mask_rate``, the share of unlabelled samples whose weak-view confidence reaches tau.
    """
    policy, Xu, pools, data, view_gens = ctx.policy, ctx.data.Xu, ctx.data.unlabeled, ctx.data, ctx.view_gens
    opt, labelled = ctx.new_opt(policy), ctx.labelled_stream()
    std = pool_std(Xu, pools, ctx.cfg.head != "pooled")  # (M, 1, D); (M, 1, 1, D) for frames
    for _ in ctx.log.epochs(ctx.cfg.epochs_stage2):
        for idx, valid, active in epoch_batches(pools, ctx.cfg.batch_size, ctx.gens, ctx.log.live, Xu.device):
            x_l, y_l, valid_l = labelled.batch(active)  # (M, B, D), (M, B), (M, B)
            x_u = Xu[idx]  # (M, B, D)
            weak_l = perturb(x_l, std, opts.fixmatch_weak_noise, 0.0, view_gens, active)
            weak_u = perturb(x_u, std, opts.fixmatch_weak_noise, 0.0, view_gens, active)
            if data.crops is not None:
                a = active_rand("randint", idx.shape[1:], view_gens, active, data.crops.shape[2], Xu.device)
                x_u = data.crops[data.crop_sets.unsqueeze(1), idx, a]  # (M, B, D)
            strong_u = perturb(x_u, std, opts.fixmatch_strong_noise, opts.fixmatch_strong_dropout, view_gens, active)
            with torch.no_grad():
                logits_weak = policy(weak_u)  # (M, B, C), only its argmax and confidence are used
            logits_l, logits_strong = policy(weak_l), policy(strong_u)  # (M, B, C)
            loss = fixmatch_loss(logits_l, y_l, valid_l, logits_weak, logits_strong, valid,
                                 opts.fixmatch_threshold, opts.fixmatch_lambda_u)  # (M,)
            update(opt, loss, active)
            keep = pseudo_labels(logits_weak, opts.fixmatch_threshold)[1]
            ctx.log.step(active, loss, confidence(logits_weak, valid), mask_rate=masked_mean(keep.float(), valid))
        ctx.log.end_epoch()


@dataclass(frozen=True)
class FixMatchOptions(PoolOptions, CropOptions):
    """FixMatch's threshold, weight and feature-space views (ours)."""

    fixmatch_threshold: float = option(0.95, ge=0, le=1)
    """Confidence threshold tau. Of the weak-view pseudo-label (Sohn et al. 2020: 0.95)."""
    fixmatch_lambda_u: float = option(1.0, ge=0)
    """Weight lambda_u of the unlabelled term. Sohn et al. 2020: 1."""
    fixmatch_views: str = option("auto", choices=("auto", "frames", "noise"))
    """Strong view. 'frames' (a random frame-crop mean, then noise + dropout), 'noise' (noise + dropout
    on the pooled vector), 'auto' (frames where frames and pooled features share a space)."""
    fixmatch_weak_noise: float = option(0.05, ge=0)
    """Weak-view noise std (ours). In units of each feature's pool std."""
    fixmatch_strong_noise: float = option(0.2, ge=0)
    """Strong-view noise std (ours). In units of each feature's pool std."""
    fixmatch_strong_dropout: float = option(0.2, ge=0, lt=1)
    """Strong-view feature dropout (ours)."""

    @property
    def views(self) -> str:
        return self.fixmatch_views


@register
class FixMatch(TwoStage):
    """FixMatch (Sohn et al. 2020) with feature-space views, after the baseline.

    Weak and strong views of each pool sample (ours: noise, dropout, frame crops), the supervised term kept."""

    name = "fixmatch"
    Options = FixMatchOptions

    def tags(self, cfg) -> list[str]:
        o = cfg.options
        changed = o.changed((("fixmatch_threshold", "tau"), ("fixmatch_lambda_u", "lambda"),
                             ("fixmatch_views", "views-")))
        return changed + o.pool_tags()

    def stage2(self, ctx):
        ctx.log.begin("fixmatch", ctx.policy, ctx.cfg.epochs_stage2)
        train_fixmatch(ctx, ctx.cfg.options)
        return ctx.policy
