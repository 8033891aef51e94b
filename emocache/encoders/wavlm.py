"""WavLM encoders (transformers): ``last_hidden_state`` frames at 50 Hz, mean over valid frames.

``hidden_states[-1]`` of WavLM-large is taken before the final LayerNorm, so the adapter uses
``last_hidden_state``. Large (layer-norm feature extractor) batches exactly with a sample-level attention mask.
Base-plus normalises the first convolution's output with a GroupNorm over time, so zero padding changes every
frame; here that GroupNorm's statistics are taken over each item's valid frames only, which makes a padded batch
equal each utterance run alone, unpadded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from emocache.encoders.base import EncoderError, conv_frames, conv_stack_frames
from emocache.encoders.checkpoint import randomize
from emocache.encoders.frontends import normalize_waves, valid_mask
from emocache.encoders.neural import NeuralEncoder, import_or_hint, record_hidden_states
from emocache.encoders.registry import register

LARGE_CONFIG = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                    conv_dim=(512,) * 7, conv_bias=True, feat_extract_norm="layer", do_stable_layer_norm=True)
BASE_PLUS_CONFIG = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                        conv_dim=(512,) * 7, conv_bias=False, feat_extract_norm="group", do_stable_layer_norm=False)
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(32,) * 7,
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
"""Test-sized shapes shared by both variants."""
TRAINING_ONLY = ("masked_spec_embed",)


class _WavLM(NeuralEncoder):
    frame_rate = 50.0
    required_files = ("config.json",)
    model_types = ("wavlm",)
    tiny_overrides = TINY
    device_frontend = True
    compile_pays = False  # H200, gpu-check 2026-12-04: compiled layers 6-8 % slower than eager for large and base-plus
    normalize_default = False
    """Whether the checkpoint's feature extractor normalises each wave (when it has no preprocessor_config)."""

    def load(self, path: Path) -> None:
        tf = import_or_hint("transformers", "transformers")
        model, info = tf.WavLMModel.from_pretrained(path, local_files_only=True, output_loading_info=True)
        lost = [k for k in info["missing_keys"] if not k.endswith(TRAINING_ONLY)]
        if lost:
            raise EncoderError(f"{path}: checkpoint lacks {len(lost)} WavLM weights "
                               f"(e.g. {', '.join(sorted(lost)[:5])}); the file is incomplete or for another model")
        self.model = model
        pre = Path(path) / "preprocessor_config.json"
        self.normalize = bool(json.loads(pre.read_text()).get("do_normalize", self.normalize_default)) \
            if pre.is_file() else self.normalize_default
        self._check_config()

    def build_random(self, overrides: dict) -> None:
        tf = import_or_hint("transformers", "transformers")
        self.model = tf.WavLMModel(tf.WavLMConfig(**{**self.full_config, **overrides}))
        self.normalize = self.normalize_default
        self._check_config()

    @classmethod
    def save_random(cls, directory: Path, overrides: dict, seed: int) -> None:
        """``WavLMModel.save_pretrained`` plus the feature extractor this variant ships with."""
        tf = import_or_hint("transformers", "transformers")
        model = tf.WavLMModel(tf.WavLMConfig(**{**cls.full_config, **overrides}))
        randomize(model, seed)
        model.save_pretrained(directory)
        tf.Wav2Vec2FeatureExtractor(do_normalize=cls.normalize_default,
                                    return_attention_mask=cls.normalize_default).save_pretrained(directory)

    @classmethod
    def reference(cls, path: Path, wave: np.ndarray) -> np.ndarray:
        """transformers' own feature extractor and WavLMModel on the unpadded wave."""
        tf = import_or_hint("transformers", "transformers")
        inputs = tf.Wav2Vec2FeatureExtractor.from_pretrained(path)(wave, sampling_rate=cls.sample_rate,
                                                                    return_tensors="pt")
        with torch.no_grad():
            return tf.WavLMModel.from_pretrained(path).eval()(**inputs).last_hidden_state[0].numpy()  # (T, D)

    def _check_config(self) -> None:
        want = self.full_config["feat_extract_norm"]
        got = self.model.config.feat_extract_norm
        if got != want:
            raise EncoderError(f"{self.name} expects feat_extract_norm={want!r}, the checkpoint says {got!r}; "
                               "use the encoder name that matches these weights")

    @property
    def group_norm(self) -> bool:
        return self.model.config.feat_extract_norm == "group"

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    def valid_frames(self, num_samples: int) -> int:
        return conv_stack_frames(num_samples, zip(self.model.config.conv_kernel, self.model.config.conv_stride))

    def cpu_frontend(self, waves: list[np.ndarray]) -> dict:
        """Zero-mean unit-variance per wave over its own length when the checkpoint asks for it; zero padding."""
        if self.normalize:
            waves = [(w - w.mean()) / np.sqrt(w.var() + 1e-7) for w in waves]
        return super().cpu_frontend(waves)

    def device_frontend_run(self, raw: torch.Tensor, num_samples: torch.Tensor) -> torch.Tensor:
        return normalize_waves(raw, num_samples, 1e-7) if self.normalize else raw

    def _features(self, wave: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        """Convolutional features (B, C, T); group norm statistics over each item's valid first-layer frames."""
        layers = self.model.feature_extractor.conv_layers
        if not self.group_norm:
            return self.model.feature_extractor(wave)
        first = layers[0]
        h = first.conv(wave[:, None])  # (B, C, T0)
        k, st = first.conv.kernel_size[0], first.conv.stride[0]
        t0 = self.host_to_device(torch.tensor([conv_frames(int(x), k, st) for x in n]))  # (B,) valid frames
        m = valid_mask(t0, h.shape[-1]).to(h.dtype)[:, None]  # (B, 1, T0)
        hf, mf = h.float(), m.float()
        cnt = mf.sum(-1, keepdim=True)
        mean = (hf * mf).sum(-1, keepdim=True) / cnt  # (B, C, 1)
        var = (((hf - mean) * mf) ** 2).sum(-1, keepdim=True) / cnt
        gn = first.layer_norm
        h = ((hf - mean) / torch.sqrt(var + gn.eps) * gn.weight[:, None] + gn.bias[:, None]).to(h.dtype)
        h = first.activation(h)
        for layer in layers[1:]:
            h = layer(h)
        return h

    def forward(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        n = inputs["num_samples"]
        wave = self.model_input(inputs)  # (B, N)
        lengths = torch.tensor([self.valid_frames(int(x)) for x in n])
        feats = self._features(wave, n).transpose(1, 2)  # (B, T, C)
        # the frame mask from the lengths known on the host (no (B, N) sample mask to build or copy)
        frame_mask = valid_mask(self.host_to_device(lengths), feats.shape[1])  # (B, T) bool
        hidden, _ = self.model.feature_projection(feats)  # (B, T, D)
        with record_hidden_states(self.model.encoder.layers, self.wants_hidden) as rec:
            out = self.model.encoder(hidden, attention_mask=frame_mask).last_hidden_state  # (B, T, D)
        hidden = tuple(rec[:-1]) + (out,) if rec is not None else None  # L + 1 of (B, T, D)
        return out, lengths, hidden

    def compile_regions(self) -> list[torch.nn.Module]:
        return list(self.model.encoder.layers)


@register
class WavLMLarge(_WavLM):
    """microsoft/wavlm-large: 24 layers, 1024-d, layer-norm feature extractor."""

    name = "wavlm-large"
    hf_repos = ("microsoft/wavlm-large",)
    full_config, normalize_default = LARGE_CONFIG, True


@register
class WavLMBasePlus(_WavLM):
    """microsoft/wavlm-base-plus: 12 layers, 768-d, group-norm feature extractor."""

    name = "wavlm-base-plus"
    hf_repos = ("microsoft/wavlm-base-plus",)
    full_config, normalize_default = BASE_PLUS_CONFIG, False
