"""Helpers for the scale-out tests.

- ``fbank_config(corpus, store, **kw)``: an ExtractConfig for the weight-free encoder on CPU, blocks of 4.
- ``assert_entries_equal(a, b)``: keys, index, pooled and every block's frames identical, bit for bit.
- ``child_extract(cfg, ...)``: run :func:`emocache.extract.extract` in a fresh Python process (one torch
  thread, like dask workers), optionally printing a line after every block commit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict

import numpy as np

from emocache.extract import ExtractConfig
from emocache.store import open_store

MODEL = "fbank-stats"
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

CHILD = r"""
import json, sys
from emocache.extract import ExtractConfig, extract
from emocache.store import Entry

d = json.loads(sys.argv[1])
cfg = ExtractConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
if len(sys.argv) > 2:
    commit = Entry.commit_block

    def traced(self, b, *a, **k):
        commit(self, b, *a, **k)
        print(f"committed {b}", flush=True)

    Entry.commit_block = traced
print("ready", flush=True)
r = extract(cfg, progress=False)
print("done", json.dumps({ds: s["blocks_done"] for ds, s in r.datasets.items()}), flush=True)
"""


def fbank_config(corpus, store, **kw) -> ExtractConfig:
    opts = {"model": MODEL, "manifests": (str(corpus.manifest),), "store": str(store),
            "audio_root": (corpus.audio_root,), "device": "cpu", "block_size": 4, "loader_threads": 1, **kw}
    return ExtractConfig(**opts)


def child_extract(cfg: ExtractConfig, trace: bool = False, **popen) -> subprocess.Popen:
    args = [sys.executable, "-c", CHILD, json.dumps(asdict(cfg))] + (["trace"] if trace else [])
    return subprocess.Popen(args, env={**os.environ, **CHILD_ENV}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **popen)


def run_child(cfg: ExtractConfig, timeout: float = 120) -> str:
    p = child_extract(cfg)
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err[-3000:]
    return out


def assert_entries_equal(a, b) -> None:
    """Two entries hold the same features, bit for bit (frames compared in their stored dtype)."""
    assert a.keys == b.keys and a.labels == b.labels
    np.testing.assert_array_equal(a.index(), b.index())
    pa, pb = np.asarray(a.pooled_array[:]), np.asarray(b.pooled_array[:])
    assert pa.dtype == pb.dtype == np.float32 and pa.tobytes() == pb.tobytes()
    if a.has_frames:
        for blk in range(a.n_blocks):
            fa, fb = np.asarray(a.block_frames(blk)[:]), np.asarray(b.block_frames(blk)[:])
            assert fa.dtype == fb.dtype and fa.shape == fb.shape, blk
            assert fa.tobytes() == fb.tobytes(), f"block {blk} frames differ"


def entry_of(url, **kw):
    return open_store(url, **kw).entry(MODEL, "demo")
