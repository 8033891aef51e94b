"""B-GRPO (paper section 3): the batch is the group; eq. 6 advantage; eq. 7 clipped loss; eq. 8 k3 KL."""

from __future__ import annotations

import torch

from trainer.data import epoch_batches, run_multinomial

STD_EPS = 1e-4
"""Added to the batch standard deviation in eq. 6 (a batch of equal rewards gives A = 0, not NaN)."""


def _masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return x.mean(-1)
    m = mask.to(x.dtype)
    return (x * m).sum(-1) / m.sum(-1).clamp_min(1.0)


def advantage(r: torch.Tensor, mode: str = "positive", mask: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 6, the batch as the group: A_i = (r_i - mean_B r) / std_B r over the last dim.

    ``positive`` keeps A_i only where A_i > 0 (eq. 6), ``signed`` keeps both signs and ``none`` uses the raw
    reward r_i (Table 3's "w/o A_i > 0" and "w/o A_i"). std is the unbiased sample standard deviation
    (+1e-4). ``mask`` (same shape as r) marks the valid samples of a padded batch; others get A = 0.
    """
    if mode == "none":
        return r if mask is None else r * mask.to(r.dtype)
    m = torch.ones_like(r) if mask is None else mask.to(r.dtype)
    n = m.sum(-1, keepdim=True)  # (..., 1)
    mean = (r * m).sum(-1, keepdim=True) / n.clamp_min(1.0)
    var = (((r - mean) * m) ** 2).sum(-1, keepdim=True) / (n - 1).clamp_min(1.0)
    a = (r - mean) / (var.sqrt() + STD_EPS) * m  # (..., B)
    if mode == "signed":
        return a
    if mode == "positive":
        return a.clamp_min(0.0)
    raise ValueError(f"unknown advantage {mode!r}; known: positive, signed, none")


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
    return -_masked_mean(surrogate - beta * k3_kl(logp, logp_ref), mask)


def train_bgrpo(policy, opt, Xu: torch.Tensor, pools: list[torch.Tensor], epochs: int, batch_size: int,
                gens: list[torch.Generator], logp_ref_all: torch.Tensor, reward_fn, adv_mode: str = "positive",
                eps: float = 0.2, beta: float = 0.04, mu: int = 1, action: str = "greedy",
                p_teacher_all: torch.Tensor | None = None, gens_action: list[torch.Generator] | None = None,
                log=None):
    """B-GRPO on unlabelled rows of ``Xu``; each batch of each run is one group.

    ``logp_ref_all`` (M, N_u, C): log pi_ref of the frozen reference (the baseline policy) on every row,
    precomputed once (the reference and the features are fixed). ``p_teacher_all`` (M, N_u, C): teacher
    probabilities for r3-r5. ``reward_fn(p, p_t) -> (M, B)``. pi_old is the policy at the start of the
    batch's ``mu`` updates; the action o_i is argmax pi_old ('greedy') or drawn from it ('sample', run r from
    its own ``gens_action[r]``).
    """
    m = logp_ref_all.shape[0]
    run = torch.arange(m).unsqueeze(1)  # (M, 1)
    for _ in range(epochs):
        for idx, valid, active in epoch_batches(pools, batch_size, gens):
            x = Xu[idx]  # (M, B, D)
            logp_all = policy(x).log_softmax(-1)  # (M, B, C)
            with torch.no_grad():
                p_old = logp_all.exp()  # (M, B, C)
                if action == "sample":
                    o = run_multinomial(p_old, gens_action)  # (M, B)
                else:
                    o = p_old.argmax(-1)  # (M, B)
                p_t = p_teacher_all[run, idx] if p_teacher_all is not None else None  # (M, B, C)
                r = reward_fn(p_old, p_t)  # (M, B)
                adv = advantage(r, adv_mode, valid)  # (M, B)
                logp_ref = logp_ref_all[run, idx].gather(-1, o.unsqueeze(-1)).squeeze(-1)  # (M, B)
                logp_old = logp_all.gather(-1, o.unsqueeze(-1)).squeeze(-1)  # (M, B)
            for it in range(mu):
                if it:
                    logp_all = policy(x).log_softmax(-1)
                logp = logp_all.gather(-1, o.unsqueeze(-1)).squeeze(-1)  # (M, B)
                loss = bgrpo_loss(logp, logp_old, logp_ref, adv, eps, beta, valid)  # (M,)
                opt.zero_grad()
                loss.sum().backward()
                opt.step(active)
            if log is not None:
                v = valid.to(r.dtype)
                n = v.sum(1).clamp_min(1)
                log.step(active, loss, (p_old.amax(-1) * v).sum(1) / n, (r * v).sum(1) / n)
        if log is not None:
            log.end_epoch()
