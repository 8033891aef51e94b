"""algorithms/common.py: the one masked mean, the labelled-batch stream and per-run draws for active runs."""

import pytest
import torch

from trainer.algorithms.common import LabelledStream, active_rand, masked_mean, perturb


def test_masked_mean_counts_only_valid_entries():
    x = torch.tensor([[1.0, 2.0, 9.0], [4.0, 6.0, 8.0], [5.0, 5.0, 5.0]])
    mask = torch.tensor([[True, True, False], [True, True, True], [False, False, False]])
    assert masked_mean(x, mask).tolist() == pytest.approx([1.5, 6.0, 0.0])  # all-masked row: 0, not NaN
    assert masked_mean(x).tolist() == pytest.approx([4.0, 6.0, 5.0])


def test_labelled_stream_cycles_full_passes_and_advances_only_active_runs():
    X, y = torch.arange(10.0).unsqueeze(1), torch.arange(10)
    pools = [torch.tensor([0, 1, 2, 3, 4]), torch.tensor([5, 6, 7])]
    s = LabelledStream(X, y, pools, 2, [torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)])
    seen0 = []
    for _ in range(3):  # one pass of run 0: batches of 2, 2, 1
        x, yy, v = s.batch(torch.tensor([True, False]))
        assert not v[1].any()  # the inactive run gets an all-invalid batch
        seen0 += yy[0][v[0]].tolist()
        assert x[0, :, 0][v[0]].tolist() == yy[0][v[0]].float().tolist()
    assert sorted(seen0) == [0, 1, 2, 3, 4]
    # run 1 did not advance while inactive: its first two batches are one full pass of its pool
    first = [s.batch(torch.tensor([False, True]))[1][1] for _ in range(2)]
    assert sorted(first[0].tolist() + first[1][:1].tolist()) == [5, 6, 7]


def test_active_rand_leaves_inactive_generators_untouched():
    g = [torch.Generator().manual_seed(3), torch.Generator().manual_seed(4)]
    a = active_rand("randn", (4,), g, torch.tensor([False, True]))
    assert a[0].abs().sum() == 0
    b = active_rand("randn", (4,), g, torch.tensor([True, True]))
    assert torch.equal(b[0], torch.randn(4, generator=torch.Generator().manual_seed(3)))


def test_perturb_without_noise_or_dropout_is_identity():
    x = torch.randn(2, 3, 5)
    g = [torch.Generator().manual_seed(0)] * 2
    assert torch.equal(perturb(x, torch.ones(5), 0.0, 0.0, g), x)
