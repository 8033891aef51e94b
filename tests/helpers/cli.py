"""The ``emocache`` console script in a subprocess (smoke runs, kills, exit codes as a user sees them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EMOCACHE_BIN = Path(sys.executable).with_name("emocache")


def run_emocache(*args, timeout: float = 120, cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    """``emocache ARGS`` with a wide, colourless console and one OpenMP thread."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(EMOCACHE_BIN), *[str(a) for a in args]], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd)


PEAK_WRAPPER = """
import atexit, resource, runpy, sys

def peak_kb():  # VmHWM: this process image's own peak (ru_maxrss would include the parent's at fork)
    try:
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

atexit.register(lambda: sys.stderr.write(f"\\nPEAK_RSS_KB {peak_kb()}\\n"))
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def run_measured(module: str, *args, timeout: float = 120,
                 cwd: str | Path | None = None) -> tuple[subprocess.CompletedProcess, float]:
    """``python -m MODULE ARGS`` (``emocache.cli``, ``trainer.cli``) in a subprocess, as ``run_emocache`` does;
    returns the process (its stderr without the measurement line) and the child's peak resident memory in MB."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, module, *[str(a) for a in args]], capture_output=True,
                       text=True, timeout=timeout, env=env, cwd=cwd)
    lines = p.stderr.rstrip("\n").splitlines()
    peak = float(lines[-1].split()[1]) / 1024 if lines and lines[-1].startswith("PEAK_RSS_KB") else float("nan")
    p.stderr = "\n".join(ln for ln in lines if not ln.startswith("PEAK_RSS_KB")).strip("\n") + "\n"
    return p, peak


def run_emocache_peak(*args, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    """``emocache ARGS`` in a child Python process (as :func:`run_emocache`) and its peak resident memory in MB
    (:func:`run_measured` on ``emocache.cli``); fails when the child reported none (killed)."""
    p, peak = run_measured("emocache.cli", *args, timeout=timeout)
    assert peak == peak, f"no peak reported (killed?): {p.stderr[-500:]}"
    return p, peak
