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


# --- beyond the paper (ours): class-balanced advantage, penalty value, supervised term; CleanRL diagnostics ---

from trainer import experiment  # noqa: E402
from trainer.algorithms.bgrpo import group_normalise, inverse_frequency, policy_update_stats  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402
from trainer.rewards import reward  # noqa: E402


def test_class_norm_normalises_within_each_predicted_class():
    r = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 7.0])
    o = torch.tensor([0, 0, 0, 1, 1, 2])  # class 0: 1,0,1; class 1: 1,0; class 2 alone
    a = advantage(r, "signed", o=o, balance="class-norm", n_classes=3)
    s0, s1 = math.sqrt(1 / 3), math.sqrt(0.5)  # unbiased stds of (1,0,1) and (1,0)
    want = [(1 / 3) / (s0 + STD_EPS), (-2 / 3) / (s0 + STD_EPS), (1 / 3) / (s0 + STD_EPS),
            0.5 / (s1 + STD_EPS), -0.5 / (s1 + STD_EPS), 0.0]
    assert a.tolist() == pytest.approx(want, rel=1e-5)
    assert advantage(r, "positive", o=o, balance="class-norm", n_classes=3).tolist() == pytest.approx(
        [max(w, 0) for w in want], rel=1e-5)
    # one group over the whole batch is eq. 6
    one_group = group_normalise(r, None, torch.zeros_like(o), 1)
    assert one_group.tolist() == pytest.approx(advantage(r, "signed").tolist(), rel=1e-6)
    with pytest.raises(ValueError, match="positive or signed"):
        advantage(r, "none", o=o, balance="class-norm", n_classes=3)


def test_inverse_frequency_gives_each_predicted_class_equal_total_weight():
    o = torch.tensor([[0, 0, 0, 1, 2, 2], [1, 1, 1, 1, 0, 0]])
    mask = torch.tensor([[True] * 6, [True, True, True, True, False, False]])
    w = inverse_frequency(o, mask, 3)
    # row 0: n = 6, K = 3 -> class 0: 6/(3*3), class 1: 6/(3*1), class 2: 6/(3*2); row 1: one class, weight 1
    assert w[0].tolist() == pytest.approx([2 / 3, 2 / 3, 2 / 3, 2.0, 1.0, 1.0])
    assert w[1].tolist() == pytest.approx([1, 1, 1, 1, 0, 0])
    r = torch.tensor([[1.0, 1.0, 0.0, 1.0, 0.0, 0.0]])
    a = advantage(r, "positive", o=o[:1], balance="inverse-freq", n_classes=3)
    assert a[0].tolist() == pytest.approx((advantage(r, "positive") * w[:1])[0].tolist())


def test_penalty_value_and_why_eq6_ignores_it():
    p = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.55, 0.45], [0.5, 0.5]])
    assert reward("r1", p, delta=0.58, C=2.0, penalty=-1.0).tolist() == [2.0, 2.0, -1.0, -1.0]
    assert reward("r1", p, delta=0.58).tolist() == [1.0, 1.0, 0.0, 0.0]
    r_paper, r_pen = reward("r1", p, delta=0.58), reward("r1", p, delta=0.58, C=2.0, penalty=-1.0)
    # eq. 6 is invariant to r -> 3 r - 1 (up to the 1e-4 added to the std); the raw reward is not
    assert advantage(r_pen, "signed").tolist() == pytest.approx(advantage(r_paper, "signed").tolist(), rel=1e-3)
    assert advantage(r_pen, "none").tolist() != advantage(r_paper, "none").tolist()
    with pytest.raises(ValueError, match="r2"):
        reward("r2", p, penalty=-1.0)
    with pytest.raises(ValueError, match="penalty-value"):
        TrainConfig(reward="r2", penalty_value=-1.0)


def test_policy_update_stats_by_hand():
    logp_old = torch.log(torch.tensor([[0.2, 0.5, 0.4, 0.9]]))
    logp = torch.log(torch.tensor([[0.3, 0.5, 0.2, 0.1]]))  # ratios 1.5, 1, 0.5, 1/9; the last is padding
    mask = torch.tensor([[True, True, True, False]])
    kl, clip = policy_update_stats(logp, logp_old, 0.2, mask)
    want_kl = ((0.5 - math.log(1.5)) + 0 + (-0.5 - math.log(0.5))) / 3
    assert kl.item() == pytest.approx(want_kl, rel=1e-5) and clip.item() == pytest.approx(2 / 3)
    assert policy_update_stats(logp_old, logp_old, 0.2)[1].item() == 0


def _stage2(res):
    return [c for c in res.curves if c["stage"] == "b-grpo"]


def test_clip_never_acts_at_mu_1_and_can_at_mu_above_1(base_kw):
    on_policy = _stage2(experiment.run(TrainConfig(method="b-grpo", **base_kw)))
    assert all(c["clip_frac"] == 0 and c["approx_kl"] == 0 for c in on_policy)
    kw = {**base_kw, "lr": 0.05, "epochs_stage2": 3}
    off = _stage2(experiment.run(TrainConfig(method="b-grpo", mu=4, reward="r2", advantage="signed", **kw)))
    assert max(c["clip_frac"] for c in off) > 0 and max(c["approx_kl"] for c in off) > 0


@pytest.mark.parametrize("kw", [dict(sup_weight=1.0), dict(balance="class-norm"), dict(balance="inverse-freq"),
                                dict(sup_weight=0.5, balance="inverse-freq", action="sample")])
def test_stabilised_variants_run_and_do_not_depend_on_stack_neighbours(base_kw, kw):
    cfg = TrainConfig(method="b-grpo", seeds=(0, 1), **{**base_kw, **kw})
    together = experiment.run(cfg)
    alone = experiment.run(cfg.replace(seeds=(1,), fold="2"))
    want = [c["loss"] for c in together.curves if (c["fold"], c["seed"]) == (2, 1)]
    assert [c["loss"] for c in alone.curves] == pytest.approx(want, rel=1e-5)
    row = next(r for r in together.rows if r["stage"] == "final")
    assert (row["balance"], row["sup_weight"]) == (cfg.balance, cfg.sup_weight)
    assert ("sup_loss" in _stage2(together)[0]) == (cfg.sup_weight > 0)
    assert cfg.run_name != TrainConfig(method="b-grpo", **base_kw).run_name


def test_sup_weight_pulls_stage2_towards_the_labels(base_kw):
    """With a large weight on the labelled term the stage-2 policy's labelled cross-entropy falls."""
    kw = {**base_kw, "epochs_stage2": 6, "lr": 3e-3}
    res = experiment.run(TrainConfig(method="b-grpo", sup_weight=5.0, **kw))
    sup = [c["sup_loss"] for c in _stage2(res) if c["fold"] == 1]
    assert sup[-1] < sup[0]


@pytest.mark.parametrize("action", ["greedy", "sample"])
def test_the_reward_judges_the_action_taken(base_kw, monkeypatch, action):
    from trainer.algorithms import bgrpo
    from trainer.rewards import r1

    calls = []
    make = bgrpo.make_reward_fn

    def recording(ctx):
        fn = make(ctx)

        def wrapped(p, p_t, answers=None):
            r = fn(p, p_t, answers)
            calls.append((p, answers, r))
            return r
        return wrapped

    monkeypatch.setattr(bgrpo, "make_reward_fn", recording)
    experiment.run(TrainConfig(method="b-grpo", action=action, seeds=(0, 1), delta=0.3, **base_kw))
    assert calls
    if action == "greedy":
        assert all(a is None for _, a, _ in calls)  # eq. 1-5 judge the prediction argmax p
        return
    # the drawn label is judged: r1 pays when p(o | q) > delta, which differs from the argmax somewhere
    assert all(r.equal(r1(p, 0.3, o=a)) for p, a, r in calls)
    assert any(not a.equal(p.argmax(-1)) for p, a, _ in calls)
    assert any(not r.equal(r1(p, 0.3)) for p, a, r in calls)
