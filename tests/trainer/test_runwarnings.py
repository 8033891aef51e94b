"""trainer/runwarnings.py: library warnings counted once per run, the trainer's own shown once each."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

import trainer.experiment
from tests.trainer.test_trainer_cli import sh
from trainer.runwarnings import origin, run_warnings

SKLEARN_TEXT = "y_pred contains classes not in y_true"


def test_library_warnings_become_one_counted_line_own_ones_show_once():
    shown = []
    with run_warnings(shown.append) as tally:
        for _ in range(5):
            balanced_accuracy_score([0, 0, 1], [0, 2, 1])  # scikit-learn warns each call
        own = Path(trainer.experiment.__file__)
        for _ in range(3):
            warnings.warn_explicit("a trainer message", UserWarning, str(own), 1)
        warnings.warn_explicit("another one", UserWarning, str(own), 2)
        assert shown == ["a trainer message", "another one"]  # own: at once, each distinct message once
    assert len(shown) == 3 and SKLEARN_TEXT in shown[2]
    assert "UserWarning from sklearn; 5 times in this run" in shown[2]
    assert tally.own["a trainer message"] == 3


def test_summary_is_shown_when_the_block_raises():
    shown = []
    try:
        with run_warnings(shown.append):
            balanced_accuracy_score([0, 0], [0, 1])
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert len(shown) == 1 and "1 time in this run" in shown[0]


def test_origin_names_the_package():
    assert origin("/x/lib/python3.11/site-packages/sklearn/metrics/_classification.py") == "sklearn"
    assert origin("/x/lib/python3/dist-packages/torch/nn/modules/module.py") == "torch"
    assert origin("/somewhere/script.py") == "script"


@pytest.mark.slow
def test_cli_run_prints_the_sklearn_warning_once_with_its_count(tmp_path):
    """A fold whose test rows lack a class: every run's scoring warns; the console gets one line."""
    from emocache.store import write_arrays

    rng = np.random.default_rng(0)
    labels = {"neu": "Neutral", "hap": "Happy", "ang": "Angry", "sad": "Sad"}
    n = 120
    raw = [list(labels)[i % 4] for i in range(n)]
    keys = [f"w-u{i:03d}" for i in range(n)]
    X = rng.normal(0, 1, (n, 8)).astype(np.float32)
    store, man = tmp_path / "store", tmp_path / "man"
    write_arrays(str(store), "m", "w", keys, raw, X)
    root = man / "w"
    (root / "fold_1").mkdir(parents=True)
    (root / "label_map.json").write_text(json.dumps(labels))
    test = [i for i in range(n) if i >= 60 and raw[i] != "sad"]  # no Sad in the test rows
    for split, rows in (("train", [i for i in range(60)]), ("test", test)):
        (root / "fold_1" / f"w_{split}_fold_1.jsonl").write_text(
            "".join(json.dumps({"key": keys[i], "emo": raw[i], "wav": "x.wav"}) + "\n" for i in rows))
    p = sh("run", "baseline", "--store", store, "--manifests", man, "--model", "m", "--dataset", "w",
           "--epochs-baseline", 1, "--lr", "1e-6", "--seeds", "0,1,2,3", "--out", tmp_path / "out", "--threads", 1,
           "--no-plots", "--no-progress")
    lines = [s for s in p.stderr.splitlines() if SKLEARN_TEXT in s]
    assert len(lines) == 1, p.stderr
    assert "times in this run" in lines[0], p.stderr
