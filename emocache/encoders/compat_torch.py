"""Every read of torch internals in emocache, in one place (torch offers no public API for these).

Checked against torch 2.11 and 2.13; ``tests/emocache/encoders/test_compat.py`` fails loudly when one moves.
"""

from __future__ import annotations


def graphs_compiled() -> int:
    """Graphs torch.compile has built in this process so far (dynamo's ``counters["stats"]["unique_graphs"]``,
    torch 2.11 / 2.13); 0 before anything was compiled."""
    from torch._dynamo.utils import counters  # imports dynamo: called only around compiled calls

    return int(counters["stats"]["unique_graphs"])
