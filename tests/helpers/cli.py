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
import atexit, sys

def _peak():  # this process's own high-water mark: exec starts a new address space, so it is the child's alone
    hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    sys.stderr.write(f"\\npeak_kb {hwm.split()[1]}\\n")

atexit.register(_peak)
from emocache.cli import app
sys.argv = ["emocache"] + sys.argv[1:]
app()
"""


def run_emocache_peak(*args, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    """``emocache ARGS`` in a child Python process (as :func:`run_emocache`) and its peak resident memory in MB,
    read from the child's ``VmHWM`` at exit (a child's ``ru_maxrss`` can carry the forking parent's peak)."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, *[str(a) for a in args]], capture_output=True,
                       text=True, timeout=timeout, env=env)
    peak = [line for line in p.stderr.splitlines() if line.startswith("peak_kb ")]
    assert peak, f"no peak reported (killed?): {p.stderr[-500:]}"
    return p, int(peak[-1].split()[1]) / 1024
