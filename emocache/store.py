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

Every chunk carries a CRC32C checksum, so a corrupted or truncated chunk fails loudly on read.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT = 1
PENDING, FAILED = -1, -2
F16_MAX = 65504.0
DEFAULT_BLOCK = 128


class StoreError(ValueError):
    """A store or entry that cannot be used as asked; the message says which and what to do."""


def _zarr():
    import zarr

    warnings.filterwarnings("ignore", module="zarr")
    warnings.filterwarnings("ignore", message=".*not part of the Zarr format 3.*")
    return zarr


def _codecs():
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return [ZstdCodec(level=3), Crc32cCodec()]


def is_remote(url: str) -> bool:
    return "://" in str(url) and not str(url).startswith("file://")


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
        return FsspecStore.from_url(url, read_only=read_only, storage_options=storage_options or {})
    if read_only and not Path(url).exists():
        raise StoreError(f"{url}: no store here (nothing extracted yet? run `emocache extract ... --store {url}`)")
    return LocalStore(url, read_only=read_only)


@dataclass(frozen=True)
class BlockState:
    done: int
    failed: int
    pending: int

    @property
    def committed(self) -> bool:
        return self.pending == 0


class Entry:
    """One (model, dataset) group."""

    def __init__(self, group, model: str, dataset: str):
        self.group = group
        self.model = model
        self.dataset = dataset
        a = dict(group.attrs)
        self.attrs = a
        self.n = int(a["n"])
        self.block_size = int(a["block_size"])
        self.dim = int(a["dim"])
        self.frame_dim = int(a["frame_dim"])
        self.has_frames = bool(a["has_frames"])
        self._keys: list[str] | None = None
        self._labels: list[str] | None = None

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
            self._keys = [str(k) for k in self.group["keys"][:]]
        return self._keys

    @property
    def labels(self) -> list[str]:
        if self._labels is None:
            self._labels = [str(k) for k in self.group["labels"][:]]
        return self._labels

    def index(self) -> np.ndarray:
        """(N, 2) int64: (offset, length) per utterance; -1 pending, -2 failed."""
        return np.asarray(self.group["index"][:], dtype=np.int64)

    def block_states(self, index: np.ndarray | None = None) -> list[BlockState]:
        idx = self.index() if index is None else index
        out = []
        for b in range(self.n_blocks):
            o = idx[self.block_slice(b), 0]
            out.append(BlockState(int((o >= 0).sum()), int((o == FAILED).sum()), int((o == PENDING).sum())))
        return out

    def errors(self) -> dict[str, str]:
        """key -> error message for every failed utterance of committed blocks."""
        idx = self.index()
        out: dict[str, str] = {}
        for b, st in enumerate(self.block_states(idx)):
            if st.failed and st.committed:
                out.update(self.group["blocks"][f"b{b:06d}"].attrs.get("errors", {}))
        return out

    # -- reading ---------------------------------------------------------------------------------------------
    def done_mask(self) -> np.ndarray:
        return self.index()[:, 0] >= 0

    def pooled(self) -> tuple[list[str], np.ndarray]:
        mask = self.done_mask()
        X = np.asarray(self.group["pooled"][:], dtype=np.float32)[mask]  # (N_done, D)
        keys = [k for k, m in zip(self.keys, mask) if m]
        return keys, X

    def labels_done(self) -> list[str]:
        return [lab for lab, m in zip(self.labels, self.done_mask()) if m]

    def _block_frames(self, b: int):
        return self.group["blocks"][f"b{b:06d}"]["frames"]

    def frames(self, key: str) -> np.ndarray:
        if not self.has_frames:
            raise StoreError(f"{self.model}/{self.dataset}: extracted with --no-frames; only pooled vectors")
        try:
            i = self.keys.index(key)
        except ValueError:
            raise KeyError(f"{self.model}/{self.dataset}: no utterance {key!r}") from None
        off, ln = (int(v) for v in self.group["index"][i])
        if off < 0:
            state = "failed" if off == FAILED else "not extracted yet"
            raise KeyError(f"{self.model}/{self.dataset}: utterance {key!r} {state}")
        return np.asarray(self._block_frames(i // self.block_size)[off:off + ln], dtype=np.float32)

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
            F = np.asarray(self._block_frames(b)[:], dtype=np.float32)  # (sum T, D)
            for i in rows:
                off, ln = idx[i]
                yield self.keys[i], F[off:off + ln]

    # -- writing ---------------------------------------------------------------------------------------------
    def write_block(self, b: int, pooled: np.ndarray, frames: list[np.ndarray] | None,
                    errors: dict[int, str]) -> None:
        """Write block ``b``: frames and pooled first, the index chunk (the commit record) last.

        ``pooled`` is (n_b, D) with rows of failed utterances ignored; ``frames`` per utterance (T_i, D_frames)
        (None entries for failed ones); ``errors`` maps a row within the block to its message.
        """
        sl = self.block_slice(b)
        nb = sl.stop - sl.start
        blocks = self.group.require_group("blocks")
        name = f"b{b:06d}"
        if name in blocks:
            del blocks[name]
        g = blocks.create_group(name)
        g.attrs["errors"] = {self.keys[sl.start + i]: msg for i, msg in sorted(errors.items())}
        index = np.full((nb, 2), FAILED, dtype=np.int64)
        if self.has_frames:
            assert frames is not None and len(frames) == nb
            ok = [i for i in range(nb) if i not in errors]
            lengths = [int(frames[i].shape[0]) for i in ok]
            total = sum(lengths)
            parts = [np.asarray(frames[i], dtype=np.float32) for i in ok]
            F = np.concatenate(parts, 0) if parts else np.zeros((0, self.frame_dim), np.float32)
            overflow = F.size and float(np.abs(F).max()) > F16_MAX
            dt = np.float32 if overflow else np.float16
            rows = max(1, min(max(total, 1), (1 << 20) // (self.frame_dim * np.dtype(dt).itemsize)))
            arr = g.create_array("frames", shape=(total, self.frame_dim), dtype=dt,
                                 chunks=(rows, self.frame_dim), compressors=_codecs(), fill_value=0)
            if total:
                arr[:] = F.astype(dt)
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
        self.group["pooled"][sl] = P
        self.group["index"][sl] = index  # commit

    def reset_blocks(self, blocks: list[int]) -> None:
        """Mark blocks pending again (their index chunk first), so the next run redoes them."""
        for b in blocks:
            sl = self.block_slice(b)
            self.group["index"][sl] = np.full((sl.stop - sl.start, 2), PENDING, dtype=np.int64)


class Store:
    """A feature store: one Zarr v3 group holding one sub-group per (model, dataset)."""

    def __init__(self, url: str | Path, mode: str = "r", storage_options: dict | None = None):
        zarr = _zarr()
        self.url = str(url)
        self.mode = mode
        read_only = mode == "r"
        zs = zarr_store(url, read_only=read_only, storage_options=storage_options)
        try:
            if read_only:
                self.root = zarr.open_group(zs, mode="r", zarr_format=3)
            else:
                self.root = zarr.open_group(zs, mode="a", zarr_format=3)
                if "emocache_format" not in self.root.attrs:
                    self.root.attrs["emocache_format"] = FORMAT
        except (FileNotFoundError, zarr.errors.GroupNotFoundError if hasattr(zarr.errors, "GroupNotFoundError")
                else FileNotFoundError) as e:
            raise StoreError(f"{url}: not a Zarr v3 group ({e}); is this an emocache store?") from None
        fmt = self.root.attrs.get("emocache_format")
        if fmt is None and read_only:
            raise StoreError(f"{url}: a Zarr group but not an emocache store (no 'emocache_format' attribute)")
        if fmt is not None and fmt != FORMAT:
            raise StoreError(f"{url}: store format {fmt}, this emocache reads format {FORMAT}; upgrade emocache")

    # -- entries ---------------------------------------------------------------------------------------------
    def entries(self) -> list[tuple[str, str]]:
        out = []
        for model, g in sorted(self.root.groups()):
            for dataset, e in sorted(g.groups()):
                if "n" in e.attrs:
                    out.append((model, dataset))
        return out

    def entry(self, model: str, dataset: str) -> Entry:
        path = f"{model}/{dataset}"
        try:
            g = self.root[path]
        except KeyError:
            g = None
        if g is None or "n" not in g.attrs:
            have = ", ".join(f"{m}/{d}" for m, d in self.entries()) or "none"
            raise KeyError(f"{self.url}: no entry {path} (entries: {have})")
        return Entry(g, model, dataset)

    def create_entry(self, model: str, dataset: str, keys: list[str], labels: list[str], dim: int,
                     frame_dim: int, provenance: dict, has_frames: bool = True,
                     block_size: int = DEFAULT_BLOCK) -> Entry:
        """Create an entry, or return the existing one when it holds the same keys and weights.

        Refuses (StoreError) an existing entry whose keys, weights identity, layer or dims differ.
        """
        path = f"{model}/{dataset}"
        if model in self.root and dataset in self.root[model]:
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
        g = self.root.require_group(model).create_group(dataset)
        n = len(keys)
        bs = max(1, min(block_size, n))
        g.create_array("keys", shape=(n,), dtype=str, chunks=(max(n, 1),), compressors=_codecs())[:] = np.array(
            keys, dtype=object)
        g.create_array("labels", shape=(n,), dtype=str, chunks=(max(n, 1),), compressors=_codecs())[:] = np.array(
            labels, dtype=object)
        g.create_array("pooled", shape=(n, dim), dtype="float32", chunks=(bs, dim), compressors=_codecs(),
                       fill_value=0)
        g.create_array("index", shape=(n, 2), dtype="int64", chunks=(bs, 2), compressors=_codecs(),
                       fill_value=PENDING)
        g.require_group("blocks")
        g.attrs.update({"n": n, "block_size": bs, "dim": dim, "frame_dim": frame_dim, "has_frames": has_frames,
                        "provenance": provenance, "format": FORMAT})
        return Entry(g, model, dataset)

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
    """Bytes on disk of an entry's objects (local stores; None where the backend cannot list sizes cheaply)."""
    url = store.url[len("file://"):] if store.url.startswith("file://") else store.url
    if is_remote(url) or url.endswith(".zip"):
        return None
    p = Path(url) / model / dataset
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def dumps(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str)
