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
from trainer.diagnostics import FLOOR, MIN_SHARE, collapse_onset
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
    result = collect(ctx, final, seconds, t_load)
    warn_reach(cfg, result.rows)
    return result


def warn_collapsed(ctx: Context) -> None:
    """One warning per run whose predictions on the unlabelled pool ended collapsed."""
    cfg, log = ctx.cfg, ctx.log
    collapsed, onset = collapse_onset(log.collapse_flags, log.collapse_run_epochs)
    for r, info in enumerate(ctx.data.runs):
        if collapsed and collapsed[r]:
            warnings.warn(f"{cfg.method} {cfg.dataset} fold {info['fold']} seed {info['seed']}: predictions on the "
                          f"unlabelled pool collapsed from epoch {onset[r]} on (a class the model predicted for "
                          f">= {MIN_SHARE:.0%} of the pool at the end of stage 1 is now under {FLOOR:.0%}, or the "
                          "entropy fell below half of stage 1's); see curves.csv/diagnostics.png")


REACH_FLOOR = 0.01
"""A thresholded unlabelled term (pseudo-label, fixmatch) whose mask rate stayed under this share of the pool in
every epoch is one warning: the run was the supervised term alone."""


def warn_reach(cfg: TrainConfig, rows: list[dict]) -> None:
    """One warning naming the runs whose unlabelled term never reached REACH_FLOOR of the pool (mask_rate_max)."""
    low = [(r["fold"], r["seed"], r["mask_rate_max"]) for r in rows
           if r["stage"] == "final" and r["method"] == cfg.method and r.get("mask_rate_max", 1.0) < REACH_FLOOR]
    if low:
        worst = max(x[2] for x in low)
        warnings.warn(f"{cfg.method} {cfg.dataset}: in {len(low)} run(s) (fold, seed) {[x[:2] for x in low][:4]} "
                      f"under {REACH_FLOOR:.0%} of the pool ever passed the confidence threshold (at most "
                      f"{worst:.2%} in any epoch), so the unlabelled term barely acted: these runs are the supervised "
                      "term trained for more epochs (mask_rate in results.csv)")


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
