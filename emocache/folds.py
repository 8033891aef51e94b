"""Your own dataset in EmoBox's layout: label map and folds, so `trainer run` can use it.

``write_dataset`` turns one manifest into::

    <out>/<ds>/<ds>.jsonl                                   every utterance
    <out>/<ds>/label_map.json                               raw label -> canonical name
    <out>/<ds>/folds.json                                   how the folds were made (strategy, test speakers)
    <out>/<ds>/folds_labels.csv                             test-set utterances per class and fold
    <out>/<ds>/fold_<k>/<ds>_{train,test}_fold_<k>.jsonl    one folder per fold

Folds are speaker-independent when each line has a speaker (a ``speaker`` field, or ``--speaker-pattern`` on the
wav path): ``K`` folds of whole speakers or leave-one-speaker-out (``LeaveOneGroupOut``). How speakers are
assigned to the K folds (``assign``):

* ``stratified-group`` (default): scikit-learn's ``StratifiedGroupKFold``, which places speakers greedily to
  keep each fold's label shares close to the corpus's. It balances only as well as whole speakers allow: on a
  corpus where most speakers speak one emotion, some test sets can lack a class (the label table and a warning
  say so).
* ``cover`` (ours): starts from ``stratified-group`` and moves or swaps speakers between folds while that puts
  each class in more test sets (first) or brings the folds' class counts closer to an equal share (then).

Without speakers the folds are stratified K-fold (``StratifiedKFold``) and a warning says that test speakers are
also seen in training, which inflates every number. There is no valid split: the trainer reports the last epoch
and does not use one. Our choices: 5 folds by default (as EmoBox's EmoDB), speaker groups shuffled with a seed
(0), the label-name guesses in ``ALIASES``, and the class counts compared on the mapped (canonical) labels.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from emocache.inputs import InputError, load_json
from emocache.manifest import (Fold, ManifestError, check_label_map, check_name, lookup_label, read_manifest,
                               six_class_map, write_lines)
from emocache.speakers import compile_speaker_pattern
from emocache.suggest import did_you_mean

LOSO = "loso"
"""``n_folds`` value for leave-one-speaker-out."""

ASSIGNMENTS = ("stratified-group", "cover")
"""How K speaker folds are assigned (``--assign``): scikit-learn's StratifiedGroupKFold (default), or ours."""

LABEL_TABLE = "folds_labels.csv"
"""The per-fold label table written next to folds.json."""

CANONICAL = ("Neutral", "Angry", "Happy", "Sad", "Fear", "Surprise", "Disgust", "Contempt", "Boredom", "Calm",
             "Excited", "Frustrated", "Other")
"""EmoBox's canonical label names (the right-hand side of its label_map.json files)."""

ALIASES = {
    "neu": "Neutral", "angry": "Angry", "ang": "Angry", "anger": "Angry", "hap": "Happy", "happiness": "Happy",
    "joy": "Happy", "sadness": "Sad", "fea": "Fear", "fearful": "Fear", "afraid": "Fear", "sur": "Surprise",
    "surprised": "Surprise", "dis": "Disgust", "disgusted": "Disgust", "bored": "Boredom", "exc": "Excited",
    "fru": "Frustrated", "oth": "Other",
}
"""Our choice: unambiguous spellings mapped to canonical names (single letters are not guessed: S is Sad or
Surprise). Matching ignores case; anything else maps to itself, with a warning."""


class FoldBalanceWarning(UserWarning):
    """A test set that lacks a class (said after the label table)."""


def _counted(names: list[tuple[str, str | None]], counts: Counter) -> str:
    return ", ".join(f"{raw!r}" + (f" -> {name!r}" if name and name != raw else "") + f" ({counts[raw]})"
                     for raw, name in names)


def spelled_class(raw: str) -> str | None:
    """The canonical class a label's own name says (its canonical name or a built-in spelling), else None."""
    low = raw.lower()
    return {c.lower(): c for c in CANONICAL}.get(low) or ALIASES.get(low)


def label_map_warnings(labels: list[str], label_map: dict[str, str], source: str | None = None) -> list[str]:
    """What a user should know about ``label_map`` on these labels, one line each (with utterance counts):

    labels mapped to a class their name does not literally say (by the built-in spellings when ``source`` is
    None, else by the map in ``source`` against the class their name says), and labels outside the paper's six
    classes, which ``trainer run --labels six`` (the default) drops.
    """
    counts = Counter(labels)
    out = []
    if source is None:
        renamed = [(raw, label_map[raw]) for raw in sorted(counts) if label_map[raw].lower() != raw.lower()]
        if renamed:
            out.append(f"label(s) {_counted(renamed, counts)} mapped by the built-in spellings; give --label-map "
                       "FILE (JSON raw -> canonical) to change")
    else:
        against = [(raw, lookup_label(raw, label_map)) for raw in sorted(counts)
                   if spelled_class(raw) and (lookup_label(raw, label_map) or "").lower() != spelled_class(raw).lower()]
        if against:
            out.append(f"{source} maps label(s) {_counted(against, counts)} to another class than their name "
                       "says; check the map")
    six = six_class_map()
    outside = [(raw, lookup_label(raw, label_map)) for raw in sorted(counts)
               if lookup_label(lookup_label(raw, label_map) or raw, six) is None]
    if outside:
        n = sum(counts[raw] for raw, _ in outside)
        out.append(f"label(s) {_counted(outside, counts)} are outside the paper's six classes "
                   f"({', '.join(sorted(set(six.values())))}): `trainer run --labels six` (the default) drops "
                   f"these {n} of {len(labels)} utterances; map them with --label-map FILE (JSON raw -> canonical) "
                   "or train with --labels emobox")
    return out


def guess_label_map(labels: list[str]) -> dict[str, str]:
    """raw label -> canonical name for the labels present; unknown labels map to themselves. Warns (one line each)
    about labels renamed by the built-in spellings and labels outside the six classes."""
    canon = {c.lower(): c for c in CANONICAL}
    out = {}
    for raw in sorted(set(labels)):
        low = raw.lower()
        out[raw] = canon.get(low) or ALIASES.get(low) or raw
    for msg in label_map_warnings(labels, out):
        warnings.warn(msg, stacklevel=2)
    return out


def read_label_map_file(path: str | Path, labels: list[str]) -> dict[str, str]:
    """A user's label map (JSON object raw -> canonical); every label of the manifest must be in it. Warns about
    labels it maps against their name and labels outside the six classes."""
    try:
        m = load_json(path, "--label-map")
    except InputError as e:
        raise ManifestError(str(e)) from None
    check_label_map(m, f"--label-map {path}")
    missing = sorted(set(labels) - set(m))
    if missing:
        raise ManifestError(f"--label-map {path}: no entry for label(s) {missing}; add them")
    for msg in label_map_warnings(labels, m, f"--label-map {path}"):
        warnings.warn(msg, stacklevel=2)
    return m


def speakers_from_pattern(paths: list[str], pattern: str) -> list[str]:
    """The named group ``speaker`` of ``pattern`` searched in each path; ManifestError naming a path that misses."""
    rx = compile_speaker_pattern(pattern, ManifestError)
    if "speaker" not in rx.groupindex:
        raise ManifestError(f"--speaker-pattern {pattern!r} has no named group (?P<speaker>...)")
    out = []
    for p in paths:
        m = rx.search(p)
        if not m:
            raise ManifestError(f"{p}: does not match --speaker-pattern {pattern!r}; fix the pattern")
        out.append(m.group("speaker"))
    return out


def _fold_cost(n: np.ndarray, total: np.ndarray, k: int) -> np.ndarray:
    """Cost of a fold's class counts ``n`` (..., C): a missing class outweighs any imbalance; then each class's
    and the fold's squared distance from an equal share (1/k), relative to the class's or the corpus's size."""
    big = float(2 * k * total.sum() + 1)  # more than the largest possible imbalance terms
    size = total.sum()
    return ((big * (n == 0) + (n - total / k) ** 2 / np.maximum(total, 1)).sum(-1)
            + (n.sum(-1) - size / k) ** 2 / size)


def cover_assignment(counts: np.ndarray, start: np.ndarray, k: int, max_steps: int = 10_000) -> np.ndarray:
    """Ours (``--assign cover``): speaker -> fold, improved from ``start`` by the best single move or swap of
    speakers between folds while one lowers :func:`_fold_cost` summed over folds (no fold is emptied).

    ``counts`` (S, C): utterances per speaker and class; ``start`` (S,): a fold per speaker in 0..k-1.
    """
    a = start.copy()
    total = counts.sum(0)  # (C,)
    s_idx = np.arange(len(a))
    for _ in range(max_steps):
        F = np.zeros((k, counts.shape[1]))
        np.add.at(F, a, counts)  # (K, C) fold counts
        base = _fold_cost(F, total, k)  # (K,)
        here = F[a]  # (S, C) each speaker's current fold counts
        leave = _fold_cost(here - counts, total, k) - base[a]  # (S,)
        join = _fold_cost(F[None] + counts[:, None], total, k) - base[None]  # (S, K)
        move = leave[:, None] + join
        move[s_idx, a] = np.inf
        alone = np.bincount(a, minlength=k)[a] == 1
        move[alone] = np.inf
        best_move = np.unravel_index(np.argmin(move), move.shape)
        best = (move[best_move], "move", best_move)
        for lo in range(0, len(a), 256):  # swaps, a block of rows at a time (bounded memory)
            rows = slice(lo, lo + 256)
            swapped = here[rows, None] - counts[rows, None] + counts[None]  # (r, S, C): s's fold after s <-> t
            after_s = _fold_cost(swapped, total, k)  # (r, S)
            after_t = _fold_cost(F[a][None] - counts[None] + counts[rows, None], total, k)  # (r, S): t's fold
            d = after_s + after_t - base[a[rows]][:, None] - base[a][None]
            d[a[rows][:, None] == a[None]] = np.inf
            i, j = np.unravel_index(np.argmin(d), d.shape)
            if d[i, j] < best[0]:
                best = (d[i, j], "swap", (lo + i, j))
        if not best[0] < -1e-9:
            break
        if best[1] == "move":
            s, b = best[2]
            a[s] = b
        else:
            s, t = best[2]
            a[s], a[t] = a[t], a[s]
    return a


def make_folds(keys: list[str], labels: list[str], speakers: list[str] | None = None, n_folds: int | str = 5,
               seed: int = 0, assign: str = "stratified-group") -> tuple[list[Fold], dict]:
    """Train/test folds over ``keys`` and a description of how they were made.

    With ``speakers``: ``n_folds`` folds of whole speakers assigned by ``assign`` (see the module docstring), or
    leave-one-speaker-out with ``"loso"``; no speaker is ever in both splits of a fold. Without: stratified
    K-fold, shuffled with ``seed``, and a warning (not speaker-independent). ``labels`` are what the folds are
    balanced on (the mapped labels, in ``write_dataset``).
    """
    from sklearn.model_selection import LeaveOneGroupOut, StratifiedGroupKFold, StratifiedKFold

    if assign not in ASSIGNMENTS:
        raise ManifestError(f"--assign {assign!r}: {did_you_mean(assign, ASSIGNMENTS)}known: {', '.join(ASSIGNMENTS)}")
    dummy = np.zeros((len(keys), 1))  # the splitters only count rows
    if speakers is not None:
        n_spk = len(set(speakers))
        if n_spk < 2:
            raise ManifestError(f"only one speaker ({speakers[0]!r}): speaker-independent folds need at least two; "
                                "check the speaker field/pattern")
        if n_folds == LOSO:
            if assign != "stratified-group":
                raise ManifestError(f"--assign {assign} chooses how speakers share K folds; --folds {LOSO} gives "
                                    "every speaker its own fold")
            splits = LeaveOneGroupOut().split(dummy, labels, speakers)
            how = "leave-one-speaker-out (LeaveOneGroupOut)"
        else:
            if n_folds > n_spk:
                raise ManifestError(f"--folds {n_folds} but only {n_spk} speakers; pass --folds {n_spk} or "
                                    f"--folds {LOSO}")
            splits = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(
                dummy, labels, speakers)
            how = (f"{n_folds} speaker-independent folds, speakers assigned by StratifiedGroupKFold (seed {seed})"
                   if assign == "stratified-group" else
                   f"{n_folds} speaker-independent folds, speakers assigned by --assign cover (ours; from "
                   f"StratifiedGroupKFold, seed {seed})")
    else:
        n_spk = None
        if n_folds == LOSO:
            raise ManifestError(f"--folds {LOSO} needs speakers: give a 'speaker' field or --speaker-pattern")
        if assign != "stratified-group":
            raise ManifestError(f"--assign {assign} moves whole speakers between folds: give a 'speaker' field or "
                                "--speaker-pattern")
        warnings.warn(f"no speakers known: {n_folds} stratified folds (StratifiedKFold) put the same speakers in train "
                      "and test, which inflates every score; give --speaker-pattern or a 'speaker' field for "
                      "speaker-independent folds", stacklevel=2)
        splits = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(dummy, labels)
        how = f"{n_folds} stratified folds, NOT speaker-independent (StratifiedKFold, seed {seed})"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")  # the label table says it
        try:
            parts = [test for _, test in splits]
        except ValueError as e:  # e.g. more folds than utterances of every label
            raise ManifestError(f"cannot make {n_folds} folds: {e}") from None
    if assign == "cover":
        spk_names = sorted(set(speakers))
        classes = sorted(set(labels))
        s_of = {s: i for i, s in enumerate(spk_names)}
        counts = np.zeros((len(spk_names), len(classes)))
        np.add.at(counts, ([s_of[s] for s in speakers], [classes.index(lab) for lab in labels]), 1)
        start = np.zeros(len(spk_names), np.int64)
        for f, test in enumerate(parts):
            start[[s_of[speakers[i]] for i in test]] = f
        fold_of = cover_assignment(counts, start, len(parts))
        rows = np.array([fold_of[s_of[s]] for s in speakers])
        parts = [np.flatnonzero(rows == f) for f in range(len(parts))]
    folds, test_speakers = [], {}
    everything = np.arange(len(keys))
    for k, test in enumerate(parts, 1):
        train = np.setdiff1d(everything, test)
        folds.append(Fold(k=k, train=tuple(keys[i] for i in train), test=tuple(keys[i] for i in sorted(test))))
        if speakers is not None:
            test_speakers[str(k)] = sorted({speakers[i] for i in test})
    info = {"strategy": how, "assign": assign if speakers is not None and n_folds != LOSO else None,
            "n_folds": len(folds), "seed": seed, "n_speakers": n_spk, "test_speakers": test_speakers or None}
    return folds, info


def label_table(folds: list[Fold], keys: list[str], labels: list[str],
                speakers: list[str] | None = None) -> "pd.DataFrame":
    """Test-set utterances per class (columns, canonical order first) and fold (rows ``1..K``), with the
    number of test utterances (``n_test``) and, with speakers, test speakers (``n_speakers``) first."""
    import pandas as pd

    lab = dict(zip(keys, labels))
    spk = dict(zip(keys, speakers)) if speakers is not None else None
    order = {c: i for i, c in enumerate(CANONICAL)}
    classes = sorted(set(labels), key=lambda c: (order.get(c, len(order)), c))
    rows = []
    for f in folds:
        c = Counter(lab[k] for k in f.test)
        row = {"fold": f.k, "n_test": len(f.test)}
        if spk is not None:
            row["n_speakers"] = len({spk[k] for k in f.test})
        rows.append(row | {cls: c.get(cls, 0) for cls in classes})
    return pd.DataFrame(rows).set_index("fold")


def balance(table: "pd.DataFrame") -> dict:
    """How balanced the test sets are: the folds each class is missing from, and the largest gap (percentage
    points) between a test set's class share and the whole corpus's."""
    classes = [c for c in table.columns if c not in ("n_test", "n_speakers")]
    counts = table[classes].to_numpy(float)  # (K, C)
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    whole = counts.sum(0) / counts.sum()
    missing = {c: [int(k) for k in table.index[table[c] == 0]] for c in classes}
    return {"missing": {c: ks for c, ks in missing.items() if ks},
            "max_share_gap_points": round(float(100 * np.abs(share - whole).max()), 1)}


def balance_warnings(table: "pd.DataFrame", labels: list[str], speakers: list[str] | None, assign: str | None
                     ) -> list[str]:
    """One line per class some test set lacks: which folds, and whether the speakers allow better."""
    k = len(table)
    out = []
    for c, ks in balance(table)["missing"].items():
        folds = ", ".join(map(str, ks))
        if speakers is None:
            n = labels.count(c)
            why = f"{c!r} has {n} utterance(s) for {k} folds" if n < k else "the stratified split left it out"
        else:
            n_spk = len({s for s, lab in zip(speakers, labels) if lab == c})
            floor = max(0, k - n_spk)
            why = (f"{c!r} is spoken by {n_spk} speaker(s), so {k} speaker folds leave at least {floor} test set(s) "
                   "without it" if floor else f"{n_spk} speakers speak {c!r}")
            if len(ks) > floor and assign == "stratified-group":
                why += "; --assign cover (ours) puts each class in as many test sets as the speakers allow"
            elif floor:
                why += "; fewer --folds would put it in more test sets"
        out.append(f"test set(s) of fold(s) {folds} have no {c!r} utterance ({why}); their macro-F1 averages "
                   "over fewer classes")
    return out


def read_lines(path: str | Path) -> list[dict]:
    """A manifest's lines as written (extra fields such as ``speaker`` kept), validated by ``read_manifest``."""
    read_manifest(path)  # the checks and their messages
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_dataset(lines: list[dict], out: str | Path, dataset: str | None = None, n_folds: int | str = 5,
                  speaker_field: str = "speaker", speaker_pattern: str | None = None,
                  label_map: dict[str, str] | None = None, seed: int = 0, overwrite: bool = False,
                  assign: str = "stratified-group") -> Path:
    """Write ``lines`` (one dataset) as an EmoBox dataset folder under ``out``; returns ``out/<dataset>``.

    Speakers come from ``speaker_pattern`` on the wav paths, else from ``speaker_field`` when every line has
    it (some lines without it is an error). Folds are balanced on the mapped labels (``label_map``, else the
    guessed one). Warns (:class:`FoldBalanceWarning`) for each class some test set lacks. Refuses an existing
    folder unless ``overwrite``.
    """
    if not lines:
        raise ManifestError("the manifest has no utterances")
    names = sorted({str(d.get("dataset") or "") for d in lines})
    if dataset is None:
        if len(names) != 1 or not names[0]:
            raise ManifestError(f"the manifest's lines name datasets {names}; pass --dataset NAME")
        dataset = names[0]
    check_name(dataset, "dataset")  # it names folders and files
    keys = [str(d["key"]) for d in lines]
    labels = [str(d["emo"]) for d in lines]
    if speaker_pattern:
        speakers = speakers_from_pattern([str(d["wav"]) for d in lines], speaker_pattern)
    else:
        have = [speaker_field in d and d[speaker_field] not in (None, "") for d in lines]
        if any(have) and not all(have):
            first = keys[have.index(False)]
            raise ManifestError(f"{have.count(False)} of {len(lines)} lines (e.g. {first!r}) have no "
                                f"{speaker_field!r}; give every line one or use --speaker-pattern")
        speakers = [str(d[speaker_field]) for d in lines] if all(have) else None
    label_map = label_map if label_map is not None else guess_label_map(labels)
    mapped = [lookup_label(lab, label_map) or lab for lab in labels]
    folds, info = make_folds(keys, mapped, speakers, n_folds, seed, assign)
    table = label_table(folds, keys, mapped, speakers)
    info["labels"] = balance(table)
    for msg in balance_warnings(table, mapped, speakers, info["assign"]):
        warnings.warn(msg, FoldBalanceWarning, stacklevel=2)
    root = Path(out) / dataset
    if root.exists():
        if not overwrite:
            raise ManifestError(f"{root} exists; pass --overwrite to replace its manifest, label map and folds, "
                                "or choose another --out")
        for d in root.glob("fold_*"):
            if d.is_dir():
                shutil.rmtree(d)
    rows = [dict(d, dataset=dataset) for d in lines]
    by_key = dict(zip(keys, rows))
    write_lines(rows, root / f"{dataset}.jsonl")
    (root / "label_map.json").write_text(json.dumps(label_map, indent=2, ensure_ascii=False) + "\n",
                                         encoding="utf-8")
    (root / "folds.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    table.to_csv(root / LABEL_TABLE)
    for f in folds:
        for split in ("train", "test"):
            write_lines([by_key[k] for k in getattr(f, split)], root / f"fold_{f.k}" / f"{dataset}_{split}_fold_{f.k}.jsonl")
    return root
