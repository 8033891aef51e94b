"""DINO (Caron et al. 2021) adapted to a classifier on cached features.

Choices (docs/TRAINER.md): the student is the policy; its C class logits are the DINO output (no extra
projection head, so the method stays a classifier and is evaluated as one). The teacher is an EMA of the
student (momentum rising from ``m0`` to 1 on a cosine schedule over each run's own steps); teacher outputs are
centered (EMA of batch means) and sharpened with a temperature warmed up linearly. Two global views per
sample: two random frame-crop means when frames are stored, else Gaussian noise plus feature dropout on
the pooled vector. The EMA teacher is the model evaluated and reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from trainer.algorithms.base import CropOptions, PoolOptions, TwoStage, option, register
from trainer.algorithms.common import active_rand, confidence, masked_mean, perturb, pool_std, update
from trainer.data import epoch_batches
from trainer.devices import place


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


def member_momentum(m0: float, totals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each member's own cosine schedule (``momentum_schedule`` over its ``totals[r]`` steps), padded with its last
    value: (M, max total) and the last index of each member (M,)."""
    totals = totals.clamp_min(1)
    width = int(totals.max())
    rows = [momentum_schedule(m0, int(t)) for t in totals]
    sched = torch.stack([torch.cat([r, r[-1:].expand(width - len(r))]) for r in rows])  # (M, T_max)
    return sched, totals - 1


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


def train_dino(ctx, teacher, opts: DinoOptions):
    """DINO on each run's unlabelled rows (``ctx``: the student policy, the pool, the generators, the log) with
    the EMA ``teacher``; views are the frame crops ``ctx.data.crops`` (S, N_u, V, D), run r using set
    ``crop_sets[r]``, else noise views of ``Xu``. Run r draws its views from its own ``ctx.view_gens[r]``.
    Returns the teacher-output center (M, 1, C)."""
    student, Xu, pools, data = ctx.policy, ctx.data.Xu, ctx.data.unlabeled, ctx.data
    epochs, batch_size, view_gens = ctx.cfg.epochs_stage2, ctx.cfg.batch_size, ctx.view_gens
    opt = ctx.new_opt(student)
    # each member's momentum follows its own step count over its own steps (its pool size), so a member's
    # schedule does not depend on the pool sizes of the members sharing its stack (unequal folds)
    totals = torch.tensor([epochs * math.ceil(len(p) / batch_size) for p in pools])  # (M,)
    schedule, last = member_momentum(opts.dino_momentum, totals)  # (M, T_max), (M,) on the host
    member = torch.arange(len(pools))
    device = Xu.device
    center = torch.zeros(student.n_members, 1, student.w2.shape[2], device=device)  # (M, 1, C)
    std = pool_std(Xu, pools, ctx.cfg.head != "pooled")  # (M, 1, D); (M, 1, 1, D) for frames
    step = torch.zeros(len(pools), dtype=torch.long)  # (M,) each member's own steps so far
    for epoch in ctx.log.epochs(epochs):
        tau_t = teacher_temperature(epoch, epochs, opts.dino_warmup_teacher_temp, opts.dino_teacher_temp,
                                    opts.dino_warmup_frac)
        for idx, valid, active in epoch_batches(pools, batch_size, ctx.gens, ctx.log.live, device):
            on = place(active, device)  # (M,)
            if data.crops is not None:
                n_views, sets = data.crops.shape[2], data.crop_sets.unsqueeze(1)  # sets (M, 1)
                a = active_rand("randint", idx.shape[1:], view_gens, active, n_views, device)  # (M, B) two crops
                b = (a + 1 + active_rand("randint", idx.shape[1:], view_gens, active, n_views - 1, device)) % n_views
                v1, v2 = data.crops[sets, idx, a], data.crops[sets, idx, b]  # (M, B, D)
            else:
                v1, v2 = noise_views(Xu[idx], std, opts.dino_noise, opts.dino_dropout, view_gens, active)
            s1, s2 = student(v1), student(v2)  # (M, B, C)
            with torch.no_grad():
                t1, t2 = teacher(v1), teacher(v2)
            loss = dino_loss(s1, s2, t1, t2, center, opts.dino_student_temp, tau_t, valid)  # (M,)
            update(opt, loss, active)
            momentum = place(schedule[member, torch.minimum(step, last)], device)  # (M,)
            ema_update(teacher, student, torch.where(on, momentum, 1.0))
            with torch.no_grad():
                v = valid.to(loss.dtype).unsqueeze(-1)  # (M, B, 1)
                batch_center = ((t1 + t2) * v).sum(1, keepdim=True) / (2 * v.sum(1, keepdim=True).clamp_min(1))
                cm = torch.where(on, opts.dino_center_momentum, 1.0).view(-1, 1, 1)
                center = center * cm + batch_center * (1 - cm)
                conf = confidence(t1, valid)
            step += active.long()
            ctx.log.step(active, loss, conf)
        ctx.log.end_epoch()
    return center


@dataclass(frozen=True)
class DinoOptions(PoolOptions, CropOptions):
    """DINO's views, EMA teacher and temperatures."""

    dino_views: str = option("auto", choices=("auto", "frames", "noise"))
    """View kind. 'frames' (random frame-crop means), 'noise' (noise + dropout on pooled), 'auto'."""
    dino_noise: float = 0.1
    """Noise std of pooled views. In units of each feature's std."""
    dino_dropout: float = 0.1
    """Feature dropout of pooled views."""
    dino_momentum: float = 0.996
    """EMA momentum at the start. A cosine schedule raises it to 1 by the end."""
    dino_student_temp: float = 0.1
    """Student softmax temperature."""
    dino_teacher_temp: float = 0.07
    """Teacher temperature after the warm-up."""
    dino_warmup_teacher_temp: float = 0.04
    """Teacher temperature at the start."""
    dino_warmup_frac: float = 0.3
    """Share of the epochs warming up. The teacher temperature rises linearly over it."""
    dino_center_momentum: float = 0.9
    """EMA momentum of the teacher-output center."""

    @property
    def views(self) -> str:
        return self.dino_views


@register
class DINO(TwoStage):
    """DINO (Caron et al. 2021) on the unlabelled pool, after the baseline.

    The EMA teacher is the model reported."""

    name = "dino"
    Options = DinoOptions

    def stage2(self, ctx):
        teacher = ctx.policy.frozen_copy()
        ctx.log.begin("dino", teacher, ctx.cfg.epochs_stage2)
        train_dino(ctx, teacher, ctx.cfg.options)
        return teacher
