"""Whole-entry frame reads (:meth:`Entry.all_frames <emocache.store.entry.Entry.all_frames>`): every selected
utterance's frames in one flat array, chunks fetched, checked and decoded on threads.

The per-key readers (``frames``, ``iter_frames``) go through zarr's codec pipeline one block at a time, then convert
the whole block from float16 to float32 with numpy (single-threaded, about 1 GB/s here), then slice it per
utterance. This module plans the whole read first (which chunks of which block land where in the output), then
runs one task per stored chunk on a thread pool: fetch the object through the guarded store (the same size, link
and compression-header checks as every read), verify its CRC32C, decompress it (blosc or zstd) into a per-thread
scratch buffer the size of one chunk (it stays in the CPU cache) and convert the rows that selected utterances use
straight into their place in a preallocated output. Blosc, zstd, CRC32C and torch's dtype conversion release the
GIL, so the tasks run in parallel. Blosc decodes each chunk on the calling thread only: the tasks always run on the
pool's threads (also with one thread), where numcodecs uses blosc's single-threaded context API (unless a program
set ``numcodecs.blosc.use_threads = True``), so blosc's own threads never compete with the pool. Arrays whose codecs
are not exactly one of the chains emocache writes (bytes + zstd + crc32c, the format, or bytes + blosc + crc32c)
are read through zarr, block by block, with the same checks as ``iter_frames``.
"""

from __future__ import annotations

import functools
import os
import stat
import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import google_crc32c
import numpy as np
from numcodecs import Zstd
from numcodecs.blosc import decompress
from zarr.buffer import default_buffer_prototype
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ZstdCodec

from emocache.store.guard import BLOSC_HEADER, zstd_content_size
from emocache.store.validate import StoreError
from emocache.store.zarr_compat import sync

MAX_THREADS = 8
"""Default upper bound on decoding threads (the default is the CPUs this process may run on, at most this)."""


@dataclass(frozen=True)
class FrameSet:
    """Frames of many utterances in one flat array: utterance ``i`` is ``data[offsets[i]:offsets[i + 1]]``."""

    keys: list[str]
    """Utterance keys, store order (only extracted ones: failed and pending utterances are left out)."""
    data: np.ndarray
    """(sum T_i, D_frames) float32 (or float16 when asked): every utterance's frames, one after the other."""
    offsets: np.ndarray
    """(N + 1,) int64: where each utterance starts in ``data``; ``offsets[-1] == len(data)``."""

    @property
    def lengths(self) -> np.ndarray:
        """(N,) int64: frames per utterance (T_i)."""
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.keys)

    def frames(self, i: int) -> np.ndarray:
        """(T_i, D_frames): utterance ``i``'s frames (a view into ``data``)."""
        return self.data[self.offsets[i]:self.offsets[i + 1]]

    def padded(self, max_frames: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(N, T_max, D) zero-padded frames and (N, T_max) bool mask of real frames; ``max_frames`` cuts longer
        utterances to their first ``max_frames`` frames (T_max = the longest kept length)."""
        lengths = self.lengths if max_frames is None else np.minimum(self.lengths, max_frames)
        t_max = int(lengths.max()) if len(lengths) else 0
        out = np.zeros((len(self.keys), t_max, self.data.shape[1]), self.data.dtype)  # (N, T_max, D)
        mask = np.arange(t_max)[None, :] < lengths[:, None]  # (N, T_max)
        for i, ln in enumerate(lengths):
            out[i, :ln] = self.data[self.offsets[i]:self.offsets[i] + ln]
        return out, mask


def default_threads() -> int:
    """The CPUs this process may run on, at most MAX_THREADS."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, MAX_THREADS))


TORCH_GRAIN = 32768
"""torch runs an elementwise op of fewer elements than this (its ``GRAIN_SIZE``) on the calling thread."""


@functools.cache
def converter() -> Callable[[np.ndarray, np.ndarray], None]:
    """``copy(dst, src)`` for C-contiguous row blocks: dtype conversion into ``dst``; torch's (vectorised F16C,
    releases the GIL, 4-8x numpy's scalar float16 conversion here) when torch is installed, else numpy's.

    torch's conversion runs in slabs of under ``TORCH_GRAIN`` elements so that each runs on the calling thread:
    the decoding threads already use every core, and a copy of one chunk handed to torch's own thread pool took
    8 ms instead of 0.5 ms on the 2-core machine (docs/BENCHMARKS.md).
    """
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency of emocache; kept for slim installs
        return np.copyto

    def copy(dst: np.ndarray, src: np.ndarray) -> None:
        if dst.dtype == src.dtype or not len(dst):
            np.copyto(dst, src)
            return
        td, ts = torch.from_numpy(dst), torch.from_numpy(src)
        step = max(1, (TORCH_GRAIN - 1) // max(1, dst[0].size))
        for i in range(0, len(dst), step):
            td[i:i + step].copy_(ts[i:i + step])

    return copy


def fast_codecs(arr, frame_dim: int) -> str | None:
    """The compressor (``"zstd"`` or ``"blosc"``) when chunks of ``arr`` can be decoded here: exactly bytes (little
    endian) + zstd + crc32c (the format) or bytes + blosc (any inner codec and shuffle, typesize the dtype's) +
    crc32c (``frame_codecs(..., "blosc-zstd")``), the chunk spanning every column; None for anything else (read
    through zarr)."""
    c = arr.metadata.codecs
    if not (len(c) == 3 and isinstance(c[0], BytesCodec) and str(getattr(c[0].endian, "value", "little")) == "little"
            and isinstance(c[2], Crc32cCodec) and arr.metadata.to_dict()["chunk_grid"].get("name") == "regular"
            and tuple(arr.chunks)[1:] == (frame_dim,) and arr.dtype in (np.float16, np.float32)):
        return None
    if isinstance(c[1], ZstdCodec):
        return "zstd"
    if isinstance(c[1], BloscCodec) and c[1].typesize == arr.dtype.itemsize:  # any inner codec and shuffle
        return "blosc"
    return None


def runs(rows: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Merge (src_start, length, dst_start) pieces that continue each other in both source and destination."""
    out: list[list[int]] = []
    for s, ln, d in rows:
        if ln <= 0:
            continue
        if out and out[-1][0] + out[-1][1] == s and out[-1][2] + out[-1][1] == d:
            out[-1][1] += ln
        else:
            out.append([s, ln, d])
    return [tuple(r) for r in out]


def chunk_pieces(pieces: list[tuple[int, int, int]], rows_per_chunk: int) -> dict[int, list[tuple[int, int, int]]]:
    """chunk number -> [(row in chunk, rows, dst row)]: where each run's rows sit in the array's chunks."""
    out: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    for s, ln, d in pieces:
        for c in range(s // rows_per_chunk, (s + ln - 1) // rows_per_chunk + 1):
            lo, hi = max(s, c * rows_per_chunk), min(s + ln, (c + 1) * rows_per_chunk)
            out[c].append((lo - c * rows_per_chunk, hi - lo, d + lo - s))
    return out


class ChunkReader:
    """Reads one array's chunks: fetch through the guarded store, CRC32C, decompress (``codec``: blosc or zstd, as
    :func:`fast_codecs` names it) into a thread's scratch buffer."""

    def __init__(self, arr, where: str, codec: str = "zstd"):
        self.arr = arr
        self.codec = codec
        self.where = where
        self.rows = int(arr.chunks[0])
        self.shape = (self.rows, int(arr.shape[1]))
        self.nbytes = self.rows * self.shape[1] * arr.dtype.itemsize
        self.zstd = Zstd()
        self.local = threading.local()
        self.folder: tuple | None = None

    def key(self, c: int) -> str:
        k = self.arr.metadata.encode_chunk_key((c, 0))
        return f"{self.arr.path}/{k}" if self.arr.path else k

    def fail(self, what: str) -> StoreError:
        return StoreError(f"{self.where}: unreadable ({what}); run `emocache verify` and re-extract the blocks it "
                          "names with --redo-failed")

    def fetch(self, c: int) -> np.ndarray | None:
        """Chunk ``c``'s stored bytes (uint8), None when absent. Local stores: read into this thread's reused buffer
        after the guard's checks (every path component lstat-checked, size bound, compression header); other
        stores: through the guarded store's ``get`` (the same checks)."""
        key, zs = self.key(c), self.arr.store
        resolve = getattr(zs, "resolve", None)
        if resolve is None:
            buf = sync(zs.get(key, prototype=default_buffer_prototype()))
            return None if buf is None else buf.as_numpy_array().view(np.uint8).reshape(-1)
        if self.folder is None:  # the array's folder, every component checked once
            folder, fst = resolve(self.arr.path)
            self.folder = (self.arr.path, folder) if fst is not None and stat.S_ISDIR(fst.st_mode) else ()
        path, st = resolve(key, folder=self.folder or None)  # raises on a link or a special file in the path
        if st is None or not stat.S_ISREG(st.st_mode):
            zs.missing.add(key)
            return None
        size = st.st_size
        if size > zs.max_object(key):
            raise zs.too_big(key, size)
        buf = getattr(self.local, "raw", None)
        if buf is None or buf.size < size + 1:
            buf = self.local.raw = np.empty(max(size + 1, 2 * self.nbytes), np.uint8)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            n = os.readv(fd, [memoryview(buf)[:size + 1]])  # one byte more: a file grown since stat shows
        finally:
            os.close(fd)
        if n != size:
            raise self.fail(f"chunk {self.arr.metadata.encode_chunk_key((c, 0))} changed size while read "
                            f"({size} bytes, then {n}); another process is writing the store")
        raw = buf[:size]
        zs.check_chunk(key, memoryview(raw))  # compression header against the array's chunk size (bombs)
        return raw

    def check_header(self, name: str, body: np.ndarray) -> None:
        """The compression header must declare exactly one chunk's bytes (and, for blosc, the stored length and the
        dtype's item size) before anything is decoded."""
        if self.codec == "zstd":
            size = zstd_content_size(body[:18].tobytes())
            if size != self.nbytes:
                raise self.fail(f"chunk {name}: zstd frame declares {size} bytes, the array's chunks hold "
                                f"{self.nbytes}")
            return
        head = body[:BLOSC_HEADER].tobytes()
        if len(head) < BLOSC_HEADER:
            raise self.fail(f"chunk {name}: {body.size} bytes, shorter than a blosc header")
        size, stored = int.from_bytes(head[4:8], "little"), int.from_bytes(head[12:16], "little")
        if size != self.nbytes or stored != body.size or head[3] != self.arr.dtype.itemsize:
            raise self.fail(f"chunk {name}: blosc header declares {size} bytes stored in {stored} (item size "
                            f"{head[3]}); the array's chunks hold {self.nbytes}, stored in {body.size} (item size "
                            f"{self.arr.dtype.itemsize})")

    def decode(self, c: int) -> np.ndarray:
        """Chunk ``c`` as (rows, D) in the array's dtype; valid until this thread decodes its next chunk."""
        raw = self.fetch(c)
        name = self.arr.metadata.encode_chunk_key((c, 0))
        if raw is None:
            raise StoreError(f"{self.where}: chunk(s) {[name]} missing from a committed block; the store is damaged "
                             "(a missing chunk is never read as zeros). Run `emocache verify`, then `emocache "
                             "extract ... --redo-failed`")
        if raw.size < 4:
            raise self.fail(f"chunk {name}: {raw.size} bytes, too short for its checksum")
        body = raw[:-4]
        if google_crc32c.value(body) != int.from_bytes(raw[-4:].tobytes(), "little"):
            raise self.fail(f"ValueError: Stored and computed checksum do not match in chunk {name}")
        self.check_header(name, body)
        scratch = getattr(self.local, "scratch", None)
        if scratch is None or scratch.shape != self.shape or scratch.dtype != self.arr.dtype:
            scratch = self.local.scratch = np.empty(self.shape, self.arr.dtype)
        try:
            if self.codec == "blosc":
                decompress(body, scratch)
            else:
                self.zstd.decode(body, out=scratch)
        except Exception as e:
            raise self.fail(f"chunk {name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
        return scratch


def read_frames(entry, rows: np.ndarray, idx: np.ndarray, dtype=np.float32, threads: int | None = None) -> FrameSet:
    """Frames of ``entry``'s utterances ``rows`` (increasing row numbers of done utterances) given the index ``idx``:
    see :meth:`Entry.all_frames <emocache.store.entry.Entry.all_frames>`."""
    dtype = np.dtype(dtype)
    lengths = idx[rows, 1].astype(np.int64)
    offsets = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    plan = []  # (block, frames array, pieces): every row checked against its block before anything is allocated
    blocks = rows // entry.block_size
    for b in np.unique(blocks):
        b = int(b)
        arr = entry.block_frames(b)
        if arr.dtype == np.float32 and dtype == np.float16:
            raise StoreError(f"{entry.where}: block {b} stores float32 frames (values beyond float16's range); "
                             "read this entry with dtype float32")
        pieces, total = [], int(arr.shape[0])
        for j in np.flatnonzero(blocks == b):
            off, ln = int(idx[rows[j], 0]), int(lengths[j])
            if off + ln > total:
                entry._rows(arr, b, off, ln)  # raises, naming the block
            pieces.append((off, ln, int(offsets[j])))
        plan.append((b, arr, runs(pieces)))
    entry.check_rows(idx, rows)  # no two utterances sharing frames (what verify refuses)
    try:  # pages are touched only as chunks decode: a chunk missing from a committed block stops the read early
        if len(rows) and (offsets[1:] < offsets[:-1]).any():
            raise MemoryError  # lengths whose sum overflows int64
        out = np.empty((int(offsets[-1]), entry.frame_dim), dtype)  # (sum T_i, D)
    except MemoryError:
        raise StoreError(f"{entry.where}: the index claims {int(offsets[-1])} frames of {entry.frame_dim} values "
                         "for these utterances, more than this machine can hold; run `emocache verify`") from None
    copy = converter()
    tasks: list[tuple[ChunkReader, int, list[tuple[int, int, int]]]] = []
    for b, arr, pieces in plan:
        if not pieces:
            continue
        codec = fast_codecs(arr, entry.frame_dim)
        if not codec:
            F = entry.block_frames_data(b, dtype=arr.dtype)  # through zarr: same checks as iter_frames
            for s, ln, d in pieces:
                copy(out[d:d + ln], F[s:s + ln])
            continue
        reader = ChunkReader(arr, f"{entry.url}/{arr.path}" if entry.url else arr.path, codec)
        tasks.extend((reader, c, p) for c, p in sorted(chunk_pieces(pieces, reader.rows).items()))

    def run(task) -> None:
        reader, c, pieces = task
        chunk = reader.decode(c)  # (rows, D)
        for s, ln, d in pieces:
            copy(out[d:d + ln], chunk[s:s + ln])

    n = threads or default_threads()
    if tasks:  # on pool threads even when n == 1: there blosc decodes single-threaded (module docstring)
        with ThreadPoolExecutor(max(1, min(n, len(tasks))), thread_name_prefix="emocache-frames") as ex:
            futures = [ex.submit(run, t) for t in tasks]
            try:
                for f in futures:
                    f.result()
            except BaseException:
                for f in futures:
                    f.cancel()  # a damaged chunk stops the read: do not decode the rest
                raise
    keys = entry.keys
    return FrameSet([keys[int(i)] for i in rows], out, offsets)
