"""Stacked policy and masked Adam behave exactly like M separate PolicyMLPs with torch.optim.Adam."""

import torch

from trainer.data import epoch_batches
from trainer.models import PolicyMLP, StackedAdam, StackedMLP


def test_stacked_forward_and_masked_adam_match_separate_models():
    torch.manual_seed(0)
    ms = [PolicyMLP(10, 3, 8) for _ in range(2)]
    st = StackedMLP.from_modules(ms)
    opts = [torch.optim.Adam(m.parameters(), 1e-2) for m in ms]
    sa = StackedAdam(st.parameters(), 1e-2)
    x, y = torch.randn(2, 5, 10), torch.randint(0, 3, (2, 5))
    assert torch.allclose(st(x)[1], ms[1](x[1]), atol=1e-6)
    for it in range(6):
        active = torch.tensor([True, it % 2 == 0])
        out = st(x)
        loss = torch.nn.functional.cross_entropy(out.transpose(1, 2), y, reduction="none").mean(1).sum()
        sa.zero_grad()
        loss.backward()
        sa.step(active)
        for r, (m, o) in enumerate(zip(ms, opts)):
            if active[r]:
                o.zero_grad()
                torch.nn.functional.cross_entropy(m(x[r]), y[r]).backward()
                o.step()
    for r in range(2):
        for a, b in zip(st.member(r).parameters(), ms[r].parameters()):
            assert torch.allclose(a, b, atol=1e-5)


def test_from_seeds_matches_policy_init():
    torch.manual_seed(5)
    ref = PolicyMLP(6, 2, 4)
    st = StackedMLP.from_seeds([3, 5], 6, 2, 4)
    assert torch.equal(st.member(1)[0].weight, ref[0].weight)


def test_epoch_batches_visit_each_row_once_with_uneven_pools():
    pools = [torch.arange(10, 20), torch.arange(100, 104)]
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    seen = [[], []]
    actives = []
    for idx, valid, active in epoch_batches(pools, 3, gens):
        actives.append(active.tolist())
        for r in range(2):
            seen[r] += idx[r][valid[r]].tolist()
    assert sorted(seen[0]) == list(range(10, 20)) and sorted(seen[1]) == list(range(100, 104))
    assert actives == [[True, True], [True, True], [True, False], [True, False]]


def test_standardize_equals_training_on_z_scored_inputs():
    torch.manual_seed(1)
    X = torch.randn(50, 6) * 5 + 3
    pools = [torch.arange(0, 30), torch.arange(20, 50)]
    st = StackedMLP.from_seeds([0, 1], 6, 3, 4)
    plain = StackedMLP.from_seeds([0, 1], 6, 3, 4)
    st.standardize(X, pools)
    for r, rows in enumerate(pools):
        z = (X - X[rows].mean(0)) / X[rows].std(0)
        assert torch.allclose(st.predict_all(X)[r], plain.predict_all(z)[r], atol=1e-5)
    assert st.frozen_copy().standardized and torch.equal(st.frozen_copy().mu, st.mu)


def test_inactive_member_keeps_parameters_and_adam_state():
    torch.manual_seed(2)
    st = StackedMLP.from_seeds([0, 1, 2], 6, 3, 4)
    sa = StackedAdam(st.parameters(), 1e-2)
    x, y = torch.randn(3, 5, 6), torch.randint(0, 3, (3, 5))

    def step(active):
        loss = torch.nn.functional.cross_entropy(st(x).transpose(1, 2), y, reduction="none").mean(1).sum()
        sa.zero_grad()
        loss.backward()
        sa.step(active)

    step(None)
    before = [p.detach().clone() for p in st.member(1).parameters()]
    state = [{k: v.clone() for k, v in s.items()} for s in sa.member_state(1)]
    for _ in range(3):
        step(torch.tensor([True, False, True]))
    assert all(torch.equal(a, b) for a, b in zip(before, st.member(1).parameters()))
    for old, new in zip(state, sa.member_state(1)):
        assert old.keys() == new.keys() == {"step", "exp_avg", "exp_avg_sq"}
        assert all(torch.equal(old[k], new[k]) for k in old)
    assert int(sa.member_state(0)[0]["step"]) == 4 and int(sa.member_state(1)[0]["step"]) == 1
    assert not torch.equal(st.member(0)[0].weight, StackedMLP.from_seeds([0], 6, 3, 4).member(0)[0].weight)


def test_stacked_adam_uses_no_private_torch_api():
    import inspect

    src = inspect.getsource(StackedAdam)
    assert "torch._" not in src and "._fused" not in src
