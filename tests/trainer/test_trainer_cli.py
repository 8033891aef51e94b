"""`trainer` console script end to end, as subprocesses, on the synthetic store."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

TRAINER = [sys.executable, "-m", "trainer.cli"]


def sh(*args, ok=True):
    p = subprocess.run([*TRAINER, *map(str, args)], capture_output=True, text=True, timeout=300)
    if ok:
        assert p.returncode == 0, p.stderr + p.stdout
    return p


@pytest.fixture(scope="module")
def runs(synth, tmp_path_factory):
    """Every method once (2 + 2 epochs), into one results folder."""
    out = tmp_path_factory.mktemp("cli-out")
    common = ["--store", synth["store"], "--manifests", synth["manifests"], "--model", "m", "--dataset", "ds",
              "--epochs-baseline", 2, "--epochs-stage2", 2, "--out", out, "--seeds", "0,1", "--lr", "1e-3",
              "--experiment", "table1", "--threads", 1]
    for method in ["baseline", "same-epochs", "full-labeled", "dino", "b-grpo"]:
        p = sh("run", method, *common)
        assert "final fold 2: macro-F1" in p.stdout and "final mean over 2 fold(s) x 2 seed(s)" in p.stdout
    return out


def test_run_writes_results_for_every_method(runs):
    dirs = sorted(d.name for d in runs.iterdir())
    assert len(dirs) == 5 and "b-grpo_m_ds_six_r1_positive" in dirs
    df = pd.read_csv(runs / "b-grpo_m_ds_six_r1_positive" / "results.csv")
    assert len(df[df.stage == "final"]) == 4 and df.macro_f1.between(0, 1).all()
    assert (runs / "dino_m_ds_six" / "curves.png").exists()
    assert json.loads((runs / "baseline_m_ds_six" / "results.json").read_text())["config"]["seeds"] == [0, 1]


def test_table_renders_table1(runs, tmp_path):
    p = sh("table", runs, "--out", tmp_path / "t.md")
    for name in ["Baseline", "DINO", "Same epochs", "Full labeled", "B-GRPO"]:
        assert f"| {name} | " in p.stdout
    assert "| - |" not in p.stdout
    assert (tmp_path / "t.md").read_text().startswith("**Table 1")


def test_run_errors_are_clear(synth, tmp_path):
    p = sh("run", "b-grpo", "--store", synth["store"], "--manifests", synth["manifests"], "--model", "zz",
           "--dataset", "ds", "--out", tmp_path, ok=False)
    assert p.returncode == 2 and "--model zz --dataset ds" in p.stderr


@pytest.mark.parametrize("scheduler", ["", "local:2"])
def test_pipeline_runs_a_grid(synth, tmp_path, scheduler):
    spec = tmp_path / "table3.toml"
    spec.write_text('name = "table3"\n[defaults]\nmethod = "b-grpo"\nmodel = "m"\nepochs_baseline = 2\nthreads = 1\n'
                    'epochs_stage2 = 1\nplots = false\n[[grid]]\nadvantage = ["positive", "signed"]\n'
                    'dataset = "ds"\n')
    args = ["pipeline", spec, "--store", synth["store"], "--manifests", synth["manifests"], "--out", tmp_path / "o"]
    p = sh(*args, *(["--scheduler", scheduler] if scheduler else []))
    assert "A_i > 0 (eq. 6)" in p.stdout and "w/o A_i > 0" in p.stdout
    df = pd.read_csv(tmp_path / "o" / "results.csv", keep_default_na=False)
    assert sorted(df[df.stage == "final"].advantage.unique()) == ["positive", "signed"]
    assert set(df.experiment) == {"table3"}


def test_pipeline_specs_in_repo_parse():
    from trainer.pipeline import cells, load_spec

    root = Path(__file__).resolve().parents[2] / "pipelines"
    n = {p.stem: len(cells(load_spec(p, store="s", manifests="m"))) for p in sorted(root.glob("table*.toml"))}
    assert n == {"table1": 25, "table2": 45, "table3": 15, "table4": 30, "table5": 17}


def test_bench_small(tmp_path):
    p = sh("bench", "--n", 300, "--dim", 16, "--folds", 2, "--epochs-baseline", 2, "--epochs-stage2", 2,
           "--threads", 1, "--out", tmp_path)
    rep = json.loads((tmp_path / "bench.json").read_text())
    assert rep["runs"] == 2 and rep["fast"]["seconds"] > 0 and rep["dataloader"]["seconds"] > 0
    assert rep["dataloader_npy"]["seconds"] > 0
    # every loop trains the same protocol from the same initialisation: the scores agree closely
    assert abs(rep["dataloader_npy"]["macro_f1_mean"] - rep["dataloader"]["macro_f1_mean"]) < 1e-6
    assert "per-sample DataLoader" in p.stdout and "one .npy per utterance" in p.stdout
