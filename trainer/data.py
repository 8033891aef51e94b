"""Store -> tensors, EmoBox folds, label mapping, joins by key, and the per-epoch batch indices.

Everything a run needs is loaded once as whole-dataset tensors; training only ever indexes them.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import emocache
from emocache.inputs import parse_json
from emocache.manifest import ManifestError, load_label_map, lookup_label, read_folds, read_manifest, six_class_map
from emocache.speakers import SpeakerError, speaker_ids
from trainer.devices import place

SIX_CLASSES = ("Neutral", "Angry", "Surprise", "Sad", "Happy", "Fear")
"""The B-GRPO paper's six classes, in its order (--labels six)."""


class DataError(ValueError):
    """Input that cannot give a correct number; the message says what is wrong and what to do."""


@dataclass
class Features:
    """Pooled features of one store entry."""

    model: str
    dataset: str
    keys: list[str]
    X: torch.Tensor  # (N, D) float32, or (N, L, D) with layer='weighted'
    raw_labels: list[str]
    dropped_keys: tuple[str, ...] = ()
    """Keys dropped for NaN/inf values (only with nonfinite='drop')."""
    frames_available: bool = False


def open_store(url: str):
    """emocache.open_store with an error that names --store."""
    if not url:
        raise DataError("--store is required: the feature store written by `emocache extract`")
    try:
        return emocache.open_store(url)
    except (emocache.StoreError, FileNotFoundError, OSError) as e:
        raise DataError(f"--store {url}: cannot open it as an emocache store ({e})") from None


def load_features(store, model: str, dataset: str, nonfinite: str = "error", layer: str = "last") -> Features:
    """Pooled vectors and raw labels of (model, dataset); NaN/inf rows raise or are dropped and counted.

    ``layer``: 'last' (the pooled vectors), K (hidden_states layer K, ``store.pooled(layer=K)``) or 'weighted'
    (every stored layer, X (N, L, D)); the last two need an entry extracted with ``emocache extract --layers``.
    """
    try:
        if layer == "last":
            keys, X = store.pooled(model, dataset)
        else:
            try:
                keys, X = store.layers(model, dataset) if layer == "weighted" else \
                    store.pooled(model, dataset, layer=int(layer))
            except (emocache.StoreError, ValueError, IndexError) as e:
                raise DataError(f"--layer {layer}: {model}/{dataset} has no such stored layer ({e}); re-extract "
                                f"it with `emocache extract --model {model} --layers all` or use --layer last") from None
        raw = store.labels(model, dataset)
        has_frames = store.has_frames(model, dataset)
    except KeyError as e:
        raise DataError(f"--store {store.url}: no features for --model {model} --dataset {dataset}. "
                        f"{str(e).strip(chr(39))}. Run `emocache extract --model {model}` on that dataset "
                        "or pick an existing entry") from None
    if len(keys) == 0:
        raise DataError(f"--store {store.url}: entry {model}/{dataset} holds no extracted utterances yet")
    X = np.asarray(X, dtype=np.float32)
    bad = ~np.isfinite(X.reshape(len(X), -1)).all(1)
    n_bad = int(bad.sum())
    dropped: tuple[str, ...] = ()
    if n_bad:
        examples = [k for k, b in zip(keys, bad) if b][:3]
        if nonfinite != "drop":
            raise DataError(f"{model}/{dataset}: {n_bad} of {len(keys)} utterances have NaN/inf features "
                            f"(e.g. {', '.join(examples)}); re-extract them (e.g. in fp32) or pass "
                            "--nonfinite drop to leave them out (they are counted in n_dropped)")
        warnings.warn(f"{model}/{dataset}: dropping {n_bad} utterances with NaN/inf features")
        keep = ~bad
        dropped = tuple(k for k, b in zip(keys, bad) if b)
        keys = [k for k, m in zip(keys, keep) if m]
        raw = [r for r, m in zip(raw, keep) if m]
        X = X[keep]
    return Features(model, dataset, list(keys), torch.from_numpy(np.ascontiguousarray(X)), list(raw),
                    dropped, bool(has_frames))


@dataclass
class Labels:
    """Class indices per row (-1 = dropped) and the class names."""

    y: np.ndarray  # (N,) int64
    classes: tuple[str, ...]
    dropped: dict[str, int] = field(default_factory=dict)
    """Raw label -> rows dropped because the label has no class (labels='six')."""
    dropped_as: dict[str, str] = field(default_factory=dict)
    """Raw label -> the label-map class it was mapped to before being dropped."""

    def drop_message(self, dataset: str) -> str:
        """The one console line naming every dropped label and its count ('' when none was dropped)."""
        if not self.dropped:
            return ""
        n, total = sum(self.dropped.values()), len(self.y)
        named = ", ".join(f"{raw!r}" + (f" (-> {self.dropped_as[raw]})" if self.dropped_as.get(raw, raw) != raw
                                         else "") + f": {k}" for raw, k in sorted(self.dropped.items()))
        return (f"{dataset}: --labels six drops {n} of {total} utterances whose label maps to none of the classes "
                f"{', '.join(SIX_CLASSES)}: {named}; they are counted in n_dropped (use --labels emobox to keep "
                "every class, or fix label_map.json if a label was mapped to the wrong class)")


def map_labels(raw: list[str], label_map: dict[str, str] | None, mode: str) -> Labels:
    """Raw `emo` values -> class indices.

    ``emobox``: through the dataset's label_map.json (case-insensitive); an unknown label is an error.
    ``six``: then through the paper's six-class map; labels outside the six classes are dropped and counted.
    Classes are those present in the data (six: in the paper's order; emobox: sorted).
    """
    canon = []
    unknown: dict[str, int] = {}
    for r in raw:
        c = lookup_label(r, label_map) if label_map is not None else r
        if c is None:
            unknown[r] = unknown.get(r, 0) + 1
        canon.append(c)
    if unknown:
        raise DataError(f"labels {sorted(unknown)} are not in label_map.json "
                        f"(known: {', '.join(sorted(label_map or {}))}); fix the map or the manifest")
    dropped: dict[str, int] = {}
    dropped_as: dict[str, str] = {}
    if mode == "six":
        six = six_class_map()
        mapped = []
        for r, c in zip(raw, canon):
            s = lookup_label(c, six)
            if s is None:
                dropped[r] = dropped.get(r, 0) + 1
                dropped_as[r] = c
            mapped.append(s)
        classes = tuple(c for c in SIX_CLASSES if c in set(mapped))
    else:
        mapped = canon
        classes = tuple(sorted(set(mapped)))
    if len(classes) < 2:
        raise DataError(f"only {len(classes)} class(es) left after --labels {mode} mapping "
                        f"(dropped: {dropped}); a classifier needs at least two")
    pos = {c: i for i, c in enumerate(classes)}
    y = np.array([pos.get(m, -1) if m is not None else -1 for m in mapped], dtype=np.int64)
    return Labels(y, classes, dropped, dropped_as)


def dataset_folder(manifests: str, dataset: str) -> Path:
    """<manifests>/<dataset>, or an error that says what is wrong (and hints at the parent when one level deep)."""
    if not manifests:
        raise DataError("--manifests is required: the EmoBox data folder with <dataset>/fold_<k>/ manifests")
    folder = Path(manifests) / dataset
    if not folder.is_dir():
        here = Path(manifests)
        hint = " (did you mean the parent?)" if here.name == dataset or any(here.glob("fold_*")) else ""
        raise DataError(f"--manifests {manifests}: no folder {dataset}/ here{hint}; EmoBox layout "
                        f"<manifests>/<dataset>/fold_<k>/<dataset>_train_fold_<k>.jsonl")
    return folder


def read_label_map(manifests: str, dataset: str) -> dict[str, str]:
    """<manifests>/<dataset>/label_map.json (raw label -> EmoBox class); missing or not a JSON object is an error."""
    p = dataset_folder(manifests, dataset) / "label_map.json"
    if not p.exists():
        raise DataError(f"{p}: no label map; EmoBox ships <dataset>/label_map.json beside the fold folders "
                        "(copy it there, or write {\"raw label\": \"Class\", ...})")
    try:
        m = load_label_map(p)
    except ValueError as e:  # the message names the file
        raise DataError(str(e)) from None
    if not isinstance(m, dict) or not all(isinstance(v, str) for v in m.values()):
        raise DataError(f"{p}: a label map is a JSON object {{\"raw label\": \"Class\", ...}}, "
                        f"not a {type(m).__name__}; fix the file")
    return m


@dataclass(frozen=True)
class FoldRows:
    """One EmoBox fold as row indices into the entry."""

    k: int
    train: np.ndarray  # (n_train,) int64
    test: np.ndarray  # (n_test,) int64
    n_missing: int
    """Manifest keys of this fold with no features in the store (failed or not extracted)."""
    n_dropped: int
    """Rows of this fold whose label was dropped (labels='six') or whose features were dropped."""
    valid: np.ndarray | None = None  # (n_valid,) int64, the fold's EmoBox valid manifest (None: it has none)


def fold_rows(keys: list[str], y: np.ndarray, manifests: str, dataset: str, fold: str = "all",
              dropped_keys: set[str] | None = None) -> list[FoldRows]:
    """EmoBox folds of <manifests>/<dataset> mapped to rows of ``keys``; rows with y == -1 are left out.

    Manifest keys in ``dropped_keys`` (features dropped at load) count as dropped, other absent keys as missing.
    """
    folder = dataset_folder(manifests, dataset)
    try:
        folds = read_folds(folder)
    except ManifestError as e:
        raise DataError(str(e)) from None
    if fold != "all":
        folds = [f for f in folds if f.k == int(fold)]
        if not folds:
            raise DataError(f"--fold {fold}: {folder} has folds {[f.k for f in read_folds(folder)]}")
    row = {k: i for i, k in enumerate(keys)}
    gone = dropped_keys or set()
    out = []
    for f in folds:
        parts, missing, dropped = {}, 0, 0
        for split in ("train", "test") + (("valid",) if f.valid else ()):
            rows = []
            for k in getattr(f, split):
                i = row.get(k)
                if i is None:
                    if k in gone:
                        dropped += 1
                    else:
                        missing += 1
                elif y[i] < 0:
                    dropped += 1
                else:
                    rows.append(i)
            parts[split] = np.asarray(rows, dtype=np.int64)
        if len(parts["train"]) == 0 or len(parts["test"]) == 0:
            raise DataError(f"{dataset} fold {f.k}: no usable {'train' if len(parts['train']) == 0 else 'test'} "
                            "utterances (none of its keys are in the store with a kept label)")
        if missing:
            warnings.warn(f"{dataset} fold {f.k}: {missing} manifest keys have no features in the store; "
                          "they are left out and counted in n_missing")
        out.append(FoldRows(f.k, parts["train"], parts["test"], missing, dropped, parts.get("valid")))
    return out


def split_labeled(train: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of the training rows into (labelled, unlabelled); ceil(fraction * n_c) per class."""
    if fraction >= 1:
        return np.sort(train), np.sort(train)
    rng = np.random.default_rng(seed)
    lab, unl = [], []
    for c in np.unique(y[train]):
        rows = rng.permutation(train[y[train] == c])
        n = math.ceil(fraction * len(rows))
        lab.append(rows[:n])
        unl.append(rows[n:])
    return np.sort(np.concatenate(lab)), np.sort(np.concatenate(unl))


def join_by_key(keys: list[str], other_keys: list[str]) -> np.ndarray:
    """Row of each key in ``other_keys`` (-1 where absent)."""
    pos = {k: i for i, k in enumerate(other_keys)}
    return np.array([pos.get(k, -1) for k in keys], dtype=np.int64)


def missing_keys_error(miss: list[str], n_needed: int, what: str) -> DataError:
    """The error for ``miss``, keys among ``n_needed`` that the teacher entry ``what`` lacks."""
    return DataError(f"{what} lacks {len(miss)} of {n_needed} utterances the run needs "
                     f"(e.g. {', '.join(miss[:3])}); extract them for the teacher too, or pass "
                     "--missing-teacher drop to leave them out (counted in n_dropped)")


def crop_views(store, model: str, dataset: str, keys: list[str], n_views: int, seeds: list[int]) -> torch.Tensor:
    """DINO views from frames: per seed and utterance, n_views means over random windows of 50-100 % of its frames.

    Computed once at load time; set s is drawn from ``seeds[s]`` alone. Returns (S, N, V, D) aligned with ``keys``.
    """
    rngs = [np.random.default_rng(s) for s in seeds]
    pos = {k: i for i, k in enumerate(keys)}
    out = None
    for key, F in store.iter_frames(model, dataset, keys):
        F = np.asarray(F, dtype=np.float32)  # (T, D)
        if out is None:
            out = np.zeros((len(seeds), len(keys), n_views, F.shape[1]), dtype=np.float32)
        t = len(F)
        csum = np.concatenate([np.zeros((1, F.shape[1]), np.float32), np.cumsum(F, 0)])  # (T+1, D)
        for s, rng in enumerate(rngs):
            ln = np.maximum(1, np.round(rng.uniform(0.5, 1.0, n_views) * t)).astype(int)
            st = rng.integers(0, t - ln + 1)
            out[s, pos[key]] = (csum[st + ln] - csum[st]) / ln[:, None]
    if out is None:
        raise DataError(f"{model}/{dataset}: no frames to crop")
    return torch.from_numpy(out)


def epoch_batches(pools: list[torch.Tensor], batch_size: int, gens: list[torch.Generator],
                  live: torch.Tensor | None = None, device: torch.device | None = None):
    """One epoch of shuffled batches for M runs at once.

    ``pools[r]`` are run r's rows; each run gets its own permutation (its own generator, so a run's batches
    do not depend on which other runs share the stack). Yields (idx (M, B) rows, valid (M, B), active (M,)):
    a run whose pool is exhausted is inactive for the remaining steps; its padded slots are invalid. ``live``
    (M,) bool: runs that train this epoch (None: all); another run draws nothing and is never active.

    The permutations are drawn on the host (CPU generators: the same rows on every device); with ``device`` the
    epoch's indices and mask are copied there once and idx / valid are slices of them, while ``active`` stays a
    host tensor (the optimiser reads it without waiting for the device).
    """
    m = len(pools)
    live = None if live is None else live.tolist()  # one read-back per epoch
    n = [len(p) if live is None or live[r] else 0 for r, p in enumerate(pools)]
    steps = max(math.ceil(k / batch_size) for k in n)
    idx = torch.zeros(m, steps * batch_size, dtype=torch.long)  # (M, S*B)
    valid = torch.zeros(m, steps * batch_size, dtype=torch.bool)
    for r, (p, g) in enumerate(zip(pools, gens)):
        if live is None or live[r]:
            idx[r, :n[r]] = p[torch.randperm(n[r], generator=g)]
            valid[r, :n[r]] = True
    idx_d, valid_d = (idx, valid) if device is None else (place(idx, device), place(valid, device))
    for s in range(steps):
        sl = slice(s * batch_size, (s + 1) * batch_size)
        yield idx_d[:, sl], valid_d[:, sl], valid[:, s * batch_size]


def run_rand(kind: str, shape: tuple[int, ...], gens: list[torch.Generator], high: int = 0) -> torch.Tensor:
    """Random draws of shape (M, *shape), run r's slice from its own generator ``gens[r]`` (so a run's draws do
    not depend on its stack neighbours); ``kind``: 'randn', 'rand' or 'randint' (in [0, high))."""
    if kind == "randint":
        return torch.stack([torch.randint(high, shape, generator=g) for g in gens])
    fn = {"randn": torch.randn, "rand": torch.rand}[kind]
    return torch.stack([fn(shape, generator=g) for g in gens])


def run_multinomial(p: torch.Tensor, gens: list[torch.Generator], n: int | None = None) -> torch.Tensor:
    """One class drawn per row of each run's probabilities, p (M, B, C) -> (M, B), run r from ``gens[r]``; with
    ``n``, n classes drawn per row with replacement -> (M, B, n).

    On the CPU this is ``torch.multinomial``; on another device the same draws are made there from numbers drawn
    on the host by the CPU generators (:func:`device_multinomial`), so no class is read back to the host."""
    if p.device.type != "cpu":
        return device_multinomial(p, gens, n)
    k = 1 if n is None else n
    out = torch.stack([torch.multinomial(p[r], k, replacement=n is not None, generator=g) for r, g in enumerate(gens)])
    return out.squeeze(-1) if n is None else out


def device_multinomial(p: torch.Tensor, gens: list[torch.Generator], n: int | None = None) -> torch.Tensor:
    """``run_multinomial``'s draws computed on p's device from host draws of the CPU generators, consuming each
    generator as ``torch.multinomial`` on the CPU does (tested equal to it on the CPU).

    One class per row (``n`` None): CPU ``torch.multinomial`` draws q ~ Exp(1) shaped like the run's (B, C)
    probabilities and takes argmax p / q (the Gumbel-max trick); here q is drawn alike on the host and sent.
    ``n`` classes with replacement: it draws one float64 u ~ U[0, 1) per (row, draw), row after row, and takes the
    first class whose normalised cumulative probability (a float32 running sum, divided by the total, the last
    set to 1) is >= u; here the u are drawn alike and the classes counted on the device. Equal rows give equal
    draws to the CPU's; float rounding of p on another device can move a draw across a class boundary."""
    m, b, c = p.shape
    device = p.device
    if n is None:
        q = torch.stack([torch.empty(b, c, dtype=p.dtype).exponential_(1, generator=g) for g in gens])  # (M, B, C)
        return (p / place(q, device)).argmax(-1)  # (M, B)
    u = torch.stack([torch.rand(b * n, dtype=torch.float64, generator=g) for g in gens]).view(m, b, n, 1)
    cum = torch.empty_like(p)  # (M, B, C) the CPU kernel's float32 running sum
    total = torch.zeros_like(p[..., 0])
    for j in range(c):
        total = total + p[..., j]
        cum[..., j] = total
    cum = cum / total.unsqueeze(-1)
    cum[..., -1] = 1.0
    below = cum.double().unsqueeze(2) < place(u, device)  # (M, B, n, C)
    return below.sum(-1)  # (M, B, n)


def pad_rows(pools: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged row lists -> (idx (M, T), valid (M, T)) padded with row 0 / False."""
    t = max(len(p) for p in pools)
    idx = torch.zeros(len(pools), t, dtype=torch.long)
    valid = torch.zeros(len(pools), t, dtype=torch.bool)
    for r, p in enumerate(pools):
        idx[r, :len(p)] = torch.as_tensor(p)
        valid[r, :len(p)] = True
    return idx, valid


def row_speakers(manifests: str, dataset: str, keys: list[str], pattern: str = "") -> np.ndarray:
    """Speaker id of each key (emocache.speakers: the manifests' 'speaker' field, else --speaker-pattern, else
    the dataset's key rule); (N,) str. Only keys and speaker fields are read, never labels."""
    field_of: dict[str, str] = {}
    for p in sorted(dataset_folder(manifests, dataset).glob("fold_*/*.jsonl")):
        try:
            read_manifest(p, links=False)  # the bounds and checks of every manifest read (regular file, sizes)
        except ManifestError as e:
            raise DataError(str(e)) from None
        for line in p.read_text().splitlines():
            if line.strip():
                d = parse_json(line, str(p))
                if "speaker" in d:
                    field_of[str(d["key"])] = d["speaker"]
    rows = [{"key": k, **({"speaker": field_of[k]} if k in field_of else {})} for k in keys]
    try:
        return np.asarray(speaker_ids(rows, dataset, pattern or None), dtype=object)
    except SpeakerError as e:
        raise DataError(f"--normalize speaker: {e}") from None


def speaker_stat_rows(speakers: np.ndarray, train: np.ndarray, other: np.ndarray) -> dict[str, np.ndarray]:
    """Rows whose features give each speaker's statistics in one fold (ours, transductive for test speakers).

    A speaker with rows in ``train`` (the fold's training split): those rows. A speaker without (a test speaker):
    its rows in ``other`` (the fold's test and validation rows; their features only, never labels).
    """
    out: dict[str, np.ndarray] = {}
    for s in np.unique(speakers[train]):
        out[s] = train[speakers[train] == s]
    for s in np.unique(speakers[other]):
        if s not in out:
            out[s] = other[speakers[other] == s]
    return out


def speaker_normalize(X: torch.Tensor, speakers: np.ndarray, train: np.ndarray, other: np.ndarray) -> torch.Tensor:
    """X (N, [L,] D) with each row of a speaker in :func:`speaker_stat_rows` z-scored by that speaker's mean and
    std (a constant feature, or a speaker with one row, is only centred); other rows are left as they are."""
    out = X.clone()
    for s, rows in speaker_stat_rows(speakers, train, other).items():
        x = X[torch.as_tensor(rows)]  # (n_s, [L,] D)
        sd = x.std(0) if len(x) > 1 else torch.zeros_like(x[0])
        inv = torch.where(sd > 1e-6, 1.0 / sd, torch.ones_like(sd))
        mine = torch.as_tensor(np.flatnonzero(speakers == s))
        out[mine] = (X[mine] - x.mean(0)) * inv
    return out
