"""Eq. 1-5 against values computed by hand."""

import math

import pytest
import torch

from trainer import rewards

P = torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [0.5, 0.5, 0.0]])
PT = torch.tensor([[0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.2, 0.3, 0.5]])


def test_r1_threshold_is_strict_and_scaled_by_C():
    assert rewards.r1(P, delta=0.5, C=2.0).tolist() == [2.0, 0.0, 0.0]  # 0.5 is not > 0.5
    assert rewards.r1(P, delta=0.3, C=1.0).tolist() == [1.0, 1.0, 1.0]


def test_r2_is_max_probability():
    assert rewards.r2(P).tolist() == pytest.approx([0.7, 0.4, 0.5])


def test_r3_argmax_agreement():
    # argmax p = [0, 0, 0] (ties take the first class), argmax p_t = [1, 0, 2]
    assert rewards.r3(P, PT, C=3.0).tolist() == [0.0, 3.0, 0.0]


def test_r4_needs_r1_and_r3():
    assert rewards.r4(P, PT, delta=0.5).tolist() == [0.0, 0.0, 0.0]  # row 2 agrees but 0.4 < 0.5
    assert rewards.r4(P, PT, delta=0.3, C=2.0).tolist() == [0.0, 2.0, 0.0]
    p = torch.tensor([[0.9, 0.1]])
    assert rewards.r4(p, torch.tensor([[0.6, 0.4]]), delta=0.5).tolist() == [1.0]


def test_kl_and_r5():
    kl1 = 0.1 * math.log(0.1 / 0.7) + 0.8 * math.log(0.8 / 0.2)
    kl2 = 0.6 * math.log(0.6 / 0.4) + 0.3 * math.log(0.3 / 0.35) + 0.1 * math.log(0.1 / 0.25)
    kl = rewards.kl(PT, P)
    assert kl[:2].tolist() == pytest.approx([kl1, kl2], rel=1e-5)  # 0.9145, 0.1054
    assert kl[2] > 10  # teacher mass on a class the policy gives 0
    assert rewards.r5(P, PT, theta=0.5).tolist() == [0.0, 1.0, 0.0]
    assert rewards.r5(P, PT, theta=1.0, C=2.0).tolist() == [2.0, 2.0, 0.0]


def test_dispatch_and_teacher_required():
    assert torch.equal(rewards.reward("r1", P, delta=0.5), rewards.r1(P))
    with pytest.raises(ValueError, match="teacher"):
        rewards.reward("r3", P)
    with pytest.raises(ValueError, match="known: r1"):
        rewards.reward("r9", P, PT)


# Similarity rewards (ours) over three classes: anger, contempt (247.5) and joy; S by hand.
S3 = torch.tensor([[1.0, (1 + math.cos(math.radians(22.5))) / 2, 0.5],
                   [(1 + math.cos(math.radians(22.5))) / 2, 1.0, (1 + math.cos(math.radians(112.5))) / 2],
                   [0.5, (1 + math.cos(math.radians(112.5))) / 2, 1.0]])


def test_eswr_pays_the_teacher_class_and_near_misses_above_gamma():
    # answers argmax P = [0, 0, 0]; teacher classes [1, 0, 2]; S[2, 1] = 0.309 is below gamma 0.35 below
    r = rewards.eswr(P, PT, S3, alpha=0.5, gamma=0.5)
    assert r.tolist() == pytest.approx([0.5 * 0.9619397662556434, 1.0, 0.0])  # S[0, 2] = 0.5 is not > 0.5
    assert rewards.eswr(P, PT, S3, alpha=0.5, gamma=0.99).tolist() == [0.0, 1.0, 0.0]
    o = torch.tensor([2, 1, 2])  # sampled answers: joy vs contempt, contempt vs anger, joy vs joy
    assert rewards.eswr(P, PT, S3, 0.5, 0.35, o=o).tolist() == pytest.approx([0.0, 0.5 * 0.9619397662556434, 1.0])


def test_wheel_is_expected_similarity_to_the_teacher_distribution():
    c = (1 + math.cos(math.radians(22.5))) / 2
    # answer 0 on every row: sum_c p_t(c) S[0, c]
    expect = [0.1 * 1 + 0.8 * c + 0.1 * 0.5, 0.6 + 0.3 * c + 0.1 * 0.5, 0.2 + 0.3 * c + 0.5 * 0.5]
    assert rewards.wheel(P, PT, S3).tolist() == pytest.approx(expect)
    assert rewards.reward("wheel", P, PT, S=S3).tolist() == pytest.approx(expect)
    assert rewards.wheel(P, torch.eye(3), S3, o=torch.arange(3)).tolist() == pytest.approx([1, 1, 1])


def test_similarity_rewards_need_teacher_and_matrix():
    with pytest.raises(ValueError, match="teacher"):
        rewards.reward("eswr", P, S=S3)
    with pytest.raises(ValueError, match="similarity matrix"):
        rewards.reward("wheel", P, PT)
    with pytest.raises(ValueError, match="no failing condition"):
        rewards.reward("eswr", P, PT, S=S3, penalty=-1)


def test_a_reward_is_one_registered_function():
    from trainer.config import TrainConfig

    @rewards.register("half-r2")
    def half_r2(p, o=None, C=1.0):
        """Half the policy's confidence, times C (a test reward)."""
        return 0.5 * C * rewards.answer(p, o)[1]

    try:
        assert rewards.reward("half-r2", P, C=2.0).tolist() == pytest.approx([0.7, 0.4, 0.5])
        assert not rewards.REWARDS["half-r2"].teacher and rewards.REWARDS["half-r2"].params == ("o", "C")
        cfg = TrainConfig(method="b-grpo", reward="half-r2")  # a --reward choice, no teacher needed
        assert cfg.readable_name.startswith("b-grpo___six_half-r2_positive")
        with pytest.raises(ValueError, match="no failing condition"):
            TrainConfig(method="b-grpo", reward="half-r2", penalty_value=-1)
        with pytest.raises(ValueError, match="registered twice"):
            rewards.register("half-r2")(half_r2)
    finally:
        del rewards.REWARDS["half-r2"]
    assert [n for n, r in rewards.REWARDS.items() if r.teacher] == ["r3", "r4", "r5", "eswr", "wheel"]
