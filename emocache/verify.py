"""Integrity checks: every committed block readable, checksums match, index consistent, no orphans, complete."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emocache.store import PENDING, Entry, Store, StoreError, block_name, invalid_rows

INT64_MAX = np.iinfo(np.int64).max


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
    entry_problems: list[str] = field(default_factory=list)
    """damage outside the blocks (keys, labels): no redo fixes it; re-extract into a new store."""
    pending: int = 0
    """blocks not committed yet (an interrupted or partial extraction or merge)."""

    @property
    def bad_blocks(self) -> list[int]:
        return sorted(self.problems)

    @property
    def complete(self) -> bool:
        return self.pending == 0

    @property
    def ok(self) -> bool:
        return not self.problems and not self.entry_problems


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


def _read_index(entry: Entry, chk: EntryCheck) -> np.ndarray:
    """The index; blocks whose chunk is unreadable or holds impossible rows are recorded and read as pending."""
    try:
        return entry.index()
    except StoreError:
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
        return idx


def verify_entry(entry: Entry) -> EntryCheck:
    """Read every chunk of every committed block (CRC32C-checked), the keys and labels, and check the index rows
    against the frames; say which blocks are damaged and whether every block is committed."""
    chk = EntryCheck(entry.model, entry.dataset, blocks=entry.n_blocks)
    for what in ("keys", "labels"):
        try:
            values = getattr(entry, what)
        except StoreError as e:
            chk.entry_problems.append(str(e))
            continue
        if what == "keys" and len(set(values)) != len(values):
            seen, dup = set(), []
            for k in values:
                if k in seen:
                    dup.append(k)
                seen.add(k)
            chk.entry_problems.append(f"{len(dup)} duplicate key(s), e.g. {dup[:3]}: the keys array is damaged")
    idx = _read_index(entry, chk)
    states = entry.block_states(idx)
    names = entry.block_groups()
    for b, st in enumerate(states):
        name = block_name(b)
        if b in chk.problems:
            continue
        if not st.committed:
            chk.pending += 1
            if name in names:
                chk.orphans.append(name)
            continue
        chk.committed += 1
        try:
            if not entry.chunk_exists(entry.pooled_array, (b, 0)):
                raise ValueError("pooled chunk missing")
            P = entry.block_pooled(b, idx)
            if not np.isfinite(P).all():
                raise ValueError("pooled values not finite")
            if entry.layer_ids:
                if not entry.chunk_exists(entry.layers_array, (b, 0, 0)):
                    raise ValueError("layers chunk missing")
                if not np.isfinite(entry.block_layers(b, idx)).all():
                    raise ValueError("layers values not finite")
            if name not in names:
                raise ValueError("block group missing")
            rows = idx[entry.block_slice(b)]
            n_frames = None
            if entry.has_frames:
                F = entry.block_frames(b)
                n_frames = F.shape[0]
                n_chunks = -(-F.shape[0] // F.chunks[0]) if F.shape[0] else 0
                for c in range(n_chunks):
                    if not entry.chunk_exists(F, (c, 0)):
                        raise ValueError(f"frames chunk {c} missing")
            problem = index_problem(rows, n_frames)
            if problem:
                raise ValueError(problem)
            if entry.has_frames:
                entry.block_frames_data(b, dtype=F.dtype)
            entry.block_errors(b)
        except Exception as e:
            chk.problems[b] = f"{type(e).__name__}: {e}"
    return chk


def verify_store(store: Store) -> list[EntryCheck]:
    return [verify_entry(store.entry(m, d)) for m, d in store.entries()]
