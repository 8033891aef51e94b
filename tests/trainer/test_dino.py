"""DINO pieces: schedules, loss by hand, EMA, views, and a short run."""

import math

import pytest
import torch

from trainer.algorithms.dino import (dino_loss, ema_update, momentum_schedule, noise_views, teacher_temperature)
from trainer.config import TrainConfig
from trainer import experiment
from trainer.models import StackedMLP


def test_momentum_schedule_cosine_from_m0_to_one():
    m = momentum_schedule(0.996, 100)
    assert m[0].item() == pytest.approx(0.996)
    assert m[50].item() == pytest.approx(0.998, abs=1e-6)
    assert m[-1].item() > 0.99999
    assert (m[1:] >= m[:-1]).all()


def test_teacher_temperature_warmup():
    assert teacher_temperature(0, 100, 0.04, 0.07, 0.3) == pytest.approx(0.04)
    assert teacher_temperature(15, 100, 0.04, 0.07, 0.3) == pytest.approx(0.055)
    assert teacher_temperature(30, 100, 0.04, 0.07, 0.3) == 0.07
    assert teacher_temperature(99, 100, 0.04, 0.07, 0.3) == 0.07


def test_dino_loss_by_hand():
    s1, s2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    t1, t2 = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    center = torch.tensor([[1.0, 0.0]])
    # q1 = softmax(([2,0]-[1,0])/1) = softmax([1,0]); q2 = softmax([-1,0]); log P_s with tau_s = 1
    q1 = torch.softmax(torch.tensor([1.0, 0.0]), 0)
    q2 = torch.softmax(torch.tensor([-1.0, 0.0]), 0)
    ce12 = -(q1 * torch.log_softmax(torch.tensor([0.0, 1.0]), 0)).sum()
    ce21 = -(q2 * torch.log_softmax(torch.tensor([1.0, 0.0]), 0)).sum()
    got = dino_loss(s1, s2, t1, t2, center, tau_s=1.0, tau_t=1.0)
    assert got.item() == pytest.approx(0.5 * (ce12 + ce21).item())


def test_sharpening_lowers_teacher_entropy():
    t = torch.tensor([[1.0, 0.5, 0.0]])
    h = lambda q: -(q * q.log()).sum().item()  # noqa: E731
    assert h(torch.softmax(t / 0.04, -1)) < h(torch.softmax(t / 0.07, -1)) < h(torch.softmax(t, -1))


def test_ema_update_per_member():
    a = StackedMLP.from_seeds([0, 1], 4, 3, 5)
    b = StackedMLP.from_seeds([2, 3], 4, 3, 5)
    before = a.w1.detach().clone()
    ema_update(a, b, torch.tensor([0.9, 1.0]))
    assert torch.allclose(a.w1[0], 0.9 * before[0] + 0.1 * b.w1[0])
    assert torch.equal(a.w1[1], before[1])


def test_noise_views_differ_and_drop_features():
    g = torch.Generator().manual_seed(0)
    x = torch.ones(2, 400, 10)
    v1, v2 = noise_views(x, torch.ones(10), 0.0, 0.5, [g, g])
    assert not torch.equal(v1, v2)
    assert 0.4 < (v1 == 0).float().mean().item() < 0.6
    assert set(v1.unique().tolist()) <= {0.0, 2.0}


@pytest.mark.parametrize("views,model", [("noise", "m"), ("auto", "mf")])
def test_dino_run_changes_the_baseline(base_kw, views, model):
    cfg = TrainConfig(method="dino", dino_views=views, **{**base_kw, "model": model})
    res = experiment.run(cfg)
    assert {r["views"] for r in res.rows} == {"noise" if model == "m" else "frames"}
    stages = {r["stage"] for r in res.rows}
    assert stages == {"stage1", "final"}
    dino_curve = [c for c in res.curves if c["stage"] == "dino"]
    assert len(dino_curve) == cfg.epochs_stage2 * len(res.rows) // 2 and all(math.isfinite(c["loss"]) for c in dino_curve)


def test_frames_view_needs_frames(base_kw):
    with pytest.raises(ValueError, match="without frames"):
        experiment.prepare(TrainConfig(method="dino", dino_views="frames", **base_kw))
