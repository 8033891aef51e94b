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
