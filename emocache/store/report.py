"""Reporting for the CLI: what a store holds (``emocache info``), bytes per entry, JSON output."""

from __future__ import annotations

import json
import os
import stat
import zipfile
from pathlib import Path

from emocache.store.root import Store
from emocache.store.storage import is_remote, local_path


def describe(store: Store) -> list[dict]:
    """One row per entry: counts, dims, bytes, provenance (``emocache info``); counts come from the stored index
    chunks only, read in windows (memory stays bounded whatever ``n`` an entry declares)."""
    rows = []
    for model, dataset in store.entries():
        e = store.entry(model, dataset)
        done, failed, pending = e.counts()
        rows.append({
            "model": model, "dataset": dataset, "n": e.n, "done": done, "failed": failed, "pending": pending,
            "dim": e.dim, "frames": e.has_frames, "blocks": e.n_blocks, "bytes": entry_bytes(store, model, dataset),
            "provenance": e.provenance,
        })
    return rows


def entry_bytes(store: Store, model: str, dataset: str) -> int | None:
    """Bytes stored for an entry's objects: files on disk, members of a .zip, objects under an fsspec URL."""
    url = local_path(store.url)
    prefix = f"{model}/{dataset}/"
    if is_remote(url):
        import fsspec

        fs, path = fsspec.core.url_to_fs(url, **store.storage_options)
        try:
            return int(fs.du(f"{path.rstrip('/')}/{prefix}", total=True))
        except (OSError, NotImplementedError):
            return None
    if url.endswith(".zip"):
        with zipfile.ZipFile(url) as z:
            return sum(i.compress_size for i in z.infolist() if i.filename.startswith(prefix))
    total = 0
    for folder, _, files in os.walk(Path(url) / model / dataset):  # links are not followed (nor counted)
        for f in files:
            st = os.lstat(os.path.join(folder, f))
            total += st.st_size if stat.S_ISREG(st.st_mode) else 0
    return total


def dumps(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str)
