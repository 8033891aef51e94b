"""Audio and manifest lines made by the tests (never the repository-external data folder)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


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
