"""dask.distributed engine: blocks of utterances as tasks, one encoder per worker, results written by the workers.

``client_for(scheduler)`` is the reusable part (trainer grids use it too): ``local:N`` starts a LocalCluster of N
single-threaded worker processes (on a GPU machine: one worker per GPU, pinned with CUDA_VISIBLE_DEVICES and
declaring the resource ``GPU=1``); an address (``tcp://host:8786``) connects to a running scheduler.
"""

from __future__ import annotations

import os
import time
import uuid
from contextlib import contextmanager
from dataclasses import replace

from emocache.extract import BlockResult, ExtractConfig, ExtractReport, get_encoder, prepare_entries, run_block
from emocache.manifest import Utterance
from emocache.progress import progress_bar
from emocache.store import Entry, open_store


class SchedulerError(ValueError):
    """A --scheduler value that is neither local:N nor a reachable scheduler address."""


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0


@contextmanager
def client_for(scheduler: str, gpus: bool | None = None, timeout: str = "30s"):
    """A dask Client for ``local:N`` or a scheduler address, closed (and a local cluster stopped) on exit.

    ``gpus``: start GPU workers for ``local:N`` (None: when CUDA devices are visible). N is then capped at the
    number of GPUs, one worker per GPU.
    """
    from distributed import Client, LocalCluster

    if scheduler == "local" or scheduler.startswith("local:"):
        try:
            n = int(scheduler.partition(":")[2] or os.cpu_count() or 1)
        except ValueError:
            raise SchedulerError(f"--scheduler {scheduler!r}: expected local:N (N worker processes)") from None
        if n < 1:
            raise SchedulerError(f"--scheduler {scheduler!r}: N must be at least 1")
        n_gpu = _gpu_count() if gpus is not False else 0
        if n_gpu:
            cluster = _gpu_cluster(min(n, n_gpu))
        else:
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
        try:
            with Client(cluster) as client:
                yield client
        finally:
            cluster.close()
        return
    if "://" not in scheduler:
        raise SchedulerError(f"--scheduler {scheduler!r}: expected local:N or an address like tcp://HOST:8786")
    try:
        client = Client(scheduler, timeout=timeout)
    except OSError as e:
        raise SchedulerError(f"--scheduler {scheduler}: cannot reach the scheduler ({e}); is `dask scheduler` "
                             "running there?") from None
    with client:
        yield client


def _gpu_cluster(n: int):
    """n worker processes, worker i sees only GPU i and declares resources {"GPU": 1}."""
    from distributed import Nanny, Scheduler, SpecCluster

    workers = {f"gpu{i}": {"cls": Nanny, "options": {"nthreads": 1, "resources": {"GPU": 1},
                                                     "env": {"CUDA_VISIBLE_DEVICES": str(i)}}}
               for i in range(n)}
    return SpecCluster(workers=workers, scheduler={"cls": Scheduler, "options": {"dashboard_address": None}})


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


def _prepare(cfg: ExtractConfig) -> tuple[str, list[tuple[str, int, list[Utterance], list[int]]]]:
    """Create or reopen the entries (on a worker, which keeps the encoder): model name and per dataset
    (dataset, blocks in the entry, utterances in store order, blocks to do)."""
    enc = get_encoder(cfg.model, cfg.encoder_config)
    jobs = prepare_entries(cfg, enc)
    return enc.name, [(e.dataset, e.n_blocks, utts, todo) for e, utts, todo in jobs]


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
    dataset, _, utts, _ = jobs[ds_index]
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
        for i, (dataset, n_blocks, utts, todo) in enumerate(jobs):
            report.datasets[dataset] = {"blocks_done": 0, "blocks_skipped": n_blocks - len(todo), "done": 0,
                                        "failed": 0}
            futures += [client.submit(_run, local, run, prepared, i, b, resources=res, pure=False,
                                      key=f"emocache-block-{dataset}-{b}-{run}") for b in todo]
        with progress_bar(progress) as bar:
            task = bar.add_task(f"{cfg.model} on {cfg.scheduler}", total=len(futures) or 1)
            for fut in as_completed(futures):
                r: BlockResult = fut.result()
                s = report.datasets[r.dataset]
                s["blocks_done"] += 1
                s["done"] += r.done
                s["failed"] += r.failed
                report.audio_seconds += r.audio_seconds
                report.warnings.extend(r.warnings)
                bar.update(task, advance=1)
        del prepared
    store = open_store(cfg.store, storage_options=cfg.storage_options)
    for dataset, _, _, _ in jobs:
        report.errors[dataset] = store.entry(model, dataset).errors()
    report.seconds = time.perf_counter() - t0
    return report
