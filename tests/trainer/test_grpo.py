"""Per-input GRPO: eq. 6 within each input's G samples, sampled answers in the rewards, whole runs and the CLI."""

import pandas as pd
import pytest
import torch

from tests.trainer.test_trainer_cli import run_dir, sh
from trainer import experiment
from trainer.algorithms.grpo import flat_share, group_advantage
from trainer.config import TrainConfig
from trainer.rewards import reward


def test_equal_rewards_in_an_input_group_give_zero_advantage():
    r = torch.tensor([[[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0]]])  # (M=1, B=3, G=4)
    for mode in ("positive", "signed"):
        a = group_advantage(r, mode)
        assert torch.equal(a[0, :2], torch.zeros(2, 4))
        assert a[0, 2].abs().sum() > 0
    assert flat_share(r, torch.ones(1, 3, dtype=torch.bool)).item() == pytest.approx(2 / 3)


def test_group_is_each_input_not_the_batch():
    r = torch.tensor([[[1.0, 0.0, 0.0], [3.0, 5.0, 4.0]]])  # (1, B=2, G=3)
    a = group_advantage(r, "signed")
    # input 0: mean 1/3, unbiased std sqrt(1/3); input 1: mean 4, std 1 (hand-computed)
    s0 = (1 / 3) ** 0.5 + 1e-4
    want = torch.tensor([[[(2 / 3) / s0, (-1 / 3) / s0, (-1 / 3) / s0], [-1 / 1.0001, 1 / 1.0001, 0.0]]])
    assert torch.allclose(a, want, atol=1e-6)
    pos = group_advantage(r, "positive")
    assert torch.allclose(pos, want.clamp_min(0), atol=1e-6)


def test_padding_inputs_get_zero_advantage():
    r = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    a = group_advantage(r, "signed", torch.tensor([[True, False]]))
    assert torch.equal(a[0, 1], torch.zeros(2)) and a[0, 0].abs().sum() > 0


def test_rewards_judge_the_sampled_answer():
    p = torch.tensor([[0.7, 0.2, 0.1]]).expand(3, 3)  # the same input, three sampled labels
    p_t = torch.tensor([[0.1, 0.8, 0.1]]).expand(3, 3)
    o = torch.tensor([0, 1, 2])
    assert reward("r1", p, o=o, delta=0.5).tolist() == [1.0, 0.0, 0.0]
    assert torch.allclose(reward("r2", p, o=o), torch.tensor([0.7, 0.2, 0.1]))
    assert reward("r3", p, p_t, o=o).tolist() == [0.0, 1.0, 0.0]
    assert reward("r3", p, p_t).tolist() == [0.0, 0.0, 0.0]  # without o: the prediction (class 0), eq. 3


def test_a_grpo_run_does_not_depend_on_its_stack_neighbours(base_kw):
    together = experiment.run(TrainConfig(method="grpo", seeds=(0, 1), group_size=4, **base_kw))
    alone = experiment.run(TrainConfig(method="grpo", seeds=(1,), fold="2", group_size=4, **base_kw))
    want = next(r for r in together.rows if (r["fold"], r["seed"], r["stage"]) == (2, 1, "final"))
    got = next(r for r in alone.rows if r["stage"] == "final")
    assert got["macro_f1"] == pytest.approx(want["macro_f1"]) and got["wa"] == pytest.approx(want["wa"])
    curve = [c for c in together.curves if c["stage"] == "grpo"]
    assert curve and all(0 <= c["flat_groups"] <= 1 and "approx_kl" in c and "clip_frac" in c for c in curve)


def test_grpo_rejects_options_of_the_batch_group(base_kw):
    with pytest.raises(ValueError, match="--balance"):
        TrainConfig(method="grpo", balance="class-norm", **base_kw)
    with pytest.raises(ValueError, match="--group-size"):
        TrainConfig(method="grpo", group_size=1, **base_kw)


@pytest.mark.slow
@pytest.mark.parametrize("extra, name", [(["--reward", "r1"], "r1_positive_G4"),
                                         (["--reward", "r3", "--teacher", "t"], "r3_positive_t_G4"),
                                         (["--reward", "eswr", "--teacher", "t", "--eswr-alpha", "0.8"],
                                          "eswr_positive_t_G4_alpha0.8gamma0.5"),
                                         (["--reward", "wheel", "--teacher", "t"], "wheel_positive_t_G4")])
def test_cli_grpo(synth, tmp_path, extra, name):
    out = tmp_path / "res"
    sh("run", "grpo", "--store", synth["store"], "--manifests", synth["manifests"], "--model", "m",
                    "--dataset", "ds", "--epochs-baseline", "2", "--epochs-stage2", "1", "--group-size", "4",
                    "--threads", "1", "--no-plots", "--no-progress", "--out", out, *extra)
    df = pd.read_csv(run_dir(out, "grpo_m_ds_six_" + name) / "results.csv")
    assert set(df.method) == {"grpo"} and (df.group_size == 4).all() and df.macro_f1.between(0, 1).all()
    assert df.wheel.between(df.wa, 1).all()  # the wheel metric pays at least the exact hits


def test_grpo_groups_spec_parses(monkeypatch):
    from pathlib import Path

    from trainer.pipeline import cells, load_spec

    for var in ("URDU_STORE", "EMOBOX", "DEMO_STORE", "DEMO_ROOT", "GROUPS_OUT"):
        monkeypatch.setenv(var, var.lower())
    got = cells(load_spec(Path(__file__).resolve().parents[2] / "pipelines" / "grpo_groups.toml"))
    assert len(got) == 21 and {c.seeds for c in got} == {(0, 1, 2, 3, 4)}
    for ds, model in (("urdu", "fbank-stats"), ("urdu", "egemaps"), ("demo", "fbank-stats")):
        mine = [c for c in got if (c.dataset, c.model) == (ds, model)]
        assert sorted((c.method, c.reward) for c in mine if c.method != "baseline") == [
            (m, r) for m in ("b-grpo", "grpo") for r in ("eswr", "r3", "wheel")]
        assert all(c.teacher and c.teacher != model for c in mine if c.method != "baseline")
