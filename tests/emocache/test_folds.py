"""Your own dataset: label map and EmoBox folds from a manifest, and the whole way to `trainer run`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tests.helpers.audio import tone, write_wav
from tests.helpers.cli import EMOCACHE_BIN
from emocache.folds import (FoldBalanceWarning, balance, cover_assignment, guess_label_map, label_table, make_folds,
                            read_label_map_file, speakers_from_pattern, write_dataset)
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


def _messages(record):
    return [str(w.message) for w in record]


def test_label_map_guess_and_warnings():
    with pytest.warns(UserWarning) as rec:
        m = guess_label_map(["neu", "ANGRY", "joy", "grumpy", "grumpy"])
    assert m == {"neu": "Neutral", "ANGRY": "Angry", "joy": "Happy", "grumpy": "grumpy"}
    renamed, outside = _messages(rec)
    assert "'joy' -> 'Happy' (1), 'neu' -> 'Neutral' (1) mapped by the built-in spellings" in renamed
    assert "ANGRY" not in renamed and "--label-map" in renamed  # its own name, case aside: nothing to say
    assert "'grumpy' (2) are outside the paper's six classes" in outside and "these 2 of 5 utterances" in outside


def test_relabelled_folder_is_warned_not_silently_mapped():
    """Sad relabelled "Bored": mapped to Boredom by a spelling, and Boredom is outside the six classes."""
    labels = ["Bored"] * 100 + ["Angry"] * 300
    with pytest.warns(UserWarning) as rec:
        assert guess_label_map(labels) == {"Angry": "Angry", "Bored": "Boredom"}
    renamed, outside = _messages(rec)
    assert renamed.startswith("label(s) 'Bored' -> 'Boredom' (100) mapped by the built-in spellings; give --label-map")
    assert "'Bored' -> 'Boredom' (100) are outside" in outside and "drops these 100 of 400" in outside


def test_user_label_map_against_a_name_warns(tmp_path):
    p = tmp_path / "map.json"
    p.write_text(json.dumps({"Angry": "Sad", "sad": "Sad", "x": "Neutral"}))
    with pytest.warns(UserWarning, match=r"maps label\(s\) 'Angry' -> 'Sad' \(2\) to another class") as rec:
        read_label_map_file(p, ["Angry", "Angry", "sad", "x"])
    assert len(rec) == 1  # 'sad' -> Sad is its own name, 'x' says nothing, all six-class: nothing else


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
                                                      "folds_labels.csv", "label_map.json", "toy.jsonl"]
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


SKEWED = [(0, 15, 0), (0, 10, 15), (10, 0, 2), (10, 0, 0), (11, 15, 15), (19, 0, 16), (0, 4, 0), (11, 0, 0)]
"""Utterances of classes (a, b, c) per speaker: most speakers speak one or two of them."""


def _skewed():
    keys, labels, speakers = [], [], []
    for s, row in enumerate(SKEWED):
        for c, n in zip("abc", row):
            for i in range(n):
                keys.append(f"s{s}-{c}{i}")
                labels.append(c)
                speakers.append(f"s{s}")
    return keys, labels, speakers


def test_label_table_counts_each_test_set():
    keys, labels, speakers = _skewed()
    folds, _ = make_folds(keys, labels, speakers, 4)
    t = label_table(folds, keys, labels, speakers)
    lab, spk = dict(zip(keys, labels)), dict(zip(keys, speakers))
    assert list(t.index) == [1, 2, 3, 4] and list(t.columns) == ["n_test", "n_speakers", "a", "b", "c"]
    for f in folds:
        assert t.loc[f.k, "n_test"] == len(f.test) and t.loc[f.k, "n_speakers"] == len({spk[k] for k in f.test})
        for c in "abc":
            assert t.loc[f.k, c] == sum(lab[k] == c for k in f.test)
    assert t[["a", "b", "c"]].sum().tolist() == [labels.count(c) for c in "abc"]
    missing = {c: [k for k in t.index if t.loc[k, c] == 0] for c in "abc"}
    assert balance(t)["missing"] == {c: ks for c, ks in missing.items() if ks}


def test_cover_assignment_fills_every_test_set_the_speakers_allow():
    """Each class is spoken by at least 4 speakers, so 4 speaker folds can all hold every class."""
    keys, labels, speakers = _skewed()
    folds, info = make_folds(keys, labels, speakers, 4, assign="cover")
    assert balance(label_table(folds, keys, labels, speakers))["missing"] == {}
    assert info["assign"] == "cover" and "--assign cover (ours" in info["strategy"]
    spk = dict(zip(keys, speakers))
    for f in folds:
        assert not {spk[k] for k in f.train} & {spk[k] for k in f.test}
    assert sorted(k for f in folds for k in f.test) == sorted(keys)
    _, info = make_folds(keys, labels, speakers, 4)
    assert "stratified by label" not in info["strategy"] and "StratifiedGroupKFold" in info["strategy"]
    with pytest.raises(ManifestError, match="did you mean 'cover'"):
        make_folds(keys, labels, speakers, 4, assign="covr")
    with pytest.raises(ManifestError, match="every speaker its own fold"):
        make_folds(keys, labels, speakers, "loso", assign="cover")


def test_cover_assignment_never_raises_the_cost_nor_empties_a_fold():
    from emocache.folds import _fold_cost

    rng = np.random.default_rng(0)
    for _ in range(20):
        counts = (rng.integers(1, 9, (12, 4)) * (rng.random((12, 4)) < 0.4)).astype(float)  # (S, C)
        counts[counts.sum(1) == 0, 0] = 1
        start = np.arange(12) % 3

        def cost(a):
            F = np.zeros((3, 4))
            np.add.at(F, a, counts)
            return _fold_cost(F, counts.sum(0), 3).sum()

        a = cover_assignment(counts, start, 3)
        assert cost(a) <= cost(start) and set(a.tolist()) == {0, 1, 2}


def test_a_test_set_without_a_class_is_warned(tmp_path):
    lines = [d for d in _lines() if d["emo"] != "sad" or d["speaker"] in ("spk0", "spk1")]  # 2 speakers say sad
    with pytest.warns(FoldBalanceWarning) as rec:
        root = write_dataset(lines, tmp_path, n_folds=3)
    t = pd.read_csv(root / "folds_labels.csv", index_col="fold")
    empty = [int(k) for k in t.index if t.loc[k, "Sad"] == 0]
    assert len(empty) >= 1 and t["Sad"].sum() == 6
    (msg,) = [str(w.message) for w in rec if issubclass(w.category, FoldBalanceWarning)]
    assert f"fold(s) {', '.join(map(str, empty))} have no 'Sad' utterance" in msg
    assert "spoken by 2 speaker(s), so 3 speaker folds leave at least 1 test set(s) without it" in msg
    assert json.loads((root / "folds.json").read_text())["labels"]["missing"] == {"Sad": empty}


def test_folds_cli_prints_the_label_table_and_warnings(tmp_path, cli):
    keys, labels, speakers = _skewed()
    m = tmp_path / "m.jsonl"
    m.write_text("".join(json.dumps({"key": k, "dataset": "sk", "wav": f"/a/{k}.wav", "emo": e, "speaker": s}) + "\n"
                         for k, e, s in zip(keys, labels, speakers)))
    code, out = cli("folds", m, "--out", tmp_path / "data", "--folds", "4")
    assert code == 0, out
    t = pd.read_csv(tmp_path / "data" / "sk" / "folds_labels.csv", index_col="fold")
    assert "test-set utterances per class and fold" in out and "stratified by label" not in out
    for k in t.index:
        assert re.search(rf"│\s+{k} │\s+{t.loc[k, 'n_test']} │", out)
    for c, ks in balance(t)["missing"].items():
        assert f"fold(s) {', '.join(map(str, ks))} have no {c!r} utterance" in out
    n = {c: labels.count(c) for c in "abc"}
    assert f"label(s) 'a' ({n['a']}), 'b' ({n['b']}), 'c' ({n['c']}) are outside the paper's six classes" in out
    code, out = cli("folds", m, "--out", tmp_path / "data2", "--folds", "4", "--assign", "cover")
    assert code == 0 and "have no" not in out and "--assign cover (ours" in out, out


def _run(*args):
    return subprocess.run([*map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_folds_cli_errors(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text("".join(json.dumps(d) + "\n" for d in _lines(speaker=False)))
    p = _run(EMOCACHE_BIN, "folds", m, "--out", tmp_path / "data", "--folds", "loso")
    out = p.stdout + p.stderr
    assert p.returncode == 2 and "needs speakers" in out and "Traceback" not in out
    p = _run(EMOCACHE_BIN, "folds", m, "--out", tmp_path / "data", "--folds", "one")
    assert p.returncode == 2 and "--folds 'one'" in p.stdout + p.stderr


@pytest.mark.slow
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
