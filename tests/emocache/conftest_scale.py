"""Helpers for the scale-out tests (imported explicitly: ``from conftest_scale import ...``).

- ``fbank_config(corpus, store, **kw)``: an ExtractConfig for the weight-free encoder on CPU, blocks of 4.
- ``assert_entries_equal(a, b)``: keys, index, pooled and every block's frames identical, bit for bit.
- ``child_extract(cfg, ...)``: run :func:`emocache.extract.extract` in a fresh Python process (one torch
  thread, like dask workers), optionally printing a line after every block commit.
- ``moto_endpoint`` (session fixture): a moto S3 server in its own process on 127.0.0.1 (real HTTP).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint():
    """``(endpoint_url, storage_options)`` of a moto S3 server subprocess on 127.0.0.1 (HTTP, not in-process)."""
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        pytest.skip("moto[server] is not installed (pip install 'moto[server]')")
    port = _free_port()
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("moto_server did not start")
    opts = {"key": "testing", "secret": "testing", "endpoint_url": url,
            "client_kwargs": {"region_name": "us-east-1"}}
    try:
        yield url, opts
    finally:
        proc.terminate()
        proc.wait(10)
