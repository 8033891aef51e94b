"""`emocache info`: readable at any width (piped, 80 columns or narrower) and as JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from emocache.store import write_arrays

MODEL, DATASET = "emotion2vec-plus-large", "iemocap-session-five"


def _store(tmp_path):
    url = tmp_path / "s"
    write_arrays(url, MODEL, DATASET, [f"k{i}" for i in range(6)], ["ang"] * 6, np.ones((6, 4), np.float32),
                 [np.ones((3, 4), np.float32)] * 6, provenance={"weights": "emotion2vec/emotion2vec_plus_large@abc"},
                 block_size=4)
    return url


def test_info_is_readable_piped_at_80_columns(tmp_path):
    url = _store(tmp_path)
    env = {**os.environ, "COLUMNS": "80", "PYTHONPATH": os.getcwd()}
    p = subprocess.run([sys.executable, "-m", "emocache.cli", "info", str(url)], capture_output=True, text=True,
                       env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    out = p.stdout + p.stderr
    assert "…" not in out and f"{MODEL}/{DATASET}" in out
    assert "utterances  6: 6 done, 0 failed, 0 pending (2 blocks)" in out
    assert "weights     emotion2vec/emotion2vec_plus_large@abc" in out
    assert max(len(line) for line in out.splitlines() if "provenance" not in line) <= 100


def test_info_json(tmp_path, cli):
    url = _store(tmp_path)
    code, out = cli("info", url, "--json")
    (row,) = json.loads(out)
    assert code == 0 and (row["model"], row["dataset"], row["done"], row["blocks"]) == (MODEL, DATASET, 6, 2)
