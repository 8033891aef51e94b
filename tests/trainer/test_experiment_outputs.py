"""Run folders unique per configuration, --overwrite, settings in every row, the --model default and the
feature-scale warning (trainer.experiment, trainer.config)."""

import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from tests.trainer.test_trainer_cli import run_dir
from trainer import experiment
from trainer.config import HASH_EXCLUDED, TrainConfig


def trainer(*args):
    return subprocess.run([sys.executable, "-m", "trainer.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def common(synth, out, *extra):
    return ["run", "baseline", "--store", synth["store"], "--manifests", synth["manifests"], "--epochs-baseline", 2,
            "--threads", 1, "--no-plots", "--no-progress", "--out", out, *extra]


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


def test_model_defaults_to_the_only_entry(synth, tmp_path):
    p = trainer(*common(synth, tmp_path, "--dataset", "ext"))
    assert p.returncode == 0, p.stderr
    assert pd.read_csv(run_dir(tmp_path, "baseline_m_ext_six") / "results.csv").model.eq("m").all()


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
