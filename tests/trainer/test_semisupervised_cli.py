"""The classic semi-supervised baselines (pseudo-label, fixmatch) and stabilised B-GRPO from the command line."""

import subprocess
import sys

import pandas as pd
import pytest


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
    rows = pd.read_csv(tmp_path / folder / "results.csv")
    assert set(rows.stage) == {"stage1", "final"} and (rows.n_unlabeled > 0).all()
    curves = pd.read_csv(tmp_path / folder / "curves.csv")
    want = {"approx_kl", "clip_frac", "sup_loss"} if method == "b-grpo" else {"mask_rate"}
    assert want <= set(curves.columns)
