"""B-GRPO (paper section 3): the batch is the group; eq. 6 advantage; eq. 7 clipped loss; eq. 8 k3 KL.

Beyond the paper (ours, off by default, docs/TRAINER.md): a class-balanced advantage (``balance``: the group
of eq. 6 becomes each predicted class of the batch, or each sample is weighted by the inverse frequency of its
predicted class) and a supervised cross-entropy term on labelled rows beside the B-GRPO term (``sup``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import warnings
from dataclasses import dataclass

from trainer.algorithms.base import PoolOptions, TwoStage, option, register
from trainer.algorithms.common import LabelledStream, active_multinomial, masked_mean, update
from trainer.algorithms.supervised import ce_loss
from trainer.algorithms.teacher import TeacherOptions
from trainer.data import epoch_batches
from trainer.rewards import REWARDS, reward
from trainer.teachers import fit_teacher

ADVANTAGES = ("positive", "signed", "none")
"""Eq. 6 'positive' (A > 0 only), 'signed' (the plain normalised A), 'none' (the raw reward): Table 3."""
BALANCES = ("none", "class-norm", "inverse-freq")
"""Class-balanced B-GRPO advantages (ours): none (eq. 6), class-norm (eq. 6 within each predicted class of the
batch), inverse-freq (eq. 6 weighted by the inverse frequency of each sample's predicted class in the batch)."""
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
    if mode not in ADVANTAGES:
        raise ValueError(f"unknown advantage {mode!r}; known: {', '.join(ADVANTAGES)}")
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
                    opts: RewardOptions, sup: LabelledStream | None = None) -> tuple[torch.Tensor, dict]:
    """The ``opts.mu`` updates of one batch against the same pi_old, each minimising -J of eq. 7 (eps, beta of
    ``opts``), + W * CE on a labelled batch of ``sup`` with W = ``opts.sup_weight`` > 0.

    x (M, B, D); ``logp_all`` (M, B, C) the policy's log-probabilities at pi_old (the first update reuses them);
    o (M, B, K) the actions, K per input (1 in B-GRPO, G in per-input GRPO); logp_old, logp_ref, adv, mask
    (M, B * K) per action. Returns the last update's loss (M,) and the curve extras: approx_kl and clip_frac
    (``policy_update_stats``) and sup_loss, each averaged over the mu updates.
    """
    m, mu, eps = o.shape[0], opts.mu, opts.epsilon
    with_sup = sup is not None and opts.sup_weight > 0
    kl_sum, clip_sum, sup_sum = (torch.zeros(m, device=x.device) for _ in range(3))
    for it in range(mu):
        if it:
            logp_all = policy(x).log_softmax(-1)  # (M, B, C)
        logp = logp_all.gather(-1, o).flatten(1)  # (M, B * K)
        loss = bgrpo_loss(logp, logp_old, logp_ref, adv, eps, opts.beta, mask)  # (M,)
        if with_sup:
            x_l, y_l, valid_l = sup.batch(active)  # (M, B, D), (M, B), (M, B)
            ce = ce_loss(policy(x_l), y_l, valid_l)  # (M,)
            loss = loss + opts.sup_weight * ce
            sup_sum += ce.detach()
        approx_kl, clip_frac = policy_update_stats(logp, logp_old, eps, mask)
        kl_sum, clip_sum = kl_sum + approx_kl, clip_sum + clip_frac
        update(opt, loss, active)
    extra = {"approx_kl": kl_sum / mu, "clip_frac": clip_sum / mu}
    if with_sup:
        extra["sup_loss"] = sup_sum / mu
    return loss, extra


def policy_batches(ctx):
    """Stage 2's passes over each run's unlabelled rows ``ctx.data.unlabeled[r]`` of ``ctx.data.Xu`` (``epoch_batches``;
    ``log.end_epoch()`` after each) with the policy at pi_old: yields idx, valid, active, x (M, B, D), log pi
    (M, B, C) (with gradient: the first update reuses it) and p_old (M, B, C) (no gradient)."""
    policy, Xu = ctx.policy, ctx.data.Xu
    for _ in ctx.log.epochs(ctx.cfg.epochs_stage2):
        for idx, valid, active in epoch_batches(ctx.data.unlabeled, ctx.cfg.batch_size, ctx.gens, ctx.log.live,
                                                Xu.device):
            x = Xu[idx]  # (M, B, D)
            logp_all = policy(x).log_softmax(-1)  # (M, B, C)
            yield idx, valid, active, x, logp_all, logp_all.detach().exp()
        ctx.log.end_epoch()


def train_bgrpo(ctx, opts: BGRPOOptions, logp_ref_all: torch.Tensor, reward_fn,
                p_teacher_all: torch.Tensor | None = None) -> None:
    """B-GRPO on each run's unlabelled rows (``ctx``: the policy, the pool, the batch and action generators, the
    log); each batch of each run is one group.

    ``logp_ref_all`` (M, N_u, C): log pi_ref of the frozen reference (the baseline policy) on every row,
    precomputed once (the reference and the features are fixed). ``p_teacher_all`` (M, N_u, C): teacher
    probabilities for r3-r5. ``reward_fn(p, p_t) -> (M, B)``. pi_old is the policy at the start of the
    batch's ``mu`` updates; the action o_i is argmax pi_old ('greedy') or drawn from it ('sample', run r from
    its own ``ctx.view_gens[r]``); the reward judges the action (with 'greedy' the prediction, eq. 1-5; with
    'sample' the drawn label, as per-input GRPO does, so its policy gradient is not zero). ``balance``: see ``advantage``. With ``sup_weight`` W > 0 (ours) each update
    minimises -J + W * CE on a labelled batch drawn beside the unlabelled one. The curves get approx_kl and
    clip_frac (``policy_update_stats``, averaged over the mu updates).
    """
    opt = ctx.new_opt(ctx.policy)
    sup = ctx.labelled_stream() if opts.sup_weight > 0 else None
    run = torch.arange(logp_ref_all.shape[0], device=logp_ref_all.device).unsqueeze(1)  # (M, 1)
    for idx, valid, active, x, logp_all, p_old in policy_batches(ctx):
        with torch.no_grad():
            if opts.action == "sample":
                o = active_multinomial(p_old, ctx.view_gens, active)  # (M, B)
            else:
                o = p_old.argmax(-1)  # (M, B)
            p_t = p_teacher_all[run, idx] if p_teacher_all is not None else None  # (M, B, C)
            r = reward_fn(p_old, p_t, o if opts.action == "sample" else None)  # (M, B): the action is judged
            adv = advantage(r, opts.advantage, valid, o, opts.balance, p_old.shape[-1])  # (M, B)
            logp_ref = logp_ref_all[run, idx].gather(-1, o.unsqueeze(-1)).squeeze(-1)  # (M, B)
            logp_old = logp_all.gather(-1, o.unsqueeze(-1)).squeeze(-1)  # (M, B)
        loss, extra = clipped_updates(ctx.policy, opt, x, logp_all, o.unsqueeze(-1), logp_old, logp_ref, adv, valid,
                                      active, opts, sup)
        ctx.log.step(active, loss, masked_mean(p_old.amax(-1), valid), masked_mean(r, valid), **extra)


@dataclass(frozen=True)
class RewardOptions(TeacherOptions, PoolOptions):
    """B-GRPO and per-input GRPO: the reward (eq. 1-5, ours eswr/wheel), the advantage (eq. 6) and the clipped
    objective (eq. 7-8)."""

    reward: str = option("r1", choices=REWARDS)
    """Reward. r1..r5 (eq. 1-5) or, ours, eswr / wheel: teacher rewards weighted by emotion similarity."""
    advantage: str = option("positive", choices=ADVANTAGES)
    """Advantage (Table 3). Eq. 6 'positive' (A > 0 only), 'signed' (plain normalised A), 'none' (raw reward)."""
    delta: float = 0.5
    """Threshold of r1 and r4. The confidence threshold delta of eq. 1 and 4."""
    reward_value: float = 1.0
    """Reward constant C > 0. Eq. 1, 3, 4, 5."""
    theta: float = 0.5
    """KL threshold of r5. Eq. 5."""
    epsilon: float = 0.2
    """Clip range of pi/pi_old. Eq. 7."""
    beta: float = 0.04
    """Weight of the KL to pi_ref. The k3 estimator, eq. 7-8."""
    mu: int = option(1, ge=1)
    """Policy updates per batch (GRPO's mu). Against the same pi_old; with 1 the ratio is 1 at each step."""
    penalty_value: float = 0.0
    """Reward P of a failed rule condition. 0 = eq. 1-5 (the paper also tried C = 2, P = -1); eq. 6
    normalises rewards per group, so with advantage positive/signed C and P change nothing but the 1e-4."""
    sup_weight: float = option(0.0, ge=0)
    """Weight of a supervised term in stage 2 (ours). W times the cross-entropy of a labelled batch drawn
    beside each unlabelled batch; 0 = the paper's unsupervised stage 2."""
    eswr_alpha: float = option(0.5, ge=0, le=1)
    """Near-miss weight alpha of eswr (ours). r = alpha * S[answer, teacher class] when S > gamma."""
    eswr_gamma: float = option(0.5, ge=0, le=1)
    """Similarity threshold gamma of eswr (ours). The default pays the wheel's neighbours (S = 0.854), not
    classes 90 degrees apart or neutral (S = 0.5)."""

    @property
    def uses_teacher(self) -> bool:
        """Whether the reward compares with a teacher (r3, r4, r5, eswr, wheel)."""
        return self.reward in REWARDS and REWARDS[self.reward].teacher

    @property
    def needs_similarity(self) -> bool:
        return self.reward in REWARDS and REWARDS[self.reward].similarity

    def validate(self, cfg) -> None:
        if self.penalty_value != 0 and not REWARDS[self.reward].rule:
            rules = ", ".join(n for n, r in REWARDS.items() if r.rule)
            raise ValueError(f"--penalty-value applies to the rule rewards {rules}; {self.reward} has no failing "
                             "condition")
        if self.uses_teacher and not self.teacher:
            raise ValueError(f"--reward {self.reward} is a teacher reward (eq. 3-5): give --teacher MODEL")
        super().validate(cfg)

    def reward_tags(self, cfg) -> list[str]:
        """reward, advantage, teacher, then the settings away from the paper's."""
        parts = [self.reward, self.advantage] + ([self.teacher] if self.uses_teacher else [])
        if getattr(self, "group_size", None) is not None:
            parts.append(f"G{self.group_size}")
        if self.reward_value != 1 or self.penalty_value != 0:
            parts.append(f"C{self.reward_value:g}P{self.penalty_value:g}")
        if self.reward == "eswr" and (self.eswr_alpha, self.eswr_gamma) != (0.5, 0.5):
            parts.append(f"alpha{self.eswr_alpha:g}gamma{self.eswr_gamma:g}")
        if getattr(self, "balance", "none") != "none":
            parts.append(self.balance)
        if self.sup_weight:
            parts.append(f"sup{self.sup_weight:g}")
        return parts


class GRPOFamily(TwoStage):
    """What B-GRPO and per-input GRPO share: the baseline, pi_ref = the baseline policy on the pool, the teacher of
    r3-r5 and its probabilities on the pool, the reward function of the run's constants, the checks after."""

    Options = RewardOptions

    def tags(self, cfg) -> list[str]:
        o = cfg.options
        return o.reward_tags(cfg) + o.teacher_tags() + o.pool_tags()

    def columns(self, cfg) -> dict:
        o = cfg.options
        return {**super().columns(cfg), "reward": o.reward, "advantage": o.advantage,
                "balance": getattr(o, "balance", "none"), "sup_weight": o.sup_weight, "penalty_value": o.penalty_value}

    def reports_teacher_agreement(self, cfg) -> bool:
        return cfg.uses_teacher

    def stage2(self, ctx):
        data = ctx.data
        logp_ref_all = ctx.policy.predict_all(data.Xu).log_softmax(-1)  # (M, N_u, C)
        p_teacher_all = None
        if ctx.cfg.uses_teacher:
            ctx.teacher = fit_teacher(ctx.cfg, data, ctx.teacher_seeds())
            p_teacher_all = ctx.teacher.predict_all(data.Xtu).softmax(-1)  # (M, N_u, C)
        ctx.log.begin(self.name, ctx.policy, ctx.cfg.epochs_stage2)
        self.train(ctx, logp_ref_all, make_reward_fn(ctx), p_teacher_all)
        warn_unrewarded(ctx)
        return ctx.policy

    def train(self, ctx, logp_ref_all: torch.Tensor, reward_fn, p_teacher_all: torch.Tensor | None) -> None:
        raise NotImplementedError(f"{type(self).__qualname__}.train")


def make_reward_fn(ctx):
    """The run's reward (trainer.rewards.reward) with its constants: (p, p_t, o=None) -> r."""
    o = ctx.cfg.options
    S = None if ctx.S is None else torch.as_tensor(ctx.S, device=ctx.device)

    def fn(p, p_t, answers=None):
        return reward(o.reward, p, p_t, delta=o.delta, C=o.reward_value, theta=o.theta, penalty=o.penalty_value,
                      o=answers, S=S, alpha=o.eswr_alpha, gamma=o.eswr_gamma)
    return fn


def warn_unrewarded(ctx) -> None:
    """One warning naming the runs that got no reward in any stage-2 batch (their policy did not move)."""
    cfg, o = ctx.cfg, ctx.cfg.options
    stage2 = [r for r in ctx.log.rows if r["stage"] == cfg.method]
    unrewarded = sorted({(r["fold"], r["seed"]) for r in stage2}
                        - {(r["fold"], r["seed"]) for r in stage2 if r["reward"] > o.penalty_value})
    if unrewarded:
        warnings.warn(f"{cfg.method}: {len(unrewarded)} run(s) (fold, seed) {unrewarded[:4]} got no reward in any "
                      f"batch ({o.reward} never paid out, e.g. no max probability above --delta {o.delta}), so "
                      f"the {cfg.method} term left their policy unchanged; train the baseline longer or lower --delta")


@dataclass(frozen=True)
class BGRPOOptions(RewardOptions):
    """B-GRPO: the reward options, the action and (ours) the class-balanced advantage."""

    action: str = option("greedy", choices=("greedy", "sample"))
    """Action o_i. 'greedy' (argmax of pi_old, the paper) or 'sample' (ours: drawn from pi_old, and the reward
    judges the drawn label)."""
    balance: str = option("none", choices=BALANCES)
    """Class-balanced advantage (ours). 'none' (eq. 6), 'class-norm' (eq. 6 within each predicted class of
    the batch) or 'inverse-freq' (A_i weighted by the inverse frequency of its predicted class)."""

    def validate(self, cfg) -> None:
        if self.balance == "class-norm" and self.advantage == "none":
            raise ValueError("--balance class-norm normalises rewards within classes; use it with --advantage "
                             "positive or signed")
        super().validate(cfg)


@register
class BGRPO(GRPOFamily):
    """The paper's B-GRPO on the unlabelled pool, after the baseline.

    Eq. 7-8 with each batch as the group of eq. 6 and pi_ref the baseline policy; rewards r1..r5 (eq. 1-5) and,
    ours, eswr / wheel, the class-balanced advantage and a supervised term."""

    name = "b-grpo"
    Options = BGRPOOptions

    def train(self, ctx, logp_ref_all, reward_fn, p_teacher_all) -> None:
        train_bgrpo(ctx, ctx.cfg.options, logp_ref_all, reward_fn, p_teacher_all)
