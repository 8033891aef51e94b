"""The synthetic demo corpus (recipe: manifests/demo_corpus.md): emotional speech-like utterances of six speakers
with EmoBox manifests, folds and a label map. ``emocache demo`` runs the end-to-end job on it (:mod:`trainer.demo`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SR = 16000


@dataclass(frozen=True)
class Style:
    """How one emotion shapes the voice (see manifests/demo_corpus.md)."""

    label: str
    f0_scale: float
    """Mean pitch relative to the speaker's."""
    f0_slope: float
    """Pitch change over the utterance, in octaves."""
    f0_jitter: float
    """Random pitch wobble (fraction of f0)."""
    gain_db: float
    """Loudness relative to neutral."""
    rate_hz: float
    """Syllables per second (amplitude modulation)."""
    tilt: float
    """Spectral tilt: one-pole low-pass coefficient on the source (higher = darker)."""
    breath: float
    """Aspiration noise relative to the voiced source."""


STYLES = (
    Style("neu", 1.00, 0.00, 0.010, 0.0, 4.0, 0.80, 0.02),
    Style("ang", 1.30, -0.30, 0.020, 6.0, 5.5, 0.45, 0.03),
    Style("hap", 1.40, 0.25, 0.030, 3.0, 5.0, 0.60, 0.02),
    Style("sad", 0.85, -0.20, 0.008, -6.0, 3.0, 0.92, 0.05),
    Style("fea", 1.50, 0.10, 0.060, -2.0, 6.5, 0.70, 0.15),
    Style("sur", 1.60, 0.60, 0.020, 2.0, 4.5, 0.55, 0.04),
)
LABEL_MAP = {"neu": "Neutral", "ang": "Angry", "hap": "Happy", "sad": "Sad", "fea": "Fear", "sur": "Surprise"}
SPEAKERS = ((110.0, 1.00), (125.0, 0.95), (145.0, 1.05), (190.0, 1.12), (210.0, 1.18), (235.0, 1.10))
"""(base f0 in Hz, formant scale) per synthetic speaker."""
VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410))


def _resonate(x: np.ndarray, freq: float, bw: float) -> np.ndarray:
    from scipy.signal import lfilter

    r = np.exp(-np.pi * bw / SR)
    theta = 2 * np.pi * freq / SR
    return lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], x)


def synth_utterance(style: Style, speaker: int, rng: np.random.Generator) -> np.ndarray:
    """One utterance: a glottal pulse train through vowel formants, shaped by the style, 1-3 s."""
    from scipy.signal import lfilter

    f0_base, formant_scale = SPEAKERS[speaker]
    dur = rng.uniform(1.0, 3.0)
    n = int(dur * SR)
    t = np.arange(n) / SR
    wobble = np.cumsum(rng.normal(0, 1, n)) / np.sqrt(SR)
    f0 = f0_base * style.f0_scale * 2 ** (style.f0_slope * t / dur) * (1 + style.f0_jitter * np.tanh(wobble))
    phase = np.cumsum(f0) / SR
    source = 2 * (phase % 1.0) - 1.0  # sawtooth: every harmonic
    source = lfilter([1 - style.tilt], [1, -style.tilt], source)
    source = source + style.breath * rng.normal(0, 1, n)
    vowel = VOWELS[rng.integers(len(VOWELS))]
    voiced = sum(_resonate(source, f * formant_scale, 80 + 40 * k) for k, f in enumerate(vowel))
    syll = 0.5 * (1 - np.cos(2 * np.pi * style.rate_hz * t + rng.uniform(0, 2 * np.pi)))
    env = syll ** 1.5 * np.minimum(1, np.minimum(t, dur - t) / 0.05)
    x = voiced * env
    x = x / (np.abs(x).max() + 1e-9) * 0.3 * 10 ** (style.gain_db / 20)
    return (x + 1e-4 * rng.normal(0, 1, n)).astype(np.float32)


def make_corpus(root: str | Path, per_class: int = 16, seed: int = 0, dataset: str = "demo") -> Path:
    """Write the corpus, its EmoBox manifest (whole + 3 speaker-independent folds) and label map under root.

    Returns the dataset folder (``root/<dataset>``). Deterministic for a given seed.
    """
    import soundfile as sf

    root = Path(root)
    ds_dir = root / dataset
    rng = np.random.default_rng(seed)
    lines = []
    for spk in range(len(SPEAKERS)):
        for style in STYLES:
            for i in range(per_class):
                x = synth_utterance(style, spk, rng)
                rel = f"audio/spk{spk}/{style.label}_{i:02d}.wav"
                (ds_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                sf.write(ds_dir / rel, x, SR, subtype="PCM_16")
                lines.append({"key": f"{dataset}-spk{spk}-{style.label}-{i:02d}", "dataset": dataset,
                              "wav": f"{dataset}/{rel}", "type": "raw", "sample_rate": SR, "num_frame": x.size,
                              "task": "category", "length": x.size / SR, "emo": style.label, "channel": 1,
                              "speaker": spk})
    _write(ds_dir / f"{dataset}.jsonl", lines)
    for k in range(1, 4):
        test_spk = {2 * (k - 1), 2 * (k - 1) + 1}
        _write(ds_dir / f"fold_{k}" / f"{dataset}_train_fold_{k}.jsonl", [d for d in lines if d["speaker"] not in test_spk])
        _write(ds_dir / f"fold_{k}" / f"{dataset}_test_fold_{k}.jsonl", [d for d in lines if d["speaker"] in test_spk])
    (ds_dir / "label_map.json").write_text(json.dumps(LABEL_MAP, indent=2))
    return ds_dir


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for d in rows:
            f.write(json.dumps({k: v for k, v in d.items() if k != "speaker"}) + "\n")
