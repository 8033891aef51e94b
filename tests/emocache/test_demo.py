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
    p = run_cli("demo", "--out", tmp_path / "d", "--no-progress", timeout=600)  # ~40 s on 2 quiet cores
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout + p.stderr
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert {"Baseline", "DINO", "Same epochs", "Full labeled", "B-GRPO"} <= set(rows), out
    f1 = {k: float(v.split("|")[2].split("±")[0]) for k, v in rows.items() if k not in ("method", "---")}
    assert f1["Full labeled"] > 100 / 6 + 10, f1  # well above chance on six balanced classes
    assert rows["B-GRPO"].strip() in (tmp_path / "d" / "table.md").read_text()
    assert len(list((tmp_path / "d" / "results").rglob("results.json"))) == 5
    assert list((tmp_path / "d" / "results").rglob("confusion.png"))
