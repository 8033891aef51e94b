"""B-GRPO rewards (paper section 3, eq. 1-5) as pure functions of class probabilities.

``p`` is the policy's distribution p_p(n|q_i), ``p_t`` the teacher's p_t(n|q_i); both (..., N) with N classes.
Every function returns one reward per sample, shape (...,).
"""

from __future__ import annotations

import torch


def r1(p: torch.Tensor, delta: float = 0.5, C: float = 1.0) -> torch.Tensor:
    """Eq. 1: C if max_N p_p(n|q_i) > delta, else 0 (self-reward)."""
    return (p.amax(-1) > delta).to(p.dtype) * C


def r2(p: torch.Tensor) -> torch.Tensor:
    """Eq. 2: max_N p_p(n|q_i) (self-reward)."""
    return p.amax(-1)


def r3(p: torch.Tensor, p_t: torch.Tensor, C: float = 1.0) -> torch.Tensor:
    """Eq. 3: C if argmax_N p_p == argmax_N p_t, else 0 (teacher-reward)."""
    return (p.argmax(-1) == p_t.argmax(-1)).to(p.dtype) * C


def r4(p: torch.Tensor, p_t: torch.Tensor, delta: float = 0.5, C: float = 1.0) -> torch.Tensor:
    """Eq. 4: C if the conditions of r1 and r3 both hold, else 0 (teacher-reward)."""
    return ((r1(p, delta) > 0) & (r3(p, p_t) > 0)).to(p.dtype) * C


def kl(p_t: torch.Tensor, p: torch.Tensor, tiny: float = 1e-12) -> torch.Tensor:
    """D_KL(p_t || p) = sum_n p_t (log p_t - log p), per sample; 0 log 0 = 0."""
    return (p_t * (p_t.clamp_min(tiny).log() - p.clamp_min(tiny).log())).sum(-1)


def r5(p: torch.Tensor, p_t: torch.Tensor, theta: float = 0.5, C: float = 1.0) -> torch.Tensor:
    """Eq. 5: C if D_KL(P_t(n|q_i) || P_p(n|q_i)) < theta, else 0 (teacher-reward)."""
    return (kl(p_t, p) < theta).to(p.dtype) * C


def reward(name: str, p: torch.Tensor, p_t: torch.Tensor | None = None, *, delta: float = 0.5,
           C: float = 1.0, theta: float = 0.5) -> torch.Tensor:
    """Dispatch by name (r1..r5) with the run's constants."""
    if name in ("r3", "r4", "r5") and p_t is None:
        raise ValueError(f"reward {name} needs teacher probabilities (eq. 3-5)")
    if name == "r1":
        return r1(p, delta, C)
    if name == "r2":
        return r2(p)
    if name == "r3":
        return r3(p, p_t, C)
    if name == "r4":
        return r4(p, p_t, delta, C)
    if name == "r5":
        return r5(p, p_t, theta, C)
    raise ValueError(f"unknown reward {name!r}; known: r1, r2, r3, r4, r5")
