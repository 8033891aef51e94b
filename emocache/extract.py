"""Extraction: manifests -> audio -> encoder batches -> store blocks, resumable block by block."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from emocache import __version__
from emocache.audio import AudioError, load, probe
from emocache.encoders import Encoder, EncoderConfig, UtteranceError, batches_by_budget, build_encoder
from emocache.manifest import Utterance, read_manifests, utterances_sha256
from emocache.progress import progress_bar
from emocache.store import DEFAULT_BLOCK, Entry, open_store


@dataclass(frozen=True)
class ExtractConfig:
    """Everything one ``emocache extract`` run needs."""

    model: str
    """Registered model name (``emocache models`` lists them)."""
    manifests: tuple[str, ...]
    """EmoBox jsonl files or dataset folders."""
    store: str
    """Store URL: a local path, s3://..., gs://..."""
    audio_root: tuple[str, ...] = ()
    """PREFIX=DIR remaps applied to the manifests' wav paths."""
    model_path: str | None = None
    """Directory with the model's weights (else HF / ModelScope caches)."""
    device: str = "auto"
    """auto | cpu | cuda | cuda:i."""
    dtype: str = "auto"
    """auto | fp32 | bf16 | fp16."""
    frames: bool = True
    """Store frame-level features besides pooled vectors."""
    block_size: int = DEFAULT_BLOCK
    """Utterances per block: the unit of commit, resume and distribution."""
    batch_seconds: float = 240.0
    """Padded audio seconds per model batch (length-sorted batches under this budget)."""
    max_batch: int = 64
    """Most utterances per model batch."""
    long_policy: str = "window"
    """Inputs longer than the encoder's window: window | truncate | skip."""
    max_audio_seconds: float = 600.0
    """Longer files are recorded as failed without decoding (guards memory); raise it to keep them."""
    loader_threads: int = 2
    """Threads decoding, resampling and running frontends ahead of the model."""
    redo_failed: bool = False
    """Redo blocks holding failed utterances or failing verification."""
    scheduler: str | None = None
    """dask.distributed scheduler address or local:N; None runs in this process."""
    part: str | None = None
    """I/N: run only blocks b with b % N == I (independent writer processes sharing one store)."""
    storage_options: dict = field(default_factory=dict)
    """fsspec options for remote stores (else $EMOCACHE_STORAGE_OPTIONS, else the filesystem's defaults)."""
    encoder_overrides: dict = field(default_factory=dict)
    """Encoder config overrides (tests build tiny random models this way)."""

    @property
    def encoder_config(self) -> EncoderConfig:
        return EncoderConfig(model_path=self.model_path, device=self.device, dtype=self.dtype,
                             long_policy=self.long_policy, config_overrides=dict(self.encoder_overrides))


@dataclass
class BlockResult:
    dataset: str
    block: int
    done: int
    failed: int
    audio_seconds: float
    seconds: float
    errors: dict[str, str]
    warnings: list[str]


@dataclass
class ExtractReport:
    model: str
    store: str
    datasets: dict[str, dict] = field(default_factory=dict)
    errors: dict[str, dict[str, str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    """Wall time of the extraction itself (blocks read, encoded and written)."""
    load_seconds: float = 0.0
    """Wall time to build and load the encoder."""
    audio_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not any(self.errors.values())

    @property
    def n_failed(self) -> int:
        return sum(len(v) for v in self.errors.values())


_ENCODERS: dict[tuple, Encoder] = {}


def get_encoder(model: str, config: EncoderConfig) -> Encoder:
    """One encoder per (model, config) per process (dask workers load it once)."""
    key = (model, repr(config))
    if key not in _ENCODERS:
        _ENCODERS[key] = build_encoder(model, config)
    return _ENCODERS[key]


def _load_one(u: Utterance, enc: Encoder, cfg: ExtractConfig) -> tuple[np.ndarray | None, str | None, str | None]:
    """(wave, error, warning) for one utterance."""
    try:
        info = probe(u.wav)
        if info.sample_rate and info.frames / info.sample_rate > cfg.max_audio_seconds:
            raise UtteranceError(f"{info.frames / info.sample_rate:.0f} s long, over --max-audio-seconds "
                                 f"{cfg.max_audio_seconds:g}; raise the limit to extract it")
        w = load(u.wav, channel=u.channel, target_sr=enc.sample_rate, max_seconds=cfg.max_audio_seconds)
        enc.check(w)
    except (AudioError, UtteranceError) as e:
        return None, str(e), None
    except Exception as e:  # a decoder or resampler crash on one file must not end the run
        return None, f"{u.wav}: could not load ({type(e).__name__}: {e})", None
    warn = None
    claimed = u.length or (u.num_frame / u.sample_rate if u.num_frame and u.sample_rate else None)
    if claimed:
        actual = info.frames / info.sample_rate
        if abs(actual - claimed) > 0.05 * claimed:
            warn = f"{u.key}: file is {actual:.2f} s, the manifest says {claimed:.2f} s (the file wins)"
    return w, None, warn


@dataclass
class _Loaded:
    waves: list[np.ndarray | None]
    errors: dict[int, str]
    warnings: list[str]
    batches: list[tuple[list[int], dict, list[int]]]
    load_seconds: float


def load_block(utts: list[Utterance], enc: Encoder, cfg: ExtractConfig) -> _Loaded:
    """Decode, resample, check and run the frontend for one block (CPU work, runs ahead of the model)."""
    t0 = time.perf_counter()
    waves, errors, warns = [], {}, []
    for i, u in enumerate(utts):
        w, err, warn = _load_one(u, enc, cfg)
        waves.append(w)
        if err:
            errors[i] = err
        if warn:
            warns.append(warn)
    ok = [i for i in range(len(utts)) if i not in errors]
    budget = int(cfg.batch_seconds * enc.sample_rate)
    lengths = [enc.batch_cost(waves[i].size) for i in ok]
    batches = []
    for group in batches_by_budget(lengths, budget, cfg.max_batch):
        idx = [ok[j] for j in group]
        inputs, owner = enc.prepare([waves[i] for i in idx])  # neural encoders page-lock their inputs here
        batches.append((idx, inputs, owner))
    return _Loaded(waves, errors, warns, batches, time.perf_counter() - t0)


def encode_block(loaded: _Loaded, n: int, enc: Encoder) -> tuple[np.ndarray, list, dict[int, str]]:
    """Run the model over a loaded block -> pooled (n, D), frames per row, errors per row."""
    pooled = np.zeros((n, enc.dim), np.float32)
    frames: list = [None] * n
    errors = dict(loaded.errors)
    for idx, inputs, owner in loaded.batches:
        try:
            out = enc.run(inputs, owner)
            results = list(zip(idx, out.frames, out.pooled))
        except Exception:  # isolate the utterance that breaks the batch
            results = []
            for i in idx:
                try:
                    o = enc.encode([loaded.waves[i]])
                    results.append((i, o.frames[0], o.pooled[0]))
                except Exception as e:
                    errors[i] = f"encoder failed: {type(e).__name__}: {e}"
        for i, f, p in results:
            if not np.isfinite(p).all():
                errors[i] = "encoder output has NaN/Inf (try --dtype fp32)"
                continue
            pooled[i] = p
            frames[i] = f
    return pooled, frames, errors


def run_block(entry: Entry, b: int, utts: list[Utterance], enc: Encoder, cfg: ExtractConfig,
              loaded: _Loaded | None = None) -> BlockResult:
    """Extract and commit one block."""
    t0 = time.perf_counter()
    sl = entry.block_slice(b)
    block_utts = utts[sl]
    if loaded is None:
        loaded = load_block(block_utts, enc, cfg)
    pooled, frames, errors = encode_block(loaded, len(block_utts), enc)
    entry.write_block(b, pooled, frames if cfg.frames else None, errors)
    audio = sum(w.size for w in loaded.waves if w is not None) / enc.sample_rate
    return BlockResult(entry.dataset, b, len(block_utts) - len(errors), len(errors), audio,
                       time.perf_counter() - t0 + loaded.load_seconds,
                       {block_utts[i].key: m for i, m in errors.items()}, loaded.warnings)


def store_order(utts: list[Utterance]) -> tuple[list[Utterance], str]:
    """Rows sorted by the manifest's length (stable) when every line has one, so blocks batch with little
    padding; returns the rows and the order's name for provenance."""
    if all(u.length for u in utts):
        return sorted(utts, key=lambda u: u.length), "manifest length"
    return list(utts), "manifest"


def parse_part(part: str | None) -> tuple[int, int]:
    """'I/N' -> (I, N); None -> (0, 1)."""
    if not part:
        return 0, 1
    try:
        i, n = (int(v) for v in part.split("/"))
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise ValueError(f"--part {part!r}: expected I/N with 0 <= I < N, e.g. 0/4")
    return i, n


def prepare_entries(cfg: ExtractConfig, enc: Encoder) -> list[tuple[Entry, list[Utterance], list[int]]]:
    """Create or reopen each dataset's entry; return (entry, utterances, blocks to do)."""
    by_ds = read_manifests(list(cfg.manifests), list(cfg.audio_root))
    store = open_store(cfg.store, mode="a", storage_options=cfg.storage_options)
    part, parts = parse_part(cfg.part)
    jobs = []
    for ds, utts in by_ds.items():
        prov = {**enc.provenance(), "package": f"emocache {__version__}", "manifest_sha256": utterances_sha256(utts),
                "frames_dtype": "float16 (float32 for blocks that overflow)", "torch": torch.__version__}
        utts, prov["order"] = store_order(utts)
        entry = store.create_entry(enc.name, ds, [u.key for u in utts], [u.emo for u in utts], enc.dim,
                                   enc.frame_dim, prov, has_frames=cfg.frames, block_size=cfg.block_size)
        if cfg.redo_failed:
            from emocache.verify import verify_entry

            # uncommit blocks failing verification (a corrupted index chunk is rewritten as pending)
            entry.reset_blocks([b for b in verify_entry(entry).bad_blocks if b % parts == part])
        states = entry.block_states()
        todo = [b for b, s in enumerate(states) if not s.committed or (cfg.redo_failed and s.failed)]
        jobs.append((entry, utts, [b for b in todo if b % parts == part]))
    return jobs


def extract(cfg: ExtractConfig, progress: bool = True) -> ExtractReport:
    """Extract every pending block of every dataset in the manifests; returns the report (never raises per utterance)."""
    if cfg.scheduler:
        from emocache.distributed import extract_distributed

        return extract_distributed(cfg, progress=progress)
    t0 = time.perf_counter()
    enc = get_encoder(cfg.model, cfg.encoder_config)
    report = ExtractReport(cfg.model, cfg.store, load_seconds=time.perf_counter() - t0)
    t0 = time.perf_counter()
    jobs = prepare_entries(cfg, enc)
    total = sum(entry.block_slice(b).stop - entry.block_slice(b).start for entry, _, todo in jobs for b in todo)

    with progress_bar(progress) as bar, ThreadPoolExecutor(max(1, cfg.loader_threads)) as pool:
        task = bar.add_task(f"{cfg.model}", total=total)
        for entry, utts, todo in jobs:
            ds_stats = report.datasets.setdefault(entry.dataset, {"blocks_done": 0, "blocks_skipped":
                                                                  entry.n_blocks - len(todo), "done": 0, "failed": 0})
            futures = {}
            ahead = max(1, cfg.loader_threads)
            for b in todo[:ahead]:
                futures[b] = pool.submit(load_block, utts[entry.block_slice(b)], enc, cfg)
            for j, b in enumerate(todo):
                nxt = j + ahead
                if nxt < len(todo):
                    nb = todo[nxt]
                    futures[nb] = pool.submit(load_block, utts[entry.block_slice(nb)], enc, cfg)
                res = run_block(entry, b, utts, enc, cfg, loaded=futures.pop(b).result())
                ds_stats["blocks_done"] += 1
                ds_stats["done"] += res.done
                ds_stats["failed"] += res.failed
                report.audio_seconds += res.audio_seconds
                report.warnings.extend(res.warnings)
                bar.update(task, advance=res.done + res.failed)
            report.errors[entry.dataset] = entry.errors()
    report.seconds = time.perf_counter() - t0
    return report

