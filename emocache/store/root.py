"""The store: one Zarr v3 group of entries, opened read-only or for writing, and the Python API."""

from __future__ import annotations

import errno
import time
from pathlib import Path

import numpy as np
import zarr

from emocache.config import DEFAULT_BLOCK
from emocache.paths import UnsafeNameError, check_name
from emocache.store.bulk import FrameSet
from emocache.store.commit import RETRIES, create_entry_group
from emocache.store.entry import Entry
from emocache.store.layout import FORMAT
from emocache.store.storage import has_consolidated, is_remote, quiet_zarr, storage_options_for, zarr_store
from emocache.store.validate import FORMAT_NAME, Limits, StoreError, StoreIOError


class Store:
    """A feature store: one Zarr v3 group holding one sub-group per (model, dataset)."""

    def __init__(self, url: str | Path, mode: str = "r", storage_options: dict | None = None,
                 limits: Limits | None = None):
        self.url = str(url)
        self.limits = limits or Limits()
        self.mode = mode
        self._entries: dict[tuple[str, str], Entry] = {}
        self.storage_options = storage_options_for(storage_options)
        read_only = mode == "r"
        self.zstore = zs = zarr_store(url, read_only=read_only, storage_options=self.storage_options,
                                          limits=self.limits)
        try:
            with quiet_zarr():
                if read_only:
                    self.root = zarr.open_group(zs, mode="r", zarr_format=3)
                else:
                    self.root = _open_for_writing(zs)
        except StoreError:
            raise
        except (FileNotFoundError, zarr.errors.GroupNotFoundError) as e:
            raise StoreError(f"{url}: not a Zarr v3 group ({e}); is this an emocache store?") from None
        except (ValueError, TypeError) as e:
            raise StoreError(f"{url}: unreadable root metadata ({type(e).__name__}: {_line(e)})") from None
        except Exception as e:  # remote filesystems: missing credentials, refused connections, ...; OS errors
            hint = ("; give credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws, or --storage-options "
                    "'{\"key\": ..., \"secret\": ...}'; '{\"anon\": true}' for a public bucket)"
                    if "credential" in f"{type(e).__name__} {e}".lower()
                    else "; check the URL and --storage-options" if is_remote(self.url) else "")
            raise StoreError(f"{url}: cannot open ({type(e).__name__}: {_line(e)}){hint}") from None
        fmt = self.root.attrs.get(FORMAT_NAME)
        if fmt is None and read_only:
            raise StoreError(f"{url}: a Zarr group but not an emocache store (no '{FORMAT_NAME}' attribute)")
        if isinstance(fmt, str) and fmt.strip().isdigit():
            raise StoreError(f"{url}: store format {fmt!r} is a string; emocache writes the integer {FORMAT}. The root "
                             "zarr.json was edited or written by another tool: set \"emocache_format\": 1")
        if fmt is not None and (isinstance(fmt, bool) or fmt != FORMAT):
            raise StoreError(f"{url}: store format {fmt!r}, this emocache reads format {FORMAT}; upgrade emocache")

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
        except StoreError:
            raise
        except Exception as e:  # a damaged zarr.json below ``where``, an unreadable folder
            raise StoreError(f"{where}: unreadable metadata ({type(e).__name__}: {_line(e)}); the store is "
                             "damaged") from None
        return out

    def _node(self, path: str):
        """``root[path]``, None when absent; unreadable metadata is a StoreError."""
        try:
            return self.root[path]
        except KeyError:
            return None
        except StoreError:
            raise
        except Exception as e:
            raise StoreError(f"{self.url}/{path}: unreadable metadata ({type(e).__name__}: {_line(e)})") from None

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

    def has_entry(self, model: str, dataset: str) -> bool:
        """Whether the entry exists and is complete (its attributes written)."""
        g = self._node(f"{model}/{dataset}")
        if g is None:
            return False
        if not isinstance(g, zarr.Group):
            raise StoreError(f"{self.url}/{model}/{dataset}: an array where an entry group belongs")
        return "n" in g.attrs

    def create_entry(self, model: str, dataset: str, keys: list[str], labels: list[str], dim: int,
                     frame_dim: int, provenance: dict, has_frames: bool = True,
                     block_size: int = DEFAULT_BLOCK, layers: tuple[int, ...] = (),
                     allow_nonfinite: bool = False) -> Entry:
        """Create an entry, or return the existing one when it holds the same keys and weights.

        Refuses (StoreError) an existing entry whose keys, weights identity, layer(s), dims or
        ``allow_nonfinite`` differ. ``layers``: the hidden_states indices whose pooled vectors the entry stores
        besides ``pooled`` (``--layers``). ``allow_nonfinite``: the entry may hold NaN/inf pooled vectors on purpose
        (recorded in its attributes; readers refuse them otherwise). Safe when several processes create the same
        entry at once: every step writes identical objects and the attributes (which make the entry exist) come
        last, so they all end with one valid entry.
        """
        try:
            check_name(model, "model")
            check_name(dataset, "dataset")
        except UnsafeNameError as e:
            raise StoreError(str(e)) from None
        path = f"{model}/{dataset}"
        if self.has_entry(model, dataset):
            e = self.entry(model, dataset)
            old = e.provenance
            for field in ("weights", "revision", "sha256", "layer", "pooling", "long_policy"):
                if str(old.get(field)) != str(provenance.get(field)):
                    raise StoreError(
                        f"{self.url}/{path}: the entry was made with {field}={old.get(field)!r}, this run has "
                        f"{provenance.get(field)!r}; refusing to mix them. Use another --store or remove the entry")
            if e.layer_ids != tuple(layers):
                raise StoreError(f"{self.url}/{path}: the entry was made with --layers {list(e.layer_ids) or 'last'}, "
                                 f"this run has {list(layers) or 'last'}; use another --store or remove the entry")
            if e.dim != dim or e.frame_dim != frame_dim or e.has_frames != has_frames:
                raise StoreError(f"{self.url}/{path}: existing entry has dim={e.dim}, frames={e.has_frames}; "
                                 f"this run has dim={dim}, frames={has_frames}")
            if e.allow_nonfinite != allow_nonfinite:
                raise StoreError(f"{self.url}/{path}: existing entry has allow_nonfinite={e.allow_nonfinite}, this "
                                 f"run has {allow_nonfinite}; refusing to mix them. Use another --store or dataset")
            if e.keys != list(keys):
                raise StoreError(f"{self.url}/{path}: the entry holds {e.n} utterances from another manifest "
                                 f"(sha256 {old.get('manifest_sha256', '?')[:12]}); this manifest has {len(keys)}. "
                                 "Use another dataset name or store")
            return e
        for attempt in range(RETRIES):
            try:
                g = create_entry_group(self.root, model, dataset, keys, labels, dim, frame_dim, provenance,
                                       has_frames, block_size, tuple(layers), allow_nonfinite)
                return Entry(g, model, dataset, self.url)
            except (zarr.errors.ContainsGroupError, zarr.errors.ContainsArrayError, StoreIOError) as e:
                # another process creating the same entry replaced an object under our feet: try again
                if isinstance(e, StoreIOError) and e.errno not in (errno.ENOENT, errno.ENOTEMPTY):
                    raise
                time.sleep(0.02 * (attempt + 1))
                if self.has_entry(model, dataset):
                    return self.create_entry(model, dataset, keys, labels, dim, frame_dim, provenance, has_frames,
                                             block_size, layers, allow_nonfinite)
        raise StoreError(f"{self.url}/{path}: other processes kept replacing this entry while it was created; "
                         "rerun")

    # -- the Python API (the documented contract) ------------------------------------------------------------
    def provenance(self, model: str, dataset: str) -> dict:
        return self.entry(model, dataset).provenance

    def pooled(self, model: str, dataset: str, layer: int | None = None) -> tuple[list[str], np.ndarray]:
        """keys (successfully extracted, store order) and float32 [N, D]: the final output, or hidden_states
        ``layer`` of an entry extracted with ``--layers``."""
        e = self.entry(model, dataset)
        if layer is None:
            return e.pooled()
        keys, Y = e.layers()
        return keys, np.ascontiguousarray(Y[:, e.layer_position(layer)])

    def layers(self, model: str, dataset: str) -> tuple[list[str], np.ndarray]:
        """keys and float32 [N, L, D]: the pooled vectors of the stored layers (``provenance['layers']`` names
        them); a StoreError for an entry extracted with ``--layers last``."""
        return self.entry(model, dataset).layers()

    def labels(self, model: str, dataset: str) -> list[str]:
        """Raw labels aligned with the keys of :meth:`pooled`."""
        return self.entry(model, dataset).labels_done()

    def has_frames(self, model: str, dataset: str) -> bool:
        return self.entry(model, dataset).has_frames

    def frames(self, model: str, dataset: str, key: str) -> np.ndarray:
        return self.entry(model, dataset).frames(key)

    def iter_frames(self, model: str, dataset: str, keys: list[str] | None = None):
        return self.entry(model, dataset).iter_frames(keys)

    def all_frames(self, model: str, dataset: str, keys: list[str] | None = None, dtype=np.float32,
                   threads: int | None = None) -> FrameSet:
        """Every extracted utterance's frames (or those of ``keys``) in one flat array, store order: a
        :class:`~emocache.store.bulk.FrameSet` (``keys``, ``data`` (sum T_i, D_frames), ``offsets`` (N + 1,)).
        Chunks are checksum-verified and decoded on ``threads`` threads; see :meth:`Entry.all_frames`."""
        return self.entry(model, dataset).all_frames(keys, dtype=dtype, threads=threads)

    def errors(self, model: str, dataset: str) -> dict[str, str]:
        return self.entry(model, dataset).errors()


def _open_for_writing(zs):
    """The root group for writing (created when missing; concurrent creators are fine). Writers ignore consolidated
    metadata and drop it, so no reader sees a stale listing."""
    for attempt in range(RETRIES):
        try:
            root = zarr.open_group(zs, mode="a", zarr_format=3, use_consolidated=False)
            if FORMAT_NAME not in root.attrs or has_consolidated(zs):
                root.attrs[FORMAT_NAME] = root.attrs.get(FORMAT_NAME, FORMAT)
            return root
        except (zarr.errors.ContainsGroupError, zarr.errors.ContainsArrayError):
            time.sleep(0.02 * (attempt + 1))
    return zarr.open_group(zs, mode="r+", zarr_format=3, use_consolidated=False)


def open_store(url: str | Path, mode: str = "r", storage_options: dict | None = None,
               limits: Limits | None = None) -> Store:
    """Open a store: read-only by default; ``mode='a'`` to write. Local path, s3://, gs://, .zip.

    ``limits`` bound what an untrusted store can make emocache read (:class:`~emocache.store.validate.Limits`).
    """
    return Store(url, mode=mode, storage_options=storage_options, limits=limits)


def write_arrays(url: str | Path, model: str, dataset: str, keys: list[str], labels: list[str],
                 pooled: np.ndarray, frames: list[np.ndarray] | None = None, provenance: dict | None = None,
                 block_size: int = DEFAULT_BLOCK, allow_nonfinite: bool = False) -> Entry:
    """Write a complete entry from arrays (features made elsewhere, tests, merges); returns the Entry.

    NaN/inf pooled vectors are refused (readers would refuse them as damage) unless ``allow_nonfinite``, which the
    entry then records (attribute ``allow_nonfinite``).
    """
    pooled = np.asarray(pooled, dtype=np.float32)
    bad = ~np.isfinite(pooled.reshape(len(pooled), -1)).all(1)
    if bad.any() and not allow_nonfinite:
        raise StoreError(f"{url}/{model}/{dataset}: {int(bad.sum())} pooled vector(s) hold NaN/inf (e.g. key(s) "
                         f"{[keys[i] for i in np.flatnonzero(bad)[:3].tolist()]}); readers refuse them as damage. "
                         "Pass allow_nonfinite=True to store them on purpose (the entry records it)")
    frame_dim = frames[0].shape[1] if frames else pooled.shape[1]
    prov = {"model": model, "weights": "arrays", "layer": "n/a", "pooling": "given", **(provenance or {})}
    st = open_store(url, mode="a")
    e = st.create_entry(model, dataset, list(keys), list(labels), pooled.shape[1], frame_dim, prov,
                        has_frames=frames is not None, block_size=block_size, allow_nonfinite=allow_nonfinite)
    for b in range(e.n_blocks):
        sl = e.block_slice(b)
        e.write_block(b, pooled[sl], frames[sl] if frames is not None else None, {})
    return e


def _line(e: BaseException) -> str:
    """An exception's message cut to its first line (errors stay one line)."""
    return (str(e).strip().splitlines() or [""])[0][:300]
