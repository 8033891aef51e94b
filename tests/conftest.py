"""Shared fixtures: audio made by the tests (never the repository-external data folder), a tiny EmoBox-format corpus, CLI runners.

Reusable by every test module:

- ``write_wav(path, x, sr=16000, subtype="PCM_16")``: write a numpy signal (N,) or (N, C) with soundfile.
- ``tone(seconds, sr=16000, freq=220.0, amp=0.3, channels=1)``: a deterministic sine (float32).
- ``write_mp4(path, x, sr, codec="aac"|"flac")``: encode (N, C) float32 into an .mp4/.m4a with PyAV.
- ``demo_corpus`` (session): ``emocache.demo.make_corpus(root, per_class=1)``; use ``--audio-root demo=<root>/demo``.
- ``corpus(per_class=1)`` (function factory): a fresh corpus in tmp_path (for tests that modify it).
- ``cli``: invoke ``emocache`` in-process (typer CliRunner) -> (exit_code, output).
- ``run_cli``: invoke ``emocache`` in a subprocess -> CompletedProcess (for smoke runs).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# pytest puts tests/ on sys.path, where tests/emocache and tests/trainer (folders without __init__.py) would be
# imported as empty namespace packages named `emocache` / `trainer` ahead of the editable install's finder.
# With the repository root on sys.path the real packages (regular packages win over namespace portions) load.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
EMOCACHE_BIN = Path(sys.executable).with_name("emocache")


def tone(seconds: float, sr: int = 16000, freq: float = 220.0, amp: float = 0.3, channels: int = 1) -> np.ndarray:
    """Deterministic sine: (N,) for one channel, else (N, C) with channel c at ``freq * (c + 1)``."""
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    cols = [amp * np.sin(2 * np.pi * freq * (c + 1) * t) for c in range(channels)]
    x = np.stack(cols, 1) if channels > 1 else cols[0]
    return x.astype(np.float32)


def write_wav(path: str | Path, x: np.ndarray, sr: int = 16000, subtype: str = "PCM_16") -> Path:
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, sr, subtype=subtype)
    return path


def write_mp4(path: str | Path, x: np.ndarray, sr: int = 16000, codec: str = "aac") -> Path:
    """Encode (N,) or (N, C) float32 into an mp4-family container with PyAV (soundfile cannot read these)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[:, None]
    ch = x.shape[1]
    layout = {1: "mono", 2: "stereo"}.get(ch, f"{ch}.0" if ch != 4 else "quad")
    fmt = "fltp" if codec == "aac" else "s16"
    with av.open(str(path), "w", format="mp4") as out:
        st = out.add_stream(codec, rate=sr, layout=layout)
        if codec == "flac":
            st.codec_context.options = {"strict": "-2"}
        hop = 1024
        for i in range(0, x.shape[0], hop):
            chunk = x[i:i + hop]
            if fmt == "fltp":
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk.T), format="fltp", layout=layout)
            else:
                s16 = np.clip(np.round(chunk * 32767), -32768, 32767).astype(np.int16)
                frame = av.AudioFrame.from_ndarray(s16.reshape(1, -1), format="s16", layout=layout)
            frame.sample_rate = sr
            frame.pts = i
            for pkt in st.encode(frame):
                out.mux(pkt)
        for pkt in st.encode(None):
            out.mux(pkt)
    return path


def write_jsonl(path: str | Path, rows: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def emobox_line(key: str, wav: str, emo: str, dataset: str = "toy", sr: int = 16000, n: int = 16000,
                channel: int = 1, **extra) -> dict:
    """One EmoBox manifest line with every field EmoBox writes."""
    return {"key": key, "dataset": dataset, "wav": wav, "type": "raw", "sample_rate": sr, "num_frame": n,
            "task": "category", "length": n / sr, "emo": emo, "channel": channel, **extra}


@dataclass(frozen=True)
class Corpus:
    root: Path
    """Folder holding ``demo/`` (pass ``--audio-root demo=<root>/demo``)."""
    ds_dir: Path
    """``root/demo``: demo.jsonl, label_map.json, fold_<k>/..., audio/..."""

    @property
    def manifest(self) -> Path:
        return self.ds_dir / f"{self.ds_dir.name}.jsonl"

    @property
    def audio_root(self) -> str:
        return f"{self.ds_dir.name}={self.ds_dir}"

    def lines(self) -> list[dict]:
        return [json.loads(s) for s in self.manifest.read_text().splitlines() if s.strip()]


def _make_corpus(root: Path, per_class: int = 1, seed: int = 0) -> Corpus:
    from emocache.demo import make_corpus

    ds_dir = make_corpus(root, per_class=per_class, seed=seed)
    return Corpus(root=Path(root), ds_dir=Path(ds_dir))


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory) -> Corpus:
    """Read-only shared corpus: 6 speakers x 6 emotions x 1 = 36 utterances. Do not modify it."""
    return _make_corpus(tmp_path_factory.mktemp("demo_corpus"), per_class=1)


@pytest.fixture
def corpus(tmp_path, demo_corpus):
    """Factory for a private corpus copy: ``corpus()`` copies the session corpus; ``corpus(per_class=2)`` makes one."""

    def make(per_class: int = 1, seed: int = 0) -> Corpus:
        root = tmp_path / f"corpus_{per_class}_{seed}"
        if per_class == 1 and seed == 0:
            shutil.copytree(demo_corpus.root, root)
            return Corpus(root=root, ds_dir=root / demo_corpus.ds_dir.name)
        return _make_corpus(root, per_class=per_class, seed=seed)

    return make


@pytest.fixture
def cli(monkeypatch):
    """Run ``emocache`` in-process: ``code, output = cli("info", str(store), "--json")`` (stdout and stderr;
    rich output unwrapped: the console is 400 columns wide)."""
    from typer.testing import CliRunner

    from emocache.cli import app
    from emocache.progress import console

    monkeypatch.setattr(console, "_width", 400)

    runner = CliRunner()

    def invoke(*args: str) -> tuple[int, str]:
        res = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        return res.exit_code, res.output

    return invoke


def _run_cli(*args: str, timeout: float = 120, cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(EMOCACHE_BIN), *[str(a) for a in args]], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd)


@pytest.fixture
def run_cli():
    """Run ``emocache`` in a subprocess: ``p = run_cli("models"); p.returncode, p.stdout, p.stderr``."""
    return _run_cli
