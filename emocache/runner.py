"""The block runner both engines use: load a block's audio, encode it in batches, commit it, and keep the books.

A block is the unit of commit, resume and distribution. :func:`run_block` extracts and commits one block; the
serial engine (:mod:`emocache.extract`) runs blocks in order with the next ones loading in threads
(:func:`prefetch`), the dask engine (:mod:`emocache.distributed`) runs them as tasks. Both add each
:class:`BlockResult` to one :class:`ExtractReport`. ``emocache bench`` times the same loop over in-memory audio
(:func:`load_waves`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import torch

from emocache import __version__
from emocache.audio import AudioError, load, probe
from emocache.config import ExtractConfig, parse_part
from emocache.encoders import Encoder, EncoderConfig, UtteranceError, batches_by_budget, build_encoder
from emocache.manifest import Utterance, read_manifests, utterances_sha256
from emocache.store import Entry, open_store
from emocache.verify import verify_entry

T = TypeVar("T")
R = TypeVar("R")


class ExtractError(ValueError):
    """A run that cannot start (e.g. the manifests' audio is not where they say)."""


@dataclass
class BlockResult:
    """What one committed block reports back (small: it travels from dask workers)."""

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
    """Per-dataset counts, errors and timings of one run (either engine)."""

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

    def start(self, dataset: str, n_blocks: int, todo: list[int]) -> None:
        """A dataset's row before its blocks run: blocks already committed count as skipped."""
        self.datasets[dataset] = {"blocks_done": 0, "blocks_skipped": n_blocks - len(todo), "done": 0, "failed": 0}

    def add(self, r: BlockResult) -> None:
        """Count one committed block."""
        s = self.datasets[r.dataset]
        s["blocks_done"] += 1
        s["done"] += r.done
        s["failed"] += r.failed
        self.audio_seconds += r.audio_seconds
        self.warnings.extend(r.warnings)

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
class Loaded:
    """A block ready for the model: waves (None where loading failed), their errors, and prepared batches."""

    waves: list[np.ndarray | None]
    errors: dict[int, str]
    warnings: list[str]
    batches: list[tuple[list[int], dict, list[int]]]
    """(rows, model inputs, owner) per batch; owner[j] is the row of window j."""
    load_seconds: float
    audio_samples: int = 0
    """Samples of the batched waves."""
    padded_samples: int = 0
    """What the batches cost under the budget: per batch, its size times its costliest wave (whole windows for
    Whisper); ``1 - audio_samples / padded_samples`` is the plan's padding fraction."""


def batch_limits(enc: Encoder, batch_seconds: float | None, max_batch: int | None) -> tuple[float, int]:
    """The batch budget (padded seconds) and size cap: as given, else 240 s and 64 on the CPU, the encoder's own
    GPU values on CUDA."""
    gpu = enc.device.type == "cuda"
    return (batch_seconds or (enc.gpu_batch_seconds if gpu else 240.0),
            max_batch or (enc.gpu_max_batch if gpu else 64))


def load_waves(waves: list[np.ndarray | None], enc: Encoder, batch_seconds: float | None, max_batch: int | None,
               errors: dict[int, str] | None = None, warnings: list[str] | None = None,
               t0: float | None = None) -> Loaded:
    """Group a block's waves into length-sorted batches under the padded-audio budget and run the frontend
    (CPU work that runs ahead of the model; on the device frontend only the padding into page-locked memory)."""
    t0 = time.perf_counter() if t0 is None else t0
    errors = errors or {}
    seconds, cap = batch_limits(enc, batch_seconds, max_batch)
    ok = [i for i in range(len(waves)) if i not in errors]
    costs = [enc.batch_cost(waves[i].size) for i in ok]
    batches, audio, padded = [], 0, 0
    for group in batches_by_budget(costs, int(seconds * enc.sample_rate), cap):
        idx = [ok[j] for j in group]
        inputs, owner = enc.prepare([waves[i] for i in idx])
        batches.append((idx, inputs, owner))
        audio += sum(waves[i].size for i in idx)
        padded += len(group) * max(costs[j] for j in group)
    return Loaded(waves, errors, warnings or [], batches, time.perf_counter() - t0, audio, padded)


def load_block(utts: list[Utterance], enc: Encoder, cfg: ExtractConfig) -> Loaded:
    """Decode, resample and check one block's audio, then batch it (:func:`load_waves`)."""
    t0 = time.perf_counter()
    waves, errors, warns = [], {}, []
    for i, u in enumerate(utts):
        w, err, warn = _load_one(u, enc, cfg)
        waves.append(w)
        if err:
            errors[i] = err
        if warn:
            warns.append(warn)
    return load_waves(waves, enc, cfg.batch_seconds, cfg.max_batch, errors, warns, t0)


def encode_block(loaded: Loaded, n: int, enc: Encoder, on_batch: Callable[[int], None] | None = None,
                 frames: bool = True) -> tuple[np.ndarray, list, dict[int, str], np.ndarray | None]:
    """Run the model over a loaded block -> pooled (n, D), frames per row (None without ``frames``), errors per
    row, and the pooled vectors of the chosen layers (n, L, D) (None without ``--layers``).

    One batch is always queued ahead: batch k + 1 is submitted before batch k's results are collected, so the
    device never waits for the host to unpack a batch. A batch that fails is run again one utterance at a time,
    so only the utterance that breaks it is lost. ``on_batch(k)`` is called after each batch of k utterances
    (progress per batch), and per utterance by encoders that report their own progress (:meth:`Encoder.tick`).
    """
    pooled = np.zeros((n, enc.dim), np.float32)
    layers = np.zeros((n, len(enc.layer_ids), enc.dim), np.float32) if enc.layer_ids else None
    out_frames: list = [None] * n
    errors = dict(loaded.errors)

    def collect(idx: list[int], job, ticks) -> None:
        results = None
        if job is not None:
            try:
                out = job.result()
                results = list(zip(idx, out.frames, out.pooled, out.layers if layers is not None else idx))
            except Exception:
                results = None
        if results is None:  # isolate the utterance that breaks the batch
            results = []
            for i in idx:
                try:
                    o = enc.encode([loaded.waves[i]])
                    results.append((i, o.frames[0], o.pooled[0], o.layers[0] if layers is not None else i))
                except Exception as e:
                    errors[i] = f"encoder failed: {type(e).__name__}: {e}"
        for i, f, p, y in results:
            if not np.isfinite(p).all() or (layers is not None and not np.isfinite(y).all()):
                errors[i] = "encoder output has NaN/Inf (try --dtype fp32)"
                continue
            pooled[i] = p
            out_frames[i] = f if frames else None
            if layers is not None:
                layers[i] = y
        if on_batch and ticks.rest():
            on_batch(ticks.rest())

    queued = None
    for idx, inputs, owner in loaded.batches:
        ticks = enc.report_to(on_batch, len(idx))  # per-utterance encoders (eGeMAPS) advance it within the batch
        try:
            job = enc.submit(inputs, owner, frames)
        except Exception:
            job = None
        if queued is not None:
            collect(*queued)
        queued = (idx, job, ticks)
    if queued is not None:
        collect(*queued)
    return pooled, out_frames, errors, layers


def run_block(entry: Entry, b: int, utts: list[Utterance], enc: Encoder, cfg: ExtractConfig,
              loaded: Loaded | None = None, on_batch: Callable[[int], None] | None = None) -> BlockResult:
    """Extract and commit one block (``utts`` is the whole dataset in store order)."""
    t0 = time.perf_counter()
    block_utts = utts[entry.block_slice(b)]
    if loaded is None:
        loaded = load_block(block_utts, enc, cfg)
    pooled, frames, errors, layers = encode_block(loaded, len(block_utts), enc, on_batch, cfg.frames)
    entry.write_block(b, pooled, frames if cfg.frames else None, errors, layers)
    if on_batch and loaded.errors:
        on_batch(len(loaded.errors))  # utterances that never reached a batch
    audio = sum(w.size for w in loaded.waves if w is not None) / enc.sample_rate
    return BlockResult(entry.dataset, b, len(block_utts) - len(errors), len(errors), audio,
                       time.perf_counter() - t0 + loaded.load_seconds,
                       {block_utts[i].key: m for i, m in errors.items()}, loaded.warnings)


def prefetch(fn: Callable[[T], R], items: Iterable[T], ahead: int, pool: ThreadPoolExecutor
             ) -> Iterator[tuple[T, R]]:
    """``(item, fn(item))`` in order, with up to ``ahead`` items being prepared in ``pool`` meanwhile."""
    items = list(items)
    ahead = max(1, ahead)
    futures = {j: pool.submit(fn, items[j]) for j in range(min(ahead, len(items)))}
    for j, item in enumerate(items):
        if j + ahead < len(items):
            futures[j + ahead] = pool.submit(fn, items[j + ahead])
        yield item, futures.pop(j).result()


def store_order(utts: list[Utterance]) -> tuple[list[Utterance], str]:
    """Rows sorted by the manifest's length (stable) when every line has one, so blocks batch with little
    padding; returns the rows and the order's name for provenance."""
    if all(u.length for u in utts):
        return sorted(utts, key=lambda u: u.length), "manifest length"
    return list(utts), "manifest"


def check_audio_found(dataset: str, utts: list[Utterance]) -> None:
    """Stop before running a dataset whose first block's files are all missing, folders included: the paths
    are wrong (usually --audio-root), and recording every utterance as failed would only hide that."""
    local = [u.wav for u in utts if "://" not in u.wav]
    if not local or len(local) < len(utts):
        return
    if any(os.path.exists(p) or os.path.isdir(os.path.dirname(p) or ".") for p in local):
        return
    raise ExtractError(f"dataset {dataset}: none of the {len(local)} audio files of the first block exists, nor "
                       f"their folders (e.g. {local[0]}); point --audio-root PREFIX=DIR at where the audio is "
                       "(it replaces the manifests' path prefix PREFIX with DIR)")


def prepare_entries(cfg: ExtractConfig, enc: Encoder) -> list[tuple[Entry, list[Utterance], list[int]]]:
    """Create or reopen each dataset's entry; return (entry, utterances in store order, blocks to do)."""
    by_ds = read_manifests(list(cfg.manifests), list(cfg.audio_root))
    store = open_store(cfg.store, mode="a", storage_options=cfg.storage_options)
    part, parts = parse_part(cfg.part)
    jobs = []
    for ds, utts in by_ds.items():
        prov = {**enc.provenance(), "package": f"emocache {__version__}", "manifest_sha256": utterances_sha256(utts),
                "frames_dtype": "float16 (float32 for blocks that overflow)", "torch": torch.__version__}
        utts, prov["order"] = store_order(utts)
        entry = store.create_entry(enc.name, ds, [u.key for u in utts], [u.emo for u in utts], enc.dim,
                                   enc.frame_dim, prov, has_frames=cfg.frames, block_size=cfg.block_size,
                                   layers=enc.layer_ids)
        if cfg.redo_failed:
            # uncommit blocks failing verification (a corrupted index chunk is rewritten as pending)
            entry.reset_blocks([b for b in verify_entry(entry).bad_blocks if b % parts == part])
        states = entry.block_states()
        todo = [b for b, s in enumerate(states) if not s.committed or (cfg.redo_failed and s.failed)]
        todo = [b for b in todo if b % parts == part]
        if todo:
            check_audio_found(ds, utts[entry.block_slice(todo[0])])
        jobs.append((entry, utts, todo))
    return jobs


def check_store_target(store: str) -> None:
    """A local ``--store`` must be a folder (new or existing), not a file."""
    if "://" not in store and os.path.isfile(store):
        kind = "a zip (read-only; extract into a folder, then `emocache merge`)" if store.endswith(".zip") \
            else "a file"
        raise ExtractError(f"--store {store} is {kind}; give a folder path for a new or existing store")
