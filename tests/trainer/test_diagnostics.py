"""The collapse rule and the under-trained rule on constructed histograms and loss curves."""

import math

import torch

from trainer.diagnostics import class_shares, collapse_onset, collapsed, entropy, under_trained

PRIOR = torch.tensor([[0.25, 0.25, 0.25, 0.25]], dtype=torch.float64)


def test_class_shares_count_valid_predictions_per_run():
    pred = torch.tensor([[0, 0, 1, 3], [2, 2, 2, 0]])
    valid = torch.tensor([[True, True, True, False], [True, True, True, True]])
    s = class_shares(pred, valid, 4)
    assert torch.allclose(s, torch.tensor([[2 / 3, 1 / 3, 0, 0], [0.25, 0, 0.75, 0]], dtype=torch.float64))


def test_entropy_of_uniform_and_one_hot():
    assert entropy(PRIOR).item() == math.log(4)
    assert entropy(torch.tensor([1.0, 0, 0, 0])).item() == 0


def test_a_class_below_a_quarter_of_its_prior_is_collapse():
    just_above = torch.tensor([[0.0626, 0.3, 0.3, 0.3374]], dtype=torch.float64)  # 0.0626 >= 0.25 * 0.25
    just_below = torch.tensor([[0.0624, 0.3, 0.3, 0.3376]], dtype=torch.float64)
    assert not collapsed(just_above, PRIOR).item()
    assert collapsed(just_below, PRIOR).item()


def test_entropy_below_half_the_priors_is_collapse():
    # two classes at 0.07 keep every share above a quarter of a 0.1 prior, but the entropy falls under half
    prior = torch.tensor([[0.1, 0.1, 0.8]], dtype=torch.float64)
    peaked = torch.tensor([[0.026, 0.026, 0.948]], dtype=torch.float64)
    assert entropy(peaked).item() < 0.5 * entropy(prior).item()
    assert collapsed(peaked, prior).item()
    assert not collapsed(torch.tensor([[0.08, 0.08, 0.84]], dtype=torch.float64), prior).item()


def test_rare_classes_are_not_judged_by_the_share_rule():
    prior = torch.tensor([[0.01, 0.33, 0.33, 0.33]], dtype=torch.float64)
    assert not collapsed(torch.tensor([[0.0, 0.34, 0.33, 0.33]], dtype=torch.float64), prior).item()


def test_collapse_onset_is_the_start_of_the_final_collapsed_stretch():
    flags = [torch.tensor(f) for f in ([False, True, False], [True, True, False], [False, True, True],
                                       [True, True, True], [True, True, False])]
    out, onset = collapse_onset(flags, [10, 20, 30, 40, 50])
    assert out == [True, True, False] and onset == [40, 10, -1]


def test_under_trained_rule():
    flat = [0.5 + 0.5 * math.exp(-e / 5) for e in range(100)]
    steep = [2.0 - 0.01 * e for e in range(100)]  # 0.1 (5 % of the first loss) per 10 epochs
    assert under_trained(steep) and not under_trained(flat)
    assert not under_trained([1.0 - 0.0008 * e for e in range(100)])  # 0.8 % of the first loss per 10 epochs
    assert not under_trained([1.0 * 0.5 ** e for e in range(100)])  # near 0 at the end: relative drops do not count
    assert not under_trained([1.0, 0.5])  # too short to judge
