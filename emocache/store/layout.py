"""The store's layout in names and numbers: format version, index codes, block names, index-row arithmetic."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FORMAT = 1
"""``emocache_format`` in the root attributes; any layout change bumps it."""
PENDING, FAILED = -1, -2
"""Index offsets of an uncommitted row and of a failed utterance (done rows have offset >= 0)."""
F16_MAX = 65504.0
DEFAULT_BLOCK = 128
BLOCKS = "blocks"
"""The entry sub-group holding one group per block."""


def block_name(b: int) -> str:
    """The group name of block ``b`` inside ``<entry>/blocks/`` (``b000017``)."""
    return f"b{b:06d}"


def block_path(b: int) -> str:
    """Block ``b``'s group path relative to its entry (``blocks/b000017``)."""
    return f"{BLOCKS}/{block_name(b)}"


def invalid_rows(idx: np.ndarray) -> np.ndarray:
    """(N,) bool: index rows that no writer produces (offset below -2, or a done row with a negative length)."""
    return (idx[:, 0] < FAILED) | ((idx[:, 0] >= 0) & (idx[:, 1] < 0))


def frames_end(rows: np.ndarray) -> int:
    """The frame count a block's index rows (n_b, 2) claim: the end of the last done utterance, 0 when none."""
    ok = rows[:, 0] >= 0
    return int((rows[ok, 0] + rows[ok, 1]).max()) if ok.any() else 0


@dataclass(frozen=True)
class BlockState:
    """Counts of one block's index rows."""

    done: int
    failed: int
    pending: int

    @property
    def committed(self) -> bool:
        return self.pending == 0
