"""Whole runs in-process: every method, stacking independence, determinism, outputs."""

import json

import pytest

from trainer import experiment
from trainer.config import TrainConfig

COLUMNS = {"method", "model", "dataset", "fold", "seed", "reward", "teacher", "advantage", "labels",
           "unlabeled_from", "macro_f1", "ua", "wa", "n_train_labeled", "n_unlabeled", "n_test", "n_dropped",
           "seconds", "stage"}


@pytest.mark.parametrize("method", list(experiment.METHODS))
def test_each_method_gives_rows_per_fold_and_seed(base_kw, method):
    res = experiment.run(TrainConfig(method=method, seeds=(0, 1), **base_kw))
    final = [r for r in res.rows if r["stage"] == "final"]
    assert len(final) == 4 and {(r["fold"], r["seed"]) for r in final} == {(1, 0), (1, 1), (2, 0), (2, 1)}
    assert COLUMNS <= set(final[0])
    for r in final:
        assert 0 <= r["macro_f1"] <= 1 and 0 <= r["ua"] <= 1 and 0 <= r["wa"] <= 1
        n_train = r["n_train_labeled"]
        if method == "full-labeled":
            assert r["n_unlabeled"] == 0 and 80 < n_train < 120
        else:
            assert 35 < n_train < 60
        if method in ("dino", "b-grpo"):
            assert abs(r["n_unlabeled"] - n_train) <= 4
    epochs = base_kw["epochs_baseline"] + (0 if method == "baseline" else base_kw["epochs_stage2"])
    assert max(c["epoch"] for c in res.curves) == epochs


def test_unknown_method_lists_known():
    with pytest.raises(ValueError, match="known: baseline, same-epochs, full-labeled, dino, b-grpo"):
        experiment.get_method("ppo")


def test_a_run_does_not_depend_on_its_stack_neighbours(base_kw):
    together = experiment.run(TrainConfig(method="b-grpo", seeds=(0, 1), **base_kw))
    alone = experiment.run(TrainConfig(method="b-grpo", seeds=(1,), fold="2", **base_kw))
    want = next(r for r in together.rows if (r["fold"], r["seed"], r["stage"]) == (2, 1, "final"))
    got = next(r for r in alone.rows if r["stage"] == "final")
    assert got["macro_f1"] == pytest.approx(want["macro_f1"]) and got["wa"] == pytest.approx(want["wa"])


def test_deterministic(base_kw):
    a = experiment.run(TrainConfig(method="dino", **base_kw))
    b = experiment.run(TrainConfig(method="dino", **base_kw))
    assert [r["macro_f1"] for r in a.rows] == [r["macro_f1"] for r in b.rows]
    assert [c["loss"] for c in a.curves] == [c["loss"] for c in b.curves]


def test_bgrpo_r1_raises_confidence_on_the_unlabelled_pool(base_kw):
    cfg = TrainConfig(method="b-grpo", **{**base_kw, "epochs_stage2": 8, "lr": 3e-3})
    res = experiment.run(cfg)
    curve = [c for c in res.curves if c["stage"] == "b-grpo" and c["fold"] == 1]
    assert curve[-1]["confidence"] > curve[0]["confidence"]
    assert all(0 <= c["reward"] <= 1 for c in curve)


@pytest.mark.parametrize("reward", ["r3", "r5"])
def test_teacher_rewards_run(base_kw, reward):
    res = experiment.run(TrainConfig(method="b-grpo", reward=reward, teacher="t", **base_kw))
    assert {r["teacher"] for r in res.rows} == {"t"} and {r["reward"] for r in res.rows} == {reward}


def test_teacher_reward_without_teacher_is_an_error(base_kw):
    with pytest.raises(ValueError, match="--teacher"):
        TrainConfig(method="b-grpo", reward="r4", **base_kw)


def test_unlabeled_from_another_corpus_and_full_labels(base_kw):
    res = experiment.run(TrainConfig(method="b-grpo", unlabeled_from="ext", **base_kw))
    assert {r["n_unlabeled"] for r in res.rows} == {120} and {r["unlabeled_from"] for r in res.rows} == {"ext"}
    res = experiment.run(TrainConfig(method="b-grpo", labeled_fraction=1.0, **base_kw))
    assert all(r["n_unlabeled"] == r["n_train_labeled"] for r in res.rows)


def test_write_results_with_config_curves_and_plots(base_kw, tmp_path):
    cfg = TrainConfig(method="b-grpo", **{**base_kw, "plots": True, "out": str(tmp_path)})
    d = experiment.write(experiment.run(cfg))
    assert {p.name for p in d.iterdir()} >= {"results.csv", "results.json", "curves.csv", "curves.png",
                                             "confusion.png"}
    meta = json.loads((d / "results.json").read_text())
    assert meta["config"]["method"] == "b-grpo" and meta["config"]["beta"] == 0.04
    assert len(meta["rows"]) == 4 and "m/ds" in meta["provenance"]
    assert (d / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_bgrpo_warns_when_no_reward_was_ever_paid(base_kw):
    with pytest.warns(UserWarning, match="got no reward in any batch"):
        res = experiment.run(TrainConfig(method="b-grpo", delta=1.0, seeds=(0,), **base_kw))  # max prob > 1 never holds
    final = [r["macro_f1"] for r in res.rows if r["stage"] == "final"]
    stage1 = [r["macro_f1"] for r in res.rows if r["stage"] == "stage1"]
    assert final == stage1
