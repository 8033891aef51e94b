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

import torch
import torch.nn.functional as F

from trainer.algorithms.common import (LabelledStream, active_rand, confidence, masked_mean, perturb, pool_std,
                                       update)
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


def train_fixmatch(policy, opt, Xu: torch.Tensor, pools: list[torch.Tensor], epochs: int, batch_size: int,
                   gens: list[torch.Generator], view_gens: list[torch.Generator], labelled: LabelledStream, cfg,
                   crops: torch.Tensor | None = None, crop_sets: torch.Tensor | None = None, log=None):
    """Stage 2 on unlabelled rows ``pools[r]`` of ``Xu``, a labelled batch beside each unlabelled batch.

    ``crops`` (S, N_u, V, D) frame-crop view sets, run r using set ``crop_sets[r]`` for its strong views; without
    them the strong view perturbs the pooled vector. Run r draws its views from its own ``view_gens[r]``. Curves
    get ``mask_rate``, the share of unlabelled samples whose weak-view confidence reaches tau.
    """
    std = pool_std(Xu, pools, cfg.head != "pooled")  # (M, 1, D); (M, 1, 1, D) for frames
    for _ in range(epochs):
        for idx, valid, active in epoch_batches(pools, batch_size, gens):
            x_l, y_l, valid_l = labelled.batch(active)  # (M, B, D), (M, B), (M, B)
            x_u = Xu[idx]  # (M, B, D)
            weak_l = perturb(x_l, std, cfg.fixmatch_weak_noise, 0.0, view_gens, active)
            weak_u = perturb(x_u, std, cfg.fixmatch_weak_noise, 0.0, view_gens, active)
            if crops is not None:
                a = active_rand("randint", idx.shape[1:], view_gens, active, crops.shape[2])  # (M, B)
                x_u = crops[crop_sets.unsqueeze(1), idx, a]  # (M, B, D)
            strong_u = perturb(x_u, std, cfg.fixmatch_strong_noise, cfg.fixmatch_strong_dropout, view_gens, active)
            with torch.no_grad():
                logits_weak = policy(weak_u)  # (M, B, C), only its argmax and confidence are used
            logits_l, logits_strong = policy(weak_l), policy(strong_u)  # (M, B, C)
            loss = fixmatch_loss(logits_l, y_l, valid_l, logits_weak, logits_strong, valid,
                                 cfg.fixmatch_threshold, cfg.fixmatch_lambda_u)  # (M,)
            update(opt, loss, active)
            if log is not None:
                keep = pseudo_labels(logits_weak, cfg.fixmatch_threshold)[1]
                log.step(active, loss, confidence(logits_weak, valid), mask_rate=masked_mean(keep.float(), valid))
        if log is not None:
            log.end_epoch()
