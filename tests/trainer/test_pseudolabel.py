"""Pseudo-labelling (Lee 2013, eq. 1, 15, 16 with a confidence threshold): the loss by hand, the schedule, runs."""

import math

import pytest
import torch

from trainer import experiment
from trainer.algorithms.pseudolabel import alpha_schedule, pseudo_label_loss, pseudo_labels
from trainer.config import TrainConfig

L2, L3 = math.log(2), math.log(3)


def _batches():
    logits_l = torch.tensor([[[0.0, 0.0], [L3, 0.0]]])  # p = (1/2, 1/2), (3/4, 1/4)
    y_l = torch.tensor([[0, 1]])  # CE = ln 2, ln 4
    logits_u = torch.tensor([[[math.log(9), 0.0], [0.0, 0.0], [math.log(99), 0.0]]])  # max p = 0.9, 0.5, 0.99
    valid_u = torch.tensor([[True, True, False]])  # the 0.99 sample is padding
    return logits_l, y_l, torch.ones(1, 2, dtype=torch.bool), logits_u, valid_u


def test_pseudo_labels_are_argmax_above_threshold():
    y_hat, keep = pseudo_labels(torch.tensor([[0.0, L3, 0.0], [5.0, 0.0, 0.0]]), 0.7)
    assert y_hat.tolist() == [1, 0] and keep.tolist() == [False, True]  # p = 0.6 and 0.987


def test_loss_by_hand():
    logits_l, y_l, valid_l, logits_u, valid_u = _batches()
    # supervised: (ln 2 + ln 4) / 2; unlabelled: only the 0.9 sample passes tau = 0.85, CE = -ln 0.9, over n' = 2
    want = 1.5 * L2 + 3.0 * (-math.log(0.9)) / 2
    got = pseudo_label_loss(logits_l, y_l, valid_l, logits_u, valid_u, alpha=3.0, tau=0.85)
    assert got.tolist() == pytest.approx([want], rel=1e-5)
    # tau above every confidence: only the supervised term is left
    assert pseudo_label_loss(logits_l, y_l, valid_l, logits_u, valid_u, 3.0, 0.95).item() == pytest.approx(1.5 * L2)


def test_pseudo_label_is_a_constant_target():
    logits_l, y_l, valid_l, logits_u, valid_u = _batches()
    logits_u.requires_grad_()
    pseudo_label_loss(logits_l, y_l, valid_l, logits_u, valid_u, alpha=2.0, tau=0.85).sum().backward()
    # d/dz CE(z, y_hat) = p - onehot(y_hat), scaled by alpha / n'; other samples get no gradient
    assert logits_u.grad[0, 0].tolist() == pytest.approx([2.0 / 2 * (0.9 - 1), 2.0 / 2 * 0.1], rel=1e-5)
    assert logits_u.grad[0, 1:].abs().sum() == 0


def test_alpha_schedule_eq16():
    assert [alpha_schedule(e, 10, 3.0, 0.5) for e in (0, 1, 4, 9)] == pytest.approx([0.6, 1.2, 3.0, 3.0])
    assert alpha_schedule(0, 10, 3.0, 0.0) == 3.0


@pytest.mark.parametrize("tau,rate", [(1.0, 0.0), (0.0, 1.0)])
def test_run_logs_mask_rate_and_alpha(base_kw, tau, rate):
    res = experiment.run(TrainConfig(method="pseudo-label", pseudo_threshold=tau, pseudo_rampup=1.0, **base_kw))
    stage2 = [c for c in res.curves if c["stage"] == "pseudo-label"]
    assert stage2 and all(c["mask_rate"] == rate for c in stage2)
    assert [c["alpha"] for c in stage2 if c["fold"] == 1] == pytest.approx([1.5, 3.0])  # 2 epochs, ramp over both
    final = [r for r in res.rows if r["stage"] == "final"]
    assert final[0]["n_unlabeled"] > 0 and all(0 <= r["macro_f1"] <= 1 for r in final)


def test_run_does_not_depend_on_stack_neighbours(base_kw):
    cfg = TrainConfig(method="pseudo-label", pseudo_threshold=0.5, seeds=(0, 1), **base_kw)
    together, alone = experiment.run(cfg), experiment.run(cfg.replace(seeds=(1,), fold="2"))
    want = [c["loss"] for c in together.curves if (c["fold"], c["seed"]) == (2, 1)]
    assert [c["loss"] for c in alone.curves] == pytest.approx(want, rel=1e-5)


def test_bad_threshold_is_a_clear_error():
    with pytest.raises(ValueError, match="--pseudo-threshold"):
        TrainConfig(method="pseudo-label", pseudo_threshold=1.5)


def test_non_default_settings_get_their_own_run_folder():
    assert TrainConfig(method="pseudo-label", model="m").readable_name == "pseudo-label_m__six"
    assert TrainConfig(method="pseudo-label", pseudo_threshold=0.8).readable_name.endswith("_tau0.8")
    assert TrainConfig(method="fixmatch", fixmatch_views="noise").readable_name.endswith("_views-noise")
