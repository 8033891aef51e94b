"""Synthetic EmoBox-format datasets (class-dependent Gaussian features) for tests and `trainer bench`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from emocache.store import write_arrays

IEMOCAP_LABELS = {"neu": "Neutral", "hap": "Happy", "ang": "Angry", "sad": "Sad", "exc": "Happy"}


def make_dataset(store: str | Path, manifests: str | Path, model: str, dataset: str, n: int = 300,
                 dim: int = 32, n_folds: int = 2, seed: int = 0, label_map: dict[str, str] | None = None,
                 separation: float = 1.0, frames: bool = False, keys: list[str] | None = None,
                 write_manifests: bool = True, feature_seed: int | None = None) -> dict:
    """Write ``n`` utterances of ``dataset`` to ``store`` (entry model/dataset) and EmoBox fold manifests.

    Features: class mean (seeded by ``seed``, scaled by ``separation``) + N(0, 1) noise, float32; folds
    are contiguous speaker-like blocks. With ``frames`` each utterance also gets 3-8 frames around its
    vector. Another model on the same utterances: same ``keys`` and ``seed``, other ``feature_seed``.
    Returns keys, raw labels and features.
    """
    label_map = label_map or IEMOCAP_LABELS
    raw_names = list(label_map)
    rng = np.random.default_rng(seed)
    raw = [raw_names[i] for i in rng.integers(0, len(raw_names), n)]
    keys = keys or [f"{dataset}-utt{i:05d}" for i in range(n)]
    classes = sorted(set(label_map.values()))
    frng = np.random.default_rng(seed if feature_seed is None else feature_seed)
    means = frng.normal(0, separation, (len(classes), dim)).astype(np.float32)
    y = np.array([classes.index(label_map[r]) for r in raw])
    X = (means[y] + frng.normal(0, 1, (n, dim))).astype(np.float32)
    F = None
    if frames:
        F = [(X[i] + frng.normal(0, 0.5, (int(frng.integers(3, 9)), dim))).astype(np.float32) for i in range(n)]
    write_arrays(str(store), model, dataset, keys, raw, X, frames=F)
    if write_manifests:
        write_folds(manifests, dataset, keys, raw, n_folds, label_map)
    return {"keys": keys, "labels": raw, "X": X}


def write_folds(manifests: str | Path, dataset: str, keys: list[str], raw: list[str], n_folds: int,
                label_map: dict[str, str]):
    """EmoBox layout: <manifests>/<dataset>/fold_<k>/<dataset>_{train,test}_fold_<k>.jsonl + label_map.json."""
    root = Path(manifests) / dataset
    root.mkdir(parents=True, exist_ok=True)
    (root / "label_map.json").write_text(json.dumps(label_map))
    part = np.arange(len(keys)) * n_folds // len(keys)
    for k in range(1, n_folds + 1):
        d = root / f"fold_{k}"
        d.mkdir(exist_ok=True)
        for split, sel in (("train", part != k - 1), ("test", part == k - 1)):
            with open(d / f"{dataset}_{split}_fold_{k}.jsonl", "w") as f:
                for key, emo, s in zip(keys, raw, sel):
                    if s:
                        f.write(json.dumps({"key": key, "dataset": dataset, "wav": f"{key}.wav", "emo": emo,
                                            "channel": 1}) + "\n")
