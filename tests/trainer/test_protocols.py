"""--protocol converged (ours): every stage stops on its validation macro-F1, restores its best weights, reads no
test label and gives a run the numbers it has alone; --protocol paper (the default) keeps every run name."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from tests.trainer.test_trainer_cli import run_dir, sh
from trainer import experiment
from trainer.config import TrainConfig
from trainer.protocols import PROTOCOLS

FAST = dict(protocol="converged", converge_patience=3, converge_max_epochs=300, lr=1e-2)


def _expected_stop(val: list[float], patience: int, max_epochs: int) -> tuple[int, int]:
    """(stop epoch, best epoch) of one stage by hand: the run stops once `patience` epochs passed without a
    strict improvement; its best is the last epoch up to then with the best score (ties: later)."""
    best, improved, chosen = -1.0, 0, 0
    for e, v in enumerate(val, start=1):
        if v > best:
            best, improved = v, e
        if v >= best:
            chosen = e
        if e - improved >= patience or e == max_epochs:
            return e, chosen
    raise AssertionError("the stage ended before its stop rule held")


def test_converged_stops_each_run_on_its_validation_score(base_kw):
    cfg = TrainConfig(method="baseline", seeds=(0, 1, 2), **{**base_kw, **FAST, "dataset": "hard", "lr": 3e-3})
    res = experiment.run(cfg)
    curves = pd.DataFrame(res.curves)
    for row in res.rows:
        c = curves[(curves.fold == row["fold"]) & (curves.seed == row["seed"])]
        trained = c[c.loss.notna()]
        stop, best = _expected_stop(list(trained.val_macro_f1), 3, 300)
        assert row["epochs"] == stop == len(trained) < 300
        assert row["selected_epoch"] == best and row["select"] == "val" and row["n_val"] > 0
        # the stage ended with the best-validation weights restored: the reported model is that epoch's
        assert row["last_macro_f1"] == row["macro_f1"]
        assert not row["under_trained"]  # stopped on validation, not judged by the training loss
    assert curves.groupby(["fold", "seed"]).loss.apply(lambda x: x.notna().sum()).nunique() > 1  # own stops


def test_stage2_starts_from_the_restored_stage1_model(base_kw):
    res = experiment.run(TrainConfig(method="pseudo-label", seeds=(0,), **{**base_kw, **FAST}))
    curves = pd.DataFrame(res.curves)
    for row in (r for r in res.rows if r["stage"] == "stage1"):
        c = curves[(curves.fold == row["fold"]) & (curves.seed == row["seed"]) & (curves.stage == "supervised")]
        at_best = c[c.epoch == row["selected_epoch"]].iloc[0]
        first2 = curves[(curves.fold == row["fold"]) & (curves.seed == row["seed"]) & (curves.stage == "pseudo-label")]
        assert row["macro_f1"] == row["last_macro_f1"]
        # stage 2's collapse reference is the restored model: its pool shares are the best epoch's
        assert first2.pool_agreement_stage1.notna().all()
        assert at_best.val_macro_f1 == c.val_macro_f1.max()


def test_converged_reads_no_test_label(base_kw):
    cfg = TrainConfig(method="same-epochs", seeds=(0, 1), fold="1", **{**base_kw, **FAST, "dataset": "hard"})
    data = experiment.prepare(cfg)
    clean = experiment.run(cfg, data)
    test_rows = torch.as_tensor(np.concatenate(data.test))
    data.y = data.y.clone()
    data.y[test_rows] = (data.y[test_rows] + 1) % len(data.classes)
    poisoned = experiment.run(cfg, data)
    for a, b in zip(clean.rows, poisoned.rows):
        assert (a["epochs"], a["selected_epoch"], a["val_macro_f1"]) == (b["epochs"], b["selected_epoch"],
                                                                        b["val_macro_f1"])
    assert [r["macro_f1"] for r in clean.rows] != [r["macro_f1"] for r in poisoned.rows]


@pytest.mark.parametrize("method", ["pseudo-label", "dino"])
def test_a_converged_run_does_not_depend_on_its_stack(base_kw, method):
    kw = {**base_kw, **FAST, "dataset": "hard", "lr": 3e-3}
    together = experiment.run(TrainConfig(method=method, seeds=(0, 1), **kw))
    alone = experiment.run(TrainConfig(method=method, seeds=(1,), fold="2", **kw))
    stage1 = [r["epochs"] for r in together.rows if r["stage"] == "stage1"]
    assert len(set(stage1)) > 1  # the runs stop stage 1 at different epochs, yet each keeps its own numbers
    want = [r for r in together.rows if (r["fold"], r["seed"]) == (2, 1)]
    for a, b in zip(want, alone.rows):
        assert (a["stage"], a["epochs"], a["selected_epoch"]) == (b["stage"], b["epochs"], b["selected_epoch"])
        assert a["macro_f1"] == pytest.approx(b["macro_f1"], abs=1e-9)


def test_protocol_settings_are_checked():
    assert tuple(PROTOCOLS)[0] == "paper" and TrainConfig().protocol == "paper"
    with pytest.raises(ValueError, match="--converge-patience apply with --protocol converged"):
        TrainConfig(method="baseline", converge_patience=5)
    with pytest.raises(ValueError, match="--protocol converged: `trainer run reference`"):
        TrainConfig(method="reference", protocol="converged")
    with pytest.raises(ValueError, match="--protocol"):
        TrainConfig(method="baseline", protocol="forever")
    with pytest.raises(ValueError, match="--eval-every 5"):
        TrainConfig(method="baseline", protocol="converged", eval_every=5)


def test_the_paper_protocol_keeps_every_setting_and_name():
    paper, conv = TrainConfig(method="dino"), TrainConfig(method="dino", protocol="converged")
    assert not {"protocol", "converge_patience", "converge_max_epochs"} & set(paper.settings())
    assert not {"protocol", "converge_patience", "converge_max_epochs"} & set(paper.to_dict())
    assert conv.settings()["protocol"] == "converged" and conv.config_hash != paper.config_hash
    assert conv.readable_name == "dino___six_val0.2_protocol-converged" and conv.has_val and conv.selects_val
    assert conv.val_rows_fraction == 0.2 and conv.replace(val_fraction=0.3).val_rows_fraction == 0.3


@pytest.mark.slow
def test_cli_runs_the_converged_protocol(synth, tmp_path):
    sh("run", "same-epochs", "--store", synth["store"], "--manifests", synth["manifests"], "--model", "m",
       "--dataset", "ds", "--seeds", "0", "--out", tmp_path, "--threads", 1, "--lr", "1e-2", "--protocol",
       "converged", "--converge-patience", 3, "--no-plots", "--no-progress")
    d = run_dir(tmp_path, "same-epochs_m_ds_six_val0.2_protocol-converged")
    df = pd.read_csv(d / "results.csv")
    curves = pd.read_csv(d / "curves.csv")
    assert set(curves.stage) == {"supervised", "continued"} and (df["select"] == "val").all()
    assert df.epochs.between(4, 2000).all() and not math.isnan(df.val_macro_f1.iloc[0])
