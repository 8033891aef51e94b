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


@pytest.fixture(scope="module")
def unequal(tmp_path_factory):
    """Dataset 'uneq': fold 1 trains on 160 rows, fold 2 on 100 (test 40 / 100): pools of 80 and 50 rows, 3 and 2
    batches an epoch, so a step count shared by the stack would put fold 2 off its own schedule."""
    import json
    from pathlib import Path

    from trainer.synthetic import make_dataset

    root = tmp_path_factory.mktemp("uneq")
    labels = {"neu": "Neutral", "hap": "Happy", "ang": "Angry", "sad": "Sad"}
    d = make_dataset(root / "store", root / "man", "m", "uneq", n=200, dim=8, n_folds=2, seed=4, label_map=labels,
                     separation=1.5)
    for k, test in ((1, range(0, 40)), (2, range(40, 140))):
        folder = Path(root / "man" / "uneq" / f"fold_{k}")
        for split, keep in (("train", lambda i: i not in test), ("test", lambda i: i in test)):
            rows = [{"key": key, "dataset": "uneq", "wav": f"{key}.wav", "emo": emo, "channel": 1}
                    for i, (key, emo) in enumerate(zip(d["keys"], d["labels"])) if keep(i)]
            (folder / f"uneq_{split}_fold_{k}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return dict(store=str(root / "store"), manifests=str(root / "man"), model="m", dataset="uneq")


def test_a_members_momentum_schedule_is_its_own_with_unequal_folds(unequal):
    kw = dict(**unequal, method="dino", dino_views="noise", dino_momentum=0.5, epochs_baseline=2, epochs_stage2=4,
              lr=1e-2, plots=False, progress=False, threads=1)  # a low momentum makes the schedule matter
    together = experiment.run(TrainConfig(seeds=(0,), **kw))
    data = experiment.prepare(TrainConfig(seeds=(0,), **kw))
    pools = [len(p) for p in data.unlabeled]
    assert [math.ceil(n / 32) for n in pools] == [3, 2]
    for fold in (1, 2):
        alone = experiment.run(TrainConfig(seeds=(0,), fold=str(fold), **kw))
        want = [r for r in together.rows if r["fold"] == fold]
        assert [r["macro_f1"] for r in alone.rows] == [r["macro_f1"] for r in want]
        want_curve = [c["confidence"] for c in together.curves if c["fold"] == fold]
        assert [c["confidence"] for c in alone.curves] == pytest.approx(want_curve, rel=1e-7)
