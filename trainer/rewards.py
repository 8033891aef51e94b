"""B-GRPO rewards (paper section 3, eq. 1-5) as pure functions of class probabilities.

``p`` is the policy's distribution p_p(n|q_i), ``p_t`` the teacher's p_t(n|q_i); both (..., N) with N classes.
Every function returns one reward per sample, shape (...,). The rule rewards r1, r3, r4, r5 pay C when their
condition holds and ``penalty`` P otherwise: P = 0 is eq. 1-5; the paper also tried C = 2 and P = -1 (section
4.2, "the difference is not significant"). Note that eq. 6 normalises rewards within the group, and
(r - mean) / std does not change when every r becomes a * r + b with a > 0: with the positive or signed
advantage only the advantage 'none' (raw rewards) sees C and P at all.

The judged answer is the policy's prediction argmax_N p_p(n|q_i), with confidence max_N p_p(n|q_i), as eq. 1-5
are written (B-GRPO). Per-input GRPO (``trainer.algorithms.grpo``, ours) judges each of G labels o drawn from
p_p instead: ``o`` (...,) gives the answer, whose confidence is then p_p(o|q_i). r5 compares distributions and
does not depend on the answer.

Ours, from the seeds EMO-RL and AffectGPT-R1 (abstracts only; formulas ours, see docs/TRAINER.md): ``eswr`` and
``wheel`` pay near misses by the emotion similarity S (C, C) of ``trainer.emotion_space`` between the answer and
the teacher's class or distribution.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Reward:
    """A registered reward: its function and what it reads."""

    fn: Callable[..., torch.Tensor]
    teacher: bool = False
    """Compares with the teacher's probabilities p_t (a teacher reward: --teacher MODEL is needed)."""
    similarity: bool = False
    """Reads the emotion similarity S of the classes (trainer.emotion_space)."""
    rule: bool = False
    """Pays C when a condition holds and the penalty P otherwise (--reward-value, --penalty-value)."""

    @property
    def params(self) -> tuple[str, ...]:
        """The function's arguments after ``p``."""
        return tuple(inspect.signature(self.fn).parameters)[1:]


REWARDS: dict[str, Reward] = {}
"""--reward names -> :class:`Reward`, in registration order; a new reward is one function with ``@register``."""


def register(name: str, *, teacher: bool = False, similarity: bool = False, rule: bool = False):
    """Function decorator: add the reward ``fn(p, ...)`` to :data:`REWARDS` under ``name``. Its other arguments are
    taken by name from the run's constants (``p_t``, ``delta``, ``C``, ``theta``, ``penalty``, ``o``, ``S``,
    ``alpha``, ``gamma``: see :func:`reward`)."""
    def add(fn):
        if name in REWARDS:
            raise ValueError(f"reward {name!r} is registered twice ({REWARDS[name].fn.__module__}, {fn.__module__})")
        REWARDS[name] = Reward(fn, teacher, similarity, rule)
        return fn
    return add


def _pay(cond: torch.Tensor, C: float, penalty: float, dtype: torch.dtype) -> torch.Tensor:
    """C where ``cond`` holds, else the penalty (on cond's device)."""
    return torch.where(cond, torch.full((), C, dtype=dtype, device=cond.device),
                       torch.full((), penalty, dtype=dtype, device=cond.device))


def answer(p: torch.Tensor, o: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The judged answer and the policy's probability of it: (argmax_N p, max_N p) as in eq. 1-5, or, given
    answers ``o`` (...,), (o, p_p(o|q_i)). p (..., N) -> two (...,) tensors."""
    if o is None:
        return p.argmax(-1), p.amax(-1)
    return o, p.gather(-1, o.unsqueeze(-1)).squeeze(-1)


@register("r1", rule=True)
def r1(p: torch.Tensor, delta: float = 0.5, C: float = 1.0, penalty: float = 0.0,
       o: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 1: C if max_N p_p(n|q_i) > delta, else 0 (self-reward; else ``penalty``); with ``o``: p_p(o|q_i)."""
    return _pay(answer(p, o)[1] > delta, C, penalty, p.dtype)


@register("r2")
def r2(p: torch.Tensor, o: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 2: max_N p_p(n|q_i) (self-reward); with ``o``: p_p(o|q_i)."""
    return answer(p, o)[1]


@register("r3", teacher=True, rule=True)
def r3(p: torch.Tensor, p_t: torch.Tensor, C: float = 1.0, penalty: float = 0.0,
       o: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 3: C if argmax_N p_p == argmax_N p_t, else 0 (teacher-reward; else ``penalty``); with ``o``: o == argmax
    p_t."""
    return _pay(answer(p, o)[0] == p_t.argmax(-1), C, penalty, p.dtype)


@register("r4", teacher=True, rule=True)
def r4(p: torch.Tensor, p_t: torch.Tensor, delta: float = 0.5, C: float = 1.0, penalty: float = 0.0,
       o: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 4: C if the conditions of r1 and r3 both hold, else 0 (teacher-reward; else ``penalty``)."""
    return _pay((r1(p, delta, o=o) > 0) & (r3(p, p_t, o=o) > 0), C, penalty, p.dtype)


def kl(p_t: torch.Tensor, p: torch.Tensor, tiny: float = 1e-12) -> torch.Tensor:
    """D_KL(p_t || p) = sum_n p_t (log p_t - log p), per sample; 0 log 0 = 0."""
    return (p_t * (p_t.clamp_min(tiny).log() - p.clamp_min(tiny).log())).sum(-1)


@register("r5", teacher=True, rule=True)
def r5(p: torch.Tensor, p_t: torch.Tensor, theta: float = 0.5, C: float = 1.0, penalty: float = 0.0) -> torch.Tensor:
    """Eq. 5: C if D_KL(P_t(n|q_i) || P_p(n|q_i)) < theta, else 0 (teacher-reward; else ``penalty``)."""
    return _pay(kl(p_t, p) < theta, C, penalty, p.dtype)


@register("eswr", teacher=True, similarity=True)
def eswr(p: torch.Tensor, p_t: torch.Tensor, S: torch.Tensor, alpha: float = 0.5, gamma: float = 0.5,
         o: torch.Tensor | None = None) -> torch.Tensor:
    """Emotion Similarity-Weighted Reward (EMO-RL's ESWR; the formula is ours): with a the answer and c =
    argmax_N p_t the teacher's class, r = 1 if a == c, alpha * S[a, c] if S[a, c] > gamma, else 0."""
    a, c = answer(p, o)[0], p_t.argmax(-1)
    s = S.to(p.dtype)[a, c]  # (...,)
    one, zero = torch.ones((), dtype=p.dtype, device=p.device), torch.zeros((), dtype=p.dtype, device=p.device)
    return torch.where(a == c, one, torch.where(s > gamma, alpha * s, zero))


@register("wheel", teacher=True, similarity=True)
def wheel(p: torch.Tensor, p_t: torch.Tensor, S: torch.Tensor, o: torch.Tensor | None = None) -> torch.Tensor:
    """Emotion-wheel reward (after AffectGPT-R1's wheel metrics; ours): the answer's expected similarity to the
    teacher's distribution, r = sum_c p_t(c) S[a, c], in [0, 1] (1 only when the teacher is sure of a's class)."""
    a = answer(p, o)[0]
    return (S.to(p.dtype)[a] * p_t).sum(-1)


def reward(name: str, p: torch.Tensor, p_t: torch.Tensor | None = None, *, delta: float = 0.5,
           C: float = 1.0, theta: float = 0.5, penalty: float = 0.0, o: torch.Tensor | None = None,
           S: torch.Tensor | None = None, alpha: float = 0.5, gamma: float = 0.5) -> torch.Tensor:
    """The reward registered as ``name`` with the run's constants, each passed to the rewards that take it;
    ``penalty`` applies to the rule rewards (r1, r3-r5). ``o`` (...,): the judged answers (per-input GRPO's sampled
    labels); None = the prediction argmax p. ``S`` (C, C): the emotion similarity of eswr and wheel; ``alpha``,
    ``gamma``: eswr's constants."""
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; known: {', '.join(REWARDS)}")
    spec = REWARDS[name]
    if spec.teacher and p_t is None:
        raise ValueError(f"reward {name} needs teacher probabilities (eq. 3-5; eswr, wheel)")
    if not spec.rule and penalty != 0:
        raise ValueError(f"reward {name} has no failing condition: a penalty value applies to "
                         f"{', '.join(n for n, r in REWARDS.items() if r.rule)}")
    if spec.similarity and S is None:
        raise ValueError(f"reward {name} needs the emotion similarity matrix S (trainer.emotion_space)")
    given = dict(p_t=p_t, delta=delta, C=C, theta=theta, penalty=penalty, o=o, S=S, alpha=alpha, gamma=gamma)
    return spec.fn(p, **{k: given[k] for k in spec.params})
