"""`emocache bench` on the CPU: the encoder row's columns (eager vs compiled, model alone, pipeline efficiency,
padding, compile cost) and batch plans on manifest lengths. Speeds on a CPU say nothing about a GPU; these tests
check what is measured and how it is put together."""

from __future__ import annotations

import math

import numpy as np
import pytest

from emocache.bench import bench_encoder, compile_note, plan_padding
from emocache.encoders import EncoderError
from tests.helpers.audio import emobox_line, write_jsonl


def test_bench_row_without_compile_on_the_cpu():
    row = bench_encoder("emotion2vec-base", n_utts=10, device="cpu", tiny=True, naive_utts=3)
    assert row["config"] == "tiny random" and row["frontend"] == "cpu" and not row["compiled"]
    assert row["compiled_audio_s_per_s"] is None and row["compile_s"] is None and row["compile_graphs"] == 0
    assert row["batched_audio_s_per_s"] == row["eager_audio_s_per_s"] > 0
    assert math.isclose(row["pipeline_efficiency"], row["batched_audio_s_per_s"] / row["model_alone_audio_s_per_s"])
    assert math.isclose(row["speedup"], row["batched_audio_s_per_s"] / row["naive_audio_s_per_s"])
    assert 0 < row["padding_pct"] < 50 and row["batches"] >= 1 and (row["budget_s"], row["max_batch"]) == (60.0, 64)
    assert "not compiled" in compile_note(row)


@pytest.mark.slow
def test_bench_row_with_compile_times_both_and_amortises_the_compile():
    row = bench_encoder("sensevoice-small", n_utts=10, device="cpu", tiny=True, naive_utts=3, compile="on",
                        frontend="device")
    assert row["compiled"] and row["frontend"] == "device" and row["compile_graphs"] >= 1 and row["compile_s"] > 0
    assert row["batched_audio_s_per_s"] == row["compiled_audio_s_per_s"] and row["eager_audio_s_per_s"] > 0
    assert row["graphs_while_timed"] == 0  # the untimed warm-up paid the compile
    assert "graph(s)" in compile_note(row)


def test_plan_padding_on_manifest_lengths(tmp_path):
    rng = np.random.default_rng(0)
    n = rng.integers(8000, 200000, 300)
    man = write_jsonl(tmp_path / "m.jsonl", [emobox_line(f"u{i}", f"/nowhere/{i}.wav", "x", n=int(k))
                                             for i, k in enumerate(n)])
    rows = plan_padding("wavlm-base-plus", [str(man)], budgets=(60.0, 240.0), max_batches=(16, 64))
    assert len(rows) == 8 and {r["order"] for r in rows} == {"manifest", "length"}
    by = {(r["order"], r["budget_s"], r["max_batch"]): r for r in rows}
    for key, r in by.items():
        assert r["utterances"] == 300 and 0 <= r["padding_pct"] < 100 and r["batches"] >= 300 / key[2]
    assert by[("length", 240.0, 64)]["padding_pct"] < by[("manifest", 240.0, 64)]["padding_pct"]
    whisper = plan_padding("whisper-large-v3", [str(man)], budgets=(240.0,), max_batches=(64,))
    expect = 100 * (1 - n.sum() / (len(n) * 30 * 16000))  # every utterance costs a whole 30-s window
    assert all(math.isclose(r["padding_pct"], expect, rel_tol=1e-6) for r in whisper)
    bad = write_jsonl(tmp_path / "b.jsonl", [{**emobox_line("a", "/x.wav", "x"), "length": None, "num_frame": None}])
    with pytest.raises(EncoderError, match="without length"):
        plan_padding("wavlm-base-plus", [str(bad)])
