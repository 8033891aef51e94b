"""Per-input GRPO (ours, beside the paper's B-GRPO): the group is the G labels drawn for one input.

GRPO (Shao et al. 2024) draws G responses per query from pi_old and normalises each response's reward within
its query's group; the B-GRPO paper replaces the group by the batch because a classifier's prediction for an
input is fixed. Here the response is a class label o_{i,g} ~ pi_old(.|q_i), g = 1..G, rewarded by the paper's
rewards as the answer (``trainer.rewards``, ``o``: r1/r2 read pi_old(o|q_i), r3/r4 compare o with the teacher's
class; r5 compares distributions and is equal over a group). Eq. 6 is taken over the G samples of each input,
eq. 7-8 over all B x G samples (GRPO's 1/B sum_i 1/G sum_g), with B-GRPO's own functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainer.algorithms.base import option, register
from trainer.algorithms.bgrpo import GRPOFamily, RewardOptions, advantage, clipped_updates, policy_batches
from trainer.algorithms.common import active_multinomial, masked_mean


def group_advantage(r: torch.Tensor, mode: str = "positive", mask: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 6 with each input's G samples as the group: r (..., B, G) -> A (..., B, G).

    A_{i,g} = (r_{i,g} - mean_g r_{i,.}) / (std_g r_{i,.} + 1e-4), unbiased std over the G samples of input i;
    ``mode`` as in ``bgrpo.advantage`` (positive / signed / none). An input whose G rewards are all equal gets
    A = 0 exactly; ``mask`` (..., B) marks valid inputs (padding gets 0).
    """
    m = None if mask is None else mask.unsqueeze(-1).expand(r.shape)  # (..., B, G)
    return advantage(r, mode, m)


def flat_share(r: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Share of valid inputs whose G rewards are all equal (no signal, A = 0); r (M, B, G), mask (M, B) -> (M,)."""
    flat = (r == r[..., :1]).all(-1).to(r.dtype)  # (M, B)
    return masked_mean(flat, mask)


def train_grpo(ctx, opts: GRPOOptions, logp_ref_all: torch.Tensor, reward_fn,
               p_teacher_all: torch.Tensor | None = None) -> None:
    """Per-input GRPO on each run's unlabelled rows: every input of a batch gets G = ``opts.group_size`` labels
    drawn from pi_old (run r from its own ``ctx.view_gens[r]``), each rewarded, normalised within its input's group.

    Arguments as ``bgrpo.train_bgrpo``; ``reward_fn(p, p_t, o) -> r`` with p, p_t (M, B, G, C) and o (M, B, G).
    All B x G samples of the M runs are one tensor: one forward pass per update, no loop over samples.
    Curves: approx_kl, clip_frac (as B-GRPO) and flat_groups (``flat_share``).
    """
    opt = ctx.new_opt(ctx.policy)
    sup = ctx.labelled_stream() if opts.sup_weight > 0 else None
    run = torch.arange(logp_ref_all.shape[0], device=logp_ref_all.device).unsqueeze(1)  # (M, 1)
    for idx, valid, active, x, logp_all, p_old in policy_batches(ctx):
        with torch.no_grad():
            o = active_multinomial(p_old, ctx.view_gens, active, opts.group_size)  # (M, B, G)
            shape = (*o.shape, p_old.shape[-1])  # (M, B, G, C)
            p_t = p_teacher_all[run, idx].unsqueeze(2).expand(shape) if p_teacher_all is not None else None
            r = reward_fn(p_old.unsqueeze(2).expand(shape), p_t, o)  # (M, B, G)
            adv = group_advantage(r, opts.advantage, valid).flatten(1)  # (M, B * G)
            mask = valid.unsqueeze(-1).expand(o.shape).flatten(1)  # (M, B * G)
            logp_ref = logp_ref_all[run, idx].gather(-1, o).flatten(1)  # (M, B * G)
            logp_old = logp_all.gather(-1, o).flatten(1)  # (M, B * G)
        loss, extra = clipped_updates(ctx.policy, opt, x, logp_all, o, logp_old, logp_ref, adv, mask, active, opts,
                                      sup)
        ctx.log.step(active, loss, masked_mean(p_old.amax(-1), valid), masked_mean(r.mean(-1), valid),
                     flat_groups=flat_share(r, valid), **extra)


@dataclass(frozen=True)
class GRPOOptions(RewardOptions):
    """Per-input GRPO: the reward options and the group size."""

    group_size: int = option(8, ge=2)
    """Labels G drawn per input. From pi_old; eq. 6 normalises each input's G rewards."""


@register
class GRPO(GRPOFamily):
    """Per-input GRPO (ours): the G labels drawn for an input are its group.

    The baseline, then eq. 7-8 over the B x G labels drawn from pi_old, eq. 6 within each input's group."""

    name = "grpo"
    Options = GRPOOptions

    def train(self, ctx, logp_ref_all, reward_fn, p_teacher_all) -> None:
        train_grpo(ctx, ctx.cfg.options, logp_ref_all, reward_fn, p_teacher_all)
