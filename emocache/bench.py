"""Encoder throughput: the extraction loop production runs, beside the naive way (batch 1, fp32, one utterance at
a time, as EmoBox's script and funasr's ``generate`` do), in one run.

The batched side is :func:`emocache.runner.prefetch` over blocks of utterances in length order, each block batched
under the padded-audio budget by :func:`emocache.runner.load_waves` in loader threads and encoded by
:func:`emocache.runner.encode_block`: what ``emocache extract`` does, minus decoding files and writing the store.
Lengths follow an IEMOCAP-like mix (log-normal, mean about 4.5 s, clipped to [0.5, 30] s, one 30-s tail item);
the audio is :func:`emocache.signals.speech_like`. Without weights the encoder is built full-size with random
weights (the same FLOPs as the real model); ``tiny=True`` uses the test-sized random models.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from emocache.config import DEFAULT_BLOCK
from emocache.encoders import EncoderConfig, EncoderError, build_encoder, encoder_class, neural_models
from emocache.encoders.neural import cosine_to_fp32
from emocache.encoders.tiny import overrides
from emocache.runner import encode_block, load_waves
from emocache.runner import prefetch as prefetch_blocks
from emocache.runtime import print_table as show
from emocache.signals import speech_like

SR = 16000
MEAN_SECONDS = 4.5
SIGMA = 0.65
NAIVE_SEED_OFFSET = 1
"""The naive subset is drawn from ``seed + NAIVE_SEED_OFFSET``, a stream apart from the lengths' and waves'."""
MAX_BATCH = 64
"""Most utterances per batch, as ``emocache extract``'s default."""


def iemocap_like_lengths(n: int, seed: int = 0, sr: int = SR) -> list[int]:
    """Sample counts: log-normal with mean ``MEAN_SECONDS``, clipped to [0.5, 30] s; the longest is set to 30 s."""
    rng = np.random.default_rng(seed)
    mu = math.log(MEAN_SECONDS) - SIGMA ** 2 / 2
    sec = np.clip(rng.lognormal(mu, SIGMA, n), 0.5, 30.0)
    if n >= 20:
        sec[int(np.argmax(sec))] = 30.0
    return [int(s * sr) for s in sec]


def synthetic_waves(lengths: list[int], seed: int = 0, sr: int = SR) -> list[np.ndarray]:
    """Speech-like waves, one per length (:func:`emocache.signals.speech_like`)."""
    return speech_like(lengths, sr, seed)


def measure_matmul_tflops(device: torch.device, dtype: torch.dtype, n: int = 8192, reps: int = 20) -> float:
    """Achieved TFLOP/s of a square matmul (the roofline the Whisper number is quoted against)."""
    if device.type != "cuda":
        n, reps = 1024, 5
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e12


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_batched(enc, waves: list[np.ndarray], budget_seconds: float, workers: int = 2, prefetch: int | None = None,
                block_size: int = DEFAULT_BLOCK) -> int:
    """Encode all waves with the extraction loop: blocks of ``block_size`` in length order, each batched under the
    budget in ``workers`` loader threads, up to ``prefetch`` blocks (default ``workers``) ahead of the model.

    Returns the number of model windows run (for FLOP accounting).
    """
    order = sorted(range(len(waves)), key=lambda i: waves[i].size)  # the store's order when lengths are known
    blocks = [[waves[i] for i in order[k:k + block_size]] for k in range(0, len(order), block_size)]
    windows = sum(len(enc.windows(w)) for w in waves)
    with ThreadPoolExecutor(workers) as pool:
        for block, loaded in prefetch_blocks(lambda blk: load_waves(blk, enc, budget_seconds, MAX_BATCH), blocks,
                                             prefetch or workers, pool):
            encode_block(loaded, len(block), enc)
    _sync(enc.device)
    return windows


def bench_encoder(model: str, n_utts: int = 200, device: str = "auto", dtype: str = "auto",
                  model_path: str | None = None, tiny: bool = False, seed: int = 0,
                  budget_seconds: float | None = None, naive_utts: int | None = None, workers: int = 2,
                  warmup: bool = True, trust_checkpoint: bool = False) -> dict:
    """Time the naive and the batched way on the same encoder and synthetic utterances; one result row.

    ``warmup`` runs both ways once untimed first (per-shape kernel set-up would otherwise be charged to whichever
    runs first). ``budget_seconds`` is the padded audio per batch (default 480 s on GPU, 60 s on CPU).
    """
    if not encoder_class(model).has_weights:  # an unknown name: EncoderError listing the known ones
        raise EncoderError(f"{model} has no weights to batch; `bench --model` times the neural encoders "
                           f"({', '.join(neural_models())})")
    lengths = iemocap_like_lengths(n_utts, seed)
    waves = synthetic_waves(lengths, seed)
    if tiny:
        enc = build_encoder(model, EncoderConfig(device=device, dtype=dtype, random_init=True,
                                                 config_overrides=overrides(model, "tiny")))
        label = "tiny random"
    else:
        try:
            enc = build_encoder(model, EncoderConfig(model_path=model_path, device=device, dtype=dtype,
                                                     trust_checkpoint=trust_checkpoint))
            label = "weights"
        except EncoderError:
            if model_path:
                raise
            enc = build_encoder(model, EncoderConfig(device=device, dtype=dtype, random_init=True))
            label = "full random"
    dev = enc.device
    budget = budget_seconds or (16 * 30 if dev.type == "cuda" else 60)

    rng = np.random.default_rng(seed + NAIVE_SEED_OFFSET)
    k = min(n_utts, naive_utts or (n_utts if dev.type == "cuda" else max(8, n_utts // 4)))
    naive_idx = rng.permutation(n_utts)[:k]
    half = enc.compute_dtype
    enc.compute_dtype = torch.float32
    for i in naive_idx if warmup else naive_idx[:1]:
        enc.encode([waves[i]])
    _sync(dev)
    t = time.perf_counter()
    for i in naive_idx:
        enc.encode([waves[i]])
    _sync(dev)
    naive_s = time.perf_counter() - t
    enc.compute_dtype = half

    run_batched(enc, waves if warmup else waves[: min(n_utts, 8)], budget, workers)
    t = time.perf_counter()
    windows = run_batched(enc, waves, budget, workers)
    batched_s = time.perf_counter() - t

    audio = sum(lengths) / SR
    naive_audio = sum(lengths[i] for i in naive_idx) / SR
    row = {
        "model": model, "config": label, "device": _device_name(dev), "dtype": enc.dtype_name,
        "utterances": n_utts, "audio_s": audio, "naive_utterances": int(k),
        "naive_utt_per_s": k / naive_s, "naive_audio_s_per_s": naive_audio / naive_s,
        "batched_utt_per_s": n_utts / batched_s, "batched_audio_s_per_s": audio / batched_s,
        "speedup": (audio / batched_s) / (naive_audio / naive_s), "budget_s": budget,
        "precision_checks": dict(enc.precision_checks), "tflops": None, "roofline_pct": None,
    }
    if hasattr(enc, "flops_per_window"):
        row["tflops"] = windows * enc.flops_per_window() / batched_s / 1e12
        if dev.type == "cuda":
            peak = measure_matmul_tflops(dev, torch.bfloat16)
            row["matmul_tflops"] = peak
            row["roofline_pct"] = 100 * row["tflops"] / peak
    if enc.compute_dtype != torch.float32 and "bf16" not in enc.precision_checks:
        row["precision_checks"][enc.dtype_name] = cosine_to_fp32(enc, enc.dtype_name)
    return row


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"cpu x{torch.get_num_threads()}"


COLUMNS = [("model", "model"), ("config", "config"), ("device", "device"), ("dtype", "dtype"),
           ("utterances", "utts"), ("audio_s", "audio s"), ("naive_utt_per_s", "naive utt/s"),
           ("batched_utt_per_s", "batched utt/s"), ("naive_audio_s_per_s", "naive audio-s/s"),
           ("batched_audio_s_per_s", "batched audio-s/s"), ("speedup", "speedup"), ("tflops", "TFLOP/s"),
           ("roofline_pct", "% roofline")]


def print_table(rows: list[dict]) -> None:
    """A rich table of :func:`bench_encoder` rows."""
    show("encoder throughput: batched vs naive (batch 1, fp32, one at a time)", COLUMNS, rows)


def bench_layers(model: str, layers: str = "all", n_utts: int = 200, device: str = "auto",
                 model_path: str | None = None, tiny: bool = False, seed: int = 0,
                 budget_seconds: float | None = None, workers: int = 2, workdir=None, repeats: int = 2,
                 trust_checkpoint: bool = False) -> list[dict]:
    """The extra cost of ``--layers`` over last only: the extraction loop's time on the same encoder and waves
    (pooled only, no frames), and the bytes of a store entry of the pooled vectors with and without the layers.

    One row per setting (last, then ``layers``), each the fastest of ``repeats`` alternating runs; without weights
    the encoder has full-size random weights.
    """
    import tempfile

    from emocache.store import entry_bytes, open_store

    if not encoder_class(model).has_weights:
        raise EncoderError(f"{model} has no layers; `bench --layers` times the neural encoders")
    lengths = iemocap_like_lengths(n_utts, seed)
    waves = synthetic_waves(lengths, seed)
    extra = dict(config_overrides=overrides(model, "tiny"), random_init=True) if tiny else {}
    label = "tiny random" if tiny else "weights"
    cfg = EncoderConfig(model_path=model_path, device=device, layers=layers, trust_checkpoint=trust_checkpoint, **extra)
    try:
        enc = build_encoder(model, cfg)
    except EncoderError:
        if tiny or model_path:
            raise
        import dataclasses

        enc = build_encoder(model, dataclasses.replace(cfg, random_init=True))
        label = "full random"
    chosen = enc.layer_ids
    budget = budget_seconds or (16 * 30 if enc.device.type == "cuda" else 60)
    rows = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        run_batched(enc, waves[: min(n_utts, 8)], budget, workers)  # warm-up
        times: dict[tuple, list[float]] = {(): [], chosen: []}
        for _ in range(repeats):  # alternating, so drifting load on a shared machine hits both settings alike
            for ids in times:
                enc.layer_ids = ids
                t = time.perf_counter()
                run_batched(enc, waves, budget, workers)
                times[ids].append(time.perf_counter() - t)
        for name, ids in (("last", ()), (layers, chosen)):
            enc.layer_ids = ids
            s = min(times[ids])
            st = open_store(f"{tmp}/{len(rows)}", mode="a")
            keys = [f"u{i}" for i in range(n_utts)]
            e = st.create_entry("m", "d", keys, ["x"] * n_utts, enc.dim, enc.dim, {"weights": "bench", "layer": "last"},
                                has_frames=False, layers=ids)
            rng = np.random.default_rng(seed)  # random float32 vectors: real ones compress about as little
            for b in range(e.n_blocks):
                nb = e.block_slice(b).stop - e.block_slice(b).start
                e.write_block(b, rng.standard_normal((nb, enc.dim)).astype(np.float32), None, {},
                              rng.standard_normal((nb, len(ids), enc.dim)).astype(np.float32) if ids else None)
            rows.append({"model": model, "config": label, "device": _device_name(enc.device), "layers": name,
                         "n_layers": len(ids), "utterances": n_utts, "seconds": s, "utt_per_s": n_utts / s,
                         "store_bytes": entry_bytes(open_store(f"{tmp}/{len(rows)}"), "m", "d")})
    base = rows[0]
    for r in rows:
        r["time_ratio"] = r["seconds"] / base["seconds"]
        r["bytes_ratio"] = r["store_bytes"] / base["store_bytes"]
    return rows


LAYER_COLUMNS = [("model", "model"), ("config", "config"), ("device", "device"), ("layers", "layers"),
                 ("n_layers", "L stored"), ("utterances", "utts"), ("seconds", "s"), ("utt_per_s", "utt/s"),
                 ("time_ratio", "time x"), ("store_bytes", "store bytes"), ("bytes_ratio", "bytes x")]


def print_layers_table(rows: list[dict]) -> None:
    """A rich table of :func:`bench_layers` rows."""
    show("--layers vs last only: extraction loop time (pooled, no frames) and store bytes", LAYER_COLUMNS, rows)
