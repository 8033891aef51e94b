"""B-GRPO (paper section 3): the batch is the group; eq. 6 advantage; eq. 7 clipped loss; eq. 8 k3 KL.

Beyond the paper (ours, off by default, docs/TRAINER.md): a class-balanced advantage (``balance``: the group
of eq. 6 becomes each predicted class of the batch, or each sample is weighted by the inverse frequency of its
predicted class) and a supervised cross-entropy term on labelled rows beside the B-GRPO term (``sup``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainer.algorithms.common import LabelledStream, active_multinomial, masked_mean, update
from trainer.algorithms.supervised import ce_loss
from trainer.config import BALANCES
from trainer.data import epoch_batches

STD_EPS = 1e-4
"""Added to the batch standard deviation in eq. 6 (a batch of equal rewards gives A = 0, not NaN)."""


def group_normalise(r: torch.Tensor, mask: torch.Tensor | None = None,
                    groups: torch.Tensor | None = None, n_groups: int = 1) -> torch.Tensor:
    """(r_i - mean_g r) / (std_g r + 1e-4) with mean and unbiased std over the valid samples of r_i's group g.

    r, mask, groups (..., B); ``groups`` holds ids in [0, n_groups) (None: the whole batch is one group, eq. 6).
    A group of one sample, or of equal rewards, gives 0. Invalid samples get 0.
    """
    m = torch.ones_like(r) if mask is None else mask.to(r.dtype)
    if groups is None:  # eq. 6: the whole batch is the group
        n = m.sum(-1, keepdim=True)  # (..., 1)
        mean = (r * m).sum(-1, keepdim=True) / n.clamp_min(1.0)
        var = (((r - mean) * m) ** 2).sum(-1, keepdim=True) / (n - 1).clamp_min(1.0)
        return (r - mean) / (var.sqrt() + STD_EPS) * m
    g = groups
    oh = F.one_hot(g, max(n_groups, 1)).to(r.dtype) * m.unsqueeze(-1)  # (..., B, G)
    n = oh.sum(-2)  # (..., G)
    mean = (r.unsqueeze(-1) * oh).sum(-2) / n.clamp_min(1.0)  # (..., G)
    var = (((r.unsqueeze(-1) - mean.unsqueeze(-2)) ** 2) * oh).sum(-2) / (n - 1).clamp_min(1.0)  # (..., G)
    mean_i, std_i = mean.gather(-1, g), var.sqrt().gather(-1, g)  # (..., B)
    return (r - mean_i) / (std_i + STD_EPS) * m


def inverse_frequency(o: torch.Tensor, mask: torch.Tensor | None, n_classes: int) -> torch.Tensor:
    """Ours: w_i = n / (K * n_{o_i}), n valid samples, K classes among their actions, n_c of them with o = c.

    Each predicted class present in the batch gets the same total weight n / K; weights average 1 over the
    valid samples; invalid samples get 0. o, mask (..., B) -> (..., B).
    """
    m = torch.ones_like(o, dtype=torch.float32) if mask is None else mask.to(torch.float32)
    oh = F.one_hot(o, n_classes).to(m.dtype) * m.unsqueeze(-1)  # (..., B, C)
    n_c = oh.sum(-2)  # (..., C)
    k = (n_c > 0).sum(-1, keepdim=True).clamp_min(1)  # (..., 1)
    n = m.sum(-1, keepdim=True)  # (..., 1)
    return n / (k * n_c.gather(-1, o).clamp_min(1.0)) * m


def advantage(r: torch.Tensor, mode: str = "positive", mask: torch.Tensor | None = None,
              o: torch.Tensor | None = None, balance: str = "none", n_classes: int = 0) -> torch.Tensor:
    """Eq. 6, the batch as the group: A_i = (r_i - mean_B r) / std_B r over the last dim.

    ``positive`` keeps A_i only where A_i > 0 (eq. 6), ``signed`` keeps both signs and ``none`` uses the raw
    reward r_i (Table 3's "w/o A_i > 0" and "w/o A_i"). std is the unbiased sample standard deviation
    (+1e-4). ``mask`` (same shape as r) marks the valid samples of a padded batch; others get A = 0.
    ``balance`` (ours; needs the actions ``o`` and ``n_classes``): 'class-norm' normalises within each action
    class instead of the whole batch, 'inverse-freq' multiplies A_i by ``inverse_frequency`` (after the clamp).
    """
    if mode not in ("positive", "signed", "none"):
        raise ValueError(f"unknown advantage {mode!r}; known: positive, signed, none")
    if balance not in BALANCES:
        raise ValueError(f"unknown balance {balance!r}; known: {', '.join(BALANCES)}")
    if mode == "none":
        if balance == "class-norm":
            raise ValueError("balance 'class-norm' normalises rewards; it needs advantage positive or signed")
        a = r if mask is None else r * mask.to(r.dtype)
    elif balance == "class-norm":
        a = group_normalise(r, mask, o, n_classes)
    else:
        a = group_normalise(r, mask)
    if mode == "positive":
        a = a.clamp_min(0.0)
    if balance == "inverse-freq":
        a = a * inverse_frequency(o, mask, n_classes)
    return a


def k3_kl(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """Eq. 8: D_KL[pi_theta || pi_ref] ~ pi_ref/pi_theta - log(pi_ref/pi_theta) - 1, per sample."""
    d = logp_ref - logp
    return d.exp() - d - 1.0


def bgrpo_loss(logp: torch.Tensor, logp_old: torch.Tensor, logp_ref: torch.Tensor, adv: torch.Tensor,
               eps: float = 0.2, beta: float = 0.04, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Minus eq. 7, to minimise; log-probabilities of the taken actions o_i, all shaped (..., B).

        J = 1/B sum_i { min[ rho_i A_i, clip(rho_i, 1-eps, 1+eps) A_i ] - beta D_KL[pi_theta || pi_ref] },
        rho_i = pi_theta(o_i|q_i) / pi_theta_old(o_i|q_i), D_KL from eq. 8.

    Returns -J averaged over the last dim (over valid samples when ``mask`` is given), shape (...).
    """
    ratio = (logp - logp_old).exp()  # (..., B)
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1.0 - eps, 1.0 + eps) * adv)
    return -masked_mean(surrogate - beta * k3_kl(logp, logp_ref), mask)


def policy_update_stats(logp: torch.Tensor, logp_old: torch.Tensor, eps: float,
                        mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """CleanRL's PPO diagnostics of one update, per group: approx_kl = mean[(rho - 1) - log rho] (the k3
    estimator of KL[pi_old || pi_theta]) and clip_frac = share of samples with |rho - 1| > eps, rho = pi/pi_old.

    logp, logp_old, mask (..., B) -> two (...) tensors. At mu = 1 rho = 1 at the update, so both are 0.
    """
    with torch.no_grad():
        log_ratio = logp - logp_old
        ratio = log_ratio.exp()
        approx_kl = masked_mean((ratio - 1) - log_ratio, mask)
        clip_frac = masked_mean(((ratio - 1).abs() > eps).to(logp.dtype), mask)
    return approx_kl, clip_frac


def clipped_updates(policy, opt, x: torch.Tensor, logp_all: torch.Tensor, o: torch.Tensor, logp_old: torch.Tensor,
                    logp_ref: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor, active: torch.Tensor,
                    eps: float, beta: float, mu: int, sup: LabelledStream | None = None,
                    sup_weight: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The ``mu`` updates of one batch against the same pi_old, each minimising -J of eq. 7 (+ W * CE with ``sup``).

    x (M, B, D); ``logp_all`` (M, B, C) the policy's log-probabilities at pi_old (the first update reuses them);
    o (M, B, K) the actions, K per input (1 in B-GRPO, G in per-input GRPO); logp_old, logp_ref, adv, mask
    (M, B * K) per action. Returns the last update's loss (M,) and the curve extras: approx_kl and clip_frac
    (``policy_update_stats``) and sup_loss, each averaged over the mu updates.
    """
    m = o.shape[0]
    kl_sum, clip_sum, sup_sum = (torch.zeros(m) for _ in range(3))
    for it in range(mu):
        if it:
            logp_all = policy(x).log_softmax(-1)  # (M, B, C)
        logp = logp_all.gather(-1, o).flatten(1)  # (M, B * K)
        loss = bgrpo_loss(logp, logp_old, logp_ref, adv, eps, beta, mask)  # (M,)
        if sup is not None and sup_weight > 0:
            x_l, y_l, valid_l = sup.batch(active)  # (M, B, D), (M, B), (M, B)
            ce = ce_loss(policy(x_l), y_l, valid_l)  # (M,)
            loss = loss + sup_weight * ce
            sup_sum += ce.detach()
        approx_kl, clip_frac = policy_update_stats(logp, logp_old, eps, mask)
        kl_sum, clip_sum = kl_sum + approx_kl, clip_sum + clip_frac
        update(opt, loss, active)
    extra = {"approx_kl": kl_sum / mu, "clip_frac": clip_sum / mu}
    if sup is not None and sup_weight > 0:
        extra["sup_loss"] = sup_sum / mu
    return loss, extra


def policy_batches(policy, Xu: torch.Tensor, pools: list[torch.Tensor], batch_size: int,
                   gens: list[torch.Generator], epochs: int, log=None):
    """``epochs`` passes of unlabelled batches (``epoch_batches``; ``log.end_epoch()`` after each) with the policy
    at pi_old: yields idx, valid, active, x (M, B, D), log pi (M, B, C) (with gradient: the first update reuses
    it) and p_old (M, B, C) (no gradient)."""
    for _ in range(epochs):
        for idx, valid, active in epoch_batches(pools, batch_size, gens):
            x = Xu[idx]  # (M, B, D)
            logp_all = policy(x).log_softmax(-1)  # (M, B, C)
            yield idx, valid, active, x, logp_all, logp_all.detach().exp()
        if log is not None:
            log.end_epoch()


def train_bgrpo(policy, opt, Xu: torch.Tensor, pools: list[torch.Tensor], epochs: int, batch_size: int,
                gens: list[torch.Generator], logp_ref_all: torch.Tensor, reward_fn, adv_mode: str = "positive",
                eps: float = 0.2, beta: float = 0.04, mu: int = 1, action: str = "greedy",
                p_teacher_all: torch.Tensor | None = None, gens_action: list[torch.Generator] | None = None,
                log=None, balance: str = "none", sup: LabelledStream | None = None, sup_weight: float = 0.0):
    """B-GRPO on unlabelled rows of ``Xu``; each batch of each run is one group.

    ``logp_ref_all`` (M, N_u, C): log pi_ref of the frozen reference (the baseline policy) on every row,
    precomputed once (the reference and the features are fixed). ``p_teacher_all`` (M, N_u, C): teacher
    probabilities for r3-r5. ``reward_fn(p, p_t) -> (M, B)``. pi_old is the policy at the start of the
    batch's ``mu`` updates; the action o_i is argmax pi_old ('greedy') or drawn from it ('sample', run r from
    its own ``gens_action[r]``). ``balance``: see ``advantage``. With ``sup`` and ``sup_weight`` W > 0 (ours)
    each update minimises -J + W * CE on a labelled batch drawn beside the unlabelled one.
    The curves get approx_kl and clip_frac (``policy_update_stats``, averaged over the mu updates).
    """
    run = torch.arange(logp_ref_all.shape[0]).unsqueeze(1)  # (M, 1)
    for idx, valid, active, x, logp_all, p_old in policy_batches(policy, Xu, pools, batch_size, gens, epochs, log):
        with torch.no_grad():
            if action == "sample":
                o = active_multinomial(p_old, gens_action, active)  # (M, B)
            else:
                o = p_old.argmax(-1)  # (M, B)
            p_t = p_teacher_all[run, idx] if p_teacher_all is not None else None  # (M, B, C)
            r = reward_fn(p_old, p_t)  # (M, B)
            adv = advantage(r, adv_mode, valid, o, balance, p_old.shape[-1])  # (M, B)
            logp_ref = logp_ref_all[run, idx].gather(-1, o.unsqueeze(-1)).squeeze(-1)  # (M, B)
            logp_old = logp_all.gather(-1, o.unsqueeze(-1)).squeeze(-1)  # (M, B)
        loss, extra = clipped_updates(policy, opt, x, logp_all, o.unsqueeze(-1), logp_old, logp_ref, adv, valid,
                                      active, eps, beta, mu, sup, sup_weight)
        if log is not None:
            log.step(active, loss, masked_mean(p_old.amax(-1), valid), masked_mean(r, valid), **extra)
