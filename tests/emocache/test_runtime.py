"""Run-time helpers: progress in logs and terminals, GPU clusters through dask-cuda when installed."""

from __future__ import annotations

import re
import sys
import types
from contextlib import contextmanager

import pytest

import emocache.runtime as rt
from emocache.extract import ExtractConfig, extract


def test_plain_progress_lines_without_a_terminal(tmp_path, demo_corpus, capsys, monkeypatch):
    monkeypatch.setattr(rt.console, "_force_terminal", False)  # as under nohup or SLURM, even with pytest -s
    monkeypatch.setattr(rt, "PLAIN_EVERY_SECONDS", 0.0)
    cfg = ExtractConfig(model="fbank-stats", manifests=(str(demo_corpus.manifest),), store=str(tmp_path / "s"),
                        audio_root=(demo_corpus.audio_root,), device="cpu", block_size=16, batch_seconds=5.0)
    assert extract(cfg, progress=True).ok
    lines = [s for s in capsys.readouterr().err.splitlines() if s.startswith("fbank-stats: ")]
    done = [int(re.match(r"fbank-stats: (\d+)/36 \(\d+%\), [\d.]+/s, (ETA|took) \d+:\d\d$", s).group(1))
            for s in lines]
    assert len(done) > 3 and done == sorted(done) and done[-1] == 36, lines
    assert "ETA" in lines[0] and "took" in lines[-1]


def test_plain_progress_is_periodic():
    out = []

    class Sink:
        def write(self, s):
            out.append(s)

        def flush(self):
            pass

    p = rt.PlainProgress(every=3600, stream=Sink())
    task = p.add_task("m", total=10)
    for _ in range(9):
        p.update(task, advance=1)
    assert out == []  # within the period: silent
    p.advance(task)  # rich's Progress.advance, as the trainer's loops call it
    assert len([s for s in out if s.strip()]) == 1 and "10/10 (100%)" in out[0]


def test_plain_progress_first_line_comes_early(monkeypatch):
    """A log shows progress a few seconds in (slow encoders report per utterance), then once per period."""
    out, now = [], [0.0]
    monkeypatch.setattr(rt.time, "monotonic", lambda: now[0])

    class Sink:
        def write(self, s):
            if s.strip():
                out.append(s)

        def flush(self):
            pass

    p = rt.PlainProgress(every=30.0, stream=Sink(), first=5.0)
    task = p.add_task("egemaps", total=100)
    for t in (1.0, 4.9, 5.1, 6.0, 34.0, 35.2, 36.0):
        now[0] = t
        p.update(task, advance=1)
    assert len(out) == 2 and out[0].startswith("egemaps: 3/100 (3%)") and out[1].startswith("egemaps: 6/100")
    assert rt.PLAIN_FIRST_SECONDS < 10


def test_terminal_progress_advances_per_batch(tmp_path, demo_corpus, monkeypatch):
    """One block of 36 utterances in many small batches: the bar moves per batch, not once per block."""
    advances = []

    class Recorder:
        def add_task(self, description, total=None):
            advances.append(("total", total))
            return 0

        def update(self, task, advance=0, **_):
            advances.append(advance)

    @contextmanager
    def recorder(enabled=True):
        yield Recorder()

    import emocache.extract as ex

    monkeypatch.setattr(ex, "progress_bar", recorder)
    cfg = ExtractConfig(model="fbank-stats", manifests=(str(demo_corpus.manifest),), store=str(tmp_path / "s"),
                        audio_root=(demo_corpus.audio_root,), device="cpu", block_size=64, batch_seconds=6.0)
    assert extract(cfg, progress=True).ok
    assert advances[0] == ("total", 36)
    steps = advances[1:]
    assert sum(steps) == 36 and len(steps) >= 6 and max(steps) < 36


def test_gpu_workers_use_dask_cuda_when_installed(monkeypatch):
    made = {}

    class FakeCluster:
        def __init__(self, **kw):
            made.update(kw)

    monkeypatch.setitem(sys.modules, "dask_cuda", types.SimpleNamespace(LocalCUDACluster=FakeCluster))
    assert isinstance(rt.gpu_cluster(2), FakeCluster)
    assert made["CUDA_VISIBLE_DEVICES"] == [0, 1] and made["n_workers"] == 2 and made["resources"] == {"GPU": 1}
    assert made["threads_per_worker"] == 1


def test_gpu_workers_fall_back_to_pinned_processes(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # import fails: not installed
    spec = {}

    class FakeSpec:
        def __init__(self, workers, scheduler):
            spec.update(workers)

    import distributed

    monkeypatch.setattr(distributed, "SpecCluster", FakeSpec)
    rt.gpu_cluster(2)
    assert [w["options"]["env"]["CUDA_VISIBLE_DEVICES"] for w in spec.values()] == ["0", "1"]
    assert all(w["options"]["resources"] == {"GPU": 1} for w in spec.values())


@pytest.mark.parametrize("raw, expect", [("{bad", "is not JSON"), ("[1]", "must hold a JSON object, got list")])
def test_storage_options_parsed_in_one_place(raw, expect):
    from emocache.store.storage import parse_storage_options

    assert parse_storage_options(None) == {} and parse_storage_options('{"anon": true}') == {"anon": True}
    with pytest.raises(ValueError, match=expect):
        parse_storage_options(raw)


def test_markdown_table_aligns_and_renders_every_cell():
    text = rt.markdown_table(["name", "x", "y"], [["a", 1, 2.5], ["b", "-", None]])
    assert text.splitlines() == ["| name | x | y |", "|---|---:|---:|", "| a | 1 | 2.5 |", "| b | - | None |"]
    assert rt.markdown_table(["a", "b"], [], "lr").splitlines()[1] == "|---|---:|"
    assert rt.markdown_table(["a", "b"], [["1", "2"]], "ll").splitlines()[1] == "|---|---|"
