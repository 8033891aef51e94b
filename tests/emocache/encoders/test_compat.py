"""The torch internals emocache reads (emocache/encoders/compat_torch.py): fail loudly when one moves."""

from __future__ import annotations

import torch

from emocache.encoders.compat_torch import graphs_compiled


def test_graphs_compiled_counts_each_graph_torch_compile_builds():
    before = graphs_compiled()
    f = torch.compile(lambda x: x * 2 + 1, backend="eager", dynamic=False)
    f(torch.ones(3))
    assert graphs_compiled() == before + 1
    f(torch.ones(3))  # cached: nothing built
    assert graphs_compiled() == before + 1
    f(torch.ones(5))  # another static shape: one more graph
    assert graphs_compiled() == before + 2
