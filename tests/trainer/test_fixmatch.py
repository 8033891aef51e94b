"""FixMatch (Sohn et al. 2020, eq. 3-4): the loss by hand, the stop-gradient on the weak view, views, runs."""

import math

import pytest
import torch

from trainer import experiment
from trainer.algorithms.fixmatch import fixmatch_loss
from trainer.config import TrainConfig
from trainer.data import DataError

L2, L3 = math.log(2), math.log(3)


def _batches():
    logits_l = torch.tensor([[[0.0, 0.0]]])  # one labelled sample, CE = ln 2
    y_l = torch.tensor([[1]])
    weak = torch.tensor([[[math.log(99), 0.0], [math.log(9), 0.0], [math.log(99), 0.0]]])  # max p 0.99, 0.9, pad
    strong = torch.tensor([[[0.0, L3], [5.0, -5.0], [0.0, 9.0]]])  # sample 0: p(class 0) = 1/4
    valid_u = torch.tensor([[True, True, False]])
    return logits_l, y_l, torch.ones(1, 1, dtype=torch.bool), weak, strong, valid_u


def test_loss_by_hand():
    logits_l, y_l, valid_l, weak, strong, valid_u = _batches()
    # l_s = ln 2; only sample 0 passes tau = 0.95 (0.99), pseudo-label 0, H on the strong view = ln 4, over mu B = 2
    assert fixmatch_loss(logits_l, y_l, valid_l, weak, strong, valid_u).item() == pytest.approx(L2 + 2 * L2 / 2)
    assert fixmatch_loss(logits_l, y_l, valid_l, weak, strong, valid_u, lambda_u=3.0).item() == pytest.approx(
        L2 + 3 * L2)
    # tau = 0.85 also keeps sample 1 (pseudo-label 0, strong p(0) = 1/(1 + e^-10))
    both = L2 + (2 * L2 + math.log1p(math.exp(-10))) / 2
    assert fixmatch_loss(logits_l, y_l, valid_l, weak, strong, valid_u, tau=0.85).item() == pytest.approx(both)


def test_gradient_flows_through_the_strong_view_only():
    logits_l, y_l, valid_l, weak, strong, valid_u = _batches()
    weak.requires_grad_(), strong.requires_grad_()
    fixmatch_loss(logits_l, y_l, valid_l, weak, strong, valid_u).backward()
    assert weak.grad is None or weak.grad.abs().sum() == 0
    assert strong.grad[0, 0].tolist() == pytest.approx([(0.25 - 1) / 2, 0.75 / 2])  # (p - onehot) / (mu B)


@pytest.mark.parametrize("model,views", [("m", "noise"), ("mf", "frames")])
def test_run_picks_views_and_logs_mask_rate(base_kw, model, views):
    res = experiment.run(TrainConfig(method="fixmatch", fixmatch_threshold=0.0, **{**base_kw, "model": model}))
    assert {r["views"] for r in res.rows} == {views}
    stage2 = [c for c in res.curves if c["stage"] == "fixmatch"]
    assert stage2 and all(c["mask_rate"] == 1.0 for c in stage2)


def test_frame_views_without_frames_is_a_clear_error(base_kw):
    with pytest.raises(DataError, match="--fixmatch-views frames.*--fixmatch-views noise"):
        experiment.prepare(TrainConfig(method="fixmatch", fixmatch_views="frames", **base_kw))


@pytest.mark.parametrize("model", ["m", "mf"])
def test_run_does_not_depend_on_stack_neighbours(base_kw, model):
    cfg = TrainConfig(method="fixmatch", fixmatch_threshold=0.5, seeds=(0, 1), **{**base_kw, "model": model})
    together, alone = experiment.run(cfg), experiment.run(cfg.replace(seeds=(1,), fold="2"))
    want = [c["loss"] for c in together.curves if (c["fold"], c["seed"]) == (2, 1)]
    assert [c["loss"] for c in alone.curves] == pytest.approx(want, rel=1e-5)
