"""dask.distributed engine: blocks of utterances as tasks, one encoder per worker, results written by the workers.

The client comes from :func:`emocache.runtime.client_for` (``local:N`` or a scheduler address); each task runs
:func:`emocache.runner.run_block`, the block runner the serial engine uses, and its :class:`BlockResult` is
added to the same :class:`ExtractReport`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace

from emocache.config import ExtractConfig
from emocache.manifest import Utterance
from emocache.runner import BlockResult, ExtractReport, get_encoder, prepare_entries, run_block
from emocache.runtime import SchedulerError, client_for, progress_bar
from emocache.store import Entry, open_store

__all__ = ["SchedulerError", "client_for", "extract_distributed", "gpu_resources"]


def gpu_resources(client, cfg: ExtractConfig) -> dict | None:
    """{"GPU": 1} when the run uses CUDA and the workers declare GPUs (one task per GPU at a time)."""
    if cfg.device == "cpu":
        return None
    has = any("GPU" in (w.get("resources") or {}) for w in client.scheduler_info()["workers"].values())
    if cfg.device.startswith("cuda") and not has:
        raise SchedulerError("--device cuda, but no worker declares a GPU; start workers with "
                             "`dask worker ADDRESS --nthreads 1 --resources GPU=1` (one per GPU)")
    return {"GPU": 1} if has else None


# -- worker side: module state lives once per worker process -------------------------------------------------
_ENTRIES: dict[tuple, Entry] = {}
"""Entries opened by this worker for the current run only (a long-lived worker never reuses stale metadata)."""


def _prepare(cfg: ExtractConfig) -> tuple[str, list[tuple[str, int, list[Utterance], list[int], int]]]:
    """Create or reopen the entries (on a worker, which keeps the encoder): model name and per dataset
    (dataset, blocks in the entry, utterances in store order, blocks to do, utterances in them)."""
    enc = get_encoder(cfg.model, cfg.encoder_config)
    jobs = prepare_entries(cfg, enc)
    return enc.name, [(e.dataset, e.n_blocks, utts, todo, sum(len(utts[e.block_slice(b)]) for b in todo))
                      for e, utts, todo in jobs]


def _entry(cfg: ExtractConfig, run: str, model: str, dataset: str) -> Entry:
    key = (run, cfg.store, model, dataset)
    if key not in _ENTRIES:
        if any(k[0] != run for k in _ENTRIES):
            _ENTRIES.clear()
        _ENTRIES[key] = open_store(cfg.store, mode="a", storage_options=cfg.storage_options).entry(model, dataset)
    return _ENTRIES[key]


def _run(cfg: ExtractConfig, run: str, prepared, ds_index: int, b: int) -> BlockResult:
    """Extract and commit one block on a worker; only small stats travel back."""
    model, jobs = prepared
    dataset, _, utts, _, _ = jobs[ds_index]
    entry = _entry(cfg, run, model, dataset)
    return run_block(entry, b, utts, get_encoder(cfg.model, cfg.encoder_config), cfg)


# -- client side -----------------------------------------------------------------------------------------------
def extract_distributed(cfg: ExtractConfig, progress: bool = True) -> ExtractReport:
    """:func:`emocache.extract.extract` with blocks as dask tasks; the store equals a single-process run's."""
    from distributed import as_completed

    t0 = time.perf_counter()
    local = replace(cfg, scheduler=None)
    with client_for(cfg.scheduler, gpus=cfg.device != "cpu") as client:
        res = gpu_resources(client, cfg)
        prepared = client.submit(_prepare, local, resources=res, pure=False)
        model, jobs = prepared.result()
        report = ExtractReport(cfg.model, cfg.store, load_seconds=time.perf_counter() - t0)
        t0 = time.perf_counter()
        futures, run = [], uuid.uuid4().hex
        for i, (dataset, n_blocks, _, todo, _) in enumerate(jobs):
            report.start(dataset, n_blocks, todo)
            futures += [client.submit(_run, local, run, prepared, i, b, resources=res, pure=False,
                                      key=f"emocache-block-{dataset}-{b}-{run}") for b in todo]
        with progress_bar(progress) as bar:
            task = bar.add_task(f"{cfg.model} on {cfg.scheduler}", total=sum(job[4] for job in jobs))
            for fut in as_completed(futures):
                r: BlockResult = fut.result()
                report.add(r)
                bar.update(task, advance=r.done + r.failed)
        del prepared
    store = open_store(cfg.store, storage_options=cfg.storage_options)
    for dataset, *_ in jobs:
        report.errors[dataset] = store.entry(model, dataset).errors()
    report.seconds = time.perf_counter() - t0
    return report
