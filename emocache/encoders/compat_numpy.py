"""Every read of numpy internals in emocache, in one place (numpy offers no public name for these).

Checked against numpy 1.26 and 2.x; ``tests/emocache/encoders/test_compat.py`` fails loudly when one moves.
"""

from __future__ import annotations

import numpy as np


def scalar_reconstructor():
    """The function numpy pickles scalars with (``numpy._core.multiarray.scalar`` in numpy 2,
    ``numpy.core.multiarray.scalar`` in numpy 1): what torch's weights-only unpickler must be allowed to call to
    read a checkpoint holding numpy floats."""
    core = np._core if hasattr(np, "_core") else np.core
    return core.multiarray.scalar
