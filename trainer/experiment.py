"""`trainer run`: prepare the data once, train every (fold, seed) run in one stack, score, write results.

The methods registry maps each paper method to a function of the run context; all stages share the
stacked policy, its optimiser and the epoch log.
"""

from __future__ import annotations

import json
import os
import platform
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from trainer import __version__
from trainer.algorithms.bgrpo import train_bgrpo
from trainer.algorithms.dino import train_dino
from trainer.algorithms.supervised import train_supervised
from trainer.config import TrainConfig
from trainer.data import (DataError, crop_views, fold_rows, join_by_key, load_features, map_labels,
                          missing_keys_error, open_store, pad_rows, read_label_map, split_labeled)
from trainer.loop import EpochLog
from trainer.metrics import confusion, scores
from trainer.models import StackedAdam, StackedMLP
from trainer.rewards import reward


@dataclass
class Prepared:
    """Whole-dataset tensors and the row sets of every (fold, seed) run."""

    X: torch.Tensor  # (N, D) policy features
    y: torch.Tensor  # (N,) class index (0 where the label was dropped; such rows are never used)
    classes: tuple[str, ...]
    Xu: torch.Tensor  # (N_u, D) unlabelled-stage features
    runs: list[dict]  # per run: fold, seed and counts
    labeled: list[torch.Tensor]  # per run: rows of X with labels
    train_all: list[torch.Tensor]  # per run: all training rows of X (full-labeled)
    unlabeled: list[torch.Tensor]  # per run: rows of Xu
    test: list[np.ndarray]  # per run: rows of X
    init_seeds: list[int]
    Xt: torch.Tensor | None = None  # (N, D_t) teacher features aligned with X rows
    Xtu: torch.Tensor | None = None  # (N_u, D_t) teacher features aligned with Xu rows
    crops: torch.Tensor | None = None  # (N_u, V, D) DINO frame-crop views
    provenance: dict = field(default_factory=dict)


def prepare(cfg: TrainConfig) -> Prepared:
    """Load features, labels, folds, splits, the unlabelled source and the teacher's features."""
    store = open_store(cfg.store)
    feats = load_features(store, cfg.model, cfg.dataset, cfg.nonfinite)
    labels = map_labels(feats.raw_labels, read_label_map(cfg.manifests, cfg.dataset), cfg.labels)
    y = labels.y
    folds = fold_rows(feats.keys, y, cfg.manifests, cfg.dataset, cfg.fold, set(feats.dropped_keys))
    prov = {f"{cfg.model}/{cfg.dataset}": store.provenance(cfg.model, cfg.dataset)}

    if cfg.unlabeled_from and cfg.method in ("dino", "b-grpo"):
        ufeats = load_features(store, cfg.model, cfg.unlabeled_from, cfg.nonfinite)
        if ufeats.X.shape[1] != feats.X.shape[1]:
            raise DataError(f"--unlabeled-from {cfg.unlabeled_from}: dim {ufeats.X.shape[1]} != "
                            f"{feats.X.shape[1]} of {cfg.dataset}")
        prov[f"{cfg.model}/{cfg.unlabeled_from}"] = store.provenance(cfg.model, cfg.unlabeled_from)
    else:
        ufeats = feats

    runs, labeled, train_all, unlabeled, test, init_seeds = [], [], [], [], [], []
    for f in folds:
        for seed in cfg.seeds:
            run_seed = seed * 1000 + f.k  # the split, the initialisation and the batch order of this run
            lab, unl = split_labeled(f.train, y, cfg.labeled_fraction, run_seed)
            if ufeats is not feats:
                unl = np.arange(len(ufeats.keys))
            present = set(np.unique(y[lab if cfg.method != "full-labeled" else f.train]).tolist())
            miss_train = [c for i, c in enumerate(labels.classes) if i not in present]
            miss_test = [c for i, c in enumerate(labels.classes) if i not in set(np.unique(y[f.test]).tolist())]
            if miss_train or miss_test:
                warnings.warn(f"{cfg.dataset} fold {f.k} seed {seed}: classes missing from training "
                              f"{miss_train or '-'}, from test {miss_test or '-'}; macro-F1 is over the classes present "
                              "in test labels or predictions, UA over those in test labels (recorded in the results)")
            runs.append({"fold": f.k, "seed": seed, "n_missing": f.n_missing,
                         "n_dropped": f.n_dropped,
                         "missing_train_classes": "|".join(miss_train),
                         "missing_test_classes": "|".join(miss_test)})
            labeled.append(torch.as_tensor(lab))
            train_all.append(torch.as_tensor(f.train))
            unlabeled.append(torch.as_tensor(unl))
            test.append(f.test)
            init_seeds.append(run_seed)

    data = Prepared(feats.X, torch.as_tensor(np.maximum(y, 0)), labels.classes, ufeats.X, runs, labeled,
                    train_all, unlabeled, test, init_seeds, provenance=prov)
    if cfg.method == "b-grpo" and cfg.needs_teacher:
        _attach_teacher(cfg, store, feats, ufeats, data)
    if cfg.method == "dino" and cfg.dino_views != "noise":
        if ufeats.frames_available:
            data.crops = crop_views(store, cfg.model, cfg.unlabeled_dataset, ufeats.keys, max(2, cfg.dino_crops),
                                    cfg.seeds[0])
        elif cfg.dino_views == "frames":
            raise DataError(f"--dino-views frames: {cfg.model}/{cfg.unlabeled_dataset} was extracted without "
                            "frames; use --dino-views noise (or auto)")
    for r in data.runs:
        r["views"] = "" if cfg.method != "dino" else ("frames" if data.crops is not None else "noise")
    return data


def _attach_teacher(cfg, store, feats, ufeats, data: Prepared):
    """Teacher features joined by key to the policy rows (labelled) and the unlabelled rows."""
    tf = load_features(store, cfg.teacher, cfg.dataset, cfg.nonfinite)
    rows = join_by_key(feats.keys, tf.keys)
    if cfg.unlabeled_from:
        tfu = load_features(store, cfg.teacher, cfg.unlabeled_from, cfg.nonfinite)
        rows_u = join_by_key(ufeats.keys, tfu.keys)
        data.provenance[f"{cfg.teacher}/{cfg.unlabeled_from}"] = store.provenance(cfg.teacher, cfg.unlabeled_from)
    else:
        tfu, rows_u = tf, rows
    need = np.unique(np.concatenate([p.numpy() for p in data.labeled]))
    need_u = np.unique(np.concatenate([p.numpy() for p in data.unlabeled]))
    lack, lack_u = need[rows[need] < 0], need_u[rows_u[need_u] < 0]
    # without --unlabeled-from both pools are rows of one entry (a row may be labelled in one run and
    # unlabelled in another): count each utterance once
    miss = list(dict.fromkeys([feats.keys[i] for i in lack] + [ufeats.keys[i] for i in lack_u]))
    if miss:
        if cfg.missing_teacher != "drop":
            n_needed = len(need) + len(need_u) if cfg.unlabeled_from else len(np.union1d(need, need_u))
            entries = " and ".join(f"{cfg.teacher}/{d}" for d in dict.fromkeys([cfg.dataset, cfg.unlabeled_dataset]))
            raise missing_keys_error(miss, n_needed, f"--teacher {cfg.teacher} (store entry {entries})")
        warnings.warn(f"--teacher {cfg.teacher}: {len(miss)} utterances lack teacher features; "
                      "dropped from the labelled and unlabelled pools and counted in n_dropped")
        for r in range(len(data.runs)):
            lab, unl = data.labeled[r].numpy(), data.unlabeled[r].numpy()
            keep, keep_u = rows[lab] >= 0, rows_u[unl] >= 0
            data.runs[r]["n_dropped"] += int((~keep).sum() + (~keep_u).sum())
            data.labeled[r], data.unlabeled[r] = torch.as_tensor(lab[keep]), torch.as_tensor(unl[keep_u])
    data.Xt = torch.zeros(len(feats.keys), tf.X.shape[1])
    data.Xt[torch.as_tensor(np.flatnonzero(rows >= 0))] = tf.X[torch.as_tensor(rows[rows >= 0])]
    data.Xtu = torch.zeros(len(ufeats.keys), tfu.X.shape[1])
    data.Xtu[torch.as_tensor(np.flatnonzero(rows_u >= 0))] = tfu.X[torch.as_tensor(rows_u[rows_u >= 0])]
    data.provenance[f"{cfg.teacher}/{cfg.dataset}"] = store.provenance(cfg.teacher, cfg.dataset)


@dataclass
class Context:
    """What a method function works with."""

    cfg: TrainConfig
    data: Prepared
    policy: StackedMLP
    opt: StackedAdam
    log: EpochLog
    gens: list[torch.Generator]
    gen: torch.Generator
    snapshots: dict = field(default_factory=dict)

    def new_opt(self, model: StackedMLP) -> StackedAdam:
        return StackedAdam(model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    def supervised(self, pools, epochs: int, stage: str):
        self.log.begin(stage, self.policy, epochs)
        train_supervised(self.policy, self.opt, self.data.X, self.data.y, pools, epochs, self.cfg.batch_size,
                         self.gens, self.log)

    def snapshot(self, stage: str, model: StackedMLP):
        """Test predictions of ``model`` now, reported as rows of ``stage``."""
        self.snapshots[stage] = model.predict(self.data.X, pad_rows(self.data.test)[0]).argmax(-1)


def m_baseline(ctx: Context) -> StackedMLP:
    """Supervised on the labelled half for `epochs_baseline` epochs."""
    ctx.supervised(ctx.data.labeled, ctx.cfg.epochs_baseline, "supervised")
    return ctx.policy


def m_same_epochs(ctx: Context) -> StackedMLP:
    """Supervised on the labelled half for `epochs_baseline + epochs_stage2` epochs."""
    ctx.supervised(ctx.data.labeled, ctx.cfg.epochs_total, "supervised")
    return ctx.policy


def m_full_labeled(ctx: Context) -> StackedMLP:
    """Supervised on the whole training set for `epochs_baseline + epochs_stage2` epochs."""
    ctx.supervised(ctx.data.train_all, ctx.cfg.epochs_total, "supervised")
    return ctx.policy


def m_dino(ctx: Context) -> StackedMLP:
    """Baseline, then DINO on the unlabelled pool; the EMA teacher is reported."""
    cfg = ctx.cfg
    m_baseline(ctx)
    ctx.snapshot("stage1", ctx.policy)
    teacher = ctx.policy.frozen_copy()
    ctx.log.begin("dino", teacher, cfg.epochs_stage2)
    train_dino(ctx.policy, teacher, ctx.new_opt(ctx.policy), ctx.data.Xu, ctx.data.unlabeled, cfg.epochs_stage2,
               cfg.batch_size, ctx.gens, ctx.gen, cfg, ctx.data.crops, ctx.log)
    return teacher


def m_bgrpo(ctx: Context) -> StackedMLP:
    """Baseline, then B-GRPO on the unlabelled pool with pi_ref = the baseline policy."""
    cfg, data = ctx.cfg, ctx.data
    m_baseline(ctx)
    ctx.snapshot("stage1", ctx.policy)
    logp_ref_all = ctx.policy.predict_all(data.Xu).log_softmax(-1)  # (M, N_u, C)
    p_teacher_all = None
    if cfg.needs_teacher:
        teacher = StackedMLP.from_seeds([s + 7 for s in data.init_seeds], data.Xt.shape[1], len(data.classes),
                                        cfg.hidden)
        teacher_gens = [torch.Generator().manual_seed(s + 7) for s in data.init_seeds]
        if cfg.standardize:
            teacher.standardize(data.Xt, data.train_all)
        train_supervised(teacher, ctx.new_opt(teacher), data.Xt, data.y, data.labeled, cfg.epochs_baseline,
                         cfg.batch_size, teacher_gens)
        p_teacher_all = teacher.predict_all(data.Xtu).softmax(-1)  # (M, N_u, C)

    def reward_fn(p, p_t):
        return reward(cfg.reward, p, p_t, delta=cfg.delta, C=cfg.reward_value, theta=cfg.theta)

    ctx.log.begin("b-grpo", ctx.policy, cfg.epochs_stage2)
    train_bgrpo(ctx.policy, ctx.new_opt(ctx.policy), data.Xu, data.unlabeled, cfg.epochs_stage2, cfg.batch_size,
                ctx.gens, logp_ref_all, reward_fn, cfg.advantage, cfg.epsilon, cfg.beta, cfg.mu, cfg.action,
                p_teacher_all, ctx.gen, ctx.log)
    unrewarded = sorted({(r["fold"], r["seed"]) for r in ctx.log.rows if r["stage"] == "b-grpo"}
                        - {(r["fold"], r["seed"]) for r in ctx.log.rows if r["stage"] == "b-grpo" and r["reward"] > 0})
    if unrewarded:
        warnings.warn(f"b-grpo: {len(unrewarded)} run(s) (fold, seed) {unrewarded[:4]} got no reward in any batch "
                      f"({cfg.reward} never paid out, e.g. no max probability above --delta {cfg.delta}), so "
                      "the stage left their policy unchanged; train the baseline longer or lower --delta")
    return ctx.policy


METHODS = {
    "baseline": m_baseline,
    "same-epochs": m_same_epochs,
    "full-labeled": m_full_labeled,
    "dino": m_dino,
    "b-grpo": m_bgrpo,
}


def get_method(name: str):
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}") from None


def set_threads(n: int = 0):
    """torch intra-op threads: ``n``, or every core this process may use."""
    if n <= 0:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(n)


@dataclass
class Result:
    cfg: TrainConfig
    rows: list[dict]
    curves: list[dict]
    confusions: dict  # stage -> (C, C) summed over runs
    classes: tuple[str, ...]
    provenance: dict
    seconds: float
    seconds_load: float


def run(cfg: TrainConfig, data: Prepared | None = None, bar=None) -> Result:
    """Train and score every (fold, seed) run of ``cfg``; ``data`` reuses an already prepared dataset."""
    fn = get_method(cfg.method)
    set_threads(cfg.threads)
    t0 = time.perf_counter()
    if data is None:
        data = prepare(cfg)
    t_load = time.perf_counter() - t0
    test_idx, test_valid = pad_rows(data.test)
    policy = StackedMLP.from_seeds(data.init_seeds, data.X.shape[1], len(data.classes), cfg.hidden)
    if cfg.standardize:
        policy.standardize(data.X, data.train_all)
    gens = [torch.Generator().manual_seed(s) for s in data.init_seeds]
    ctx = Context(cfg, data, policy, None, EpochLog(data.X, data.y, test_idx, test_valid, len(data.classes),
                                                    [{"fold": r["fold"], "seed": r["seed"]} for r in data.runs],
                                                    cfg.eval_every, bar),
                  gens, torch.Generator().manual_seed(cfg.seeds[0] + 99))
    ctx.opt = ctx.new_opt(policy)
    final = fn(ctx)
    ctx.snapshot("final", final)
    seconds = time.perf_counter() - t0

    rows, confusions = [], {}
    for stage, pred in ctx.snapshots.items():
        cm = np.zeros((len(data.classes),) * 2, dtype=np.int64)
        for r, run_info in enumerate(data.runs):
            rows_r = data.test[r]
            yt, yp = data.y[rows_r].numpy(), pred[r, :len(rows_r)].numpy()
            cm += confusion(yt, yp, len(data.classes))
            rows.append(_row(cfg, stage, run_info, scores(yt, yp), data, r, seconds))
        confusions[stage] = cm
    return Result(cfg, rows, ctx.log.rows, confusions, data.classes, data.provenance, seconds, t_load)


def _row(cfg: TrainConfig, stage: str, info: dict, s: dict, data: Prepared, r: int, seconds: float) -> dict:
    uses_teacher = cfg.method == "b-grpo" and cfg.needs_teacher
    return {
        "experiment": cfg.experiment, "method": cfg.method, "stage": stage, "model": cfg.model,
        "dataset": cfg.dataset, "fold": info["fold"], "seed": info["seed"],
        "reward": cfg.reward if cfg.method == "b-grpo" else "",
        "teacher": cfg.teacher if uses_teacher else "",
        "advantage": cfg.advantage if cfg.method == "b-grpo" else "",
        "labels": cfg.labels, "unlabeled_from": cfg.unlabeled_from if cfg.method in ("dino", "b-grpo") else "",
        "labeled_fraction": 1.0 if cfg.method == "full-labeled" else cfg.labeled_fraction,
        "macro_f1": s["macro_f1"], "ua": s["ua"], "wa": s["wa"],
        "n_train_labeled": len(data.train_all[r] if cfg.method == "full-labeled" else data.labeled[r]),
        "n_unlabeled": len(data.unlabeled[r]) if cfg.method in ("dino", "b-grpo") else 0,
        "n_test": len(data.test[r]), "n_dropped": info["n_dropped"], "n_missing": info["n_missing"],
        "missing_train_classes": info["missing_train_classes"],
        "missing_test_classes": info["missing_test_classes"], "views": info["views"],
        "epochs": cfg.epochs_baseline if stage == "stage1" or cfg.method == "baseline" else cfg.epochs_total,
        "seconds": seconds,
    }


def write(result: Result, out: str | Path | None = None) -> Path:
    """results.csv (tidy rows), results.json (full config, environment, provenance, rows), curves.csv, PNGs."""
    import pandas as pd

    cfg = result.cfg
    d = Path(out or cfg.out) / cfg.run_name
    d.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(result.rows).to_csv(d / "results.csv", index=False)
    pd.DataFrame(result.curves).to_csv(d / "curves.csv", index=False)
    meta = {
        "config": cfg.to_dict(), "classes": list(result.classes), "rows": result.rows,
        "confusion": {k: v.tolist() for k, v in result.confusions.items()},
        "seconds": result.seconds, "seconds_load": result.seconds_load, "provenance": result.provenance,
        "environment": {"trainer": __version__, "torch": torch.__version__, "python": platform.python_version(),
                        "threads": torch.get_num_threads(), "machine": platform.machine()},
    }
    (d / "results.json").write_text(json.dumps(meta, indent=2, default=str))
    if cfg.plots:
        from trainer.plots import plot_confusion, plot_curves

        plot_curves(result.curves, d / "curves.png", title=cfg.run_name)
        plot_confusion(result.confusions["final"], result.classes, d / "confusion.png", title=cfg.run_name)
    return d
