"""DINO (Caron et al. 2021) adapted to a classifier on cached features.

Choices (docs/TRAINER.md): the student is the policy; its C class logits are the DINO output (no extra
projection head, so the method stays a classifier and is evaluated as one). The teacher is an EMA of the
student (momentum rising from ``m0`` to 1 on a cosine schedule over all steps); teacher outputs are
centered (EMA of batch means) and sharpened with a temperature warmed up linearly. Two global views per
sample: two random frame-crop means when frames are stored, else Gaussian noise plus feature dropout on
the pooled vector. The EMA teacher is the model evaluated and reported.
"""

from __future__ import annotations

import math

import torch

from trainer.algorithms.common import active_rand, confidence, masked_mean, perturb, pool_std, update
from trainer.data import epoch_batches


def dino_loss(s1: torch.Tensor, s2: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor, center: torch.Tensor,
              tau_s: float, tau_t: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-view cross-entropy H(P_t(view a), P_s(view b)), a != b, averaged over the two pairs.

    s*, t* (..., B, C) student/teacher logits; center (..., 1, C). P_t = softmax((t - center) / tau_t),
    log P_s = log_softmax(s / tau_s). Returns the mean over the last-but-one dim (valid samples), shape (...).
    """
    q1 = ((t1 - center) / tau_t).softmax(-1).detach()
    q2 = ((t2 - center) / tau_t).softmax(-1).detach()
    ce = 0.5 * (-(q1 * (s2 / tau_s).log_softmax(-1)).sum(-1) - (q2 * (s1 / tau_s).log_softmax(-1)).sum(-1))
    return masked_mean(ce, mask)


def momentum_schedule(m0: float, total_steps: int) -> torch.Tensor:
    """Cosine schedule from m0 to 1 over ``total_steps`` (DINO's teacher momentum); (total_steps,)."""
    i = torch.arange(total_steps, dtype=torch.float64)
    return (1 - (1 - m0) * (torch.cos(math.pi * i / max(1, total_steps)) + 1) / 2).float()


def teacher_temperature(epoch: int, epochs: int, warm: float, final: float, warmup_frac: float) -> float:
    """Linear warm-up of the teacher temperature from ``warm`` to ``final`` over the first epochs."""
    n = max(1, round(warmup_frac * epochs))
    return final if epoch >= n else warm + (final - warm) * epoch / n


@torch.no_grad()
def ema_update(teacher, student, momentum: torch.Tensor):
    """teacher = m * teacher + (1 - m) * student, per member; momentum (M,) (1 leaves a member as is)."""
    for pt, ps in zip(teacher.parameters(), student.parameters()):
        m = momentum.view((-1,) + (1,) * (pt.dim() - 1))
        pt.mul_(m).add_((1 - m) * ps)


def noise_views(x: torch.Tensor, std: torch.Tensor, noise: float, p_drop: float, gens: list[torch.Generator],
                active: torch.Tensor | None = None):
    """Two views of pooled vectors (``common.perturb`` twice): noise in units of ``std``, then feature dropout."""
    return [perturb(x, std, noise, p_drop, gens, active) for _ in range(2)]


def train_dino(student, teacher, opt, Xu: torch.Tensor, pools: list[torch.Tensor], epochs: int,
               batch_size: int, gens: list[torch.Generator], view_gens: list[torch.Generator], cfg,
               crops: torch.Tensor | None = None, crop_sets: torch.Tensor | None = None, log=None):
    """DINO on unlabelled rows; ``crops`` (S, N_u, V, D) frame-crop view sets, run r using set ``crop_sets[r]``,
    else noise views of ``Xu``. Run r draws its views from its own ``view_gens[r]``."""
    m = student.n_members
    steps_per_epoch = max(math.ceil(len(p) / batch_size) for p in pools)
    schedule = momentum_schedule(cfg.dino_momentum, epochs * steps_per_epoch)
    center = torch.zeros(m, 1, student.w2.shape[2])  # (M, 1, C)
    std = pool_std(Xu, pools, cfg.head != "pooled")  # (M, 1, D); (M, 1, 1, D) for frames
    step = 0
    for epoch in range(epochs):
        tau_t = teacher_temperature(epoch, epochs, cfg.dino_warmup_teacher_temp, cfg.dino_teacher_temp,
                                    cfg.dino_warmup_frac)
        for idx, valid, active in epoch_batches(pools, batch_size, gens):
            if crops is not None:
                n_views, sets = crops.shape[2], crop_sets.unsqueeze(1)  # sets (M, 1)
                a = active_rand("randint", idx.shape[1:], view_gens, active, n_views)  # (M, B) two distinct crops
                b = (a + 1 + active_rand("randint", idx.shape[1:], view_gens, active, n_views - 1)) % n_views
                v1, v2 = crops[sets, idx, a], crops[sets, idx, b]  # (M, B, D)
            else:
                v1, v2 = noise_views(Xu[idx], std, cfg.dino_noise, cfg.dino_dropout, view_gens, active)
            s1, s2 = student(v1), student(v2)  # (M, B, C)
            with torch.no_grad():
                t1, t2 = teacher(v1), teacher(v2)
            loss = dino_loss(s1, s2, t1, t2, center, cfg.dino_student_temp, tau_t, valid)  # (M,)
            update(opt, loss, active)
            ema_update(teacher, student, torch.where(active, schedule[min(step, len(schedule) - 1)], 1.0))
            with torch.no_grad():
                v = valid.to(loss.dtype).unsqueeze(-1)  # (M, B, 1)
                batch_center = ((t1 + t2) * v).sum(1, keepdim=True) / (2 * v.sum(1, keepdim=True).clamp_min(1))
                cm = torch.where(active, cfg.dino_center_momentum, 1.0).view(-1, 1, 1)
                center = center * cm + batch_center * (1 - cm)
                conf = confidence(t1, valid)
            step += 1
            if log is not None:
                log.step(active, loss, conf)
        if log is not None:
            log.end_epoch()
    return center
