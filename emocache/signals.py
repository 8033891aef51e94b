"""The one synthetic speech-like test signal: benchmarks, precision checks and tests use it (no audio files)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def speech_like(lengths: Sequence[int], sr: int = 16000, seed: int = 0) -> list[np.ndarray]:
    """One float32 wave per sample count: a harmonic voice with a moving pitch, a syllable-rate envelope and
    noise; deterministic for a seed."""
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        t = np.arange(n, dtype=np.float32) / sr
        f0 = rng.uniform(90, 220) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t))
        phase = 2 * np.pi * np.cumsum(f0) / sr
        voice = sum(np.sin(k * phase) / k for k in range(1, 6))
        env = (0.5 * (1 + np.sin(2 * np.pi * rng.uniform(3, 6) * t))) ** 2
        out.append((0.1 * voice * env + 0.01 * rng.standard_normal(n)).astype(np.float32))
    return out


def seconds_to_samples(seconds: Sequence[float], sr: int = 16000) -> list[int]:
    return [int(s * sr) for s in seconds]
