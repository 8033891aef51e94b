"""Audio decoding: soundfile first, PyAV for containers it cannot read; 1-based channel select; soxr resampling.

Decoding stops at ``max_seconds`` of decoded samples, whatever the file's header claims, and keeps only the
selected channel while decoding, so a long or lying file never needs more memory than the limit's worth of mono
samples. AAC in mp4/m4a: the encoder's priming samples and the last frame's padding are trimmed (ours: to the
container's declared duration; 1024 priming samples when the file has no edit list), so an m4a gives the wav's
sample count.
"""

from __future__ import annotations

import math
import os
import stat
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


SAMPLE_RATES = (1000, 768_000)
"""Sample rates accepted from a file's header (Hz); anything else is a damaged or hostile header."""
AAC_PRIMING = 1024
"""Priming samples of an AAC stream without an edit list (FFmpeg's and most AAC-LC encoders' delay)."""
AAC_FRAME = 2048
"""Most padding trimmed from the end of an AAC stream (one frame; HE-AAC frames are 2048 samples)."""


def _check_file(path: str) -> None:
    try:
        st = os.stat(path)
    except OSError:
        raise AudioError(f"{path}: file not found (check the manifest's wav path or --audio-root PREFIX=DIR)") from None
    if not stat.S_ISREG(st.st_mode):
        raise AudioError(f"{path}: not a regular file (a FIFO, device or folder); give an audio file")
    if st.st_size == 0:
        raise AudioError(f"{path}: file is empty (0 bytes)")


def _check_rate(path: str, sr) -> int:
    if not sr or not SAMPLE_RATES[0] <= int(sr) <= SAMPLE_RATES[1]:
        raise AudioError(f"{path}: the header's sample rate {sr} Hz is outside {SAMPLE_RATES[0]}-{SAMPLE_RATES[1]} Hz; "
                         "the file is damaged (re-encode it)")
    return int(sr)


def _too_long(path: str, seconds: float, max_seconds: float, claimed: float | None = None) -> AudioError:
    said = f" (the header claims {claimed:.1f} s)" if claimed is not None else ""
    return AudioError(f"{path}: over {max_seconds:g} s of audio decoded{said}, over --max-audio-seconds "
                      f"{max_seconds:g}; raise the limit to extract it")


def probe(path: str | Path) -> AudioInfo:
    """Sample rate, length and channel count without decoding the samples (PyAV decodes for containers)."""
    import soundfile as sf

    path = str(path)
    _check_file(path)
    try:
        i = sf.info(path)
        return AudioInfo(_check_rate(path, i.samplerate), int(i.frames), int(i.channels))
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


def _decode_av(path: str, channel: int | None = None, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of any container FFmpeg knows -> (N, C) float32 (or (N, 1) of the 1-based
    ``channel`` only), sample rate; AudioError past ``max_seconds`` of decoded samples."""
    import av

    try:
        with av.open(path) as container:
            streams = container.streams.audio
            if not streams:
                raise AudioError(f"{path}: no audio stream in the container")
            stream = streams[0]
            sr = _check_rate(path, stream.codec_context.sample_rate or stream.rate)
            limit = math.inf if max_seconds is None else max_seconds * sr
            chunks, n, first_pts = [], 0, None
            for packet in container.demux(stream):
                if first_pts is None and packet.pts is not None:
                    first_pts = packet.pts
                for frame in packet.decode():
                    a = frame.to_ndarray()
                    if frame.format.is_planar:
                        a = a.T  # (C, n) -> (n, C)
                    else:
                        a = a.reshape(-1, frame.layout.nb_channels if hasattr(frame.layout, "nb_channels")
                                      else len(frame.layout.channels))
                    if channel is not None:
                        if not 1 <= channel <= a.shape[1]:
                            raise AudioError(f"{path}: channel {channel} requested but the file has {a.shape[1]} "
                                             "channel(s); fix the manifest's 'channel' (1-based)")
                        a = a[:, channel - 1:channel]
                    n += a.shape[0]
                    if n > limit:
                        raise _too_long(path, n / sr, max_seconds, _declared_seconds(stream))
                    chunks.append(_to_float(a))
            declared = _declared_samples(stream, sr)
            aac_no_editlist = stream.codec_context.name == "aac" and (first_pts or 0) >= 0
    except AudioError:
        raise
    except Exception as e:  # PyAV raises many FFmpeg error types
        raise AudioError(f"{path}: not a readable audio file ({type(e).__name__}: {e})") from None
    if not chunks:
        raise AudioError(f"{path}: the audio stream has no samples")
    x = np.concatenate(chunks, 0)
    if stream.codec_context.name == "aac":
        if aac_no_editlist:  # the priming samples were decoded: drop them (the duration counts them too)
            x = x[AAC_PRIMING:]
            declared = declared - AAC_PRIMING if declared else declared
        if declared and 0 < x.shape[0] - declared <= AAC_FRAME:
            x = x[:declared]  # the last frame's padding (never more: a header that lies is not believed)
    return x, sr


def _declared_seconds(stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return None


def _declared_samples(stream, sr: int) -> int | None:
    s = _declared_seconds(stream)
    return int(round(s * sr)) if s else None


def _to_float(a: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "f":
        return a.astype(np.float32, copy=False)
    if a.dtype.kind in "iu":
        info = np.iinfo(a.dtype)
        scale = float(-info.min) if a.dtype.kind == "i" else (info.max + 1) / 2.0
        offset = (info.max + 1) / 2 if a.dtype.kind == "u" else 0.0
        return ((a.astype(np.float32) - offset) / scale).astype(np.float32)
    raise AudioError(f"unsupported sample type {a.dtype}")


def read(path: str | Path, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """All channels as (N, C) float32 and the file's sample rate (AudioError past ``max_seconds``)."""
    return _read(str(path), None, max_seconds)


def _read(path: str, channel: int | None, max_seconds: float | None) -> tuple[np.ndarray, int]:
    """(N, C) float32, or (N, 1) of the 1-based ``channel``, read block by block up to ``max_seconds``."""
    import soundfile as sf

    _check_file(path)
    try:
        f = sf.SoundFile(path)
    except (sf.LibsndfileError, RuntimeError):
        return _decode_av(path, channel, max_seconds)
    with f:
        sr = _check_rate(path, f.samplerate)
        if channel is not None and not 1 <= channel <= f.channels:
            raise AudioError(f"{path}: channel {channel} requested but the file has {f.channels} channel(s); "
                             "fix the manifest's 'channel' (1-based)")
        if max_seconds is not None and f.frames > max_seconds * sr:
            raise _too_long(path, f.frames / sr, max_seconds, f.frames / sr)
        cols = slice(None) if channel is None else slice(channel - 1, channel)
        out = np.empty((max(f.frames, 0), f.channels if channel is None else 1), np.float32)
        n = 0
        for block in f.blocks(blocksize=1 << 18, dtype="float32", always_2d=True):
            b = block[:, cols]
            if n + b.shape[0] > out.shape[0]:  # more data than the header said
                if max_seconds is not None and n + b.shape[0] > max_seconds * sr:
                    raise _too_long(path, (n + b.shape[0]) / sr, max_seconds, f.frames / sr)
                out = np.concatenate([out[:n], np.empty((max(n, b.shape[0]), out.shape[1]), np.float32)])
            out[n:n + b.shape[0]] = b
            n += b.shape[0]
        return out[:n], sr


def load(path: str | Path, channel: int = 1, target_sr: int | None = 16000,
         max_seconds: float | None = None) -> np.ndarray:
    """Mono float32 at ``target_sr``: the 1-based ``channel`` of the file, resampled with soxr (HQ).

    Only that channel is kept while decoding; more than ``max_seconds`` of decoded audio is an AudioError."""
    import soxr

    if channel < 1:
        raise AudioError(f"{path}: channel {channel} requested but channels are 1-based; fix the manifest's "
                         "'channel' (1-based)")
    x, sr = _read(str(path), channel, max_seconds)
    if x.shape[0] == 0:
        raise AudioError(f"{path}: no samples")
    w = np.ascontiguousarray(x[:, 0])
    del x
    if target_sr and sr != target_sr:
        w = soxr.resample(w, sr, target_sr, quality="HQ").astype(np.float32, copy=False)
    return w
