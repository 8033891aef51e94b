"""The classic semi-supervised baselines (pseudo-label, fixmatch) and stabilised B-GRPO from the command line."""

import subprocess
import sys

import pandas as pd
import pytest

from tests.trainer.test_trainer_cli import run_dir


@pytest.mark.slow
@pytest.mark.parametrize("method,extra,folder", [
    ("fixmatch", [], "fixmatch_m_ds_six"),
    ("pseudo-label", [], "pseudo-label_m_ds_six"),
    ("b-grpo", ["--sup-weight", "1", "--balance", "inverse-freq"], "b-grpo_m_ds_six_r1_positive_inverse-freq_sup1"),
])
def test_cli_smoke(synth, tmp_path, method, extra, folder):
    """A few epochs of each, as a user would run it."""
    p = subprocess.run([sys.executable, "-m", "trainer.cli", "run", method, "--store", synth["store"],
                        "--manifests", synth["manifests"], "--model", "m", "--dataset", "ds", "--seeds", "0,1",
                        "--epochs-baseline", "3", "--epochs-stage2", "3", "--lr", "1e-3", "--threads", "1",
                        "--no-plots", "--out", str(tmp_path), *extra], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr + p.stdout
    assert "final mean over 2 fold(s) x 2 seed(s)" in p.stdout
    rows = pd.read_csv(run_dir(tmp_path, folder) / "results.csv")
    assert set(rows.stage) == {"stage1", "final"} and (rows.n_unlabeled > 0).all()
    curves = pd.read_csv(run_dir(tmp_path, folder) / "curves.csv")
    want = {"approx_kl", "clip_frac", "sup_loss"} if method == "b-grpo" else {"mask_rate"}
    assert want <= set(curves.columns)


def test_pipeline_spec_grid_over_the_new_methods(synth, tmp_path):
    from trainer.pipeline import load_spec, run_pipeline

    spec = tmp_path / "ssl.toml"
    spec.write_text('name = "ssl"\n[defaults]\nmodel = "m"\ndataset = "ds"\nepochs_baseline = 2\nepochs_stage2 = 1\n'
                    'threads = 1\nplots = false\nprogress = false\n'
                    '[[grid]]\nmethod = ["pseudo-label", "fixmatch"]\n'
                    '[[grid]]\nmethod = "b-grpo"\nsup_weight = [0.0, 1.0]\nbalance = ["none", "inverse-freq"]\n')
    text, path = run_pipeline(load_spec(spec, store=synth["store"], manifests=synth["manifests"],
                                        out=str(tmp_path / "o")))
    df = pd.read_csv(tmp_path / "o" / "results.csv", keep_default_na=False)
    final = df[df.stage == "final"]
    assert set(final.method) == {"pseudo-label", "fixmatch", "b-grpo"}
    b = final[final.method == "b-grpo"]
    assert {(float(w), bal) for w, bal in zip(b.sup_weight, b.balance)} == {
        (0.0, "none"), (1.0, "none"), (0.0, "inverse-freq"), (1.0, "inverse-freq")}
    assert "pseudo-label" in text and "balance=inverse-freq sup_weight=1.0" in text
