"""Store -> tensors: folds, label mapping and drop counts, teacher joins, bad input."""

import json
from pathlib import Path

import numpy as np
import pytest

from emocache.store import write_arrays
from trainer import experiment
from trainer.config import TrainConfig
from trainer.data import DataError, fold_rows, load_features, map_labels, open_store, split_labeled
from trainer.synthetic import write_folds
from tests.trainer.conftest import LABELS


def test_six_class_mapping_drops_and_counts(synth):
    labs = map_labels(synth["labels"], LABELS, "six")
    assert labs.classes == ("Neutral", "Angry", "Sad", "Happy")
    n_dis = synth["labels"].count("dis")
    assert n_dis > 0 and labs.dropped == {"dis": n_dis}
    assert (labs.y == -1).sum() == n_dis
    emobox = map_labels(synth["labels"], LABELS, "emobox")
    assert "Disgust" in emobox.classes and (emobox.y >= 0).all()


def test_label_lookup_is_case_insensitive_and_unknown_is_an_error():
    labs = map_labels(["neutral", "anger"], {"Neutral": "Neutral", "anger": "Angry"}, "six")
    assert labs.y.tolist() == [0, 1]
    with pytest.raises(DataError, match="not in label_map"):
        map_labels(["neutral", "boredom"], {"neutral": "Neutral", "anger": "Angry"}, "emobox")


def test_folds_map_keys_and_count_dropped_rows(synth):
    store = open_store(synth["store"])
    f = load_features(store, "m", "ds")
    labs = map_labels(f.raw_labels, LABELS, "six")
    folds = fold_rows(f.keys, labs.y, synth["manifests"], "ds")
    assert [x.k for x in folds] == [1, 2]
    for x in folds:
        assert not set(x.train) & set(x.test)
        assert (labs.y[x.train] >= 0).all() and (labs.y[x.test] >= 0).all()
    assert sum(len(x.test) + sum(labs.y[x.test] < 0) for x in folds) == 240 - synth["labels"].count("dis")
    total_dropped = sum(x.n_dropped for x in folds)  # every row is in one test and one train split
    assert total_dropped == 2 * synth["labels"].count("dis")
    assert len(fold_rows(f.keys, labs.y, synth["manifests"], "ds", fold="2")) == 1
    with pytest.raises(DataError, match="has folds"):
        fold_rows(f.keys, labs.y, synth["manifests"], "ds", fold="7")


def test_split_labeled_is_stratified_and_seeded():
    y = np.array([0] * 10 + [1] * 6)
    train = np.arange(16)
    lab, unl = split_labeled(train, y, 0.5, seed=3)
    assert (y[lab] == 0).sum() == 5 and (y[lab] == 1).sum() == 3
    assert sorted(np.concatenate([lab, unl]).tolist()) == list(range(16))
    assert np.array_equal(split_labeled(train, y, 0.5, seed=3)[0], lab)
    assert not np.array_equal(split_labeled(train, y, 0.5, seed=4)[0], lab)


def test_missing_entry_names_the_options(synth):
    store = open_store(synth["store"])
    with pytest.raises(DataError, match="--model nope --dataset ds.*entries: m/ds"):
        load_features(store, "nope", "ds")
    with pytest.raises(DataError, match="--store"):
        open_store(str(synth["root"] / "not-a-store"))


def _entry(tmp_path, X, keys, labels, model="m", dataset="ds", **kw):
    store = str(tmp_path / "store")
    write_arrays(store, model, dataset, keys, labels, X, **kw)
    return store


def _run_baseline(store, man, warns):
    """One-epoch baseline run of entry m/ds over the folds in ``man``, expecting a UserWarning matching ``warns``."""
    cfg = TrainConfig(method="baseline", store=store, manifests=str(man), model="m", dataset="ds",
                      epochs_baseline=1, epochs_stage2=1, plots=False, threads=1)
    with pytest.warns(UserWarning, match=warns):
        return experiment.run(cfg)


def _two_class(n):
    """n keys k0..k{n-1}, alternating neu/ang labels, [n, 4] float32 normal features (seed 0)."""
    keys = [f"k{i}" for i in range(n)]
    return keys, ["neu", "ang"] * (n // 2), np.random.default_rng(0).normal(size=(n, 4)).astype(np.float32)


def test_nan_features_error_or_drop_with_count(tmp_path):
    keys, labels, X = _two_class(40)
    X[3, 1] = np.nan
    X[7, 0] = np.inf
    store = _entry(tmp_path, X, keys, labels, allow_nonfinite=True)  # readers refuse NaN/inf unless the entry allows it
    man = tmp_path / "man"
    write_folds(man, "ds", keys, labels, 2, {"neu": "Neutral", "ang": "Angry"})
    kw = dict(store=store, manifests=str(man), model="m", dataset="ds", epochs_baseline=1, epochs_stage2=1,
              plots=False, threads=1)
    with pytest.raises(DataError, match="2 of 40 utterances have NaN/inf.*k3, k7"):
        experiment.prepare(TrainConfig(method="baseline", **kw))
    res = experiment.run(TrainConfig(method="baseline", nonfinite="drop", **kw))
    assert sum(r["n_dropped"] for r in res.rows) == 4  # each dropped key sits in one train and one test split
    assert sum(r["n_test"] for r in res.rows) == 38
    assert all(np.isfinite(r["macro_f1"]) for r in res.rows)


def test_teacher_join_by_key_and_missing_keys(synth, tmp_path, base_kw):
    cfg = TrainConfig(method="b-grpo", reward="r3", teacher="t", **base_kw)
    data = experiment.prepare(cfg)
    store = open_store(synth["store"])
    tk, tX = store.pooled("t", "ds")
    row = {k: i for i, k in enumerate(tk)}
    i = int(data.labeled[0][5])
    assert np.allclose(data.Xt[i].numpy(), tX[row[synth["keys"][i]]])

    # a teacher entry lacking keys, stored in another order
    sub = str(tmp_path / "store2")
    pk, pX = store.pooled("m", "ds")
    write_arrays(sub, "m", "ds", pk, store.labels("m", "ds"), pX)
    keep = list(range(len(tk)))[::-1][:-10]
    write_arrays(sub, "t", "ds", [tk[j] for j in keep], [store.labels("t", "ds")[j] for j in keep], tX[keep])
    kw = {**base_kw, "store": sub}
    with pytest.raises(DataError, match=r"lacks \d+ of \d+ utterances.*--missing-teacher drop"):
        experiment.prepare(TrainConfig(method="b-grpo", reward="r4", teacher="t", **kw))
    data2 = experiment.prepare(TrainConfig(method="b-grpo", reward="r4", teacher="t", missing_teacher="drop", **kw))
    n_missing_needed = sum(data.runs[r]["n_dropped"] for r in range(len(data.runs)))
    dropped = sum(data2.runs[r]["n_dropped"] for r in range(len(data2.runs))) - n_missing_needed
    # each missing key with a kept label is in exactly one run's labelled or unlabelled pool (2 folds x 1 seed)
    assert dropped == sum(store.labels("t", "ds")[j] != "dis" for j in range(10)) > 0
    j = int(data2.labeled[0][0])
    assert np.allclose(data2.Xt[j].numpy(), tX[row[pk[j]]])


def test_fold_missing_a_class_is_recorded(tmp_path):
    keys = [f"k{i}" for i in range(60)]
    labels = ["neu", "ang", "sad"] * 20
    X = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    store = _entry(tmp_path, X, keys, labels)
    man = tmp_path / "man"
    lm = {"neu": "Neutral", "ang": "Angry", "sad": "Sad"}
    write_folds(man, "ds", keys, labels, 2, lm)
    # remove every 'sad' line from fold 1's test split
    p = Path(man) / "ds" / "fold_1" / "ds_test_fold_1.jsonl"
    p.write_text("".join(line for line in p.read_text().splitlines(True) if json.loads(line)["emo"] != "sad"))
    res = _run_baseline(store, man, warns="classes missing")
    row = next(r for r in res.rows if r["fold"] == 1)
    assert row["missing_test_classes"] == "Sad"
    assert row["n_missing"] == 0 and 0 <= row["macro_f1"] <= 1


def test_manifest_key_absent_from_store_is_counted(tmp_path):
    keys, labels, X = _two_class(30)
    store = _entry(tmp_path, X[:27], keys[:27], labels[:27])
    man = tmp_path / "man"
    write_folds(man, "ds", keys, labels, 2, {"neu": "Neutral", "ang": "Angry"})
    res = _run_baseline(store, man, warns="no features in the store")
    assert sum(r["n_missing"] for r in res.rows) == 6  # 3 keys, each in one train and one test split
