"""Reading an entry: one (model, dataset) group, its attributes and arrays validated on opening.

Readers allocate for what a store holds, never for what its headers only declare: which chunks are stored is
listed before anything is read; the index is read in windows of whole blocks over the stored index chunks (a block
without one is pending); the keys and labels arrays must store every chunk before they are decoded; pooled vectors
are read only for blocks with extracted rows. What ``emocache verify`` calls damage is refused here too, one line
naming the entry and the fix: duplicate keys, overlapping index rows (frame readers), non-finite pooled vectors
(unless the entry's attribute ``allow_nonfinite`` is true).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from emocache.store.bulk import FrameSet, read_frames
from emocache.store.commit import BlockWriter
from emocache.store.layout import BLOCKS, FAILED, PENDING, BlockState, block_path, invalid_rows, overlapping_blocks
from emocache.store.storage import exists, list_dir, list_prefix
from emocache.store.strings import read_strings
from emocache.store.validate import (GAP_BLOCKS, MAX_DIM, MAX_LAYER, WINDOW_BYTES, Limits, StoreError, check_array,
                                     int_attr, member)

REDO = "run `emocache verify`, then `emocache extract ... --redo-failed` to redo the blocks it names"
"""The fix for damage inside committed blocks."""
REEXTRACT = "no redo repairs it: re-extract into a new store (`emocache verify` lists every problem)"
"""The fix for damage outside the blocks (keys, labels)."""


def chunk_coords(name: str, sep: str, rel: str) -> tuple[int, ...] | None:
    """The chunk coordinates a key relative to its array names (``c/3/0`` -> (3, 0)) under the array's chunk key
    encoding (``name``: default or v2, with its separator); None for any other object (its ``zarr.json``, a stray
    file)."""
    if name == "default":
        if not rel.startswith("c" + sep):
            return None
        parts = rel[2:].split(sep)
    elif name == "v2":
        parts = rel.split(sep)
    else:
        return None
    if not all(p.isdigit() and p.isascii() for p in parts):
        return None
    return tuple(int(p) for p in parts)


@dataclass(frozen=True)
class BlockCounts:
    """Index rows per state of the blocks read from stored index chunks; every other block is pending."""

    blocks: np.ndarray
    """(P,) int64: block numbers, increasing."""
    done: np.ndarray
    """(P,) int64: extracted rows per block."""
    failed: np.ndarray
    """(P,) int64: failed rows per block."""
    pending: np.ndarray
    """(P,) int64: uncommitted rows per block."""

    @property
    def committed(self) -> np.ndarray:
        """Block numbers whose rows are all done or failed."""
        return self.blocks[self.pending == 0]


class StoredFrames:
    """A committed block's frames array, read a slice at a time through the entry's checks (checksums, no missing
    chunk): what ``merge`` copies and ``verify`` reads, a window at a time, so memory never holds a whole block."""

    def __init__(self, entry: "Entry", arr):
        self.entry = entry
        self.arr = arr
        self.shape = tuple(arr.shape)
        self.dtype = arr.dtype

    def __getitem__(self, rows: slice) -> np.ndarray:
        return np.asarray(self.entry._read(self.arr, rows))  # (rows, D_frames) in the stored dtype

    def windows(self) -> Iterator[slice]:
        """Row slices of at most WINDOW_BYTES (whole chunks, at least one)."""
        rows = int(self.arr.chunks[0]) or 1
        step = max(rows, WINDOW_BYTES // max(1, self.shape[1] * self.dtype.itemsize) // rows * rows)
        return (slice(a, min(a + step, self.shape[0])) for a in range(0, self.shape[0], step))


def layer_ids(attrs: dict, where: str) -> tuple[int, ...]:
    """The entry attribute ``layers`` (hidden_states indices, increasing); () when absent."""
    v = attrs.get("layers", [])
    if not isinstance(v, list) or not all(isinstance(k, int) and not isinstance(k, bool) and 0 <= k <= MAX_LAYER
                                          for k in v) or sorted(set(v)) != v:
        raise StoreError(f"{where}: attribute layers must be increasing hidden_states indices, got {str(v)[:60]}")
    return tuple(v)


class Entry(BlockWriter):
    """One (model, dataset) group; reading here, writing blocks in :class:`~emocache.store.commit.BlockWriter`."""

    def __init__(self, group, model: str, dataset: str, url: str = ""):
        self.group = group
        self.model = model
        self.dataset = dataset
        self.url = url
        self.where = where = f"{url}/{model}/{dataset}" if url else f"{model}/{dataset}"
        a = dict(group.attrs)
        self.attrs = a
        limits = getattr(group.store, "limits", None) or Limits()
        self.n = int_attr(a, "n", where, 0)
        if self.n > limits.rows:
            raise StoreError(f"{where}: attribute n={self.n} utterances, over the limit of {limits.rows} rows per "
                             "entry (raise --max-rows only for a store you trust)")
        self.block_size = int_attr(a, "block_size", where, 1)
        self.dim = int_attr(a, "dim", where, 1, MAX_DIM)
        self.frame_dim = int_attr(a, "frame_dim", where, 1, MAX_DIM)
        if not isinstance(a.get("has_frames"), bool):
            raise StoreError(f"{where}: attribute has_frames={a.get('has_frames')!r} must be true or false")
        self.has_frames = a["has_frames"]
        if not isinstance(a.get("allow_nonfinite", False), bool):
            raise StoreError(f"{where}: attribute allow_nonfinite={a.get('allow_nonfinite')!r} must be true or false")
        self.allow_nonfinite = a.get("allow_nonfinite", False)
        """Whether pooled vectors may hold NaN/inf on purpose (features made elsewhere, ``write_arrays``)."""
        if not isinstance(a.get("provenance", {}), dict):
            raise StoreError(f"{where}: attribute provenance must be a JSON object")
        n, bs = self.n, self.block_size
        self.keys_array = check_array(member(group, "keys", where), f"{where}/keys", ("string",), (n,))
        self.labels_array = check_array(member(group, "labels", where), f"{where}/labels", ("string",), (n,))
        self.pooled_array = check_array(member(group, "pooled", where), f"{where}/pooled", ("float32",),
                                        (n, self.dim))
        self.index_array = check_array(member(group, "index", where), f"{where}/index", ("int64",), (n, 2))
        self.layer_ids = layer_ids(a, where)
        self.layers_array = None
        if self.layer_ids:
            self.layers_array = check_array(member(group, "layers", where), f"{where}/layers", ("float32",),
                                            (n, len(self.layer_ids), self.dim))
        arrays = ((self.pooled_array, "pooled"), (self.index_array, "index"), (self.layers_array, "layers"))
        for arr, name in ((x, nm) for x, nm in arrays if x is not None):
            if n and arr.chunks[0] != min(bs, n):
                raise StoreError(f"{where}/{name}: chunks of {arr.chunks[0]} rows, expected one block ({bs}); "
                                 "blocks must map to whole chunks for the commit protocol")
        self._pos: dict[str, int] | None = None

    # -- metadata --------------------------------------------------------------------------------------------
    @property
    def provenance(self) -> dict:
        return dict(self.attrs.get("provenance", {}))

    @property
    def n_blocks(self) -> int:
        return math.ceil(self.n / self.block_size)

    def block_slice(self, b: int) -> slice:
        return slice(b * self.block_size, min(self.n, (b + 1) * self.block_size))

    # -- stored chunks -----------------------------------------------------------------------------------
    def stored_chunks(self, arr) -> np.ndarray:
        """(K, ndim) int64, sorted: coordinates of the chunks of ``arr`` present in the store (listed, none read)."""
        enc = arr.metadata.chunk_key_encoding
        name, sep = enc.name, getattr(enc, "separator", "/")
        grid = tuple(math.ceil(s / c) if c else 0 for s, c in zip(arr.shape, arr.chunks))
        prefix = f"{arr.path}/"
        found = set()
        for key in list_prefix(arr.store, prefix):
            c = chunk_coords(name, sep, key[len(prefix):])
            if c is not None and len(c) == len(grid) and all(x < min(g, 1 << 62) for x, g in zip(c, grid)):
                found.add(c)
        return np.array(sorted(found), dtype=np.int64).reshape(-1, len(grid))

    def require_chunks(self, arr, where: str) -> None:
        """Every chunk of ``arr`` must be stored (a StoreError naming the first missing ones otherwise), so that
        nothing is allocated or decoded for rows the array only declares."""
        grid = tuple(math.ceil(s / c) if c else 0 for s, c in zip(arr.shape, arr.chunks))
        total = math.prod(grid)
        have = {tuple(c) for c in self.stored_chunks(arr).tolist()}
        if len(have) >= total:
            return
        first, i = [], 0
        while len(first) < 5 and i < total:  # the first absent chunks, in C order (at most len(have) + 5 steps)
            coords, rest = [], i
            for g in reversed(grid):
                rest, x = divmod(rest, g)
                coords.append(x)
            if tuple(reversed(coords)) not in have:
                first.append(arr.metadata.encode_chunk_key(tuple(reversed(coords))))
            i += 1
        raise StoreError(f"{where}: chunk(s) {first} missing ({total - len(have)} of {total}); the array declares "
                         "more than the store holds (a damaged or hostile store; a missing chunk is never read as "
                         "its fill value)")

    def _strings(self, arr, n: int, unique: bool) -> list[str]:
        where = f"{self.url}/{arr.path}" if self.url else arr.path
        self.require_chunks(arr, where)
        return read_strings(arr, n, where, unique)

    @functools.cached_property
    def keys(self) -> list[str]:
        """The manifest keys, store order: every chunk stored, no key twice (else a StoreError, raised at the first
        repeat: memory follows the distinct keys the store holds)."""
        return self._strings(self.keys_array, self.n, unique=True)

    @functools.cached_property
    def labels(self) -> list[str]:
        """The raw labels, store order; read once the keys prove the entry's ``n`` (one label per key)."""
        return self._strings(self.labels_array, len(self.keys), unique=False)

    # -- the index -------------------------------------------------------------------------------------------
    def index(self, rows: slice | None = None) -> np.ndarray:
        """(N, 2) int64: (offset, length) per utterance; -1 pending, -2 failed (values range-checked).

        ``rows`` reads only those rows (a contiguous slice), e.g. one block's. The whole index is assembled from
        :meth:`index_windows` (stored chunks only).
        """
        if rows is not None:
            return self._index_rows(rows)
        out = np.full((self.n, 2), PENDING, dtype=np.int64)  # (N, 2)
        for start, rows_ in self.index_windows():
            out[start:start + len(rows_)] = rows_
        return out

    def _index_rows(self, rows: slice) -> np.ndarray:
        try:
            idx = np.asarray(self.index_array[rows], dtype=np.int64)
        except StoreError:
            raise
        except Exception as e:
            raise StoreError(f"{self.where}/index: unreadable ({type(e).__name__}: {e}); {REDO}") from None
        bad = invalid_rows(idx)
        if bad.any():
            start = rows.start or 0
            blocks = sorted({(start + int(i)) // self.block_size for i in np.flatnonzero(bad)})
            raise StoreError(f"{self.where}/index: invalid (offset, length) rows in block(s) {blocks[:10]}; "
                             "run `emocache verify` and re-extract them with --redo-failed")
        return idx

    def block_runs(self, blocks: np.ndarray, row_bytes: int) -> list[tuple[int, int]]:
        """[first block, last block + 1) runs covering ``blocks`` (increasing), gaps of at most GAP_BLOCKS absent
        blocks merged, each run at most WINDOW_BYTES of ``row_bytes``-byte rows (at least one block)."""
        per = max(1, WINDOW_BYTES // max(1, row_bytes * self.block_size))
        runs: list[list[int]] = []
        for b in blocks.tolist():
            if runs and b - runs[-1][1] <= GAP_BLOCKS and b + 1 - runs[-1][0] <= per:
                runs[-1][1] = b + 1
            else:
                runs.append([b, b + 1])
        return [(a, z) for a, z in runs]

    def index_runs(self) -> list[tuple[int, int]]:
        """The block runs :meth:`index_windows` reads: those with a stored index chunk (listed)."""
        return self.block_runs(np.unique(self.stored_chunks(self.index_array)[:, 0]), 16)

    def run_rows(self, run: tuple[int, int]) -> slice:
        """The rows of blocks [run[0], run[1])."""
        return slice(run[0] * self.block_size, min(self.n, run[1] * self.block_size))

    def index_windows(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, (rows, 2) int64 index rows) for each run of stored index chunks (at most WINDOW_BYTES at a
        time); rows outside every window are pending. Unreadable chunks and impossible rows: a StoreError naming
        the blocks."""
        for run in self.index_runs():
            sl = self.run_rows(run)
            yield sl.start, self._index_rows(sl)

    def block_counts(self) -> BlockCounts:
        """Rows per state of every block read from a stored index chunk (vectorised, window by window)."""
        parts: list[tuple[np.ndarray, ...]] = []
        for start, rows in self.index_windows():
            firsts = np.arange(0, len(rows), self.block_size)
            o = rows[:, 0]
            parts.append((start // self.block_size + np.arange(len(firsts)),
                          *(np.add.reduceat(m.astype(np.int64), firsts)
                            for m in (o >= 0, o == FAILED, o == PENDING))))
        if not parts:
            empty = np.zeros(0, np.int64)
            return BlockCounts(empty, empty, empty, empty)
        return BlockCounts(*(np.concatenate(c) for c in zip(*parts)))

    def counts(self) -> tuple[int, int, int]:
        """(done, failed, pending) utterances, from the stored index chunks only."""
        c = self.block_counts()
        done, failed = int(c.done.sum()), int(c.failed.sum())
        return done, failed, self.n - done - failed

    def block_states(self, index: np.ndarray | None = None) -> list[BlockState]:
        """Every block's :class:`BlockState` (from ``index`` when given, else from :meth:`block_counts`)."""
        if index is not None:
            out = []
            for b in range(self.n_blocks):
                o = index[self.block_slice(b), 0]
                out.append(BlockState(int((o >= 0).sum()), int((o == FAILED).sum()), int((o == PENDING).sum())))
            return out
        out = [BlockState(0, 0, self.block_len(b)) for b in range(self.n_blocks)]
        c = self.block_counts()
        for b, d, f, p in zip(c.blocks.tolist(), c.done.tolist(), c.failed.tolist(), c.pending.tolist()):
            out[b] = BlockState(d, f, p)
        return out

    def block_len(self, b: int) -> int:
        """Utterances in block ``b``."""
        sl = self.block_slice(b)
        return sl.stop - sl.start

    def block_groups(self) -> set[str]:
        """Names of the block groups present (committed or not), listed without reading their metadata."""
        prefix = f"{self.group.path}/{BLOCKS}/" if self.group.path else f"{BLOCKS}/"
        return {nm for nm in list_dir(self.group.store, prefix) if nm.startswith("b") and nm[1:].isdigit()}

    def chunk_exists(self, arr, coords: tuple[int, ...]) -> bool:
        """Whether the chunk at ``coords`` of array ``arr`` (an array of this entry) is stored (not a fill value)."""
        key = arr.metadata.encode_chunk_key(coords)
        return exists(arr.store, f"{arr.path}/{key}" if arr.path else key)

    def missing_chunks(self, arr) -> list[str]:
        """Chunk keys of ``arr`` that reads so far found absent (zarr filled them with the fill value)."""
        missing = getattr(arr.store, "missing", None)
        if not missing:
            return []
        prefix = f"{arr.path}/"
        return sorted(k[len(prefix):] for k in list(missing) if k.startswith(prefix))

    def _read(self, arr, sel, must_exist=None) -> np.ndarray:
        """``arr[sel]`` with unreadable chunks (checksum, codec) as a StoreError naming the array, and absent
        chunks refused: all of them, or those ``must_exist(chunk_key)`` says were committed."""
        where = f"{self.url}/{arr.path}" if self.url else arr.path
        try:
            data = arr[sel]
        except StoreError:
            raise
        except Exception as e:
            raise StoreError(f"{where}: unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                             "run `emocache verify` and re-extract the blocks it names with --redo-failed") from None
        lost = [k for k in self.missing_chunks(arr) if must_exist is None or must_exist(k)]
        if lost:
            raise StoreError(f"{where}: chunk(s) {lost[:5]} missing from a committed block; the store is damaged "
                             "(a missing chunk is never read as zeros). Run `emocache verify`, then `emocache "
                             "extract ... --redo-failed`")
        return data

    def block_errors(self, b: int) -> dict[str, str]:
        """Block ``b``'s ``errors`` attribute (key -> message), validated."""
        errs = member(self.group, block_path(b), self.where).attrs.get("errors", {})
        if not isinstance(errs, dict) or not all(isinstance(v, str) for v in errs.values()):
            raise StoreError(f"{self.where}/{block_path(b)}: attribute errors must map keys to messages")
        return {str(k): v for k, v in errs.items()}

    def errors(self) -> dict[str, str]:
        """key -> error message for every failed utterance of committed blocks."""
        c = self.block_counts()
        out: dict[str, str] = {}
        for b in c.blocks[(c.failed > 0) & (c.pending == 0)].tolist():
            out.update(self.block_errors(b))
        return out

    # -- reading ---------------------------------------------------------------------------------------------
    def done_mask(self) -> np.ndarray:
        return self.index()[:, 0] >= 0

    def _check_finite(self, values: np.ndarray, rows: np.ndarray, what: str, done: np.ndarray | None = None) -> None:
        """Refuse NaN/inf in pooled vectors (``values`` (len(rows), ...), or only its ``done`` rows) unless the
        entry allows them."""
        if self.allow_nonfinite or not len(values):
            return
        bad = ~np.isfinite(values.reshape(len(values), -1)).all(1)
        if done is not None:
            bad = bad[done]
        if bad.any():
            blocks = np.unique(rows[bad] // self.block_size).tolist()
            raise StoreError(f"{self.where}/{what}: NaN/inf values in block(s) {blocks[:10]}, which the entry does not "
                             f"allow (attribute allow_nonfinite); {REDO}")

    def _read_rows(self, arr, rows: np.ndarray, what: str) -> np.ndarray:
        """(len(rows), ...) float32: rows ``rows`` (increasing, all done) of ``arr`` (chunked by block), read
        window by window over their blocks only; each of those blocks' chunks must be stored."""
        out = np.empty((len(rows), *arr.shape[1:]), np.float32)
        if not len(rows):
            return out
        blocks = np.unique(rows // self.block_size)
        need = {arr.metadata.encode_chunk_key((b,) + (0,) * (arr.ndim - 1)) for b in blocks.tolist()}
        row_bytes = 4 * math.prod(arr.shape[1:])
        for run in self.block_runs(blocks, row_bytes):
            sl = self.run_rows(run)
            lo, hi = np.searchsorted(rows, [sl.start, sl.stop])
            data = self._read(arr, sl, must_exist=lambda k: k in need)
            out[lo:hi] = data[rows[lo:hi] - sl.start]
        self._check_finite(out, rows, what)
        return out

    def block_pooled(self, b: int, index: np.ndarray | None = None) -> np.ndarray:
        """(n_b, D) float32: block ``b``'s pooled rows; a missing chunk of a committed block, or NaN/inf in a done
        row the entry does not allow, is a StoreError."""
        idx = self.index(self.block_slice(b)) if index is None else index[self.block_slice(b)]
        done = idx[:, 0] >= 0
        key = self.pooled_array.metadata.encode_chunk_key((b, 0)) if done.any() else None
        P = np.asarray(self._read(self.pooled_array, self.block_slice(b), must_exist=lambda k: k == key),
                       dtype=np.float32)
        self._check_finite(P, self.block_slice(b).start + np.flatnonzero(done), "pooled", done)
        return P

    def block_layers(self, b: int, index: np.ndarray | None = None) -> np.ndarray | None:
        """(n_b, L, D) float32: block ``b``'s stored layers (None for a --layers last entry); a missing chunk of a
        committed block, or NaN/inf in a done row the entry does not allow, is a StoreError."""
        if not self.layer_ids:
            return None
        idx = self.index(self.block_slice(b)) if index is None else index[self.block_slice(b)]
        done = idx[:, 0] >= 0
        key = self.layers_array.metadata.encode_chunk_key((b, 0, 0)) if done.any() else None
        Y = np.asarray(self._read(self.layers_array, self.block_slice(b), must_exist=lambda k: k == key),
                       dtype=np.float32)
        self._check_finite(Y, self.block_slice(b).start + np.flatnonzero(done), "layers", done)
        return Y

    def pooled(self) -> tuple[list[str], np.ndarray]:
        """Keys and (N_done, D) float32 pooled vectors of the extracted utterances, store order."""
        keys = self.keys
        done = np.flatnonzero(self.index()[:, 0] >= 0)
        X = self._read_rows(self.pooled_array, done, "pooled")  # (N_done, D)
        return [keys[i] for i in done.tolist()], X

    def layers(self) -> tuple[list[str], np.ndarray]:
        """keys and (N_done, L, D) float32: pooled vectors of the stored hidden_states layers."""
        if not self.layer_ids:
            raise StoreError(f"{self.where}: extracted with --layers last (only the final output, in pooled); "
                             "re-extract with --layers all or K,K,... into another store")
        keys = self.keys
        done = np.flatnonzero(self.index()[:, 0] >= 0)
        Y = self._read_rows(self.layers_array, done, "layers")  # (N_done, L, D)
        return [keys[i] for i in done.tolist()], Y

    def layer_position(self, layer: int) -> int:
        """Where hidden_states ``layer`` sits in :meth:`layers`; a StoreError naming the stored ones."""
        if layer not in self.layer_ids:
            raise StoreError(f"{self.where}: layer {layer} not stored; stored layers: "
                             f"{list(self.layer_ids) or 'none (--layers last)'}")
        return self.layer_ids.index(layer)

    def labels_done(self) -> list[str]:
        labels = self.labels
        return [labels[i] for i in np.flatnonzero(self.done_mask()).tolist()]

    def block_frames(self, b: int):
        """Block ``b``'s frames array (sum T_i, D_frames), dtype and codecs checked."""
        where = f"{self.where}/{block_path(b)}/frames"
        arr = member(self.group, f"{block_path(b)}/frames", self.where)
        check_array(arr, where, ("float16", "float32"), ndim=2)
        if arr.shape[1] != self.frame_dim:
            raise StoreError(f"{where}: {arr.shape[1]} columns, the entry says frame_dim={self.frame_dim}")
        return arr

    def stored_frames(self, b: int) -> "StoredFrames":
        """Block ``b``'s frames as a :class:`StoredFrames` (every chunk stored, checked before any is read)."""
        arr = self.block_frames(b)
        self.require_chunks(arr, f"{self.url}/{arr.path}" if self.url else arr.path)
        return StoredFrames(self, arr)

    def block_frames_data(self, b: int, dtype=np.float32) -> np.ndarray:
        """Block ``b``'s frames (sum T_i, D_frames): every chunk stored (checked before anything is allocated) and
        checksum-verified."""
        arr = self.block_frames(b)
        self.require_chunks(arr, f"{self.url}/{arr.path}" if self.url else arr.path)
        return np.asarray(self._read(arr, slice(None)), dtype=dtype)

    def check_rows(self, idx: np.ndarray, rows: np.ndarray) -> None:
        """Refuse overlapping or overflowing rows of the whole index ``idx`` in the blocks of ``rows`` (what
        ``emocache verify`` calls damage), vectorised."""
        self._overlap_error(overlapping_blocks(idx, np.unique(rows // self.block_size), self.block_size).tolist())

    def check_block_rows(self, b: int, rows: np.ndarray) -> None:
        """:meth:`check_rows` for block ``b`` alone, given its index rows (n_b, 2)."""
        self._overlap_error([b] if len(overlapping_blocks(rows, np.zeros(1, np.int64), max(1, len(rows)))) else [])

    def _overlap_error(self, blocks: list[int]) -> None:
        if blocks:
            raise StoreError(f"{self.where}/index: rows overlap (two utterances share frames) or overflow int64 in "
                             f"block(s) {blocks[:10]}; {REDO}")

    def _rows(self, F, b: int, off: int, ln: int) -> np.ndarray:
        if off + ln > F.shape[0]:
            raise StoreError(f"{self.where}: the index points past block {b}'s frames ({off}+{ln} > {F.shape[0]}); "
                             "run `emocache verify` and re-extract with --redo-failed")
        return F[off:off + ln]

    def frames(self, key: str) -> np.ndarray:
        if not self.has_frames:
            raise StoreError(f"{self.model}/{self.dataset}: extracted with --no-frames; only pooled vectors")
        if self._pos is None:
            self._pos = {k: i for i, k in enumerate(self.keys)}
        i = self._pos.get(key)
        if i is None:
            raise KeyError(f"{self.model}/{self.dataset}: no utterance {key!r}")
        b = i // self.block_size
        sl = self.block_slice(b)
        rows = self.index(sl)  # this block's rows only (one chunk), not the whole index
        off, ln = (int(v) for v in rows[i - sl.start])
        if off < 0:
            state = "failed" if off == FAILED else "not extracted yet"
            raise KeyError(f"{self.model}/{self.dataset}: utterance {key!r} {state}")
        F = self.block_frames(b)
        if off + ln > F.shape[0]:
            self._rows(F, b, off, ln)
        self.check_block_rows(b, rows)
        return np.asarray(self._read(F, slice(off, off + ln)), dtype=np.float32)

    def _wanted(self, keys: list[str] | None) -> set[str] | None:
        """The requested keys as a set (None: all); frames of a --no-frames entry and unknown keys refused."""
        if not self.has_frames:
            raise StoreError(f"{self.model}/{self.dataset}: extracted with --no-frames; only pooled vectors")
        known = self.keys  # stored in full, no duplicates
        want = None if keys is None else set(keys)
        if want is not None:
            missing = want - set(known)
            if missing:
                raise KeyError(f"{self.model}/{self.dataset}: {len(missing)} keys not in the entry, "
                               f"e.g. {sorted(missing)[:3]}")
        return want

    def all_frames(self, keys: list[str] | None = None, dtype=np.float32, threads: int | None = None) -> FrameSet:
        """Frames of every extracted utterance (or of ``keys``), in store order, in one flat array.

        Returns a :class:`~emocache.store.bulk.FrameSet`: ``keys``, ``data`` (sum T_i, D_frames) and ``offsets``
        (N + 1,) so utterance ``i`` is ``data[offsets[i]:offsets[i + 1]]`` (``.frames(i)``, ``.lengths``,
        ``.padded()`` for (N, T_max, D) + mask). Failed and pending utterances are left out, as in
        :meth:`iter_frames`; ``keys`` not in the entry are a KeyError. The values equal ``iter_frames``'s.

        Every chunk read is checksum-verified (CRC32C) and size-checked; a damaged or missing chunk, or index rows
        that overlap in a block read, is a StoreError naming the entry and the fix (``emocache verify``,
        ``--redo-failed``). ``threads`` decode chunks in parallel (default: the CPUs this process may use, at most
        8). ``dtype=np.float16`` skips the conversion and returns the stored precision (half the memory; refused
        for an entry with float32 blocks, whose values float16 cannot hold).
        """
        if np.dtype(dtype) not in (np.float16, np.float32):
            raise ValueError(f"dtype {np.dtype(dtype)}: frames are read as float32 or float16")
        want = self._wanted(keys)
        idx = self.index()
        ok = idx[:, 0] >= 0
        if want is not None:
            ok &= np.fromiter((k in want for k in self.keys), bool, self.n)
        return read_frames(self, np.flatnonzero(ok), idx, dtype=dtype, threads=threads)

    def iter_frames(self, keys: list[str] | None = None) -> Iterator[tuple[str, np.ndarray]]:
        """(key, frames) in store order, reading each block's frames once (:meth:`all_frames` reads a whole
        entry several times faster); index rows that overlap in a block read are a StoreError."""
        want = self._wanted(keys)
        idx = self.index()
        keys_ = self.keys
        ok = idx[:, 0] >= 0
        if want is not None:
            ok &= np.fromiter((k in want for k in keys_), bool, self.n)
        rows_all = np.flatnonzero(ok)
        for b in np.unique(rows_all // self.block_size).tolist():
            sl = self.block_slice(b)
            lo, hi = np.searchsorted(rows_all, [sl.start, sl.stop])
            F = self.block_frames_data(b)  # (sum T, D)
            for i in rows_all[lo:hi].tolist():
                self._rows(F, b, int(idx[i, 0]), int(idx[i, 1]))  # inside the block's frames
            self.check_block_rows(b, idx[sl])
            for i in rows_all[lo:hi].tolist():
                off, ln = idx[i]
                yield keys_[i], F[int(off):int(off + ln)]
