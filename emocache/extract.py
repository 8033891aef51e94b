"""Extraction: manifests -> audio -> encoder batches -> store blocks, resumable block by block.

:func:`extract` runs the blocks in this process (the serial engine), or hands them to the dask engine
(:mod:`emocache.distributed`) when ``scheduler`` is set. Both run :func:`emocache.runner.run_block`.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from emocache.config import ExtractConfig
from emocache.distributed import extract_distributed
from emocache.runner import (ExtractReport, check_store_target, get_encoder, load_block, prefetch, prepare_entries,
                             run_block)
from emocache.runtime import progress_bar

__all__ = ["ExtractConfig", "ExtractReport", "extract"]


def extract(cfg: ExtractConfig, progress: bool = True) -> ExtractReport:
    """Extract every pending block of every dataset in the manifests; returns the report (never raises per utterance)."""
    check_store_target(cfg.store)
    if cfg.scheduler:
        return extract_distributed(cfg, progress=progress)
    t0 = time.perf_counter()
    enc = get_encoder(cfg.model, cfg.encoder_config)
    report = ExtractReport(cfg.model, cfg.store, load_seconds=time.perf_counter() - t0)
    t0 = time.perf_counter()
    jobs = prepare_entries(cfg, enc)
    total = sum(len(utts[entry.block_slice(b)]) for entry, utts, todo in jobs for b in todo)

    with progress_bar(progress) as bar, ThreadPoolExecutor(cfg.loader_threads) as pool:
        task = bar.add_task(f"{cfg.model}", total=total)

        def advance(k: int) -> None:
            bar.update(task, advance=k)

        for entry, utts, todo in jobs:
            report.start(entry.dataset, entry.n_blocks, todo)

            def load(b: int, entry=entry, utts=utts):
                return load_block(utts[entry.block_slice(b)], enc, cfg)

            for b, loaded in prefetch(load, todo, cfg.loader_threads, pool):
                report.add(run_block(entry, b, utts, enc, cfg, loaded=loaded, on_batch=advance))
            report.errors[entry.dataset] = entry.errors()
    report.seconds = time.perf_counter() - t0
    return report
