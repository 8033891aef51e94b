"""The Zarr v3 feature store (layout documented in docs/STORE.md).

::

    <root>/                                   attrs {"emocache_format": 1}
      <model>/<dataset>/                      attrs: provenance, n, block_size, dim, frame_dim, has_frames
        keys     [N] string                   manifest keys, store order
        labels   [N] string                   raw manifest labels
        pooled   [N, D] float32               chunk = one block of utterances
        index    [N, 2] int64                 (offset, length) into the block's frames; the commit record,
                                              written last: -1 pending, -2 failed, >= 0 done
        blocks/b<000000>/                     one group per block, one writer each; attrs {"errors": {key: msg}}
          frames [sum T_i, D_frames]          float16 (float32 when a block's values overflow float16)

Every chunk carries a CRC32C checksum, so a corrupted or truncated chunk fails loudly on read. Stores from
others are data: only JSON metadata and allow-listed codecs are read, and attributes, shapes and dtypes are
validated before use (:class:`StoreError` otherwise).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT = 1
PENDING, FAILED = -1, -2
F16_MAX = 65504.0
DEFAULT_BLOCK = 128
STORAGE_OPTIONS_ENV = "EMOCACHE_STORAGE_OPTIONS"
"""JSON fsspec storage options used when none are passed (e.g. {"endpoint_url": ...} for an S3-compatible server)."""
SAFE_CODECS = frozenset({"bytes", "vlen-utf8", "zstd", "gzip", "blosc", "crc32c", "transpose", "sharding_indexed"})
"""Codecs a store may use; anything else (pickle, custom plugins) is refused before a chunk is decoded."""
MAX_ROWS = 1 << 40


class StoreError(ValueError):
    """A store or entry that cannot be used as asked; the message says which and what to do."""


def _zarr():
    import zarr

    warnings.filterwarnings("ignore", module="zarr")
    warnings.filterwarnings("ignore", message=".*not part of the Zarr format 3.*")
    return zarr


def _codecs(level: int = 3):
    """zstd then a CRC32C checksum on every chunk (frames use level 1: features compress little, speed wins)."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return [ZstdCodec(level=level), Crc32cCodec()]


def is_remote(url: str) -> bool:
    return "://" in str(url) and not str(url).startswith("file://")


def storage_options_for(storage_options: dict | None = None) -> dict:
    """The given options, else those in $EMOCACHE_STORAGE_OPTIONS (JSON), else none."""
    if storage_options:
        return dict(storage_options)
    raw = os.environ.get(STORAGE_OPTIONS_ENV)
    if not raw:
        return {}
    try:
        opts = json.loads(raw)
    except json.JSONDecodeError as e:
        raise StoreError(f"${STORAGE_OPTIONS_ENV} is not JSON ({e}); e.g. '{{\"endpoint_url\": \"http://host:9000\"}}'")
    if not isinstance(opts, dict):
        raise StoreError(f"${STORAGE_OPTIONS_ENV} must hold a JSON object, got {type(opts).__name__}")
    return opts


def zarr_store(url: str | Path, read_only: bool = True, storage_options: dict | None = None):
    """The zarr storage for a URL: LocalStore for paths (atomic writes), ZipStore for .zip, fsspec otherwise."""
    _zarr()
    from zarr.storage import FsspecStore, LocalStore, ZipStore

    url = str(url)
    if url.startswith("file://"):
        url = url[len("file://"):]
    if url.endswith(".zip") and not is_remote(url):
        if not read_only:
            raise StoreError(f"{url}: zip stores are read-only; write to a directory, then `emocache pack` it")
        if not Path(url).exists():
            raise StoreError(f"{url}: no such file")
        return ZipStore(url, mode="r")
    if is_remote(url):
        try:
            return FsspecStore.from_url(url, read_only=read_only, storage_options=storage_options_for(storage_options))
        except ImportError as e:
            raise StoreError(f"{url}: {e}; install the filesystem package (s3fs for s3://, gcsfs for gs://)") from None
    if read_only and not Path(url).exists():
        raise StoreError(f"{url}: no store here (nothing extracted yet? run `emocache extract ... --store {url}`)")
    return LocalStore(url, read_only=read_only)


def _codec_names(codecs) -> set[str]:
    """Every codec name in a v3 codec list, including those nested in sharding codecs."""
    out: set[str] = set()
    for c in codecs or ():
        if isinstance(c, str):
            out.add(c)
            continue
        if not isinstance(c, dict):
            out.add(repr(c))
            continue
        out.add(str(c.get("name")))
        conf = c.get("configuration") or {}
        if isinstance(conf, dict):
            out |= _codec_names(conf.get("codecs")) | _codec_names(conf.get("index_codecs"))
    return out


def check_array(arr, where: str, dtypes: tuple[str, ...], shape: tuple | None = None, ndim: int | None = None):
    """Refuse an array with an unsafe codec, another data type or shape (StoreError naming ``where``)."""
    zarr = _zarr()
    if not isinstance(arr, zarr.Array):
        raise StoreError(f"{where}: expected an array, found a {type(arr).__name__}")
    meta = arr.metadata.to_dict()
    if meta.get("zarr_format") != 3:
        raise StoreError(f"{where}: Zarr format {meta.get('zarr_format')}; emocache stores are Zarr v3")
    bad = _codec_names(meta.get("codecs")) - SAFE_CODECS
    if bad:
        raise StoreError(f"{where}: uses codec(s) {sorted(bad)}; emocache reads only {sorted(SAFE_CODECS)} "
                         "(a store is data, never code). Ask its author to re-extract with emocache")
    dt = str(meta.get("data_type"))
    if dt not in dtypes:
        raise StoreError(f"{where}: data type {dt}, expected {' or '.join(dtypes)}")
    if ndim is not None and len(arr.shape) != ndim:
        raise StoreError(f"{where}: {len(arr.shape)}-d, expected {ndim}-d")
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise StoreError(f"{where}: shape {tuple(arr.shape)}, expected {tuple(shape)} from the entry's attributes")
    return arr


def _int_attr(attrs: dict, name: str, where: str, lo: int, hi: int = MAX_ROWS) -> int:
    v = attrs.get(name)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise StoreError(f"{where}: attribute {name}={v!r} must be an integer in [{lo}, {hi}]; the store is damaged "
                         "or not written by emocache")
    return v


def _member(group, name: str, where: str):
    """``group[name]`` with unreadable metadata (unknown codec, bad JSON) turned into a StoreError."""
    try:
        return group[name]
    except KeyError:
        raise StoreError(f"{where}/{name}: missing; the entry is incomplete or damaged") from None
    except Exception as e:
        raise StoreError(f"{where}/{name}: unreadable metadata ({type(e).__name__}: {e})") from None


def invalid_rows(idx: np.ndarray) -> np.ndarray:
    """(N,) bool: index rows that no writer produces (offset below -2, or a done row with a negative length)."""
    return (idx[:, 0] < FAILED) | ((idx[:, 0] >= 0) & (idx[:, 1] < 0))


def frames_end(rows: np.ndarray) -> int:
    """The frame count a block's index rows (n_b, 2) claim: the end of the last done utterance, 0 when none."""
    ok = rows[:, 0] >= 0
    return int((rows[ok, 0] + rows[ok, 1]).max()) if ok.any() else 0


@dataclass(frozen=True)
class BlockState:
    done: int
    failed: int
    pending: int

    @property
    def committed(self) -> bool:
        return self.pending == 0


class Entry:
    """One (model, dataset) group, its attributes and arrays validated on opening."""

    def __init__(self, group, model: str, dataset: str, url: str = ""):
        self.group = group
        self.model = model
        self.dataset = dataset
        self.where = where = f"{url}/{model}/{dataset}" if url else f"{model}/{dataset}"
        a = dict(group.attrs)
        self.attrs = a
        self.n = _int_attr(a, "n", where, 0)
        self.block_size = _int_attr(a, "block_size", where, 1)
        self.dim = _int_attr(a, "dim", where, 1, 1 << 20)
        self.frame_dim = _int_attr(a, "frame_dim", where, 1, 1 << 20)
        if not isinstance(a.get("has_frames"), bool):
            raise StoreError(f"{where}: attribute has_frames={a.get('has_frames')!r} must be true or false")
        self.has_frames = a["has_frames"]
        if not isinstance(a.get("provenance", {}), dict):
            raise StoreError(f"{where}: attribute provenance must be a JSON object")
        n, bs = self.n, self.block_size
        self.keys_array = check_array(_member(group, "keys", where), f"{where}/keys", ("string",), (n,))
        self.labels_array = check_array(_member(group, "labels", where), f"{where}/labels", ("string",), (n,))
        self.pooled_array = check_array(_member(group, "pooled", where), f"{where}/pooled", ("float32",),
                                        (n, self.dim))
        self.index_array = check_array(_member(group, "index", where), f"{where}/index", ("int64",), (n, 2))
        for arr, name in ((self.pooled_array, "pooled"), (self.index_array, "index")):
            if n and arr.chunks[0] != min(bs, n):
                raise StoreError(f"{where}/{name}: chunks of {arr.chunks[0]} rows, expected one block ({bs}); "
                                 "blocks must map to whole chunks for the commit protocol")
        self._keys: list[str] | None = None
        self._labels: list[str] | None = None
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

    @property
    def keys(self) -> list[str]:
        if self._keys is None:
            self._keys = [str(k) for k in self.keys_array[:]]
        return self._keys

    @property
    def labels(self) -> list[str]:
        if self._labels is None:
            self._labels = [str(k) for k in self.labels_array[:]]
        return self._labels

    def index(self, rows: slice = slice(None)) -> np.ndarray:
        """(N, 2) int64: (offset, length) per utterance; -1 pending, -2 failed (values range-checked).

        ``rows`` reads only those rows (a contiguous slice), e.g. one utterance's.
        """
        try:
            idx = np.asarray(self.index_array[rows], dtype=np.int64)
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

    def block_errors(self, b: int) -> dict[str, str]:
        """Block ``b``'s ``errors`` attribute (key -> message), validated."""
        errs = _member(self.group, f"blocks/b{b:06d}", self.where).attrs.get("errors", {})
        if not isinstance(errs, dict) or not all(isinstance(v, str) for v in errs.values()):
            raise StoreError(f"{self.where}/blocks/b{b:06d}: attribute errors must map keys to messages")
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

    def pooled(self) -> tuple[list[str], np.ndarray]:
        mask = self.done_mask()
        X = np.asarray(self.pooled_array[:], dtype=np.float32)[mask]  # (N_done, D)
        keys = [k for k, m in zip(self.keys, mask) if m]
        return keys, X

    def labels_done(self) -> list[str]:
        return [lab for lab, m in zip(self.labels, self.done_mask()) if m]

    def block_frames(self, b: int):
        """Block ``b``'s frames array (sum T_i, D_frames), dtype and codecs checked."""
        where = f"{self.where}/blocks/b{b:06d}/frames"
        arr = _member(self.group, f"blocks/b{b:06d}/frames", self.where)
        check_array(arr, where, ("float16", "float32"), ndim=2)
        if arr.shape[1] != self.frame_dim:
            raise StoreError(f"{where}: {arr.shape[1]} columns, the entry says frame_dim={self.frame_dim}")
        return arr

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
        return np.asarray(self._rows(F, b, off, ln), dtype=np.float32)

    def iter_frames(self, keys: list[str] | None = None) -> Iterator[tuple[str, np.ndarray]]:
        """(key, frames) in store order, reading each block's frames once."""
        if not self.has_frames:
            raise StoreError(f"{self.model}/{self.dataset}: extracted with --no-frames; only pooled vectors")
        idx = self.index()
        want = None if keys is None else set(keys)
        if want is not None:
            missing = want - set(self.keys)
            if missing:
                raise KeyError(f"{self.model}/{self.dataset}: {len(missing)} keys not in the entry, "
                               f"e.g. {sorted(missing)[:3]}")
        for b in range(self.n_blocks):
            sl = self.block_slice(b)
            rows = [i for i in range(sl.start, sl.stop) if idx[i, 0] >= 0
                    and (want is None or self.keys[i] in want)]
            if not rows:
                continue
            F = np.asarray(self.block_frames(b)[:], dtype=np.float32)  # (sum T, D)
            for i in rows:
                off, ln = idx[i]
                yield self.keys[i], self._rows(F, b, int(off), int(ln))

    # -- writing ---------------------------------------------------------------------------------------------
    def write_block(self, b: int, pooled: np.ndarray, frames: list[np.ndarray] | None,
                    errors: dict[int, str]) -> None:
        """Write block ``b``: frames and pooled first, the index chunk (the commit record) last.

        ``pooled`` is (n_b, D) with rows of failed utterances ignored; ``frames`` per utterance (T_i, D_frames)
        (None entries for failed ones); ``errors`` maps a row within the block to its message.
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
        self.commit_block(b, P, index, F, {self.keys[sl.start + i]: msg for i, msg in sorted(errors.items())})

    def commit_block(self, b: int, pooled: np.ndarray, index: np.ndarray, frames: np.ndarray | None,
                     errors: dict[str, str]) -> None:
        """Write block ``b``'s objects, the index chunk last: pooled (n_b, D) float32, index (n_b, 2) int64,
        frames (sum T_i, D_frames) float16/float32 (None without frames), errors key -> message.

        A block group left by an earlier attempt is uncommitted first (index chunk reset), then replaced.
        """
        sl = self.block_slice(b)
        blocks = self.group.require_group("blocks")
        name = f"b{b:06d}"
        if name in blocks:
            self.reset_blocks([b])
            del blocks[name]
        g = blocks.create_group(name)
        g.attrs["errors"] = errors
        if self.has_frames:
            F = frames if frames is not None else np.zeros((0, self.frame_dim), np.float16)
            total = F.shape[0]
            rows = max(1, min(max(total, 1), (1 << 20) // (self.frame_dim * F.dtype.itemsize)))
            # write_empty_chunks: an all-zero chunk (a block whose utterances all failed) must still exist on
            # disk, or verify cannot tell it from a lost chunk
            arr = g.create_array("frames", shape=(total, self.frame_dim), dtype=F.dtype,
                                 chunks=(rows, self.frame_dim), compressors=_codecs(level=1), fill_value=0,
                                 config={"write_empty_chunks": True})
            if total:
                arr[:] = F
        self.pooled_array.with_config({"write_empty_chunks": True})[sl] = pooled
        self.index_array[sl] = index  # commit

    def reset_blocks(self, blocks: list[int]) -> None:
        """Mark blocks pending again (their index chunk first), so the next run redoes them."""
        for b in blocks:
            sl = self.block_slice(b)
            self.index_array[sl] = np.full((sl.stop - sl.start, 2), PENDING, dtype=np.int64)


class Store:
    """A feature store: one Zarr v3 group holding one sub-group per (model, dataset)."""

    def __init__(self, url: str | Path, mode: str = "r", storage_options: dict | None = None):
        zarr = _zarr()
        self.url = str(url)
        self.mode = mode
        self._entries: dict[tuple[str, str], Entry] = {}
        self.storage_options = storage_options_for(storage_options)
        read_only = mode == "r"
        self.zstore = zs = zarr_store(url, read_only=read_only, storage_options=self.storage_options)
        try:
            if read_only:
                self.root = zarr.open_group(zs, mode="r", zarr_format=3)
            else:
                # writers ignore consolidated metadata and drop it, so no reader sees a stale listing
                self.root = zarr.open_group(zs, mode="a", zarr_format=3, use_consolidated=False)
                if "emocache_format" not in self.root.attrs or _has_consolidated(zs):
                    self.root.attrs["emocache_format"] = self.root.attrs.get("emocache_format", FORMAT)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError) as e:
            raise StoreError(f"{url}: not a Zarr v3 group ({e}); is this an emocache store?") from None
        except (ValueError, TypeError) as e:
            raise StoreError(f"{url}: unreadable root metadata ({type(e).__name__}: {e})") from None
        fmt = self.root.attrs.get("emocache_format")
        if fmt is None and read_only:
            raise StoreError(f"{url}: a Zarr group but not an emocache store (no 'emocache_format' attribute)")
        if fmt is not None and fmt != FORMAT:
            raise StoreError(f"{url}: store format {fmt}, this emocache reads format {FORMAT}; upgrade emocache")

    # -- entries ---------------------------------------------------------------------------------------------
    def entries(self) -> list[tuple[str, str]]:
        out = []
        where = self.url
        try:
            for model, g in sorted(self.root.groups()):
                where = f"{self.url}/{model}"
                for dataset, e in sorted(g.groups()):
                    if "n" in e.attrs:
                        out.append((model, dataset))
        except (ValueError, TypeError) as e:  # a damaged zarr.json below ``where``
            raise StoreError(f"{where}: unreadable metadata ({type(e).__name__}: {e}); the store is damaged") from None
        return out

    def _node(self, path: str):
        """``root[path]``, None when absent; unreadable metadata is a StoreError."""
        try:
            return self.root[path]
        except KeyError:
            return None
        except (ValueError, TypeError) as e:
            raise StoreError(f"{self.url}/{path}: unreadable metadata ({type(e).__name__}: {e})") from None

    def entry(self, model: str, dataset: str) -> Entry:
        """The entry (model, dataset); a read-only store opens each entry once (its keys never change)."""
        cached = self._entries.get((model, dataset))
        if cached is not None:
            return cached
        path = f"{model}/{dataset}"
        g = self._node(path)
        if g is None or not hasattr(g, "attrs") or "n" not in g.attrs:
            have = ", ".join(f"{m}/{d}" for m, d in self.entries()) or "none"
            raise KeyError(f"{self.url}: no entry {path} (entries: {have})")
        e = Entry(g, model, dataset, self.url)
        if self.mode == "r":
            self._entries[(model, dataset)] = e
        return e

    def _entry_group(self, model: str, dataset: str):
        """The entry's group when complete (attributes written), else None."""
        zarr = _zarr()
        g = self._node(f"{model}/{dataset}")
        if g is None:
            return None
        if not isinstance(g, zarr.Group):
            raise StoreError(f"{self.url}/{model}/{dataset}: an array where an entry group belongs")
        return g if "n" in g.attrs else None

    def create_entry(self, model: str, dataset: str, keys: list[str], labels: list[str], dim: int,
                     frame_dim: int, provenance: dict, has_frames: bool = True,
                     block_size: int = DEFAULT_BLOCK) -> Entry:
        """Create an entry, or return the existing one when it holds the same keys and weights.

        Refuses (StoreError) an existing entry whose keys, weights identity, layer or dims differ. Safe when
        several processes create the same entry at once: every step writes identical objects and the
        attributes (which make the entry exist) come last, so they all end with one valid entry.
        """
        path = f"{model}/{dataset}"
        if self._entry_group(model, dataset) is not None:
            e = self.entry(model, dataset)
            old = e.provenance
            for field in ("weights", "revision", "sha256", "layer", "pooling", "long_policy"):
                if str(old.get(field)) != str(provenance.get(field)):
                    raise StoreError(
                        f"{self.url}/{path}: the entry was made with {field}={old.get(field)!r}, this run has "
                        f"{provenance.get(field)!r}; refusing to mix them. Use another --store or remove the entry")
            if e.dim != dim or e.frame_dim != frame_dim or e.has_frames != has_frames:
                raise StoreError(f"{self.url}/{path}: existing entry has dim={e.dim}, frames={e.has_frames}; "
                                 f"this run has dim={dim}, frames={has_frames}")
            if e.keys != list(keys):
                raise StoreError(f"{self.url}/{path}: the entry holds {e.n} utterances from another manifest "
                                 f"(sha256 {old.get('manifest_sha256', '?')[:12]}); this manifest has {len(keys)}. "
                                 "Use another dataset name or store")
            return e
        g = _require_group(_require_group(self.root, model), dataset)
        n = len(keys)
        bs = max(1, min(block_size, n))
        _require_array(g, "keys", shape=(n,), dtype=str, chunks=(max(n, 1),))[:] = np.array(keys, dtype=object)
        _require_array(g, "labels", shape=(n,), dtype=str, chunks=(max(n, 1),))[:] = np.array(labels, dtype=object)
        _require_array(g, "pooled", shape=(n, dim), dtype="float32", chunks=(bs, dim), fill_value=0)
        _require_array(g, "index", shape=(n, 2), dtype="int64", chunks=(bs, 2), fill_value=PENDING)
        _require_group(g, "blocks")
        g.update_attributes({"n": n, "block_size": bs, "dim": dim, "frame_dim": frame_dim, "has_frames": has_frames,
                        "provenance": provenance, "format": FORMAT})  # one write: the entry exists
        return Entry(g, model, dataset, self.url)

    # -- the Python API (DESIGN.md contract) -----------------------------------------------------------------
    def provenance(self, model: str, dataset: str) -> dict:
        return self.entry(model, dataset).provenance

    def pooled(self, model: str, dataset: str) -> tuple[list[str], np.ndarray]:
        """keys (successfully extracted, store order) and float32 [N, D]."""
        return self.entry(model, dataset).pooled()

    def labels(self, model: str, dataset: str) -> list[str]:
        """Raw labels aligned with the keys of :meth:`pooled`."""
        return self.entry(model, dataset).labels_done()

    def has_frames(self, model: str, dataset: str) -> bool:
        return self.entry(model, dataset).has_frames

    def frames(self, model: str, dataset: str, key: str) -> np.ndarray:
        return self.entry(model, dataset).frames(key)

    def iter_frames(self, model: str, dataset: str, keys: list[str] | None = None):
        return self.entry(model, dataset).iter_frames(keys)

    def errors(self, model: str, dataset: str) -> dict[str, str]:
        return self.entry(model, dataset).errors()


def _has_consolidated(zs) -> bool:
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    raw = sync(zs.get("zarr.json", prototype=default_buffer_prototype()))
    return raw is not None and json.loads(raw.to_bytes()).get("consolidated_metadata") is not None


def _require_group(parent, name: str):
    """Open or create a sub-group; another process creating it at the same moment is fine."""
    zarr = _zarr()
    for _ in range(5):
        try:
            return parent.require_group(name)
        except zarr.errors.ContainsGroupError:
            continue
    return parent[name]


def _require_array(g, name: str, shape: tuple, dtype, chunks: tuple, fill_value=None):
    """Open an array of exactly this spec, or create it; a mismatching one (left by a crashed creation of an
    entry that never got its attributes) is replaced."""
    zarr = _zarr()
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
        return g.create_array(name, shape=shape, dtype=dtype, chunks=chunks, compressors=_codecs(),
                              fill_value=fill_value, overwrite=overwrite)
    except zarr.errors.ContainsArrayError:
        return g[name]


def open_store(url: str | Path, mode: str = "r", storage_options: dict | None = None) -> Store:
    """Open a store: read-only by default; ``mode='a'`` to write. Local path, s3://, gs://, .zip."""
    return Store(url, mode=mode, storage_options=storage_options)


def write_arrays(url: str | Path, model: str, dataset: str, keys: list[str], labels: list[str],
                 pooled: np.ndarray, frames: list[np.ndarray] | None = None, provenance: dict | None = None,
                 block_size: int = DEFAULT_BLOCK) -> Entry:
    """Write a complete entry from arrays (features made elsewhere, tests, merges)."""
    pooled = np.asarray(pooled, dtype=np.float32)
    frame_dim = frames[0].shape[1] if frames else pooled.shape[1]
    prov = {"model": model, "weights": "arrays", "layer": "n/a", "pooling": "given", **(provenance or {})}
    st = open_store(url, mode="a")
    e = st.create_entry(model, dataset, list(keys), list(labels), pooled.shape[1], frame_dim, prov,
                        has_frames=frames is not None, block_size=block_size)
    for b in range(e.n_blocks):
        sl = e.block_slice(b)
        e.write_block(b, pooled[sl], frames[sl] if frames is not None else None, {})
    return e


def describe(store: Store) -> list[dict]:
    """One row per entry: counts, dims, bytes, provenance (``emocache info``)."""
    rows = []
    for model, dataset in store.entries():
        e = store.entry(model, dataset)
        idx = e.index()
        rows.append({
            "model": model, "dataset": dataset, "n": e.n, "done": int((idx[:, 0] >= 0).sum()),
            "failed": int((idx[:, 0] == FAILED).sum()), "pending": int((idx[:, 0] == PENDING).sum()),
            "dim": e.dim, "frames": e.has_frames, "blocks": e.n_blocks, "bytes": entry_bytes(store, model, dataset),
            "provenance": e.provenance,
        })
    return rows


def entry_bytes(store: Store, model: str, dataset: str) -> int | None:
    """Bytes stored for an entry's objects: files on disk, members of a .zip, objects under an fsspec URL."""
    url = store.url[len("file://"):] if store.url.startswith("file://") else store.url
    prefix = f"{model}/{dataset}/"
    if is_remote(url):
        import fsspec

        fs, path = fsspec.core.url_to_fs(url, **store.storage_options)
        try:
            return int(fs.du(f"{path.rstrip('/')}/{prefix}", total=True))
        except (OSError, NotImplementedError):
            return None
    if url.endswith(".zip"):
        import zipfile

        with zipfile.ZipFile(url) as z:
            return sum(i.compress_size for i in z.infolist() if i.filename.startswith(prefix))
    p = Path(url) / model / dataset
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def dumps(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str)
