"""Sharing stores: pack into one read-only .zip, merge entries between stores, consolidate metadata."""

from __future__ import annotations

import errno
import os
import zipfile
from pathlib import Path

import numpy as np
import zarr
from zarr.storage import MemoryStore

from emocache.store import Entry, Limits, StoreError, index_problem, is_remote, open_store, zarr_store
from emocache.store.storage import get_bytes, local_path, object_keys, quiet_zarr, set_bytes
from emocache.suggest import did_you_mean

MERGE_FIELDS = ("model", "weights", "revision", "sha256", "layer", "pooling", "long_policy", "compute_dtype",
                "sample_rate", "frame_rate", "manifest_sha256")
"""Provenance fields that must agree for blocks from two stores to sit in one entry."""


def _get(zs, key: str) -> bytes:
    raw = get_bytes(zs, key)
    if raw is None:
        raise StoreError(f"{zs}: object {key} vanished while reading (is a writer still running?)")
    return raw


def _consolidated_root(zs, keys: list[str]) -> bytes:
    """The root zarr.json with consolidated metadata of every node, computed from a copy of the metadata only."""
    mem = MemoryStore()
    for k in keys:
        if k == "zarr.json" or k.endswith("/zarr.json"):
            set_bytes(mem, k, _get(zs, k))
    with quiet_zarr():
        zarr.consolidate_metadata(mem)
    return get_bytes(mem, "zarr.json")


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def stale_partials(out: Path) -> list[Path]:
    """Temporary files of earlier ``pack`` runs to ``out`` whose process is gone (killed or crashed)."""
    out_dir = out.parent if str(out.parent) else Path(".")
    found = []
    for p in out_dir.glob(f".{out.name}.*.partial"):
        pid = p.name[len(out.name) + 2:-len(".partial")]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            found.append(p)
        except PermissionError:
            pass  # alive, another user's
    return found


def pack(url: str, out: str | Path, storage_options: dict | None = None, limits: Limits | None = None) -> int:
    """Write the store at ``url`` into ``out`` (.zip, stored uncompressed: chunks are already zstd), with
    consolidated metadata so one read lists everything. Returns the number of objects packed.

    The zip is written to ``.OUT.zip.<pid>.partial`` and renamed into place; a failure removes it, and partial
    files left by killed runs (their process gone) are removed first."""
    out = Path(out)
    if out.suffix != ".zip":
        raise StoreError(f"{out}: the packed store must end in .zip")
    if out.exists():
        raise FileExistsError(f"{out} exists; remove it or choose another name")
    if not is_remote(url) and Path(local_path(url)).is_dir() and _inside(out, Path(local_path(url))):
        raise StoreError(f"{out}: inside the store being packed ({url}); write the .zip outside it")
    if not out.parent.is_dir():
        raise StoreError(f"{out}: folder {out.parent} does not exist")
    for p in stale_partials(out):
        p.unlink(missing_ok=True)
    store = open_store(url, storage_options=storage_options, limits=limits)
    for model, dataset in store.entries():
        store.entry(model, dataset)  # validates before anything is copied
    zs = store.zstore
    keys = object_keys(zs)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
            z.writestr("zarr.json", _consolidated_root(zs, keys))
            for k in keys:
                if k != "zarr.json":
                    z.writestr(k, _get(zs, k))
        tmp.replace(out)
    except OSError as e:
        hint = "; free space and rerun" if e.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        raise StoreError(f"{out}: {e.strerror or e}{hint}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return len(keys)


def consolidate(url: str, storage_options: dict | None = None) -> int:
    """Write consolidated metadata into the store's root (writers drop it again; rerun after the last one).
    Returns the number of nodes listed."""
    if str(url).endswith(".zip"):
        raise StoreError(f"{url}: packed stores are consolidated already")
    open_store(url, storage_options=storage_options)  # an emocache store, format checked
    with quiet_zarr():
        g = zarr.consolidate_metadata(zarr_store(url, read_only=False, storage_options=storage_options))
    return len(g.metadata.consolidated_metadata.flattened_metadata)


def _check_provenance(src: Entry, dst_prov: dict, where: str) -> None:
    src_prov = src.provenance
    diff = [f"{f}: {src_prov.get(f)!r} vs {dst_prov.get(f)!r}" for f in MERGE_FIELDS
            if str(src_prov.get(f)) != str(dst_prov.get(f))]
    if diff:
        raise StoreError(f"{where}: provenance conflict ({'; '.join(diff)}); refusing to merge. Merge into "
                         "another store or dataset name")


def _read_block(src: Entry, b: int, rows: np.ndarray):
    """(pooled, index rows, frames or None, errors, layers or None) of a committed source block whose index rows
    are ``rows`` (n_b, 2), checked as `verify` checks it (pooled NaN/inf refused unless the entry allows them)."""
    where = f"{src.where} block {b}"
    try:
        P = src.block_pooled(b)  # (n_b, D)
        F = src.stored_frames(b) if src.has_frames else None  # (sum T_i, D_frames), copied a window at a time
        problem = index_problem(rows, None if F is None else F.shape[0])
        if problem:
            raise StoreError(f"{where}: {problem}; run `emocache verify` on the source")
        errs = src.block_errors(b)
        L = src.block_layers(b)  # (n_b, L, D) or None
    except StoreError:
        raise
    except Exception as e:
        raise StoreError(f"{where}: unreadable ({type(e).__name__}: {e}); run `emocache verify` on the "
                         "source") from None
    return P, rows, F, errs, L


def merge(src: str, dst: str, entries: list[str] | None = None, storage_options: dict | None = None,
          limits: Limits | None = None) -> list[dict]:
    """Copy the committed blocks of ``src``'s entries that ``dst`` lacks (commit protocol kept: index last).

    Entries are created in ``dst`` when missing; an existing entry must hold the same keys, labels, block
    size and provenance (weights, layer, pooling, dtype, manifest), else StoreError and nothing of it is copied.
    """
    s = open_store(src, storage_options=storage_options, limits=limits)
    d = open_store(dst, mode="a", storage_options=storage_options)
    have = s.entries()
    if entries:
        want = []
        for name in entries:
            m, _, ds = name.partition("/")
            if (m, ds) not in have:
                names = [f"{a}/{b}" for a, b in have]
                raise KeyError(f"{src}: no entry {name}; {did_you_mean(name, names)}entries: "
                               f"{', '.join(names) or 'none'}")
            want.append((m, ds))
    else:
        want = have
    rows = []
    for m, ds in want:
        se = s.entry(m, ds)
        where = f"{dst}/{m}/{ds}"
        existing = d.has_entry(m, ds)
        if existing:
            de = d.entry(m, ds)
            _check_provenance(se, de.provenance, where)
            if de.block_size != se.block_size:
                raise StoreError(f"{where}: block size {de.block_size}, the source has {se.block_size}; "
                                 "re-extract one of them with the other's --block-size")
            if de.labels != se.labels:
                raise StoreError(f"{where}: same keys but different labels than {src}; refusing to merge")
        de = d.create_entry(m, ds, se.keys, se.labels, se.dim, se.frame_dim, se.provenance,
                            has_frames=se.has_frames, block_size=se.block_size, layers=se.layer_ids,
                            allow_nonfinite=se.allow_nonfinite)
        have_dst = set(de.block_counts().committed.tolist())
        copied = skipped = 0
        for b in se.block_counts().committed.tolist():  # from the source's stored index chunks only
            if b in have_dst:
                skipped += 1
                continue
            de.commit_block(b, *_read_block(se, b, se.index(se.block_slice(b))))
            copied += 1
        rows.append({"model": m, "dataset": ds, "copied": copied, "skipped": skipped, "created": not existing})
    return rows
