"""Crash and concurrency safety: SIGKILL at random points and resume, 4 writers on one store, verify + redo."""

from __future__ import annotations

import random
import signal
import time

import pytest
import torch
from tests.helpers.scale import MODEL, assert_entries_equal, child_extract, entry_of, fbank_config, run_child

from emocache.extract import extract
from emocache.verify import verify_entry

pytestmark = pytest.mark.slow  # each test kills or runs extraction processes

KILLS = 10


@pytest.fixture(scope="module")
def reference(tmp_path_factory, demo_corpus):
    """An uninterrupted single-process run, one utterance per block (36 blocks)."""
    store = tmp_path_factory.mktemp("ref") / "store"
    run_child(fbank_config(demo_corpus, store, block_size=1))
    return store


def _kill_after_random_point(cfg, rng: random.Random) -> bool:
    """Start an extraction, SIGKILL it after a random number of commits plus a random delay (so it lands
    anywhere: in entry creation, decoding, between the frames and the index write). True if it was killed."""
    p = child_extract(cfg, trace=True)
    commits = rng.choice([0, 0, 1, 1, 2, 3])
    delay = rng.uniform(0.0, 0.05)
    seen = -1
    while True:
        line = p.stdout.readline()
        if not line:  # finished before the chosen point
            p.wait()
            assert p.returncode == 0, p.stderr.read()[-3000:]
            return False
        if line.startswith("ready"):
            seen = 0
        elif line.startswith("committed"):
            seen += 1
        if seen >= commits:
            break
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    p.wait()
    p.stdout.close()
    p.stderr.close()
    return p.returncode == -signal.SIGKILL


def test_sigkill_ten_times_then_resume_equals_uninterrupted_run(tmp_path, demo_corpus, reference):
    store = tmp_path / "store"
    cfg = fbank_config(demo_corpus, store, block_size=1)
    rng = random.Random(1234)
    kills, progress = 0, []
    while kills < KILLS:
        assert _kill_after_random_point(cfg, rng), "the run finished before it was killed; use more blocks"
        kills += 1
        if (store / MODEL / "demo" / "zarr.json").exists():
            try:
                progress.append(int(entry_of(store).done_mask().sum()))
            except KeyError:  # killed while creating the entry: not an entry yet
                progress.append(0)
    assert kills == KILLS and progress and progress[-1] < 36  # killed ten times, never ran to the end
    run_child(cfg)  # resume, uninterrupted
    e = entry_of(store)
    assert e.done_mask().all() and verify_entry(e).ok
    assert_entries_equal(e, entry_of(reference))


def test_four_writer_processes_lose_nothing(tmp_path, demo_corpus, reference):
    store = tmp_path / "store"
    procs = [child_extract(fbank_config(demo_corpus, store, block_size=1, part=f"{i}/4")) for i in range(4)]
    for p in procs:  # all four create the entry concurrently, then write disjoint blocks
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
    e = entry_of(store)
    assert e.done_mask().all() and verify_entry(e).ok
    assert_entries_equal(e, entry_of(reference))


def test_verify_names_truncated_and_corrupted_chunks_and_redo_failed_fixes_them(tmp_path, demo_corpus, reference,
                                                                                cli):
    import shutil

    store = tmp_path / "store"
    shutil.copytree(reference, store)
    root = store / MODEL / "demo"
    frames = root / "blocks" / "b000003" / "frames" / "c" / "0" / "0"
    frames.write_bytes(frames.read_bytes()[: frames.stat().st_size // 2])  # truncated
    pooled = root / "pooled" / "c" / "5" / "0"
    data = bytearray(pooled.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    pooled.write_bytes(bytes(data))
    index = root / "index" / "c" / "11" / "0"
    index.write_bytes(index.read_bytes()[:-3])  # the commit record itself damaged

    code, out = cli("verify", store)
    text = " ".join(out.split())
    assert code == 1
    for b in (3, 5, 11):
        assert f"block {b}:" in text
    assert "3 block(s) to redo" in text and "--redo-failed" in text
    assert sorted(verify_entry(entry_of(store)).bad_blocks) == [3, 5, 11]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the reference ran with one thread; float sums depend on the thread count
    try:
        report = extract(fbank_config(demo_corpus, store, block_size=1, redo_failed=True), progress=False)
    finally:
        torch.set_num_threads(threads)
    assert report.datasets["demo"]["blocks_done"] == 3
    e = entry_of(store)
    assert verify_entry(e).ok
    assert_entries_equal(e, entry_of(reference))
    code, out = cli("verify", store)
    assert code == 0, out
