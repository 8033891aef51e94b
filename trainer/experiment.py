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
from trainer.algorithms.common import LabelledStream
from trainer.algorithms.dino import train_dino
from trainer.algorithms.fixmatch import train_fixmatch
from trainer.algorithms.grpo import train_grpo
from trainer.algorithms.pseudolabel import train_pseudo_label
from trainer.algorithms.supervised import train_supervised
from trainer.config import TrainConfig
from trainer.data import (DataError, crop_views, fold_rows, join_by_key, load_features, map_labels,
                          missing_keys_error, open_store, pad_rows, read_label_map, row_speakers, speaker_normalize,
                          split_labeled)
from trainer.diagnostics import collapse_onset, under_trained
from trainer.loop import EpochLog, EvalSet
from trainer.metrics import confusion, macro_f1_batched, scores
from trainer.frames import FRAME_PAD, pooled_mean, use_frames
from trainer.models import StackedAdam, StackedMLP
from trainer.emotion_space import similarity_matrix
from trainer.rewards import SIMILARITY_REWARDS, reward
from trainer.robust import FrameBank, frame_bank
from trainer.teachers import fit_teacher, hacking_columns, predictions

RUN_SEED_STRIDE = 1000
"""Run seed = seed * RUN_SEED_STRIDE + fold k: one seed per (seed, fold) for up to 1000 folds. It draws the
run's labelled/unlabelled split, its initialisation and its batch order."""
TEACHER_SEED_OFFSET = 7
"""Run seed + this seeds the teacher MLP's initialisation and batches (r3-r5), apart from the policy's."""
VIEW_SEED_OFFSET = 99
"""Run seed + this seeds the run's own stream of random views (DINO noise/crop choice) and sampled actions."""
VAL_SEED_OFFSET = 31
"""Run seed + this draws the validation rows held out of the labelled rows (--val-fraction)."""
DIAG_SEED_OFFSET = 53
"""Run seed + this draws the pool subsample of the collapse diagnostics (--diag-pool-rows)."""
CROP_SEED_OFFSET = 17
"""Seed + this draws the seed's set of DINO / FixMatch frame crops (shared by that seed's folds)."""
LABELED_SEED_OFFSET = 71
"""Run seed + this orders the labelled batches drawn beside the unlabelled ones in stage 2 (--sup-weight,
pseudo-label, fixmatch)."""


@dataclass
class Prepared:
    """Whole-dataset tensors and the row sets of every (fold, seed) run."""

    X: torch.Tensor  # (N, D) policy features; (N, L, D) with --layer weighted; folds stacked with --normalize speaker
    y: torch.Tensor  # (N,) class index (0 where the label was dropped; such rows are never used)
    classes: tuple[str, ...]
    Xu: torch.Tensor  # (N_u, D) unlabelled-stage features
    runs: list[dict]  # per run: fold, seed and counts
    labeled: list[torch.Tensor]  # per run: rows of X with labels
    train_all: list[torch.Tensor]  # per run: all training rows of X (full-labeled)
    unlabeled: list[torch.Tensor]  # per run: rows of Xu
    test: list[np.ndarray]  # per run: rows of X
    init_seeds: list[int]
    val: list[np.ndarray] = field(default_factory=list)  # per run: validation rows of X (empty: none)
    diag_pool: list[np.ndarray] = field(default_factory=list)  # per run: rows of Xu for the collapse diagnostics
    Xt: torch.Tensor | None = None  # (N, D_t) teacher features aligned with X rows
    Xtu: torch.Tensor | None = None  # (N_u, D_t) teacher features aligned with Xu rows
    crops: torch.Tensor | None = None  # (S, N_u, V, D) DINO frame-crop view sets, one per seed
    crop_sets: torch.Tensor | None = None  # (M,) the crop set of each run
    provenance: dict = field(default_factory=dict)
    layer_ids: list = field(default_factory=list)
    """The stored hidden_states layers (the L of X) with --layer weighted; empty otherwise."""
    keys: list = field(default_factory=list)
    """Utterance key of each row of the loaded entry; row i of X is keys[i % len(keys)] (--normalize speaker
    stacks one copy of the rows per fold)."""
    teacher_frames: FrameBank | None = None
    """--regularize eam: the teacher entry's frames of the labelled rows of Xt."""


def prepare(cfg: TrainConfig) -> Prepared:
    """Load features, labels, folds, splits, the unlabelled source and the teacher's features."""
    if cfg.layer == "weighted" and cfg.method == "reference":
        raise DataError("--layer weighted: the reference method's logistic regression reads (N, D) features; use "
                        "--layer last or K with --method reference")
    if cfg.normalize == "speaker" and cfg.unlabeled_from and cfg.uses_unlabeled:
        raise DataError("--normalize speaker with --unlabeled-from: the other corpus's speakers are not normalised; "
                        "use --normalize global, or leave --unlabeled-from empty")
    store = open_store(cfg.store)
    feats = load_features(store, cfg.model, cfg.dataset, cfg.nonfinite, cfg.layer)
    if cfg.head != "pooled":
        use_frames(store, feats, cfg.frames_memory_gb)  # X (N, T, D) padded frames
    labels = map_labels(feats.raw_labels, read_label_map(cfg.manifests, cfg.dataset), cfg.labels)
    y = labels.y
    folds = fold_rows(feats.keys, y, cfg.manifests, cfg.dataset, cfg.fold, set(feats.dropped_keys))
    prov = {f"{cfg.model}/{cfg.dataset}": store.provenance(cfg.model, cfg.dataset)}

    if cfg.unlabeled_from and cfg.uses_unlabeled:
        ufeats = load_features(store, cfg.model, cfg.unlabeled_from, cfg.nonfinite, cfg.layer)
        if cfg.head != "pooled":
            use_frames(store, ufeats, cfg.frames_memory_gb)
        if (ufeats.X.shape[1:] if cfg.head == "pooled" else ufeats.X.shape[-1:]) != \
                (feats.X.shape[1:] if cfg.head == "pooled" else feats.X.shape[-1:]):  # frames: T_max may differ
            raise DataError(f"--unlabeled-from {cfg.unlabeled_from}: dim {ufeats.X.shape[1]} != "
                            f"{feats.X.shape[1]} of {cfg.dataset}")
        prov[f"{cfg.model}/{cfg.unlabeled_from}"] = store.provenance(cfg.model, cfg.unlabeled_from)
    else:
        ufeats = feats

    if cfg.val == "emobox":
        lacking = [f.k for f in folds if f.valid is None]
        if lacking:
            raise DataError(f"--val emobox: {cfg.manifests}/{cfg.dataset} fold(s) {lacking} have no EmoBox "
                            "*_valid_fold_<k>.jsonl; use --val-fraction F instead")
    runs, labeled, train_all, unlabeled, test, init_seeds, val, diag_pool = [], [], [], [], [], [], [], []
    for f in folds:
        for seed in cfg.seeds:
            run_seed = seed * RUN_SEED_STRIDE + f.k
            lab, unl = split_labeled(f.train, y, cfg.labeled_fraction, run_seed)
            if cfg.val == "emobox":
                v = f.valid
            elif cfg.val_rows_fraction > 0:
                lab, v = split_labeled(lab, y, 1 - cfg.val_rows_fraction, run_seed + VAL_SEED_OFFSET)
            else:
                v = np.zeros(0, dtype=np.int64)
            if ufeats is not feats:
                unl = np.arange(len(ufeats.keys))
            pool = unl if len(unl) else lab
            if 0 < cfg.diag_pool_rows < len(pool):
                pool = np.sort(np.random.default_rng(run_seed + DIAG_SEED_OFFSET).choice(pool, cfg.diag_pool_rows,
                                                                                         replace=False))
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
            val.append(v)
            diag_pool.append(pool)

    data = Prepared(feats.X, torch.as_tensor(np.maximum(y, 0)), labels.classes, ufeats.X, runs, labeled,
                    train_all, unlabeled, test, init_seeds, val, diag_pool, provenance=prov, keys=list(feats.keys))
    if cfg.uses_teacher:
        _attach_teacher(cfg, store, feats, ufeats, data)
    if cfg.layer == "weighted":
        data.layer_ids = list(store.provenance(cfg.model, cfg.dataset).get("layers") or range(feats.X.shape[1]))
    if cfg.views == "frames" and cfg.head != "pooled":
        raise DataError(f"--{cfg.method}-views frames: frame-crop views are pooled crop means, inputs of --head pooled; "
                        f"--head {cfg.head} reads the frames themselves, so use --{cfg.method}-views noise or auto "
                        "(noise and feature dropout on every frame)")
    plain = cfg.layer == "last" and cfg.normalize != "speaker" and cfg.head == "pooled"
    if cfg.views == "frames" and not plain:
        raise DataError(f"--{cfg.method}-views frames: frame crops are last-layer, unnormalised frames, not the "
                        f"--layer {cfg.layer} / --normalize {cfg.normalize} inputs; use --{cfg.method}-views noise")
    if cfg.views in ("auto", "frames") and plain:
        entry = f"{cfg.model}/{cfg.unlabeled_dataset}"
        frame_dim = store.frames(cfg.model, cfg.unlabeled_dataset, ufeats.keys[0]).shape[-1] \
            if ufeats.frames_available else None
        if frame_dim == ufeats.X.shape[1]:
            data.crops = crop_views(store, cfg.model, cfg.unlabeled_dataset, ufeats.keys, cfg.dino_crops,
                                    [s + CROP_SEED_OFFSET for s in cfg.seeds])
            data.crop_sets = torch.as_tensor([cfg.seeds.index(r["seed"]) for r in runs])
        elif cfg.views == "frames":
            why = ("was extracted without frames" if frame_dim is None else
                   f"has {frame_dim}-dim frames but {ufeats.X.shape[1]}-dim pooled features (e.g. egemaps: frame "
                   "descriptors vs functionals), so frame crops are not inputs the policy reads")
            opt = f"--{cfg.method}-views"
            raise DataError(f"{opt} frames: {entry} {why}; use {opt} noise (or auto)")
    for r in data.runs:
        r["views"] = "" if not cfg.views else ("frames" if data.crops is not None else "noise")
    if cfg.normalize == "speaker":
        _normalize_speakers(cfg, feats, folds, data)
    if cfg.method == "teacher":  # the teacher alone: its features are the run's inputs, its rows the policy's
        data.X, data.Xu = data.Xt, data.Xtu
    return data


def _normalize_speakers(cfg: TrainConfig, feats, folds, data: Prepared):
    """--normalize speaker: one copy of X per fold, each row z-scored with its speaker's statistics in that fold
    (data.speaker_normalize; test speakers from their own test rows: transductive, features only). Run r's row
    indices move to its fold's copy (offset fold position * N); y and the teacher features are stacked alike."""
    spk = row_speakers(cfg.manifests, cfg.dataset, feats.keys, cfg.speaker_pattern)
    n = len(feats.keys)
    pos = {f.k: i for i, f in enumerate(folds)}
    copies = [speaker_normalize(data.X, spk, f.train, np.concatenate([f.test] + ([f.valid] if f.valid is not None
                                                                            else []))) for f in folds]
    if data.Xt is not None:
        data.Xt = torch.cat([speaker_normalize(data.Xt, spk, f.train, np.concatenate(
            [f.test] + ([f.valid] if f.valid is not None else []))) for f in folds])
        data.Xtu = data.Xt
    data.X = data.Xu = torch.cat(copies)  # (F * N, [L,] D)
    data.y = data.y.repeat(len(folds))
    for r, info in enumerate(data.runs):
        off = pos[info["fold"]] * n
        for name in ("labeled", "train_all", "unlabeled", "test", "val", "diag_pool"):
            getattr(data, name)[r] = getattr(data, name)[r] + off
    data.provenance["speakers"] = {"n": int(len(np.unique(spk))), "source": "emocache.speakers"}


def _attach_teacher(cfg, store, feats, ufeats, data: Prepared):
    """Teacher features joined by key to the policy rows (labelled) and the unlabelled rows."""
    tf = load_features(store, cfg.teacher, cfg.dataset, cfg.nonfinite)
    if cfg.head != "pooled":
        use_frames(store, tf, cfg.frames_memory_gb)  # the teacher reads its frames through the same head
    rows = join_by_key(feats.keys, tf.keys)
    if cfg.unlabeled_from:
        tfu = load_features(store, cfg.teacher, cfg.unlabeled_from, cfg.nonfinite)
        if cfg.head != "pooled":
            use_frames(store, tfu, cfg.frames_memory_gb)
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
    fill = FRAME_PAD if cfg.head != "pooled" else 0.0  # absent rows: no valid frame / zero vector
    data.Xt = torch.full((len(feats.keys), *tf.X.shape[1:]), fill, dtype=tf.X.dtype)
    data.Xt[torch.as_tensor(np.flatnonzero(rows >= 0))] = tf.X[torch.as_tensor(rows[rows >= 0])]
    data.Xtu = torch.full((len(ufeats.keys), *tfu.X.shape[1:]), fill, dtype=tfu.X.dtype)
    data.Xtu[torch.as_tensor(np.flatnonzero(rows_u >= 0))] = tfu.X[torch.as_tensor(rows_u[rows_u >= 0])]
    data.provenance[f"{cfg.teacher}/{cfg.dataset}"] = store.provenance(cfg.teacher, cfg.dataset)
    if "eam" in cfg.regularizers:
        data.teacher_frames = frame_bank(store, cfg.teacher, cfg.dataset, feats.keys,
                                         np.unique(np.concatenate([p.numpy() for p in data.labeled])), data.Xt,
                                         data.provenance[f"{cfg.teacher}/{cfg.dataset}"])


@dataclass
class Snapshot:
    """A reported model's test predictions and where in training it was taken."""

    test_pred: torch.Tensor  # (M, T)
    test_prob: torch.Tensor  # (M, T, C) class probabilities (predictions.csv)
    log_stage: str
    """The EpochLog stage it ends (its best-validation / best-test epochs are that stage's)."""
    epoch: int
    train_f1: torch.Tensor  # (M,) macro-F1 on each run's labelled training rows
    split_pred: dict = field(default_factory=dict)
    """Teacher-rewarded runs: the model's predictions per split (teachers.predictions), for the hacking check."""


@dataclass
class Context:
    """What a method function works with."""

    cfg: TrainConfig
    data: Prepared
    policy: StackedMLP
    opt: StackedAdam
    log: EpochLog
    gens: list[torch.Generator]
    view_gens: list[torch.Generator]
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    """Row stage ('stage1', 'final') -> the model it reports."""
    logreg: list = field(default_factory=list)
    """Per run (test predictions, training fit) of the reference's logistic regression."""
    teacher: StackedMLP | None = None
    """The teacher MLP of r3-r5 (or of the teacher method), once trained."""
    S: np.ndarray | None = None
    """(C, C) emotion similarity of the classes (trainer.emotion_space); None when a class has no place."""

    def new_opt(self, model: StackedMLP) -> StackedAdam:
        return StackedAdam(model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    def supervised(self, pools, epochs: int, stage: str):
        self.log.begin(stage, self.policy, epochs)
        train_supervised(self.policy, self.opt, self.data.X, self.data.y, pools, epochs, self.cfg.batch_size,
                         self.gens, self.log)

    def snapshot(self, stage: str, model: StackedMLP):
        """Test predictions of ``model`` now, reported as rows of ``stage`` (the log stage just trained)."""
        pools = self.data.train_all if self.cfg.method == "full-labeled" else self.data.labeled
        train_idx, train_valid = pad_rows(pools)
        train_f1 = macro_f1_batched(self.data.y[train_idx], model.predict(self.data.X, train_idx).argmax(-1),
                                    train_valid, len(self.data.classes))
        logits = model.predict(self.data.X, pad_rows(self.data.test)[0])  # (M, T, C)
        split = predictions(model, self.data, teacher=False) if self.cfg.is_grpo and self.cfg.uses_teacher else {}
        self.snapshots[stage] = Snapshot(logits.argmax(-1), logits.softmax(-1), self.log.stage, self.log.epoch,
                                         train_f1, split)

    def stage1(self):
        """The supervised baseline a two-stage method starts from, reported as the `stage1` rows."""
        m_baseline(self)
        self.snapshot("stage1", self.policy)

    def labelled_stream(self) -> LabelledStream:
        """Each run's labelled rows as endless batches beside the stage-2 batches, in their own seeded order."""
        return LabelledStream(self.data.X, self.data.y, self.data.labeled, self.cfg.batch_size,
                              [torch.Generator().manual_seed(s + LABELED_SEED_OFFSET) for s in self.data.init_seeds])


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
    ctx.stage1()
    teacher = ctx.policy.frozen_copy()
    ctx.log.begin("dino", teacher, cfg.epochs_stage2)
    train_dino(ctx.policy, teacher, ctx.new_opt(ctx.policy), ctx.data.Xu, ctx.data.unlabeled, cfg.epochs_stage2,
               cfg.batch_size, ctx.gens, ctx.view_gens, cfg, ctx.data.crops, ctx.data.crop_sets, ctx.log)
    return teacher


def _grpo_stage1(ctx: Context):
    """Baseline, then what both GRPO methods start from: log pi_ref on the pool (the baseline policy) and, for a
    teacher reward, the teacher MLP's probabilities on the pool."""
    cfg, data = ctx.cfg, ctx.data
    ctx.stage1()
    logp_ref_all = ctx.policy.predict_all(data.Xu).log_softmax(-1)  # (M, N_u, C)
    p_teacher_all = None
    if cfg.needs_teacher:
        ctx.teacher = fit_teacher(cfg, data, [s + TEACHER_SEED_OFFSET for s in data.init_seeds])
        p_teacher_all = ctx.teacher.predict_all(data.Xtu).softmax(-1)  # (M, N_u, C)
    return logp_ref_all, p_teacher_all


def m_teacher(ctx: Context) -> StackedMLP:
    """The teacher MLP of r3-r5 alone (ours), trained exactly as b-grpo/grpo train it (seeds, rows, epochs,
    --regularize) on --teacher's features and tested on them; --save-teacher keeps it for --teacher-from."""
    ctx.teacher = fit_teacher(ctx.cfg, ctx.data, [s + TEACHER_SEED_OFFSET for s in ctx.data.init_seeds], ctx.log)
    return ctx.teacher


def _warn_unrewarded(ctx: Context):
    cfg = ctx.cfg
    stage2 = [r for r in ctx.log.rows if r["stage"] == cfg.method]
    unrewarded = sorted({(r["fold"], r["seed"]) for r in stage2}
                        - {(r["fold"], r["seed"]) for r in stage2 if r["reward"] > cfg.penalty_value})
    if unrewarded:
        warnings.warn(f"{cfg.method}: {len(unrewarded)} run(s) (fold, seed) {unrewarded[:4]} got no reward in any "
                      f"batch ({cfg.reward} never paid out, e.g. no max probability above --delta {cfg.delta}), so "
                      f"the {cfg.method} term left their policy unchanged; train the baseline longer or lower --delta")


def _reward_fn(ctx: Context):
    cfg = ctx.cfg
    S = None if ctx.S is None else torch.as_tensor(ctx.S)

    def reward_fn(p, p_t, o=None):
        return reward(cfg.reward, p, p_t, delta=cfg.delta, C=cfg.reward_value, theta=cfg.theta,
                      penalty=cfg.penalty_value, o=o, S=S, alpha=cfg.eswr_alpha, gamma=cfg.eswr_gamma)
    return reward_fn


def similarity(cfg: TrainConfig, classes: tuple[str, ...]) -> np.ndarray | None:
    """The classes' emotion similarity for eswr/wheel and the wheel metric. A class the wheel cannot place is an
    error for eswr/wheel and one warning otherwise (the wheel column is then NaN)."""
    try:
        return similarity_matrix(classes, cfg.similarity)
    except ValueError as e:
        if cfg.is_grpo and cfg.reward in SIMILARITY_REWARDS or cfg.similarity:
            raise DataError(f"--reward {cfg.reward}: {e}") from None
        warnings.warn(f"{cfg.dataset}: the wheel metric is NaN: {e}")
        return None


def m_bgrpo(ctx: Context) -> StackedMLP:
    """Baseline, then B-GRPO on the unlabelled pool with pi_ref = the baseline policy."""
    cfg, data = ctx.cfg, ctx.data
    logp_ref_all, p_teacher_all = _grpo_stage1(ctx)
    ctx.log.begin("b-grpo", ctx.policy, cfg.epochs_stage2)
    train_bgrpo(ctx.policy, ctx.new_opt(ctx.policy), data.Xu, data.unlabeled, cfg.epochs_stage2, cfg.batch_size,
                ctx.gens, logp_ref_all, _reward_fn(ctx), cfg.advantage, cfg.epsilon, cfg.beta, cfg.mu, cfg.action,
                p_teacher_all, ctx.view_gens, ctx.log, balance=cfg.balance,
                sup=ctx.labelled_stream() if cfg.sup_weight > 0 else None, sup_weight=cfg.sup_weight)
    _warn_unrewarded(ctx)
    return ctx.policy


def m_grpo(ctx: Context) -> StackedMLP:
    """Baseline, then per-input GRPO (ours): G labels drawn per input, eq. 6 within each input's group."""
    cfg, data = ctx.cfg, ctx.data
    logp_ref_all, p_teacher_all = _grpo_stage1(ctx)
    ctx.log.begin("grpo", ctx.policy, cfg.epochs_stage2)
    train_grpo(ctx.policy, ctx.new_opt(ctx.policy), data.Xu, data.unlabeled, cfg.epochs_stage2, cfg.batch_size,
               ctx.gens, logp_ref_all, _reward_fn(ctx), cfg.group_size, cfg.advantage, cfg.epsilon, cfg.beta,
               cfg.mu, p_teacher_all, ctx.view_gens, ctx.log,
               sup=ctx.labelled_stream() if cfg.sup_weight > 0 else None, sup_weight=cfg.sup_weight)
    _warn_unrewarded(ctx)
    return ctx.policy


def m_reference(ctx: Context) -> StackedMLP:
    """Converged supervised references on the run's labelled rows (ours): the policy MLP trained with
    --reference-lr until its validation macro-F1 has not improved for --reference-patience epochs (the best
    validation epoch is reported), and a standardised logistic regression (scikit-learn) on the same rows."""
    from trainer.reference import logistic_regression

    cfg, data, log = ctx.cfg, ctx.data, ctx.log
    opt = StackedAdam(ctx.policy.parameters(), lr=cfg.reference_lr, weight_decay=cfg.weight_decay)
    log.begin("supervised", ctx.policy, cfg.reference_max_epochs)
    for _ in range(cfg.reference_max_epochs):
        train_supervised(ctx.policy, opt, data.X, data.y, data.labeled, 1, cfg.batch_size, ctx.gens, log)
        best = log.selected.get("supervised")
        if best is not None and bool((log.epoch - best.improved >= cfg.reference_patience).all()):
            break
    X_lr = pooled_mean(data.X) if cfg.head != "pooled" else data.X  # (N, D): frame means for a frame head
    ctx.logreg = [logistic_regression(X_lr, data.y, data.labeled[r].numpy(), data.test[r])
                  for r in range(len(data.runs))]
    return ctx.policy


def m_pseudo_label(ctx: Context) -> StackedMLP:
    """Baseline, then pseudo-labelling with a confidence threshold on the unlabelled pool (Lee 2013), the
    supervised term kept on the labelled rows."""
    cfg = ctx.cfg
    ctx.stage1()
    ctx.log.begin("pseudo-label", ctx.policy, cfg.epochs_stage2)
    train_pseudo_label(ctx.policy, ctx.new_opt(ctx.policy), ctx.data.Xu, ctx.data.unlabeled, cfg.epochs_stage2,
                       cfg.batch_size, ctx.gens, ctx.labelled_stream(), cfg.pseudo_threshold, cfg.pseudo_weight,
                       cfg.pseudo_rampup, ctx.log)
    return ctx.policy


def m_fixmatch(ctx: Context) -> StackedMLP:
    """Baseline, then FixMatch (Sohn et al. 2020) on the unlabelled pool, the supervised term kept."""
    cfg = ctx.cfg
    ctx.stage1()
    ctx.log.begin("fixmatch", ctx.policy, cfg.epochs_stage2)
    train_fixmatch(ctx.policy, ctx.new_opt(ctx.policy), ctx.data.Xu, ctx.data.unlabeled, cfg.epochs_stage2,
                   cfg.batch_size, ctx.gens, ctx.view_gens, ctx.labelled_stream(), cfg, ctx.data.crops,
                   ctx.data.crop_sets, ctx.log)
    return ctx.policy


METHODS = {
    "baseline": m_baseline,
    "same-epochs": m_same_epochs,
    "full-labeled": m_full_labeled,
    "dino": m_dino,
    "b-grpo": m_bgrpo,
    "grpo": m_grpo,
    "reference": m_reference,
    "pseudo-label": m_pseudo_label,
    "fixmatch": m_fixmatch,
    "teacher": m_teacher,
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
    eval_seconds: dict = field(default_factory=dict)
    """Seconds spent evaluating each per-epoch set (test, pool diagnostics, val), inside ``seconds``."""
    layer_weights: dict = field(default_factory=dict)
    """--layer weighted: {'layers': stored layer ids, 'runs': [{fold, seed, weights (L,)}]} of the reported model."""
    predictions: object = None
    """predictions.csv: a DataFrame, per stage, run and test utterance (see ``stage_predictions``)."""
    policy: StackedMLP | None = None
    """The model the final rows report (its member r is run ``members[r]``), for --save-model."""
    members: list = field(default_factory=list)
    """[{fold, seed}] of each member of ``policy``, in order."""


def check_out(cfg: TrainConfig) -> Path:
    """The run's output folder; a file in the way, or results of this exact configuration already there (unless
    --overwrite), is an error before any training."""
    d = Path(cfg.out) / cfg.run_name
    for p in (Path(cfg.out), d):
        if p.exists() and not p.is_dir():
            raise DataError(f"--out {cfg.out}: {p} is a file, not a folder; give a folder path")
    if not cfg.overwrite and any((d / f).exists() for f in ("results.csv", "results.json")):
        raise DataError(f"{d} already holds the results of this exact configuration; pass --overwrite to rerun "
                        "it, or change --out")
    return d


def resolve_model(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with --model filled in when empty: the store's only entry for --dataset; else an error listing them."""
    if cfg.model:
        return cfg
    if cfg.method == "teacher" and cfg.teacher:
        return cfg.replace(model=cfg.teacher)
    models = sorted(m for m, ds in open_store(cfg.store).entries() if ds == cfg.dataset)
    if len(models) != 1:
        have = ", ".join(models) if models else "none"
        raise DataError(f"--model is required: store {cfg.store} has {len(models)} models for --dataset "
                        f"{cfg.dataset} ({have}); give --model NAME")
    return cfg.replace(model=models[0])


SCALE_RATIO_WARN = 1e3
"""Without --standardize, a run warns when the largest per-feature std over the training rows (union of every
run's) is more than this many times the smallest non-zero one (ours: eGeMAPS' raw functionals lose ~23 points of
macro-F1 on URDU without z-scoring)."""


def scale_ratio(X: torch.Tensor, rows: torch.Tensor) -> float:
    """Largest over smallest non-zero per-feature std of ``X[rows]`` (X: (N, D)); 1 when fewer than 2 such."""
    std = X[rows].double().std(0)  # (D,)
    std = std[std > 0]
    return float(std.max() / std.min()) if len(std) > 1 else 1.0


def warn_scales(cfg: TrainConfig, data: Prepared):
    """One warning naming --standardize when feature scales differ by more than SCALE_RATIO_WARN."""
    if cfg.normalization != "none":
        return
    ratio = scale_ratio(pooled_mean(data.X) if cfg.head != "pooled" else data.X, torch.unique(torch.cat(data.train_all)))
    if ratio > SCALE_RATIO_WARN:
        warnings.warn(f"{cfg.model}/{cfg.dataset}: per-feature std over the training rows spans {ratio:.3g}x "
                      f"(> {SCALE_RATIO_WARN:g}); the policy sees a few large features; consider --standardize")


def eval_sets(cfg: TrainConfig, data: Prepared) -> dict[str, EvalSet]:
    """What the log evaluates per epoch: test, the stage-2 pool (diagnostics) and the validation rows."""
    sets = {"test": EvalSet(data.X, *pad_rows(data.test)),
            "pool": EvalSet(data.Xu, *pad_rows(data.diag_pool), labelled=False)}
    if cfg.has_val:
        sets["val"] = EvalSet(data.X, *pad_rows(data.val))
    return sets


def labelled_prior(data: Prepared, cfg: TrainConfig) -> torch.Tensor:
    """Class shares of each run's labelled rows, (M, C)."""
    pools = data.train_all if cfg.method == "full-labeled" else data.labeled
    counts = torch.stack([torch.bincount(data.y[p], minlength=len(data.classes)) for p in pools]).double()
    return counts / counts.sum(1, keepdim=True).clamp_min(1)


def run(cfg: TrainConfig, data: Prepared | None = None, bar=None) -> Result:
    """Train and score every (fold, seed) run of ``cfg``; ``data`` reuses an already prepared dataset."""
    fn = get_method(cfg.method)
    cfg = resolve_model(cfg)
    check_out(cfg)
    set_threads(cfg.threads)
    t0 = time.perf_counter()
    if data is None:
        data = prepare(cfg)
    warn_scales(cfg, data)
    t_load = time.perf_counter() - t0
    policy = StackedMLP.from_seeds(data.init_seeds, data.X.shape[-1], len(data.classes), cfg.hidden,
                                   data.X.shape[1] if cfg.layer == "weighted" else 0, cfg.head)
    if cfg.normalization == "global":
        policy.standardize(data.X, data.train_all)
    gens = [torch.Generator().manual_seed(s) for s in data.init_seeds]
    log = EpochLog(data.y, eval_sets(cfg, data), data.classes,
                   [{"fold": r["fold"], "seed": r["seed"]} for r in data.runs], labelled_prior(data, cfg),
                   1 if cfg.method == "reference" else cfg.eval_every, bar, keep_weights=cfg.save_model)
    ctx = Context(cfg, data, policy, None, log, gens,
                  [torch.Generator().manual_seed(s + VIEW_SEED_OFFSET) for s in data.init_seeds])
    ctx.opt = ctx.new_opt(policy)
    ctx.S = similarity(cfg, data.classes)
    final = fn(ctx)
    ctx.snapshot("final", final)
    seconds = time.perf_counter() - t0
    lw = final.layer_weights()
    layer_weights = {} if lw is None else {
        "layers": data.layer_ids,
        "runs": [{"fold": info["fold"], "seed": info["seed"], "weights": lw[r].tolist()}
                 for r, info in enumerate(data.runs)]}

    collapsed, onset = collapse_onset(log.collapse_flags, log.collapse_epochs)
    for r, info in enumerate(data.runs):
        if collapsed and collapsed[r]:
            warnings.warn(f"{cfg.method} {cfg.dataset} fold {info['fold']} seed {info['seed']}: predictions on the "
                          f"unlabelled pool collapsed from epoch {onset[r]} on (a class below a quarter of its "
                          "labelled share, or entropy below half the prior's); see curves.csv/curves.png")
    rows, confusions = [], {}
    for stage, snap in ctx.snapshots.items():
        stage_rows, confusions[stage] = _stage_rows(ctx, stage, snap, seconds)
        rows += stage_rows
    for r, (pred, fit) in enumerate(ctx.logreg):
        s_ = scores(data.y[data.test[r]].numpy(), pred, ctx.S)
        rows.append({**_row(cfg, "final", data.runs[r], s_, data, r, seconds), "method": "reference-logreg",
                     "select": "", "selected_epoch": -1, "val_macro_f1": float("nan"),
                     **{f"last_{k}": v for k, v in s_.items()}, "oracle_macro_f1": s_["macro_f1"],
                     "oracle_epoch": -1, "collapsed": False, "collapse_epoch": -1, **fit, "under_trained": False})
    import pandas as pd

    predictions = pd.concat([stage_predictions(ctx, stage, snap) for stage, snap in ctx.snapshots.items()],
                            ignore_index=True)
    return Result(cfg, rows, log.rows, confusions, data.classes, data.provenance, seconds, t_load,
                  dict(log.eval_seconds), layer_weights, predictions, _reported_model(ctx, final),
                  [{"fold": r["fold"], "seed": r["seed"]} for r in data.runs])


def _reported_model(ctx: Context, final: StackedMLP) -> StackedMLP:
    """The model the 'final' rows report: ``final``, or with --select val (and --save-model, which keeps them)
    its weights at each run's best-validation epoch."""
    sel = ctx.log.selected.get(ctx.snapshots["final"].log_stage)
    if not ctx.cfg.selects_val or sel is None or sel.weights is None:
        return final
    model = final.frozen_copy()
    model.load_state_dict(sel.weights)
    return model


def stage_predictions(ctx: Context, stage: str, snap: Snapshot):
    """predictions.csv rows of one reported stage: per run (fold, seed) and test utterance, its key, true and
    predicted class names and the class probabilities p_<class> of the model the stage's rows report (the
    best-validation epoch's with --select val). Keys come from the row index modulo the entry's size, so they
    stay aligned under --normalize speaker (one copy of the rows per fold)."""
    import pandas as pd

    cfg, data = ctx.cfg, ctx.data
    sel = ctx.log.selected.get(snap.log_stage)
    pred, prob = (sel.test_pred, sel.test_prob) if cfg.selects_val and sel is not None else (snap.test_pred,
                                                                                           snap.test_prob)
    names, keys = np.asarray(data.classes), np.asarray(data.keys)
    frames = []
    for r, info in enumerate(data.runs):
        rows = np.asarray(data.test[r])
        n = len(rows)
        frames.append(pd.DataFrame({
            "stage": stage, "fold": info["fold"], "seed": info["seed"], "key": keys[rows % len(keys)],
            "true": names[data.y[rows].numpy()], "pred": names[pred[r, :n].numpy()],
            **{f"p_{c}": prob[r, :n, i].numpy() for i, c in enumerate(data.classes)}}))
    return pd.concat(frames, ignore_index=True)


def _stage_rows(ctx: Context, stage: str, snap: Snapshot, seconds: float) -> tuple[list[dict], np.ndarray]:
    """Result rows of one reported stage (last and validation-selected numbers, oracle, health) and the summed
    confusion matrix of what the rows report."""
    cfg, data, log = ctx.cfg, ctx.data, ctx.log
    sel, oracle = log.selected.get(snap.log_stage), log.oracle.get(snap.log_stage)
    epochs = [e for e in log.collapse_epochs if e <= snap.epoch]
    col, onset = collapse_onset(log.collapse_flags[:len(epochs)], epochs)
    losses = log.losses.get("supervised", [])
    rows, cm = [], np.zeros((len(data.classes),) * 2, dtype=np.int64)
    hacking = snap.split_pred and ctx.teacher is not None
    if hacking:
        t_pred = predictions(ctx.teacher, data, teacher=True)
        y_split = {s: [data.y[torch.as_tensor(p)].numpy() for p in rows_] for s, rows_ in
                   (("test", data.test), ("val", data.val))}
    for r, info in enumerate(data.runs):
        n = len(data.test[r])
        yt = data.y[data.test[r]].numpy()
        last = scores(yt, snap.test_pred[r, :n].numpy(), ctx.S)
        use_sel = cfg.selects_val and sel is not None
        pred = (sel.test_pred if use_sel else snap.test_pred)[r, :n].numpy()
        cm += confusion(yt, pred, len(data.classes))
        rows.append({
            **_row(cfg, stage, info, scores(yt, pred, ctx.S) if use_sel else last, data, r, seconds),
            "select": "val" if cfg.selects_val else "last",
            "selected_epoch": int(sel.epoch[r]) if use_sel else snap.epoch,
            "val_macro_f1": float(sel.score[r]) if use_sel else float("nan"),
            **{f"last_{k}": v for k, v in last.items()},
            "oracle_macro_f1": float(oracle.score[r]) if oracle is not None else float("nan"),
            "oracle_epoch": int(oracle.epoch[r]) if oracle is not None else -1,
            "collapsed": bool(col[r]) if col else False, "collapse_epoch": onset[r] if col else -1,
            "train_loss": log.losses[snap.log_stage][-1][r],
            "train_macro_f1": float(snap.train_f1[r]),
            "under_trained": cfg.method != "reference" and under_trained([e[r] for e in losses]),
            **(hacking_columns({s: v[r] for s, v in y_split.items() if s in t_pred},
                               {s: v[r] for s, v in t_pred.items()},
                               {s: v[r] for s, v in snap.split_pred.items()}) if hacking else {}),
        })
    return rows, cm


def _row(cfg: TrainConfig, stage: str, info: dict, s: dict, data: Prepared, r: int, seconds: float) -> dict:
    """One result row: the run's identity, scores and counts, then every hashed setting (TrainConfig.settings, so
    fields added later are carried too) not already a column (seeds joined by commas), and config_hash."""
    uses_teacher, grpo = cfg.uses_teacher, cfg.is_grpo
    row = {
        "experiment": cfg.experiment, "method": cfg.method, "stage": stage, "model": cfg.model,
        "dataset": cfg.dataset, "fold": info["fold"], "seed": info["seed"],
        "reward": cfg.reward if grpo else "",
        "teacher": cfg.teacher if uses_teacher else "",
        "advantage": cfg.advantage if grpo else "",
        "balance": cfg.balance if grpo else "",
        "sup_weight": cfg.sup_weight if grpo else 0.0,
        "penalty_value": cfg.penalty_value if grpo else 0.0,
        "layer": cfg.layer, "normalize": cfg.normalization, "head": cfg.head,
        "labels": cfg.labels, "unlabeled_from": cfg.unlabeled_from if cfg.uses_unlabeled else "",
        "labeled_fraction": 1.0 if cfg.method == "full-labeled" else cfg.labeled_fraction,
        "macro_f1": s["macro_f1"], "ua": s["ua"], "wa": s["wa"], "wheel": s["wheel"],
        "n_train_labeled": len(data.train_all[r] if cfg.method == "full-labeled" else data.labeled[r]),
        "n_val": len(data.val[r]) if data.val else 0,
        "n_unlabeled": len(data.unlabeled[r]) if cfg.uses_unlabeled else 0,
        "n_test": len(data.test[r]), "n_dropped": info["n_dropped"], "n_missing": info["n_missing"],
        "missing_train_classes": info["missing_train_classes"],
        "missing_test_classes": info["missing_test_classes"], "views": info["views"],
        "epochs": cfg.epochs_baseline if stage == "stage1" or cfg.method in ("baseline", "teacher")
        else cfg.epochs_total,
        "seconds": seconds,
    }
    settings = {k: ",".join(map(str, v)) if isinstance(v, list) else v for k, v in cfg.settings().items()}
    return {**row, **{k: v for k, v in settings.items() if k not in row}, "config_hash": cfg.config_hash}


def write(result: Result, out: str | Path | None = None) -> Path:
    """results.csv (tidy rows), results.json (full config, environment, provenance, rows), curves.csv,
    predictions.csv, figures (PNG + PDF), and with --save-model the policy weights under model/."""
    import pandas as pd

    cfg = result.cfg
    d = Path(out) / cfg.run_name if out else check_out(cfg)
    d.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(result.rows).to_csv(d / "results.csv", index=False)
    curves = [{"method": cfg.method, "model": cfg.model, **c} for c in result.curves]
    pd.DataFrame(curves).to_csv(d / "curves.csv", index=False)
    meta = {
        "config": cfg.to_dict(), "classes": list(result.classes), "rows": result.rows,
        "confusion": {k: v.tolist() for k, v in result.confusions.items()},
        "seconds": result.seconds, "seconds_load": result.seconds_load, "eval_seconds": result.eval_seconds,
        "provenance": result.provenance,
        **({"layer_weights": result.layer_weights} if result.layer_weights else {}),
        "environment": {"trainer": __version__, "torch": torch.__version__, "python": platform.python_version(),
                        "threads": torch.get_num_threads(), "machine": platform.machine()},
    }
    (d / "results.json").write_text(json.dumps(meta, indent=2, default=str))
    if result.predictions is not None:
        result.predictions.to_csv(d / "predictions.csv", index=False)
    if cfg.save_model and result.policy is not None:
        from trainer.models import save_members

        save_members(result.policy, result.members, d / "model", {
            "config": cfg.to_dict(), "classes": list(result.classes), "layers": result.layer_weights.get("layers", []),
            "weights_of": "the model the final rows of results.csv and predictions.csv report (with --select val "
                          "each run's best-validation epoch)"})
    if cfg.plots:
        from trainer.plots import plot_confusion, plot_curves

        plot_curves(curves, d / "curves.png", title=cfg.run_name)
        plot_confusion(result.confusions["final"], result.classes, d / "confusion.png", title=cfg.run_name,
                       n_runs=sum(r["stage"] == "final" and r["method"] == cfg.method for r in result.rows))
        if result.layer_weights:
            from trainer.plots import plot_layer_weights

            plot_layer_weights(result.layer_weights, d / "layer_weights.png", title=cfg.run_name)
    return d
