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

import dataclasses
import math
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from emocache.config import DEFAULT_BLOCK
from emocache.encoders import EncoderConfig, EncoderError, build_encoder, encoder_class, neural_models
from emocache.encoders.neural import cosine_to_fp32
from emocache.encoders import batches_by_budget
from emocache.encoders.tiny import overrides
from emocache.manifest import read_manifests
from emocache.runner import batch_limits, encode_block, load_waves
from emocache.runner import prefetch as prefetch_blocks
from emocache.runtime import print_table as show
from emocache.signals import speech_like
from emocache.store import entry_bytes, open_store

SR = 16000
MEAN_SECONDS = 4.5
SIGMA = 0.65
NAIVE_SEED_OFFSET = 1
"""The naive subset is drawn from ``seed + NAIVE_SEED_OFFSET``, a stream apart from the lengths' and waves'."""
CPU_BATCH_SECONDS = 60.0
"""The CPU bench's batch budget (a CPU batch of 240 s only adds memory); on CUDA the encoder's own GPU budget."""
MODEL_ALONE_SECONDS = 1200.0
"""Audio prepared at a time for the model-alone timing (bounds the page-locked memory it holds)."""


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
    if device.type != "cuda":  # a CPU figure only shows the code runs; bf16 GEMMs are slow on many CPUs
        n, reps = 512, 3
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


def blocks_of(waves: list[np.ndarray], block_size: int = DEFAULT_BLOCK) -> list[list[np.ndarray]]:
    """Waves in length order cut into blocks, as a store whose manifests give lengths holds them."""
    order = sorted(range(len(waves)), key=lambda i: waves[i].size)
    return [[waves[i] for i in order[k:k + block_size]] for k in range(0, len(order), block_size)]


def run_batched(enc, waves: list[np.ndarray], budget_seconds: float | None, workers: int = 2,
                prefetch: int | None = None, block_size: int = DEFAULT_BLOCK, max_batch: int | None = None) -> int:
    """Encode all waves with the extraction loop: blocks of ``block_size`` in length order, each batched under the
    budget in ``workers`` loader threads, up to ``prefetch`` blocks (default ``workers``) ahead of the model.

    Returns the number of model windows run (for FLOP accounting).
    """
    blocks = blocks_of(waves, block_size)
    windows = sum(len(enc.windows(w)) for w in waves)
    with ThreadPoolExecutor(workers) as pool:
        for block, loaded in prefetch_blocks(lambda blk: load_waves(blk, enc, budget_seconds, max_batch), blocks,
                                             prefetch or workers, pool):
            encode_block(loaded, len(block), enc)
    _sync(enc.device)
    return windows


def run_model_alone(enc, waves: list[np.ndarray], budget_seconds: float | None, block_size: int = DEFAULT_BLOCK,
                    max_batch: int | None = None) -> tuple[float, dict]:
    """Seconds the model stage takes when every batch is already prepared: the same blocks and batches as
    :func:`run_batched`, prepared (up to :data:`MODEL_ALONE_SECONDS` of audio at a time) before the clock runs,
    then encoded by the same block encoder. Also the batch plan: batches, audio and padded samples."""
    blocks = blocks_of(waves, block_size)
    seconds, plan = 0.0, {"batches": 0, "audio_samples": 0, "padded_samples": 0}
    k = 0
    while k < len(blocks):
        chunk, audio = [], 0
        while k < len(blocks) and (not chunk or audio < MODEL_ALONE_SECONDS * enc.sample_rate):
            loaded = load_waves(blocks[k], enc, budget_seconds, max_batch)
            chunk.append((loaded, len(blocks[k])))
            audio += loaded.audio_samples
            plan["batches"] += len(loaded.batches)
            plan["audio_samples"] += loaded.audio_samples
            plan["padded_samples"] += loaded.padded_samples
            k += 1
        _sync(enc.device)
        t = time.perf_counter()
        for loaded, n in chunk:
            encode_block(loaded, n, enc)
        _sync(enc.device)
        seconds += time.perf_counter() - t
    return seconds, plan


def _time_mode(enc, waves, budget, cap, workers, warmup: bool) -> dict:
    """End to end (loader threads + model) and model alone, after an untimed run of the loop over the first and
    the last block (the shortest and the longest batches: kernels, algorithms and compiled graphs set up)."""
    if warmup:
        blocks = blocks_of(waves)
        run_batched(enc, [w for b in {0, len(blocks) - 1} for w in blocks[b]], budget, workers, max_batch=cap)
    graphs = enc.compile_stats["graphs"]
    t = time.perf_counter()
    run_batched(enc, waves, budget, workers, max_batch=cap)
    e2e = time.perf_counter() - t
    model, plan = run_model_alone(enc, waves, budget, max_batch=cap)
    return {"e2e_s": e2e, "model_s": model, "plan": plan, "graphs_while_timed": enc.compile_stats["graphs"] - graphs}


def bench_encoder(model: str, n_utts: int = 200, device: str = "auto", dtype: str = "auto",
                  model_path: str | None = None, tiny: bool = False, seed: int = 0,
                  budget_seconds: float | None = None, naive_utts: int | None = None, workers: int = 2,
                  warmup: bool = True, compile: str = "auto", max_batch: int | None = None,
                  frontend: str = "auto", encoder=None, trust_checkpoint: bool = False) -> dict:
    """Time the naive way and the batched way on the same encoder and synthetic utterances; one result row.

    Naive: batch 1, fp32 weights, eager, the CPU frontend (as EmoBox runs the models). Batched: the extraction
    loop, eagerly and (when ``compile`` resolves to on) with the compiled layers, each end to end (loader threads
    + model) and model alone (every batch prepared first); ``pipeline_efficiency`` = model-alone seconds /
    end-to-end seconds of the mode ``--compile auto`` runs (compiled when the layers were compiled and the class's
    ``compile_pays``). The compile cost is measured apart (the
    untimed warm-up pays it) and reported with the audio after which it has paid for itself. ``warmup`` runs
    every timed loop once untimed first. ``budget_seconds`` / ``max_batch``: the batch budget and size cap
    (default 60 s and 64 on the CPU, the encoder's GPU values on CUDA). ``encoder``: an encoder already built for
    ``model`` (its settings then win over ``device``, ``dtype``, ``compile`` and ``frontend``).
    """
    if not encoder_class(model).has_weights:  # an unknown name: EncoderError listing the known ones
        raise EncoderError(f"{model} has no weights to batch; `bench --model` times the neural encoders "
                           f"({', '.join(neural_models())})")
    lengths = iemocap_like_lengths(n_utts, seed)
    waves = synthetic_waves(lengths, seed)
    settings = dict(device=device, dtype=dtype, compile=compile, frontend=frontend)
    if encoder is not None:
        enc, label = encoder, "given"
    elif tiny:
        enc = build_encoder(model, EncoderConfig(random_init=True, config_overrides=overrides(model, "tiny"),
                                                 **settings))
        label = "tiny random"
    else:
        try:
            enc = build_encoder(model, EncoderConfig(model_path=model_path, trust_checkpoint=trust_checkpoint,
                                                     **settings))
            label = "weights"
        except EncoderError:
            if model_path:
                raise
            enc = build_encoder(model, EncoderConfig(random_init=True, **settings))
            label = "full random"
    dev = enc.device
    gpu = dev.type == "cuda"
    budget, cap = batch_limits(enc, budget_seconds or (None if gpu else CPU_BATCH_SECONDS), max_batch)

    rng = np.random.default_rng(seed + NAIVE_SEED_OFFSET)
    k = min(n_utts, naive_utts or (n_utts if gpu else max(8, n_utts // 4)))
    naive_idx = rng.permutation(n_utts)[:k]
    with enc.naive():
        for i in naive_idx[: 3 if warmup else 1]:
            enc.encode([waves[i]])
        _sync(dev)
        t = time.perf_counter()
        for i in naive_idx:
            enc.encode([waves[i]])
        _sync(dev)
        naive_s = time.perf_counter() - t

    with enc.eager():
        eager = _time_mode(enc, waves, budget, cap, workers, warmup)
    compiled = None
    if enc.compiled:
        compiled = _time_mode(enc, waves, budget, cap, workers, True)  # the warm-up compiles
    prod = compiled if compiled is not None and enc.compiled and enc.compile_pays else eager  # what auto runs
    windows = sum(len(enc.windows(w)) for w in waves)

    audio = sum(lengths) / SR
    naive_audio = sum(lengths[i] for i in naive_idx) / SR
    plan = eager["plan"]
    row = {
        "model": model, "config": label, "device": _device_name(dev), "dtype": enc.dtype_name,
        "frontend": "device" if enc.frontend_on_device else "cpu", "utterances": n_utts, "audio_s": audio,
        "naive_utterances": int(k), "naive_utt_per_s": k / naive_s, "naive_audio_s_per_s": naive_audio / naive_s,
        "eager_audio_s_per_s": audio / eager["e2e_s"], "eager_model_audio_s_per_s": audio / eager["model_s"],
        "compiled_audio_s_per_s": audio / compiled["e2e_s"] if compiled else None,
        "compiled_model_audio_s_per_s": audio / compiled["model_s"] if compiled else None,
        "compiled": prod is compiled,
        "batched_utt_per_s": n_utts / prod["e2e_s"], "batched_audio_s_per_s": audio / prod["e2e_s"],
        "model_alone_audio_s_per_s": audio / prod["model_s"],
        "pipeline_efficiency": prod["model_s"] / prod["e2e_s"],
        "speedup": (audio / prod["e2e_s"]) / (naive_audio / naive_s),
        "compile_s": enc.compile_stats["seconds"] if enc.compile_stats["graphs"] else None,
        "compile_graphs": enc.compile_stats["graphs"], "compile_error": enc.compile_stats["error"],
        "graphs_while_timed": compiled["graphs_while_timed"] if compiled else 0,
        "budget_s": budget, "max_batch": cap, "batches": plan["batches"],
        "padding_pct": 100 * (1 - plan["audio_samples"] / plan["padded_samples"]) if plan["padded_samples"] else None,
        "precision_checks": dict(enc.precision_checks), "tflops": None, "roofline_pct": None,
    }
    if compiled is not None and row["compile_s"]:
        saved = 1 / row["eager_audio_s_per_s"] - 1 / row["compiled_audio_s_per_s"]  # seconds saved per audio-s
        row["compile_break_even_audio_s"] = row["compile_s"] / saved if saved > 0 else None
    if hasattr(enc, "flops_per_window"):
        row["tflops"] = windows * enc.flops_per_window() / prod["e2e_s"] / 1e12
        row["model_alone_tflops"] = windows * enc.flops_per_window() / prod["model_s"] / 1e12
        if gpu:
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
           ("utterances", "utts"), ("audio_s", "audio s"), ("naive_audio_s_per_s", "naive audio-s/s"),
           ("eager_audio_s_per_s", "eager audio-s/s"), ("compiled_audio_s_per_s", "compiled audio-s/s"),
           ("model_alone_audio_s_per_s", "model alone audio-s/s"), ("pipeline_efficiency", "pipeline eff"),
           ("speedup", "speedup"), ("padding_pct", "padding %"), ("compile_s", "compile s"),
           ("tflops", "TFLOP/s"), ("roofline_pct", "% roofline")]


def print_table(rows: list[dict]) -> None:
    """A rich table of :func:`bench_encoder` rows, then how each compile cost is amortised."""
    show("encoder throughput: batched (end to end) vs naive (batch 1, fp32, eager, CPU frontend)", COLUMNS, rows)
    for r in rows:
        print(compile_note(r))


def compile_note(row: dict) -> str:
    """One line: what compiling cost and when it pays for itself (or why nothing was compiled)."""
    head = f"{row['model']}: "
    if row.get("compile_error"):
        return head + f"compile failed, ran eager: {row['compile_error']}"
    if row.get("compiled_audio_s_per_s") is None:
        return head + "not compiled (--compile off, or auto on the CPU)"
    be = row.get("compile_break_even_audio_s")
    pays = (f"it pays for itself after {be:,.0f} s of audio ({be / 3600:.2g} h)" if be
            else "compiled is not faster here, so it never pays for itself")
    return (head + f"compile {row['compile_s']:.1f} s for {row['compile_graphs']} graph(s), paid once per process "
            f"in the untimed warm-up and in no timing above; {pays}; model alone "
            f"{row['eager_model_audio_s_per_s']:.4g} -> {row['compiled_model_audio_s_per_s']:.4g} audio-s/s"
            + ("" if row.get("compiled") else "; the batched columns show eager, the mode --compile auto runs "
               "for this encoder"))


def plan_padding(model: str, manifests: list[str], budgets: tuple[float, ...] = (240.0, 480.0, 960.0),
                 max_batches: tuple[int, ...] = (64, 128, 256), block_size: int = DEFAULT_BLOCK) -> list[dict]:
    """Batch plans on real length mixes without audio: each manifest's lengths (``length``, else
    ``num_frame / sample_rate``) in the store's order (by length when every line has one, else manifest order),
    cut into blocks and batched as ``emocache extract`` does; one row per dataset, order, budget and size cap with
    the batches and the padding fraction (1 - audio / what the batches cost, whole windows for Whisper)."""
    cls = encoder_class(model)
    enc = build_encoder(model, EncoderConfig(device="cpu", random_init=True, config_overrides=overrides(model, "tiny"))
                        ) if cls.has_weights else build_encoder(model, EncoderConfig(device="cpu"))
    rows = []
    for dataset, utts in read_manifests(list(manifests)).items():
        secs = [u.length or (u.num_frame / u.sample_rate if u.num_frame and u.sample_rate else None) for u in utts]
        if any(s is None for s in secs):
            raise EncoderError(f"dataset {dataset}: lines without length or num_frame/sample_rate; the plan needs both")
        samples = [int(s * enc.sample_rate) for s in secs]
        orders = {"manifest": samples, "length": sorted(samples)}
        for order, lengths in orders.items():
            if order == "manifest" and lengths == orders["length"]:
                continue
            for budget in budgets:
                for cap in max_batches:
                    n_batches, audio, padded = 0, 0, 0
                    for k in range(0, len(lengths), block_size):
                        costs = [enc.batch_cost(n) for n in lengths[k:k + block_size]]
                        for group in batches_by_budget(costs, int(budget * enc.sample_rate), cap):
                            n_batches += 1
                            audio += sum(min(lengths[k + j], enc.max_samples or lengths[k + j]) if
                                         enc.config.long_policy == "truncate" else lengths[k + j] for j in group)
                            padded += len(group) * max(costs[j] for j in group)
                    rows.append({"model": model, "dataset": dataset, "utterances": len(lengths),
                                 "audio_h": sum(lengths) / enc.sample_rate / 3600, "order": order,
                                 "budget_s": budget, "max_batch": cap, "batches": n_batches,
                                 "mean_batch": len(lengths) / n_batches, "padding_pct": 100 * (1 - audio / padded)})
    return rows


PLAN_COLUMNS = [("model", "model"), ("dataset", "dataset"), ("utterances", "utts"), ("audio_h", "audio h"),
                ("order", "store order"), ("budget_s", "budget s"), ("max_batch", "max batch"),
                ("batches", "batches"), ("mean_batch", "mean batch"), ("padding_pct", "padding %")]


def print_plan_table(rows: list[dict]) -> None:
    """A rich table of :func:`plan_padding` rows."""
    show("batch plans on the manifests' lengths: padded share of what the batches cost", PLAN_COLUMNS, rows)


def bench_layers(model: str, layers: str = "all", n_utts: int = 200, device: str = "auto",
                 model_path: str | None = None, tiny: bool = False, seed: int = 0,
                 budget_seconds: float | None = None, workers: int = 2, workdir=None, repeats: int = 2,
                 trust_checkpoint: bool = False) -> list[dict]:
    """The extra cost of ``--layers`` over last only: the extraction loop's time on the same encoder and waves
    (pooled only, no frames), and the bytes of a store entry of the pooled vectors with and without the layers.

    One row per setting (last, then ``layers``), each the fastest of ``repeats`` alternating runs; without weights
    the encoder has full-size random weights.
    """
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
        enc = build_encoder(model, dataclasses.replace(cfg, random_init=True))
        label = "full random"
    chosen = enc.layer_ids
    budget, cap = batch_limits(enc, budget_seconds or (None if enc.device.type == "cuda" else CPU_BATCH_SECONDS), None)
    rows = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        run_batched(enc, waves[: min(n_utts, 8)], budget, workers, max_batch=cap)  # warm-up
        times: dict[tuple, list[float]] = {(): [], chosen: []}
        for _ in range(repeats):  # alternating, so drifting load on a shared machine hits both settings alike
            for ids in times:
                enc.layer_ids = ids
                t = time.perf_counter()
                run_batched(enc, waves, budget, workers, max_batch=cap)
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
