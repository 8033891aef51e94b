"""RRPO's regularisers (trainer.robust) against hand-computed values, and the stacked loop that combines them."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainer.algorithms.supervised import train_supervised
from trainer.data import DataError
from trainer.models import StackedAdam, StackedMLP
from trainer.robust import (FrameBank, MixDraws, Regularization, adv_delta, eam_draws, eam_loss, eam_mix, eam_pooled,
                            fgm_delta, frame_bank, ls_cross_entropy, ser_loss, smooth_labels, train_robust)


def test_smooth_labels_eq2():
    got = smooth_labels(torch.tensor([0, 2]), 4, 0.1)
    assert torch.allclose(got, torch.tensor([[0.925, 0.025, 0.025, 0.025], [0.025, 0.025, 0.925, 0.025]]))
    assert torch.equal(smooth_labels(torch.tensor([1]), 3, 0.0), torch.tensor([[0.0, 1.0, 0.0]]))


def test_ls_cross_entropy_by_hand_and_as_torch_label_smoothing():
    logits = torch.tensor([[math.log(1.0), math.log(3.0)]])  # softmax (0.25, 0.75)
    got = ls_cross_entropy(logits, smooth_labels(torch.tensor([0]), 2, 0.1))  # y' = (0.95, 0.05)
    assert got.item() == pytest.approx(0.95 * math.log(4) + 0.05 * math.log(4 / 3), rel=1e-6)  # 1.331363
    z, y = torch.randn(7, 5), torch.randint(0, 5, (7,))
    assert torch.allclose(ls_cross_entropy(z, smooth_labels(y, 5, 0.1)),
                          F.cross_entropy(z, y, label_smoothing=0.1, reduction="none"), atol=1e-6)


def test_eam_loss_eq3_weights_the_two_labels_and_masks_padding():
    logits = torch.tensor([[[math.log(1.0), math.log(3.0)], [5.0, -5.0]]])  # (M=1, B=2, K=2)
    y_i, y_j = torch.tensor([[0, 0]]), torch.tensor([[1, 1]])
    lam = torch.tensor([[0.2, 0.9]])
    got = eam_loss(logits, y_i, y_j, lam, 2, 0.0, torch.tensor([[True, False]]))
    assert got.item() == pytest.approx(0.8 * math.log(4) + 0.2 * math.log(4 / 3), rel=1e-6)  # 1.166572
    # lam = 0 and eps = 0: plain cross-entropy
    z, y = torch.randn(2, 3, 4), torch.randint(0, 4, (2, 3))
    plain = eam_loss(z, y, (y + 1) % 4, torch.zeros(2, 3), 4, 0.0)
    assert torch.allclose(plain, F.cross_entropy(z.transpose(1, 2), y, reduction="none").mean(1), atol=1e-6)


def test_fgm_delta_eq4_has_norm_eps_per_sample_and_zero_for_zero_gradient():
    g = torch.tensor([[[3.0, 4.0], [0.0, 0.0]]])
    d = fgm_delta(g, 0.5)
    assert torch.allclose(d, torch.tensor([[[0.3, 0.4], [0.0, 0.0]]]))
    assert ser_loss(torch.tensor([1.0]), torch.tensor([2.0]), 0.5).item() == 2.0  # eq. 5


def test_adv_delta_is_eq4_in_the_standardised_space():
    model = StackedMLP.from_seeds([0], 3, 2, 4)
    model.standardize(torch.tensor([[0.0, 0, 0], [2.0, 20, 200]]), [torch.tensor([0, 1])])
    g = torch.tensor([[[1.0, 1.0, 1.0]]])
    d = adv_delta(model, g, 0.5)  # (1, 1, 3) in x units
    z_step = d * model.inv_sd  # the step the first layer sees
    assert z_step.norm().item() == pytest.approx(0.5, rel=1e-5)
    # the direction is the gradient in z (g / inv_sd = g * sd: sd 1.41, 14.1, 141)
    assert torch.allclose(z_step / z_step.norm(), (g / model.inv_sd) / (g / model.inv_sd).norm(), atol=1e-6)


def test_adversarial_delta_raises_the_loss():
    torch.manual_seed(0)
    model = StackedMLP.from_seeds([1], 6, 3, 8)
    x = torch.randn(1, 16, 6, requires_grad=True)
    y = torch.randint(0, 3, (1, 16))
    loss = eam_loss(model(x), y, y, torch.zeros(1, 16), 3, 0.1)
    (g,) = torch.autograd.grad(loss.sum(), x)
    up = eam_loss(model(x.detach() + fgm_delta(g, 0.05)), y, y, torch.zeros(1, 16), 3, 0.1)
    down = eam_loss(model(x.detach() - fgm_delta(g, 0.05)), y, y, torch.zeros(1, 16), 3, 0.1)
    assert up.item() > loss.item() > down.item()


def test_eam_mix_algorithm1_by_hand():
    f0 = torch.ones(4, 2)  # l_0 = 4
    f1 = torch.full((2, 2), 2.0)  # l_1 = 2
    d = MixDraws(j=torch.tensor([1, 0]), l_mix=torch.tensor([2, 1]), b_i=torch.tensor([1, 0]),
                 b_j=torch.tensor([0, 3]), r=torch.tensor([10.0, 0.0], dtype=torch.float64))
    mixed, lam = eam_mix([f0, f1], d)
    # i = 0: s_i = ones (E_i 1), s_j = 2s (E_j 4), E'_j = 4 / 10, s'_j = sqrt(0.1) * 2, lam = 2/4 * 0.4 / 1.4
    s = 2 * math.sqrt(0.1)
    assert torch.allclose(mixed[0], torch.tensor([[1, 1], [1 + s, 1 + s], [1 + s, 1 + s], [1, 1]]))
    # i = 1: s_i = f1[0] (E_i 4), s_j = f0[3] (E_j 1), r = 0 dB: s'_j = s_j, lam = 1/2 * 1 / 5
    assert torch.allclose(mixed[1], torch.tensor([[3.0, 3.0], [2.0, 2.0]]))
    assert torch.allclose(lam, torch.tensor([0.5 * 0.4 / 1.4, 0.1]))
    bank = FrameBank(torch.cat([f0, f1]), torch.tensor([0, 4]), torch.tensor([4, 2]),
                     torch.stack([f0.sum(0), f1.sum(0)]).double())
    pooled, lam_fast = eam_pooled(bank, torch.tensor([0, 1]), torch.tensor([1, 0]), d)
    assert torch.allclose(pooled, torch.stack([m.mean(0) for m in mixed]))
    assert torch.allclose(pooled[0], torch.full((2,), (2 + 2 * (1 + s)) / 4))
    assert torch.allclose(lam_fast, lam)


def test_eam_draws_follow_algorithm1():
    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([1, 2, 3, 10, 40, 7, 5, 100])
    for _ in range(200):
        d = eam_draws(lengths, gen, 2.0, 8.0)
        i = torch.arange(len(lengths))
        assert (d.j != i).all()
        l_i, l_j = lengths, lengths[d.j]
        assert (d.l_mix >= 1).all() and (d.l_mix <= torch.clamp(l_i // 2, min=1)).all() and (d.l_mix <= l_j).all()
        assert (d.b_i >= 0).all() and (d.b_i + d.l_mix <= l_i).all()
        assert (d.b_j >= 0).all() and (d.b_j + d.l_mix <= l_j).all()
        assert ((d.r >= 2) & (d.r <= 8)).all()
    # the permutation of lines 1-7: a fixed point i moves to (i + 1) mod B
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    pi = torch.randperm(8, generator=g1)
    want = torch.where(pi == torch.arange(8), (pi + 1) % 8, pi)
    assert torch.equal(eam_draws(lengths, g2, 0.0, 1.0).j, want)
    assert eam_draws(torch.tensor([6]), gen, 0.0, 1.0).j.item() == 0  # B = 1: j = i (Algorithm 1 as written)


def test_eam_pooled_equals_mean_of_eam_mix_frames():
    gen = torch.Generator().manual_seed(3)
    frames = [torch.randn(int(n), 5) * 3 for n in torch.randint(1, 30, (9,), generator=gen)]
    lengths = torch.tensor([len(f) for f in frames])
    bank = FrameBank(torch.cat(frames), torch.cumsum(lengths, 0) - lengths, lengths,
                     torch.stack([f.double().sum(0) for f in frames]))
    d = eam_draws(lengths, gen, 0.0, 10.0)
    mixed, lam = eam_mix(frames, d)
    pooled, lam_fast = eam_pooled(bank, torch.arange(9), d.j, d)
    assert torch.allclose(pooled, torch.stack([m.mean(0) for m in mixed]), atol=1e-5)
    assert torch.allclose(lam_fast, lam, atol=1e-6) and (lam > 0).all() and (lam <= 0.5).all()


class _Store:
    """The frame API of an emocache store over in-memory arrays."""

    def __init__(self, frames: dict, frames_on=True):
        self.f, self.on = frames, frames_on

    def has_frames(self, model, dataset):
        return self.on

    def iter_frames(self, model, dataset, keys):
        return ((k, self.f[k]) for k in keys)


def test_frame_bank_checks_frames_average_to_pooled():
    rng = np.random.default_rng(0)
    frames = {f"k{i}": rng.normal(0, 1, (int(rng.integers(2, 6)), 4)).astype(np.float16) for i in range(5)}
    keys = list(frames)
    pooled = torch.tensor(np.stack([frames[k].astype(np.float32).mean(0) for k in keys]))
    bank = frame_bank(_Store(frames), "fb", "ds", keys, np.array([1, 3]), pooled, {"pooling": "mean", "frame_dim": 4})
    assert bank.length.tolist() == [0, len(frames["k1"]), 0, len(frames["k3"]), 0]
    assert torch.allclose(bank.frames(3), torch.tensor(frames["k3"].astype(np.float32)))
    assert torch.allclose(bank.total[1].float(), pooled[1] * len(frames["k1"]), atol=1e-5)
    with pytest.raises(DataError, match="egemaps: frame descriptors vs functionals"):
        frame_bank(_Store(frames), "eg", "ds", keys, np.array([1]), torch.zeros(5, 88),
                   {"pooling": "eGeMAPSv02 functionals", "frame_dim": 25})
    with pytest.raises(DataError, match="not the mean of its frames"):
        frame_bank(_Store(frames), "fb", "ds", keys, np.array([2]), pooled + 1.0, {"pooling": "given"})
    with pytest.raises(DataError, match="without frames"):
        frame_bank(_Store(frames, frames_on=False), "fb", "ds", keys, np.array([2]), pooled, {})


def _toy(m=2, n=40, d=6, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    frames = [torch.randn(int(k), d, generator=g) + y[i] for i, k in enumerate(torch.randint(2, 9, (n,), generator=g))]
    lengths = torch.tensor([len(f) for f in frames])
    bank = FrameBank(torch.cat(frames), torch.cumsum(lengths, 0) - lengths, lengths,
                     torch.stack([f.double().sum(0) for f in frames]))
    X = torch.stack([f.mean(0) for f in frames])
    pools = [torch.arange(n)[r::m] for r in range(m)]
    return X, y, pools, bank


def _train(X, y, pools, reg, bank=None, epochs=3):
    model = StackedMLP.from_seeds([1, 2], X.shape[1], 3, 8)
    opt = StackedAdam(model.parameters(), lr=1e-2)
    gens = [torch.Generator().manual_seed(s) for s in (10, 11)]
    mix = [torch.Generator().manual_seed(s) for s in (20, 21)]
    train_robust(model, opt, X, y, pools, epochs, 8, gens, 3, reg, bank, mix)
    return model


def test_train_robust_without_regularisers_is_train_supervised():
    X, y, pools, _ = _toy()
    got = _train(X, y, pools, Regularization())
    ref = StackedMLP.from_seeds([1, 2], X.shape[1], 3, 8)
    train_supervised(ref, StackedAdam(ref.parameters(), lr=1e-2), X, y, pools, 3, 8,
                     [torch.Generator().manual_seed(s) for s in (10, 11)])
    for a, b in zip(got.parameters(), ref.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def test_each_regulariser_changes_training_and_is_deterministic():
    X, y, pools, bank = _toy()
    plain = _train(X, y, pools, Regularization())
    for reg in (Regularization(ls_epsilon=0.1), Regularization(eam=True), Regularization(adv=True),
                Regularization(0.1, True, 0.0, 10.0, True, 0.5, 0.5)):
        a, b = _train(X, y, pools, reg, bank), _train(X, y, pools, reg, bank)
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters())), reg
        assert not torch.allclose(a.w1, plain.w1, atol=1e-4), reg


def test_eam_run_draws_do_not_depend_on_stack_neighbours():
    X, y, pools, bank = _toy()
    both = _train(X, y, pools, Regularization(eam=True), bank)
    model = StackedMLP.from_seeds([1], X.shape[1], 3, 8)
    train_robust(model, StackedAdam(model.parameters(), lr=1e-2), X, y, pools[:1], 3, 8,
                 [torch.Generator().manual_seed(10)], 3, Regularization(eam=True), bank,
                 [torch.Generator().manual_seed(20)])
    assert torch.allclose(model.w1[0], both.w1[0], atol=1e-5)
