"""Preparing a run's data once: features from the store, labels, EmoBox folds, each (fold, seed) run's labelled,
unlabelled, validation and test rows, the teacher's features, frame-crop views and speaker normalisation."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from emocache import Store
from trainer.config import TrainConfig
from trainer.data import (DataError, Features, FoldRows, Labels, crop_views, fold_rows, join_by_key, load_features,
                          map_labels, missing_keys_error, open_store, read_label_map, row_speakers, speaker_normalize,
                          split_labeled)
from trainer.devices import place
from trainer.frames import FRAME_PAD, use_frames
from trainer.robust import REGULARIZERS, FrameBank, frame_bank
from trainer.seeds import CROP_SEED_OFFSET, DIAG_SEED_OFFSET, VAL_SEED_OFFSET, run_seed


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

    DEVICE_TENSORS = ("X", "y", "Xu", "Xt", "Xtu", "crops", "crop_sets")
    """What a run computes with, sent to its device by :meth:`to`; the row lists stay on the host (the batch
    permutations are drawn there), and so does the EAM frame bank (Algorithm 1 mixes on the host)."""

    def to(self, device: torch.device) -> Prepared:
        """A copy whose DEVICE_TENSORS are on ``device`` (this object itself when they are all there already); a
        tensor that several fields share (Xu is X without --unlabeled-from) is sent once."""
        if all(getattr(self, k) is None or getattr(self, k).device == device for k in self.DEVICE_TENSORS):
            return self
        sent: dict[int, torch.Tensor] = {}
        moved = {}
        for k in self.DEVICE_TENSORS:
            t = getattr(self, k)
            if t is not None:
                moved[k] = sent.setdefault(id(t), place(t, device))
        return dataclasses.replace(self, **moved)


@dataclass
class Loaded:
    """The entries a run reads: the trained dataset's features, the unlabelled source's (the same object without
    --unlabeled-from), their labels and folds."""

    store: Store
    feats: Features
    ufeats: Features
    labels: Labels
    folds: list[FoldRows]


def prepare(cfg: TrainConfig) -> Prepared:
    """Load features, labels, folds, splits, the unlabelled source and the teacher's features."""
    src = load_entries(cfg)
    feats, ufeats, y = src.feats, src.ufeats, src.labels.y
    prov = {f"{cfg.model}/{cfg.dataset}": src.store.provenance(cfg.model, cfg.dataset)}
    if ufeats is not feats:
        prov[f"{cfg.model}/{cfg.unlabeled_from}"] = src.store.provenance(cfg.model, cfg.unlabeled_from)
    data = Prepared(feats.X, torch.as_tensor(np.maximum(y, 0)), src.labels.classes, ufeats.X, [], [], [], [], [],
                    [], provenance=prov, keys=list(feats.keys))
    split_runs(cfg, src, data)
    if cfg.uses_teacher:
        attach_teacher(cfg, src, data)
    if cfg.layer == "weighted":
        data.layer_ids = list(src.store.provenance(cfg.model, cfg.dataset).get("layers") or range(feats.X.shape[1]))
    attach_crops(cfg, src, data)
    for r in data.runs:
        r["views"] = "" if not cfg.views else ("frames" if data.crops is not None else "noise")
    if cfg.normalize == "speaker":
        normalize_speakers(cfg, feats, src.folds, data)
    cfg.algorithm.prepared(cfg, data)
    return data


def load_entries(cfg: TrainConfig) -> Loaded:
    """The store, the trained entry (frames for a frame --head), its labels and folds, and the unlabelled source."""
    store = open_store(cfg.store)
    feats = load_features(store, cfg.model, cfg.dataset, cfg.nonfinite, cfg.layer)
    if cfg.head != "pooled":
        use_frames(store, feats, cfg.frames_memory_gb)  # X (N, T, D) padded frames
    labels = map_labels(feats.raw_labels, read_label_map(cfg.manifests, cfg.dataset), cfg.labels)
    if labels.dropped:
        warnings.warn(labels.drop_message(cfg.dataset))
    folds = fold_rows(feats.keys, labels.y, cfg.manifests, cfg.dataset, cfg.fold, set(feats.dropped_keys))
    ufeats = feats
    if cfg.unlabeled_from:
        ufeats = load_features(store, cfg.model, cfg.unlabeled_from, cfg.nonfinite, cfg.layer)
        if cfg.head != "pooled":
            use_frames(store, ufeats, cfg.frames_memory_gb)
        dims = (ufeats.X.shape[1:], feats.X.shape[1:]) if cfg.head == "pooled" else \
            (ufeats.X.shape[-1:], feats.X.shape[-1:])  # frames: T_max may differ
        if dims[0] != dims[1]:
            raise DataError(f"--unlabeled-from {cfg.unlabeled_from}: dim {ufeats.X.shape[1]} != "
                            f"{feats.X.shape[1]} of {cfg.dataset}")
    if cfg.val == "emobox":
        lacking = [f.k for f in folds if f.valid is None]
        if lacking:
            raise DataError(f"--val emobox: {cfg.manifests}/{cfg.dataset} fold(s) {lacking} have no EmoBox "
                            "*_valid_fold_<k>.jsonl; use --val-fraction F instead")
    return Loaded(store, feats, ufeats, labels, folds)


def split_runs(cfg: TrainConfig, src: Loaded, data: Prepared) -> None:
    """Each (fold, seed) run's labelled / unlabelled / validation / test rows, the diagnostics' pool subsample and
    its counts, appended to ``data``; a class missing from a run's training or test rows is one warning."""
    y, classes, method = src.labels.y, src.labels.classes, cfg.algorithm
    for f in src.folds:
        for seed in cfg.seeds:
            rs = run_seed(seed, f.k)
            lab, unl = split_labeled(f.train, y, cfg.labeled_fraction, rs)
            if cfg.val == "emobox":
                v = f.valid
            elif cfg.val_rows_fraction > 0:
                lab, v = split_labeled(lab, y, 1 - cfg.val_rows_fraction, rs + VAL_SEED_OFFSET)
            else:
                v = np.zeros(0, dtype=np.int64)
            if src.ufeats is not src.feats:
                unl = np.arange(len(src.ufeats.keys))
            pool = unl if len(unl) else lab
            if 0 < cfg.diag_pool_rows < len(pool):
                pool = np.sort(np.random.default_rng(rs + DIAG_SEED_OFFSET).choice(pool, cfg.diag_pool_rows,
                                                                                    replace=False))
            present = set(np.unique(y[f.train if method.all_labels else lab]).tolist())
            miss_train = [c for i, c in enumerate(classes) if i not in present]
            miss_test = [c for i, c in enumerate(classes) if i not in set(np.unique(y[f.test]).tolist())]
            if miss_train or miss_test:
                warnings.warn(f"{cfg.dataset} fold {f.k} seed {seed}: classes missing from training "
                              f"{miss_train or '-'}, from test {miss_test or '-'}; macro-F1 is over the classes "
                              "present in test labels or predictions, UA over those in test labels (recorded in the "
                              "results)")
            data.runs.append({"fold": f.k, "seed": seed, "n_missing": f.n_missing, "n_dropped": f.n_dropped,
                              "missing_train_classes": "|".join(miss_train),
                              "missing_test_classes": "|".join(miss_test)})
            data.labeled.append(torch.as_tensor(lab))
            data.train_all.append(torch.as_tensor(f.train))
            data.unlabeled.append(torch.as_tensor(unl))
            data.test.append(f.test)
            data.init_seeds.append(rs)
            data.val.append(v)
            data.diag_pool.append(pool)


def attach_crops(cfg: TrainConfig, src: Loaded, data: Prepared) -> None:
    """Frame-crop views of the unlabelled rows for a method whose views can be frames (``cfg.views``), where the
    entry's frames and pooled vectors share a space; an error where frames are asked for and cannot be had."""
    views, opt = cfg.views, f"--{cfg.method}-views"
    if views == "frames" and cfg.head != "pooled":
        raise DataError(f"{opt} frames: frame-crop views are pooled crop means, inputs of --head pooled; --head "
                        f"{cfg.head} reads the frames themselves, so use {opt} noise or auto (noise and feature "
                        "dropout on every frame)")
    plain = cfg.layer == "last" and cfg.normalize != "speaker" and cfg.head == "pooled"
    if views == "frames" and not plain:
        raise DataError(f"{opt} frames: frame crops are last-layer, unnormalised frames, not the --layer {cfg.layer} "
                        f"/ --normalize {cfg.normalize} inputs; use {opt} noise")
    if views not in ("auto", "frames") or not plain:
        return
    ufeats = src.ufeats
    frame_dim = src.store.frames(cfg.model, cfg.unlabeled_dataset, ufeats.keys[0]).shape[-1] \
        if ufeats.frames_available else None
    if frame_dim == ufeats.X.shape[1]:
        data.crops = crop_views(src.store, cfg.model, cfg.unlabeled_dataset, ufeats.keys, cfg.dino_crops,
                                [s + CROP_SEED_OFFSET for s in cfg.seeds])
        data.crop_sets = torch.as_tensor([cfg.seeds.index(r["seed"]) for r in data.runs])
    elif views == "frames":
        why = ("was extracted without frames" if frame_dim is None else
               f"has {frame_dim}-dim frames but {ufeats.X.shape[1]}-dim pooled features (e.g. egemaps: frame "
               "descriptors vs functionals), so frame crops are not inputs the policy reads")
        raise DataError(f"{opt} frames: {cfg.model}/{cfg.unlabeled_dataset} {why}; use {opt} noise (or auto)")


def normalize_speakers(cfg: TrainConfig, feats: Features, folds: list[FoldRows], data: Prepared) -> None:
    """--normalize speaker: one copy of X per fold, each row z-scored with its speaker's statistics in that fold
    (data.speaker_normalize; test speakers from their own test rows: transductive, features only). Run r's row
    indices move to its fold's copy (offset fold position * N); y and the teacher features are stacked alike."""
    spk = row_speakers(cfg.manifests, cfg.dataset, feats.keys, cfg.speaker_pattern)
    n = len(feats.keys)
    pos = {f.k: i for i, f in enumerate(folds)}
    other = [np.concatenate([f.test] + ([f.valid] if f.valid is not None else [])) for f in folds]
    copies = [speaker_normalize(data.X, spk, f.train, o) for f, o in zip(folds, other)]
    if data.Xt is not None:
        data.Xt = torch.cat([speaker_normalize(data.Xt, spk, f.train, o) for f, o in zip(folds, other)])
        data.Xtu = data.Xt
    data.X = data.Xu = torch.cat(copies)  # (F * N, [L,] D)
    data.y = data.y.repeat(len(folds))
    for r, info in enumerate(data.runs):
        off = pos[info["fold"]] * n
        for name in ("labeled", "train_all", "unlabeled", "test", "val", "diag_pool"):
            getattr(data, name)[r] = getattr(data, name)[r] + off
    data.provenance["speakers"] = {"n": int(len(np.unique(spk))), "source": "emocache.speakers"}


def attach_teacher(cfg: TrainConfig, src: Loaded, data: Prepared) -> None:
    """Teacher features joined by key to the policy rows (labelled) and the unlabelled rows; utterances the
    teacher entry lacks are an error, or with --missing-teacher drop are dropped from every run and counted."""
    store, feats, ufeats = src.store, src.feats, src.ufeats
    tf = load_features(store, cfg.teacher, cfg.dataset, cfg.nonfinite)
    if cfg.head != "pooled":
        use_frames(store, tf, cfg.frames_memory_gb)  # the teacher reads its frames through the same head
    rows = join_by_key(feats.keys, tf.keys)
    tfu, rows_u = tf, rows
    if cfg.unlabeled_from:
        tfu = load_features(store, cfg.teacher, cfg.unlabeled_from, cfg.nonfinite)
        if cfg.head != "pooled":
            use_frames(store, tfu, cfg.frames_memory_gb)
        rows_u = join_by_key(ufeats.keys, tfu.keys)
        data.provenance[f"{cfg.teacher}/{cfg.unlabeled_from}"] = store.provenance(cfg.teacher, cfg.unlabeled_from)
    drop_missing_teacher(cfg, src, data, rows, rows_u)
    fill = FRAME_PAD if cfg.head != "pooled" else 0.0  # absent rows: no valid frame / zero vector
    data.Xt = torch.full((len(feats.keys), *tf.X.shape[1:]), fill, dtype=tf.X.dtype)
    data.Xt[torch.as_tensor(np.flatnonzero(rows >= 0))] = tf.X[torch.as_tensor(rows[rows >= 0])]
    data.Xtu = torch.full((len(ufeats.keys), *tfu.X.shape[1:]), fill, dtype=tfu.X.dtype)
    data.Xtu[torch.as_tensor(np.flatnonzero(rows_u >= 0))] = tfu.X[torch.as_tensor(rows_u[rows_u >= 0])]
    data.provenance[f"{cfg.teacher}/{cfg.dataset}"] = store.provenance(cfg.teacher, cfg.dataset)
    if any(REGULARIZERS[n].frames for n in cfg.regularizers):
        data.teacher_frames = frame_bank(store, cfg.teacher, cfg.dataset, feats.keys,
                                         np.unique(np.concatenate([p.numpy() for p in data.labeled])), data.Xt,
                                         data.provenance[f"{cfg.teacher}/{cfg.dataset}"])


def drop_missing_teacher(cfg: TrainConfig, src: Loaded, data: Prepared, rows: np.ndarray,
                         rows_u: np.ndarray) -> None:
    """Rows whose utterance the teacher entry lacks (``rows`` / ``rows_u`` < 0): an error naming them, or with
    --missing-teacher drop, left out of each run's labelled and unlabelled rows and counted in n_dropped."""
    feats, ufeats = src.feats, src.ufeats
    need = np.unique(np.concatenate([p.numpy() for p in data.labeled]))
    need_u = np.unique(np.concatenate([p.numpy() for p in data.unlabeled]))
    lack, lack_u = need[rows[need] < 0], need_u[rows_u[need_u] < 0]
    # without --unlabeled-from both pools are rows of one entry (a row may be labelled in one run and
    # unlabelled in another): count each utterance once
    miss = list(dict.fromkeys([feats.keys[i] for i in lack] + [ufeats.keys[i] for i in lack_u]))
    if not miss:
        return
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
