"""`trainer run`: prepare the data once (trainer.prepare), train every (fold, seed) run of the method in one stack
(its ``run`` on a trainer.context.Context), score and write the results (trainer.results)."""

from __future__ import annotations

import os
import time
import warnings

import torch

from trainer.config import TrainConfig
from trainer.context import Context, similarity
from trainer.data import DataError, open_store
from trainer.devices import resolve
from trainer.diagnostics import collapse_onset
from trainer.frames import pooled_mean
from trainer.prepare import Prepared, prepare
from trainer.results import Result, check_out, collect, write

SCALE_RATIO_WARN = 1e3
"""Without --standardize, a run warns when the largest per-feature std over the training rows (union of every
run's) is more than this many times the smallest non-zero one (ours: eGeMAPS' raw functionals lose ~23 points of
macro-F1 on URDU without z-scoring)."""


def run(cfg: TrainConfig, data: Prepared | None = None, bar=None) -> Result:
    """Train and score every (fold, seed) run of ``cfg`` on its --device; ``data`` reuses an already prepared dataset
    (on the host: each run sends it to its device once)."""
    resolve(cfg.device)  # a device torch does not see stops the run before any data is read
    cfg = resolve_model(cfg)
    check_out(cfg)
    set_threads(cfg.threads)
    t0 = time.perf_counter()
    if data is None:
        data = prepare(cfg)
    warn_scales(cfg, data)
    t_load = time.perf_counter() - t0
    ctx = Context.start(cfg, data, bar)
    final = cfg.algorithm.run(ctx)
    ctx.snapshot("final", final)
    seconds = time.perf_counter() - t0
    warn_collapsed(ctx)
    return collect(ctx, final, seconds, t_load)


def warn_collapsed(ctx: Context) -> None:
    """One warning per run whose predictions on the unlabelled pool ended collapsed."""
    cfg, log = ctx.cfg, ctx.log
    collapsed, onset = collapse_onset(log.collapse_flags, log.collapse_epochs)
    for r, info in enumerate(ctx.data.runs):
        if collapsed and collapsed[r]:
            warnings.warn(f"{cfg.method} {cfg.dataset} fold {info['fold']} seed {info['seed']}: predictions on the "
                          f"unlabelled pool collapsed from epoch {onset[r]} on (a class below a quarter of its "
                          "labelled share, or entropy below half the prior's); see curves.csv/curves.png")


def resolve_model(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with --model filled in when empty: the method's own choice, else the store's only entry for
    --dataset; else an error listing them."""
    if cfg.model:
        return cfg
    implied = cfg.algorithm.default_model(cfg)
    if implied:
        return cfg.replace(model=implied)
    models = sorted(m for m, ds in open_store(cfg.store).entries() if ds == cfg.dataset)
    if len(models) != 1:
        have = ", ".join(models) if models else "none"
        raise DataError(f"--model is required: store {cfg.store} has {len(models)} models for --dataset "
                        f"{cfg.dataset} ({have}); give --model NAME")
    return cfg.replace(model=models[0])


def set_threads(n: int = 0):
    """torch intra-op threads: ``n``, or every core this process may use."""
    if n <= 0:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(n)


def scale_ratio(X: torch.Tensor, rows: torch.Tensor) -> float:
    """Largest over smallest non-zero per-feature std of ``X[rows]`` (X: (N, D)); 1 when fewer than 2 such."""
    std = X[rows].double().std(0)  # (D,)
    std = std[std > 0]
    return float(std.max() / std.min()) if len(std) > 1 else 1.0


def warn_scales(cfg: TrainConfig, data: Prepared):
    """One warning naming --standardize when feature scales differ by more than SCALE_RATIO_WARN."""
    if cfg.normalization != "none":
        return
    X = pooled_mean(data.X) if cfg.head != "pooled" else data.X
    ratio = scale_ratio(X, torch.unique(torch.cat(data.train_all)))
    if ratio > SCALE_RATIO_WARN:
        warnings.warn(f"{cfg.model}/{cfg.dataset}: per-feature std over the training rows spans {ratio:.3g}x "
                      f"(> {SCALE_RATIO_WARN:g}); the policy sees a few large features; consider --standardize")


__all__ = ["run", "prepare", "write", "resolve_model", "set_threads", "scale_ratio", "warn_scales", "similarity",
           "Result", "Prepared", "Context", "DataError", "SCALE_RATIO_WARN"]
