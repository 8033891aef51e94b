"""Audio decoding: soundfile first, PyAV for containers it cannot read; 1-based channel select; soxr resampling."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class AudioError(ValueError):
    """A file that cannot be used as audio; the message names the file and the problem."""


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    frames: int
    channels: int


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise AudioError(f"{path}: file not found (check the manifest's wav path or --audio-root PREFIX=DIR)")
    if os.path.getsize(path) == 0:
        raise AudioError(f"{path}: file is empty (0 bytes)")


def probe(path: str | Path) -> AudioInfo:
    """Sample rate, length and channel count without decoding the samples (PyAV decodes for containers)."""
    import soundfile as sf

    path = str(path)
    _check_file(path)
    try:
        i = sf.info(path)
        return AudioInfo(int(i.samplerate), int(i.frames), int(i.channels))
    except (sf.LibsndfileError, RuntimeError):
        info = _probe_av(path)
        if info is not None:
            return info
        x, sr = _decode_av(path)
        return AudioInfo(sr, x.shape[0], x.shape[1])


def _probe_av(path: str) -> AudioInfo | None:
    """Container metadata without decoding (frames estimated from the stream's duration); None if it has none.

    Decoding just to measure would defeat --max-audio-seconds, which exists to keep huge files out of memory.
    """
    import av

    try:
        with av.open(path) as container:
            if not container.streams.audio:
                return None
            s = container.streams.audio[0]
            sr = int(s.codec_context.sample_rate or s.rate or 0)
            ch = int(s.codec_context.channels or 0) if hasattr(s.codec_context, "channels") else 0
            ch = ch or len(s.layout.channels)
            if s.duration is not None and s.time_base is not None:
                seconds = float(s.duration * s.time_base)
            elif container.duration:
                seconds = container.duration / 1_000_000
            else:
                return None
    except Exception:
        return None  # _decode_av gives the error message
    if not sr or not ch or seconds <= 0:
        return None
    return AudioInfo(sr, int(round(seconds * sr)), ch)


def _decode_av(path: str) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of any container FFmpeg knows -> (N, C) float32, sample rate."""
    import av

    try:
        with av.open(path) as container:
            streams = container.streams.audio
            if not streams:
                raise AudioError(f"{path}: no audio stream in the container")
            stream = streams[0]
            sr = stream.codec_context.sample_rate or stream.rate
            chunks = []
            for frame in container.decode(stream):
                a = frame.to_ndarray()
                if frame.format.is_planar:
                    a = a.T  # (C, n) -> (n, C)
                else:
                    a = a.reshape(-1, frame.layout.nb_channels if hasattr(frame.layout, "nb_channels")
                                  else len(frame.layout.channels))
                chunks.append(_to_float(a))
    except AudioError:
        raise
    except Exception as e:  # PyAV raises many FFmpeg error types
        raise AudioError(f"{path}: not a readable audio file ({type(e).__name__}: {e})") from None
    if not chunks:
        raise AudioError(f"{path}: the audio stream has no samples")
    return np.concatenate(chunks, 0), int(sr)


def _to_float(a: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "f":
        return a.astype(np.float32, copy=False)
    if a.dtype.kind in "iu":
        info = np.iinfo(a.dtype)
        scale = float(-info.min) if a.dtype.kind == "i" else (info.max + 1) / 2.0
        offset = (info.max + 1) / 2 if a.dtype.kind == "u" else 0.0
        return ((a.astype(np.float32) - offset) / scale).astype(np.float32)
    raise AudioError(f"unsupported sample type {a.dtype}")


def read(path: str | Path) -> tuple[np.ndarray, int]:
    """All channels as (N, C) float32 and the file's sample rate."""
    import soundfile as sf

    path = str(path)
    _check_file(path)
    try:
        x, sr = sf.read(path, dtype="float32", always_2d=True)
        return x, int(sr)
    except (sf.LibsndfileError, RuntimeError):
        return _decode_av(path)


def load(path: str | Path, channel: int = 1, target_sr: int | None = 16000) -> np.ndarray:
    """Mono float32 at ``target_sr``: the 1-based ``channel`` of the file, resampled with soxr (HQ)."""
    import soxr

    x, sr = read(path)
    if x.shape[0] == 0:
        raise AudioError(f"{path}: no samples")
    if not 1 <= channel <= x.shape[1]:
        raise AudioError(f"{path}: channel {channel} requested but the file has {x.shape[1]} channel(s); "
                         "fix the manifest's 'channel' (1-based)")
    w = np.ascontiguousarray(x[:, channel - 1])
    if target_sr and sr != target_sr:
        w = soxr.resample(w, sr, target_sr, quality="HQ").astype(np.float32, copy=False)
    return w
