"""Whole runs in-process: every method, stacking independence, determinism, outputs."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from emocache.store import write_arrays
from trainer import experiment
from trainer.config import METHODS, TrainConfig, get_method
from trainer.data import DataError

COLUMNS = {"method", "model", "dataset", "fold", "seed", "reward", "teacher", "advantage", "labels",
           "unlabeled_from", "macro_f1", "ua", "wa", "n_train_labeled", "n_unlabeled", "n_test", "n_dropped",
           "seconds", "stage"}


@pytest.mark.parametrize("method", [m for m in METHODS if m != "reference"])
def test_each_method_gives_rows_per_fold_and_seed(base_kw, method):
    extra = {"teacher": {"teacher": "t"}, "emobox": {"labeled_fraction": 1.0}}.get(method, {})
    res = experiment.run(TrainConfig(method=method, seeds=(0, 1), **base_kw, **extra))
    final = [r for r in res.rows if r["stage"] == "final"]
    assert len(final) == 4 and {(r["fold"], r["seed"]) for r in final} == {(1, 0), (1, 1), (2, 0), (2, 1)}
    assert COLUMNS <= set(final[0])
    for r in final:
        assert 0 <= r["macro_f1"] <= 1 and 0 <= r["ua"] <= 1 and 0 <= r["wa"] <= 1
        n_train = r["n_train_labeled"]
        if method in ("full-labeled", "emobox"):
            assert r["n_unlabeled"] == 0 and 80 < n_train < 120
        else:
            assert 35 < n_train < 60
        if method in ("dino", "b-grpo"):
            assert abs(r["n_unlabeled"] - n_train) <= 4
    one_stage = method in ("baseline", "teacher", "emobox")
    epochs = base_kw["epochs_baseline"] + (0 if one_stage else base_kw["epochs_stage2"])
    assert max(c["epoch"] for c in res.curves) == epochs


def test_unknown_method_lists_known():
    with pytest.raises(ValueError, match="unknown method 'ppo'; known: b-grpo, baseline, dino, emobox, fixmatch"):
        get_method("ppo")
    with pytest.raises(ValueError, match="known: .*pseudo-label, reference, same-epochs, teacher"):
        TrainConfig(method="ppo")


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


@pytest.mark.slow
def test_write_results_with_config_curves_and_plots(base_kw, tmp_path):
    cfg = TrainConfig(method="b-grpo", **{**base_kw, "plots": True, "out": str(tmp_path)})
    d = experiment.write(experiment.run(cfg))
    figures = {f"{f}.{x}" for f in ("learning_curve", "confusion", "diagnostics") for x in ("png", "pdf")}
    assert {p.name for p in d.iterdir()} >= {"results.csv", "results.json", "curves.csv"} | figures
    meta = json.loads((d / "results.json").read_text())
    assert meta["config"]["method"] == "b-grpo" and meta["config"]["beta"] == 0.04
    assert len(meta["rows"]) == 4 and "m/ds" in meta["provenance"]
    assert (d / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_bgrpo_warns_when_no_reward_was_ever_paid(base_kw):
    with pytest.warns(UserWarning, match="got no reward in any batch"):
        res = experiment.run(TrainConfig(method="b-grpo", delta=1.0, seeds=(0,), **base_kw))  # max prob > 1 never holds
    final = [r["macro_f1"] for r in res.rows if r["stage"] == "final"]
    stage1 = [r["macro_f1"] for r in res.rows if r["stage"] == "stage1"]
    assert final == stage1


@pytest.mark.parametrize("kw", [dict(method="dino", dino_views="noise"), dict(method="dino", model="mf"),
                                dict(method="b-grpo", action="sample")])
def test_views_and_sampled_actions_do_not_depend_on_stack_neighbours(base_kw, kw):
    together = experiment.run(TrainConfig(seeds=(0, 1), **{**base_kw, **kw}))
    alone = experiment.run(TrainConfig(seeds=(1,), fold="2", **{**base_kw, **kw}))
    want = [c["loss"] for c in together.curves if (c["fold"], c["seed"]) == (2, 1)]
    got = [c["loss"] for c in alone.curves]
    assert got == pytest.approx(want, rel=1e-5)


def test_each_seed_gets_its_own_frame_crops(base_kw):
    data = experiment.prepare(TrainConfig(method="dino", seeds=(0, 1), **{**base_kw, "model": "mf"}))
    assert data.crops.shape[0] == 2 and not torch.equal(data.crops[0], data.crops[1])
    assert data.crop_sets.tolist() == [0, 1, 0, 1]


def test_a_bgrpo_stage2_collapse_is_flagged_with_its_stage2_epoch(base_kw):
    # the signed advantage (Table 3's "w/o A_i > 0") collapses most runs of the overlapping 'hard' classes
    cfg = TrainConfig(method="b-grpo", seeds=(0, 1), advantage="signed",
                      **{**base_kw, "dataset": "hard", "epochs_baseline": 10, "epochs_stage2": 30, "lr": 1e-2})
    with pytest.warns(UserWarning, match=r"b-grpo hard fold \d seed \d: .* collapsed from epoch \d+"):
        res = experiment.run(cfg)
    final = [r for r in res.rows if r["stage"] == "final" and r["collapsed"]]
    assert len(final) >= 2 and all(10 < r["collapse_epoch"] <= 40 for r in final)  # located in stage 2
    assert not any(r["collapsed"] for r in res.rows if r["stage"] == "stage1")
    curve = [c for c in res.curves if (c["fold"], c["seed"]) == (final[0]["fold"], final[0]["seed"])]
    assert curve[-1]["pool_collapsed"] and "pool_collapsed" not in curve[9]  # stage 1 has no reference
    assert curve[-1]["pool_agreement_stage1"] < 1
    assert {"pool_entropy", "pool_max_share", "pool_confidence", "test_entropy", "pool_share_Neutral"} <= set(curve[0])


def test_an_under_trained_supervised_run_is_not_collapsed(base_kw):
    # one epoch at a tiny lr: the model predicts few classes (under-predicted), which is what it is, not a
    # collapse; a one-stage method has no stage 1 to compare with
    res = experiment.run(TrainConfig(method="baseline", seeds=(0, 1), **{**base_kw, "epochs_baseline": 1,
                                                                         "lr": 1e-6}))
    assert not any(r["collapsed"] for r in res.rows) and {r["collapse_epoch"] for r in res.rows} == {-1}
    assert any(r["under_predicted"] for r in res.rows)


def test_val_selection_never_reads_test_labels(base_kw):
    # one fold: its test rows are in no run's training or validation rows (with two folds they would be)
    cfg = TrainConfig(method="same-epochs", seeds=(0, 1, 2), val_fraction=0.25, select="val", fold="1",
                      **{**base_kw, "dataset": "hard", "epochs_baseline": 6, "epochs_stage2": 6, "lr": 1e-2})
    data = experiment.prepare(cfg)
    clean = experiment.run(cfg, data)
    test_rows = torch.as_tensor(np.concatenate(data.test))
    data.y = data.y.clone()
    data.y[test_rows] = (data.y[test_rows] + 1) % len(data.classes)  # every test label now wrong
    poisoned = experiment.run(cfg, data)
    for a, b in zip(clean.rows, poisoned.rows):
        assert a["selected_epoch"] == b["selected_epoch"] and a["val_macro_f1"] == b["val_macro_f1"]
        assert a["n_val"] > 0 and a["select"] == "val"
    assert [r["macro_f1"] for r in clean.rows] != [r["macro_f1"] for r in poisoned.rows]
    assert {r["selected_epoch"] for r in clean.rows} != {12}  # some run picked an earlier epoch


def test_val_rows_come_out_of_the_labelled_rows(base_kw):
    data = experiment.prepare(TrainConfig(method="baseline", val_fraction=0.2, **base_kw))
    plain = experiment.prepare(TrainConfig(method="baseline", **base_kw))
    for lab, val, lab0, test in zip(data.labeled, data.val, plain.labeled, data.test):
        assert set(lab.tolist()) | set(val.tolist()) == set(lab0.tolist())
        assert not set(val.tolist()) & set(lab.tolist()) and not set(val.tolist()) & set(test.tolist())
        assert 0.15 < len(val) / len(lab0) < 0.3


def test_select_val_without_a_validation_split_is_an_error(base_kw):
    with pytest.raises(ValueError, match="--select val needs a validation split"):
        TrainConfig(method="b-grpo", select="val", **base_kw)


def test_val_emobox_uses_the_folds_valid_manifest(synth, base_kw, tmp_path):
    import shutil

    man = tmp_path / "man"
    shutil.copytree(Path(synth["manifests"]) / "ds", man / "ds")
    with pytest.raises(DataError, match="no EmoBox .*valid"):
        experiment.prepare(TrainConfig(method="baseline", val="emobox", **{**base_kw, "manifests": str(man)}))
    for k in (1, 2):
        train = (man / "ds" / f"fold_{k}" / f"ds_train_fold_{k}.jsonl").read_text().splitlines()
        (man / "ds" / f"fold_{k}" / f"ds_train_fold_{k}.jsonl").write_text("\n".join(train[20:]) + "\n")
        (man / "ds" / f"fold_{k}" / f"ds_valid_fold_{k}.jsonl").write_text("\n".join(train[:20]) + "\n")
    res = experiment.run(TrainConfig(method="baseline", val="emobox", select="val",
                                     **{**base_kw, "manifests": str(man)}))
    assert all(0 < r["n_val"] <= 20 and r["select"] == "val" for r in res.rows)


def test_reference_rows_mlp_early_stopped_and_logistic_regression(base_kw):
    cfg = TrainConfig(method="reference", seeds=(0,), **{**base_kw, "reference_max_epochs": 400,
                                                         "reference_patience": 10})
    res = experiment.run(cfg)
    mlp = [r for r in res.rows if r["method"] == "reference"]
    lr = [r for r in res.rows if r["method"] == "reference-logreg"]
    assert len(mlp) == len(lr) == 2 and all(r["select"] == "val" and r["n_val"] > 0 for r in mlp)
    last_epoch = max(c["epoch"] for c in res.curves)
    assert last_epoch < 400  # stopped early: every run went 10 epochs without a better validation score
    assert all(r["selected_epoch"] <= last_epoch for r in mlp)
    assert all(r["macro_f1"] > 0.7 and r["train_macro_f1"] > 0.7 and r["train_loss"] > 0 for r in mlp + lr)
    plain = experiment.prepare(TrainConfig(method="baseline", **base_kw))
    assert [r["n_train_labeled"] + r["n_val"] for r in mlp] == [len(p) for p in plain.labeled]


def test_rows_carry_training_fit_and_the_under_trained_flag(base_kw):
    short = experiment.run(TrainConfig(method="baseline", **{**base_kw, "epochs_baseline": 30, "lr": 1e-4}))
    long = experiment.run(TrainConfig(method="baseline", **{**base_kw, "epochs_baseline": 200, "lr": 1e-2}))
    assert all(r["under_trained"] for r in short.rows) and not any(r["under_trained"] for r in long.rows)
    assert all(r["train_macro_f1"] > 0.9 and r["train_loss"] < 0.3 for r in long.rows)


def test_dino_frames_of_another_space_fall_back_to_noise_or_fail(synth, base_kw):
    import emocache

    store = emocache.open_store(synth["store"])
    keys, X = store.pooled("m", "ds")
    frames = [np.ones((4, 5), np.float32) * i for i in range(len(keys))]  # 5-dim frames, 16-dim pooled
    write_arrays(synth["store"], "mx", "ds", list(keys), store.labels("m", "ds"), np.asarray(X), frames=frames)
    res = experiment.run(TrainConfig(method="dino", **{**base_kw, "model": "mx"}))
    assert {r["views"] for r in res.rows} == {"noise"}
    with pytest.raises(DataError, match="5-dim frames but 16-dim pooled"):
        experiment.prepare(TrainConfig(method="dino", dino_views="frames", **{**base_kw, "model": "mx"}))


def test_unlabeled_from_itself_and_out_file_are_refused(base_kw, tmp_path):
    with pytest.raises(ValueError, match="names the trained dataset itself"):
        TrainConfig(method="b-grpo", unlabeled_from="ds", **base_kw)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(DataError, match="is a file"):
        experiment.run(TrainConfig(method="baseline", **{**base_kw, "out": str(f)}))


def test_an_external_pool_is_judged_against_the_stage1_models_predictions_on_it(base_kw):
    # delta 1: no reward is ever paid, so stage 2 leaves the model as stage 1 made it: nothing collapsed, whatever
    # the external pool's class shares are beside the trained corpus's labels
    with pytest.warns(UserWarning, match="got no reward"):
        res = experiment.run(TrainConfig(method="b-grpo", unlabeled_from="ext", delta=1.0, seeds=(0, 1), **base_kw))
    final = [r for r in res.rows if r["stage"] == "final"]
    assert not any(r["collapsed"] for r in final) and {r["pool_agreement_stage1"] for r in final} == {1.0}
    assert not any(r["under_predicted"] for r in res.rows)  # not judged on another corpus's pool
    assert all("pool_under_predicted" not in c for c in res.curves)
