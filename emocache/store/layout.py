"""The store's layout in names and numbers: format version, index codes, block names, index-row arithmetic."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FORMAT = 1
"""``emocache_format`` in the root attributes; any layout change bumps it."""
INT64_MAX = int(np.iinfo(np.int64).max)
PENDING, FAILED = -1, -2
"""Index offsets of an uncommitted row and of a failed utterance (done rows have offset >= 0)."""
F16_MAX = 65504.0
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


def overlapping_blocks(idx: np.ndarray, blocks: np.ndarray, block_size: int) -> np.ndarray:
    """Those of ``blocks`` whose done rows in the index ``idx`` (N, 2) overlap one another (two utterances share
    frames) or overflow int64 (offset + length): sorted block numbers, vectorised over every row of those blocks."""
    if not len(blocks) or not len(idx):
        return np.zeros(0, np.int64)
    wanted = np.zeros(int(blocks.max()) + 1, bool)
    wanted[blocks] = True
    row_block = np.arange(len(idx)) // block_size
    r = np.flatnonzero((row_block < len(wanted)) & (idx[:, 0] >= 0))
    r = r[wanted[row_block[r]]]
    off, ln, blk = idx[r, 0], idx[r, 1], row_block[r]
    over = ln > INT64_MAX - off
    end = off + np.minimum(ln, INT64_MAX - off)
    order = np.lexsort((off, blk))
    b_s, o_s, e_s = blk[order], off[order], end[order]
    clash = (b_s[1:] == b_s[:-1]) & (o_s[1:] < e_s[:-1])
    return np.unique(np.concatenate([blk[over], b_s[1:][clash]]))


def index_problem(rows: np.ndarray, n_frames: int | None) -> str | None:
    """What is wrong with one committed block's index rows (n_b, 2): int64 overflow, overlapping utterances,
    or rows outside the block's frames array (``n_frames``; None without frames); None when they are sound."""
    done = rows[rows[:, 0] >= 0]
    off, ln = done[:, 0], done[:, 1]
    if (ln > INT64_MAX - off).any():
        return "index rows overflow int64 (offset + length)"
    if n_frames is None:
        return None if not ln.any() else "index rows give frame lengths but the entry has no frames"
    end = off + ln
    if done.size and int(end.max()) > n_frames:
        return f"index points past the frames array (row ends at {int(end.max())}, the array has {n_frames} rows)"
    order = np.argsort(off, kind="stable")
    if (off[order][1:] < end[order][:-1]).any():
        return "index rows overlap (two utterances share frames)"
    covered = int(ln.sum())
    if covered != n_frames:
        return f"index rows cover {covered} frames, the frames array has {n_frames}"
    return None


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
