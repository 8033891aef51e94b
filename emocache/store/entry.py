"""Reading an entry: one (model, dataset) group, its attributes and arrays validated on opening."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator

import numpy as np

from emocache.store.bulk import FrameSet, read_frames
from emocache.store.commit import BlockWriter
from emocache.store.layout import (BLOCKS, FAILED, PENDING, BlockState, block_name, block_path, invalid_rows)
from emocache.store.storage import exists
from emocache.store.validate import Limits, StoreError, check_array, int_attr, member


def layer_ids(attrs: dict, where: str) -> tuple[int, ...]:
    """The entry attribute ``layers`` (hidden_states indices, increasing); () when absent."""
    v = attrs.get("layers", [])
    if not isinstance(v, list) or not all(isinstance(k, int) and not isinstance(k, bool) and 0 <= k < 10_000
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
        self.dim = int_attr(a, "dim", where, 1, 1 << 20)
        self.frame_dim = int_attr(a, "frame_dim", where, 1, 1 << 20)
        if not isinstance(a.get("has_frames"), bool):
            raise StoreError(f"{where}: attribute has_frames={a.get('has_frames')!r} must be true or false")
        self.has_frames = a["has_frames"]
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

    def _strings(self, arr) -> list[str]:
        return [str(k) for k in self._read(arr, slice(None))]

    @functools.cached_property
    def keys(self) -> list[str]:
        return self._strings(self.keys_array)

    @functools.cached_property
    def labels(self) -> list[str]:
        return self._strings(self.labels_array)

    def index(self, rows: slice = slice(None)) -> np.ndarray:
        """(N, 2) int64: (offset, length) per utterance; -1 pending, -2 failed (values range-checked).

        ``rows`` reads only those rows (a contiguous slice), e.g. one utterance's.
        """
        try:
            idx = np.asarray(self.index_array[rows], dtype=np.int64)
        except StoreError:
            raise
        except Exception as e:
            raise StoreError(f"{self.where}/index: unreadable ({type(e).__name__}: {e}); run `emocache verify`, "
                             "then `emocache extract ... --redo-failed` to redo the blocks it names") from None
        bad = invalid_rows(idx)
        if bad.any():
            start = rows.start or 0
            blocks = sorted({(start + int(i)) // self.block_size for i in np.flatnonzero(bad)})
            raise StoreError(f"{self.where}/index: invalid (offset, length) rows in block(s) {blocks[:10]}; "
                             "run `emocache verify` and re-extract them with --redo-failed")
        return idx

    def block_states(self, index: np.ndarray | None = None) -> list[BlockState]:
        idx = self.index() if index is None else index
        out = []
        for b in range(self.n_blocks):
            o = idx[self.block_slice(b), 0]
            out.append(BlockState(int((o >= 0).sum()), int((o == FAILED).sum()), int((o == PENDING).sum())))
        return out

    def block_groups(self) -> set[str]:
        """Names of the block groups present (committed or not)."""
        return set(self.group[BLOCKS].group_keys()) if BLOCKS in self.group else set()

    def has_block_group(self, b: int) -> bool:
        return block_name(b) in self.block_groups()

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
        out: dict[str, str] = {}
        for b, st in enumerate(self.block_states()):
            if st.failed and st.committed:
                out.update(self.block_errors(b))
        return out

    # -- reading ---------------------------------------------------------------------------------------------
    def done_mask(self) -> np.ndarray:
        return self.index()[:, 0] >= 0

    def _committed_chunks(self, arr, idx: np.ndarray) -> set[str]:
        """Chunk keys of ``arr`` (chunked by block) of the blocks with done rows."""
        return {arr.metadata.encode_chunk_key((b, 0)) for b in range(self.n_blocks)
                if (idx[self.block_slice(b), 0] >= 0).any()}

    def block_pooled(self, b: int, index: np.ndarray | None = None) -> np.ndarray:
        """(n_b, D) float32: block ``b``'s pooled rows; a missing chunk of a committed block is a StoreError."""
        idx = self.index(self.block_slice(b)) if index is None else index[self.block_slice(b)]
        key = self.pooled_array.metadata.encode_chunk_key((b, 0)) if (idx[:, 0] >= 0).any() else None
        return np.asarray(self._read(self.pooled_array, self.block_slice(b), must_exist=lambda k: k == key),
                          dtype=np.float32)

    def block_layers(self, b: int, index: np.ndarray | None = None) -> np.ndarray | None:
        """(n_b, L, D) float32: block ``b``'s stored layers (None for a --layers last entry); a missing chunk of a
        committed block is a StoreError."""
        if not self.layer_ids:
            return None
        idx = self.index(self.block_slice(b)) if index is None else index[self.block_slice(b)]
        key = self.layers_array.metadata.encode_chunk_key((b, 0, 0)) if (idx[:, 0] >= 0).any() else None
        return np.asarray(self._read(self.layers_array, self.block_slice(b), must_exist=lambda k: k == key),
                          dtype=np.float32)

    def pooled(self) -> tuple[list[str], np.ndarray]:
        idx = self.index()
        mask = idx[:, 0] >= 0
        committed = functools.cache(lambda: self._committed_chunks(self.pooled_array, idx))
        X = np.asarray(self._read(self.pooled_array, slice(None), must_exist=lambda k: k in committed()),
                       dtype=np.float32)[mask]  # (N_done, D)
        keys = [k for k, m in zip(self.keys, mask) if m]
        return keys, X

    def layers(self) -> tuple[list[str], np.ndarray]:
        """keys and (N_done, L, D) float32: pooled vectors of the stored hidden_states layers."""
        if not self.layer_ids:
            raise StoreError(f"{self.where}: extracted with --layers last (only the final output, in pooled); "
                             "re-extract with --layers all or K,K,... into another store")
        idx = self.index()
        mask = idx[:, 0] >= 0
        committed = functools.cache(lambda: {self.layers_array.metadata.encode_chunk_key((b, 0, 0))
                                             for b in range(self.n_blocks)
                                             if (idx[self.block_slice(b), 0] >= 0).any()})
        Y = np.asarray(self._read(self.layers_array, slice(None), must_exist=lambda k: k in committed()),
                       dtype=np.float32)[mask]  # (N_done, L, D)
        return [k for k, m in zip(self.keys, mask) if m], Y

    def layer_position(self, layer: int) -> int:
        """Where hidden_states ``layer`` sits in :meth:`layers`; a StoreError naming the stored ones."""
        if layer not in self.layer_ids:
            raise StoreError(f"{self.where}: layer {layer} not stored; stored layers: "
                             f"{list(self.layer_ids) or 'none (--layers last)'}")
        return self.layer_ids.index(layer)

    def labels_done(self) -> list[str]:
        return [lab for lab, m in zip(self.labels, self.done_mask()) if m]

    def block_frames(self, b: int):
        """Block ``b``'s frames array (sum T_i, D_frames), dtype and codecs checked."""
        where = f"{self.where}/{block_path(b)}/frames"
        arr = member(self.group, f"{block_path(b)}/frames", self.where)
        check_array(arr, where, ("float16", "float32"), ndim=2)
        if arr.shape[1] != self.frame_dim:
            raise StoreError(f"{where}: {arr.shape[1]} columns, the entry says frame_dim={self.frame_dim}")
        return arr

    def block_frames_data(self, b: int, dtype=np.float32) -> np.ndarray:
        """Block ``b``'s frames (sum T_i, D_frames), every chunk present and checksum-verified."""
        return np.asarray(self._read(self.block_frames(b), slice(None)), dtype=dtype)

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
        off, ln = (int(v) for v in self.index(slice(i, i + 1))[0])  # this row only, not the whole index
        if off < 0:
            state = "failed" if off == FAILED else "not extracted yet"
            raise KeyError(f"{self.model}/{self.dataset}: utterance {key!r} {state}")
        b = i // self.block_size
        F = self.block_frames(b)
        if off + ln > F.shape[0]:
            self._rows(F, b, off, ln)
        return np.asarray(self._read(F, slice(off, off + ln)), dtype=np.float32)

    def _wanted(self, keys: list[str] | None) -> set[str] | None:
        """The requested keys as a set (None: all); frames of a --no-frames entry and unknown keys refused."""
        if not self.has_frames:
            raise StoreError(f"{self.model}/{self.dataset}: extracted with --no-frames; only pooled vectors")
        want = None if keys is None else set(keys)
        if want is not None:
            missing = want - set(self.keys)
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

        Every chunk read is checksum-verified (CRC32C) and size-checked; a damaged or missing chunk is a
        StoreError naming the block's frames array and the fix (``emocache verify``, ``--redo-failed``).
        ``threads`` decode chunks in parallel (default: the CPUs this process may use, at most 8).
        ``dtype=np.float16`` skips the conversion and returns the stored precision (half the memory; refused for
        an entry with float32 blocks, whose values float16 cannot hold).
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
        entry several times faster)."""
        want = self._wanted(keys)
        idx = self.index()
        for b in range(self.n_blocks):
            sl = self.block_slice(b)
            rows = [i for i in range(sl.start, sl.stop) if idx[i, 0] >= 0
                    and (want is None or self.keys[i] in want)]
            if not rows:
                continue
            F = self.block_frames_data(b)  # (sum T, D)
            for i in rows:
                off, ln = idx[i]
                yield self.keys[i], self._rows(F, b, int(off), int(ln))
