"""Integrity checks: every committed block readable, checksums match, index consistent, no orphans."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emocache.store import PENDING, Entry, Store, block_name, frames_end, invalid_rows


@dataclass
class EntryCheck:
    model: str
    dataset: str
    blocks: int = 0
    committed: int = 0
    problems: dict[int, str] = field(default_factory=dict)
    """block -> what is wrong (redo these)."""
    orphans: list[str] = field(default_factory=list)
    """block groups written by an interrupted run and not committed (rewritten on resume)."""

    @property
    def bad_blocks(self) -> list[int]:
        return sorted(self.problems)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_entry(entry: Entry) -> EntryCheck:
    """Read every chunk of every committed block (CRC32C-checked) and check the index against the frames."""
    chk = EntryCheck(entry.model, entry.dataset, blocks=entry.n_blocks)
    try:
        idx = entry.index()
    except Exception:  # a corrupted index chunk: find which blocks' chunks are unreadable
        idx = np.full((entry.n, 2), PENDING, dtype=np.int64)
        for b in range(entry.n_blocks):
            sl = entry.block_slice(b)
            try:
                rows = np.asarray(entry.index_array[sl], dtype=np.int64)
                if invalid_rows(rows).any():
                    raise ValueError("invalid (offset, length) rows")
                idx[sl] = rows
            except Exception as e:
                chk.problems[b] = f"index chunk unreadable ({type(e).__name__}: {e})"
    states = entry.block_states(idx)
    names = entry.block_groups()
    for b, st in enumerate(states):
        name = block_name(b)
        if b in chk.problems:
            continue
        if not st.committed:
            if name in names:
                chk.orphans.append(name)
            continue
        chk.committed += 1
        try:
            if not entry.chunk_exists(entry.pooled_array, (b, 0)):
                raise ValueError("pooled chunk missing")
            P = np.asarray(entry.pooled_array[entry.block_slice(b)])
            if not np.isfinite(P).all():
                raise ValueError("pooled values not finite")
            if name not in names:
                raise ValueError("block group missing")
            if entry.has_frames:
                F = entry.block_frames(b)
                end = frames_end(idx[entry.block_slice(b)])
                if end != F.shape[0]:
                    raise ValueError(f"index ends at frame {end}, the frames array has {F.shape[0]}")
                n_chunks = -(-F.shape[0] // F.chunks[0]) if F.shape[0] else 0
                for c in range(n_chunks):
                    if not entry.chunk_exists(F, (c, 0)):
                        raise ValueError(f"frames chunk {c} missing")
                np.asarray(F[:])
        except Exception as e:
            chk.problems[b] = f"{type(e).__name__}: {e}"
    return chk


def verify_store(store: Store) -> list[EntryCheck]:
    return [verify_entry(store.entry(m, d)) for m, d in store.entries()]
