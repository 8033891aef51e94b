"""scripts/gpu-check on the CPU with tiny random models: the report's contents, exit codes, forced target misses."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu-check"


def gpu_check(out: Path, *args: str, timeout: float = 600) -> tuple[subprocess.CompletedProcess, dict | None, str]:
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    r = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--out", str(out), *args],
                       capture_output=True, text=True, timeout=timeout, env=env)
    js = out / "gpu-check.json"
    md = out / "gpu-check.md"
    return r, json.loads(js.read_text()) if js.exists() else None, md.read_text() if md.exists() else ""


@pytest.mark.slow
def test_tiny_cpu_run_reports_every_check_and_passes(tmp_path):
    r, rep, md = gpu_check(tmp_path, "--models", "fbank-stats,egemaps,whisper-large-v3", "--utts", "4",
                           "--naive-utts", "2", "--extract-utts", "3", "--compile", "on")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert rep["missed"] == [] and rep["machine"]["device"] == "cpu" and rep["machine"]["matmul_bf16_tflops"] > 0
    models = {m["model"]: m for m in rep["models"]}
    assert list(models) == ["fbank-stats", "egemaps", "whisper-large-v3"]

    fbank = models["fbank-stats"]
    assert fbank["errors"] == {} and fbank["batch_vs_single"]["pooled_max_rel_diff"] <= 1e-4
    assert "bench" not in fbank  # weight-free: nothing to batch against
    assert "CPU only" in models["egemaps"]["skipped"]["all"]

    w = models["whisper-large-v3"]
    assert w["errors"] == {} and w["weights"] == "tiny random" and w["dtype"] == "fp32"  # auto is fp32 on CPU
    assert w["frontend"] == "cpu" and w["compiled"]  # auto: the CPU frontend on the CPU; --compile on
    cos = w["cosine_to_fp32"]
    assert set(cos) == {"bf16", "fp16"} and all(0.9 < c <= 1 + 1e-6 for c in cos.values())
    assert w["frontend_vs_cpu"]["max_rel_diff"] <= 1e-5  # the device frontend, run here on CPU tensors
    bvs = w["batch_vs_single"]
    assert bvs["utterances"] == 3 and bvs["frame_shapes_equal"] and bvs["pooled_max_rel_diff"] <= 1e-4
    cve = w["compiled_vs_eager"]
    assert cve["frame_shapes_equal"] and cve["pooled_max_rel_diff"] <= 1e-4 and cve["frames_max_rel_diff"] <= 1e-4
    assert cve["compile_graphs"] >= 1 and cve["compile_s"] > 0 and cve["compile_error"] is None
    b = w["bench"]
    assert b["utterances"] == 4 and b["naive_utterances"] == 2 and b["speedup"] > 0 and b["compiled"]
    for k in ("naive_audio_s_per_s", "eager_audio_s_per_s", "compiled_audio_s_per_s", "model_alone_audio_s_per_s",
              "pipeline_efficiency", "compile_s"):
        assert b[k] > 0, k
    assert b["batched_audio_s_per_s"] == b["compiled_audio_s_per_s"] and b["batches"] >= 1
    assert 50 < b["padding_pct"] < 100  # Whisper pads every utterance to its 30-s window
    assert b["tflops"] > 0 and math.isclose(b["roofline_pct"], 100 * b["tflops"] / rep["machine"]["matmul_bf16_tflops"])

    prof = w["profile"]
    assert prof["prepare_one_thread_audio_s_per_s"] > 0
    assert prof["top_host_ops_ms"] and "gpu_busy_pct" not in prof  # kernel time is measured on CUDA only

    e = rep["extract"]
    assert e["single"]["rc"] == 0 and e["single"]["verify_rc"] == 0 and e["utterances"] == 3
    assert "2+ GPUs" in e["skipped"]["local2"]

    t = rep["trainer"]  # the trainer check, on the CPU here: every method CPU vs "device", and the reduced grid
    assert t["errors"] == {} and t["skipped"] == {} and t["device"] == "cpu"
    ag = t["agreement"]
    assert ag["ok"] and ag["max_prob_diff"] == 0 and len(ag["rows"]) >= 10  # the CPU against itself: identical
    assert {r["method"] for r in ag["rows"]} >= {"baseline", "same-epochs", "full-labeled", "dino", "b-grpo", "grpo",
                                                 "pseudo-label", "fixmatch", "teacher", "reference"}
    g = t["grid"]
    assert g["quick"] and g["grid"] and g["epochs_total"] == 4 and "device_vs_cpu" not in g  # no GPU row on a CPU
    assert [r["method"] for r in g["stacked"]] == ["baseline", "dino", "same-epochs", "full-labeled", "b-grpo"]
    assert all(r["seconds"] > 0 for r in g["stacked"])

    targets = {(t["target"], t["model"]) for t in rep["targets"]}
    assert {("batch-exact-fp32", "whisper-large-v3"), ("batch-exact-fp32", "fbank-stats"),
            ("compiled-exact-fp32", "whisper-large-v3"), ("frontend-vs-cpu", "whisper-large-v3")} <= targets
    assert not any(t["target"] in ("speedup", "pipeline-efficiency", "whisper-roofline-pct")
                   for t in rep["targets"])  # GPU-only by default
    assert all(t["ok"] for t in rep["targets"])

    assert "| whisper-large-v3 | tiny random | fp32 | cpu |" in md and "| fbank-stats |" in md
    for column in ("frontend vs CPU", "compiled vs eager", "model alone", "pipeline eff", "padding %",
                   "compile s (graphs)"):
        assert f"| {column} " in md, column
    assert "Compile cost, amortised" in md and "pays for itself" in md
    assert "local2: skipped" in md and "Result: all targets met" in md and "Where batched time goes" in md
    assert "Trainer on the device (cpu): ok" in md and "REDUCED" in md
    for column in ("configuration", "max abs p difference", "same predictions %", "device rerun identical", "loop",
                   "CPU time / this time"):
        assert f"| {column} " in md, column
    assert ("trainer: CPU vs device rows agree", "every method") in targets
    assert not any(t["target"] == "table1 grid: GPU faster than CPU" for t in rep["targets"])  # GPU-only
    assert rep["config"]["models"] == "fbank-stats,egemaps,whisper-large-v3"


@pytest.mark.slow
def test_missed_targets_exit_1_and_are_named(tmp_path):
    import numpy as np
    import soundfile as sf

    clips = tmp_path / "clips"
    clips.mkdir()
    rng = np.random.default_rng(0)
    for i, sr in enumerate((16000, 22050)):  # real clips come at any rate: loaded as extraction loads them
        sf.write(clips / f"clip{i}.wav", 0.1 * rng.standard_normal(int(1.5 * sr)).astype(np.float32), sr)
    r, rep, md = gpu_check(tmp_path / "out", "--models", "sensevoice-small", "--dtype", "bf16", "--min-cosine", "1.5",
                           "--speed-targets", "on", "--min-speedup", "1e9", "--min-efficiency", "0", "--utts", "4",
                           "--naive-utts", "2", "--no-extract", "--no-trainer", "--audio", str(clips))
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    assert "half-cosine (sensevoice-small)" in r.stderr and "speedup (sensevoice-small)" in r.stderr
    sv = rep["models"][0]
    assert sv["dtype"] == "bf16" and sv["errors"] == {}
    missed = {(t["target"], t["model"]) for t in rep["targets"] if not t["ok"]}
    assert missed == {("half-cosine", "sensevoice-small"), ("batch-cosine-half", "sensevoice-small"),
                      ("speedup", "sensevoice-small")}
    assert rep["extract"] is None and rep["trainer"] is None
    assert sv["batch_vs_single"]["utterances"] == 3  # two clips and the 31-s synthetic one
    assert sv["frontend_vs_cpu"]["max_rel_diff"] <= 1e-4 and "compiled_vs_eager" not in sv  # auto: eager on CPU
    assert "2 clips (clip0.wav, clip1.wav)" in md
    assert "| half-cosine | sensevoice-small |" in md and "MISSED" in md


@pytest.mark.slow
def test_bad_arguments_exit_2(tmp_path):
    r, rep, _ = gpu_check(tmp_path, "--model-path", "no-equals-sign")
    assert r.returncode == 2 and "MODEL=DIR" in r.stderr and rep is None
    r, rep, _ = gpu_check(tmp_path, "--audio", str(tmp_path / "none"))
    assert r.returncode == 2 and "--audio" in r.stderr and rep is None
    r, rep, _ = gpu_check(tmp_path, "--models", "whisper-large-v4")
    assert r.returncode == 2 and "whisper-large-v4" in r.stderr and "known models" in r.stderr and rep is None
    r, rep, _ = gpu_check(tmp_path, "--compile", "sometimes")
    assert r.returncode == 2 and "--compile" in r.stderr and rep is None


@pytest.mark.slow
def test_a_model_over_its_time_cap_fails_alone(tmp_path):
    r, rep, _ = gpu_check(tmp_path, "--models", "whisper-large-v3,fbank-stats", "--utts", "2000",
                          "--model-timeout", "15", "--no-extract")
    assert r.returncode == 1
    models = {m["model"]: m for m in rep["models"]}
    assert "timed out" in models["whisper-large-v3"]["errors"]["process"]
    assert models["fbank-stats"]["errors"] == {} and "batch_vs_single" in models["fbank-stats"]  # a fresh child went on
    assert "step process (whisper-large-v3)" in r.stderr


@pytest.mark.slow
def test_models_left_unchecked_by_the_time_budget_count_as_missed(tmp_path):
    r, rep, md = gpu_check(tmp_path, "--models", "fbank-stats,sensevoice-small", "--time-budget", "0")
    assert r.returncode == 1
    assert {(t["target"], t["model"], t["ok"]) for t in rep["targets"]} == {
        ("step all", "fbank-stats", False), ("step all", "sensevoice-small", False)}
    assert "time budget spent" in md and "step all (sensevoice-small)" in r.stderr


def test_trainer_targets_on_a_gpu_report():
    """The trainer check's targets from what a GPU run reports (built here: no GPU in CI): agreement within the
    tolerance, the Table-1 grid faster on the GPU, a step that ran out of --trainer-budget counted as missed."""
    from importlib.machinery import SourceFileLoader

    gc = SourceFileLoader("gpu_check", str(SCRIPT)).load_module()
    grid = {"device_vs_cpu": {"methods": ["baseline", "b-grpo"], "device_seconds": 4.0, "cpu_seconds": 20.0,
                              "speedup": 5.0}}
    ag = {"max_prob_diff": 2e-6, "tolerance": 1e-3}
    rows = {r["target"]: r for r in gc.trainer_targets({"agreement": ag, "grid": grid, "errors": {}, "skipped": {}})}
    assert rows["table1 grid: GPU faster than CPU"]["ok"] and rows["table1 grid: GPU faster than CPU"]["value"] == 5.0
    assert rows["trainer: CPU vs device rows agree"]["ok"]
    slow = {**grid, "device_vs_cpu": {**grid["device_vs_cpu"], "speedup": 0.7}}
    rows = gc.trainer_targets({"agreement": {**ag, "max_prob_diff": 0.2}, "grid": slow, "errors": {},
                               "skipped": {"grid": gc.BUDGET_SPENT}})
    assert {(r["target"], r["ok"]) for r in rows} == {("table1 grid: GPU faster than CPU", False),
                                                     ("trainer: CPU vs device rows agree", False),
                                                     ("step trainer-grid", False)}
    md = gc.trainer_markdown({"device": "cuda", "errors": {"agreement": "boom"}, "skipped": {}, "seconds": 3.0})
    assert md.startswith("Trainer on the device (cuda): agreement: FAILED (boom)")
