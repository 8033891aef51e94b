"""Eq. 6-8: advantage, clipped ratio, k3 KL, by hand."""

import math

import pytest
import torch

from trainer.algorithms.bgrpo import STD_EPS, advantage, bgrpo_loss, k3_kl


def test_advantage_positive_signed_none():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0])
    a = 0.5 / (math.sqrt(1 / 3) + STD_EPS)  # mean 0.5, unbiased std sqrt(1/3)
    assert advantage(r, "signed").tolist() == pytest.approx([a, -a, -a, a], rel=1e-6)
    assert advantage(r, "positive").tolist() == pytest.approx([a, 0, 0, a], rel=1e-6)
    assert advantage(r, "none").tolist() == [1.0, 0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="known: positive"):
        advantage(r, "bogus")


def test_advantage_equal_rewards_is_zero_and_mask_ignores_padding():
    assert advantage(torch.ones(5), "signed").abs().max() == 0
    r = torch.tensor([[1.0, 0.0, 5.0], [2.0, 4.0, 6.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    a = advantage(r, "signed", mask)
    assert a[0].tolist() == pytest.approx([0.5 / (math.sqrt(0.5) + STD_EPS), -0.5 / (math.sqrt(0.5) + STD_EPS), 0])
    assert a[1].tolist() == pytest.approx([-2 / (2 + STD_EPS), 0, 2 / (2 + STD_EPS)])


def test_k3_kl():
    assert k3_kl(torch.tensor([math.log(0.3)]), torch.tensor([math.log(0.3)])).item() == pytest.approx(0)
    # pi_ref / pi = 2 -> 2 - ln 2 - 1
    assert k3_kl(torch.log(torch.tensor([0.14])), torch.log(torch.tensor([0.28]))).item() == pytest.approx(
        1 - math.log(2), rel=1e-5)
    assert (k3_kl(torch.randn(100), torch.randn(100)) >= 0).all()


def test_loss_value_with_clipping_and_kl():
    logp = torch.log(torch.tensor([0.5, 0.14]))
    logp_old = torch.log(torch.tensor([0.4, 0.2]))  # ratios 1.25, 0.7
    logp_ref = torch.log(torch.tensor([0.5, 0.28]))  # KL 0 and 1 - ln 2
    adv = torch.tensor([1.0, -1.0])
    # min(1.25*1, 1.2*1) = 1.2 ; min(0.7*-1, 0.8*-1) = -0.8 ; beta = 0.1
    want = -((1.2 - 0.0) + (-0.8 - 0.1 * (1 - math.log(2)))) / 2
    assert bgrpo_loss(logp, logp_old, logp_ref, adv, eps=0.2, beta=0.1).item() == pytest.approx(want, rel=1e-5)


def test_clipped_sample_has_no_surrogate_gradient():
    logp = torch.log(torch.tensor([0.5, 0.3])).requires_grad_()
    logp_old = torch.log(torch.tensor([0.4, 0.3]))  # ratio 1.25 > 1 + eps for sample 0
    bgrpo_loss(logp, logp_old, logp.detach(), torch.tensor([1.0, 1.0]), eps=0.2, beta=0.0).backward()
    assert logp.grad[0] == 0
    assert logp.grad[1] == pytest.approx(-0.5)  # -A/B * ratio


def test_on_policy_gradient_is_minus_advantage_over_B():
    logp = torch.log(torch.tensor([0.2, 0.5, 0.9])).requires_grad_()
    adv = torch.tensor([0.3, 0.0, 1.2])
    bgrpo_loss(logp, logp.detach(), logp.detach(), adv, eps=0.2, beta=0.5).backward()
    assert logp.grad.tolist() == pytest.approx((-adv / 3).tolist())


def test_batched_groups_with_mask():
    logp = torch.log(torch.tensor([[0.5, 0.5, 0.9], [0.5, 0.5, 0.5]]))
    adv = torch.tensor([[1.0, 3.0, 100.0], [1.0, 3.0, 2.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    loss = bgrpo_loss(logp, logp, logp, adv, mask=mask)
    assert loss.tolist() == pytest.approx([-2.0, -2.0])
