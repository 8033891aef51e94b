"""The synthetic demo corpus: deterministic bytes for a seed, EmoBox layout, classes that differ measurably."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from emocache.demo import LABEL_MAP, SPEAKERS, STYLES, make_corpus


def tree_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_identical_bytes_other_seed_differs(tmp_path, demo_corpus):
    again = make_corpus(tmp_path / "again", per_class=1, seed=0)
    a, b = tree_bytes(demo_corpus.ds_dir), tree_bytes(again)
    assert list(a) == list(b) and len(a) == 36 + 1 + 6 + 1  # wavs, whole manifest, 3 folds x 2, label map
    assert a == b
    other = tree_bytes(make_corpus(tmp_path / "other", per_class=1, seed=1))
    assert list(other) == list(a)
    differing = [k for k in a if k.endswith(".wav") and a[k] != other[k]]
    assert len(differing) == 36


def test_layout_and_manifest_fields(demo_corpus):
    lines = demo_corpus.lines()
    assert len(lines) == len(SPEAKERS) * len(STYLES) == 36
    assert json.loads((demo_corpus.ds_dir / "label_map.json").read_text()) == LABEL_MAP
    for d in lines:
        assert d["wav"].startswith("demo/audio/spk") and d["dataset"] == "demo" and d["channel"] == 1
        x, sr = sf.read(demo_corpus.ds_dir / d["wav"].split("/", 1)[1], dtype="float32")
        assert sr == d["sample_rate"] == 16000 and x.size == d["num_frame"]
        assert d["length"] == pytest.approx(x.size / sr) and 1.0 <= d["length"] <= 3.0
        assert d["emo"] in LABEL_MAP and d["key"] == f"demo-spk{d['key'].split('-spk')[1]}"
    assert {d["emo"] for d in lines} == set(LABEL_MAP)


def f0_median(x: np.ndarray, sr: int = 16000) -> float:
    """Median autocorrelation pitch over frames louder than the utterance's RMS."""
    n, hop, rms = 640, 320, np.sqrt(np.mean(x ** 2))
    lo, hi = sr // 800, sr // 60
    est = []
    for i in range(0, x.size - n, hop):
        f = x[i:i + n]
        if np.sqrt(np.mean(f ** 2)) < rms:
            continue
        f = f - f.mean()
        ac = np.correlate(f, f, "full")[n - 1:]
        est.append(sr / (lo + int(np.argmax(ac[lo:hi]))))
    return float(np.median(est))


def test_classes_differ_in_pitch_and_energy(demo_corpus):
    for spk, (base_f0, _) in enumerate(SPEAKERS):
        f0, rms = {}, {}
        for s in STYLES:
            x, _ = sf.read(demo_corpus.ds_dir / f"audio/spk{spk}/{s.label}_00.wav", dtype="float32")
            f0[s.label], rms[s.label] = f0_median(x), float(np.sqrt(np.mean(x ** 2)))
        assert f0["neu"] == pytest.approx(base_f0, rel=0.05), (spk, f0)
        assert f0["sad"] < 0.9 * f0["neu"] < f0["ang"] < f0["hap"] < f0["sur"], (spk, f0)
        assert f0["sur"] > 1.6 * f0["neu"] and f0["fea"] > 1.3 * f0["neu"], (spk, f0)
        assert rms["ang"] > 1.3 * rms["neu"] > 1.3 * rms["sad"], (spk, rms)


def test_folds_are_speaker_independent(demo_corpus):
    for k in (1, 2, 3):
        fold = demo_corpus.ds_dir / f"fold_{k}"
        test = [json.loads(s) for s in (fold / f"demo_test_fold_{k}.jsonl").read_text().splitlines()]
        train = [json.loads(s) for s in (fold / f"demo_train_fold_{k}.jsonl").read_text().splitlines()]
        test_spk = {d["key"].split("-")[1] for d in test}
        assert test_spk == {f"spk{2 * (k - 1)}", f"spk{2 * (k - 1) + 1}"}
        assert not test_spk & {d["key"].split("-")[1] for d in train} and len(train) + len(test) == 36


@pytest.mark.slow
def test_demo_command_end_to_end(tmp_path, run_cli):
    """The table, its reading, the results folder and the next command on stdout; progress on stderr. About 40 s
    on 2 quiet cores (docs/BENCHMARKS.md, demo)."""
    p = run_cli("demo", "--out", tmp_path / "d", timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    rows = {line.split("|")[1].strip(): line for line in p.stdout.splitlines() if line.startswith("| ")}
    assert {"Baseline", "DINO", "Same epochs", "Full labeled", "B-GRPO"} <= set(rows), p.stdout
    f1 = {k: float(v.split("|")[2].split("±")[0]) for k, v in rows.items() if k not in ("method", "---")}
    assert f1["Full labeled"] > 100 / 6 + 10, f1  # well above chance on six balanced classes
    assert rows["B-GRPO"].strip() in (tmp_path / "d" / "table.md").read_text()
    assert f"at {f1['Same epochs']:.1f} macro-F1" in p.stdout and f"ends at {f1['B-GRPO']:.1f}" in p.stdout
    results = (tmp_path / "d" / "results").resolve()
    assert f"Results: {results}" in p.stdout and f"trainer table {results} --compare same-epochs" in p.stdout
    assert "| B-GRPO" not in p.stderr and "fbank-stats: 576 utterances extracted" in p.stderr
    assert len(list(results.rglob("results.json"))) == 5
    assert len(list(results.rglob("confusion.png"))) == 5 and len(list(results.rglob("learning_curve.pdf"))) == 5


@pytest.mark.slow
def test_demo_routes_table_and_reading_apart_from_progress(tmp_path):
    """run_demo on a small corpus (1 utterance per speaker and emotion, one seed): table, reading, folder and next
    command through ``show``; progress through ``echo``; figures per method."""
    from trainer.demo import run_demo

    shown, progress = [], []
    table = run_demo(tmp_path / "d", progress=False, per_class=1, seeds=(0,), echo=progress.append,
                     show=shown.append)
    text = "\n".join(shown)
    assert text.startswith(table) and "Reading: Same epochs" in text and "Next:" in text
    assert any(s.startswith("baseline: 3 rows in") for s in progress) and not any("Reading" in s for s in progress)
    results = (tmp_path / "d" / "results").resolve()
    assert f"Results: {results}" in text
    assert len(list(results.rglob("learning_curve.png"))) == 5 and not list(results.rglob("diagnostics.png"))


def _rows(f1: dict[str, list[float]], collapsed: int = 0) -> "pd.DataFrame":
    import pandas as pd

    rows = []
    for method, vals in f1.items():
        for i, v in enumerate(vals):
            rows.append({"stage": "final", "method": method, "fold": 1 + i // 3, "seed": i % 3, "macro_f1": v / 100,
                         "collapsed": method == "b-grpo" and i < collapsed, "under_trained": False})
    return pd.DataFrame(rows)


def test_reading_is_phrased_from_the_numbers():
    from trainer.demo import reading

    base = {"baseline": [50, 52, 54, 50, 52, 54], "same-epochs": [60, 61, 62, 60, 61, 62],
            "full-labeled": [70] * 6, "dino": [49] * 6}
    low = reading(_rows({**base, "b-grpo": [40, 41, 42, 40, 41, 42]}, collapsed=2))
    assert "is the bar B-GRPO must clear, at 61.0 macro-F1" in low and "ends at 41.0" in low
    assert "-20.0 points [-20.0, -20.0] (below Same epochs, 6 paired runs)" in low
    assert "flags 2 of B-GRPO's 6 runs (⚠2/6 in the table)" in low
    high = reading(_rows({**base, "b-grpo": [62, 63, 64, 62, 63, 64]}))
    assert "+2.0 points [+2.0, +2.0] (above Same epochs" in high and "None of B-GRPO's 6 runs is flagged" in high
