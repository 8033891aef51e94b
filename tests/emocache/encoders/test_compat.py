"""The torch and numpy internals emocache reads (emocache/encoders/compat_*.py): fail loudly when one moves."""

from __future__ import annotations

import pytest
import torch

from emocache.encoders.compat_torch import graphs_compiled


@pytest.mark.slow
def test_graphs_compiled_counts_each_graph_torch_compile_builds():
    before = graphs_compiled()
    f = torch.compile(lambda x: x * 2 + 1, backend="eager", dynamic=False)
    f(torch.ones(3))
    assert graphs_compiled() == before + 1
    f(torch.ones(3))  # cached: nothing built
    assert graphs_compiled() == before + 1
    f(torch.ones(5))  # another static shape: one more graph
    assert graphs_compiled() == before + 2


def test_numpy_scalar_reconstructor_is_what_numpy_pickles_scalars_with():
    import pickle

    import numpy as np

    from emocache.encoders.compat_numpy import scalar_reconstructor

    reduced = np.float64(1.5).__reduce__()
    assert reduced[0] is scalar_reconstructor()
    assert pickle.loads(pickle.dumps(np.float32(2.5))) == np.float32(2.5)
