"""Run folders unique per configuration, --overwrite, settings in every row, the --model default and the
feature-scale warning (trainer.experiment, trainer.config)."""

import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from tests.trainer.test_layers import kw, layered  # noqa: F401 (fixture)
from tests.trainer.test_trainer_cli import run_dir
from trainer import experiment
from trainer.config import HASH_EXCLUDED, SIX_CLASSES, TrainConfig


def trainer(*args):
    return subprocess.run([sys.executable, "-m", "trainer.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def common(synth, out, *extra):
    return ["run", "baseline", "--store", synth["store"], "--manifests", synth["manifests"], "--epochs-baseline", 2,
            "--threads", 1, "--no-plots", "--no-progress", "--out", out, *extra]


@pytest.mark.slow
def test_rerun_refuses_then_overwrite_rewrites(synth, tmp_path):
    args = common(synth, tmp_path, "--model", "m", "--dataset", "ds")
    assert trainer(*args).returncode == 0
    d = run_dir(tmp_path, "baseline_m_ds_six")
    before = (d / "results.csv").stat().st_mtime_ns
    p = trainer(*args)
    assert p.returncode == 2 and str(d) in p.stderr and "--overwrite" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and (d / "results.csv").stat().st_mtime_ns == before
    p = trainer(*args, "--overwrite")
    assert p.returncode == 0, p.stderr
    assert (d / "results.csv").stat().st_mtime_ns > before and len(list(tmp_path.iterdir())) == 1


@pytest.mark.slow
def test_configs_differing_in_one_setting_get_two_folders_and_rows_say_which(synth, tmp_path):
    base = common(synth, tmp_path, "--model", "m", "--dataset", "ds")
    for extra in ([], ["--lr", "1e-3"]):
        p = trainer(*base, *extra)
        assert p.returncode == 0, p.stderr
    dirs = sorted(tmp_path.iterdir())
    assert len(dirs) == 2 and all(d.name.startswith("baseline_m_ds_six_") for d in dirs)
    df = pd.concat([pd.read_csv(d / "results.csv") for d in dirs])
    assert sorted(df.lr.unique()) == [1e-4, 1e-3] and df.config_hash.nunique() == 2
    assert {"hidden", "batch_size", "standardize", "epochs_baseline", "epochs_stage2", "weight_decay"} <= set(df)
    assert not set(HASH_EXCLUDED) & set(df)
    p = trainer("table", tmp_path, "--layout", "generic")
    assert p.returncode == 0 and "lr=0.0001 |" in p.stdout and "lr=0.001 |" in p.stdout, p.stdout


def test_hash_covers_settings_not_output_options():
    cfg = TrainConfig(model="m", dataset="ds")
    assert cfg.run_name == f"{cfg.readable_name}_{cfg.config_hash}"
    for kw in ({"out": "x"}, {"threads": 1}, {"plots": False}, {"progress": False}, {"overwrite": True}):
        assert cfg.replace(**kw).run_name == cfg.run_name
    for kw in ({"standardize": True}, {"lr": 1e-3}, {"experiment": "t"}, {"seeds": (1,)}, {"beta": 0.1}):
        assert cfg.replace(**kw).run_name != cfg.run_name


def test_standardize_and_normalize_global_are_one_configuration():
    a, b = TrainConfig(model="m", dataset="ds", standardize=True), TrainConfig(model="m", dataset="ds",
                                                                                normalize="global")
    assert a.settings() == b.settings() and a.run_name == b.run_name and "norm-global" in a.run_name
    assert a.config_hash != TrainConfig(model="m", dataset="ds").config_hash
    assert TrainConfig(save_model=True).config_hash == TrainConfig().config_hash


@pytest.mark.slow
def test_model_defaults_to_the_only_entry(synth, tmp_path):
    p = trainer(*common(synth, tmp_path, "--dataset", "ext"))
    assert p.returncode == 0, p.stderr
    assert pd.read_csv(run_dir(tmp_path, "baseline_m_ext_six") / "results.csv").model.eq("m").all()


@pytest.mark.slow
def test_model_required_when_the_dataset_has_several(synth, tmp_path):
    import emocache

    models = sorted(m for m, ds in emocache.open_store(synth["store"]).entries() if ds == "ds")
    assert len(models) > 1
    p = trainer(*common(synth, tmp_path, "--dataset", "ds"))
    assert p.returncode == 2 and "--model" in p.stderr and f"({', '.join(models)})" in p.stderr, p.stderr


@pytest.fixture(scope="module")
def mixed(synth, tmp_path_factory):
    """Model 'big' on ds: the synthetic features with per-feature scales from 1e-2 to 1e3."""
    from emocache.store import write_arrays

    store = str(tmp_path_factory.mktemp("mixed") / "store")
    X = synth["X"] * np.logspace(-2, 3, synth["X"].shape[1]).astype(np.float32)
    write_arrays(store, "big", "ds", synth["keys"], synth["labels"], X)
    return store


def _scale_warnings(cfg):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        experiment.run(cfg)
    return [str(x.message) for x in w if "--standardize" in str(x.message)]


def test_scale_warning_fires_on_mixed_scales_only(synth, base_kw, mixed):
    kw = {**base_kw, "epochs_stage2": 0}
    big = TrainConfig(method="baseline", **{**kw, "store": mixed, "model": "big"})
    got = _scale_warnings(big)
    assert len(got) == 1 and "big/ds" in got[0]
    assert _scale_warnings(big.replace(standardize=True)) == []
    assert _scale_warnings(TrainConfig(method="baseline", **kw)) == []
    assert experiment.scale_ratio(experiment.torch.tensor([[1.0, 0.0], [3.0, 0.0]]),
                                  experiment.torch.tensor([0, 1])) == 1.0


def _manifest_test_keys(manifests, dataset, fold):
    import json
    from pathlib import Path

    (p,) = Path(manifests, dataset, f"fold_{fold}").glob("*test*.jsonl")
    return {json.loads(x)["key"] for x in p.read_text().splitlines()}


@pytest.mark.slow
def test_predictions_csv_and_saved_model_reproduce_the_rows(synth, tmp_path):
    """CLI: --save-model with standardised inputs and --select val; predictions.csv scores to the rows' numbers;
    the saved weights, loaded back, give the same predictions."""
    from sklearn.metrics import f1_score

    from tests.trainer.conftest import LABELS
    from trainer.data import load_features, open_store
    from trainer.models import load_saved

    p = trainer(*common(synth, tmp_path, "--model", "m", "--dataset", "hard", "--seeds", "0,1", "--standardize",
                        "--val-fraction", "0.2", "--select", "val", "--save-model", "--epochs-baseline", 12,
                        "--lr", "1e-2"))
    assert p.returncode == 0, p.stderr
    d = run_dir(tmp_path, "baseline_m_hard_six_val0.2_select-val_norm-global")
    rows = pd.read_csv(d / "results.csv")
    assert (rows.selected_epoch < 12).any()  # some run reports (and saves) an epoch before the last
    pred = pd.read_csv(d / "predictions.csv")
    classes = sorted({c.removeprefix("p_") for c in pred.columns if c.startswith("p_")})
    assert list(pred.columns[:6]) == ["stage", "fold", "seed", "key", "true", "pred"] and len(classes) == 4
    feats = load_features(open_store(synth["store"]), "m", "hard")
    truth = {k: LABELS[raw] for k, raw in zip(feats.keys, feats.raw_labels)}
    assert (pred.key.map(truth) == pred.true).all()
    probs = pred[[f"p_{c}" for c in classes]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    assert (np.asarray(classes)[probs.argmax(1)] == pred.pred).all()
    for (fold, seed), g in pred[pred.stage == "final"].groupby(["fold", "seed"]):
        row = rows[(rows.stage == "final") & (rows.fold == fold) & (rows.seed == seed)].iloc[0]
        six = {k for k in _manifest_test_keys(synth["manifests"], "hard", fold) if truth[k] in SIX_CLASSES}
        assert set(g.key) == six and len(g) == row.n_test  # Disgust is dropped with --labels six
        assert f1_score(g.true, g.pred, average="macro") == pytest.approx(row.macro_f1, abs=1e-12)
    saved = load_saved(d)
    assert sorted(f.name for f in (d / "model").iterdir()) == ["config.json", "fold1_seed0.safetensors",
                                                              "fold1_seed1.safetensors", "fold2_seed0.safetensors",
                                                              "fold2_seed1.safetensors"]
    assert saved.config["select"] == "val" and saved.model.standardized
    row_of = {k: i for i, k in enumerate(feats.keys)}
    P = saved.probabilities(feats.X)  # (M, N, C)
    keys, X_np = open_store(synth["store"]).pooled("m", "hard")  # numpy float32, as docs/TRAINER.md shows
    assert isinstance(X_np, np.ndarray) and keys == list(feats.keys)
    P_np = saved.probabilities(X_np)
    assert isinstance(P_np, np.ndarray) and P_np.shape == tuple(P.shape)
    np.testing.assert_array_equal(P_np, P.numpy())
    np.testing.assert_array_equal(saved.probabilities(X_np.astype(np.float64)), P_np)  # computed in float32
    with pytest.raises(ValueError, match=r"reads \(N, D\) rows with D = "):
        saved.probabilities(X_np[:, :3])
    names = np.asarray(saved.classes)
    for (fold, seed), g in pred[pred.stage == "final"].groupby(["fold", "seed"]):
        q = P[saved.index(fold, seed), [row_of[k] for k in g.key]].numpy()
        assert (names[q.argmax(1)] == g.pred).all()
        np.testing.assert_allclose(q, g[[f"p_{c}" for c in saved.classes]].to_numpy(), atol=1e-6)


def test_saved_weighted_speaker_model_is_exact(layered):
    """--layer weighted --normalize speaker: predictions keep their keys and the saved model (layer weights
    included) reproduces the in-memory predictions bit for bit."""
    from trainer.data import pad_rows
    from trainer.models import load_saved

    cfg = TrainConfig(method="baseline", layer="weighted", normalize="speaker", save_model=True, **kw(layered))
    res = experiment.run(cfg)
    d = experiment.write(res)
    saved = load_saved(d / "model")
    data = experiment.prepare(cfg)
    assert saved.model.layer_logits is not None and saved.layers == [0, 1, 2]
    pr = res.predictions[res.predictions.stage == "final"]
    idx = pad_rows(data.test)[0]
    P = saved.model.predict(data.X, idx).softmax(-1)  # (M, T, C)
    for r, info in enumerate(res.members):
        g = pr[(pr.fold == info["fold"]) & (pr.seed == info["seed"])]
        assert set(g.key) == _manifest_test_keys(layered["manifests"], "lay", info["fold"])
        assert np.array_equal(P[saved.index(info["fold"], info["seed"]), :len(g)].numpy(),
                              g[[f"p_{c}" for c in saved.classes]].to_numpy())
    on_disk = pd.read_csv(d / "predictions.csv")
    assert len(on_disk) == len(res.predictions) and set(on_disk.stage) == {"final"}
