"""Device frontends (batched torch ops, ``--frontend device``) against the libraries' CPU frontends, run here on CPU
tensors: the same features, and the same encoder outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emocache.encoders import EncoderConfig, EncoderError, build_encoder
from emocache.encoders.frontends import KaldiFbank, kaldi_mel_banks
from emocache.encoders.tiny import overrides
from emocache.signals import speech_like

SR = 16000
LENGTHS = (400, 401, 559, 560, 1000, SR, 3 * SR + 123, 37000)
"""One frame exactly, frame and LFR boundaries, 1 s, 3 s."""


def tiny(name: str, **kw):
    return build_encoder(name, EncoderConfig(device="cpu", random_init=True, config_overrides=overrides(name), **kw))


def both(name: str, waves):
    """(CPU frontend output, device frontend output) of one encoder on ``waves``."""
    enc = tiny(name)
    pieces = [p for w in waves for p in enc.windows(w)]
    cpu = enc.cpu_frontend(pieces)[enc.input_key].float()
    dev = enc.device_frontend_run(enc.pad_waves(pieces, enc.raw_length), torch.tensor([p.size for p in pieces]))
    return cpu, dev.float()


def test_whisper_log_mel_equals_the_feature_extractor():
    cpu, dev = both("whisper-large-v3", speech_like([400, SR, 7 * SR + 5, 30 * SR], SR, 1))
    assert cpu.shape == dev.shape == (4, 128, 3000)
    assert (cpu - dev).abs().max() <= 1e-5


@pytest.mark.parametrize("name", ["wavlm-large", "emotion2vec-base"])
def test_normalisation_equals_numpy(name):
    waves = speech_like([int(s * SR) for s in (0.5, 2.3, 4.1)], SR, 2)
    waves[1] = waves[1] * 40 + 0.3  # loud, with an offset
    cpu, dev = both(name, waves)
    assert cpu.shape == dev.shape and (cpu - dev).abs().max() <= 1e-5
    assert dev[0, waves[0].size:].abs().max() == 0  # padding stays zero


def test_kaldi_fbank_equals_an_exact_float64_fbank():
    """Our fbank is Kaldi's (torchaudio's) computation to float rounding: checked against a direct float64 numpy
    computation of the same definition."""
    w = speech_like([SR], SR, 3)[0].astype(np.float64) * 32768
    frames = np.lib.stride_tricks.sliding_window_view(w, 400)[::160]  # (T, 400)
    frames = frames - frames.mean(1, keepdims=True)
    prev = np.concatenate([frames[:, :1], frames[:, :-1]], 1)
    frames = (frames - 0.97 * prev) * (0.54 - 0.46 * np.cos(2 * np.pi * np.arange(400) / 399))
    power = np.abs(np.fft.rfft(frames, n=512)) ** 2
    ref = np.log(np.maximum(power @ kaldi_mel_banks(80, 512, SR, 20.0, 0.0).double().numpy().T,
                            np.finfo(np.float32).eps))
    got = KaldiFbank(80, SR, 25, 10, 7, 6, None, torch.device("cpu")).fbank(torch.from_numpy(w[None] / 32768))[0]
    assert got.shape == ref.shape and np.abs(got.numpy() - ref).max() <= 1e-5


def test_sensevoice_fbank_lfr_cmvn_equals_funasr():
    """Against funasr's WavFrontend (kaldi-native-fbank here; no CMVN in a random build): same shapes at every
    boundary, values within 5e-5 of the largest. kaldi-native-fbank computes in float32: in low-energy bins its log
    energies are off an exact float64 fbank by up to ~3e-4 (of values up to ~20), while ours matches that fbank to
    1e-5 (test above), so an absolute 1e-5 cannot hold against it."""
    cpu, dev = both("sensevoice-small", speech_like(LENGTHS, SR, 3))
    assert cpu.shape == dev.shape
    assert (cpu - dev).abs().max() <= 5e-5 * cpu.abs().max()


def test_lfr_frame_counts_match_valid_frames():
    enc = tiny("sensevoice-small")
    n = torch.tensor(LENGTHS)
    x = torch.zeros(len(LENGTHS), max(LENGTHS))
    _, t_lfr = enc.device_fbank(x, n)
    assert t_lfr.tolist() == [enc.valid_frames(int(k)) for k in LENGTHS]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["whisper-large-v3", "wavlm-large", "emotion2vec-base", "sensevoice-small"])
def test_encoder_with_device_frontend_equals_cpu_frontend(name):
    """The whole encoder, one tiny model per family: frames and pooled vectors agree whichever frontend ran."""
    cpu, dev = tiny(name, frontend="cpu"), tiny(name, frontend="device")
    for a, b in zip(cpu.modules(), dev.modules()):
        b.load_state_dict(a.state_dict())
    waves = speech_like([int(s * SR) for s in (0.6, 2.35, 31.0)], SR, 4)  # the last one is windowed
    x, y = cpu.encode(waves), dev.encode(waves)
    assert dev.frontend_on_device and not cpu.frontend_on_device
    assert np.abs(x.pooled - y.pooled).max() <= 1e-4
    assert all(a.shape == b.shape and np.abs(a - b).max() <= 1e-4 for a, b in zip(x.frames, y.frames))


def test_auto_frontend_is_the_cpu_one_on_the_cpu_and_device_needs_support(tmp_path):
    assert not tiny("wavlm-base-plus").frontend_on_device
    from tests.emocache.encoders.test_hf import save_tiny

    d = save_tiny("wav2vec2-layer", tmp_path / "w")
    with pytest.raises(EncoderError, match="no device frontend"):
        build_encoder(f"hf:{d}", EncoderConfig(device="cpu", frontend="device"))
