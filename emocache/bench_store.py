"""Store benchmark (`emocache bench --store`): the Zarr store versus one .npy file per utterance (EmoBox's layout).

Both sides get the same synthetic frame features; times are wall clock on this machine with a warm page cache
(files just written, then ``os.sync()`` so that no write-back runs during the reads), bytes are the files' sizes on disk. The store is read two ways: per key (``iter_frames``)
and whole-entry (``all_frames``, chunks decoded on threads), float32 and float16.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from emocache.runtime import fmt_number, markdown_table, print_table


def synthetic_features(n: int, mean_frames: int, dim: int, seed: int = 0) -> list[np.ndarray]:
    """n float32 (T_i, dim) arrays, T_i uniform in [mean/2, 3*mean/2]: smooth in time like encoder outputs."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(max(1, mean_frames // 2), max(2, 3 * mean_frames // 2) + 1, n)
    base = rng.normal(0, 1, (1, dim)).astype(np.float32)
    out = []
    for t in lengths:
        noise = rng.normal(0, 1, (int(t), dim)).astype(np.float32)
        drift = np.cumsum(rng.normal(0, 0.1, (int(t), 1)), 0).astype(np.float32)
        out.append(base + 0.5 * noise + drift)
    return out


def _bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@contextmanager
def _timer(row: dict, key: str):
    t = time.perf_counter()
    yield
    row[key] = time.perf_counter() - t


def _fastest(row: dict, key: str, fn, repeats: int):
    """Time ``fn()`` ``repeats`` times into ``row[key]`` (the fastest); returns its last result."""
    best, out = None, None
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    row[key] = best
    return out


def bench_npy(feats: list[np.ndarray], keys: list[str], root: Path, repeats: int = 1) -> dict:
    """EmoBox layout: <root>/<key>.npy holding float32 (T, D); pooled vectors need every file read."""
    root.mkdir(parents=True)
    row = {"layout": "per-utterance .npy (float32)"}
    with _timer(row, "write_s"):
        for k, f in zip(keys, feats):
            np.save(root / f"{k}.npy", f)
    os.sync()
    _fastest(row, "read_frames_s", lambda: sum(len(np.load(root / f"{k}.npy")) for k in keys), repeats)  # dropped
    with _timer(row, "read_pooled_s"):
        np.stack([np.load(root / f"{k}.npy").mean(0) for k in keys])
    row["files"] = len(keys)
    row["bytes"] = _bytes(root)
    return row


def bench_zarr(feats: list[np.ndarray], keys: list[str], root: Path, block_size: int = 128, repeats: int = 1,
               threads: int | None = None, codec: str = "blosc-zstd") -> list[dict]:
    """The emocache store: frames float16 in per-block arrays written with frame codec ``codec`` (see
    :data:`~emocache.store.storage.FRAME_CODECS`), pooled float32 [N, D], zstd; CRC32C on every chunk.

    Rows: the per-key reader (``iter_frames``, every utterance as float32 and dropped, as the .npy row drops each
    file's array), then the whole-entry read (``all_frames``) as float32 and as float16 (stored precision, no
    conversion) on ``threads`` threads, which also fills one new array holding the whole entry.
    """
    from emocache.store import open_store
    from emocache.store.bulk import converter, default_threads

    threads = threads or default_threads()
    layout = f"emocache store (frames float16 {codec}, blocks of {block_size})"
    row = {"layout": f"{layout}: iter_frames"}
    dim = feats[0].shape[1]
    pooled = np.stack([f.mean(0) for f in feats])  # (N, D): the encoder hands these over with the frames
    with _timer(row, "write_s"):
        st = open_store(root, mode="a")
        e = st.create_entry("bench", "synthetic", keys, ["x"] * len(keys), dim, dim,
                            {"model": "bench", "weights": "synthetic", "layer": "n/a", "pooling": "mean"},
                            block_size=block_size)
        e.frame_codec = codec
        for b in range(e.n_blocks):
            sl = e.block_slice(b)
            e.write_block(b, pooled[sl], feats[sl], {})
    os.sync()  # reads are timed on a warm page cache without the kernel writing the new files back meanwhile
    e = open_store(root).entry("bench", "synthetic")
    _fastest(row, "read_frames_s", lambda: sum(len(f) for _, f in e.iter_frames()), repeats)  # each dropped
    with _timer(row, "read_pooled_s"):
        e.pooled()
    row["files"] = sum(1 for f in root.rglob("*") if f.is_file())
    row["bytes"] = _bytes(root)
    row["frames_bytes"] = _bytes(root / "bench" / "synthetic" / "blocks")  # the frames arrays alone
    rows = [row]
    frames = sum(f.shape[0] for f in feats)
    converter()  # imports torch (once per process) before the timed reads
    for dtype in (np.float32, np.float16):
        r = {"layout": f"{layout}: all_frames {np.dtype(dtype).name} ({threads} thread{'s' if threads > 1 else ''})",
             "files": row["files"], "bytes": row["bytes"], "frames_bytes": row["frames_bytes"]}
        fs = _fastest(r, "read_frames_s", lambda: e.all_frames(dtype=dtype, threads=threads), repeats)
        assert fs.data.shape == (frames, dim) and fs.data.dtype == dtype
        rows.append(r)
    return rows


def bench_store(n_utts: int = 2000, mean_frames: int = 300, dim: int = 768, workdir: Path | None = None,
                seed: int = 0, repeats: int = 1, threads: int | None = None) -> list[dict]:
    """Write and read the same features both ways (the store once per frame codec: zstd, the format, then the
    blosc-zstd candidate); one row per layout and reader with MB/s of float32 feature data (``repeats``: read
    timings are the fastest of that many runs)."""
    from emocache.store.storage import FRAME_CODECS

    feats = synthetic_features(n_utts, mean_frames, dim, seed)
    keys = [f"utt{i:07d}" for i in range(n_utts)]
    raw = sum(f.nbytes for f in feats)
    tmp = Path(tempfile.mkdtemp(prefix="emocache-bench-", dir=workdir))
    try:
        rows = [bench_npy(feats, keys, tmp / "npy", repeats)]
        for codec in FRAME_CODECS:
            rows += bench_zarr(feats, keys, tmp / f"store-{codec}.zarr", repeats=repeats, threads=threads, codec=codec)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for r in rows:
        w = r.get("write_s")
        r.update({"utterances": n_utts, "frames": int(sum(f.shape[0] for f in feats)), "dim": dim,
                  "float32_MB": raw / 1e6, "write_MB_s": raw / 1e6 / w if w else None,
                  "read_frames_MB_s": raw / 1e6 / r["read_frames_s"], "disk_MB": r["bytes"] / 1e6,
                  "frames_MB": r["frames_bytes"] / 1e6 if "frames_bytes" in r else None})
    return rows


COLUMNS = [("layout", "layout"), ("utterances", "utts"), ("frames", "frames"), ("dim", "dim"),
           ("write_s", "write s"), ("write_MB_s", "write MB/s"), ("read_frames_s", "read frames s"),
           ("read_frames_MB_s", "read MB/s"), ("read_pooled_s", "read pooled s"), ("files", "files"),
           ("disk_MB", "disk MB"), ("frames_MB", "frames MB")]


def markdown_rows(rows: list[dict]) -> str:
    """The benchmark rows as a markdown table."""
    return markdown_table([h for _, h in COLUMNS], [[fmt_number(r.get(k)) for k, _ in COLUMNS] for r in rows],
                          "l" * len(COLUMNS))


def print_rows(rows: list[dict]) -> None:
    print_table("store benchmark: same float32 features, warm page cache (read MB/s: float32 MB per second)",
                COLUMNS, rows)
    print(markdown_rows(rows))
