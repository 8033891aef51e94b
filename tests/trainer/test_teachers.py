"""The teacher of r3-r5: `trainer run teacher` with RRPO's regularisers, --save-teacher / --teacher-from, and the
teacher-agreement columns of teacher-rewarded rows."""

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file

from tests.trainer.conftest import LABELS
from tests.trainer.test_trainer_cli import run_dir, sh
from trainer import experiment as exp
from trainer.config import TrainConfig
from trainer.data import DataError
from trainer.synthetic import make_dataset
from trainer.teachers import teacher_agreement_columns


@pytest.fixture(scope="module")
def tstore(tmp_path_factory):
    """Policy 'm', teacher 'tf' whose pooled vectors are the mean of its frames, and 'eg' whose 3-dim frames are
    not its 8-dim pooled vectors (as egemaps)."""
    from emocache.store import write_arrays

    root = tmp_path_factory.mktemp("teachers")
    store, man = str(root / "store"), str(root / "manifests")
    d = make_dataset(store, man, "m", "ds", n=120, dim=12, n_folds=2, seed=1, label_map=LABELS, separation=1.5)
    t = make_dataset(store, man, "t", "ds", n=120, dim=8, seed=1, label_map=LABELS, separation=1.5, keys=d["keys"],
                     write_manifests=False, feature_seed=7)
    rng = np.random.default_rng(0)
    frames = []
    for x in t["X"]:
        e = rng.normal(0, 0.5, (int(rng.integers(4, 12)), 8))
        frames.append((x + e - e.mean(0)).astype(np.float32))
    write_arrays(store, "tf", "ds", d["keys"], d["labels"], np.stack([f.mean(0) for f in frames]), frames=frames)
    write_arrays(store, "eg", "ds", d["keys"], d["labels"], t["X"], frames=[f[:, :3] for f in frames],
                 provenance={"pooling": "functionals", "frame_dim": 3})
    common = ["--store", store, "--manifests", man, "--dataset", "ds", "--epochs-baseline", 4, "--epochs-stage2", 2,
              "--lr", "1e-3", "--threads", 1, "--no-plots", "--seeds", "0,1"]
    return {"store": store, "manifests": man, "root": root, "common": common}


def test_teacher_agreement_columns_by_hand():
    y = {"val": np.array([0, 1, 1, 2]), "test": np.array([0, 0, 1])}
    teacher = {"val": np.array([0, 1, 2, 2]), "test": np.array([1, 0, 1]), "pool": np.array([0, 1, 2, 0])}
    policy = {"val": np.array([0, 2, 2, 2]), "test": np.array([1, 1, 1]), "pool": np.array([0, 1, 1, 1])}
    got = teacher_agreement_columns(y, teacher, policy)
    assert got["teacher_val_acc"] == 0.75 and got["policy_val_acc"] == 0.5
    assert got["teacher_agreement_val"] == 0.75
    assert got["teacher_error_agreement_val"] == 1.0  # the teacher's one val error (row 2: 2 for 1), copied
    assert got["teacher_test_acc"] == pytest.approx(2 / 3) and got["policy_test_acc"] == pytest.approx(1 / 3)
    assert got["teacher_agreement_test"] == pytest.approx(2 / 3)
    assert got["teacher_error_agreement_test"] == 1.0  # its test error (row 0: 1 for 0), copied
    assert got["teacher_agreement_pool"] == 0.5
    # teacher test macro-F1: class 0 F1 2/3 (tp 1, support 2, predicted 1), class 1 F1 2/3 (tp 1, 1, 2)
    assert got["teacher_test_macro_f1"] == pytest.approx(2 / 3)
    empty = teacher_agreement_columns({"test": y["test"]}, teacher, policy)
    assert np.isnan(empty["teacher_val_acc"]) and np.isnan(empty["teacher_agreement_val"])
    perfect = teacher_agreement_columns({"test": y["test"]}, {"test": y["test"]}, {"test": y["test"]})
    assert np.isnan(perfect["teacher_error_agreement_test"])  # no teacher error to copy


@pytest.mark.slow
@pytest.mark.parametrize("reg", ["ls", "eam", "adv"])
def test_cli_run_teacher_with_each_regulariser(tstore, tmp_path, reg):
    p = sh("run", "teacher", "--teacher", "tf", "--regularize", reg, "--out", tmp_path, *tstore["common"])
    assert "final mean over 2 fold(s) x 2 seed(s)" in p.stdout
    df = pd.read_csv(run_dir(tmp_path, f"teacher_tf_ds_six_reg-{reg}") / "results.csv")
    assert len(df) == 4 and set(df.stage) == {"final"} and (df.epochs == 4).all()
    assert df.macro_f1.between(0, 1).all() and set(df.regularize) == {reg} and set(df.teacher) == {"tf"}


@pytest.mark.slow
def test_cli_eam_on_a_teacher_not_pooled_by_mean_is_a_clear_error(tstore, tmp_path):
    p = sh("run", "teacher", "--teacher", "eg", "--regularize", "ls,eam", "--out", tmp_path, *tstore["common"],
           ok=False)
    assert p.returncode == 2 and "3-dim frames but 8-dim pooled vectors" in p.stderr and "ls,adv" in p.stderr


@pytest.mark.slow
def test_cli_teacher_from_gives_the_teacher_and_results_of_training_it(tstore, tmp_path):
    reg = ["--teacher", "tf", "--regularize", "ls,eam,adv"]
    sh("run", "teacher", *reg, "--out", tmp_path / "t", "--save-teacher", tmp_path / "A", *tstore["common"])
    bgrpo = ["b-grpo", "--model", "m", "--reward", "r3", *reg, *tstore["common"]]
    sh("run", *bgrpo, "--out", tmp_path / "inline", "--save-teacher", tmp_path / "B")
    a, b = load_file(str(tmp_path / "A" / "teacher.safetensors")), load_file(str(tmp_path / "B" / "teacher.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)  # the teacher method trains b-grpo's teacher
    sh("run", *bgrpo, "--out", tmp_path / "from", "--teacher-from", tmp_path / "A")
    name = "b-grpo_m_ds_six_r3_positive_tf_reg-ls+eam+adv"
    inline = pd.read_csv(run_dir(tmp_path / "inline", name) / "results.csv")
    loaded = pd.read_csv(run_dir(tmp_path / "from", name) / "results.csv")
    cols = ["macro_f1", "teacher_test_acc", "teacher_test_macro_f1", "teacher_agreement_test",
            "teacher_agreement_pool", "config_hash"]
    pd.testing.assert_frame_equal(inline[cols], loaded[cols])
    assert inline[cols[1:-1]].notna().all().all()


def test_teacher_from_refuses_another_teachers_settings_or_rows(tstore, tmp_path):
    kw = dict(store=tstore["store"], manifests=tstore["manifests"], dataset="ds", epochs_baseline=2, epochs_stage2=1,
              lr=1e-3, plots=False, progress=False, threads=1, teacher="tf", regularize="ls")
    exp.run(TrainConfig(method="teacher", out=str(tmp_path / "o"), save_teacher=str(tmp_path / "T"), **kw))
    bgrpo = dict(kw, method="b-grpo", model="m", reward="r4", out=str(tmp_path / "o2"), teacher_from=str(tmp_path / "T"))
    exp.run(TrainConfig(**bgrpo))  # same teacher: accepted
    with pytest.raises(DataError, match=r"other teacher settings: ls_epsilon 0.1 \(this run: 0.2\)"):
        exp.run(TrainConfig(**{**bgrpo, "ls_epsilon": 0.2}))
    with pytest.raises(DataError, match="fingerprint differs"):
        exp.run(TrainConfig(**{**bgrpo, "labeled_fraction": 0.6}))
    with pytest.raises(DataError, match="no teacher for fold 1 seed 3"):
        exp.run(TrainConfig(**{**bgrpo, "seeds": (3,)}))


@pytest.mark.parametrize("method", ["b-grpo", "grpo"])
def test_teacher_agreement_columns_in_teacher_rewarded_rows_use_the_validation_split(tstore, tmp_path, method):
    kw = dict(store=tstore["store"], manifests=tstore["manifests"], dataset="ds", epochs_baseline=2, epochs_stage2=1,
              lr=1e-3, plots=False, progress=False, threads=1, method=method, model="m", reward="r3",
              teacher="tf", val_fraction=0.3, out=str(tmp_path))
    rows = pd.DataFrame(exp.run(TrainConfig(**kw)).rows)
    for stage in ("stage1", "final"):
        r = rows[rows.stage == stage]
        assert r.teacher_val_acc.between(0, 1).all() and r.teacher_agreement_val.between(0, 1).all()
        assert r.policy_val_acc.between(0, 1).all()
    # the teacher is one model: its columns are equal in the stage1 and final rows
    assert (rows[rows.stage == "stage1"].teacher_val_acc.values == rows[rows.stage == "final"].teacher_val_acc.values).all()
    plain = pd.DataFrame(exp.run(TrainConfig(**{**kw, "reward": "r1", "out": str(tmp_path / "r1")})).rows)
    assert "teacher_val_acc" not in plain


def test_config_checks_the_teacher_options():
    with pytest.raises(ValueError, match="subset of ls,eam,adv"):
        TrainConfig(method="teacher", teacher="t", regularize="ls,mixup")
    with pytest.raises(ValueError, match="give --teacher MODEL"):
        TrainConfig(method="teacher")
    with pytest.raises(ValueError, match="concern the teacher of r3-r5"):
        TrainConfig(method="b-grpo", reward="r1", regularize="ls")
    assert TrainConfig(method="teacher", teacher="t", regularize="adv, ls").regularizers == ("ls", "adv")
    a = TrainConfig(method="b-grpo", reward="r3", teacher="t", save_teacher="x", teacher_from="y")
    assert a.config_hash == TrainConfig(method="b-grpo", reward="r3", teacher="t").config_hash


def test_robust_teachers_spec_parses(monkeypatch):
    from pathlib import Path

    from trainer.pipeline import cells, load_spec

    for var in ("URDU_STORE", "EMOBOX", "DEMO_STORE", "DEMO_ROOT", "ROBUST_OUT"):
        monkeypatch.setenv(var, var.lower())
    spec = Path(__file__).resolve().parents[2] / "pipelines" / "robust_teachers.toml"
    got = cells(load_spec(spec))
    assert len(got) == 42 and {c.dataset for c in got} == {"urdu", "demo"} and {c.seeds for c in got} == {(0, 1, 2, 3, 4)}
    for method, reward in (("b-grpo", "r3"), ("grpo", "eswr"), ("teacher", "r1")):
        for ds in ("urdu", "demo"):
            assert sorted(c.regularize for c in got if (c.method, c.dataset, c.teacher) == (method, ds, "fbank-stats")
                          and c.to_dict()["reward"] == reward) == ["", "ls", "ls,eam", "ls,eam,adv"]
    assert all("eam" not in c.regularizers for c in got if c.teacher == "egemaps")
