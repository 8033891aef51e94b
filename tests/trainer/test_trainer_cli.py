"""`trainer` console script end to end, as subprocesses, on the synthetic store."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

TRAINER = [sys.executable, "-m", "trainer.cli"]


def run_dir(out: Path, readable: str) -> Path:
    """The one run folder under ``out`` named ``readable`` plus a config hash."""
    found = [d for d in Path(out).iterdir() if re.fullmatch(re.escape(readable) + r"_[0-9a-f]{8}", d.name)]
    assert len(found) == 1, (readable, sorted(d.name for d in Path(out).iterdir()))
    return found[0]


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


@pytest.mark.slow
def test_run_writes_results_for_every_method(runs):
    dirs = sorted(d.name for d in runs.iterdir())
    assert len(dirs) == 5 and all(re.fullmatch(r".+_[0-9a-f]{8}", d) for d in dirs)
    df = pd.read_csv(run_dir(runs, "b-grpo_m_ds_six_r1_positive") / "results.csv")
    assert len(df[df.stage == "final"]) == 4 and df.macro_f1.between(0, 1).all()
    assert (run_dir(runs, "dino_m_ds_six") / "diagnostics.png").exists()
    for name in ("learning_curve.png", "learning_curve.pdf", "diagnostics.png", "diagnostics.pdf", "confusion.png",
                 "confusion.pdf"):
        assert (run_dir(runs, "b-grpo_m_ds_six_r1_positive") / name).stat().st_size > 1000, name
    curves = pd.read_csv(run_dir(runs, "b-grpo_m_ds_six_r1_positive") / "curves.csv")
    assert list(curves.columns[:2]) == ["method", "model"] and set(curves.method) == {"b-grpo"}
    assert set(curves.model) == {"m"}
    assert json.loads((run_dir(runs, "baseline_m_ds_six") / "results.json").read_text())["config"]["seeds"] == [0, 1]


@pytest.mark.slow
def test_table_renders_table1(runs, tmp_path):
    p = sh("table", runs, "--out", tmp_path / "t.md")
    for name in ["Baseline", "DINO", "Same epochs", "Full labeled", "B-GRPO"]:
        assert f"| {name} | " in p.stdout
    assert "| - |" not in p.stdout
    assert (tmp_path / "t.md").read_text().startswith("**Table 1")


@pytest.mark.slow
def test_table_formats_and_metrics(runs, tmp_path):
    import io

    p = sh("table", runs, "--format", "csv", "--metric", "ua", "--out", tmp_path / "t.csv")
    df = pd.read_csv(io.StringIO(p.stdout), comment="#").set_index("method")
    assert list(df.columns) == ["ds_ua_pct"] and df.index[0] == "Baseline"
    assert p.stdout.splitlines()[0] == "# Table 1. B-GRPO against the baselines (UA %)"
    assert (tmp_path / "t.csv").read_text() == p.stdout
    rows = pd.read_csv(run_dir(runs, "baseline_m_ds_six") / "results.csv")
    mean = rows[rows.stage == "final"].groupby("seed").ua.mean().mean() * 100
    assert df.loc["Baseline", "ds_ua_pct"].startswith(f"{mean:.1f} ± ")
    tex = sh("table", runs, "--format", "latex").stdout
    assert tex.startswith(r"\begin{table}") and r"\end{tabular}" in tex and "B-GRPO &" in tex
    p = sh("table", runs, "--metric", "accuracy", ok=False)
    assert p.returncode == 2 and "available: macro_f1, ua, wa" in p.stderr
    p = sh("table", runs, "--format", "html", ok=False)
    assert p.returncode == 2 and "md, csv, latex" in p.stderr


@pytest.mark.slow
def test_run_errors_are_clear(synth, tmp_path):
    p = sh("run", "b-grpo", "--store", synth["store"], "--manifests", synth["manifests"], "--model", "zz",
           "--dataset", "ds", "--out", tmp_path, ok=False)
    assert p.returncode == 2 and "--model zz --dataset ds" in p.stderr


@pytest.mark.slow
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


@pytest.mark.slow
def test_bench_small(tmp_path):
    p = sh("bench", "--n", 300, "--dim", 16, "--folds", 2, "--epochs-baseline", 10, "--epochs-stage2", 3,
           "--separation", 4.0, "--threads", 1, "--out", tmp_path)
    rep = json.loads((tmp_path / "bench.json").read_text())
    assert rep["runs"] == 2 and rep["fast"]["seconds"] > 0 and rep["dataloader"]["seconds"] > 0
    assert rep["dataloader_npy"]["seconds"] > 0
    # on separable data both loops learn (4 classes: chance ~25) and agree within a few points
    assert rep["fast"]["macro_f1_mean"] > 0.5 and rep["dataloader"]["macro_f1_mean"] > 0.5
    assert abs(rep["fast"]["macro_f1_mean"] - rep["dataloader"]["macro_f1_mean"]) < 0.05
    # every loop trains the same protocol from the same initialisation: the scores agree closely
    assert abs(rep["dataloader_npy"]["macro_f1_mean"] - rep["dataloader"]["macro_f1_mean"]) < 1e-6
    assert "per-sample DataLoader" in p.stdout and "one .npy per utterance" in p.stdout


@pytest.mark.slow
def test_bench_frame_heads_small(tmp_path):
    p = sh("bench", "--frame-heads", "--n", 64, "--frames", 20, "--frame-dim", 8, "--folds", 2, "--threads", 1,
           "--out", tmp_path)
    rows = json.loads((tmp_path / "frame_heads.json").read_text())
    assert [r["head"] for r in rows] == ["pooled", "mean", "attention"]
    assert all(r["epoch_seconds"] > 0 and r["peak_rss_gib"] > 0 for r in rows)
    assert rows[0]["t_max"] == 1 and rows[1]["t_max"] == rows[2]["t_max"] <= 30  # lengths 10..30
    assert rows[1]["input_gib"] > rows[0]["input_gib"] and "| attention |" in p.stdout


def test_every_setting_of_a_method_is_an_option_of_its_subcommand_with_its_docstring():
    import dataclasses

    from trainer.cli import config_options, first_sentence
    from trainer.config import METHODS, SHARED, TrainConfig, field_docs

    shared = {p.name: p for p in config_options(TrainConfig)}
    assert set(shared) == set(SHARED)
    assert shared["store"].default.default is ...  # required
    assert shared["standardize"].annotation is bool and shared["seeds"].default.default == "0"
    assert shared["labels"].default.help == "Label set (six|emobox)."
    for name, cls in METHODS.items():
        opts = {p.name: p for p in config_options(cls.Options, required=())}
        assert set(opts) == {f.name for f in dataclasses.fields(cls.Options)}, name
        for f, p in opts.items():
            assert p.default.help.startswith(first_sentence(field_docs(cls.Options)[f]).rstrip(".")), (name, f)
    bgrpo = {p.name: p for p in config_options(METHODS["b-grpo"].Options, required=())}
    assert bgrpo["beta"].default.default == 0.04 and bgrpo["beta"].annotation is float
    assert bgrpo["reward"].default.help == "Reward (r1|r2|r3|r4|r5|eswr|wheel)."


@pytest.mark.slow
def test_run_help_shows_the_shared_options_and_the_methods_own_on_two_screens():
    import os

    from trainer.config import METHODS, SHARED, method_options

    env = {**os.environ, "COLUMNS": "80"}
    listing = subprocess.run([*TRAINER, "run", "--help"], capture_output=True, text=True, timeout=300, env=env)
    assert all(m in listing.stdout for m in METHODS)
    for method in ("b-grpo", "baseline", "fixmatch"):
        p = subprocess.run([*TRAINER, "run", method, "--help"], capture_output=True, text=True, timeout=300, env=env)
        assert p.returncode == 0 and len(p.stdout.splitlines()) <= 100, (method, len(p.stdout.splitlines()))
        flags = set(re.findall(r"^  (--[a-z0-9-]+)", p.stdout, re.M)) - {"--help"}
        want = {"--" + n.replace("_", "-") for n in SHARED + method_options(method)}
        assert flags == want, (method, flags ^ want)
        assert "…" not in p.stdout
    p = sh("run", "baseline", "--reward", "r3", ok=False)
    assert p.returncode == 2 and "No such option" in p.stderr and "--reward" in p.stderr


@pytest.mark.slow
@pytest.mark.parametrize("args,msg", [
    (["--epochs-baseline", "0"], "--epochs-baseline 0: must be at least 1"),
    (["--epochs-baseline", "-1"], "--epochs-baseline -1: must be at least 1"),
    (["--batch-size", "-3"], "--batch-size -3: must be at least 1"),
    (["--lr", "nan"], "--lr nan: must be a finite number"),
    (["--hidden", "0"], "--hidden 0: must be at least 1"),
    (["--seeds", "-1"], "--seeds -1: seeds must be non-negative"),
    (["--labels", "seven"], "--labels 'seven': use one of six, emobox"),
    (["--select", "val"], "--select val needs a validation split"),
])
def test_bad_numbers_give_one_line_errors(synth, tmp_path, args, msg):
    p = sh("run", "baseline", "--store", synth["store"], "--manifests", synth["manifests"], "--model", "m",
           "--dataset", "ds", "--out", tmp_path, *args, ok=False)
    assert p.returncode == 2 and msg in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) <= 2  # one message, wrapped at most once by the console


@pytest.mark.slow
def test_bad_manifests_give_one_line_errors(synth, tmp_path):
    import shutil

    common = ["run", "baseline", "--store", synth["store"], "--model", "m", "--dataset", "ds", "--out", tmp_path]
    p = sh(*common, "--manifests", Path(synth["manifests"]) / "ds", ok=False)
    assert p.returncode == 2 and "no folder ds/ here (did you mean the parent?)" in p.stderr.replace("\n", "")
    man = tmp_path / "man"
    shutil.copytree(Path(synth["manifests"]) / "ds", man / "ds")
    (man / "ds" / "label_map.json").write_text('["neu", "hap"]')
    p = sh(*common, "--manifests", man, ok=False)
    assert p.returncode == 2 and "is a JSON object" in p.stderr and "not a list" in p.stderr.replace("\n", "")
    (man / "ds" / "label_map.json").unlink()
    p = sh(*common, "--manifests", man, ok=False)
    assert p.returncode == 2 and "no label map" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.slow
def test_out_that_is_a_file_fails_before_training(synth, tmp_path):
    f = tmp_path / "taken"
    f.write_text("")
    p = sh("run", "baseline", "--store", synth["store"], "--manifests", synth["manifests"], "--model", "m",
           "--dataset", "ds", "--out", f, ok=False)
    assert p.returncode == 2 and "is a file, not a folder" in p.stderr.replace("\n", "")


@pytest.mark.slow
def test_table_compare_and_oracle(synth, tmp_path):
    common = ["--store", synth["store"], "--manifests", synth["manifests"], "--model", "m", "--dataset", "ds",
              "--epochs-baseline", 3, "--epochs-stage2", 3, "--out", tmp_path, "--seeds", "0,1,2", "--lr", "1e-2",
              "--threads", 1, "--no-plots", "--val-fraction", "0.2"]
    sh("run", "baseline", *common)
    sh("run", "same-epochs", *common)
    p = sh("table", tmp_path, "--compare", "baseline")
    row = next(line for line in p.stdout.splitlines() if line.startswith("| Same epochs"))
    assert "Δ " in row and "p=" in row and "Wilcoxon" in p.stdout
    o = sh("table", tmp_path, "--oracle")
    assert "optimistic (--oracle)" in o.stdout
    p = sh("table", tmp_path, "--compare", "dino", ok=False)
    assert p.returncode == 2 and "no rows of that method" in p.stderr


@pytest.mark.slow
def test_pipeline_val_variant(synth, tmp_path):
    spec = tmp_path / "table1.toml"
    spec.write_text('name = "table1"\n[defaults]\nmodel = "m"\nepochs_baseline = 2\nthreads = 1\n'
                    'epochs_stage2 = 1\nplots = false\n[[grid]]\nmethod = ["baseline", "b-grpo"]\ndataset = "ds"\n')
    p = sh("pipeline", spec, "--store", synth["store"], "--manifests", synth["manifests"], "--out", tmp_path / "o",
           "--set", "val_fraction=0.25", "--set", "select=val")
    assert "| Baseline (ours: best-validation epoch) |" in p.stdout and "best validation epoch per run" in p.stdout
    df = pd.read_csv(tmp_path / "o" / "results.csv", keep_default_na=False)
    assert set(df["select"]) == {"val"} and (df.n_val > 0).all()
