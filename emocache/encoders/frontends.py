"""Frontends as batched torch ops that run on the model's device (``--frontend device``, the default on CUDA).

Each is the CPU frontend's computation written over a padded (B, N) batch: the same results within 1e-5
(tests run both on CPU tensors), without a round trip through host memory or a CPU thread per utterance.

- :func:`whisper_log_mel`: the log-mel of transformers' ``WhisperFeatureExtractor`` (its torch path: STFT with a
  periodic Hann window, power, Slaney mel filters, log10 floored at the item's maximum - 8, ``(x + 4) / 4``).
- :func:`normalize_waves`: zero mean, unit variance over each wave's own samples (WavLM's feature extractor,
  emotion2vec's layer norm); padding stays zero.
- :class:`KaldiFbank`: Kaldi fbank as ``torchaudio.compliance.kaldi.fbank`` computes it (which funasr's
  ``WavFrontend`` calls, or kaldi-native-fbank in its place), then funasr's low frame rate stacking (LFR) and CMVN.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def valid_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(B,) lengths on a device -> (B, width) bool, True at valid positions."""
    return torch.arange(width, device=lengths.device)[None] < lengths[:, None]


def whisper_log_mel(wave: torch.Tensor, n_fft: int, hop: int, mel_filters: torch.Tensor) -> torch.Tensor:
    """(B, N) float32 waves (padded to the window) -> (B, M, N // hop) log-mel, as WhisperFeatureExtractor.

    ``mel_filters`` (n_fft // 2 + 1, M) float32, the extractor's ``mel_filters`` on ``wave``'s device.
    """
    window = torch.hann_window(n_fft, device=wave.device)
    stft = torch.stft(wave, n_fft, hop, window=window, return_complex=True)  # (B, F, N // hop + 1)
    power = (stft[..., :-1].abs() ** 2).contiguous()  # (B, F, T)
    log = torch.clamp(mel_filters.T @ power, min=1e-10).log10()  # (B, M, T)
    log = torch.maximum(log, log.amax(dim=(1, 2), keepdim=True) - 8.0)
    return (log + 4.0) / 4.0


def normalize_waves(wave: torch.Tensor, num_samples: torch.Tensor, eps: float) -> torch.Tensor:
    """(B, N) padded waves -> each valid part with zero mean and unit variance (statistics over its own samples
    in float64, applied in float32 as numpy's ``(w - w.mean()) / sqrt(w.var() + eps)``); padding stays zero."""
    keep = valid_mask(num_samples, wave.shape[1])  # (B, N)
    cnt = num_samples.double().clamp_min(1)[:, None]
    xd = wave.double() * keep
    mean = xd.sum(1, keepdim=True) / cnt  # (B, 1)
    var = (((xd - mean) * keep) ** 2).sum(1, keepdim=True) / cnt
    out = (wave - mean.float()) / torch.sqrt(var.float() + eps)
    return out * keep


def kaldi_mel_banks(num_bins: int, n_fft: int, sample_rate: float, low_freq: float, high_freq: float) -> torch.Tensor:
    """Kaldi's triangular mel filters (``torchaudio.compliance.kaldi.get_mel_banks`` without VTLN), padded with a
    zero column for the Nyquist bin -> (num_bins, n_fft // 2 + 1) float32."""
    num_fft_bins = n_fft // 2
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    mel = lambda f: 1127.0 * torch.log(1.0 + f / 700.0)  # noqa: E731
    fft_bin_width = sample_rate / n_fft
    mel_low, mel_high = 1127.0 * math.log(1.0 + low_freq / 700.0), 1127.0 * math.log(1.0 + high_freq / 700.0)
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins).unsqueeze(1)
    left, center, right = mel_low + b * delta, mel_low + (b + 1.0) * delta, mel_low + (b + 2.0) * delta
    m = mel(fft_bin_width * torch.arange(num_fft_bins)).unsqueeze(0)
    up = (m - left) / (center - left)
    down = (right - m) / (right - center)
    banks = torch.max(torch.zeros(1), torch.min(up, down))  # (num_bins, num_fft_bins)
    return F.pad(banks, (0, 1)).float()


class KaldiFbank:
    """funasr's ``WavFrontend`` (fbank, LFR, CMVN) over a padded batch on any device.

    Fixed as SenseVoice runs it: waves scaled by 2^15, 25 ms frames every 10 ms with ``snip_edges``, DC offset
    removed, pre-emphasis 0.97, a Hamming window, a 512-point FFT, power, Kaldi mel banks from 20 Hz to Nyquist,
    log with Kaldi's float epsilon floor, dither 0; then LFR (``lfr_m`` frames every ``lfr_n``, the first frame
    repeated ``(lfr_m - 1) // 2`` times in front, the last one behind) and ``(x + shift) * scale``.
    """

    preemphasis = 0.97
    low_freq = 20.0

    def __init__(self, n_mels: int, sample_rate: int, frame_length_ms: float, frame_shift_ms: float, lfr_m: int,
                 lfr_n: int, cmvn: np.ndarray | None, device: torch.device):
        self.win = int(sample_rate * frame_length_ms / 1000)
        self.hop = int(sample_rate * frame_shift_ms / 1000)
        self.n_fft = 1 << (self.win - 1).bit_length()
        self.lfr_m, self.lfr_n = lfr_m, lfr_n
        self.window = torch.hamming_window(self.win, periodic=False, alpha=0.54, beta=0.46,
                                           dtype=torch.float64).to(device)
        self.banks = kaldi_mel_banks(n_mels, self.n_fft, sample_rate, self.low_freq, 0.0).double().to(device)  # (M, F)
        self.cmvn = None if cmvn is None else torch.as_tensor(np.asarray(cmvn), dtype=torch.float32).to(device)

    def frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        """Kaldi frames with snip_edges for (B,) sample counts (0 when shorter than one frame)."""
        return torch.where(num_samples >= self.win, 1 + torch.div(num_samples - self.win, self.hop,
                                                                  rounding_mode="floor"), 0)

    def fbank(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, N) float32 -> (B, T, M) log mel energies of every full frame (frames past an item's end are
        junk; :meth:`__call__` never reads them)."""
        x = (wave.double() * 32768.0).unfold(1, self.win, self.hop)  # (B, T, win)
        x = x - x.mean(-1, keepdim=True)
        prev = torch.cat([x[..., :1], x[..., :-1]], -1)  # Kaldi: the first sample is its own predecessor
        x = (x - self.preemphasis * prev) * self.window
        power = torch.fft.rfft(x, n=self.n_fft).abs().pow(2)  # (B, T, F)
        mel = power @ self.banks.T  # (B, T, M)
        return torch.clamp_min(mel, torch.finfo(torch.float32).eps).log().float()

    def __call__(self, wave: torch.Tensor, num_samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N) waves, (B,) sample counts (on the device) -> features (B, T_lfr, M * lfr_m) with zero rows past
        each item's end, and (B,) LFR frame counts."""
        feats = self.fbank(wave)  # (B, T, M)
        t = self.frames(num_samples)  # (B,)
        t_lfr = torch.div(t + self.lfr_n - 1, self.lfr_n, rounding_mode="floor")  # ceil(T / lfr_n)
        j = max(1, -(-feats.shape[1] // self.lfr_n))
        pos = (torch.arange(j, device=wave.device)[:, None] * self.lfr_n
               + torch.arange(self.lfr_m, device=wave.device)[None] - (self.lfr_m - 1) // 2)  # (J, lfr_m)
        idx = torch.minimum(pos.clamp_min(0)[None], (t - 1).clamp_min(0)[:, None, None])  # (B, J, lfr_m)
        b, _, m = feats.shape
        out = torch.gather(feats, 1, idx.reshape(b, -1, 1).expand(-1, -1, m)).reshape(b, j, self.lfr_m * m)
        if self.cmvn is not None:
            d = out.shape[-1]
            out = (out + self.cmvn[0, :d]) * self.cmvn[1, :d]
        return out * valid_mask(t_lfr, j)[..., None], t_lfr
