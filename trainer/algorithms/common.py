"""Pieces the algorithms share: the masked mean over a padded batch (trainer.frames.masked_mean), the per-run
confidence of the curves, an endless labelled-batch stream, per-run random draws for active runs, and
feature-space views (noise + dropout)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import torch

from trainer.data import epoch_batches, run_multinomial, run_rand
from trainer.devices import place
from trainer.frames import frame_std, masked_mean


def confidence(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean max class probability per run over valid samples; logits (M, B, C), mask (M, B) -> (M,)."""
    return masked_mean(logits.detach().softmax(-1).amax(-1), mask)


def update(opt, loss: torch.Tensor, active: torch.Tensor) -> None:
    """One optimiser step on the sum of the runs' losses (M,), for the active runs only (StackedAdam)."""
    opt.zero_grad()
    loss.sum().backward()
    opt.step(active)


class LabelledStream:
    """Endless shuffled batches of each run's labelled rows, for a supervised term beside a stage-2 objective.

    Run r cycles through its own rows ``pools[r]`` of ``X`` (N, D) / ``y`` (N,), a fresh permutation from its
    own ``gens[r]`` each pass (``trainer.data.epoch_batches``), and advances only on steps where it is active,
    so its batches do not depend on its stack neighbours. The last batch of a pass is shorter (padding invalid).
    The rows are drawn on the host; each stacked batch's indices go to X's device in one copy.
    """

    def __init__(self, X: torch.Tensor, y: torch.Tensor, pools: list[torch.Tensor], batch_size: int,
                 gens: list[torch.Generator]):
        self.X, self.y, self.batch_size = X, y, batch_size
        self.streams = [self._cycle(p, g) for p, g in zip(pools, gens)]

    def _cycle(self, pool: torch.Tensor, gen: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            for idx, valid, _ in epoch_batches([pool], self.batch_size, [gen]):
                yield idx[0], valid[0]

    def batch(self, active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The next batch of each active run: x (M, B, D), y (M, B), valid (M, B) (inactive runs: all invalid);
        ``active`` (M,) is a host tensor."""
        idx = torch.zeros(len(self.streams), self.batch_size, dtype=torch.long)  # (M, B)
        valid = torch.zeros(len(self.streams), self.batch_size, dtype=torch.bool)
        for r in _rows(active, len(self.streams)):
            i, v = next(self.streams[r])
            idx[r, :len(i)], valid[r, :len(v)] = i, v
        idx, valid = place(idx, self.X.device), place(valid, self.X.device)
        return self.X[idx], self.y[idx], valid


def _rows(active: torch.Tensor | None, m: int) -> list[int]:
    return list(range(m)) if active is None else active.nonzero().flatten().tolist()


DRAW_THREADS = min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
"""Host threads drawing the runs' numbers in parallel for a run on another device (one generator per thread)."""
PARALLEL_DRAW = 1 << 14
"""Numbers per run from which those draws are split over DRAW_THREADS (e.g. a 32 x 1,280 noise view)."""
_draw_pool: ThreadPoolExecutor | None = None


def _draws(kind: str, shape: tuple[int, ...], gens: list[torch.Generator], high: int, parallel: bool) -> torch.Tensor:
    """``run_rand``, one run per pool thread when ``parallel`` (each generator is drawn from exactly as alone)."""
    global _draw_pool
    if not parallel or len(gens) < 2 or DRAW_THREADS < 2 or math.prod(shape) < PARALLEL_DRAW:
        return run_rand(kind, shape, gens, high)
    if _draw_pool is None:
        _draw_pool = ThreadPoolExecutor(DRAW_THREADS, thread_name_prefix="trainer-draws")
    return torch.cat(list(_draw_pool.map(lambda g: run_rand(kind, shape, [g], high), gens)))


def active_rand(kind: str, shape: tuple[int, ...], gens: list[torch.Generator], active: torch.Tensor | None = None,
                high: int = 0, device: torch.device | None = None) -> torch.Tensor:
    """``trainer.data.run_rand`` drawn for the active runs only (others get 0; None = all), (M, *shape): a run's
    generator advances only on its own steps, however many steps its stack neighbours take. Drawn on the host
    (``active`` a host tensor) and sent to ``device`` (None: stays on the host); for another device than the CPU,
    large draws are spread over DRAW_THREADS host threads (the same numbers: each run's generator in one thread)."""
    rows = _rows(active, len(gens))
    out = torch.zeros((len(gens), *shape), dtype=torch.long if kind == "randint" else torch.float32)
    if rows:
        parallel = device is not None and device.type != "cpu"
        out[rows] = _draws(kind, shape, [gens[r] for r in rows], high, parallel)
    return out if device is None else place(out, device)


def active_multinomial(p: torch.Tensor, gens: list[torch.Generator], active: torch.Tensor | None = None,
                       n: int | None = None) -> torch.Tensor:
    """``trainer.data.run_multinomial`` for the active runs only (others get class 0); p (M, B, C) -> (M, B), or
    (M, B, n) with ``n`` draws per row; on p's device (``active`` a host tensor)."""
    rows = _rows(active, len(gens))
    out = torch.zeros(p.shape[:2] + (() if n is None else (n,)), dtype=torch.long, device=p.device)
    if rows:
        out[place(torch.tensor(rows), p.device)] = run_multinomial(p[place(torch.tensor(rows), p.device)],
                                                                  [gens[r] for r in rows], n)
    return out


def perturb(x: torch.Tensor, std: torch.Tensor, noise: float, p_drop: float, gens: list[torch.Generator],
            active: torch.Tensor | None = None) -> torch.Tensor:
    """One view of pooled vectors: x + N(0, (noise * std)^2), then feature dropout with inverted scaling.

    x (M, B, D); run r's draws come from its own ``gens[r]`` (active runs only); ``std`` broadcasts against x
    ((D,) or (M, 1, D)).
    """
    v = x + active_rand("randn", x.shape[1:], gens, active, device=x.device) * (noise * std)
    if p_drop > 0:
        keep = active_rand("rand", x.shape[1:], gens, active, device=x.device) >= p_drop
        v = v * keep / (1 - p_drop)
    return v


def pool_std(X: torch.Tensor, pools: list[torch.Tensor], frames: bool = False) -> torch.Tensor:
    """Per-feature std of each run's own pool rows (not the whole entry, which holds test rows): (M, 1, D); with
    ``frames`` (X padded frames (N, T, D), a frame --head) over the rows' valid frames, (M, 1, 1, D), so a view
    perturbs every frame (padding stays NaN, i.e. padding)."""
    if frames:
        return frame_std(X, pools)
    return torch.stack([X[p].std(0) for p in pools]).nan_to_num(0.0).unsqueeze(1)
