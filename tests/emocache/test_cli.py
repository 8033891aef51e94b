"""The `emocache` CLI: subprocess smoke runs, exit codes, error summaries, SIGKILL mid-run and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from tests.helpers.audio import emobox_line, tone, write_jsonl, write_wav
from tests.helpers.cli import EMOCACHE_BIN
from emocache.store import open_store

M = "fbank-stats"


@pytest.mark.slow
def test_models_subprocess(run_cli):
    p = run_cli("models")
    assert p.returncode == 0, p.stderr
    from emocache.encoders import names

    assert p.stdout.split() == names()  # the registry, sorted
    assert {"egemaps", "emotion2vec-base", "emotion2vec-plus-large", "fbank-stats", "sensevoice-small",
            "wavlm-base-plus", "wavlm-large", "whisper-large-v3"} <= set(names())  # the model names users rely on


@pytest.mark.slow
def test_extract_info_verify_subprocess(tmp_path, demo_corpus, run_cli):
    store = tmp_path / "store"
    p = run_cli("extract", "--model", M, "--manifest", demo_corpus.manifest, "--store", store,
                "--audio-root", demo_corpus.audio_root, "--device", "cpu", "--block-size", "16", "--no-progress")
    assert p.returncode == 0, p.stdout + p.stderr
    k, X = open_store(store).pooled(M, "demo")
    assert len(k) == 36 and X.shape == (36, 80) and np.isfinite(X).all()

    p = run_cli("info", store, "--json")
    assert p.returncode == 0, p.stderr
    (row,) = json.loads(p.stdout)
    assert (row["model"], row["dataset"], row["n"], row["done"], row["failed"], row["pending"], row["dim"]) == \
        (M, "demo", 36, 36, 0, 0, 80)
    assert row["frames"] is True and row["blocks"] == 3 and row["bytes"] > 0
    assert row["provenance"]["weights"].startswith("none")

    p = run_cli("info", store)
    assert p.returncode == 0 and M in p.stdout + p.stderr and "provenance" in p.stdout + p.stderr

    p = run_cli("verify", store)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "fbank-stats/demo: 3/3 blocks committed, ok" in " ".join((p.stdout + p.stderr).split())


def test_extract_with_bad_inputs_exits_nonzero_with_summary(tmp_path, cli):
    a = tmp_path / "a"
    rows = [emobox_line("ok", str(write_wav(a / "ok.wav", tone(0.5))), "x", dataset="t"),
            emobox_line("gone", str(a / "gone.wav"), "x", dataset="t"),
            emobox_line("tiny", str(write_wav(a / "tiny.wav", tone(0.01))), "x", dataset="t")]
    man = write_jsonl(tmp_path / "t.jsonl", rows)
    code, out = cli("extract", "--model", M, "--manifest", man, "--store", tmp_path / "s", "--device", "cpu",
                    "--no-progress")
    assert code == 1
    text = " ".join(out.split())
    assert "2 utterance(s) failed" in text
    assert "t/gone:" in text and "file not found" in text and "t/tiny: audio too short" in text
    assert "--redo-failed" in text
    assert open_store(tmp_path / "s").pooled(M, "t")[0] == ["ok"]


def test_cli_errors_exit_2_with_message(tmp_path, cli, demo_corpus):
    code, out = cli("extract", "--model", "nope", "--manifest", demo_corpus.manifest, "--store", tmp_path / "s")
    assert code == 2 and "unknown model 'nope'" in out and "whisper-large-v3" in out
    code, out = cli("info", tmp_path / "nothing")
    assert code == 2 and "no store here" in out
    code, out = cli("verify", tmp_path / "nothing")
    assert code == 2 and "no store here" in out
    bad = write_jsonl(tmp_path / "bad.jsonl", [emobox_line("a", "a.wav", "x", channel=0)])
    code, out = cli("extract", "--model", M, "--manifest", bad, "--store", tmp_path / "s", "--no-progress")
    assert code == 2 and "bad.jsonl:1: channel 0 is out of range" in " ".join(out.split())
    code, out = cli("extract", "--model", M, "--manifest", demo_corpus.manifest, "--store", tmp_path / "s",
                    "--audio-root", "no-equals", "--no-progress")
    assert code == 2 and "PREFIX=DIR" in out


def test_verify_reports_corrupt_block(tmp_path, cli, demo_corpus):
    store = tmp_path / "s"
    code, out = cli("extract", "--model", M, "--manifest", demo_corpus.manifest, "--store", store,
                    "--audio-root", demo_corpus.audio_root, "--device", "cpu", "--block-size", "8", "--no-progress")
    assert code == 0, out
    chunk = store / M / "demo" / "blocks" / "b000002" / "frames" / "c" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x55
    chunk.write_bytes(bytes(data))
    code, out = cli("verify", store)
    text = " ".join(out.split())
    assert code == 1 and "1 bad block(s)" in text and "block 2:" in text and "1 block(s) to redo" in text
    # --redo-failed rewrites the bad block and the store verifies again
    code, out = cli("extract", "--model", M, "--manifest", demo_corpus.manifest, "--store", store,
                    "--audio-root", demo_corpus.audio_root, "--device", "cpu", "--block-size", "8", "--no-progress",
                    "--redo-failed")
    assert code == 0, out
    code, out = cli("verify", store)
    assert code == 0, out


def test_manifest_command(tmp_path, cli, run_cli):
    for emo in ("ang", "sad"):
        for i in range(2):
            write_wav(tmp_path / "audio" / emo / f"{i}.wav", tone(0.5 + 0.1 * i), 16000)
    out = tmp_path / "toy.jsonl"
    p = run_cli("manifest", tmp_path / "audio", "--dataset", "toy", "--out", out, "--pattern", "(?P<emo>[^/]+)/")
    assert p.returncode == 0, p.stderr
    assert "wrote 4 utterances" in p.stdout + p.stderr and "ang 2, sad 2" in p.stdout + p.stderr
    lines = [json.loads(s) for s in out.read_text().splitlines()]
    assert [(d["key"], d["emo"], d["num_frame"]) for d in lines] == [
        ("toy-ang_0", "ang", 8000), ("toy-ang_1", "ang", 9600), ("toy-sad_0", "sad", 8000), ("toy-sad_1", "sad", 9600)]
    # the built manifest extracts
    code, text = cli("extract", "--model", M, "--manifest", out, "--store", tmp_path / "s", "--device", "cpu",
                     "--no-progress")
    assert code == 0, text
    assert len(open_store(tmp_path / "s").pooled(M, "toy")[0]) == 4
    csv = tmp_path / "labels.csv"
    csv.write_text("file,emo\nang/0.wav,A\n")
    code, text = cli("manifest", tmp_path / "audio", "--dataset", "toy", "--out", out, "--labels-csv", csv)
    assert code == 2 and "no row in" in text
    code, text = cli("manifest", tmp_path / "audio", "--dataset", "toy", "--out", out)
    assert code == 2 and "exactly one of" in text


def _committed_blocks(store) -> int:
    try:
        e = open_store(store).entry(M, "big")
    except Exception:
        return 0
    return sum(s.committed for s in e.block_states())


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_equals_uninterrupted(tmp_path, demo_corpus, run_cli):
    # 36 files x 8 keys = 288 utterances in 72 blocks of 4: long enough to kill mid-way
    rows = [{**d, "key": f"{d['key']}-r{r}", "dataset": "big"} for r in range(8) for d in demo_corpus.lines()]
    man = write_jsonl(tmp_path / "big.jsonl", rows)
    store = tmp_path / "killed"
    args = ["extract", "--model", M, "--manifest", str(man), "--store", str(store), "--audio-root",
            demo_corpus.audio_root, "--device", "cpu", "--block-size", "4", "--no-progress", "--loader-threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([str(EMOCACHE_BIN), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.time() + 90
        while _committed_blocks(store) < 1 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    n_blocks = open_store(store).entry(M, "big").n_blocks
    done_at_kill = _committed_blocks(store)
    assert 1 <= done_at_kill < n_blocks == 72
    keys_at_kill, X_at_kill = open_store(store).pooled(M, "big")
    b0 = next(b for b, st in enumerate(open_store(store).entry(M, "big").block_states()) if st.committed)
    first_chunk = store / M / "big" / "blocks" / f"b{b0:06d}" / "frames" / "c" / "0" / "0"
    first_mtime = first_chunk.stat().st_mtime_ns

    p = run_cli(*args)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "0 utterance(s) failed" not in p.stderr and "failed" not in p.stderr.split("audio-s/s")[-1]
    # blocks committed before the kill were skipped, not rewritten
    assert first_chunk.stat().st_mtime_ns == first_mtime

    ref = tmp_path / "ref"
    from emocache.extract import ExtractConfig, extract

    rep = extract(ExtractConfig(model=M, manifests=(str(man),), store=str(ref), audio_root=(demo_corpus.audio_root,),
                                device="cpu", block_size=4), progress=False)
    assert rep.ok
    a, b = open_store(ref), open_store(store)
    ka, Xa = a.pooled(M, "big")
    kb, Xb = b.pooled(M, "big")
    assert ka == kb and len(ka) == 288
    np.testing.assert_array_equal(Xa, Xb)
    # what was committed before the kill is unchanged
    pos = {k: i for i, k in enumerate(kb)}
    np.testing.assert_array_equal(Xb[[pos[k] for k in keys_at_kill]], X_at_kill)
    n = 0
    for (k1, f1), (k2, f2) in zip(a.iter_frames(M, "big"), b.iter_frames(M, "big")):
        assert k1 == k2
        np.testing.assert_array_equal(f1, f2)
        n += 1
    assert n == 288


def _demo_extract(corpus, store, *args) -> list:
    """``extract`` arguments for fbank-stats over the demo corpus into ``store``, then ``args``."""
    return ["extract", "--model", M, "--manifest", corpus.manifest, "--store", store, "--audio-root",
            corpus.audio_root, "--no-progress", *args]


def _one_error_line(text: str) -> str:
    lines = [s for s in text.splitlines() if s.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in text, text
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("args, expect", [
    (["--device", "gpu"], "--device 'gpu': use one of auto, cpu, cuda, cuda:I"),
    (["--device", "cuda:7"], "--device cuda:7: not on this machine"),
])
def test_device_errors_are_one_line_subprocess(tmp_path, demo_corpus, run_cli, args, expect):
    p = run_cli(*_demo_extract(demo_corpus, tmp_path / "s", *args))
    assert p.returncode == 2
    line = _one_error_line(p.stdout + p.stderr)
    assert expect in line
    if args[1].startswith("cuda"):
        import torch

        have = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        assert line.endswith("available: " + ", ".join(have))
    assert not (tmp_path / "s").exists()


def test_cuda_on_a_cpu_only_torch_names_the_devices(monkeypatch):
    import torch

    from emocache.encoders import EncoderConfig, EncoderError, build_encoder

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(EncoderError, match=r"--device cuda: not on this machine \(this torch has no CUDA support\); "
                                           r"available: cpu$"):
        build_encoder(M, EncoderConfig(device="cuda"))


@pytest.mark.parametrize("args, expect", [
    (["--dtype", "fp16"], "fbank-stats is weight-free and computes in float32"),
    (["--dtype", "fp8"], "--dtype 'fp8': use one of auto, fp32, bf16, fp16"),
    (["--block-size", "0"], "--block-size 0: must be a number above 0"),
    (["--block-size", "-5"], "--block-size -5: must be a number above 0"),
    (["--batch-seconds", "0"], "--batch-seconds 0.0: must be a number above 0"),
    (["--batch-seconds", "nan"], "--batch-seconds nan: must be a number above 0"),
    (["--max-audio-seconds", "-1"], "--max-audio-seconds -1.0: must be a number above 0"),
    (["--loader-threads", "0"], "--loader-threads 0: must be a number above 0"),
    (["--long-policy", "chop"], "--long-policy 'chop': use one of window, truncate, skip"),
    (["--part", "3/2"], "--part '3/2': expected I/N"),
    (["--storage-options", "[1]"], "--storage-options must hold a JSON object, got list"),
])
def test_extract_settings_refused_in_one_line(tmp_path, demo_corpus, cli, args, expect):
    code, out = cli(*_demo_extract(demo_corpus, tmp_path / "s", *args))
    assert code == 2 and expect in _one_error_line(out)
    assert not (tmp_path / "s").exists()


def test_store_at_an_existing_file_is_refused(tmp_path, demo_corpus, cli):
    for name in ("notes.txt", "theirs.zip"):
        (tmp_path / name).write_text("x")
        code, out = cli(*_demo_extract(demo_corpus, tmp_path / name))
        assert code == 2 and f"--store {tmp_path / name} is a" in _one_error_line(out)
        assert (tmp_path / name).read_text() == "x"


def test_wrong_audio_root_stops_before_recording_failures(tmp_path, demo_corpus, cli):
    code, out = cli("extract", "--model", M, "--manifest", demo_corpus.manifest, "--store", tmp_path / "s",
                    "--audio-root", f"demo={tmp_path / 'elsewhere'}", "--block-size", "8", "--no-progress")
    line = _one_error_line(out)
    assert code == 2 and "none of the 8 audio files of the first block exists" in line and "--audio-root" in line
    assert str(tmp_path / "elsewhere") in line
    from emocache.store import describe

    (row,) = describe(open_store(tmp_path / "s"))  # nothing recorded as failed: every block still pending
    assert (row["done"], row["failed"], row["pending"]) == (0, 0, 36)


def test_every_option_has_help_and_choices_are_listed():
    import click
    import typer.main

    from emocache.cli import app

    group = typer.main.get_command(app)
    for name, cmd in group.commands.items():
        for param in cmd.params:
            if isinstance(param, click.Option) and param.name != "help":
                assert param.help, f"emocache {name} {param.opts[0]} has no help"
    extract = {p.name: p.help for p in group.commands["extract"].params}
    assert "auto | cpu | cuda | cuda:I" in extract["device"] and "auto | fp32 | bf16 | fp16" in extract["dtype"]
    assert "window | truncate | skip" in extract["long_policy"]


def test_extract_defaults_come_from_the_config():
    import typer.main

    from emocache.cli import app
    from emocache.config import ExtractConfig

    params = {p.name: p for p in typer.main.get_command(app).commands["extract"].params}
    for field in ("device", "dtype", "block_size", "batch_seconds", "long_policy", "max_audio_seconds",
                  "loader_threads", "redo_failed", "frames"):
        assert params[field].default == getattr(ExtractConfig, field), field


def test_null_dataset_in_a_manifest_is_an_error_not_none(tmp_path, cli):
    wav = write_wav(tmp_path / "a.wav", tone(0.5))
    man = write_jsonl(tmp_path / "m.jsonl", [emobox_line("a", str(wav), "x", dataset=None)])
    code, out = cli("extract", "--model", M, "--manifest", man, "--store", tmp_path / "s", "--no-progress")
    line = _one_error_line(out)
    assert code == 2 and "m.jsonl:1: dataset None is not a name" in line
    assert not (tmp_path / "s" / M / "None").exists()


@pytest.mark.slow
def test_bench_model_runs_the_extraction_loop(cli, monkeypatch):
    import emocache.bench as bench
    import emocache.runner as runner

    calls = []
    real = runner.encode_block

    def counted(loaded, n, enc, on_batch=None, frames=True):
        calls.append(n)
        return real(loaded, n, enc, on_batch, frames)

    monkeypatch.setattr(bench, "encode_block", counted)
    code, out = cli("bench", "--model", "wavlm-base-plus", "--tiny", "--n", "6", "--device", "cpu")
    assert code == 0, out
    assert "wavlm-base-plus" in out and "tiny random" in out and "not compiled" in out
    assert calls == [6, 6, 6]  # warm-up, end to end, model alone: one block each, the production block encoder
    calls.clear()
    code, out = cli("bench", "--model", "wavlm-base-plus", "--tiny", "--n", "6", "--device", "cpu", "--compile", "on")
    assert code == 0, out
    assert calls == [6] * 6 and "pays for itself" in out  # eager and compiled, each: warm-up, end to end, alone
    assert "the mode --compile auto runs" in out  # WavLM's compile_pays is False: its production row is eager
    code, out = cli("bench", "--model", "fbank-stats", "--n", "4")
    assert code == 2 and "fbank-stats has no weights to batch" in _one_error_line(out)
    code, out = cli("bench", "--model", "wavlm-base-plus", "--tiny", "--compile", "sometimes")
    assert code == 2 and "--compile 'sometimes'" in _one_error_line(out)
