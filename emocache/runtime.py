"""Run-time helpers both packages use: the console, progress reporting, tables (rich and markdown) and the dask
client.

- :func:`progress_bar`: in a terminal a rich bar; without one (nohup, SLURM, CI logs) a first plain line after
  :data:`PLAIN_FIRST_SECONDS`, then one every :data:`PLAIN_EVERY_SECONDS` seconds and one at the end:
  ``done/total (pct), rate, ETA``.
- :func:`client_for`: a dask ``Client`` for ``local:N`` or a scheduler address. ``local:N`` starts N
  single-threaded worker processes; on a GPU machine one worker per GPU, through ``dask_cuda.LocalCUDACluster``
  when dask-cuda is installed (it pins each worker to its GPU and sets up its CUDA context), else through worker
  processes pinned with ``CUDA_VISIBLE_DEVICES``. GPU workers declare the resource ``GPU=1``.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

console = Console(stderr=True)
PLAIN_EVERY_SECONDS = 30.0
"""Seconds between plain progress lines when stderr is not a terminal (our choice: a log line per half minute)."""
PLAIN_FIRST_SECONDS = 5.0
"""Seconds before the first plain progress line (our choice: a log shows a run has started within 10 s)."""


class PlainProgress:
    """The part of rich's Progress API the loops use, printing plain lines for logs instead of a live bar."""

    def __init__(self, every: float = PLAIN_EVERY_SECONDS, stream=None, first: float = PLAIN_FIRST_SECONDS):
        self.every = every
        self.first = min(first, every)
        self.stream = stream
        self.tasks: dict[int, dict] = {}

    def add_task(self, description: str, total: float | None = None) -> int:
        now = time.monotonic()
        task = len(self.tasks)
        self.tasks[task] = {"description": description, "total": total or 0, "done": 0, "start": now,
                            "printed": now, "lines": 0}
        return task

    def update(self, task: int, advance: float = 0, total: float | None = None, **_) -> None:
        t = self.tasks[task]
        t["done"] += advance
        if total is not None:
            t["total"] = total
        now = time.monotonic()
        finished = t["total"] and t["done"] >= t["total"]
        if finished or now - t["printed"] >= (self.every if t["lines"] else self.first):
            self._line(t, now)
            t["printed"] = now if not finished else float("inf")
            t["lines"] += 1

    def advance(self, task: int, advance: float = 1) -> None:
        self.update(task, advance=advance)

    def _line(self, t: dict, now: float) -> None:
        elapsed = max(now - t["start"], 1e-9)
        rate = t["done"] / elapsed
        total = t["total"]
        pct = f" ({100 * t['done'] / total:.0f}%)" if total else ""
        left = (total - t["done"]) / rate if total and rate > 0 else None
        eta = f", ETA {_clock(left)}" if left is not None and t["done"] < total else f", took {_clock(elapsed)}"
        print(f"{t['description']}: {t['done']:g}/{total:g}{pct}, {rate:.1f}/s{eta}",
              file=self.stream or sys.stderr, flush=True)


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


@contextmanager
def progress_bar(enabled: bool = True):
    """A rich Progress (counter, elapsed, remaining) in a terminal, :class:`PlainProgress` lines otherwise, or a
    silent one when disabled."""
    if enabled and not console.is_terminal:
        yield PlainProgress(PLAIN_EVERY_SECONDS, first=PLAIN_FIRST_SECONDS)
        return
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not enabled)
    with bar:
        yield bar


def fmt_number(v) -> str:
    """Benchmark cells: three significant digits, whole numbers from 100, ``-`` for missing."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def markdown_table(header: list[str], rows: list[list], align: str = "") -> str:
    """A GitHub markdown table, the one renderer of both packages: ``header``, then ``rows`` (cells as ``str``),
    ``align`` one letter per column, 'l' or 'r' (default: the first column left, the others right)."""
    align = align or "l" + "r" * (len(header) - 1)
    sep = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
    lines = ["| " + " | ".join(map(str, header)) + " |", sep]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def print_table(title: str, columns: list[tuple[str, str]], rows: list[dict], min_width: int = 200) -> None:
    """Rows as a rich table on stdout, ``columns`` as (key, heading), at least ``min_width`` wide."""
    from rich.table import Table

    table = Table(title=title)
    for _, head in columns:
        table.add_column(head)
    for r in rows:
        table.add_row(*[fmt_number(r.get(k)) for k, _ in columns])
    Console(width=max(Console().width, min_width)).print(table)


class SchedulerError(ValueError):
    """A --scheduler value that is neither local:N nor a reachable scheduler address."""


def gpu_count() -> int:
    """CUDA devices torch sees (0 without torch or CUDA)."""
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
        n_gpu = gpu_count() if gpus is not False else 0
        if n_gpu:
            cluster = gpu_cluster(min(n, n_gpu))
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


def gpu_cluster(n: int):
    """n single-threaded workers, worker i on GPU i, each declaring resources {"GPU": 1}.

    ``dask_cuda.LocalCUDACluster`` when installed; else worker processes pinned with ``CUDA_VISIBLE_DEVICES``.
    """
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        LocalCUDACluster = None
    if LocalCUDACluster is not None:
        return LocalCUDACluster(CUDA_VISIBLE_DEVICES=list(range(n)), n_workers=n, threads_per_worker=1,
                                resources={"GPU": 1}, dashboard_address=None)
    from distributed import Nanny, Scheduler, SpecCluster

    workers = {f"gpu{i}": {"cls": Nanny, "options": {"nthreads": 1, "resources": {"GPU": 1},
                                                     "env": {"CUDA_VISIBLE_DEVICES": str(i)}}}
               for i in range(n)}
    return SpecCluster(workers=workers, scheduler={"cls": Scheduler, "options": {"dashboard_address": None}})
