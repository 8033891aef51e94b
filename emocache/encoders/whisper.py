"""Whisper-large-v3 encoder (transformers): last-layer frames of the 30-s window, mean over valid frames.

Pitfalls handled: the encoder takes exactly 3000 mel frames, so every item is padded to 30 s and the frames
that cover real audio, ``ceil(ceil(N / 160) / 2)``, are kept; longer inputs go through the base class's
long-utterance policy. Weights load through ``WhisperModel`` (``WhisperEncoder.from_pretrained`` on a full
checkpoint silently leaves random weights) and any encoder key the checkpoint lacks is an error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from emocache.encoders.base import EncoderError, ceil_div
from emocache.encoders.checkpoint import randomize
from emocache.encoders.frontends import whisper_log_mel
from emocache.encoders.neural import NeuralEncoder, import_or_hint
from emocache.encoders.registry import register

FULL_CONFIG = dict(num_mel_bins=128, d_model=1280, encoder_layers=32, encoder_attention_heads=20,
                   encoder_ffn_dim=5120, decoder_layers=32, decoder_attention_heads=20, decoder_ffn_dim=5120,
                   max_source_positions=1500, max_target_positions=448, vocab_size=51866)


def whisper_flops(cfg) -> float:
    """Matmul FLOPs of one encoder pass over a 30-s window (convs, projections, attention, MLP)."""
    t, d, f, mels = cfg.max_source_positions, cfg.d_model, cfg.encoder_ffn_dim, cfg.num_mel_bins
    convs = 2 * (2 * t) * (mels * 3) * d + 2 * t * (d * 3) * d
    layer = 2 * t * d * d * 4 + 2 * 2 * t * t * d + 2 * 2 * t * d * f
    return float(convs + cfg.encoder_layers * layer)


@register
class WhisperLargeV3(NeuralEncoder):
    """openai/whisper-large-v3 encoder, 1280-d frames at 50 Hz."""

    name = "whisper-large-v3"
    frame_rate = 50.0
    fixed_window = True
    """Every input is padded to the 30-s window: batch cost is windows, not samples."""
    device_frontend = True
    gpu_batch_seconds = 32 * 30.0
    """32 windows per batch on CUDA (ours: the issue's probe ran batch 64 3.5 % faster than 16; 32 keeps a block of
    128 utterances at four full batches)."""
    input_key = "mel"
    hf_repos = ("openai/whisper-large-v3",)
    required_files = ("config.json", "preprocessor_config.json")
    model_types = ("whisper",)
    full_config = FULL_CONFIG
    tiny_overrides = dict(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                          decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64, vocab_size=64,
                          max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                          decoder_start_token_id=3, suppress_tokens=None, begin_suppress_tokens=None)

    def load(self, path: Path) -> None:
        tf = import_or_hint("transformers", "transformers")
        model, info = tf.WhisperModel.from_pretrained(path, local_files_only=True, output_loading_info=True,
                                                      attn_implementation="sdpa")
        lost = [k for k in info["missing_keys"] if not k.startswith("decoder.")]
        if lost:
            raise EncoderError(f"{path}: checkpoint lacks {len(lost)} Whisper encoder weights "
                               f"(e.g. {', '.join(sorted(lost)[:5])}); refusing to run with random weights")
        self.model = model.get_encoder()  # the decoder is dropped with `model`
        self.features = tf.WhisperFeatureExtractor.from_pretrained(path, local_files_only=True)
        self._check_shapes()

    def build_random(self, overrides: dict) -> None:
        tf = import_or_hint("transformers", "transformers")
        cfg = tf.WhisperConfig(**{**self.full_config, **overrides}, attn_implementation="sdpa")
        self.model = tf.models.whisper.modeling_whisper.WhisperEncoder(cfg)
        self.features = tf.WhisperFeatureExtractor(feature_size=cfg.num_mel_bins)
        self._check_shapes()

    @classmethod
    def save_random(cls, directory: Path, overrides: dict, seed: int) -> None:
        """A full Whisper checkpoint (encoder and decoder) with its feature extractor, via save_pretrained."""
        tf = import_or_hint("transformers", "transformers")
        cfg = tf.WhisperConfig(**{**cls.full_config, **overrides})
        model = tf.WhisperForConditionalGeneration(cfg)
        randomize(model, seed)
        model.save_pretrained(directory)
        tf.WhisperFeatureExtractor(feature_size=cfg.num_mel_bins).save_pretrained(directory)

    @classmethod
    def reference(cls, path: Path, wave: np.ndarray) -> np.ndarray:
        """transformers' own feature extractor and encoder; the frames that cover the audio."""
        tf = import_or_hint("transformers", "transformers")
        fe = tf.WhisperFeatureExtractor.from_pretrained(path)
        mel = fe(wave, sampling_rate=cls.sample_rate, return_tensors="pt").input_features  # (1, mels, 3000)
        enc = tf.WhisperForConditionalGeneration.from_pretrained(path).model.encoder.eval()
        with torch.no_grad():
            h = enc(mel).last_hidden_state[0]  # (1500, D)
        return h[: ceil_div(ceil_div(wave.size, fe.hop_length), 2)].numpy()

    def _check_shapes(self) -> None:
        cfg = self.model.config
        frames = 2 * cfg.max_source_positions
        if self.features.feature_size != cfg.num_mel_bins or self.features.nb_max_frames != frames:
            raise EncoderError(f"feature extractor ({self.features.feature_size} mels, {self.features.nb_max_frames} "
                               f"frames) does not match the encoder ({cfg.num_mel_bins} mels, {frames} frames)")
        self.raw_length = int(self.features.n_samples)
        if self.features.dither:  # random noise per call: only the library's own frontend reproduces that
            self.frontend_on_device = False
        self.mel_filters = torch.from_numpy(np.asarray(self.features.mel_filters, np.float32)).to(self.device)

    @property
    def dim(self) -> int:
        return int(self.model.config.d_model)

    @property
    def max_frames(self) -> int:
        return int(self.model.config.max_source_positions)

    def valid_frames(self, num_samples: int) -> int:
        return min(self.max_frames, ceil_div(ceil_div(num_samples, self.features.hop_length), 2))

    def cpu_frontend(self, waves: list[np.ndarray]) -> dict:
        """transformers' log-mel of each wave padded to 30 s -> ``mel`` (B, mels, 3000)."""
        mel = self.features([np.asarray(w, dtype=np.float32) for w in waves], sampling_rate=self.sample_rate,
                            return_tensors="pt", device="cpu").input_features  # (B, mels, 3000)
        return {"mel": mel.float()}

    def device_frontend_run(self, raw: torch.Tensor, num_samples: torch.Tensor) -> torch.Tensor:
        """The same log-mel on the device: (B, 480000) waves -> (B, mels, 3000)."""
        return whisper_log_mel(raw, self.features.n_fft, self.features.hop_length, self.mel_filters)

    def forward(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = torch.tensor([self.valid_frames(int(n)) for n in inputs["num_samples"]])
        out = self.model(self.model_input(inputs), output_hidden_states=self.wants_hidden)  # (B, 1500, D)
        t = int(lengths.max())
        hidden = tuple(h[:, :t] for h in out.hidden_states) if self.wants_hidden else None
        return out.last_hidden_state[:, :t], lengths, hidden

    def compile_regions(self) -> list[torch.nn.Module]:
        return list(self.model.layers)

    @property
    def num_layers(self) -> int:
        return int(self.model.config.encoder_layers)

    def flops_per_window(self) -> float:
        return whisper_flops(self.model.config)
