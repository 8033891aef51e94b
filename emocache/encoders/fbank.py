"""fbank-stats: weight-free 80-bin log-mel filterbank frames (25 ms / 10 ms, Kaldi mel scale), pooled by mean."""

from __future__ import annotations

import numpy as np
import torch

from emocache.config import EncoderConfig
from emocache.encoders.base import Encoder, conv_frames
from emocache.encoders.registry import register


@register
class FbankStats(Encoder):
    """Log-mel frames from 25 ms windows every 10 ms (no centering, so a batch equals each utterance alone)."""

    name = "fbank-stats"
    sample_rate = 16000
    frame_rate = 100.0
    win = 400
    hop = 160
    n_fft = 512
    n_mels = 80

    def __init__(self, config: EncoderConfig | None = None):
        super().__init__(config)
        from transformers.audio_utils import mel_filter_bank

        mel = mel_filter_bank(num_frequency_bins=self.n_fft // 2 + 1, num_mel_filters=self.n_mels,
                              min_frequency=20.0, max_frequency=self.sample_rate / 2,
                              sampling_rate=self.sample_rate, norm=None, mel_scale="kaldi")
        self.mel = torch.from_numpy(mel.astype(np.float32)).to(self.device)  # (F, M)
        self.window = torch.hann_window(self.win, periodic=False, device=self.device)

    @property
    def dim(self) -> int:
        return self.n_mels

    def valid_frames(self, num_samples: int) -> int:
        return conv_frames(num_samples, self.win, self.hop)

    def weights_identity(self) -> dict:
        return {"weights": "none (weight-free)", "n_mels": self.n_mels, "window": "hann 25 ms", "hop": "10 ms"}

    def forward(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        x = inputs["wave"].to(self.device, non_blocking=True)  # (B, N) (page-locked on CUDA)
        n = inputs["num_samples"]
        if x.shape[1] < self.win:
            x = torch.nn.functional.pad(x, (0, self.win - x.shape[1]))
        frames = x.unfold(1, self.win, self.hop) * self.window  # (B, T, win)
        power = torch.fft.rfft(frames, n=self.n_fft).abs().pow(2)  # (B, T, F)
        # float64 projection: a float32 GEMM's rounding depends on the batch shape, so batched != single
        mel = (power.double() @ self.mel.double()).float()
        logmel = torch.log(torch.clamp(mel, min=1e-10))  # (B, T, M)
        lengths = torch.tensor([self.valid_frames(int(k)) for k in n])
        return logmel, lengths
