"""Writing: creating an entry's arrays and committing blocks (the commit protocol; invariants in the package doc)."""

from __future__ import annotations

import errno
import time

import numpy as np
import zarr

from emocache.store.layout import BLOCKS, F16_MAX, FAILED, FORMAT, PENDING, block_name, block_path
from emocache.store.storage import codecs, frame_codecs, quiet_zarr
from emocache.store.validate import WINDOW_BYTES, StoreError, StoreIOError

RETRIES = 8
"""Attempts at creating an entry while other processes create the same one."""


class BlockWriter:
    """Block writing for :class:`~emocache.store.entry.Entry` (which supplies the arrays and attributes)."""

    frame_codec = "zstd"
    """Codec of newly written frames arrays, one of :data:`~emocache.store.storage.FRAME_CODECS` (readers take
    both); set on an entry to write another (tests, ``emocache bench --store``)."""

    def write_block(self, b: int, pooled: np.ndarray, frames: list[np.ndarray] | None,
                    errors: dict[int, str], layers: np.ndarray | None = None) -> None:
        """Write block ``b``: frames and pooled first, the index chunk (the commit record) last.

        ``pooled`` is (n_b, D) with rows of failed utterances ignored; ``frames`` per utterance (T_i, D_frames)
        (None entries for failed ones); ``errors`` maps a row within the block to its message; ``layers``
        (n_b, L, D) the pooled vectors of the entry's stored layers (entries made with ``--layers``).
        """
        sl = self.block_slice(b)
        nb = sl.stop - sl.start
        index = np.full((nb, 2), FAILED, dtype=np.int64)
        F = None
        if self.has_frames:
            assert frames is not None and len(frames) == nb
            ok = [i for i in range(nb) if i not in errors]
            lengths = [int(frames[i].shape[0]) for i in ok]
            parts = [np.asarray(frames[i], dtype=np.float32) for i in ok]
            F = np.concatenate(parts, 0) if parts else np.zeros((0, self.frame_dim), np.float32)
            overflow = F.size and max(float(F.max()), -float(F.min())) > F16_MAX
            F = F.astype(np.float32 if overflow else np.float16)
            off = 0
            for i, ln in zip(ok, lengths):
                index[i] = (off, ln)
                off += ln
        else:
            for i in range(nb):
                if i not in errors:
                    index[i] = (0, 0)
        P = np.zeros((nb, self.dim), np.float32)
        for i in range(nb):
            if i not in errors:
                P[i] = pooled[i]
        Y = None
        if self.layer_ids:
            Y = np.zeros((nb, len(self.layer_ids), self.dim), np.float32)
            for i in range(nb):
                if i not in errors:
                    Y[i] = layers[i]
        self.commit_block(b, P, index, F, {self.keys[sl.start + i]: msg for i, msg in sorted(errors.items())}, Y)

    def commit_block(self, b: int, pooled: np.ndarray, index: np.ndarray, frames, errors: dict[str, str],
                     layers: np.ndarray | None = None) -> None:
        """Write block ``b``'s objects, the index chunk last: pooled (n_b, D) float32, index (n_b, 2) int64,
        frames (sum T_i, D_frames) float16/float32 (None without frames; an array, or anything with ``shape``,
        ``dtype`` and row slicing such as :class:`~emocache.store.entry.StoredFrames`, copied a window at a time),
        errors key -> message.

        A block group left by an earlier attempt is uncommitted first (index chunk reset), then replaced. Two
        processes writing the same block at once is not supported (one writer per storage object): the loser
        stops with a StoreError saying so, and the store stays valid (the block is committed by one of them or
        left uncommitted for the next run).
        """
        try:
            return self._commit_block(b, pooled, index, frames, errors, layers)
        except (zarr.errors.ContainsGroupError, zarr.errors.ContainsArrayError, StoreIOError) as e:
            if isinstance(e, StoreIOError) and e.errno not in (errno.ENOENT, errno.ENOTEMPTY):
                raise
            raise StoreError(f"{self.where}/{block_path(b)}: another process is writing this block at the same "
                             "time; run one writer per block (--part I/N splits the blocks), then rerun to finish "
                             "any block left uncommitted") from None

    def _commit_block(self, b: int, pooled: np.ndarray, index: np.ndarray, frames,
                      errors: dict[str, str], layers: np.ndarray | None = None) -> None:
        sl = self.block_slice(b)
        blocks = self.group.require_group(BLOCKS)
        name = block_name(b)
        if name in blocks:
            self.reset_blocks([b])
            del blocks[name]
        g = blocks.create_group(name)
        g.attrs["errors"] = errors
        if self.has_frames:
            F = frames if frames is not None else np.zeros((0, self.frame_dim), np.float16)
            total = F.shape[0]
            rows = max(1, min(max(total, 1), (1 << 20) // (self.frame_dim * F.dtype.itemsize)))
            arr = g.create_array("frames", shape=(total, self.frame_dim), dtype=F.dtype,
                                 chunks=(rows, self.frame_dim), fill_value=0,
                                 compressors=frame_codecs(F.dtype.itemsize, self.frame_codec),
                                 config={"write_empty_chunks": True}, dimension_names=DIMS["frames"])
            step = max(rows, WINDOW_BYTES // (self.frame_dim * F.dtype.itemsize) // rows * rows)
            for a in range(0, total, step):  # whole chunks, a window at a time (a merge's source streams too)
                arr[a:a + step] = F[a:a + step]
        self.pooled_array.with_config({"write_empty_chunks": True})[sl] = pooled
        if self.layer_ids:
            if layers is None:
                raise StoreError(f"{self.where}: the entry stores layers {list(self.layer_ids)}; this block has none")
            self.layers_array.with_config({"write_empty_chunks": True})[sl] = layers
        self.index_array[sl] = index  # commit

    def reset_blocks(self, blocks: list[int]) -> None:
        """Mark blocks pending again (their index chunk first), so the next run redoes them."""
        for b in blocks:
            sl = self.block_slice(b)
            self.index_array[sl] = np.full((sl.stop - sl.start, 2), PENDING, dtype=np.int64)


def require_group(parent, name: str):
    """Open or create a sub-group; another process creating it at the same moment is fine."""
    for attempt in range(RETRIES):
        try:
            return parent.require_group(name)
        except (zarr.errors.ContainsGroupError, zarr.errors.ContainsArrayError, KeyError):
            time.sleep(0.01 * attempt)
        except StoreIOError as e:  # a folder created and replaced by another process under our feet
            if e.errno not in (errno.ENOENT, errno.ENOTEMPTY):
                raise
            time.sleep(0.01 * attempt)
    return parent[name]


DIMS = {"keys": ("utterance",), "labels": ("utterance",), "pooled": ("utterance", "feature"),
        "index": ("utterance", "offset_length"), "frames": ("frame", "frame_feature"),
        "layers": ("utterance", "layer", "feature")}
"""Zarr v3 ``dimension_names`` of every array, so xarray opens an entry directly
(``xr.open_zarr(store, group="MODEL/DATASET")``: keys, labels, pooled and index along ``utterance``)."""


def require_array(g, name: str, shape: tuple, dtype, chunks: tuple, fill_value=None):
    """Open an array of exactly this spec, or create it; a mismatching one (left by a crashed creation of an
    entry that never got its attributes) is replaced."""
    want = np.dtype(dtype) if dtype is not str else None
    try:
        a = g[name]
        if (isinstance(a, zarr.Array) and tuple(a.shape) == tuple(shape) and tuple(a.chunks) == tuple(chunks)
                and (want is None or a.dtype == want)):
            return a
        overwrite = True
    except KeyError:
        overwrite = False
    try:
        with quiet_zarr():
            return g.create_array(name, shape=shape, dtype=dtype, chunks=chunks, compressors=codecs(),
                                  fill_value=fill_value, overwrite=overwrite, dimension_names=DIMS[name])
    except zarr.errors.ContainsArrayError:
        return g[name]


def create_entry_group(root, model: str, dataset: str, keys: list[str], labels: list[str], dim: int,
                       frame_dim: int, provenance: dict, has_frames: bool, block_size: int,
                       layers: tuple[int, ...] = (), allow_nonfinite: bool = False):
    """Write an entry's group and arrays, then its attributes in one write (from then on the entry exists)."""
    g = require_group(require_group(root, model), dataset)
    n = len(keys)
    bs = max(1, min(block_size, n))
    require_array(g, "keys", shape=(n,), dtype=str, chunks=(max(n, 1),))[:] = np.array(keys, dtype=object)
    require_array(g, "labels", shape=(n,), dtype=str, chunks=(max(n, 1),))[:] = np.array(labels, dtype=object)
    require_array(g, "pooled", shape=(n, dim), dtype="float32", chunks=(bs, dim), fill_value=0)
    require_array(g, "index", shape=(n, 2), dtype="int64", chunks=(bs, 2), fill_value=PENDING)
    if layers:
        require_array(g, "layers", shape=(n, len(layers), dim), dtype="float32", chunks=(bs, len(layers), dim),
                      fill_value=0)
    require_group(g, BLOCKS)
    g.update_attributes({"n": n, "block_size": bs, "dim": dim, "frame_dim": frame_dim, "has_frames": has_frames,
                         "provenance": provenance, "format": FORMAT,
                         **({"layers": list(layers)} if layers else {}),
                         **({"allow_nonfinite": True} if allow_nonfinite else {})})  # one write: the entry exists
    return g
