"""Your own dataset: label map and EmoBox folds from a manifest, and the whole way to `trainer run`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tests.helpers.audio import tone, write_wav
from tests.helpers.cli import EMOCACHE_BIN
from emocache.folds import guess_label_map, make_folds, speakers_from_pattern, write_dataset
from emocache.manifest import ManifestError, read_folds

LABELS = ("neutral", "angry", "sad")


def _lines(n_spk=4, per=3, speaker=True):
    out = []
    for s in range(n_spk):
        for e in LABELS:
            for i in range(per):
                d = {"key": f"toy-s{s}-{e}-{i}", "dataset": "toy", "wav": f"/a/spk{s}/{e}_{i}.wav", "emo": e}
                if speaker:
                    d["speaker"] = f"spk{s}"
                out.append(d)
    return out


def _spk(key):
    return key.split("-")[1]


@pytest.mark.parametrize("n_folds, expect", [("loso", 4), (2, 2)])
def test_speaker_folds_never_share_a_speaker(n_folds, expect):
    lines = _lines()
    keys, labels = [d["key"] for d in lines], [d["emo"] for d in lines]
    folds, info = make_folds(keys, labels, [d["speaker"] for d in lines], n_folds)
    assert len(folds) == expect == info["n_folds"]
    seen_test = []
    for f in folds:
        assert not {_spk(k) for k in f.train} & {_spk(k) for k in f.test}
        assert sorted(f.train + f.test) == sorted(keys)
        seen_test += f.test
    assert sorted(seen_test) == sorted(keys)  # every utterance is tested exactly once
    assert sorted(sum(info["test_speakers"].values(), [])) == ["spk0", "spk1", "spk2", "spk3"]


def test_without_speakers_folds_are_stratified_and_warned():
    lines = _lines(speaker=False)
    keys, labels = [d["key"] for d in lines], [d["emo"] for d in lines]
    with pytest.warns(UserWarning, match="no speakers known"):
        folds, info = make_folds(keys, labels, None, 4, seed=1)
    lab = dict(zip(keys, labels))
    for f in folds:
        assert sorted(lab[k] for k in f.test) == sorted(LABELS * 3)  # 36 rows, 4 folds: 3 of each label
    assert "NOT speaker-independent" in info["strategy"]
    with pytest.raises(ManifestError, match="needs speakers"):
        make_folds(keys, labels, None, "loso")


def test_too_many_folds_for_the_speakers_is_an_error():
    lines = _lines(n_spk=3)
    with pytest.raises(ManifestError, match="only 3 speakers"):
        make_folds([d["key"] for d in lines], [d["emo"] for d in lines], [d["speaker"] for d in lines], 5)


def test_label_map_guess_and_warning():
    with pytest.warns(UserWarning, match="'grumpy'"):
        m = guess_label_map(["neu", "ANGRY", "joy", "grumpy"])
    assert m == {"neu": "Neutral", "ANGRY": "Angry", "joy": "Happy", "grumpy": "grumpy"}


def test_speaker_pattern_needs_its_group_and_a_match():
    assert speakers_from_pattern(["x/spk1/a.wav"], r"(?P<speaker>spk\d+)/") == ["spk1"]
    with pytest.raises(ManifestError, match="no named group"):
        speakers_from_pattern(["x"], r"spk")
    with pytest.raises(ManifestError, match="x/a.wav: does not match"):
        speakers_from_pattern(["x/a.wav"], r"(?P<speaker>spk\d+)/")


def test_written_folder_is_what_the_trainer_reads(tmp_path):
    from trainer.data import fold_rows, map_labels, read_label_map

    lines = _lines()
    root = write_dataset(lines, tmp_path, n_folds="loso")
    assert sorted(p.name for p in root.iterdir()) == ["fold_1", "fold_2", "fold_3", "fold_4", "folds.json",
                                                      "label_map.json", "toy.jsonl"]
    assert (root / "fold_2" / "toy_train_fold_2.jsonl").exists()
    assert json.loads((root / "folds.json").read_text())["n_speakers"] == 4
    assert len(read_folds(root)) == 4
    keys, raw = [d["key"] for d in lines], [d["emo"] for d in lines]
    lab = map_labels(raw, read_label_map(str(tmp_path), "toy"), "six")
    assert lab.classes == ("Neutral", "Angry", "Sad")
    rows = fold_rows(keys, lab.y, str(tmp_path), "toy")
    assert [len(r.test) for r in rows] == [9, 9, 9, 9]
    with pytest.raises(ManifestError, match="exists; pass --overwrite"):
        write_dataset(lines, tmp_path, n_folds=2)
    write_dataset(lines, tmp_path, n_folds=2, overwrite=True)
    assert len(read_folds(root)) == 2  # old fold_3, fold_4 removed


def test_lines_with_and_without_speakers_are_refused(tmp_path):
    lines = _lines()
    del lines[5]["speaker"]
    with pytest.raises(ManifestError, match="1 of 36 lines .* have no 'speaker'"):
        write_dataset(lines, tmp_path)


def _run(*args):
    return subprocess.run([*map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "OMP_NUM_THREADS": "1"})


def test_folds_cli_errors(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text("".join(json.dumps(d) + "\n" for d in _lines(speaker=False)))
    p = _run(EMOCACHE_BIN, "folds", m, "--out", tmp_path / "data", "--folds", "loso")
    out = p.stdout + p.stderr
    assert p.returncode == 2 and "needs speakers" in out and "Traceback" not in out
    p = _run(EMOCACHE_BIN, "folds", m, "--out", tmp_path / "data", "--folds", "one")
    assert p.returncode == 2 and "--folds 'one'" in p.stdout + p.stderr


def test_folder_of_audio_to_trainer_run(tmp_path):
    """A folder of audio -> manifest (+ speakers) -> folds -> extract -> trainer run, no hand-written files."""
    rng = np.random.default_rng(0)
    freq = {"neutral": 150.0, "angry": 400.0, "sad": 250.0}
    for s in range(3):
        for e in LABELS:
            for i in range(4):
                x = tone(0.5, freq=freq[e] * (1 + 0.05 * s)) + rng.normal(0, 0.01, 8000).astype(np.float32)
                write_wav(tmp_path / "wavs" / e / f"spk{s}_{i}.wav", x)
    man, data, store, res = tmp_path / "mine.jsonl", tmp_path / "data", tmp_path / "feats.zarr", tmp_path / "res"
    p = _run(EMOCACHE_BIN, "manifest", tmp_path / "wavs", "--dataset", "mine", "--pattern", "(?P<emo>[^/]+)/",
             "--speaker-pattern", r"(?P<speaker>spk\d+)_", "--out", man)
    assert p.returncode == 0, p.stdout + p.stderr
    p = _run(EMOCACHE_BIN, "folds", man, "--out", data, "--folds", "loso")
    assert p.returncode == 0 and "leave-one-speaker-out" in p.stdout + p.stderr, p.stdout + p.stderr
    p = _run(EMOCACHE_BIN, "extract", "--model", "fbank-stats", "--manifest", data / "mine", "--store", store,
             "--no-progress")
    assert p.returncode == 0, p.stdout + p.stderr
    p = _run(sys.executable, "-m", "trainer.cli", "run", "baseline", "--store", store, "--model", "fbank-stats",
             "--dataset", "mine", "--manifests", data, "--epochs-baseline", 3, "--seeds", "0", "--threads", 1,
             "--out", res, "--no-plots")
    assert p.returncode == 0, p.stdout + p.stderr
    (csv,) = res.glob("*/results.csv")
    rows = pd.read_csv(csv)
    assert sorted(rows["fold"]) == [1, 2, 3] and (rows["n_test"] == 12).all()
    assert rows["macro_f1"].between(0, 1).all()
