"""Your own dataset in EmoBox's layout: label map and folds, so `trainer run` can use it.

``write_dataset`` turns one manifest into::

    <out>/<ds>/<ds>.jsonl                                   every utterance
    <out>/<ds>/label_map.json                               raw label -> canonical name
    <out>/<ds>/folds.json                                   how the folds were made (strategy, test speakers)
    <out>/<ds>/fold_<k>/<ds>_{train,test}_fold_<k>.jsonl    one folder per fold

Folds are speaker-independent when each line has a speaker (a ``speaker`` field, or ``--speaker-pattern`` on the
wav path): ``K`` speaker groups balanced by label (scikit-learn's ``StratifiedGroupKFold``) or leave-one-speaker-out
(``LeaveOneGroupOut``). Without speakers the folds are stratified K-fold (``StratifiedKFold``) and a warning says
that test speakers are also seen in training, which inflates every number. There is no valid split: the trainer
reports the last epoch and does not use one. Our choices: 5 folds by default (as EmoBox's EmoDB), speaker
groups shuffled with a seed (0), and the label-name guesses in ``ALIASES``.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np

from emocache.manifest import Fold, ManifestError, check_name, read_manifest, write_lines
from emocache.speakers import compile_speaker_pattern

LOSO = "loso"
"""``n_folds`` value for leave-one-speaker-out."""

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


def guess_label_map(labels: list[str]) -> dict[str, str]:
    """raw label -> canonical name for the labels present; unknown labels map to themselves (warned)."""
    canon = {c.lower(): c for c in CANONICAL}
    out, unknown = {}, []
    for raw in sorted(set(labels)):
        low = raw.lower()
        name = canon.get(low) or ALIASES.get(low)
        if name is None:
            unknown.append(raw)
            name = raw
        out[raw] = name
    if unknown:
        warnings.warn(f"label(s) {unknown} are not EmoBox names ({', '.join(CANONICAL)}); label_map.json keeps "
                      "them as they are, so `trainer run --labels six` drops them: pass --label-map FILE "
                      "(JSON raw -> canonical) to map them", stacklevel=2)
    return out


def read_label_map_file(path: str | Path, labels: list[str]) -> dict[str, str]:
    """A user's label map (JSON object raw -> canonical); every label of the manifest must be in it."""
    from emocache.inputs import InputError, load_json
    from emocache.manifest import check_label_map

    try:
        m = load_json(path, "--label-map")
    except InputError as e:
        raise ManifestError(str(e)) from None
    check_label_map(m, f"--label-map {path}")
    missing = sorted(set(labels) - set(m))
    if missing:
        raise ManifestError(f"--label-map {path}: no entry for label(s) {missing}; add them")
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


def make_folds(keys: list[str], labels: list[str], speakers: list[str] | None = None, n_folds: int | str = 5,
               seed: int = 0) -> tuple[list[Fold], dict]:
    """Train/test folds over ``keys`` and a description of how they were made.

    With ``speakers``: ``n_folds`` speaker groups stratified by label, or leave-one-speaker-out with ``"loso"``;
    no speaker is ever in both splits of a fold. Without: stratified K-fold, shuffled with ``seed``, and a
    warning (not speaker-independent).
    """
    from sklearn.model_selection import LeaveOneGroupOut, StratifiedGroupKFold, StratifiedKFold

    dummy = np.zeros((len(keys), 1))  # the splitters only count rows
    if speakers is not None:
        n_spk = len(set(speakers))
        if n_spk < 2:
            raise ManifestError(f"only one speaker ({speakers[0]!r}): speaker-independent folds need at least two; "
                                "check the speaker field/pattern")
        if n_folds == LOSO:
            splits = LeaveOneGroupOut().split(dummy, labels, speakers)
            how = "leave-one-speaker-out (LeaveOneGroupOut)"
        else:
            if n_folds > n_spk:
                raise ManifestError(f"--folds {n_folds} but only {n_spk} speakers; pass --folds {n_spk} or "
                                    f"--folds {LOSO}")
            splits = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(
                dummy, labels, speakers)
            how = f"{n_folds} speaker groups stratified by label (StratifiedGroupKFold, seed {seed})"
    else:
        n_spk = None
        if n_folds == LOSO:
            raise ManifestError(f"--folds {LOSO} needs speakers: give a 'speaker' field or --speaker-pattern")
        warnings.warn(f"no speakers known: {n_folds} stratified folds (StratifiedKFold) put the same speakers in train "
                      "and test, which inflates every score; give --speaker-pattern or a 'speaker' field for "
                      "speaker-independent folds", stacklevel=2)
        splits = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(dummy, labels)
        how = f"{n_folds} stratified folds, NOT speaker-independent (StratifiedKFold, seed {seed})"
    folds, test_speakers = [], {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")  # said once below instead
        try:
            parts = list(splits)
        except ValueError as e:  # e.g. more folds than utterances of every label
            raise ManifestError(f"cannot make {n_folds} folds: {e}") from None
        for k, (train, test) in enumerate(parts, 1):
            folds.append(Fold(k=k, train=tuple(keys[i] for i in sorted(train)),
                              test=tuple(keys[i] for i in sorted(test))))
            if speakers is not None:
                test_speakers[str(k)] = sorted({speakers[i] for i in test})
    counts: dict[str, int] = {}
    for lab in labels:
        counts[lab] = counts.get(lab, 0) + 1
    small = sorted(lab for lab, c in counts.items() if c < len(folds))
    if small:
        warnings.warn(f"label(s) {small} have fewer utterances than folds ({len(folds)}): some test folds lack "
                      "them", stacklevel=2)
    info = {"strategy": how, "n_folds": len(folds), "seed": seed, "n_speakers": n_spk,
            "test_speakers": test_speakers or None}
    return folds, info


def read_lines(path: str | Path) -> list[dict]:
    """A manifest's lines as written (extra fields such as ``speaker`` kept), validated by ``read_manifest``."""
    read_manifest(path)  # the checks and their messages
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_dataset(lines: list[dict], out: str | Path, dataset: str | None = None, n_folds: int | str = 5,
                  speaker_field: str = "speaker", speaker_pattern: str | None = None,
                  label_map: dict[str, str] | None = None, seed: int = 0, overwrite: bool = False) -> Path:
    """Write ``lines`` (one dataset) as an EmoBox dataset folder under ``out``; returns ``out/<dataset>``.

    Speakers come from ``speaker_pattern`` on the wav paths, else from ``speaker_field`` when every line has
    it (some lines without it is an error). Refuses an existing folder unless ``overwrite``.
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
    folds, info = make_folds(keys, labels, speakers, n_folds, seed)
    label_map = label_map if label_map is not None else guess_label_map(labels)
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
    for f in folds:
        for split in ("train", "test"):
            write_lines([by_key[k] for k in getattr(f, split)], root / f"fold_{f.k}" / f"{dataset}_{split}_fold_{f.k}.jsonl")
    return root
